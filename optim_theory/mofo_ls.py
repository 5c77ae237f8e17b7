"""The fine-tuning instance of ``experiments/mofo.py``: underdetermined least squares from a "pretrained" point.

f(theta) = ||A theta - b||^2 / 2 with A in R^{m x n}, m < n and full row rank, so the minimisers form the affine
space {theta : A theta = b} of dimension n - m. Starting from theta0 (the "pretrained" model; fine-tuning moves it
onto that space), the exact minimum-distance minimisers are references for how far an optimizer moves:

* least l2 distance: theta0 + A^+ (b - A theta0) (``scipy.linalg.lstsq``'s minimum-norm solution of A d = r,
  r = b - A theta0);
* least l1 distance: theta0 + d with d solving  min ||d||_1  s.t.  A d = r, the linear program
  min 1^T (u + w)  s.t.  A (u - w) = r, u, w >= 0  (``scipy.optimize.linprog``, HiGHS).

Reconstructed / chosen here (the paper's experiments are LLM fine-tuning runs): the instance law A_ij ~ N(0, 1/n)
(so A A^T is close to I_m), theta0 ~ N(0, I_n), b = A theta0 + r with r ~ N(0, I_m): the fine-tuning task asks
for a displacement of l2 norm about sqrt(m), spread over all coordinates (no planted sparse solution).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize

from ratelab.errors import RatelabError


class LSInstance(NamedTuple):
    A: np.ndarray  # [m, n]
    b: np.ndarray  # [m]
    theta0: np.ndarray  # [n]


class References(NamedTuple):
    theta_l2: np.ndarray  # the minimiser closest to theta0 in l2
    theta_l1: np.ndarray  # a minimiser closest to theta0 in l1
    dist_l2: float  # ||theta_l2 - theta0||_2
    dist_l1: float  # ||theta_l1 - theta0||_1


def build_instance(A: np.ndarray, b: np.ndarray, theta0: np.ndarray) -> LSInstance:
    """A validated instance from one's own arrays: A [m, n] with m < n and full row rank, b [m], theta0 [n]."""
    A, b, theta0 = (np.asarray(v, dtype=float) for v in (A, b, theta0))
    if A.ndim != 2 or A.shape[0] >= A.shape[1] or A.shape[0] < 1:
        raise RatelabError(f"A must be a 2-D array [m, n] with 1 <= m < n (underdetermined), got shape {A.shape}")
    m, n = A.shape
    if b.shape != (m,):
        raise RatelabError(f"b must have shape ({m},) (the rows of A), got {b.shape}")
    if theta0.shape != (n,):
        raise RatelabError(f"theta0 must have shape ({n},) (the columns of A), got {theta0.shape}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b)) and np.all(np.isfinite(theta0))):
        raise RatelabError("A, b and theta0 must be finite")
    if np.linalg.matrix_rank(A) < m:
        raise RatelabError(f"A must have full row rank {m} (so that A theta = b is solvable), got rank "
                           f"{np.linalg.matrix_rank(A)}")
    return LSInstance(A, b, theta0)


def random_instance(rng: np.random.Generator, m: int, n: int) -> LSInstance:
    """A ~ N(0, 1/n) entries, theta0 ~ N(0, I_n), b = A theta0 + r with r ~ N(0, I_m) (module docstring)."""
    if not (isinstance(m, int) and isinstance(n, int) and 1 <= m < n):
        raise RatelabError(f"m and n must be integers with 1 <= m < n, got m={m!r}, n={n!r}")
    A = rng.standard_normal((m, n)) / np.sqrt(n)
    theta0 = rng.standard_normal(n)
    b = A @ theta0 + rng.standard_normal(m)
    return build_instance(A, b, theta0)


def references(inst: LSInstance) -> References:
    """The minimisers of f closest to theta0 in l2 (lstsq) and in l1 (linprog, HiGHS)."""
    A, b, theta0 = inst
    m, n = A.shape
    r = b - A @ theta0
    d2 = scipy.linalg.lstsq(A, r)[0]
    res = scipy.optimize.linprog(np.ones(2 * n), A_eq=np.hstack([A, -A]), b_eq=r, bounds=(0, None),
                                 method="highs")
    if res.status != 0:
        raise RatelabError(f"the l1 reference LP did not solve: {res.message}")
    d1 = res.x[:n] - res.x[n:]
    return References(theta0 + d2, theta0 + d1, float(np.linalg.norm(d2)), float(np.abs(d1).sum()))
