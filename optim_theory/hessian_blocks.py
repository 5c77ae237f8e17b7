"""Block-diagonal quadratics with homogeneous or heterogeneous block spectra, and the block heterogeneity measure.

Zhang, Chen, Ding, Li, Sun, Luo (2024), "Why Transformers Need Adam: A Hessian Perspective", arXiv:2402.16788:
the Hessian of a transformer is near block-diagonal with blocks whose spectra differ ("block heterogeneity"),
measured by the Jensen-Shannon (JS) distance between the blocks' eigenvalue densities (the paper: kernel density
estimates, averaged over pairs of blocks). Here (reconstructed): histograms of log10 eigenvalues on common bins
instead of KDEs, base-2 JS distance (0 for identical spectra, 1 for disjoint supports), averaged over block pairs.

Two instances. The paper's quadratic case study (Sec. 3, "simplified heterogeneous / homogeneous spectra"; the
numbers as we read them, reconstructed: the stored copies of the paper we could reach give only its abstract):
three blocks, eigenvalues drawn uniformly from the ranges [1, 2], [99, 100], [4998, 5000]; heterogeneous: block b
holds only range b; homogeneous: every block holds an equal share of every range, so the two Hessians have the same
overall set of eigenvalues (the same global condition number) and differ only in how the eigenvalues are spread over
the blocks. :func:`range_spectra` draws the ranges, :func:`assign_blocks` interpolates between the two extremes with
the global spectrum held fixed (``n_own`` of block b's ``m`` eigenvalues from range b, the other ``m - n_own`` an
equal share of every range), :func:`rotated_blocks` returns H and its eigenvectors (x0 is built in the eigenbasis, so
the (eigenvalue, coordinate) pairs, hence gradient descent's whole loss curve, are the same at every level).

The second instance (:func:`block_spectra`, experiment ``hessian-blocks-scale``; it grows the global condition
number together with the heterogeneity): ``n_blocks`` blocks of dimension ``block_dim``; every block has the eigenvalues
geomspace(1, cond, block_dim) times 10^(h * b / (n_blocks - 1)) for block b (h = 0: homogeneous), each block
rotated by its own random orthogonal matrix, the whole Hessian scaled to largest eigenvalue 1. f(x) = x^T H x / 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ortho_group

from ratelab.errors import RatelabError


def block_spectra(n_blocks: int, block_dim: int, heterogeneity: float, cond: float) -> np.ndarray:
    """``[n_blocks, block_dim]`` eigenvalues, largest overall 1."""
    if n_blocks < 2 or block_dim < 1:
        raise RatelabError(f"n_blocks must be >= 2 and block_dim >= 1, got {n_blocks}, {block_dim}")
    if heterogeneity < 0 or cond < 1:
        raise RatelabError(f"heterogeneity must be >= 0 and cond >= 1, got {heterogeneity}, {cond}")
    base = np.geomspace(1.0, cond, block_dim)
    eig = base[None, :] * 10.0 ** (heterogeneity * np.arange(n_blocks) / (n_blocks - 1))[:, None]
    return eig / eig.max()


def block_hessian(spectra: np.ndarray, rng: np.random.Generator, *, mix: bool = False) -> np.ndarray:
    """Block-diagonal H with block b = Q_b diag(spectra[b]) Q_b^T, Q_b random orthogonal. ``mix``: one dense random
    rotation of the whole matrix instead (same spectrum, no block structure in the coordinates)."""
    n_blocks, m = spectra.shape
    if mix:
        q = ortho_group.rvs(n_blocks * m, random_state=rng)
        return (q * spectra.ravel()) @ q.T
    h = np.zeros((n_blocks * m, n_blocks * m))
    for b in range(n_blocks):
        q = ortho_group.rvs(m, random_state=rng) if m > 1 else np.ones((1, 1))
        h[b * m:(b + 1) * m, b * m:(b + 1) * m] = (q * spectra[b]) @ q.T
    return h


def js_heterogeneity(spectra: np.ndarray, bins: int = 20, lo: float = -6.0, hi: float = 0.5) -> float:
    """Mean pairwise base-2 JS distance between the blocks' histograms of log10 eigenvalue on ``bins`` bins
    over [lo, hi] (reconstructed stand-in for the paper's KDEs)."""
    spectra = np.asarray(spectra, dtype=float)
    if spectra.ndim != 2 or spectra.shape[0] < 2 or np.any(spectra <= 0):
        raise RatelabError(f"spectra must be [n_blocks >= 2, m] positive eigenvalues, got shape {spectra.shape}")
    edges = np.linspace(lo, hi, bins + 1)
    hists = [np.histogram(np.clip(np.log10(s), lo, hi), bins=edges)[0].astype(float) for s in spectra]
    pairs = [(i, j) for i in range(len(hists)) for j in range(i + 1, len(hists))]
    return float(np.mean([jensenshannon(hists[i], hists[j], base=2) for i, j in pairs]))


PAPER_RANGES = ((1.0, 2.0), (99.0, 100.0), (4998.0, 5000.0))


def range_spectra(ranges: Any, block_dim: int, rng: np.random.Generator) -> np.ndarray:
    """``[len(ranges), block_dim]``: ``block_dim`` eigenvalues uniform in each range, sorted, divided by the largest
    upper end (largest eigenvalue at most 1)."""
    r = np.asarray(ranges, dtype=float)
    if r.ndim != 2 or r.shape[1] != 2 or r.shape[0] < 2 or np.any(r[:, 0] <= 0) or np.any(r[:, 1] < r[:, 0]):
        raise RatelabError(f"ranges must be >= 2 pairs (lo, hi) with 0 < lo <= hi, got {r.tolist()}")
    if block_dim < 1:
        raise RatelabError(f"block_dim must be >= 1, got {block_dim}")
    eig = np.sort(rng.uniform(r[:, :1], r[:, 1:], size=(r.shape[0], block_dim)), axis=1)
    return eig / r[:, 1].max()


def assign_blocks(groups: np.ndarray, n_own: int) -> tuple[np.ndarray, np.ndarray]:
    """Spread the ``[B, m]`` range eigenvalues over B blocks of size m: block b gets ``n_own`` values of range b and
    ``(m - n_own) / B`` values of every range (``n_own = m``: heterogeneous, 0: homogeneous). Returns the ``[B, m]``
    block spectra and, per block slot (flattened), the flat index into ``groups`` it came from: a permutation, so
    every level has the same overall eigenvalues."""
    groups = np.asarray(groups, dtype=float)
    B, m = groups.shape
    if not 0 <= n_own <= m or (m - n_own) % B:
        raise RatelabError(f"n_own must be in [0, {m}] (block_dim) with block_dim - n_own divisible by {B} "
                           f"(n_blocks), got {n_own}")
    share = (m - n_own) // B
    src = np.empty((B, m), dtype=int)
    for b in range(B):
        own = [b * m + j for j in range(n_own)]
        rest = [g * m + n_own + b * share + j for g in range(B) for j in range(share)]
        src[b] = own + rest
    src = src.reshape(-1)
    if np.unique(src).size != B * m:  # pragma: no cover - guarded by construction
        raise RatelabError("assign_blocks: not a permutation")
    return groups.reshape(-1)[src].reshape(B, m), src


def block_rotation(n_blocks: int, block_dim: int, rng: np.random.Generator, *, mix: bool = False) -> np.ndarray:
    """A ``[d, d]`` orthogonal Q (d = n_blocks block_dim): block-diagonal with a random orthogonal block per Hessian
    block (``mix``: one dense random orthogonal matrix, no block structure in the coordinates)."""
    if mix:
        return ortho_group.rvs(n_blocks * block_dim, random_state=rng)
    m = block_dim
    q = np.zeros((n_blocks * m, n_blocks * m))
    for b in range(n_blocks):
        q[b * m:(b + 1) * m, b * m:(b + 1) * m] = ortho_group.rvs(m, random_state=rng) if m > 1 else 1.0
    return q


def rotated_blocks(spectra: np.ndarray, rng: np.random.Generator, *, mix: bool = False) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """``(H, Q)``: H = Q diag(spectra.ravel()) Q^T, Q from :func:`block_rotation` (``mix``: dense, the same spectrum
    with no block structure in the coordinates)."""
    q = block_rotation(*spectra.shape, rng, mix=mix)
    return (q * spectra.ravel()) @ q.T, q
