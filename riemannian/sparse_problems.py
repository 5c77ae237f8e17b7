"""Nonsmooth composite problems on the Stiefel manifold: min_{X in M} f(X) + h(B X), h = mu ||.||_1.

These are the test problems of Li, Ma, Srivastava, "A Riemannian ADMM" (arXiv:2211.02163, 2022; Sec. 5):

* sparse PCA (Jolliffe et al. 2003; Chen, Ma, So, Zhang, "Proximal gradient method for nonsmooth optimization
  over the Stiefel manifold", SIOPT 2020 = ManPG), in the convention of the RADMM paper and its authors' code
  (github.com/JasonJiaxiangLi/RADMM, sPCA: the objective evaluated is sum(X .* (-H X)) / 2 + mu ||X||_1):
      min_{X in St(n, p)} -1/2 tr(X^T H X) + mu ||X||_1,      H = A^T A,
  data A in R^{m x n} with i.i.d. N(0, 1) entries, columns centred and scaled to unit norm (ManPG's generator).
  NOTE the factor 1/2: ManPG writes -tr(X^T A^T A X); its mu is twice the mu here for the same minimisers.
  :func:`sparse_pca` builds the problem from the user's own H (or data matrix A);
* orthogonal dictionary learning (Sun, Qu, Wright 2017; Bai, Jiang, Sun 2019): recover the orthogonal
  dictionary Q from Y = Q S with a Bernoulli(theta)-Gaussian sparse code S, as
      min_{X in St(n, p)} ||Y^T X||_1     (f = 0, B = Y^T: the linear-map form h(B X) of the paper).

A problem is a pytree (``jax.tree_util.register_dataclass``): arrays ``C`` (f(X) = -1/2 tr(X^T C X)), ``B`` (the
linear map; None for the identity of sparse PCA, applied without a matmul), ``mu`` (the l1 weight) are data; the
manifold is static (St(n, p), or the sphere S^{n-1} with X a vector of shape (n,)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_in_range, check_nonnegative, check_positive_int
from riemannian.data import keep_precision, start_point, symmetric_matrices
from riemannian.manifolds import Sphere, Stiefel, normal_draws

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CompositeProblem:
    """min_{X in M} f(X) + h(B X) with f(X) = -1/2 tr(X^T C X) and h(Z) = mu ||Z||_1 (entrywise).

    Build it with :func:`sparse_pca` (the user's matrices, validated) or the generators below: constructing the
    dataclass directly skips every check.

    Attributes:
      C: ``[n, n]`` symmetric matrix of the smooth part (``A^T A`` for sparse PCA, zero for dictionary learning).
      B: ``[m, n]`` matrix of the linear map X -> B X inside h; None for the identity (sparse PCA), which then costs
        no n x n matmul per use (a dense eye(n) made one RADMM step with its metrics 364 MFLOP instead of 164 at
        n = 500, p = 100, by XLA's cost analysis).
      mu: l1 weight (mu = 0 turns sparse PCA into PCA).
      x0: ``[n, p]`` (``[n]`` on the sphere) initial point on the manifold.
      manifold: St(n, p) or the sphere S^{n-1} (static).
    """

    C: Array
    B: Array | None
    mu: Array
    x0: Array
    manifold: Stiefel | Sphere = field(metadata=dict(static=True))

    def f(self, x: Array) -> Array:
        return -0.5 * jnp.sum(x * (self.C @ x))

    def egrad_f(self, x: Array) -> Array:
        return -(self.C @ x)

    def lin(self, x: Array) -> Array:
        """The linear map x -> B x."""
        return x if self.B is None else self.B @ x

    def lin_vjp(self, x: Array, z: Array) -> Array:
        """The adjoint of the map's derivative at x applied to z: B^T z (the map is linear)."""
        del x
        return z if self.B is None else self.B.T @ z

    def h(self, z: Array) -> Array:
        return self.mu * jnp.sum(jnp.abs(z))

    def prox_h(self, w: Array, t: Array) -> Array:
        """prox_{t h}(w) = soft-threshold(w, t mu)."""
        return jnp.sign(w) * jnp.maximum(jnp.abs(w) - t * self.mu, 0.0)

    def objective(self, x: Array) -> Array:
        """F(X) = f(X) + h(B X)."""
        return self.f(x) + self.h(self.lin(x))

    def lipschitz_h(self) -> Array:
        """Lipschitz constant of h w.r.t. the Frobenius norm: mu sqrt(m p) (a bound on ||subgradient||_F)."""
        m = self.x0.shape[0] if self.B is None else self.B.shape[0]
        return self.mu * jnp.sqrt(m * (self.x0.size // self.x0.shape[0]))

    def lin_norm_sq(self) -> Array:
        """||B||_2^2, the squared operator norm of the linear map (1 for the identity)."""
        return jnp.ones((), self.C.dtype) if self.B is None else jnp.linalg.norm(self.B, 2) ** 2


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SpectralClusteringProblem:
    """Sparse spectral clustering (Lu, Yan, Lin, "Convex sparse spectral clustering", AAAI 2016; Park, Zhao,
    "Spectral clustering based on learning similarity matrix", Bioinformatics 2018), as in Li, Ma, Srivastava:

        min_{U in St(n, k)} tr(U^T L U) + mu ||U U^T||_1,

    i.e. f(U) = tr(U^T L U) and h(c(U)) with the smooth (quadratic, not linear) map c(U) = U U^T; RADMM only needs
    c and the adjoint of its derivative, J_c(U)^T Z = (Z + Z^T) U.

    Attributes: ``L`` the normalised graph Laplacian ``[n, n]``, ``mu``, ``x0`` ``[n, k]``, ``manifold`` (static).
    """

    L: Array
    mu: Array
    x0: Array
    manifold: Stiefel = field(metadata=dict(static=True))

    def f(self, x: Array) -> Array:
        return jnp.sum(x * (self.L @ x))

    def egrad_f(self, x: Array) -> Array:
        return 2.0 * (self.L @ x)

    def lin(self, x: Array) -> Array:
        return x @ x.T

    def lin_vjp(self, x: Array, z: Array) -> Array:
        return (z + z.T) @ x

    def h(self, z: Array) -> Array:
        return self.mu * jnp.sum(jnp.abs(z))

    def prox_h(self, w: Array, t: Array) -> Array:
        return jnp.sign(w) * jnp.maximum(jnp.abs(w) - t * self.mu, 0.0)

    def objective(self, x: Array) -> Array:
        return self.f(x) + self.h(self.lin(x))


def moreau_envelope(problem: CompositeProblem | SpectralClusteringProblem, y: Array, gamma: Array) -> Array:
    """h_gamma(y) = min_z h(z) + ||z - y||^2 / (2 gamma) (the Huber function for the l1 norm)."""
    z = problem.prox_h(y, gamma)
    return problem.h(z) + jnp.sum((z - y) ** 2) / (2.0 * gamma)


def moreau_grad(problem: CompositeProblem | SpectralClusteringProblem, y: Array, gamma: Array) -> Array:
    """grad h_gamma(y) = (y - prox_{gamma h}(y)) / gamma (1/gamma-Lipschitz)."""
    return (y - problem.prox_h(y, gamma)) / gamma


def sparsity(x: Array, tol: float = 1e-5) -> Array:
    """Fraction of entries with |x_ij| < tol (ManPG's sparsity measure)."""
    return jnp.mean(jnp.abs(x) < tol)


def _check_sizes(n: int, p: int) -> None:
    check_positive_int("n", n)
    check_positive_int("p", p)
    if p > n:
        raise RatelabError(f"p must satisfy 1 <= p <= n, got n={n}, p={p}")


def sparse_pca(H: Any = None, *, mu: float, p: int = 1, data: Any = None, manifold: str = "stiefel",
               x0: Any = None, key: Array | None = None, dtype: Any = None) -> CompositeProblem:
    """Sparse PCA min_X -1/2 tr(X^T H X) + mu ||X||_1 on St(n, p) (or the sphere, p = 1) from the user's matrices.

    Give ``H`` (``[n, n]``, symmetric positive semidefinite: a covariance or Gram matrix) or ``data`` (``[m, n]``,
    then H = data^T data). The convention is the RADMM paper's -1/2 tr(X^T H X) (ManPG's -tr(X^T H X) with weight
    2 mu has the same minimisers). ``x0`` defaults to a random point drawn with ``key`` (``jax.random.key(0)``).
    The arrays keep the data's precision (:func:`riemannian.data.keep_precision`) unless ``dtype`` is given.
    """
    if (H is None) == (data is None):
        raise RatelabError("give exactly one of H (an [n, n] PSD matrix) and data (an [m, n] data matrix)")
    if data is not None:
        a = np.asarray(data)
        if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
            raise RatelabError(f"data must be a finite [m, n] matrix, got shape {a.shape}")
        data_prec = a.dtype
        H = a.astype(float).T @ a.astype(float)
    else:
        data_prec = np.asarray(H).dtype
    prec = dtype if dtype is not None else (data_prec if np.issubdtype(data_prec, np.floating) else np.float64)
    C = symmetric_matrices("H", H, definite="semi", dtype=prec)
    n = C.shape[0]
    check_nonnegative("mu", mu)
    check_choice("manifold", manifold, ("stiefel", "sphere"))
    _check_sizes(n, p)
    if manifold == "sphere" and p != 1:
        raise RatelabError(f"p must be 1 on the sphere, got {p}")
    man = Sphere(n) if manifold == "sphere" else Stiefel(n, p)
    x0 = start_point(man, x0, key)
    return CompositeProblem(C=keep_precision(C, prec), B=None,
                            mu=keep_precision(mu, prec), x0=keep_precision(x0, prec), manifold=man)


def make_sparse_pca(key: Array, *, m: int = 50, n: int = 100, p: int = 2, mu: float = 0.5,
                    dtype=None) -> CompositeProblem:
    """Sparse PCA with ManPG's data: A (m x n) i.i.d. N(0, 1), centred columns of unit norm; H = A^T A.

    The data are drawn in ``dtype`` (default: float64 under x64, else float32) and x0 is a random point of
    St(n, p) drawn from ``key``.
    """
    check_positive_int("m", m)
    _check_sizes(n, p)
    check_nonnegative("mu", mu)
    dtype = jnp.result_type(float) if dtype is None else dtype
    ka, kx = jax.random.split(key)
    a = np.asarray(normal_draws(ka, (m, n), dtype), dtype=float)  # NumPy from here: eager JAX ops each compile
    a = a - a.mean(axis=0, keepdims=True)
    a = a / np.linalg.norm(a, axis=0, keepdims=True)
    return sparse_pca(a.T @ a, mu=mu, p=p, key=kx, dtype=dtype)


def make_dictionary_learning(key: Array, *, n: int = 20, p: int = 1, samples: int = 200, theta: float = 0.3,
                             mu: float = 1.0, dtype=None) -> tuple[CompositeProblem, Array]:
    """Orthogonal dictionary learning: Y = Q S with Q uniform on O(n), S_ij = Bernoulli(theta) * N(0, 1).

    Returns the problem min_{X in St(n, p)} mu ||Y^T X||_1 / samples, written as h(B X) with B = Y^T / sqrt(N) and
    l1 weight mu / sqrt(N) (so that ||B|| = O(1) and the penalty and step-size scalings of RADMM apply unchanged),
    and the true dictionary Q (its columns are the global minimisers up to sign, for p = 1).
    """
    _check_sizes(n, p)
    check_positive_int("samples", samples)
    check_in_range("theta", theta, 0.0, 1.0, closed="right")
    check_nonnegative("mu", mu)
    dtype = jnp.result_type(float) if dtype is None else dtype
    kq, kb, kg, kx = jax.random.split(key, 4)
    q = start_point(Stiefel(n, n), key=kq)  # Haar on O(n)
    g = np.asarray(normal_draws(kg, (n, samples), dtype), dtype=float)
    s = np.asarray(jax.random.uniform(kb, (n * samples,), jnp.float32), float).reshape(n, samples) < theta
    y = q @ (s * g)
    problem = dictionary_learning(y, p=p, mu=mu, x0=start_point(Stiefel(n, p), key=kx), dtype=dtype)
    return problem, keep_precision(q, dtype)


def dictionary_learning(Y: Any, *, p: int = 1, mu: float = 1.0, x0: Any = None, key: Array | None = None,
                        dtype: Any = None) -> CompositeProblem:
    """Orthogonal dictionary learning min_{X in St(n, p)} mu ||Y^T X||_1 / N from the user's own samples ``Y``
    ``[n, N]`` (finite, N >= 1 columns, 1 <= p <= n), written as :func:`make_dictionary_learning` does: h(B X) with
    B = Y^T / sqrt(N) and l1 weight mu / sqrt(N). ``x0`` defaults to a random point of St(n, p) drawn with ``key``.
    The arrays keep Y's precision unless ``dtype`` is given. Every check runs before any computation."""
    a = np.asarray(Y)
    if a.ndim != 2 or a.size == 0:
        raise RatelabError(f"Y must be an [n, N] matrix of samples (one per column), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RatelabError(f"Y must be finite, got {int(np.sum(~np.isfinite(a)))} non-finite entries")
    prec = dtype if dtype is not None else (a.dtype if np.issubdtype(a.dtype, np.floating) else np.float64)
    n, samples = a.shape
    _check_sizes(n, p)
    check_nonnegative("mu", mu)
    man = Stiefel(n, p)
    x0 = start_point(man, x0, key)
    root = float(np.sqrt(samples))  # B = Y^T / sqrt(N) has ||B|| = O(1); mu / sqrt(N) keeps h = mu ||Y^T x||_1 / N
    arrays = {"C": np.zeros((n, n)), "B": a.astype(float).T / root, "mu": mu / root, "x0": x0}
    return CompositeProblem(**{k: keep_precision(v, prec) for k, v in arrays.items()}, manifold=man)


def pca_optimum(problem: CompositeProblem) -> tuple[float, np.ndarray]:
    """mu = 0 reference: min_{X in St(n, p)} -1/2 tr(X^T C X) = -1/2 (sum of the p largest eigenvalues of C),
    attained by the top-p eigenvectors (Ky Fan's maximum principle)."""
    evals, evecs = np.linalg.eigh(np.asarray(problem.C, dtype=float))
    p = problem.x0.size // problem.x0.shape[0]
    return -0.5 * float(np.sum(evals[-p:])), evecs[:, -p:]


def sparse_spectral_clustering(L: Any, *, k: int, mu: float = 1e-3, x0: Any = None, key: Array | None = None,
                               dtype: Any = None) -> SpectralClusteringProblem:
    """Sparse spectral clustering min_{U in St(n, k)} tr(U^T L U) + mu ||U U^T||_1 from the user's own Laplacian.

    ``L`` ``[n, n]`` must be symmetric positive semidefinite (a graph Laplacian, e.g. the normalised I - D^(-1/2) W
    D^(-1/2); the smallest eigenvalue is in the error), ``1 <= k <= n`` clusters. ``x0`` defaults to a random point
    of St(n, k) drawn with ``key`` (``jax.random.key(0)``). The arrays keep L's precision
    (:func:`riemannian.data.keep_precision`) unless ``dtype`` is given. Every check runs before any computation.
    """
    prec = dtype if dtype is not None else (np.asarray(L).dtype if np.issubdtype(np.asarray(L).dtype, np.floating)
                                            else np.float64)
    lap = symmetric_matrices("L", L, definite="semi", dtype=prec)
    n = lap.shape[0]
    check_positive_int("k", k)
    if k > n:
        raise RatelabError(f"k must satisfy 1 <= k <= n (L is {n} x {n}), got {k}")
    check_nonnegative("mu", mu)
    man = Stiefel(n, k)
    arrays = {"L": lap, "mu": mu, "x0": start_point(man, x0, key)}
    return SpectralClusteringProblem(**{name: keep_precision(v, prec) for name, v in arrays.items()}, manifold=man)


def make_sparse_spectral_clustering(key: Array, *, k: int = 3, per_cluster: int = 20, dim: int = 2,
                                    separation: float = 4.0, width: float = 1.0, mu: float = 1e-3,
                                    dtype=None) -> tuple[SpectralClusteringProblem, Array]:
    """k Gaussian clusters of ``per_cluster`` points in R^dim (centres on a circle, neighbours ``separation`` apart,
    unit spread); Gaussian-kernel similarities W_ij = exp(-||a_i - a_j||^2 / (2 width^2)) (W_ii = 0) and the
    normalised Laplacian L = I - D^(-1/2) W D^(-1/2).

    Returns the problem on St(n, k), n = k * per_cluster, and the orthogonal projector onto the planted cluster
    subspace span{D^(1/2) 1_c} (the bottom eigenspace of L when the clusters do not interact).
    """
    check_positive_int("k", k)
    check_positive_int("per_cluster", per_cluster)
    check_positive_int("dim", dim)
    for name, value in (("separation", separation), ("width", width)):
        check_in_range(name, value, 0.0, float("inf"), closed="neither")
    check_nonnegative("mu", mu)
    if dim < 2:
        raise RatelabError(f"dim must be >= 2 (cluster centres lie on a circle in the first two axes), got {dim}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    kp, kx = jax.random.split(key)
    angles = 2 * np.pi * np.arange(k) / k
    centres = np.zeros((k, dim))
    centres[:, 0], centres[:, 1] = np.cos(angles), np.sin(angles)
    centres = separation / (2 * np.sin(np.pi / k)) * centres if k > 1 else centres
    n = k * per_cluster
    labels = np.repeat(np.arange(k), per_cluster)
    noise = np.asarray(normal_draws(kp, (n, dim), dtype), dtype=float)
    points = centres[labels] + noise
    d2 = np.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    w = np.exp(-d2 / (2.0 * width**2)) * (1.0 - np.eye(n))
    deg = np.sum(w, axis=1)
    inv_sqrt = 1.0 / np.sqrt(deg)
    lap = np.eye(n) - inv_sqrt[:, None] * w * inv_sqrt[None, :]
    indicators = np.eye(k)[labels] * np.sqrt(deg)[:, None]
    basis = indicators / np.linalg.norm(indicators, axis=0, keepdims=True)
    man = Stiefel(n, k)
    arrays = {"L": 0.5 * (lap + lap.T), "mu": mu, "x0": start_point(man, key=kx)}
    problem = SpectralClusteringProblem(**{name: keep_precision(v, dtype) for name, v in arrays.items()}, manifold=man)
    return problem, keep_precision(basis @ basis.T, dtype)
