"""Stochastic approximation with several coupled sequences, single- or multi-timescale.

Paper
-----
H. Shen and T. Chen, "A Single-Timescale Analysis For Stochastic Approximation With Multiple Coupled Sequences",
NeurIPS 2022, arXiv:2206.10414.

The paper's multi-sequence SA (its eq. (3)) seeks a main sequence x and N coupled sequences y^1..y^N with
h^n(y^{n-1}, y^n) = 0 (y^0 = x) and v(x, y^N) = 0 (or grad F(x) = 0 when the main problem is nonconvex):

    y^n_{k+1} = y^n_k + beta_{k,n} (h^n(y^{n-1}_k, y^n_k) + psi^n_k),   x_{k+1} = x_k + alpha_k (v(x_k, y^N_k) + xi_k).

Theorem 1 (all increments strongly monotone): with alpha_k, beta_{k,n} = Theta(1/k) (single timescale),
E||x_K - x*||^2 + sum_n E||y^n_K - y^{n,*}(y^{n-1}_K)||^2 = O(1/K). Theorem 2 (main sequence nonconvex): with
alpha, beta_n = Theta(1/sqrt K), (1/K) sum_k E||grad F(x_k)||^2 = O(K^{-1/2}).

Symbols -> arguments. This module writes every sequence with the descent sign of :mod:`rl_theory.sa`:
z_m <- z_m - a_{k,m} (H_m(z_k) + noise_m), so H_1 = -v, H_{n+1} = -h^n, z = (x, y^1, ..., y^N) (a tuple, the
problem's ``names``), a_{k,1} = alpha_k and a_{k,n+1} = beta_{k,n} (``step_sizes``, floats or schedules, one per
sequence). Every operator H_m may read all sequences (the paper's chain h^n(y^{n-1}, y^n) is a special case), and all
sequences move simultaneously from z_k, as in eq. (3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule, power_decay
from ratelab.solver import Solver
from ratelab.validate import check_nonnegative, check_positive, check_positive_int
from rl_theory.precision import device_array, storage_dtype

Tup = tuple[jax.Array, ...]


def _split(v: jax.Array, dims: tuple[int, ...]) -> Tup:
    return tuple(jnp.split(v, np.cumsum(dims)[:-1].tolist(), axis=-1))


def _noise(key: jax.Array, sigma: jax.Array, dims: tuple[int, ...], shape: tuple[int, ...], dtype) -> Tup:
    keys = jax.random.split(key, len(dims))
    return tuple(sigma[m] * jax.random.normal(keys[m], (*shape, d), dtype) for m, d in enumerate(dims))


def _sq(v: jax.Array) -> jax.Array:
    return jnp.vdot(v, v)


class _Common:
    """Shared methods: additive Gaussian noise per sequence, oracle, per-sequence errors."""

    dims: tuple[int, ...]
    names: tuple[str, ...]
    sigma: jax.Array

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> Tup:
        """Additive oracle noise sigma_m N(0, I) for every sequence: a tuple of ``(*shape, d_m)`` arrays."""
        return _noise(key, self.sigma, self.dims, shape, self.sigma.dtype)

    def oracle(self, z: Tup, xi: Tup) -> Tup:
        """H(z, xi) = H(z) + xi, sequence by sequence."""
        return tuple(h + e for h, e in zip(self.mean_field(z), xi, strict=True))

    def metrics(self, z: Tup) -> dict[str, jax.Array]:
        """``sq_dist_<name>`` = ||z_m - z_m*||^2 per sequence and their sum ``sq_dist_to_opt``."""
        out = {f"sq_dist_{n}": _sq(a - b) for n, a, b in zip(self.names, z, self.z_star, strict=True)}
        out["sq_dist_to_opt"] = sum(out.values())
        return out


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CoupledLinearSA(_Common):
    """H(z) = A z - b on the concatenation z = (z_1, ..., z_M), blocks of sizes ``dims``; z* = A^{-1} b."""

    A: jax.Array
    b: jax.Array
    sigma: jax.Array
    z0: Tup
    z_star: Tup
    dims: tuple[int, ...] = field(metadata={"static": True})
    names: tuple[str, ...] = field(metadata={"static": True})

    def mean_field(self, z: Tup) -> Tup:
        return _split(self.A @ jnp.concatenate(z) - self.b, self.dims)

    def solution(self) -> Tup:
        return self.z_star


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CoupledNonlinearSA(_Common):
    """Two coupled nonlinear sequences (x, y) with root (x*, y*) by construction:

    H_x(x, y) = lam_x (x - x*) + 1/2 (sin x - sin x*) - C_x (tanh y - tanh y*),
    H_y(x, y) = lam_y (y - y*) + 1/2 (tanh y - tanh y*) - C_y (tanh x - tanh x*).

    The symmetric part of the joint Jacobian is >= min(lam_x - 1/2, lam_y) - (||C_x|| + ||C_y||)/2 = ``mu`` > 0
    everywhere, so H is strongly monotone, the root is unique, and y*(x) is smooth (the paper's Assumptions 1-3).
    """

    lam: jax.Array
    Cx: jax.Array
    Cy: jax.Array
    sigma: jax.Array
    z0: Tup
    z_star: Tup
    dims: tuple[int, ...] = field(metadata={"static": True})
    names: tuple[str, ...] = field(metadata={"static": True})

    def mean_field(self, z: Tup) -> Tup:
        (x, y), (xs, ys) = z, self.z_star
        hx = self.lam[0] * (x - xs) + 0.5 * (jnp.sin(x) - jnp.sin(xs)) - self.Cx @ (jnp.tanh(y) - jnp.tanh(ys))
        hy = self.lam[1] * (y - ys) + 0.5 * (jnp.tanh(y) - jnp.tanh(ys)) - self.Cy @ (jnp.tanh(x) - jnp.tanh(xs))
        return hx, hy

    def solution(self) -> Tup:
        return self.z_star


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BilevelSA(_Common):
    """A stochastic bilevel problem with a nonconvex upper level, as three coupled sequences (x, y, w).

    Lower level g(x, y) = 1/2 y^T H y - y^T B x (strongly convex in y, y*(x) = H^{-1} B x); upper level
    f(x, y) = sum_j log(1 + (y_j - c_j)^2) + rho/2 ||x||^2, so F(x) = f(x, y*(x)) is smooth, bounded below and
    nonconvex. The SA form of the paper's Section 4 (stochastic bilevel optimisation):

      H_y = grad_y g(x, y) = H y - B x,   H_w = H w - grad_y f(x, y),   H_x = grad_x f(x, y) + B^T w,

    whose fixed points are y*(x), w*(x) = H^{-1} grad_y f(x, y*(x)) and H_x(x, y*, w*) = grad F(x).
    """

    H: jax.Array
    H_inv: jax.Array
    B: jax.Array
    c: jax.Array
    rho: jax.Array
    sigma: jax.Array
    z0: Tup
    dims: tuple[int, ...] = field(metadata={"static": True})
    names: tuple[str, ...] = field(metadata={"static": True})

    def grad_y_f(self, y: jax.Array) -> jax.Array:
        r = y - self.c
        return 2 * r / (1 + r * r)

    def y_star(self, x: jax.Array) -> jax.Array:
        return self.H_inv @ (self.B @ x)

    def upper(self, x: jax.Array) -> jax.Array:
        """F(x) = f(x, y*(x))."""
        return jnp.sum(jnp.log1p((self.y_star(x) - self.c) ** 2)) + 0.5 * self.rho * _sq(x)

    def grad_F(self, x: jax.Array) -> jax.Array:
        """The hypergradient grad F(x) = rho x + B^T H^{-1} grad_y f(x, y*(x)) (H symmetric)."""
        return self.rho * x + self.B.T @ (self.H_inv @ self.grad_y_f(self.y_star(x)))

    def mean_field(self, z: Tup) -> Tup:
        x, y, w = z
        return self.rho * x + self.B.T @ w, self.H @ y - self.B @ x, self.H @ w - self.grad_y_f(y)

    def metrics(self, z: Tup) -> dict[str, jax.Array]:
        x, y, w = z
        ys = self.y_star(x)
        ws = self.H_inv @ self.grad_y_f(ys)
        return {"grad_norm_sq": _sq(self.grad_F(x)), "sq_dist_y": _sq(y - ys), "sq_dist_w": _sq(w - ws)}


# ----------------------------------------------------------------------------------------------------- generators


def _dims(dims: Sequence[int]) -> tuple[int, ...]:
    if isinstance(dims, (int, np.integer)) or len(dims) < 2:
        raise RatelabError(f"dims must list at least 2 sequence sizes, got {dims!r}")
    return tuple(check_positive_int(f"dims[{i}]", d) for i, d in enumerate(dims))


def _names(m: int) -> tuple[str, ...]:
    return ("x",) + tuple(f"y{n}" for n in range(1, m))


def _spd(rng: np.random.Generator, d: int, lo: float, hi: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.linspace(lo, hi, d)) @ q.T


def _scaled(rng: np.random.Generator, shape: tuple[int, int], norm: float) -> np.ndarray:
    c = rng.standard_normal(shape)
    return norm * c / np.linalg.norm(c, 2)


def _seed(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _sigmas(sigma: Any, m: int) -> np.ndarray:
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (m,)) if np.ndim(sigma) == 0 else np.asarray(sigma, float)
    if sig.shape != (m,):
        raise RatelabError(f"sigma must be a number or one value per sequence ({m}), got {sigma!r}")
    check_positive("sigma", sig)
    return sig


def coupled_linear(A: Any, b: Any, dims: Sequence[int], *, sigma: float | Sequence[float] = 1.0, z0: Any = None,
                   dtype: Any = None) -> CoupledLinearSA:
    """:class:`CoupledLinearSA` from the user's own operator: H(z) = A z - b on z = (z_1, ..., z_M), blocks of
    sizes ``dims``; the root z* = A^{-1} b is computed here (float64, from the stored A and b).

    Checks shapes and strong monotonicity (min eigenvalue of (A + A^T)/2 > 0, the paper's Assumption for
    Theorem 1). ``z0`` defaults to 0; ``sigma`` is one noise level per sequence (or one for all). Arrays are stored
    in ``dtype`` (:func:`rl_theory.precision.storage_dtype`: no silent float64 -> float32 rounding).
    """
    dims = _dims(dims)
    dt = storage_dtype(dtype, A=A, b=b, z0=z0)
    n = int(np.sum(dims))
    A_np = np.asarray(A, dtype=float)
    if A_np.shape != (n, n):
        raise RatelabError(f"A must have shape {(n, n)} (the sum of dims {dims}), got {A_np.shape}")
    b_np = np.asarray(b, dtype=float)
    if b_np.shape != (n,):
        raise RatelabError(f"b must have shape {(n,)} to match A, got {b_np.shape}")
    z0_np = np.zeros(n) if z0 is None else np.asarray(z0, dtype=float)
    if z0_np.shape != (n,):
        raise RatelabError(f"z0 must have shape {(n,)} to match A, got {z0_np.shape}")
    if not (np.all(np.isfinite(A_np)) and np.all(np.isfinite(b_np)) and np.all(np.isfinite(z0_np))):
        raise RatelabError("A, b and z0 must be finite")
    sig = _sigmas(sigma, len(dims))
    A_np, b_np, z0_np = (v.astype(dt).astype(float) for v in (A_np, b_np, z0_np))
    mu = float(np.linalg.eigvalsh(0.5 * (A_np + A_np.T)).min())
    if mu <= 0:
        raise RatelabError(f"A must be strongly monotone (min eigenvalue of (A + A^T)/2 > 0), got {mu:.3g}")
    z_star = np.linalg.solve(A_np, b_np)
    return CoupledLinearSA(A=jnp.asarray(A_np, dt), b=jnp.asarray(b_np, dt), sigma=jnp.asarray(sig, dt),
                           z0=_split(jnp.asarray(z0_np, dt), dims), z_star=_split(jnp.asarray(z_star, dt), dims),
                           dims=dims, names=_names(len(dims)))


def make_coupled_linear(key: jax.Array, *, dims: Sequence[int] = (3, 3), lam_min: float = 1.0,
                        lam_max: float = 2.0, coupling: float = 0.5, sigma: float | Sequence[float] = 1.0,
                        z0_scale: float = 1.0, A: Any = None, b: Any = None) -> CoupledLinearSA:
    """Coupled linear SA in the paper's chain form: H_1 = A_1 x - C_1 y^N - b_1, H_{n+1} = A_{n+1} y^n - C_{n+1}
    y^{n-1} - b_{n+1} (y^0 = x), each A_m symmetric with spectrum in [lam_min, lam_max], ||C_m|| = coupling.

    A given ``A`` (and/or ``b``) replaces the random one (``lam_min``, ``lam_max``, ``coupling`` then do not apply
    to it); z* = A^{-1} b is computed by :func:`coupled_linear`, z0 = z* + z0_scale N(0, I).
    Raises unless the joint operator is strongly monotone (min eigenvalue of (A + A^T)/2 > 0).
    """
    dims = _dims(dims)
    check_nonnegative("z0_scale", z0_scale)
    m, n = len(dims), int(np.sum(dims))
    rng = _seed(key)
    if A is None:
        check_positive("lam_min", lam_min)
        check_positive("lam_max", lam_max)
        check_nonnegative("coupling", coupling)
        if lam_max < lam_min:
            raise RatelabError(f"lam_max must be >= lam_min ({lam_min}), got {lam_max}")
        off = np.cumsum((0, *dims))
        A_gen = np.zeros((n, n))
        for i, d in enumerate(dims):
            A_gen[off[i]:off[i + 1], off[i]:off[i + 1]] = _spd(rng, d, lam_min, lam_max)
            j = (i - 1) % m
            A_gen[off[i]:off[i + 1], off[j]:off[j + 1]] = -_scaled(rng, (d, dims[j]), coupling)
        mu = float(np.linalg.eigvalsh(0.5 * (A_gen + A_gen.T)).min())
        if mu <= 0:
            raise RatelabError(f"coupling must be small enough for a strongly monotone joint operator "
                               f"(min eigenvalue of (A + A^T)/2 = {mu:.3g} <= 0); got coupling={coupling}")
        A, dt = A_gen, storage_dtype()
    else:
        dt = storage_dtype(None, A=A, b=b)
    b = rng.standard_normal(n) if b is None else b
    problem = coupled_linear(A, b, dims, sigma=sigma, dtype=dt)
    z_star = np.concatenate([np.asarray(v, dtype=float) for v in problem.z_star])
    z0 = z_star + z0_scale * rng.standard_normal(n)
    return coupled_linear(problem.A, problem.b, dims, sigma=sigma, z0=z0.astype(dt), dtype=dt)


def _matrix(name: str, value: Any, shape: tuple[int, int], why: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise RatelabError(f"{name} must have shape {shape} ({why}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RatelabError(f"{name} must be finite")
    return arr


def _vec(name: str, value: Any, n: int | None = None, why: str = "") -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.shape != (n,)) or not np.all(np.isfinite(arr)):
        want = f"a finite vector of length {n}" + (f" ({why})" if why else "") if n else "a finite 1-D vector"
        raise RatelabError(f"{name} must be {want}, got shape {arr.shape}")
    return arr


def coupled_nonlinear(*, lam: Any, Cx: Any, Cy: Any, x_star: Any, y_star: Any, z0: Any = None, sigma: float = 1.0,
                      dtype: Any = None) -> CoupledNonlinearSA:
    """:class:`CoupledNonlinearSA` from the user's own coupling matrices and root: lam = (lam_x, lam_y) > 0, Cx, Cy
    ``[d, d]``, the root x*, y* ``[d]``, the start z0 = (x0, y0) (``[2, d]``; default the root). Raises unless the
    joint operator is strongly monotone, mu = min(lam_x - 1/2, lam_y) - (||C_x|| + ||C_y||)/2 > 0 (the value is in
    the error). Stored in ``dtype`` (:func:`rl_theory.precision.storage_dtype`). Every check runs before any
    computation."""
    lam_ = _vec("lam", lam, 2, "(lam_x, lam_y)")
    check_positive("lam", lam_)
    xs = _vec("x_star", x_star)
    d = xs.shape[0]
    ys = _vec("y_star", y_star, d, "x_star's length")
    Cx_ = _matrix("Cx", Cx, (d, d), "d = len(x_star)")
    Cy_ = _matrix("Cy", Cy, (d, d), "d = len(x_star)")
    z0_ = np.stack([xs, ys]) if z0 is None else _matrix("z0", z0, (2, d), "(x0, y0), d = len(x_star)")
    check_positive("sigma", sigma)
    mu = min(lam_[0] - 0.5, lam_[1]) - 0.5 * (np.linalg.norm(Cx_, 2) + np.linalg.norm(Cy_, 2))
    if mu <= 0:
        raise RatelabError(f"lam, Cx and Cy must satisfy min(lam_x - 1/2, lam_y) - (||Cx|| + ||Cy||)/2 > 0 (strong "
                           f"monotonicity), got {mu:.3g}")
    dt = storage_dtype(dtype, lam=lam, Cx=Cx, Cy=Cy, x_star=x_star, y_star=y_star, z0=z0)
    return CoupledNonlinearSA(lam=jnp.asarray(lam_, dt), Cx=jnp.asarray(Cx_, dt), Cy=jnp.asarray(Cy_, dt),
                              sigma=jnp.full((2,), sigma, dt), z0=tuple(jnp.asarray(v, dt) for v in z0_),
                              z_star=(jnp.asarray(xs, dt), jnp.asarray(ys, dt)), dims=(d, d), names=("x", "y"))


def bilevel_sa(*, H: Any, B: Any, c: Any, rho: float, x0: Any, sigma: float = 0.5,
               dtype: Any = None) -> BilevelSA:
    """:class:`BilevelSA` from the user's own matrices: H ``[dy, dy]`` symmetric positive definite (a strongly
    convex lower level; the smallest eigenvalue is in the error), B ``[dy, dx]``, c ``[dy]``, rho >= 0, x0
    ``[dx]`` (y0 = w0 = 0). H^{-1} is computed here in float64. Stored in ``dtype``
    (:func:`rl_theory.precision.storage_dtype`). Every check runs before any computation."""
    c_ = _vec("c", c)
    dy = c_.shape[0]
    x0_ = _vec("x0", x0)
    dx = x0_.shape[0]
    H_ = _matrix("H", H, (dy, dy), "dy = len(c)")
    B_ = _matrix("B", B, (dy, dx), "(len(c), len(x0))")
    asym = float(np.max(np.abs(H_ - H_.T)))
    if asym > 1e-10 * max(1.0, float(np.max(np.abs(H_)))):
        raise RatelabError(f"H must be symmetric; max |H - H'| = {asym:.3g}")
    low = float(np.linalg.eigvalsh(0.5 * (H_ + H_.T))[0])
    if low <= 0:
        raise RatelabError(f"H must be positive definite (strongly convex lower level); its smallest eigenvalue is "
                           f"{low:.6g}")
    check_nonnegative("rho", rho)
    check_positive("sigma", sigma)
    dt = storage_dtype(dtype, H=H, B=B, c=c, x0=x0)
    zero = jnp.zeros(dy, dt)
    return BilevelSA(H=device_array(H_, dt), H_inv=device_array(np.linalg.inv(H_), dt), B=device_array(B_, dt),
                     c=device_array(c_, dt), rho=device_array(rho, dt), sigma=jnp.full((3,), sigma, dt),
                     z0=(device_array(x0_, dt), zero, zero), dims=(dx, dy, dy), names=("x", "y", "w"))


def make_coupled_nonlinear(key: jax.Array, *, dim: int = 3, lam: tuple[float, float] = (1.5, 1.0),
                           coupling: float = 0.4, sigma: float = 1.0, z0_scale: float = 1.0) -> CoupledNonlinearSA:
    """The nonlinear strongly monotone pair of :class:`CoupledNonlinearSA` with random x*, y*, C_x, C_y
    (||C_x|| = ||C_y|| = coupling). Raises unless mu = min(lam_x - 1/2, lam_y) - coupling > 0."""
    check_positive_int("dim", dim)
    check_positive("lam", lam)
    check_nonnegative("coupling", coupling)
    check_positive("sigma", sigma)
    mu = min(lam[0] - 0.5, lam[1]) - coupling
    if mu <= 0:
        raise RatelabError(f"lam and coupling must satisfy min(lam_x - 1/2, lam_y) - coupling > 0 (strong "
                           f"monotonicity), got {mu:.3g}")
    rng = _seed(key)
    zs = rng.standard_normal((2, dim))
    z0 = zs + z0_scale * rng.standard_normal((2, dim))
    dt = storage_dtype()
    return CoupledNonlinearSA(
        lam=device_array(lam, dt), Cx=device_array(_scaled(rng, (dim, dim), coupling), dt),
        Cy=device_array(_scaled(rng, (dim, dim), coupling), dt), sigma=jnp.full((2,), sigma, dt),
        z0=tuple(device_array(v, dt) for v in z0), z_star=tuple(device_array(v, dt) for v in zs),
        dims=(dim, dim), names=("x", "y"))


def make_bilevel_nonconvex(key: jax.Array, *, dim: int = 4, lam_min: float = 1.0, lam_max: float = 2.0,
                           rho: float = 0.1, c_scale: float = 2.0, sigma: float = 0.5,
                           x0_scale: float = 2.0) -> BilevelSA:
    """:class:`BilevelSA` with H spectrum in [lam_min, lam_max], B orthogonal, c ~ c_scale N(0, I), x0 random
    and y0 = w0 = 0 (``dim`` for x, y and w)."""
    check_positive_int("dim", dim)
    check_positive("lam_min", lam_min)
    check_positive("lam_max", lam_max)
    check_nonnegative("rho", rho)
    check_positive("sigma", sigma)
    if lam_max < lam_min:
        raise RatelabError(f"lam_max must be >= lam_min ({lam_min}), got {lam_max}")
    rng = _seed(key)
    H = _spd(rng, dim, lam_min, lam_max)
    B, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    c = c_scale * rng.standard_normal(dim)
    x0 = x0_scale * rng.standard_normal(dim)
    dt = storage_dtype()
    zero = jnp.zeros(dim, dt)
    return BilevelSA(H=device_array(H, dt), H_inv=device_array(np.linalg.inv(H), dt), B=device_array(B, dt),
                     c=device_array(c, dt), rho=device_array(rho, dt),
                     sigma=jnp.full((3,), sigma, dt), z0=(device_array(x0, dt), zero, zero), dims=(dim,) * 3,
                     names=("x", "y", "w"))


# --------------------------------------------------------------------------------------------------------- solver


class MultiSAState(NamedTuple):
    z: Tup
    count: jax.Array


def multi_sa(step_sizes: Sequence[Any]) -> Solver:
    """Multi-sequence SA (Shen & Chen 2022, eq. (3)): z_{m,k+1} = z_{m,k} - a_{k,m} (H_m(z_k) + xi_{m,k}), all
    sequences simultaneously from z_k.

    Args:
      step_sizes: one per sequence (x first), each a positive float or a schedule k -> a_{k,m} (k = 0, 1, ...):
        single timescale when all are Theta(1/k) (e.g. :func:`timescale_steps` with equal powers), two/multi
        timescale when their powers differ.

    Metrics: the problem's ``metrics(z_{k+1})`` (``sq_dist_<name>`` per sequence and ``sq_dist_to_opt`` when the
    root is known; ``grad_norm_sq`` = ||grad F(x)||^2 for the nonconvex bilevel problem).
    """
    if isinstance(step_sizes, (int, float)) or callable(step_sizes) or len(step_sizes) < 1:
        raise RatelabError(f"step_sizes must be a sequence with one step size per sequence, got {step_sizes!r}")
    for i, s in enumerate(step_sizes):
        check_positive(f"step_sizes[{i}]", s)
    schedules = tuple(as_schedule(s) for s in step_sizes)

    def init(problem: Any, key: jax.Array) -> MultiSAState:
        del key
        if len(problem.dims) != len(schedules):
            raise RatelabError(f"step_sizes must have one entry per sequence ({len(problem.dims)}: "
                               f"{', '.join(problem.names)}), got {len(schedules)}")
        return MultiSAState(z=tuple(problem.z0), count=jnp.zeros((), jnp.int32))

    def step(state: MultiSAState, problem: Any, xi: Tup) -> tuple[MultiSAState, dict[str, jax.Array]]:
        g = problem.oracle(state.z, xi)
        z = tuple(zm - jnp.asarray(s(state.count), zm.dtype) * gm
                  for zm, s, gm in zip(state.z, schedules, g, strict=True))
        return MultiSAState(z, state.count + 1), problem.metrics(z)

    def sample(problem: Any, key: jax.Array, n: int) -> Tup:
        return problem.sample(key, (n,))

    return Solver(init, step, sample)


def timescale_steps(scales: Sequence[float], powers: Sequence[float], offset: float = 1.0) -> tuple:
    """Schedules a_{k,m} = scales[m] / (k + offset)^powers[m]: equal powers = single timescale."""
    if len(scales) != len(powers):
        raise RatelabError(f"powers must have one entry per scale ({len(scales)}), got {len(powers)}")
    return tuple(power_decay(s, offset, p) for s, p in zip(scales, powers, strict=True))


# --------------------------------------------------------------------------------------------------- exact moments


def block_diag_steps(problem: CoupledLinearSA, values: Sequence[float]) -> np.ndarray:
    """The per-coordinate vector that repeats ``values[m]`` d_m times."""
    return np.repeat(np.asarray(values, dtype=float), problem.dims)


def slowest_mode(problem: CoupledLinearSA, scales: Sequence[float]) -> float:
    """min Re eig(diag(scales) A): with steps scales[m] / k, every sequence is in the 1/k regime iff this is > 1/2
    (Chung's condition for the joint linear recursion)."""
    D = block_diag_steps(problem, scales)
    return float(np.linalg.eigvals(D[:, None] * np.asarray(problem.A, dtype=float)).real.min())


def exact_block_second_moment(problem: CoupledLinearSA, step_sizes: Sequence[Any], steps: int) -> np.ndarray:
    """``[steps, M]``: E||z_{m,k} - z_m*||^2 for k = 1..steps, exactly, for the linear problem.

    With e_k = z_k - z*, D_k = diag(a_{k,m} repeated d_m times) and S = diag(sigma_m^2 repeated d_m times):
    P_{k+1} = (I - D_k A) P_k (I - D_k A)^T + D_k S D_k; the block traces of P_k (float64, a ``lax.scan``).
    """
    check_positive_int("steps", steps)
    schedules = [as_schedule(s) for s in step_sizes]
    if len(schedules) != len(problem.dims):
        raise RatelabError(f"step_sizes must have one entry per sequence ({len(problem.dims)}), got {len(schedules)}")
    with jax.enable_x64(True):
        A = jnp.asarray(problem.A, jnp.float64)
        S = jnp.asarray(block_diag_steps(problem, np.asarray(problem.sigma, dtype=float) ** 2))
        e0 = jnp.concatenate([jnp.asarray(a, jnp.float64) - jnp.asarray(b, jnp.float64)
                              for a, b in zip(problem.z0, problem.z_star, strict=True)])
        seg = jnp.asarray(np.repeat(np.arange(len(problem.dims)), problem.dims))
        reps = jnp.asarray(problem.dims)

        def body(P, k):
            a = jnp.stack([jnp.asarray(s(k), jnp.float64) for s in schedules])
            d = jnp.repeat(a, reps, total_repeat_length=e0.size)
            M = jnp.eye(e0.size) - d[:, None] * A
            P = M @ P @ M.T + jnp.diag(d * d * S)
            return P, jax.ops.segment_sum(jnp.diag(P), seg, num_segments=len(problem.dims))

        _, out = jax.jit(lambda P0: jax.lax.scan(body, P0, jnp.arange(steps)))(jnp.outer(e0, e0))
        return np.asarray(out)


def jacobian_at_root(problem: Any) -> np.ndarray:
    """The Jacobian of the joint mean field H at the root z* (forward mode, float64 where enabled)."""
    dims = problem.dims
    z_star = jnp.concatenate(problem.solution())
    jac = jax.jit(jax.jacfwd(lambda v: jnp.concatenate(problem.mean_field(_split(v, dims)))))(z_star)  # one program
    return np.asarray(jac, dtype=float)


def asymptotic_constants(problem: Any, scales: Sequence[float]) -> np.ndarray:
    """``[M]``: lim_k k E||z_{m,k} - z_m*||^2 for steps a_{k,m} = scales[m] / k, from the linearisation at z*.

    With J the Jacobian at the root and D = diag(scales), k P_k -> Sigma solving the Lyapunov equation
    (D J - I/2) Sigma + Sigma (D J - I/2)^T = D S D (valid when min Re eig(D J) > 1/2; exact for linear H).
    """
    from scipy.linalg import solve_continuous_lyapunov

    D = np.repeat(np.asarray(scales, dtype=float), problem.dims)
    J = jacobian_at_root(problem)
    G = D[:, None] * J - 0.5 * np.eye(D.size)
    if np.linalg.eigvals(G).real.min() <= 0:
        raise RatelabError(f"scales must satisfy min Re eig(diag(scales) J) > 1/2 for the 1/k regime, got "
                           f"{np.linalg.eigvals(G + 0.5 * np.eye(D.size)).real.min():.3g}")
    S = np.repeat(np.asarray(problem.sigma, dtype=float) ** 2, problem.dims)
    sigma_inf = solve_continuous_lyapunov(G, np.diag(D * D * S))
    seg = np.repeat(np.arange(len(problem.dims)), problem.dims)
    return np.bincount(seg, weights=np.diag(sigma_inf), minlength=len(problem.dims))
