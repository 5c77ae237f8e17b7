"""Classical stochastic approximation: Robbins-Monro on a strongly monotone linear operator.

Papers
------
* H. Robbins and S. Monro, "A Stochastic Approximation Method", Ann. Math. Statist. 22(3), 1951.
  The iteration x_{k+1} = x_k - a_k H(x_k, xi_k) with E[H(x, xi)] = h(x).
* K. L. Chung, "On a Stochastic Approximation Method", Ann. Math. Statist. 25(3), 1954. For
  h(x) = lambda (x - x*) and a_k = a / k, E (x_k - x*)^2 ~ a^2 sigma^2 / (2 a lambda - 1) / k when
  2 a lambda > 1, and decays only like k^(-2 a lambda) when 2 a lambda < 1.

Symbols -> arguments: h(x) = A x - b (``LinearSA.A``, ``LinearSA.b``, scalar case A = lambda), the noise
H(x, xi) - h(x) = sigma xi with xi ~ N(0, I) (``sigma``), a_k = a / (k + k0) (``harmonic(a, k0)`` passed as
``step_size``), x_0 (``x0``), x* = A^{-1} b (``x_star``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_positive, check_positive_int, check_shape
from rl_theory.precision import storage_dtype


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LinearSA:
    """Find x* with h(x) = A x - b = 0 from noisy evaluations H(x, xi) = h(x) + xi, xi ~ N(0, sigma^2 I)."""

    A: jax.Array
    b: jax.Array
    sigma: jax.Array
    x0: jax.Array
    x_star: jax.Array

    @property
    def dim(self) -> int:
        return self.b.shape[0]

    def mean_field(self, x: jax.Array) -> jax.Array:
        """h(x) = A x - b."""
        return self.A @ x - self.b

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Draws of the additive oracle noise sigma * N(0, I), an array of shape ``(*shape, dim)``."""
        return self.sigma * jax.random.normal(key, (*shape, *self.b.shape), self.b.dtype)

    def oracle(self, x: jax.Array, xi: jax.Array) -> jax.Array:
        """H(x, xi) = h(x) + xi."""
        return self.mean_field(x) + xi

    def solution(self) -> jax.Array:
        return self.x_star


def linear_sa(A: Any, b: Any, *, sigma: float = 1.0, x0: Any = None, dtype: Any = None) -> LinearSA:
    """Build a :class:`LinearSA` after checking shapes and strong monotonicity (min eig of (A + A^T)/2 > 0).

    The arrays are stored in ``dtype`` (default: JAX's default float; see :func:`rl_theory.precision.storage_dtype`,
    which raises rather than round float64 data to float32 outside x64 mode). x* solves A x = b in float64 from the
    stored A and b, so that it is their root to the storage precision.
    """
    dtype = storage_dtype(dtype, A=A, b=b, x0=x0)
    A_np = np.atleast_2d(np.asarray(A, dtype=float))
    b_np = np.atleast_1d(np.asarray(b, dtype=float))
    if A_np.ndim != 2 or A_np.shape[0] != A_np.shape[1]:
        raise RatelabError(f"A must be a square matrix, got shape {A_np.shape}")
    d = A_np.shape[0]
    check_shape("b", b_np, (d,), f"to match A {A_np.shape}")
    x0_np = np.zeros(d) if x0 is None else np.atleast_1d(np.asarray(x0, dtype=float))
    check_shape("x0", x0_np, (d,), f"to match A {A_np.shape}")
    check_positive("sigma", sigma)
    mu = float(np.linalg.eigvalsh(0.5 * (A_np + A_np.T)).min())
    if mu <= 0:
        raise RatelabError(f"A must be strongly monotone (min eigenvalue of (A + A^T)/2 > 0), got {mu:.3g}")
    A_np, b_np, x0_np = (v.astype(dtype).astype(float) for v in (A_np, b_np, x0_np))
    x_star = np.linalg.solve(A_np, b_np)
    return LinearSA(
        A=jnp.asarray(A_np, dtype),
        b=jnp.asarray(b_np, dtype),
        sigma=jnp.asarray(sigma, dtype),
        x0=jnp.asarray(x0_np, dtype),
        x_star=jnp.asarray(x_star, dtype),
    )


def make_scalar_sa(key: jax.Array | None = None, *, lam: float = 1.0, sigma: float = 1.0, x0: float = 1.0,
                   x_star: float = 0.0) -> LinearSA:
    """Chung's scalar problem h(x) = lam (x - x_star) with N(0, sigma^2) noise. ``key`` is unused."""
    del key
    check_positive("lam", lam)
    return linear_sa([[lam]], [lam * x_star], sigma=sigma, x0=[x0], dtype=storage_dtype())


def make_linear_sa(key: jax.Array, *, dim: int, lam_min: float = 1.0, lam_max: float = 1.0, sigma: float = 1.0,
                   x0_scale: float = 1.0) -> LinearSA:
    """A random symmetric A with spectrum evenly spread in [lam_min, lam_max], random b and x0."""
    check_positive_int("dim", dim)
    check_positive("lam_min", lam_min)
    check_positive("lam_max", lam_max)
    if lam_max < lam_min:
        raise RatelabError(f"lam_max must be >= lam_min ({lam_min}), got {lam_max}")
    kq, kb, kx = jax.random.split(key, 3)
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(kq, (dim, dim)), dtype=float))
    A = (q * np.linspace(lam_min, lam_max, dim)) @ q.T
    b = np.asarray(jax.random.normal(kb, (dim,)), dtype=float)
    x0 = np.linalg.solve(A, b) + x0_scale * np.asarray(jax.random.normal(kx, (dim,)), dtype=float)
    return linear_sa(0.5 * (A + A.T), b, sigma=sigma, x0=x0, dtype=storage_dtype())


class RMState(NamedTuple):
    x: jax.Array
    count: jax.Array


def robbins_monro(step_size: Any) -> Solver:
    """Robbins-Monro iteration x_{k+1} = x_k - a_k H(x_k, xi_k) (Robbins & Monro 1951, eq. (5)).

    Args:
      step_size: a_k, a positive float or a schedule k -> a_k (e.g. ``harmonic(a, k0)`` for a / (k + k0)).

    Metrics: ``sq_dist_to_opt`` = ||x_{k+1} - x*||^2 and ``dist_to_opt`` = ||x_{k+1} - x*||.
    """
    check_positive("step_size", step_size)
    schedule = as_schedule(step_size)

    def init(problem: LinearSA, key: jax.Array) -> RMState:
        del key
        return RMState(x=problem.x0, count=jnp.zeros((), jnp.int32))

    def step(state: RMState, problem: LinearSA, xi: jax.Array) -> tuple[RMState, dict[str, jax.Array]]:
        a = jnp.asarray(schedule(state.count), state.x.dtype)
        x = state.x - a * problem.oracle(state.x, xi)
        err = x - problem.x_star
        sq = jnp.vdot(err, err)
        return RMState(x, state.count + 1), {"sq_dist_to_opt": sq, "dist_to_opt": jnp.sqrt(sq)}

    def sample(problem: LinearSA, key: jax.Array, n: int) -> jax.Array:
        return problem.sample(key, (n,))

    return Solver(init, step, sample)


def exact_second_moment(problem: LinearSA, step_size: Any, steps: int) -> np.ndarray:
    """E||x_k - x*||^2 for k = 1..steps, exactly, from P_{k+1} = (I - a_k A) P_k (I - a_k A)^T + a_k^2 sigma^2 I.

    P_k = E (x_k - x*)(x_k - x*)^T; computed in float64 (a ``lax.scan``): the ground truth that Monte Carlo runs
    are checked against.
    """
    check_positive_int("steps", steps)
    schedule = as_schedule(step_size)
    with jax.enable_x64(True):
        A = jnp.asarray(problem.A, jnp.float64)
        s2 = jnp.asarray(problem.sigma, jnp.float64) ** 2
        e0 = jnp.asarray(problem.x0, jnp.float64) - jnp.asarray(problem.x_star, jnp.float64)
        eye = jnp.eye(A.shape[0], dtype=jnp.float64)

        def body(P, k):
            a = jnp.asarray(schedule(k), jnp.float64)
            M = eye - a * A
            P = M @ P @ M.T + a * a * s2 * eye
            return P, jnp.trace(P)

        _, out = jax.jit(lambda P0: jax.lax.scan(body, P0, jnp.arange(steps)))(jnp.outer(e0, e0))
        return np.asarray(out)


def chung_constant(a: float, lam: float, sigma: float) -> float:
    """lim_k k E(x_k - x*)^2 = a^2 sigma^2 / (2 a lam - 1) for a_k = a / (k + k0), valid when 2 a lam > 1."""
    if 2 * a * lam <= 1:
        raise RatelabError(f"the constant exists only when 2*a*lam > 1, got 2*a*lam = {2 * a * lam:g}")
    return a * a * sigma * sigma / (2 * a * lam - 1)


def chung_exponent(a: float, lam: float) -> float:
    """The exponent p in E(x_k - x*)^2 ~ k^p: -1 when 2 a lam > 1, -2 a lam when 2 a lam < 1."""
    return -min(1.0, 2 * a * lam)
