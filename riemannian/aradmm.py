"""Adaptive Riemannian ADMM without smoothing (ARADMM).

Paper: Kangkang Deng, Jiachen Jin, Jiang Hu, Hongxia Wang, "Adaptive Riemannian ADMM for Nonsmooth Optimization:
Optimal Complexity without Smoothing", arXiv:2510.18617 (2025; NeurIPS 2025).

What is the paper's (from its abstract and introduction): the problem min_{x in M} f(x) + h(A x), M a compact
Riemannian submanifold of Euclidean space, f continuously differentiable, A linear, h proper closed convex and
nonsmooth; the splitting y = A x,

    min_{x in M, y} f(x) + h(y)   s.t.  A x = y,
    L_rho(x, y, lambda) = f(x) + h(y) + <lambda, A x - y> + (rho / 2) ||A x - y||^2,

solved WITHOUT smoothing h (RADMM, :mod:`riemannian.admm`, replaces h by its Moreau envelope h_gamma), with one
Riemannian gradient evaluation and one proximal step of h per iteration, and "adaptive coordination of the
stepsizes and penalty parameters" (a growing penalty and an adaptive dual stepsize); the result: an
eps-approximate KKT point within O(eps^-3) iterations.

RECONSTRUCTED here (the text of Algorithm 1 and of the theorem was not available to us; each line below marked [R]
is our restatement in the paper's framework, not a quotation):

    x_{k+1}      = R_{x_k}( -eta_k grad_x L_{rho_k}(x_k, y_k, lambda_k) )                    (Riemannian step)
    y_{k+1}      = argmin_y L_{rho_k}(x_{k+1}, y, lambda_k) = prox_{h / rho_k}(A x_{k+1} + lambda_k / rho_k)
    lambda_{k+1} = lambda_k + beta_k (A x_{k+1} - y_{k+1})                                 (dual step)

  [R] penalty rho_k = rho_0 (k + 1)^(1/3) (``penalty_power`` = 1/3): the exponent that turns the constraint
      violation ||A x - y|| ~ ||lambda~ - lambda|| / rho_k into the O(k^(-1/3)) rate of an O(eps^-3) bound;
  [R] step eta_k = c_eta / (L_f + rho_k ||A||^2), the inverse Lipschitz constant of grad_x L_{rho_k} (L_f = ||H||_2
      for sparse PCA);
  [R] dual stepsize beta_k = beta_0 min{1, ||c_1|| log^2 2 / (||c_{k+1}|| (k + 1) log^2(k + 2))},
      c_j = A x_j - y_j: the rule of Sahin et al. (NeurIPS 2019, inexact ALM) that the first author's Riemannian
      ALM papers use; it keeps sum_k ||lambda_{k+1} - lambda_k|| finite, hence the multipliers bounded without
      any smoothness of h;
  [R] lambda_0 = 0, y_0 = A x_0, beta_0 = rho_0.

RADMM is a point of this parameter space (derived; :func:`radmm_parameters`, checked step by step in the tests):
penalty_power = 0 (rho_k = rho = 1 / eps), ``adaptive_dual`` = 0 (beta_k = beta_0 = rho), smoothing gamma = eps,
eta = eps, lambda_0 = grad h_gamma(y_0). The experiment's negative controls run there, in the same compiled program.

KKT residual (logged as ``kkt_residual``; the eps-KKT conditions of the splitting problem, in our normalisation):
at (x, y) = (x_{k+1}, y_{k+1}) with the multiplier lambda~_{k+1} = lambda_k + rho_k (A x_{k+1} - y_{k+1}),

    ||P_{T_x M}(grad f(x) + A^T lambda~)||_F + ||A x - y||_F + dist(lambda~, partial h(y)),

whose last term is exactly 0 (derived: the y-update's optimality condition is lambda~_{k+1} in partial h(y_{k+1})),
so the measure certifies an approximate KKT point of the ORIGINAL nonsmooth problem. With smoothing ``gamma`` > 0
(RADMM's y-update, a negative control) the same measure is taken at z = prox_{gamma h}(y) instead of y (then
lambda~ = grad h_gamma(y) lies in partial h(z)): at a fixed point ||A x - z|| = gamma ||lambda~|| > 0, the smoothing
floor.

Symbols -> arguments: rho_0 -> ``rho0``, the exponent of rho_k -> ``penalty_power``, eta_k -> ``step_size`` (a
float, a schedule of k, or None for c_eta / (L_f + rho_k ||A||^2) with ``c_eta``), beta_0 -> ``beta0`` (None: rho_0),
R -> ``retraction``, A x -> ``problem.lin(x)``, A^T z -> ``problem.lin_vjp(x, z)``, h -> ``problem.h`` /
``problem.prox_h`` (mu ||.||_1 for :class:`riemannian.sparse_problems.CompositeProblem`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_in_range, check_nonnegative, check_positive
from riemannian.admm import stationarity_terms, x_update, y_update
from riemannian.manifolds import retraction_method
from riemannian.sparse_problems import CompositeProblem, sparsity

Array = jax.Array
LOG2_SQ = math.log(2.0) ** 2


class ARADMMState(NamedTuple):
    x: Array
    y: Array
    lam: Array
    k: Array
    c1: Array  # ||A x_1 - y_1||, the dual-step rule's reference (0 until the first step)
    lip: Array  # L_f = ||C||_2 and ||A||^2 = ||B||_2^2: the default step's constants, computed at init
    a_sq: Array
    gx: Array  # grad f(x), carried from the step that made x (its KKT residual needs it): grad f once per step


def l1_subgradient_distance(problem: CompositeProblem, lam: Array, z: Array) -> Array:
    """dist(lam, partial h(z)) in Frobenius norm for h = mu ||.||_1: entrywise |lam - mu sign z| where z != 0 and
    max(|lam| - mu, 0) where z = 0."""
    mu = problem.mu
    d = jnp.where(z != 0, jnp.abs(lam - mu * jnp.sign(z)), jnp.maximum(jnp.abs(lam) - mu, 0.0))
    return jnp.linalg.norm(d)


def kkt_terms(problem: CompositeProblem, x: Array, y: Array, lam: Array, gamma: Any = 0.0, gx: Array | None = None
              ) -> tuple[Array, Array, Array]:
    """(||P_x(grad f(x) + A^T lam)||_F, ||A x - z||_F, dist(lam, partial h(z))) at z = prox_{gamma h}(y) (z = y at
    gamma = 0): the three eps-KKT conditions of min f(x) + h(y) s.t. A x = y, x in M (see the module docstring);
    ``gx``: grad f(x) where it is already known."""
    z = problem.prox_h(y, gamma)
    grad, feas = stationarity_terms(problem, x, z, lam, gx)
    return grad, feas, l1_subgradient_distance(problem, lam, z)


def dual_stepsize(beta0: Any, c1: Array, c_norm: Array, k: Array) -> Array:
    """[R] beta_k = beta_0 min{1, ||c_1|| log^2 2 / (||c_{k+1}|| (k + 1) log^2(k + 2))} (k from 0; beta_0 at k = 0)."""
    kf = k.astype(c_norm.dtype)
    ratio = c1 * LOG2_SQ / (jnp.maximum(c_norm, jnp.finfo(c_norm.dtype).tiny) * (kf + 1.0) * jnp.log(kf + 2.0) ** 2)
    return beta0 * jnp.where(c_norm > 0, jnp.minimum(1.0, ratio), 1.0)


def aradmm_map(problem: CompositeProblem, state: ARADMMState, *, rho: Array, eta: Array, beta0: Any, gamma: Any,
               adaptive: Any = 1.0, retraction: str | None = None) -> tuple[ARADMMState, dict[str, Array]]:
    """One ARADMM iteration; returns the new state and the iteration's quantities (rho_k, beta_k, eta_k, lambda~)."""
    x, y, lam = state.x, state.y, state.lam
    x_new = x_update(problem, x, y, lam, eta=eta, rho=rho, retraction=retraction, gx=state.gx)
    ax = problem.lin(x_new)
    y_new = y_update(problem, ax, lam, rho, gamma)  # gamma = 0: prox_{h/rho}(A x + lambda / rho), no smoothing
    c = ax - y_new
    c_norm = jnp.linalg.norm(c)
    c1 = jnp.where(state.k == 0, c_norm, state.c1)
    beta = adaptive * dual_stepsize(beta0, c1, c_norm, state.k) + (1.0 - adaptive) * beta0
    new = ARADMMState(x_new, y_new, lam + beta * c, state.k + 1, c1, state.lip, state.a_sq, problem.egrad_f(x_new))
    return new, {"rho": rho, "beta": beta, "eta": eta, "lam_tilde": lam + rho * c}


def aradmm(rho0: Any = 1.0, *, penalty_power: Any = 1.0 / 3.0, step_size: Any = None, c_eta: Any = 0.5,
           beta0: Any = None, adaptive_dual: Any = 1.0, gamma: Any = 0.0, retraction: str | None = None,
           random_init: bool = False, lipschitz: tuple[float, float] | None = None,
           sparsity_tol: float = 1e-5) -> Solver:
    """ARADMM (Deng, Jin, Hu, Wang, arXiv:2510.18617; Algorithm 1 as reconstructed in the module docstring) for a
    :class:`riemannian.sparse_problems.CompositeProblem`.

    Args:
      rho0: rho_0 > 0, the initial penalty; rho_k = rho0 (k + 1)^penalty_power.
      penalty_power: >= 0; 1/3 [R]; 0 keeps the penalty constant (a negative control).
      step_size: eta_k: a float, a schedule of k, or None (default) for c_eta / (L_f + rho_k ||A||^2).
      c_eta: the default step's constant, in (0, 2).
      beta0: beta_0 > 0 of the dual stepsize rule (None: rho0).
      adaptive_dual: in [0, 1]; 1 (default): the rule [R] of the module docstring; 0: beta_k = beta_0 (RADMM's full
        dual step when beta_0 = rho); values between mix the two linearly (so that a sweep can trace it).
      gamma: >= 0; 0 (default) is ARADMM. gamma > 0 replaces h by its Moreau envelope h_gamma in the y-update
        (RADMM's smoothing; a negative control whose KKT residual stops at gamma ||lambda~||).
      retraction: a retraction of the problem's manifold (None: its first).
      random_init: draw x_0 on the manifold from the init key (per seed) instead of ``problem.x0``.
      lipschitz: (L_f, ||A||^2) for the default step, e.g. from :func:`step_constants` in NumPy (None: computed in
        ``init`` by two SVDs, which cost the start program about half a second of compilation).

    Metrics: ``kkt_residual`` (the sum of ``kkt_grad``, ``kkt_feas``, ``kkt_subgrad``; module docstring),
    ``objective`` F(x) = f(x) + h(A x), ``feasibility`` ||X^T X - I||_F, ``rho``, ``beta``, ``eta``,
    ``dual_step`` ||lambda_{k+1} - lambda_k||_F, ``multiplier_norm`` ||lambda_{k+1}||_F, ``sparsity`` of x.
    """
    check_positive("rho0", rho0)
    check_nonnegative("penalty_power", penalty_power)
    if step_size is not None:
        check_positive("step_size", step_size)
    check_positive("c_eta", c_eta)
    if not callable(c_eta) and not isinstance(c_eta, jax.core.Tracer) and float(c_eta) >= 2.0:
        raise RatelabError(f"c_eta must lie in (0, 2) (the step times the gradient's Lipschitz constant), got {c_eta}")
    beta0 = rho0 if beta0 is None else beta0
    check_positive("beta0", beta0)
    check_in_range("adaptive_dual", adaptive_dual, 0.0, 1.0)
    check_nonnegative("gamma", gamma)
    if retraction is not None and not isinstance(retraction, str):
        raise RatelabError(f"retraction must be None or a method name such as 'qr', got {retraction!r}")
    check_positive("sparsity_tol", sparsity_tol)
    eta_sched = None if step_size is None else as_schedule(step_size)
    if lipschitz is not None:
        if len(lipschitz) != 2:
            raise RatelabError(f"lipschitz must be a pair (L_f, ||A||^2), got {lipschitz!r}")
        check_nonnegative("lipschitz[0]", lipschitz[0])
        check_positive("lipschitz[1]", lipschitz[1])

    def rho_of(k: Array, dtype: Any) -> Array:
        return rho0 * (k.astype(dtype) + 1.0) ** penalty_power

    def init(problem: CompositeProblem, key: Array) -> ARADMMState:
        if not isinstance(problem, CompositeProblem):
            raise RatelabError(f"problem must be a CompositeProblem (f = -1/2 tr(X^T C X), h = mu ||B X||_1), got "
                               f"{type(problem).__name__}")
        retraction_method(problem.manifold, retraction)
        x = problem.manifold.random_point(key, dtype=problem.x0.dtype) if random_init else problem.x0
        y = problem.lin(x)
        if lipschitz is None:
            lip, a_sq = jnp.linalg.norm(problem.C, 2), problem.lin_norm_sq()
        else:
            lip, a_sq = (jnp.asarray(v, x.dtype) for v in lipschitz)
        zero = jnp.zeros((), x.dtype)
        # lambda_0 = 0; with smoothing (gamma > 0) RADMM's lambda_0 = grad h_gamma(y_0)
        g = jnp.maximum(jnp.asarray(gamma, x.dtype), jnp.finfo(x.dtype).tiny)
        lam = jnp.where(gamma > 0, (y - problem.prox_h(y, g)) / g, 0.0)
        return ARADMMState(x=x, y=y, lam=lam, k=jnp.zeros((), jnp.int32), c1=zero, lip=lip, a_sq=a_sq,
                           gx=problem.egrad_f(x))

    def step(state: ARADMMState, problem: CompositeProblem, xi: Any) -> tuple[ARADMMState, dict[str, Array]]:
        del xi
        rho = rho_of(state.k, state.x.dtype)
        eta = c_eta / (state.lip + rho * state.a_sq) if eta_sched is None else eta_sched(state.k)
        new, it = aradmm_map(problem, state, rho=rho, eta=eta, beta0=beta0, gamma=gamma, adaptive=adaptive_dual,
                             retraction=retraction)
        grad, feas, sub = kkt_terms(problem, new.x, new.y, it["lam_tilde"], gamma, new.gx)
        metrics = {
            "kkt_residual": grad + feas + sub, "kkt_grad": grad, "kkt_feas": feas, "kkt_subgrad": sub,
            "objective": problem.objective(new.x), "feasibility": problem.manifold.feasibility(new.x),
            "rho": it["rho"], "beta": it["beta"], "eta": jnp.asarray(it["eta"], new.x.dtype),
            "dual_step": jnp.linalg.norm(new.lam - state.lam), "multiplier_norm": jnp.linalg.norm(new.lam),
            "sparsity": sparsity(new.x, sparsity_tol),
        }
        return new, metrics

    return Solver(init=init, step=step)


def radmm_parameters(problem: CompositeProblem, eps: float) -> dict[str, float]:
    """The :func:`aradmm` arguments at which it is RADMM with the complexity theorem's parameters for ``eps``
    (:func:`riemannian.admm.theory_parameters`: gamma = eps, rho = 1 / eps, eta = eps) (derived): constant penalty,
    constant full dual step, smoothing gamma, and c_eta = eta (L_f + rho ||A||^2) so that the default step is eta."""
    check_positive("eps", eps)
    lip, a_sq = step_constants(problem)
    rho = 1.0 / eps
    return {"rho0": rho, "penalty_power": 0.0, "beta0": rho, "adaptive_dual": 0.0, "gamma": eps,
            "c_eta": eps * (lip + rho * a_sq)}


def step_constants(problem: CompositeProblem) -> tuple[float, float]:
    """(L_f, ||A||^2) = (||C||_2, ||B||_2^2) in NumPy: the Lipschitz constant of grad f(X) = -C X and the squared
    norm of the linear map, the constants of the default step c_eta / (L_f + rho_k ||A||^2)."""
    a_sq = 1.0 if problem.B is None else float(np.linalg.norm(np.asarray(problem.B, float), 2)) ** 2
    return float(np.linalg.norm(np.asarray(problem.C, float), 2)), a_sq
