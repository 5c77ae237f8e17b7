"""Block-diagonal quadratics with homogeneous or heterogeneous block spectra, and the block heterogeneity measure.

Zhang, Chen, Ding, Li, Sun, Luo (2024), "Why Transformers Need Adam: A Hessian Perspective", arXiv:2402.16788:
the Hessian of a transformer is near block-diagonal with blocks whose spectra differ ("block heterogeneity"),
measured by the Jensen-Shannon (JS) distance between the blocks' eigenvalue densities (the paper: kernel density
estimates, averaged over pairs of blocks). Here (reconstructed): histograms of log10 eigenvalues on common bins
instead of KDEs, base-2 JS distance (0 for identical spectra, 1 for disjoint supports), averaged over block pairs.

The instance (reconstructed, toy): ``n_blocks`` blocks of dimension ``block_dim``; every block has the eigenvalues
geomspace(1, cond, block_dim) times 10^(h * b / (n_blocks - 1)) for block b (h = 0: homogeneous), each block
rotated by its own random orthogonal matrix, the whole Hessian scaled to largest eigenvalue 1. f(x) = x^T H x / 2.
"""

from __future__ import annotations

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
