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
formula against finite differences of F restricted to X. ``constraint_term=0`` reproduces the omission: the oracle
is then biased, and :func:`mean_oracle_limit` gives the point where its mean vanishes (the problems are quadratic
and the noise zero-mean and independent of the iterate, so E x_k follows the noise-free recursion).

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
schedules of the outer count k. :func:`aipod_variant` is the family in one solver (every numeric argument may be
traced, so one compiled program runs a sweep over methods and schedules); the three named constructors are its
special cases.

Metrics: ``grad_norm_sq`` = ||P_X ∇F(xbar)||^2 at xbar = Proj_X(x_{k+1}) (the eps-stationarity measure; P_X the
projector onto null(B)), ``dist_to_opt`` = ||xbar - x*||, ``y_gap`` = ||y_{k+1} - y*(x_k)||^2,
``upper_projections`` / ``lower_projections`` (cumulative counts), ``max_violation`` (running max of the
constraint violation of every iterate the algorithm projected: |B x - e|_inf, |A y + H x - c|_inf),
``max_violation_any`` (the same over every iterate, projected or not: the lazy variants' unprojected ones too).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from bilevel.eq_problems import EqBilevelQuadratic
from ratelab.errors import RatelabError
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
    max_violation_any: jax.Array


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



def mean_oracle(problem: EqBilevelQuadratic, *, neumann_steps: int, neumann_step: float | None = None,
                constraint_term: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The expected oracle of the Neumann variant at y = y*(x), an affine map E[h](x) = G x + g0 (float64 NumPy).

    E[h](x) = gx + P' w + H' A^+' Q w - c H' A^+' gy with w = eta sum_{n<N} (P_A (I - eta Q))^n P_A gy (the N
    Hessian samples are independent, so the expected product is the product of the expectations) and c the weight
    of the constraint term. The dynamics are linear and every noise is zero-mean and independent of the current
    iterate, so E x_k follows the noise-free recursion with this map.
    """
    neumann_steps = check_positive_int("neumann_steps", neumann_steps)
    if callable(neumann_step):
        raise RatelabError("neumann_step must be a float or None for the expected oracle (a constant eta), got a "
                           "schedule")
    f = {k: np.asarray(getattr(problem, k), dtype=float) for k in
         ("Fxx", "Fxy", "Fyy", "fx", "fy", "Q", "P", "H", "Ap", "PA", "Phi", "phi")}
    eta = float(neumann_step) if neumann_step is not None else 1.0 / float(problem.lower_smoothness)
    step = f["PA"] @ (np.eye(f["Q"].shape[0]) - eta * f["Q"])
    term, M = f["PA"], np.zeros_like(f["Q"])
    for _ in range(neumann_steps):
        M, term = M + term, step @ term
    M = eta * M
    HtApt = f["H"].T @ f["Ap"].T
    # gx = Gx x + gx0, gy = Gy x + gy0 along y = Phi x + phi
    Gx, gx0 = f["Fxx"] + f["Fxy"] @ f["Phi"], f["Fxy"] @ f["phi"] + f["fx"]
    Gy, gy0 = f["Fxy"].T + f["Fyy"] @ f["Phi"], f["Fyy"] @ f["phi"] + f["fy"]
    W = f["P"].T @ M + HtApt @ f["Q"] @ M - float(constraint_term) * HtApt
    return Gx + W @ Gy, gx0 + W @ gy0


def mean_oracle_limit(problem: EqBilevelQuadratic, **oracle: Any) -> np.ndarray:
    """The point x~ in X at which the expected oracle vanishes, P_X E[h](x~) = 0 (``oracle``: the arguments of
    :func:`mean_oracle`). With decaying steps E x_k -> x~ and E||P_X grad F(x_k)||^2 -> ||P_X grad F(x~)||^2, a
    floor: with the exact oracle, the truncation bias of the N-term Neumann series, O((1 - eta mu)^N); without the
    -H' A^+' grad_y f term (``constraint_term=0``) the oracle is biased by it and x~ != x* whenever H != 0."""
    G, g0 = mean_oracle(problem, **oracle)
    PB, B, e = (np.asarray(getattr(problem, k), dtype=float) for k in ("PB", "B", "e"))
    return np.linalg.lstsq(np.vstack([PB @ G, B]), np.concatenate([-PB @ g0, e]), rcond=None)[0]


def mean_oracle_curvature(problem: EqBilevelQuadratic, **oracle: Any) -> float:
    """mu: the smallest real part of the eigenvalues of the expected oracle's Jacobian G on null(B), the rate at
    which E x_k contracts (per unit step) towards x~."""
    G, _ = mean_oracle(problem, **oracle)
    VB = scipy.linalg.null_space(np.asarray(problem.B, dtype=float))
    return float(np.linalg.eigvals(VB.T @ G @ VB).real.min())


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


def _projection_due(k: jax.Array, interval: Any, rate: Any, power: Any, dt: Any) -> jax.Array:
    """Whether the upper level projects at outer step k: floor(rate (k+1)^power / T) > floor(rate k^power / T)
    (every T-th step for rate = power = 1; the times where floor(rate k^power) grows for T = 1)."""
    kf = k.astype(dt)
    lin = jnp.asarray(power, dt) == 1  # (k+1)^1 exactly: pow(x, 1.0) need not be exact, and floor would see it
    now = jnp.where(lin, kf + 1, (kf + 1) ** power)
    before = jnp.where(lin, kf, kf ** power)
    return jnp.floor(rate * now / interval) > jnp.floor(rate * before / interval)


def aipod_variant(step_size: Any, lower_step_size: Any, *, projection_interval: Any = 1, projection_rate: Any = 1.0,
                  projection_power: Any = 1.0, lower_prob: Any = 1.0, lower_batch: Any = 1, lower_steps: int = 1,
                  neumann_steps: int = 10, neumann_step: Any = None, hessian_inverse: str = "neumann",
                  constraint_term: Any = 1.0) -> Solver:
    """The AiPOD family in one solver: :func:`aipod`, :func:`e_aipod` and :func:`e_aipod_small_batch` are its
    special cases. Every numeric argument may be a JAX tracer, so one compiled program serves a sweep over variants
    (methods, step schedules, the oracle's constraint term).

    Args:
      step_size, lower_step_size: alpha_k, beta_k (floats or schedules of the outer count k).
      projection_interval, projection_rate, projection_power: the upper level projects at step k when
        floor(rate (k+1)^power / T) > floor(rate k^power / T): every step (1, 1, 1), every T-th step (T, 1, 1), or
        about rate k^power times in k steps (1, rate, power).
      lower_prob: p_k, probability of a lower-level projection (float or schedule; 1 = always).
      lower_batch: b, lower-level gradient samples averaged per step (noise N(0, sigma^2 / b)).
      lower_steps, neumann_steps, neumann_step, hessian_inverse: S, N, eta and the Hessian-inverse estimate
        (``neumann_step``: a float, a schedule of the outer count k, or None for 1 / L_g).
      constraint_term: weight of the -H' A^+' grad_y f term of the implicit gradient: 1 (the exact formula) or 0
        (the term dropped, as in the authors' synthetic script: a biased oracle whenever H != 0).
    """
    check_positive("step_size", step_size)
    check_positive("lower_step_size", lower_step_size)
    lower_steps = check_positive_int("lower_steps", lower_steps)
    neumann_steps = check_positive_int("neumann_steps", neumann_steps)
    for name, v in (("projection_interval", projection_interval), ("lower_batch", lower_batch)):
        if not is_traced(v):
            check_positive_int(name, v)
    for name, v in (("projection_rate", projection_rate), ("projection_power", projection_power)):
        if not is_traced(v):
            check_in_range(name, v, 0.0, 1.0, closed="right")
    if not is_traced(constraint_term):
        check_in_range("constraint_term", constraint_term, 0.0, 1.0)
    check_choice("hessian_inverse", hessian_inverse, HESSIAN_INVERSES)
    if neumann_step is not None:
        check_positive("neumann_step", neumann_step)
    if not callable(lower_prob):
        check_in_range("lower_prob", lower_prob, 0.0, 1.0, closed="right")
    alpha_s, beta_s, p_s = as_schedule(step_size), as_schedule(lower_step_size), as_schedule(lower_prob)
    eta_s = None if neumann_step is None else as_schedule(neumann_step)
    n_hess = neumann_steps + 1

    def init(problem: EqBilevelQuadratic, key: jax.Array) -> AiPODState:
        del key
        x = problem.project_x(problem.x0)
        y = problem.project_y(x, problem.y0)
        z = jnp.zeros((), jnp.result_type(x))  # x may be a NumPy float64 array while x64 is off
        return AiPODState(x, y, jnp.zeros_like(y), jnp.zeros((), jnp.int32), z, z, z, z)

    def sample(problem: EqBilevelQuadratic, key: jax.Array, n: int) -> AiPODSample:
        # One bulk normal draw, cut into the pieces (one random kernel compiles much faster than six).
        dx, dy, dt = problem.dim_x, problem.dim_y, jnp.result_type(problem.fx)
        s, hs = problem.sigma, problem.hess_sigma
        sizes = (lower_steps * dy, dx, dy, n_hess * dy, dx, lower_steps)
        z = jax.random.normal(key, (n, sum(sizes)), dt)
        a, b, c, d, e = np.cumsum(sizes)[:-1]
        return AiPODSample(
            lower_noise=s / jnp.sqrt(jnp.asarray(lower_batch, dt)) * z[:, :a].reshape(n, lower_steps, dy),
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
            do = (u < p) | (p >= 1)
            y_p = problem.project_y(x, z - (beta / p) * r)
            r_p = r + (p / beta) * (y_p - z)
            return (jnp.where(do, y_p, z), jnp.where(do, r_p, r), n_proj + do.astype(dt)), do

        (y, r, n_proj), did = jax.lax.scan(lower, (state.y, state.r, jnp.zeros((), dt)),
                                           (xi.lower_noise, xi.lower_u), unroll=True)
        gx = problem.grad_x_f(x, y) + xi.fx_noise
        gy = problem.grad_y_f(x, y) + xi.fy_noise
        if hessian_inverse == "neumann":
            eta = eta_s(k) if eta_s is not None else 1.0 / problem.lower_smoothness
            w = projected_neumann(problem, xi.hess_noise[:-1], gy, eta)
        else:
            w = projected_hessian_solve(problem, problem.Q + jnp.diag(xi.hess_noise[0]), gy)
        # Jacobian-vector and Hessian-vector samples: ∇_xy g w + noise ||w||, (Q + diag(D)) w.
        jac_w = -problem.P.T @ w + xi.jac_noise * jnp.sqrt(w @ w)
        HtApt = problem.H.T @ problem.Ap.T
        h = gx - jac_w + HtApt @ (problem.Q @ w + xi.hess_noise[-1] * w) - constraint_term * (HtApt @ gy)
        x_new = x - alpha * h
        proj = _projection_due(k, projection_interval, projection_rate, projection_power, dt)
        x_new = jnp.where(proj, problem.project_x(x_new), x_new)
        viol = jnp.maximum(jnp.where(proj, problem.upper_violation(x_new), 0.0),
                           jnp.where(did[-1], problem.lower_violation(x, y), 0.0))
        max_viol = jnp.maximum(state.max_violation, viol)
        viol_any = jnp.maximum(problem.upper_violation(x_new), problem.lower_violation(x, y))
        xb = problem.project_x(x_new)
        g = problem.PB @ problem.grad_F(xb)
        dy_ = y - problem.y_star(x)
        dx_ = xb - problem.x_star
        new = AiPODState(x_new, y, r, k + 1, state.upper_projections + proj.astype(dt),
                         state.lower_projections + n_proj, max_viol, jnp.maximum(state.max_violation_any, viol_any))
        return new, {"grad_norm_sq": g @ g, "dist_to_opt": jnp.sqrt(dx_ @ dx_), "y_gap": dy_ @ dy_,
                     "upper_projections": new.upper_projections, "lower_projections": new.lower_projections,
                     "max_violation": max_viol, "max_violation_any": new.max_violation_any}

    return Solver(init, step, sample)


def aipod(step_size: Any, lower_step_size: Any, *, lower_steps: int = 1, neumann_steps: int = 10,
          neumann_step: Any = None, hessian_inverse: str = "neumann", constraint_term: Any = 1.0) -> Solver:
    """AiPOD (Xiao et al. 2023, Algorithm 1): S projected SGD steps on the lower level, then one projected SGD step
    on the upper level along the stochastic implicit gradient. Every step projects both levels.

    Args:
      step_size: alpha_k (float or schedule; e.g. ``power_decay(alpha, 1, 0.5)`` for alpha/sqrt(k+1)).
      lower_step_size: beta_k (float or schedule).
      lower_steps: S, lower-level steps per outer step.
      neumann_steps: N, terms of the projected Neumann series.
      neumann_step: eta of the Neumann series, a float or a schedule of k (default 1 / L_g, L_g = largest
        eigenvalue of V'∇_yy g V).
      hessian_inverse: "neumann" (stochastic projected Neumann series) or "solve" (linear solve on null(A)).
      constraint_term: 1 keeps the -H' A^+' grad_y f term of the implicit gradient; 0 drops it, as the authors'
        synthetic script does (a biased oracle whenever H != 0; for comparison and negative controls).
    """
    return aipod_variant(step_size, lower_step_size, lower_steps=lower_steps, neumann_steps=neumann_steps,
                         neumann_step=neumann_step, hessian_inverse=hessian_inverse, constraint_term=constraint_term)


def e_aipod(step_size: Any, lower_step_size: Any, *, projection_interval: int, lower_prob: Any,
            lower_batch: int | None = None, lower_steps: int = 1, neumann_steps: int = 10,
            neumann_step: Any = None, hessian_inverse: str = "neumann",
            constraint_term: Any = 1.0) -> Solver:
    """E-AiPOD with an O(T) lower-level batch: upper projection every T = ``projection_interval`` steps, lower-level
    projection with probability ``lower_prob`` (ProxSkip control variate), lower batch ``lower_batch`` (default T).
    Abstract: O~(eps^-2 / T) upper-level and O~(eps^-1.5 / T^(3/4)) lower-level projections. Other arguments as
    in :func:`aipod`."""
    T = check_positive_int("projection_interval", projection_interval)
    return aipod_variant(step_size, lower_step_size, projection_interval=T, lower_prob=lower_prob,
                         lower_batch=T if lower_batch is None else lower_batch, lower_steps=lower_steps,
                         neumann_steps=neumann_steps, neumann_step=neumann_step, hessian_inverse=hessian_inverse,
                         constraint_term=constraint_term)


def e_aipod_small_batch(step_size: Any, lower_step_size: Any, *, lower_prob: Any, projection_rate: float = 1.0,
                        projection_power: float = 0.75, lower_batch: int = 1, lower_steps: int = 1,
                        neumann_steps: int = 10, neumann_step: Any = None,
                        hessian_inverse: str = "neumann", constraint_term: Any = 1.0) -> Solver:
    """E-AiPOD with an O(1) lower-level batch: the upper level projects when floor(rate * k^power) increases
    (rate * k^(3/4) projections after k steps, i.e. O(eps^-1.5) for k ~ eps^-2), the lower level with probability
    ``lower_prob``. Abstract: O~(eps^-1.5) upper- and lower-level projections with an O(1) batch. Other arguments
    as in :func:`aipod`."""
    return aipod_variant(step_size, lower_step_size, projection_rate=projection_rate,
                         projection_power=projection_power, lower_prob=lower_prob, lower_batch=lower_batch,
                         lower_steps=lower_steps, neumann_steps=neumann_steps, neumann_step=neumann_step,
                         hessian_inverse=hessian_inverse, constraint_term=constraint_term)


def sqrt_decay(scale: float) -> Any:
    """k -> scale / sqrt(k + 1): the anytime form of the theorems' O(1/sqrt(K)) step sizes."""
    return power_decay(scale, 1.0, 0.5)


def quarter_decay(scale: float) -> Any:
    """k -> min(1, scale (k + 1)^(-1/4)): the lower-level projection probability of the efficient variants."""
    check_positive("scale", scale)
    base = power_decay(scale, 1.0, 0.25)
    return lambda k: jnp.minimum(base(k), 1.0)
