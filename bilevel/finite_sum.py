"""A finite-sum bilevel quadratic in the form of benchopt's benchmark_bilevel simulated problem, with closed forms.

The benchmark (Dagreou, Ablin, Vaiter & Moreau, NeurIPS 2022, arXiv:2201.13409, and its public benchmark
``benchopt/benchmark_bilevel``, "simulated" / "quadratic" dataset) uses per-sample quadratics

    g(x, z) = 1/n sum_i  1/2 z'H^z_i z + 1/2 x'H^x_i x + x'C_i z + c_i'z + d_i'x          (inner, n samples)
    f(x, z) = 1/m sum_j  1/2 z'F^z_j z + 1/2 x'F^x_j x + x'D_j z + e_j'z + h_j'x          (outer, m samples)

with the mean inner Hessian Hbar^z having spectrum in [mu_inner, L_inner]; each step draws separate inner and
outer minibatches. The metric is the suboptimality h(x) - h* of the value function h(x) = f(x, z*(x)).

Closed forms (derived here from the quadratic structure): with bars denoting sample means,
z*(x) = J x + z0, J = -Hbar^{z -1} Cbar', z0 = -Hbar^{z -1} cbar; h is quadratic with Hessian
A = J'Fbar^z J + Fbar^x + Dbar J + J'Dbar' and linear term b = J'Fbar^z z0 + Dbar z0 + J'ebar + hbar, so
x* = -A^{-1} b and h* = h(x*) (A must be positive definite: checked).

The generator (reconstructed; the benchmark's exact draws are not reproduced): per-sample Wishart matrices
W_i = R_i R_i'/p, mapped by T = Hbar^{1/2} Wbar^{-1/2} to H_i = T W_i T', so every H_i is SPD and their mean is exactly
the target Hbar = Q diag(linspace(mu, L)) Q'. Cross matrices and vectors are Gaussian.

Protocol: ``lower(x, z, batch)`` / ``upper(x, z, batch)`` average over ``batch = (inner_idx, outer_idx)`` (the full
sums when ``batch`` is None); ``lower_i(x, z, i)`` / ``upper_j(x, z, j)`` are single samples (SABA's memory);
``sample_batch(key)`` (a placeholder with ``full_batch``: every step uses the full sums); ``initial(key)``;
``metrics(x, z)`` -> ``subopt`` h(x) - h*,
``rel_subopt`` (h(x) - h*)/(h(x0) - h*) at x0 = 0, ``grad_h_sq`` ||grad h(x)||^2, ``dist_z`` ||z - z*(x)||^2;
``penalised_solution(gamma)``: the closed-form minimiser of V-PBGD's penalised problem (derived).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.precision import check_float_dtype, float_array
from ratelab.errors import RatelabError
from ratelab.validate import check_positive, check_positive_int


def _quad(x, z, Hz, Hx, C, c, d):
    return 0.5 * z @ (Hz @ z) + 0.5 * x @ (Hx @ x) + x @ (C @ z) + c @ z + d @ x


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class FiniteSumQuadratic:
    """Per-sample arrays (leading axis n for the inner, m for the outer) and the closed-form reference."""

    Hz: jax.Array
    Hx: jax.Array
    C: jax.Array
    c: jax.Array
    d: jax.Array
    Fz: jax.Array
    Fx: jax.Array
    D: jax.Array
    e: jax.Array
    h: jax.Array
    J: jax.Array
    z0: jax.Array
    A: jax.Array
    b: jax.Array
    h_star: jax.Array
    h_gap0: jax.Array
    init_scale: jax.Array
    inner_batch: int = field(metadata=dict(static=True), default=1)
    outer_batch: int = field(metadata=dict(static=True), default=1)
    full_batch: bool = field(metadata=dict(static=True), default=False)

    @property
    def n_inner(self) -> int:
        return self.Hz.shape[0]

    @property
    def n_outer(self) -> int:
        return self.Fz.shape[0]

    def lower_i(self, x, z, i):
        return _quad(x, z, self.Hz[i], self.Hx[i], self.C[i], self.c[i], self.d[i])

    def upper_j(self, x, z, j):
        return _quad(x, z, self.Fz[j], self.Fx[j], self.D[j], self.e[j], self.h[j])

    def lower(self, x, z, batch=None):
        # the mean of per-sample quadratics is the quadratic of the mean arrays: one small form to differentiate
        arrays = (self.Hz, self.Hx, self.C, self.c, self.d)
        if batch is None or self.full_batch:
            return _quad(x, z, *(jnp.mean(a, 0) for a in arrays))
        return _quad(x, z, *(jnp.mean(a[batch[0]], 0) for a in arrays))

    def upper(self, x, z, batch=None):
        arrays = (self.Fz, self.Fx, self.D, self.e, self.h)
        if batch is None or self.full_batch:
            return _quad(x, z, *(jnp.mean(a, 0) for a in arrays))
        return _quad(x, z, *(jnp.mean(a[batch[1]], 0) for a in arrays))

    def sample_batch(self, key):
        if self.full_batch:  # deterministic: a placeholder; lower / upper use the full sums
            return jnp.zeros((), jnp.int32)
        ki, ko = jax.random.split(key)
        return (jax.random.randint(ki, (self.inner_batch,), 0, self.n_inner),
                jax.random.randint(ko, (self.outer_batch,), 0, self.n_outer))

    def lower_solution(self, x):
        return self.J @ x + self.z0

    def value(self, x):
        """h(x) = f(x, z*(x)) - h*, via the closed-form quadratic (derived here)."""
        return 0.5 * x @ (self.A @ x) + self.b @ x + self.upper(jnp.zeros_like(x), self.z0) - self.h_star

    def initial(self, key):
        kx, kz = jax.random.split(key)
        dt = jnp.result_type(self.b)
        return (self.init_scale * jax.random.normal(kx, self.b.shape, dt),
                self.init_scale * jax.random.normal(kz, self.z0.shape, dt))

    def metrics(self, x, z):
        gap = self.value(x)
        g = self.A @ x + self.b
        return {"subopt": gap, "rel_subopt": gap / self.h_gap0, "grad_h_sq": g @ g,
                "dist_z": jnp.sum(jnp.square(z - self.lower_solution(x)))}

    def solution(self):
        x = -jnp.linalg.solve(self.A, self.b)
        return x, self.lower_solution(x)

    def framework_matrix(self, inner_lr: float, outer_lr: float) -> np.ndarray:
        """The linear part M of the full-batch SOBA / SABA framework step on the state (x, z, v) (derived here; NumPy,
        no compile): z' = z - rho (Hz z + C'x + c), v' = v - rho (Hz v + Fz z + D'x + e), x' = x - gamma (C v + Fx x
        + D z + h), bars (full means) dropped. :func:`bilevel.stochastic.framework_map` is the autodiff version."""
        Hz, C, Fz, Fx, D = (np.asarray(a).mean(0) for a in (self.Hz, self.C, self.Fz, self.Fx, self.D))
        d, p = Fx.shape[0], Hz.shape[0]
        X, Z, V = slice(0, d), slice(d, d + p), slice(d + p, d + 2 * p)
        M = np.eye(d + 2 * p)
        M[Z, Z] -= inner_lr * Hz
        M[Z, X] -= inner_lr * C.T
        M[V, V] -= inner_lr * Hz
        M[V, Z] -= inner_lr * Fz
        M[V, X] -= inner_lr * D.T
        M[X, V] -= outer_lr * C
        M[X, X] -= outer_lr * Fx
        M[X, Z] -= outer_lr * D
        return M

    def penalised_solution(self, gamma):
        """The minimiser (x_gamma, y_gamma) of V-PBGD's penalised problem F_gamma(x, y) = f(x, y) + gamma (g(x, y) -
        min_z g(x, z)) on the full sums (derived here): g(x, y) - v(x) = 1/2 (y - z*(x))' Hbar^z (y - z*(x)) exactly,
        so F_gamma is quadratic and its stationarity equations

            (Fbar^x + gamma J'Hbar^z J) x + (Dbar - gamma J'Hbar^z) y = -hbar - gamma J'Hbar^z z0
            (Dbar' - gamma Hbar^z J) x + (Fbar^z + gamma Hbar^z) y   = -ebar + gamma Hbar^z z0

        are one linear solve. Differentiable and vmappable in gamma."""
        Hz, Fz, Fx, D = (jnp.mean(a, 0) for a in (self.Hz, self.Fz, self.Fx, self.D))
        e, h = jnp.mean(self.e, 0), jnp.mean(self.h, 0)
        JH = self.J.T @ Hz
        top = jnp.concatenate([Fx + gamma * JH @ self.J, D - gamma * JH], axis=1)
        bot = jnp.concatenate([D.T - gamma * JH.T, Fz + gamma * Hz], axis=1)
        rhs = jnp.concatenate([-h - gamma * JH @ self.z0, -e + gamma * Hz @ self.z0])
        sol = jnp.linalg.solve(jnp.concatenate([top, bot], axis=0), rhs)
        dx = self.b.shape[0]
        return sol[:dx], sol[dx:]


def _check_spd_stack(name: str, M: np.ndarray, dim: int, count: int | None) -> np.ndarray:
    if M.ndim != 3 or M.shape[1:] != (dim, dim) or (count is not None and M.shape[0] != count):
        want = f"({count if count is not None else 'n'}, {dim}, {dim})"
        raise RatelabError(f"{name} must have shape {want}, got {M.shape}")
    asym = float(np.max(np.abs(M - np.swapaxes(M, 1, 2))))
    if asym > 1e-10 * max(1.0, float(np.max(np.abs(M)))):
        raise RatelabError(f"{name} must be symmetric per sample; max |M - M'| = {asym:.3g}")
    return M


def _check_shape(name: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    if a.shape != shape:
        raise RatelabError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RatelabError(f"{name} must be finite")
    return a


def build_finite_sum_quadratic(*, Hz, Hx, C, c, d, Fz, Fx, D, e, h, inner_batch: int = 1, outer_batch: int = 1,
                               full_batch: bool = False, init_scale: float = 1.0,
                               dtype: Any = None) -> FiniteSumQuadratic:
    """The finite-sum quadratic from the user's own per-sample arrays: inner Hz (n, p, p), Hx (n, d, d), C (n, d, p),
    c (n, p), d (n, d); outer Fz (m, p, p), Fx (m, d, d), D (m, d, p), e (m, p), h (m, d). Checks shapes, per-sample
    symmetry, that the mean inner Hessian Hbar^z and the value-function Hessian A are positive definite (the
    smallest eigenvalue is in the error), and batch sizes. ``full_batch=True``: every step sees the full sums
    (``lower`` / ``upper`` ignore the batch: deterministic V-PBGD / SOBA; SABA needs indices and rejects it)."""
    check_float_dtype("build_finite_sum_quadratic", dtype)
    arrs = {k: np.asarray(v, dtype=float) for k, v in dict(Hz=Hz, Hx=Hx, C=C, c=c, d=d, Fz=Fz, Fx=Fx, D=D, e=e,
                                                            h=h).items()}
    if arrs["Hz"].ndim != 3 or arrs["Hx"].ndim != 3:
        raise RatelabError(f"Hz and Hx must be (n, p, p) and (n, d, d) stacks, got {arrs['Hz'].shape}, "
                           f"{arrs['Hx'].shape}")
    n, p = arrs["Hz"].shape[:2]
    dx = arrs["Hx"].shape[1]
    m = arrs["Fz"].shape[0] if arrs["Fz"].ndim == 3 else None
    _check_spd_stack("Hz", arrs["Hz"], p, n)
    _check_spd_stack("Hx", arrs["Hx"], dx, n)
    _check_spd_stack("Fz", arrs["Fz"], p, m)
    _check_spd_stack("Fx", arrs["Fx"], dx, m)
    for name, shape in (("C", (n, dx, p)), ("c", (n, p)), ("d", (n, dx)), ("D", (m, dx, p)), ("e", (m, p)),
                        ("h", (m, dx))):
        _check_shape(name, arrs[name], shape)
    inner_batch = check_positive_int("inner_batch", inner_batch)
    outer_batch = check_positive_int("outer_batch", outer_batch)
    check_positive("init_scale", init_scale)
    if not isinstance(full_batch, bool):
        raise RatelabError(f"full_batch must be True or False, got {full_batch!r}")
    bar = {k: v.mean(0) for k, v in arrs.items()}
    lam_z = float(np.linalg.eigvalsh(bar["Hz"])[0])
    if lam_z <= 0:
        raise RatelabError(f"the mean inner Hessian mean(Hz) must be positive definite (strongly convex inner "
                           f"problem); its smallest eigenvalue is {lam_z:.3g}")
    J = -np.linalg.solve(bar["Hz"], bar["C"].T)
    z0 = -np.linalg.solve(bar["Hz"], bar["c"])
    A = J.T @ bar["Fz"] @ J + bar["Fx"] + bar["D"] @ J + J.T @ bar["D"].T
    A = 0.5 * (A + A.T)
    lam_a = float(np.linalg.eigvalsh(A)[0])
    if lam_a <= 0:
        raise RatelabError(f"the value function h(x) = f(x, z*(x)) must be strongly convex: its Hessian has smallest "
                           f"eigenvalue {lam_a:.3g} (make mean(Fx) larger or the cross terms smaller)")
    b = J.T @ bar["Fz"] @ z0 + bar["D"] @ z0 + J.T @ bar["e"] + bar["h"]
    f0 = 0.5 * z0 @ bar["Fz"] @ z0 + bar["e"] @ z0
    xs = -np.linalg.solve(A, b)
    h_star = 0.5 * xs @ A @ xs + b @ xs + f0
    h_gap0 = f0 - h_star
    arr = lambda v: float_array("build_finite_sum_quadratic", np.asarray(v, dtype=float), dtype)  # noqa: E731
    return FiniteSumQuadratic(**{k: arr(v) for k, v in arrs.items()}, J=arr(J), z0=arr(z0), A=arr(A), b=arr(b),
                              h_star=arr(h_star), h_gap0=arr(max(h_gap0, 1e-300)), init_scale=arr(init_scale),
                              inner_batch=inner_batch, outer_batch=outer_batch, full_batch=full_batch)


def _spd_stack(rng: np.random.Generator, n: int, dim: int, lo: float, hi: float) -> np.ndarray:
    """n SPD matrices whose mean is exactly Q diag(linspace(lo, hi)) Q' (see the module docstring)."""
    R = rng.standard_normal((n, dim, dim))
    W = R @ np.swapaxes(R, 1, 2) / dim + 1e-3 * np.eye(dim)
    w, V = np.linalg.eigh(W.mean(0))
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    target_half = (q * np.sqrt(np.linspace(lo, hi, dim))) @ q.T
    T = target_half @ (V / np.sqrt(w)) @ V.T
    H = T @ W @ T.T
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def make_finite_sum_quadratic(seed: int = 0, *, n_inner: int = 64, n_outer: int = 64, dim_inner: int = 10,
                              dim_outer: int = 5, mu_inner: float = 0.1, L_inner: float = 1.0, L_outer: float = 1.0,
                              L_cross: float = 0.1, inner_batch: int = 1, outer_batch: int = 1,
                              full_batch: bool = False, init_scale: float = 1.0,
                              dtype: Any = None) -> FiniteSumQuadratic:
    """A random instance (benchmark defaults: mu_inner = 0.1, L's = 1; sizes smaller than its 1024 samples x 100
    dims). Hz mean spectrum in [mu_inner, L_inner]; Hx, Fz, Fx mean spectra in [mu_inner, L_outer]; C, D Gaussian
    scaled by L_cross / sqrt(dim); vectors standard Gaussian. Built in NumPy."""
    for name, v in (("n_inner", n_inner), ("n_outer", n_outer), ("dim_inner", dim_inner), ("dim_outer", dim_outer)):
        check_positive_int(name, v)
    for name, v in (("mu_inner", mu_inner), ("L_inner", L_inner), ("L_outer", L_outer), ("L_cross", L_cross)):
        check_positive(name, v)
    if L_inner < mu_inner or L_outer < mu_inner:
        raise RatelabError(f"L_inner and L_outer must be >= mu_inner ({mu_inner}), got {L_inner}, {L_outer}")
    rng = np.random.default_rng(seed)
    p, dx = dim_inner, dim_outer
    return build_finite_sum_quadratic(
        Hz=_spd_stack(rng, n_inner, p, mu_inner, L_inner), Hx=_spd_stack(rng, n_inner, dx, mu_inner, L_outer),
        C=L_cross * rng.standard_normal((n_inner, dx, p)) / np.sqrt(p), c=rng.standard_normal((n_inner, p)),
        d=rng.standard_normal((n_inner, dx)),
        Fz=_spd_stack(rng, n_outer, p, mu_inner, L_outer), Fx=_spd_stack(rng, n_outer, dx, mu_inner, L_outer),
        D=L_cross * rng.standard_normal((n_outer, dx, p)) / np.sqrt(p), e=rng.standard_normal((n_outer, p)),
        h=rng.standard_normal((n_outer, dx)), inner_batch=inner_batch, outer_batch=outer_batch,
        full_batch=full_batch, init_scale=init_scale, dtype=dtype)
