"""PDHG for linear programs in the PDLP form, planted and PageRank LPs, and one PDHG-Net layer.

Papers:
  * Applegate, Diaz, Hinder, Lu, Lubin, O'Donoghue & Schudy (2021), "Practical large-scale linear programming using
    primal-dual hybrid gradient" (PDLP, NeurIPS 2021): the primal weight omega (tau = eta / omega,
    sigma = eta * omega), its smoothed update at restarts (theta = 0.5), adaptive restarts with beta_sufficient =
    0.2, beta_necessary = 0.8, beta_artificial = 0.36, restart to the better of the current and the average iterate,
    restart checks every 64 iterations.
  * Applegate, Hinder, Lu & Lubin (2023), "Faster first-order primal-dual methods for linear programming using
    restarts and sharpness" (Math. Programming): restarted PDHG converges linearly on LPs (sharp problems).
  * Li et al. (2024), "PDHG-unrolled learning-to-optimize method for large-scale linear
    programming" (ICML 2024; code NetSysOpt/PDHG-Net): the PageRank LP of its ``src_pagerank`` generator
    and the PDHG-Net layer, which recovers one PDHG step with its weights set to the PDHG step.

The LP (paper symbols -> arguments): min c^T x s.t. A x = b on rows with ``eq = 1``, A x >= b on rows with
``eq = 0``, x >= 0 (PDLP's l = 0, u = +inf). Saddle function L(x, y) = c^T x - y^T (A x - b) with y >= 0 on the
inequality rows. One PDHG step (PDLP Algorithm, without its adaptive step size):

  x' = max(0, x - tau (c - A^T y)),   y' = proj_Y(y + sigma (b - A (2 x' - x))).

KKT error (PDLP's, with absolute residuals): sqrt(|primal residual|^2 + |dual residual|^2 + gap^2), primal residual
(b - A x) on equality rows and max(0, b - A x) on inequality rows; dual residual the negative part of the reduced
costs c - A^T y (x >= 0 has no upper bound); gap |c^T x - b^T y|.

Reconstructions (marked, not the paper's exact solver): a fixed step eta = ``step_factor`` / |A|_2 instead of
PDLP's adaptive step; no diagonal preconditioning (Ruiz / Pock-Chambolle) and no presolve; the restart criterion
uses the KKT error of the candidate in place of PDLP's normalized duality gap (the KKT variant is what later PDLP
and cuPDLP use; the three beta thresholds, the candidate choice and the artificial-restart rule are PDLP's). The
PDHG-Net layer's parameterisation (:func:`pdhg_net_layer`) is reconstructed from the paper's description.

Derived here (see :func:`local_mode`): near a nondegenerate vertex the iteration is linear on the basis block
A_B, and splits into 2x2 blocks, one per singular value s of A_B, with trace 2 - 2a and determinant 1 - a,
a = (eta s)^2 (tau sigma = eta^2 whatever omega is). For 0 < a < 1 the eigenvalues are complex of modulus
sqrt(1 - a) and angle theta = atan2(sqrt(a (1 - a)), 1 - a): plain PDHG's last iterate contracts only by
sqrt(1 - a) per step, while the average over t steps of a rotation by theta shrinks like
|sin(t theta / 2)| / (t sin(theta / 2)), which is what restarting to the average exploits. For a > 1 the eigenvalues
are real and one has modulus > 1 iff a > 4/3: the linear part diverges iff eta s > 2 / sqrt(3).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_in_range, check_positive, check_positive_int

BETA_SUFFICIENT, BETA_NECESSARY, BETA_ARTIFICIAL, PRIMAL_WEIGHT_THETA, CHECK_EVERY = 0.2, 0.8, 0.36, 0.5, 64
BLOW_UP = 1e30  # a state norm past this freezes the run (so a diverging arm stays finite and reads as growth)


class LP(NamedTuple):
    """min c^T x s.t. (A x)_i = b_i where eq_i = 1, (A x)_i >= b_i where eq_i = 0, x >= 0."""

    A: Any
    b: Any
    c: Any
    eq: Any


def check_lp(lp: LP) -> LP:
    """Shapes and finiteness of a concrete LP, with named errors (tracers pass)."""
    A, b, c, eq = (np.asarray(v, dtype=float) for v in lp)
    if A.ndim != 2:
        raise RatelabError(f"A must be a 2-D matrix [m, n], got shape {A.shape}")
    m, n = A.shape
    for name, v, k in (("b", b, m), ("c", c, n), ("eq", eq, m)):
        if v.shape != (k,):
            raise RatelabError(f"{name} must have shape ({k},) for A of shape {A.shape}, got {v.shape}")
    if not all(np.all(np.isfinite(v)) for v in (A, b, c)):
        raise RatelabError("A, b and c must be finite")
    if not np.all((eq == 0) | (eq == 1)):
        raise RatelabError("eq must hold only 0 (A x >= b) and 1 (A x = b)")
    return lp


def project_dual(lp: LP, y: jax.Array) -> jax.Array:
    """y on Y: free on equality rows, >= 0 on inequality rows."""
    return jnp.where(lp.eq > 0, y, jnp.maximum(y, 0.0))


def pdhg_step(lp: LP, x: jax.Array, y: jax.Array, tau: Any, sigma: Any) -> tuple[jax.Array, jax.Array]:
    """One PDHG step (PDLP's update with primal step tau and dual step sigma)."""
    x_new = jnp.maximum(x - tau * (lp.c - lp.A.T @ y), 0.0)
    y_new = project_dual(lp, y + sigma * (lp.b - lp.A @ (2.0 * x_new - x)))
    return x_new, y_new


def kkt_error(lp: LP, x: jax.Array, y: jax.Array) -> jax.Array:
    """PDLP's KKT error with absolute residuals: sqrt(|primal res|^2 + |dual res|^2 + gap^2)."""
    r = lp.b - lp.A @ x
    primal = jnp.where(lp.eq > 0, r, jnp.maximum(r, 0.0))
    dual = jnp.minimum(lp.c - lp.A.T @ y, 0.0)
    gap = lp.c @ x - lp.b @ y
    return jnp.sqrt(primal @ primal + dual @ dual + gap**2)


def initial_primal_weight(lp: LP) -> jax.Array:
    """PDLP's omega_0 = |c| / |b| when both are nonzero, else 1."""
    nc, nb = jnp.linalg.norm(lp.c), jnp.linalg.norm(lp.b)
    return jnp.where((nc > 1e-10) & (nb > 1e-10), nc / jnp.where(nb > 1e-10, nb, 1.0), 1.0)


class _State(NamedTuple):
    x: jax.Array
    y: jax.Array
    x_sum: jax.Array
    y_sum: jax.Array
    inner: jax.Array  # iterations since the last restart
    total: jax.Array  # iterations so far
    x_start: jax.Array
    y_start: jax.Array
    kkt_start: jax.Array
    kkt_prev: jax.Array  # the candidate's KKT error at the previous check of this restart period
    omega: jax.Array
    frozen: jax.Array
    x_out: jax.Array  # the last check's output point (the restart candidate)
    y_out: jax.Array


def restarted_pdhg(lp: LP, *, eta: Any, steps: int, restart: Any = 1.0, check_every: int = CHECK_EVERY,
                   x_ref: Any = None, beta_sufficient: float = BETA_SUFFICIENT,
                   beta_necessary: float = BETA_NECESSARY, beta_artificial: float = BETA_ARTIFICIAL,
                   theta: float = PRIMAL_WEIGHT_THETA) -> dict[str, jax.Array]:
    """PDHG with PDLP's primal weight and adaptive restarts, ``steps`` iterations from x = 0, y = 0.

    Args:
      lp: the LP (:class:`LP`).
      eta: step size (PDLP's eta; tau = eta / omega, sigma = eta * omega); converges for eta < 1 / |A|_2 (textbook).
        A float or an optax schedule of the iteration count k = 0, 1, ... (restarts do not reset k).
      steps: iterations, a multiple of ``check_every`` (fixed length: nested ``lax.scan``, no while loop).
      restart: 1.0 restarts adaptively (PDLP), 0.0 never restarts (omega stays omega_0); may be traced.
      check_every: iterations between restart checks (PDLP: 64).
      x_ref: a reference primal point (the planted optimum, the PageRank vector): ``x_err`` is max |x_out - x_ref|.
      beta_sufficient, beta_necessary, beta_artificial, theta: PDLP's restart thresholds and primal-weight
        smoothing.

    Returns per check (``steps // check_every`` values): ``kkt`` of the output point (the better of the current
    and the average iterate, PDLP's restart candidate), ``x_err``, ``restarts`` (cumulative count), ``omega``;
    and ``kkt0`` at x = 0, y = 0, and the last output point ``x``, ``y``. A run whose current iterate passes
    ``BLOW_UP`` in size (or turns non-finite) is frozen there and reports ``kkt = x_err = BLOW_UP`` from then on
    (finite, so a diverging arm reads as divergence).
    """
    check_positive("eta", eta)
    check_positive_int("check_every", check_every)
    steps = check_positive_int("steps", steps)
    if steps % check_every:
        raise RatelabError(f"steps must be a multiple of check_every = {check_every}, got {steps}")
    check_in_range("restart", restart, 0.0, 1.0)
    check_in_range("beta_sufficient", beta_sufficient, 0.0, 1.0, closed="neither")
    check_in_range("beta_necessary", beta_necessary, beta_sufficient, 1.0, closed="neither")
    check_in_range("beta_artificial", beta_artificial, 0.0, 1.0, closed="neither")
    check_in_range("theta", theta, 0.0, 1.0)
    A = jnp.asarray(lp.A)
    m, n = A.shape
    lp = LP(A, jnp.asarray(lp.b, A.dtype), jnp.asarray(lp.c, A.dtype), jnp.asarray(lp.eq, A.dtype))
    x_ref = jnp.zeros(n, A.dtype) if x_ref is None else jnp.asarray(x_ref, A.dtype)
    zx, zy = jnp.zeros(n, A.dtype), jnp.zeros(m, A.dtype)
    kkt0 = kkt_error(lp, zx, zy)
    state = _State(zx, zy, zx, zy, jnp.zeros((), A.dtype), jnp.zeros((), A.dtype), zx, zy, kkt0,
                   jnp.asarray(jnp.inf, A.dtype), initial_primal_weight(lp), jnp.zeros((), bool), zx, zy)

    eta_s = as_schedule(eta)

    def inner(carry, k):
        x, y, xs, ys, omega = carry
        eta_k = eta_s(k)
        x, y = pdhg_step(lp, x, y, eta_k / omega, eta_k * omega)
        return (x, y, xs + x, ys + y, omega), None

    kkt2 = jax.vmap(lambda x, y: kkt_error(lp, x, y))

    def block(s: _State, _):
        counts = s.total.astype(jnp.int32) + jnp.arange(check_every, dtype=jnp.int32)  # the iteration count k
        (x, y, xs, ys, _), _ = jax.lax.scan(inner, (s.x, s.y, s.x_sum, s.y_sum, s.omega), counts)
        t = s.inner + check_every
        total = s.total + check_every
        xa, ya = xs / t, ys / t
        k_cur, k_avg = kkt2(jnp.stack([x, xa]), jnp.stack([y, ya]))
        use_avg = k_avg < k_cur
        xc, yc = jnp.where(use_avg, xa, x), jnp.where(use_avg, ya, y)
        kc = jnp.minimum(k_avg, k_cur)
        do = (restart > 0) & (
            (kc <= beta_sufficient * s.kkt_start)
            | ((kc <= beta_necessary * s.kkt_start) & (kc > s.kkt_prev))
            | (t >= beta_artificial * total))
        dx, dy = jnp.linalg.norm(xc - s.x_start), jnp.linalg.norm(yc - s.y_start)
        ok = (dx > 1e-10) & (dy > 1e-10)
        ratio = jnp.where(ok, dy, 1.0) / jnp.where(ok, dx, 1.0)
        # PDLP: omega <- exp(theta log(dy / dx) + (1 - theta) log omega); theta = 1/2 is a square root
        new_omega = jnp.sqrt(ratio * s.omega) if theta == 0.5 else ratio**theta * s.omega ** (1 - theta)
        size = jnp.maximum(jnp.max(jnp.abs(x)), jnp.max(jnp.abs(y)))
        frozen = s.frozen | ~jnp.isfinite(size) | (size > BLOW_UP)
        do_now = do & ~frozen
        keep = ~frozen & ~do
        new = _State(
            x=jnp.where(do_now, xc, jnp.where(frozen, s.x, x)),
            y=jnp.where(do_now, yc, jnp.where(frozen, s.y, y)),
            x_sum=jnp.where(keep, xs, jnp.where(frozen, s.x_sum, 0.0)),
            y_sum=jnp.where(keep, ys, jnp.where(frozen, s.y_sum, 0.0)),
            inner=jnp.where(keep, t, jnp.where(frozen, s.inner, 0.0)),
            total=total,
            x_start=jnp.where(do_now, xc, s.x_start), y_start=jnp.where(do_now, yc, s.y_start),
            kkt_start=jnp.where(do_now, kc, s.kkt_start),
            kkt_prev=jnp.where(do_now, jnp.inf, jnp.where(frozen, s.kkt_prev, kc)),
            omega=jnp.where(do_now & ok, new_omega, s.omega), frozen=frozen,
            x_out=jnp.where(frozen, s.x_out, xc), y_out=jnp.where(frozen, s.y_out, yc))
        out = {"kkt": jnp.where(frozen, BLOW_UP, kc),
               "x_err": jnp.where(frozen, BLOW_UP, jnp.max(jnp.abs(xc - x_ref))),
               "restarts": do_now.astype(A.dtype), "omega": new.omega}
        return new, out

    final, out = jax.lax.scan(block, state, None, length=steps // check_every)
    out["restarts"] = jnp.cumsum(out["restarts"])
    return {**out, "kkt0": kkt0, "x": final.x_out, "y": final.y_out}


# ------------------------------------------------------------------------------------------------ derived theory


def local_mode(eta: float, s: float) -> tuple[float, float]:
    """(modulus, angle) of the slowest eigenvalue of PDHG's linear 2x2 block for singular value s (derived here).

    a = (eta s)^2; 0 < a < 1: complex pair of modulus sqrt(1 - a), angle atan2(sqrt(a (1 - a)), 1 - a);
    a >= 1: real, the larger modulus |1 - a - sqrt(a^2 - a)| (angle pi when negative)."""
    a = (eta * s) ** 2
    if a < 1:
        return math.sqrt(1 - a), math.atan2(math.sqrt(a * (1 - a)), 1 - a)
    lam = 1 - a - math.sqrt(a * a - a)
    return abs(lam), math.pi


def local_divergence_eta(s_max: float) -> float:
    """The step past which PDHG's linear part on singular value s_max diverges: eta s_max = 2 / sqrt(3)."""
    return 2.0 / math.sqrt(3.0) / s_max


def _sinc_root(beta: float) -> float:
    """The first x > 0 with sin(x) / x = beta (bisection on (0, pi))."""
    lo, hi = 1e-9, math.pi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.sin(mid) / mid > beta else (lo, mid)
    return 0.5 * (lo + hi)


def predicted_iters_per_decade(eta: float, s_min: float, *, check_every: int = CHECK_EVERY,
                               beta: float = BETA_SUFFICIENT) -> float:
    """Stated prediction (derived here, pre-registered): restarted PDHG's iterations per decade of KKT error.

    The slowest local mode rotates by theta per step (:func:`local_mode`); the average over t steps shrinks it by
    sin(t theta / 2) / (t sin(theta / 2)) ~ sin(u) / u, u = t theta / 2, which first reaches beta_sufficient at
    u* (sin u* / u* = beta); the restart comes at the first check at or after t* = 2 u* / theta. Each restart then
    gains a factor 1 / beta: t* ln(10) / ln(1 / beta) iterations per decade. (The modulus sqrt(1 - a) < 1 and the
    necessary-criterion restarts are ignored: both only shorten it.)"""
    _, ang = local_mode(eta, s_min)
    t = 2 * _sinc_root(beta) / ang
    t = math.ceil(t / check_every) * check_every
    return t * math.log(10) / math.log(1 / beta)


def plain_iters_per_decade(eta: float, s_min: float) -> float:
    """Plain PDHG's local last-iterate rate (derived): ln 10 / -ln sqrt(1 - (eta s_min)^2) iterations per decade."""
    r, _ = local_mode(eta, s_min)
    return math.log(10) / -math.log(r)


# ------------------------------------------------------------------------------------------------ instances


class Planted(NamedTuple):
    lp: LP
    x_star: np.ndarray
    y_star: np.ndarray
    basis_singular_values: np.ndarray


def planted_lp(seed: int, m: int, n: int, s_min: float) -> Planted:
    """A standard-form LP (A x = b, x >= 0) with a planted unique nondegenerate optimum (NumPy).

    Basis B (m random columns): A_B = Q1 diag(s) Q2^T, s log-spaced from ``s_min`` to 1; A_N Gaussian / sqrt(m).
    x*_B ~ U(0.5, 1.5), x*_N = 0, y* ~ N(0, I), reduced costs lambda_N ~ U(0.5, 1.5), lambda_B = 0;
    b = A x*, c = A^T y* + lambda. Strict complementarity and a nonsingular A_B make (x*, y*) the unique
    primal-dual optimum, of value c^T x* = b^T y*."""
    m, n = check_positive_int("m", m), check_positive_int("n", n)
    if n <= m:
        raise RatelabError(f"n must exceed m (columns beyond the basis), got m = {m}, n = {n}")
    check_in_range("s_min", s_min, 0.0, 1.0, closed="right")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    B, N = perm[:m], perm[m:]
    q1, _ = np.linalg.qr(rng.standard_normal((m, m)))
    q2, _ = np.linalg.qr(rng.standard_normal((m, m)))
    s = np.logspace(math.log10(s_min), 0.0, m)
    A = np.zeros((m, n))
    A[:, B] = q1 @ np.diag(s) @ q2.T
    A[:, N] = rng.standard_normal((m, n - m)) / math.sqrt(m)
    x = np.zeros(n)
    x[B] = rng.uniform(0.5, 1.5, m)
    y = rng.standard_normal(m)
    lam = np.zeros(n)
    lam[N] = rng.uniform(0.5, 1.5, n - m)
    return Planted(LP(A, A @ x, A.T @ y + lam, np.ones(m)), x, y, s)


def barabasi_albert(seed: int, n: int, degree: int) -> np.ndarray:
    """Adjacency [n, n] of a Barabasi-Albert graph (NumPy reimplementation of networkx.barabasi_albert_graph's model:
    a star on degree + 1 nodes, then each new node links to ``degree`` distinct nodes drawn with probability
    proportional to their degree)."""
    n, degree = check_positive_int("n", n), check_positive_int("degree", degree)
    if n <= degree + 1:
        raise RatelabError(f"n must exceed degree + 1 = {degree + 1}, got {n}")
    rng = np.random.default_rng(seed)
    adj = np.zeros((n, n))
    adj[0, 1:degree + 1] = adj[1:degree + 1, 0] = 1.0
    for v in range(degree + 1, n):
        deg = adj[:v, :v].sum(axis=1)
        targets = rng.choice(v, size=degree, replace=False, p=deg / deg.sum())
        adj[v, targets] = adj[targets, v] = 1.0
    return adj


class PageRankLP(NamedTuple):
    lp: LP
    S: np.ndarray  # column-stochastic transition matrix
    damping: float


def pagerank_lp(seed: int, n: int, degree: int = 3, damping: float = 0.85, *, with_sum: bool = True) -> PageRankLP:
    """The PageRank LP of PDHG-Net's ``src_pagerank`` generator (after Nesterov 2014), objective 0:

    (lambda S - I) x <= -(1 - lambda) / n for every node (written here as (I - lambda S) x >= (1 - lambda) / n),
    sum x = 1, x >= 0, with S the column-normalised adjacency of a Barabasi-Albert graph (the code: n = 10^7,
    degree 3, lambda = 0.85). Derived here: summing the inequality rows gives 1^T x - lambda 1^T x >= 1 - lambda
    with equality forced by sum x = 1, so every slack is 0 and x = (1 - lambda)(I - lambda S)^{-1} 1 / n, the
    PageRank vector, is the only feasible point. ``with_sum=False`` zeroes the sum row (same shapes): the
    feasible set becomes the translated cone x_PR + (I - lambda S)^{-1} R^n_+, no longer one point."""
    check_in_range("damping", damping, 0.0, 1.0, closed="neither")
    adj = barabasi_albert(seed, n, degree)
    S = adj / adj.sum(axis=0, keepdims=True)
    A = np.vstack([np.eye(n) - damping * S, np.ones((1, n)) * float(with_sum)])
    b = np.concatenate([np.full(n, (1 - damping) / n), [float(with_sum)]])
    eq = np.concatenate([np.zeros(n), [1.0]])
    return PageRankLP(LP(A, b, np.zeros(n), eq), S, damping)


def power_iteration(S: np.ndarray, damping: float, iters: int = 2000) -> np.ndarray:
    """PageRank by power iteration x <- lambda S x + (1 - lambda) / n from the uniform vector (NumPy)."""
    n = S.shape[0]
    x = np.full(n, 1.0 / n)
    for _ in range(iters):
        x = damping * S @ x + (1 - damping) / n
    return x


# ------------------------------------------------------------------------------------------------ PDHG-Net


class LayerParams(NamedTuple):
    """One PDHG-Net layer on d channels (reconstructed parameterisation of Li et al. 2024's unrolled PDHG step).

    X' = relu(X U_x - tau (c w_c^T - A^T Y V_x)),
    Y' = proj_Y(Y U_y + sigma (b w_b^T - A (X' W_new + X W_old))),
    X [n, d], Y [m, d]; proj_Y is relu on inequality rows and the identity on equality rows."""

    U_x: Any
    V_x: Any
    w_c: Any
    tau: Any
    U_y: Any
    W_new: Any
    W_old: Any
    w_b: Any
    sigma: Any


def pdhg_layer_params(d: int, tau: float, sigma: float, *, extrapolate: bool = True) -> LayerParams:
    """The weights that make a layer one PDHG step on every channel (Li et al. 2024: PDHG-Net recovers PDHG):
    U = V = I, w = 1, W_new = 2 I, W_old = -I. ``extrapolate=False`` sets W_new = I, W_old = 0 (Arrow-Hurwicz)."""
    d = check_positive_int("d", d)
    eye = jnp.eye(d)
    return LayerParams(eye, eye, jnp.ones(d), tau, eye, (2.0 if extrapolate else 1.0) * eye,
                       (-1.0 if extrapolate else 0.0) * eye, jnp.ones(d), sigma)


def pdhg_net_layer(p: LayerParams, lp: LP, X: jax.Array, Y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One PDHG-Net layer (see :class:`LayerParams`)."""
    X_new = jax.nn.relu(X @ p.U_x - p.tau * (jnp.outer(lp.c, p.w_c) - (lp.A.T @ Y) @ p.V_x))
    Y_pre = Y @ p.U_y + p.sigma * (jnp.outer(lp.b, p.w_b) - lp.A @ (X_new @ p.W_new + X @ p.W_old))
    Y_new = jnp.where(lp.eq[:, None] > 0, Y_pre, jax.nn.relu(Y_pre))
    return X_new, Y_new
