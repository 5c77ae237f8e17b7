"""Unlearning as two-task optimisation: normalised gradient difference (NGDiff) against plain gradient difference
(GDiff) on a forget/retain least-squares problem, with the exact Pareto front.

Paper: Z. Bu, X. Jin, B. Vinzamuri, A. Ramakrishna, K.-W. Chang, V. Cevher, M. Hong, "Unlearning as multi-task
optimization: A normalized gradient difference approach with an adaptive learning rate", arXiv:2410.22086 (NAACL
2025). Restated: minimise the retain loss L_R while maximising the forget loss L_F;
* GDiff: theta <- theta - eta (g_R - g_F) (the scalarisation L_R - L_F with unit weights);
* NGDiff: theta <- theta - eta (g_R / |g_R| - g_F / |g_F|), a dynamic scalarisation that always lies in the cone
  positively correlated with g_R and negatively with g_F (the paper's Eq. 7 geometry: <d, g_R> = |g_R| (1 - cos)
  >= 0, <d, g_F> = |g_F| (cos - 1) <= 0);
* AutoLR (*reconstructed*: the paper sets NGDiff's rate with GeN, a quadratic fit of the loss along the update):
  eta = -phi'(0) / phi''(0) for phi(eta) = (L_R - L_F)(theta - eta d), the derivatives by central differences at
  +- eta_prev, clipped to (0, eta_max]; eta_max where the fitted curvature is not positive.

Instance (ours; the paper's experiments are TOFU/MUSE on LLMs): L_R(theta) = |A_R theta - b_R|^2 / (2 n_R),
L_F likewise with a small forget set, theta_0 the least-squares fit to all the data (the model to unlearn from).

Derived here (tested): the Pareto-stationary points of (L_R, -L_F) are the critical points of L_R - t L_F,
theta(t) = (H_R - t H_F)^{-1} (c_R - t c_F); for t < t_crit = lambda_min(H_F^{-1} H_R) they minimise L_R - t L_F and
trace the exact front min {L_R : L_F >= c} (S-lemma), for t > t_crit they are saddles. GDiff's fixed point is
t = 1: when H_R - H_F is indefinite (t_crit < 1) it is a saddle and GDiff diverges exponentially, at any step size.
NGDiff's fixed points are all the theta(t), transversally stable exactly for t < t_crit, where its steps (of length
at most 2 eta) stop on the front.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_positive, check_positive_int


class Quadratics(NamedTuple):
    """L(theta) = theta^T H theta / 2 - c^T theta + k for the retain (R) and forget (F) sets."""

    h_r: Any
    c_r: Any
    k_r: Any
    h_f: Any
    c_f: Any
    k_f: Any


def instances(seed: int, n: int, dim: int, n_retain: int, n_forget: int, noise: float = 0.3) -> dict[str, np.ndarray]:
    """``n`` random forget/retain least-squares problems (NumPy): Gaussian designs, b = A theta_true + noise (one
    theta_true for both sets), returned as the quadratics' coefficients ``[n, ...]``."""
    for name, v in (("dim", dim), ("n_retain", n_retain), ("n_forget", n_forget)):
        check_positive_int(name, v)
    if n_retain < dim or n_forget < dim:
        raise RatelabError(f"n_retain and n_forget must be >= dim ({dim}) so that both losses are strictly convex, "
                           f"got {n_retain}, {n_forget}")
    rng = np.random.default_rng(seed)
    out = {k: [] for k in Quadratics._fields}
    for _ in range(n):
        truth = rng.standard_normal(dim)
        for tag, m in (("r", n_retain), ("f", n_forget)):
            a = rng.standard_normal((m, dim))
            b = a @ truth + noise * rng.standard_normal(m)
            out[f"h_{tag}"].append(a.T @ a / m)
            out[f"c_{tag}"].append(a.T @ b / m)
            out[f"k_{tag}"].append(b @ b / (2 * m))
    return {k: np.asarray(v) for k, v in out.items()}


def quadratics(*, h_r: Any, c_r: Any, k_r: Any, h_f: Any, c_f: Any, k_f: Any, dtype: Any = None) -> Quadratics:
    """:class:`Quadratics` from the user's own coefficients: L_R(theta) = theta^T h_r theta / 2 - c_r^T theta + k_r,
    the same for L_F. ``h_r``, ``h_f`` ``[d, d]`` symmetric positive definite (strictly convex losses, as the
    least-squares losses A^T A / m of a full-rank design; the smallest eigenvalue is in the error), ``c_r``, ``c_f``
    ``[d]``, ``k_r``, ``k_f`` finite scalars. Stored as JAX arrays of ``dtype`` (default: JAX's default float).
    Every check runs before any computation."""
    H = {}
    for name, h in (("h_r", h_r), ("h_f", h_f)):
        arr = np.asarray(h, dtype=float)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.size == 0:
            raise RatelabError(f"{name} must be a square [d, d] matrix, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise RatelabError(f"{name} must be finite")
        asym = float(np.max(np.abs(arr - arr.T)))
        if asym > 1e-10 * max(1.0, float(np.max(np.abs(arr)))):
            raise RatelabError(f"{name} must be symmetric; max |{name} - {name}'| = {asym:.3g}")
        low = float(np.linalg.eigvalsh(arr)[0])
        if low <= 0:
            raise RatelabError(f"{name} must be positive definite (a strictly convex loss); its smallest eigenvalue "
                               f"is {low:.6g}")
        H[name] = arr
    d = H["h_r"].shape[0]
    if H["h_f"].shape != (d, d):
        raise RatelabError(f"h_f must have shape ({d}, {d}) like h_r, got {H['h_f'].shape}")
    C = {}
    for name, c in (("c_r", c_r), ("c_f", c_f)):
        arr = np.asarray(c, dtype=float)
        if arr.shape != (d,) or not np.all(np.isfinite(arr)):
            raise RatelabError(f"{name} must be a finite vector of length {d} (h_r is {d} x {d}), got shape "
                               f"{arr.shape}")
        C[name] = arr
    K = {}
    for name, k in (("k_r", k_r), ("k_f", k_f)):
        arr = np.asarray(k, dtype=float)
        if arr.shape != () or not np.isfinite(arr):
            raise RatelabError(f"{name} must be a finite scalar, got {k!r}")
        K[name] = arr
    dt = jnp.result_type(float) if dtype is None else dtype
    vals = {**H, **C, **K}
    return Quadratics(*(jnp.asarray(vals[f], dt) for f in Quadratics._fields))


def loss(theta: jax.Array, h: jax.Array, c: jax.Array, k: jax.Array) -> jax.Array:
    return 0.5 * theta @ h @ theta - c @ theta + k


def original_model(q: Quadratics, n_retain: int, n_forget: int) -> jax.Array:
    """theta_0: the least-squares fit to retain and forget data together."""
    w_r, w_f = n_retain / (n_retain + n_forget), n_forget / (n_retain + n_forget)
    return jnp.linalg.solve(w_r * q.h_r + w_f * q.h_f, w_r * q.c_r + w_f * q.c_f)


def front_point(q: Quadratics, t: jax.Array) -> jax.Array:
    """theta(t) = argmin L_R - t L_F (t < t_crit)."""
    return jnp.linalg.solve(q.h_r - t * q.h_f, q.c_r - t * q.c_f)


def _pencil(q: Quadratics) -> tuple[jax.Array, jax.Array]:
    """(lam, W) with H_R W = H_F W diag(lam), W^T H_F W = I: then (H_R - t H_F)^-1 = W diag(1 / (lam - t)) W^T."""
    l = jnp.linalg.cholesky(q.h_f)
    m = jax.scipy.linalg.solve_triangular(l, jax.scipy.linalg.solve_triangular(l, q.h_r, lower=True).T, lower=True)
    lam, v = jnp.linalg.eigh((m + m.T) / 2)
    return lam, jax.scipy.linalg.solve_triangular(l.T, v, lower=False)


def t_critical(q: Quadratics) -> jax.Array:
    """t_crit = lambda_min(H_F^{-1} H_R): H_R - t H_F is positive definite exactly for t < t_crit."""
    return _pencil(q)[0][0]


def front_retain(q: Quadratics, forget_level: jax.Array, bisections: int = 60) -> jax.Array:
    """min {L_R(theta) : L_F(theta) >= c} (exact: bisection on t in [0, t_crit), where L_F(theta(t)) increases).

    theta(t) comes from one generalised eigendecomposition of (H_R, H_F) per instance, W ((a - t b) / (lam - t))
    with a = W^T c_R, b = W^T c_F, equal to :func:`front_point` (a linear solve per t) to rounding; batched LU
    solves inside the bisection scan deadlocked XLA's CPU runtime at the quick size (32 seeds x 300 levels)."""
    lam, w = _pencil(q)
    a, b = w.T @ q.c_r, w.T @ q.c_f
    point = lambda t: w @ ((a - t * b) / (lam - t))  # noqa: E731
    lf = lambda t: loss(point(t), q.h_f, q.c_f, q.k_f)  # noqa: E731

    def step(bounds, _):
        lo, hi = bounds
        mid = (lo + hi) / 2
        return jnp.where(lf(mid) < forget_level, jnp.stack([mid, hi]), jnp.stack([lo, mid])), None

    tc = lam[0]
    (lo, hi), _ = jax.lax.scan(step, jnp.stack([jnp.zeros_like(tc), tc * (1 - 1e-12)]), None, length=bisections)
    return loss(point((lo + hi) / 2), q.h_r, q.c_r, q.k_r)


def direction(theta: jax.Array, q: Quadratics, normalized: Any) -> jax.Array:
    """NGDiff's g_R/|g_R| - g_F/|g_F| (``normalized = 1``) or GDiff's g_R - g_F (``0``; may be traced)."""
    g_r, g_f = q.h_r @ theta - q.c_r, q.h_f @ theta - q.c_f
    nd = g_r / jnp.linalg.norm(g_r) - g_f / jnp.linalg.norm(g_f)
    return jnp.where(normalized > 0, nd, g_r - g_f)


def gen_step_size(theta: jax.Array, d: jax.Array, q: Quadratics, eta_prev: jax.Array, eta_max: float) -> jax.Array:
    """GeN-style automatic rate (reconstructed): minimiser of the quadratic fit of (L_R - L_F)(theta - eta d) from
    central differences at +- eta_prev, clipped to (0, eta_max]; exact on a quadratic with positive curvature."""
    f = lambda th: loss(th, q.h_r, q.c_r, q.k_r) - loss(th, q.h_f, q.c_f, q.k_f)  # noqa: E731
    fp, f0, fm = f(theta - eta_prev * d), f(theta), f(theta + eta_prev * d)
    slope, curv = (fp - fm) / (2 * eta_prev), (fp - 2 * f0 + fm) / eta_prev**2
    eta = jnp.where(curv > 0, -slope / jnp.where(curv > 0, curv, 1.0), eta_max)
    return jnp.clip(eta, 1e-12, eta_max)


def unlearn(theta0: jax.Array, q: Quadratics, normalized: Any, steps: int, log_every: int, step_size: Any = 0.05,
            auto_lr: bool = False, eta_max: float = 1.0) -> dict[str, jax.Array]:
    """NGDiff or GDiff (``normalized``) from ``theta0`` for ``steps`` steps of optax SGD (``step_size`` float or
    schedule; ``auto_lr``: the reconstructed GeN rate instead), logging L_R, L_F, the iterate and the misalignment
    1 - cos(g_R, g_F) every ``log_every`` steps. Iterates that leave |theta| < 1e12 freeze as inf (diverged)."""
    check_positive_int("steps", steps)
    check_positive_int("log_every", log_every)
    if steps % log_every:
        raise RatelabError(f"log_every must divide steps ({steps}), got {log_every}")
    check_positive("eta_max", eta_max)
    opt = optax.sgd(as_schedule(step_size))

    def one(carry, _):
        theta, st, eta = carry
        d = direction(theta, q, normalized)
        if auto_lr:
            eta = gen_step_size(theta, d, q, eta, eta_max)
            new = theta - eta * d
        else:
            upd, st = opt.update(d, st, theta)
            new = optax.apply_updates(theta, upd)
        ok = jnp.all(jnp.isfinite(new)) & (jnp.max(jnp.abs(new)) < 1e12)
        return (jnp.where(ok, new, jnp.inf), st, eta), None

    def block(carry, _):
        carry, _ = jax.lax.scan(one, carry, None, length=log_every)
        theta = carry[0]
        g_r, g_f = q.h_r @ theta - q.c_r, q.h_f @ theta - q.c_f
        cos = g_r @ g_f / (jnp.linalg.norm(g_r) * jnp.linalg.norm(g_f))
        return carry, {"retain": loss(theta, q.h_r, q.c_r, q.k_r), "forget": loss(theta, q.h_f, q.c_f, q.k_f),
                       "misalignment": 1 - cos, "theta": theta}

    init = (theta0, opt.init(theta0), jnp.asarray(eta_max / 10, theta0.dtype))
    _, logs = jax.lax.scan(block, init, None, length=steps // log_every)
    return logs


def first_passage(forget: np.ndarray, retain: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The retain loss at the first logged point whose forget loss reaches each level (inf if never; NumPy)."""
    reached = forget[..., None, :] >= levels[..., :, None]
    first = np.argmax(reached, axis=-1)
    return np.where(reached.any(-1), np.take_along_axis(retain[..., None, :], first[..., None], -1)[..., 0], np.inf)
