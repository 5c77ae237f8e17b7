"""AiPOD and its projection-efficient variants for equality-constrained stochastic bilevel optimization.

Paper
-----
Q. Xiao, H. Shen, W. Yin and T. Chen, "Alternating Implicit Projected SGD and Its Efficient Variants for
Equality-constrained Bilevel Optimization", AISTATS 2023 (PMLR 206, published there as "Alternating Projected SGD
for Equality-constrained Bilevel Optimization"), arXiv:2211.07096. Authors' code: github.com/hanshen95/AiPOD.

Problem (see :mod:`bilevel.eq_problems`):  min_{x in X} F(x) = f(x, y*(x)),  X = {B x = e},
y*(x) = argmin_{y in Y(x)} g(x, y),  Y(x) = {A y + H x = c}.

Implicit gradient through the projected lower-level solution. With P_A = I - A^+ A = V V' (V an orthonormal basis
of null(A)) the lower-level optimality condition is V' ∇_y g(x, y*(x)) = 0 with A y*(x) = c - H x; differentiating
both gives

    ∇F(x) = ∇_x f - H' A^+' ∇_y f - (∇_xy g - H' A^+' ∇_yy g) V (V' ∇_yy g V)^{-1} V' ∇_y f

evaluated at (x, y*(x)). The projected Hessian inverse V (V'∇_yy g V)^{-1} V' v is computed either by a linear
solve (``hessian_inverse="solve"``, as the authors' synthetic code does) or by the projected Neumann series
eta sum_{n<N} (P_A (I - eta ∇_yy g))^n P_A v with one fresh Hessian sample per factor (``"neumann"``, as in their
federated code with N = 3). NOTE: the authors' synthetic script omits the middle term -H' A^+' ∇_y f; it is
needed for the true gradient when the lower constraint moves with x (H != 0), and tests/test_aipod.py checks the
formula against finite differences of F restricted to X.

Algorithms (the stochastic implicit gradient h_k is the formula above with stochastic samples at (x_k, y_{k+1})):

* AiPOD (alternating implicit projected SGD): each outer step runs S projected SGD steps on the lower level,
  y <- Proj_{Y(x_k)}(y - beta grad_y g(x_k, y; phi)) (warm-started), then x_{k+1} = Proj_X(x_k - alpha h_k).
  Claimed: O~(eps^-2) samples and iterations to an eps-stationary point (matching ALSET), with alpha, beta ~ 1/sqrt(K)
  and S = O(1); here the anytime version alpha_k = alpha/sqrt(k+1), beta_k = beta/sqrt(k+1).
* E-AiPOD (projection-efficient): the upper level projects only every T steps (lazy projection; x moves by
  unprojected SGD steps in between) and the lower level projects at random (with probability p, ProxSkip-style
  with a control variate r as in the authors' code: z = y - beta (grad - r); if projecting,
  y = Proj(z - beta/p r), r <- r + p/beta (y - z), else y = z). The abstracts state two such variants:
  (i) with an O(T) lower-level batch: O~(eps^-2 / T) upper-level and O~(eps^-1.5 / T^(3/4)) lower-level
  projections (:func:`e_aipod`, upper projections every T steps, lower batch T); (ii) with an O(1) batch:
  O~(eps^-1.5) upper- and lower-level projections (:func:`e_aipod_small_batch`). The paper's full algorithm boxes
  were not accessible while this was written: the projection schedules here (lower probability p_k ~ k^(-1/4);
  for (ii) upper projections at the times where floor(rate * k^(3/4)) increases) are the anytime forms of the
  horizon-dependent choices that give exactly the abstract's projection counts for K ~ eps^-2 steps.

Symbols -> arguments: alpha -> ``step_size``, beta -> ``lower_step_size``, S -> ``lower_steps``, N ->
``neumann_steps``, eta -> ``neumann_step`` (default 1 / L_g, L_g the largest eigenvalue of V'∇_yy g V),
T -> ``projection_interval``, p -> ``lower_prob``, lower batch -> ``lower_batch`` (a batch of b Gaussian gradient
samples is drawn as their mean, one N(0, sigma^2 / b) vector). All step sizes and ``lower_prob`` are floats or
schedules of the outer count k.

Metrics: ``grad_norm_sq`` = ||P_X ∇F(xbar)||^2 at xbar = Proj_X(x_{k+1}) (the eps-stationarity measure; P_X the
projector onto null(B)), ``dist_to_opt`` = ||xbar - x*||, ``y_gap`` = ||y_{k+1} - y*(x_k)||^2,
``upper_projections`` / ``lower_projections`` (cumulative counts), ``max_violation`` (running max of the
constraint violation of every iterate the algorithm projected: |B x - e|_inf, |A y + H x - c|_inf).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.eq_problems import EqBilevelQuadratic
from ratelab.schedules import as_schedule, power_decay
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_in_range, check_positive, check_positive_int, is_traced

HESSIAN_INVERSES = ("neumann", "solve")


class AiPODState(NamedTuple):
    x: jax.Array
    y: jax.Array
    r: jax.Array
    count: jax.Array
    upper_projections: jax.Array
    lower_projections: jax.Array
    max_violation: jax.Array


class AiPODSample(NamedTuple):
    lower_noise: jax.Array   # [S, dy]: minibatch-mean noise of grad_y g
    lower_u: jax.Array       # [S]: uniforms for the random lower-level projections
    fx_noise: jax.Array      # [dx]
    fy_noise: jax.Array      # [dy]
    hess_noise: jax.Array    # [N + 1, dy]: diagonal noise of the Hessian samples of g
    jac_noise: jax.Array     # [dx]: noise of the Jacobian-vector product ∇_xy g w (scaled by ||w||)


# --- the implicit gradient -------------------------------------------------------------------------------------
def projected_hessian_solve(problem: EqBilevelQuadratic, Q: jax.Array, v: jax.Array) -> jax.Array:
    """V (V' Q V)^{-1} V' v: the inverse of the Hessian restricted to null(A), applied to v (a linear solve)."""
    V = problem.V
    return V @ jnp.linalg.solve(V.T @ Q @ V, V.T @ v)


def projected_neumann(problem: EqBilevelQuadratic, Qs: jax.Array, v: jax.Array, eta: float) -> jax.Array:
    """eta sum_{n<N} prod_{j<=n} (P_A (I - eta Q_j)) P_A v with one Hessian sample Q_j per factor.

    ``Qs`` is [N, d, d] (Hessian samples) or [N, d] (diagonal noise D_j: Q_j = problem.Q + diag(D_j)).

    Its expectation is the N-term Neumann series of V (V'QV)^{-1} V' v; the truncation error decays like
    (1 - eta mu)^N (mu the smallest eigenvalue of V'QV).
    """
    PA = problem.PA
    u0 = PA @ v

    def body(carry, Q):
        u, acc = carry
        Qu = Q @ u if Q.ndim == 2 else problem.Q @ u + Q * u
        u = PA @ (u - eta * Qu)
        return (u, acc + u), None

    (_, acc), _ = jax.lax.scan(body, (u0, u0), Qs[1:], unroll=Qs.shape[0] <= 16)
    return eta * acc


def implicit_gradient(problem: EqBilevelQuadratic, x: jax.Array, y: jax.Array, *, gx: jax.Array | None = None,
                      gy: jax.Array | None = None, jac_xy: jax.Array | None = None, Q: jax.Array | None = None,
                      hinv_gy: jax.Array | None = None) -> jax.Array:
    """∇_x f - H' A^+' ∇_y f - (∇_xy g - H' A^+' ∇_yy g) V (V'∇_yy g V)^{-1} V' ∇_y f at (x, y).

    Exact at y = y*(x) with the default (noise-free) derivatives; the solver passes stochastic samples instead.
    """
    gx = problem.grad_x_f(x, y) if gx is None else gx
    gy = problem.grad_y_f(x, y) if gy is None else gy
    jac_xy = -problem.P.T if jac_xy is None else jac_xy
    Q = problem.Q if Q is None else Q
    w = projected_hessian_solve(problem, Q, gy) if hinv_gy is None else hinv_gy
    HtApt = problem.H.T @ problem.Ap.T
    return gx - HtApt @ gy - (jac_xy - HtApt @ Q) @ w


def stationarity(problem: EqBilevelQuadratic, x: jax.Array) -> jax.Array:
    """||P_X ∇F(Proj_X x)||^2: the squared norm of the projected gradient at the feasible point."""
    xb = problem.project_x(x)
    g = problem.PB @ problem.grad_F(xb)
    return g @ g


# --- the solvers -----------------------------------------------------------------------------------------------
def samples_per_step(*, lower_steps: int = 1, lower_batch: int = 1, neumann_steps: int = 10,
                     hessian_inverse: str = "neumann") -> int:
    """Stochastic oracle calls per outer step: S * b lower gradients, one upper gradient (∇_x f, ∇_y f), one
    Jacobian sample, and N + 1 Hessian samples (Neumann) or 2 (solve)."""
    hess = neumann_steps + 1 if hessian_inverse == "neumann" else 2
    return lower_steps * lower_batch + 1 + 1 + hess


def upper_projection_counts(steps: Any, *, interval: int | None = None, rate: float = 1.0,
                            power: float = 0.75) -> np.ndarray:
    """Upper-level projections done after k outer steps (k in ``steps``): k // interval, or floor(rate k^power)."""
    k = np.asarray(steps, dtype=np.int64)
    if interval is not None:
        return (k // interval).astype(float)
    return np.floor(rate * k.astype(float) ** power)


def expected_lower_projections(steps: Any, lower_prob: Any, lower_steps: int) -> np.ndarray:
    """E[lower-level projections] after k outer steps: S sum_{j<k} p_j (exact, from the schedule)."""
    k = np.asarray(steps, dtype=np.int64)
    sched = as_schedule(lower_prob)
    n = int(k.max())
    p = np.minimum(1.0, np.broadcast_to(np.asarray(sched(jnp.arange(n)), dtype=float), (n,)))
    cum = np.concatenate([[0.0], np.cumsum(p)])
    return lower_steps * cum[k]


def _make(step_size: Any, lower_step_size: Any, *, lower_steps: int, neumann_steps: int, neumann_step: float | None,
          hessian_inverse: str, interval: int | None, rate: float, power: float, lower_prob: Any,
          lower_batch: int) -> Solver:
    check_positive("step_size", step_size)
    check_positive("lower_step_size", lower_step_size)
    lower_steps = check_positive_int("lower_steps", lower_steps)
    neumann_steps = check_positive_int("neumann_steps", neumann_steps)
    lower_batch = check_positive_int("lower_batch", lower_batch)
    check_choice("hessian_inverse", hessian_inverse, HESSIAN_INVERSES)
    if neumann_step is not None:
        check_positive("neumann_step", neumann_step)
    if not callable(lower_prob):
        check_in_range("lower_prob", lower_prob, 0.0, 1.0, closed="right")
    alpha_s, beta_s, p_s = as_schedule(step_size), as_schedule(lower_step_size), as_schedule(lower_prob)
    n_hess = neumann_steps + 1

    def init(problem: EqBilevelQuadratic, key: jax.Array) -> AiPODState:
        del key
        x = problem.project_x(problem.x0)
        y = problem.project_y(x, problem.y0)
        z = jnp.zeros((), x.dtype)
        return AiPODState(x, y, jnp.zeros_like(y), jnp.zeros((), jnp.int32), z, z, z)

    def sample(problem: EqBilevelQuadratic, key: jax.Array, n: int) -> AiPODSample:
        # One bulk normal draw, cut into the pieces (one random kernel compiles much faster than six).
        dx, dy, dt = problem.dim_x, problem.dim_y, problem.fx.dtype
        s, hs = problem.sigma, problem.hess_sigma
        sizes = (lower_steps * dy, dx, dy, n_hess * dy, dx, lower_steps)
        z = jax.random.normal(key, (n, sum(sizes)), dt)
        a, b, c, d, e = np.cumsum(sizes)[:-1]
        return AiPODSample(
            lower_noise=s / math.sqrt(lower_batch) * z[:, :a].reshape(n, lower_steps, dy),
            lower_u=jax.scipy.special.ndtr(z[:, e:]),  # Phi(N(0, 1)) ~ U(0, 1)
            fx_noise=s * z[:, a:b],
            fy_noise=s * z[:, b:c],
            hess_noise=hs * z[:, c:d].reshape(n, n_hess, dy),
            jac_noise=hs * z[:, d:e])

    def step(state: AiPODState, problem: EqBilevelQuadratic, xi: AiPODSample) -> tuple[AiPODState, dict]:
        k = state.count
        dt = state.x.dtype
        alpha = jnp.asarray(alpha_s(k), dt)
        beta = jnp.asarray(beta_s(k), dt)
        p = jnp.minimum(jnp.asarray(p_s(k), dt), 1.0)
        x = state.x

        def lower(carry, inp):
            y, r, n_proj = carry
            noise, u = inp
            z = y - beta * (problem.grad_y_g(x, y) + noise - r)
            do = u < p
            y_p = problem.project_y(x, z - (beta / p) * r)
            r_p = r + (p / beta) * (y_p - z)
            return (jnp.where(do, y_p, z), jnp.where(do, r_p, r), n_proj + do.astype(dt)), do

        (y, r, n_proj), did = jax.lax.scan(lower, (state.y, state.r, jnp.zeros((), dt)),
                                           (xi.lower_noise, xi.lower_u), unroll=True)
        gx = problem.grad_x_f(x, y) + xi.fx_noise
        gy = problem.grad_y_f(x, y) + xi.fy_noise
        if hessian_inverse == "neumann":
            eta = neumann_step if neumann_step is not None else 1.0 / problem.lower_smoothness
            w = projected_neumann(problem, xi.hess_noise[:-1], gy, eta)
        else:
            w = projected_hessian_solve(problem, problem.Q + jnp.diag(xi.hess_noise[0]), gy)
        # Jacobian-vector and Hessian-vector samples: ∇_xy g w + noise ||w||, (Q + diag(D)) w.
        jac_w = -problem.P.T @ w + xi.jac_noise * jnp.sqrt(w @ w)
        HtApt = problem.H.T @ problem.Ap.T
        h = gx - HtApt @ gy - jac_w + HtApt @ (problem.Q @ w + xi.hess_noise[-1] * w)
        x_new = x - alpha * h
        if interval is not None:
            proj = (k + 1) % interval == 0
        else:
            kf = k.astype(dt)
            proj = jnp.floor(rate * (kf + 1) ** power) > jnp.floor(rate * kf ** power)
        x_new = jnp.where(proj, problem.project_x(x_new), x_new)
        viol = jnp.maximum(jnp.where(proj, problem.upper_violation(x_new), 0.0),
                           jnp.where(did[-1], problem.lower_violation(x, y), 0.0))
        max_viol = jnp.maximum(state.max_violation, viol)
        xb = problem.project_x(x_new)
        g = problem.PB @ problem.grad_F(xb)
        dy_ = y - problem.y_star(x)
        dx_ = xb - problem.x_star
        new = AiPODState(x_new, y, r, k + 1, state.upper_projections + proj.astype(dt),
                         state.lower_projections + n_proj, max_viol)
        return new, {"grad_norm_sq": g @ g, "dist_to_opt": jnp.sqrt(dx_ @ dx_), "y_gap": dy_ @ dy_,
                     "upper_projections": new.upper_projections, "lower_projections": new.lower_projections,
                     "max_violation": max_viol}

    return Solver(init, step, sample)


def aipod(step_size: Any, lower_step_size: Any, *, lower_steps: int = 1, neumann_steps: int = 10,
          neumann_step: float | None = None, hessian_inverse: str = "neumann") -> Solver:
    """AiPOD (Xiao et al. 2023, Algorithm 1): S projected SGD steps on the lower level, then one projected SGD step
    on the upper level along the stochastic implicit gradient. Every step projects both levels.

    Args:
      step_size: alpha_k (float or schedule; e.g. ``power_decay(alpha, 1, 0.5)`` for alpha/sqrt(k+1)).
      lower_step_size: beta_k (float or schedule).
      lower_steps: S, lower-level steps per outer step.
      neumann_steps: N, terms of the projected Neumann series.
      neumann_step: eta of the Neumann series (default 1 / L_g, L_g = largest eigenvalue of V'∇_yy g V).
      hessian_inverse: "neumann" (stochastic projected Neumann series) or "solve" (linear solve on null(A)).
    """
    return _make(step_size, lower_step_size, lower_steps=lower_steps, neumann_steps=neumann_steps,
                 neumann_step=neumann_step, hessian_inverse=hessian_inverse, interval=1, rate=1.0, power=1.0,
                 lower_prob=1.0, lower_batch=1)


def e_aipod(step_size: Any, lower_step_size: Any, *, projection_interval: int, lower_prob: Any,
            lower_batch: int | None = None, lower_steps: int = 1, neumann_steps: int = 10,
            neumann_step: float | None = None, hessian_inverse: str = "neumann") -> Solver:
    """E-AiPOD with an O(T) lower-level batch: upper projection every T = ``projection_interval`` steps, lower-level
    projection with probability ``lower_prob`` (ProxSkip control variate), lower batch ``lower_batch`` (default T).
    Abstract: O~(eps^-2 / T) upper-level and O~(eps^-1.5 / T^(3/4)) lower-level projections."""
    T = check_positive_int("projection_interval", projection_interval)
    b = T if lower_batch is None else lower_batch
    return _make(step_size, lower_step_size, lower_steps=lower_steps, neumann_steps=neumann_steps,
                 neumann_step=neumann_step, hessian_inverse=hessian_inverse, interval=T, rate=1.0, power=1.0,
                 lower_prob=lower_prob, lower_batch=b)


def e_aipod_small_batch(step_size: Any, lower_step_size: Any, *, lower_prob: Any, projection_rate: float = 1.0,
                        projection_power: float = 0.75, lower_batch: int = 1, lower_steps: int = 1,
                        neumann_steps: int = 10, neumann_step: float | None = None,
                        hessian_inverse: str = "neumann") -> Solver:
    """E-AiPOD with an O(1) lower-level batch: the upper level projects when floor(rate * k^power) increases
    (rate * k^(3/4) projections after k steps, i.e. O(eps^-1.5) for k ~ eps^-2), the lower level with probability
    ``lower_prob``. Abstract: O~(eps^-1.5) upper- and lower-level projections with an O(1) batch."""
    if not is_traced(projection_rate):
        check_in_range("projection_rate", projection_rate, 0.0, 1.0, closed="right")
    if not is_traced(projection_power):
        check_in_range("projection_power", projection_power, 0.0, 1.0, closed="right")
    return _make(step_size, lower_step_size, lower_steps=lower_steps, neumann_steps=neumann_steps,
                 neumann_step=neumann_step, hessian_inverse=hessian_inverse, interval=None, rate=projection_rate,
                 power=projection_power, lower_prob=lower_prob, lower_batch=lower_batch)


def sqrt_decay(scale: float) -> Any:
    """k -> scale / sqrt(k + 1): the anytime form of the theorems' O(1/sqrt(K)) step sizes."""
    return power_decay(scale, 1.0, 0.5)


def quarter_decay(scale: float) -> Any:
    """k -> min(1, scale (k + 1)^(-1/4)): the lower-level projection probability of the efficient variants."""
    check_positive("scale", scale)
    base = power_decay(scale, 1.0, 0.25)
    return lambda k: jnp.minimum(base(k), 1.0)
