"""Federated problems on manifolds with a known optimum: PCA / kernel PCA over heterogeneous clients, Fréchet mean.

Li & Ma ("Federated Learning on Riemannian Manifolds", arXiv:2206.05668, 2022) test RFedSVRG on federated kPCA,

    min_{X in St(d, r)} f(X) = (1/n) sum_i f_i(X),   f_i(X) = -1/2 tr(X^T A_i X),

with A_i the covariance of client i's data (their experiments: A_i = Z_i Z_i^T, Z_i a d x p Gaussian sample; the
"k" of kPCA is the number of components). The minimisers are the orthonormal bases of the top-r eigenspace of the
average covariance A = (1/n) sum_i A_i: a closed form (one ``eigh``), against which the subspace distance
||(I - X* X*^T) X||_F = ||sin(principal angles)||_2 is measured. The same class serves the sphere (r = 1), Stiefel
and Grassmann manifolds, and a kernel PCA instance (random Fourier features of clients' data).

Heterogeneity: client i's population covariance is R_i Sigma_0 R_i^T, R_i = expm(h S_i) a random rotation
(S_i skew-symmetric with operator norm about 1); h = 0 gives identical clients, larger h spreads the clients'
leading eigenspaces apart while the average stays known.

A problem exposes what the federated solvers need: ``manifold``, ``n_clients``, ``client_rgrad(x, i)`` (the
Riemannian gradient of f_i), ``rgrad(x)`` (of f), ``loss(x)``, ``metrics(x)`` and ``solution()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_nonnegative, check_positive, check_positive_int
from riemannian.data import data_dtype, keep_precision, start_point, symmetric_matrices
from riemannian.manifolds import Grassmann, Sphere, Stiefel, normal_draws

MANIFOLDS = ("sphere", "stiefel", "grassmann")


def _normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws as a writable float64 NumPy array, the same with or without x64 mode."""
    return np.array(normal_draws(key, shape, jnp.float32), dtype=float)


def _manifold(name: str, dim: int, rank: int):
    check_choice("manifold", name, MANIFOLDS)
    if name == "sphere":
        if rank != 1:
            raise RatelabError(f"rank must be 1 on the sphere, got {rank}")
        return Sphere(dim)
    return Stiefel(dim, rank) if name == "stiefel" else Grassmann(dim, rank)


@dataclass(frozen=True)
class FederatedPCA:
    """f(X) = (1/n) sum_i -1/2 tr(X^T A_i X) on the sphere (X a vector), Stiefel or Grassmann (X is d x r).

    Attributes:
      A: ``[n_clients, d, d]`` symmetric client matrices A_i.
      A_mean: their average (what the server never sees; used for metrics only).
      x_star: ``[d, r]`` (``[d]`` on the sphere) top-r eigenvectors of ``A_mean``; ``f_star`` = -1/2 (sum of the r
        largest eigenvalues); ``eigvals`` the eigenvalues of ``A_mean`` in decreasing order.
      x0: the common initial point.
      manifold: the manifold (static).
    """

    A: jax.Array
    A_mean: jax.Array
    x_star: jax.Array
    f_star: jax.Array
    eigvals: jax.Array
    x0: jax.Array
    manifold: Any = field(metadata={"static": True})

    @property
    def n_clients(self) -> int:
        return self.A.shape[0]

    def _as_matrix(self, x: jax.Array) -> jax.Array:
        return x[:, None] if x.ndim == 1 else x

    def client_loss(self, x: jax.Array, i: jax.Array) -> jax.Array:
        X = self._as_matrix(x)
        return -0.5 * jnp.sum(X * (jnp.asarray(self.A)[i] @ X))

    def client_rgrad(self, x: jax.Array, i: jax.Array) -> jax.Array:
        """grad f_i(x) = P_x(-A_i x)."""
        return self.manifold.egrad2rgrad(x, -(jnp.asarray(self.A)[i] @ x))

    def loss(self, x: jax.Array) -> jax.Array:
        X = self._as_matrix(x)
        return -0.5 * jnp.sum(X * (self.A_mean @ X))

    def rgrad(self, x: jax.Array) -> jax.Array:
        return self.manifold.egrad2rgrad(x, -(self.A_mean @ x))

    def subspace_dist(self, x: jax.Array) -> jax.Array:
        """||(I - X* X*^T) X||_F = ||sin(theta)||_2 over the principal angles (0 iff span X = span X*)."""
        X, S = self._as_matrix(x), self._as_matrix(self.x_star)
        return jnp.linalg.norm(X - S @ (S.T @ X))

    def metrics(self, x: jax.Array) -> dict[str, jax.Array]:
        g = self.rgrad(x)
        return {"gap": self.loss(x) - self.f_star, "grad_norm_sq": jnp.sum(g * g),
                "dist_to_opt": self.subspace_dist(x), "feasibility": self.manifold.feasibility(x)}

    def solution(self) -> jax.Array:
        return self.x_star


jax.tree_util.register_dataclass(FederatedPCA, data_fields=["A", "A_mean", "x_star", "f_star", "eigvals", "x0"],
                                 meta_fields=["manifold"])


def federated_pca(A: Any, *, manifold: str = "grassmann", rank: int = 1, x0: Any = None, key: jax.Array | None = None,
                  dtype: Any = None) -> FederatedPCA:
    """A :class:`FederatedPCA` from client matrices ``A`` (``[n_clients, d, d]``, symmetric); the optimum from ``eigh``.

    ``x0`` defaults to a random point drawn with ``key`` (``jax.random.key(0)`` if None). The arrays keep the data's
    precision (float64 data stays float64 even when built with x64 off, see :func:`riemannian.data.keep_precision`)
    unless ``dtype`` is given.
    """
    prec = data_dtype(A, dtype)
    A_np = symmetric_matrices("A", A, batched=True, dtype=prec)
    d = A_np.shape[1]
    check_positive_int("rank", rank)
    if rank >= d:
        raise RatelabError(f"rank must be < d = {d}, got {rank}")
    m = _manifold(manifold, d, rank)
    A_mean = A_np.mean(axis=0)
    w, v = np.linalg.eigh(A_mean)
    w, v = w[::-1], v[:, ::-1]
    if w[rank - 1] - w[rank] <= 1e-12 * max(1.0, abs(w[0])):
        raise RatelabError(f"the average matrix has no eigengap after the top {rank} eigenvalues "
                           f"({w[rank - 1]:.6g} vs {w[rank]:.6g}): the optimum is not unique")
    x_star = v[:, 0] if manifold == "sphere" else v[:, :rank]
    arrays = {"A": A_np, "A_mean": A_mean, "x_star": x_star, "f_star": -0.5 * w[:rank].sum(), "eigvals": w,
              "x0": start_point(m, x0, key)}
    return FederatedPCA(**{k: keep_precision(a, prec) for k, a in arrays.items()}, manifold=m)


def pca_spectrum(dim: int, rank: int, gap: float = 0.3) -> np.ndarray:
    """Eigenvalues of Sigma_0: the top ``rank`` evenly in [0.8, 1], the rest evenly in [0.05, 0.8 - gap]."""
    top = np.linspace(1.0, 0.8, rank) if rank > 1 else np.array([1.0])
    rest = np.linspace(0.8 - gap, 0.05, dim - rank)
    return np.concatenate([top, rest])


def client_rotations(key: jax.Array, n_clients: int, dim: int, heterogeneity: float) -> np.ndarray:
    """``[n_clients, d, d]`` rotations expm(h S_i), S_i = (W_i - W_i^T) / (2 sqrt(d)), W_i standard Gaussian."""
    W = _normal(key, (n_clients, dim, dim))
    S = (W - np.swapaxes(W, 1, 2)) / (2.0 * np.sqrt(dim))
    return scipy.linalg.expm(heterogeneity * S)


def make_federated_pca(key: jax.Array, *, n_clients: int, dim: int, rank: int = 1, heterogeneity: float = 0.0,
                       samples_per_client: int = 0, gap: float = 0.3, manifold: str = "grassmann",
                       dtype: Any = None) -> FederatedPCA:
    """Heterogeneous federated PCA with a known optimum.

    Client i's population covariance is Sigma_i = R_i Sigma_0 R_i^T (:func:`client_rotations`, spectrum
    :func:`pca_spectrum`). With ``samples_per_client = 0`` the clients hold Sigma_i itself; with p > 0 they hold
    the sample covariance (1/p) Z_i Z_i^T of p Gaussian draws from N(0, Sigma_i), as in Li & Ma's experiments
    (d = 200, n = 100 clients, p = 100, r = 5). Either way x* is exact for the clients' average.
    """
    check_positive_int("n_clients", n_clients)
    check_positive_int("dim", dim)
    check_nonnegative("heterogeneity", heterogeneity)
    check_positive("gap", gap)
    if not (isinstance(samples_per_client, (int, np.integer)) and samples_per_client >= 0):
        raise RatelabError(f"samples_per_client must be an integer >= 0, got {samples_per_client!r}")
    if not 0 < gap < 0.75:
        raise RatelabError(f"gap must lie in (0, 0.75), got {gap}")
    if dim < 2 or rank >= dim:
        raise RatelabError(f"need 1 <= rank < dim, got rank={rank}, dim={dim}")
    k_rot, k_basis, k_data, k_x0 = jax.random.split(key, 4)
    q, _ = np.linalg.qr(_normal(k_basis, (dim, dim)))
    sigma0 = (q * pca_spectrum(dim, rank, gap)) @ q.T
    R = client_rotations(k_rot, n_clients, dim, heterogeneity)
    A = R @ sigma0 @ np.swapaxes(R, 1, 2)
    if samples_per_client:
        L = np.linalg.cholesky(A + 1e-12 * np.eye(dim))
        Z = L @ _normal(k_data, (n_clients, dim, samples_per_client))
        A = Z @ np.swapaxes(Z, 1, 2) / samples_per_client
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    return federated_pca(A, manifold=manifold, rank=rank, key=k_x0, dtype=dtype)


def make_federated_kernel_pca(key: jax.Array, *, n_clients: int, input_dim: int, features: int, rank: int = 1,
                              samples_per_client: int = 50, heterogeneity: float = 0.0, bandwidth: float = 1.0,
                              manifold: str = "grassmann", dtype: Any = None) -> FederatedPCA:
    """Kernel PCA with an RBF kernel, approximated by ``features`` random Fourier features (Rahimi & Recht 2007).

    Client i draws ``samples_per_client`` points from N(h m_i, I) (m_i a random unit direction, h the
    heterogeneity), maps them to phi(z) = sqrt(2/D) cos(W z + b) with W ~ N(0, I / bandwidth^2), b ~ U[0, 2 pi),
    and holds the uncentred feature covariance A_i = (1/p) sum_j phi(z_j) phi(z_j)^T. The top-r eigenspace of
    the average is the (uncentred) kernel-PCA subspace of the pooled data in feature space.
    """
    check_positive_int("n_clients", n_clients)
    check_positive_int("input_dim", input_dim)
    check_positive_int("features", features)
    check_positive_int("samples_per_client", samples_per_client)
    check_nonnegative("heterogeneity", heterogeneity)
    check_positive("bandwidth", bandwidth)
    k_w, k_b, k_m, k_z, k_x0 = jax.random.split(key, 5)
    W = _normal(k_w, (features, input_dim)) / bandwidth
    b = np.asarray(jax.random.uniform(k_b, (features,), jnp.float32, maxval=2 * np.pi), dtype=float)
    m = _normal(k_m, (n_clients, input_dim))
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    z = heterogeneity * m[:, None, :] + _normal(
        k_z, (n_clients, samples_per_client, input_dim))
    phi = np.sqrt(2.0 / features) * np.cos(z @ W.T + b)
    A = np.swapaxes(phi, 1, 2) @ phi / samples_per_client
    return federated_pca(0.5 * (A + np.swapaxes(A, 1, 2)), manifold=manifold, rank=rank, key=k_x0, dtype=dtype)
