"""PBRL: penalty-based policy-gradient methods for bilevel reinforcement learning.

Paper
-----
H. Shen, Z. Yang, T. Chen, "Principled Penalty-based Methods for Bilevel Reinforcement Learning and RLHF",
ICML 2024 (PMLR 235), arXiv 2402.06886; extended in JMLR 26(114), 2025.

The bilevel RL problem (the paper's (BM), Sec. 2)::

    min_{x, pi}  f(x, pi)   s.t.  pi in argmax_pi' V_{M_tau(x)}(pi'),

where M_tau(x) is an entropy-regularised MDP whose reward r_x depends on the upper variable x. The paper replaces
the constraint by a penalty p(x, pi) >= 0 that vanishes exactly at the lower-level solutions and minimises

    F_lambda(x, pi) = f(x, pi) + lambda p(x, pi)                                        (penalised problem)

with (projected) gradient steps on (x, pi) (Algorithm 1, PBRL). Two penalties (Sec. 3):

* value penalty     p(x, pi) = max_pi' rho.V^{pi'}_{tau,x} - rho.V^{pi}_{tau,x} (the lower-level value gap; the max
  is the optimal regularised value, computed here by soft value iteration, :func:`value_penalty`);
* Bellman penalty   g(x, pi) = sum_s rho(s) [max_{p in Delta(A)} (<p, Q^pi_x(s, .)> - tau h_s(p))
  - (<pi(s), Q^pi_x(s, .)> - tau h_s(pi(s)))] (the one-step optimality gap of pi's own Q function); with entropy
  the max is tau logsumexp(Q/tau), so g = tau sum_s rho(s) KL(pi(s) || softmax(Q^pi(s, .)/tau))
  (:func:`bellman_penalty`).

Landscape (Sec. 3): with tau > 0 the lower level satisfies a quadratic-growth condition, so a solution of the
penalised problem with lambda = Omega(delta^{-1/2}) is delta-feasible (p <= delta), i.e. p = O(lambda^{-2}).
Algorithm (Sec. 4): gradient of the value penalty in x by Danskin's theorem, grad_x max_pi' V = grad_x V(x, pi'_x*)
at the optimal policy held fixed; exact policy gradients on tabular MDPs. With step 1/L_lambda, L_lambda = O(lambda),
the average squared gradient (mapping) norm is O(lambda / K) (Theorem on PBRL's convergence; our claims fit the
exponent -1 in K).

Sample-based variant (:func:`pbrl_sampled`): the same update with an unbiased minibatch gradient from the policy-
gradient theorem, (s, a) pairs drawn from the occupancy measures d^pi and d^{pi*} and an exact tabular critic
(:func:`sampled_gradient`; implemented for the incentive-design upper level).

Caveat on references: the stored copies of the paper reachable while writing this held only its abstract, so the
section / algorithm names above are from our reading of the arXiv version and theorem numbers are not quoted; the
rates used in the claims are O(lambda/K) stationarity and delta-feasibility at lambda = Omega(delta^-1/2).

Symbols -> arguments: lambda -> ``lam``; gamma (discount) -> ``BilevelRL.gamma``; tau -> ``BilevelRL.tau``;
x -> ``x`` (reward parameters, r_x = r0 + phi x); pi = softmax(theta) -> ``theta`` ([S, A] logits); alpha (step size)
-> ``step_size``; the inner soft-value-iteration steps per outer step (the paper's lower-level loop) -> ``inner_iters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bilevel.precision import float_array
from bilevel.tabular_mdp import (
    check_mdp,
    draw_mdp,
    evaluate,
    neg_entropy,
    numpy_rng,
    q_from_v,
    soft_greedy,
    soft_optimal_value,
    soft_value_iteration,
    softmax_policy,
    state_action_occupancy,
)
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_nonnegative, check_positive, check_positive_int

UPPER_KINDS = ("incentive", "rlhf")
PENALTIES = ("value", "bellman")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BilevelRL:
    """A bilevel RL instance: lower MDP (P, rho, gamma, tau) with reward r_x = r0 + phi @ x; upper objective ``kind``.

    * ``kind="incentive"`` (incentive design / Stackelberg leader): x pays the follower a bonus phi @ x per (s, a);
      f(x, pi) = -rho.V^pi(target) + beta/2 ||x||^2, the leader's unregularised value of the follower's policy
      under the leader's reward ``target`` minus the cost of the incentive.
    * ``kind="rlhf"``: r_x is a reward model fitted to Bradley-Terry preferences between state-action pairs drawn
      from the policy's own occupancy d^pi: f(x, pi) = E_{i, j ~ d^pi} CE(sigma(target_i - target_j),
      sigma(r_x,i - r_x,j)) + beta/2 ||x||^2, ``target`` being the (hidden) human reward.
    """

    P: jax.Array
    rho: jax.Array
    gamma: jax.Array
    tau: jax.Array
    r0: jax.Array
    phi: jax.Array
    target: jax.Array
    beta: jax.Array
    kind: str = field(metadata=dict(static=True), default="incentive")

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def dim_x(self) -> int:
        return self.phi.shape[-1]


def bilevel_rl(P: Any, rho: Any, r0: Any, phi: Any, target: Any, *, gamma: float, tau: float, beta: float,
               kind: str) -> BilevelRL:
    """Build a :class:`BilevelRL` after checking shapes and ranges (tau must be > 0: the regularised lower level)."""
    check_mdp(P, r0, rho, gamma, tau)
    check_positive("tau", tau)
    check_nonnegative("beta", beta)
    check_choice("kind", kind, UPPER_KINDS)
    S, A = jnp.shape(P)[:2]
    if jnp.ndim(phi) != 3 or jnp.shape(phi)[:2] != (S, A):
        raise RatelabError(f"phi must have shape [S, A, d] = [{S}, {A}, d], got {jnp.shape(phi)}")
    if jnp.shape(target) != (S, A):
        raise RatelabError(f"target must have shape ({S}, {A}), got {jnp.shape(target)}")
    a = lambda v: float_array("bilevel_rl", v)  # noqa: E731  (the caller's precision is kept)
    return BilevelRL(P=a(P), rho=a(rho), gamma=a(gamma), tau=a(tau), r0=a(r0), phi=a(phi), target=a(target),
                     beta=a(beta), kind=kind)


def make_incentive_design(key: jax.Array, *, n_states: int = 5, n_actions: int = 3, gamma: float = 0.9,
                          tau: float = 0.2, beta: float = 1.0) -> BilevelRL:
    """Incentive design / Stackelberg leader on a random MDP: the follower's reward r0 ~ U[0, 1], the leader's reward
    ``target`` ~ U[0, 1] independent of it, one incentive per state-action pair (phi = identity, d = S A)."""
    check_positive_int("n_states", n_states)
    check_positive_int("n_actions", n_actions)
    check_positive("tau", tau)
    rng = numpy_rng(key)
    mdp = draw_mdp(rng, n_states=n_states, n_actions=n_actions, gamma=gamma, tau=tau)
    d = n_states * n_actions
    phi = np.eye(d).reshape(n_states, n_actions, d)
    target = rng.uniform(size=(n_states, n_actions))
    return bilevel_rl(mdp.P, mdp.rho, mdp.r, phi, target, gamma=gamma, tau=tau, beta=beta, kind="incentive")


def make_rlhf(key: jax.Array, *, n_states: int = 5, n_actions: int = 3, n_features: int = 4, gamma: float = 0.9,
              tau: float = 0.2, beta: float = 0.01, reward_scale: float = 2.0) -> BilevelRL:
    """RLHF with a synthetic Bradley-Terry labeller on a random MDP: reward model r_x = phi @ x with Gaussian
    features, human reward ``target`` = reward_scale * U[0, 1] (not in the span of phi: a misspecified model, so the
    fit depends on where the policy's data lie)."""
    check_positive_int("n_features", n_features)
    check_positive("tau", tau)
    check_positive("reward_scale", reward_scale)
    check_positive_int("n_states", n_states)
    check_positive_int("n_actions", n_actions)
    rng = numpy_rng(key)
    mdp = draw_mdp(rng, n_states=n_states, n_actions=n_actions, gamma=gamma, tau=tau)
    phi = rng.normal(size=(n_states, n_actions, n_features)) / np.sqrt(n_features)
    target = reward_scale * rng.uniform(size=(n_states, n_actions))
    return bilevel_rl(mdp.P, mdp.rho, np.zeros((n_states, n_actions)), phi, target, gamma=gamma, tau=tau, beta=beta,
                      kind="rlhf")


# ----------------------------------------------------------------------------------------------- level functions


def reward(prob: BilevelRL, x: jax.Array) -> jax.Array:
    """r_x(s, a) = r0(s, a) + sum_i phi(s, a, i) x_i."""
    return prob.r0 + prob.phi @ x


def lower_value(prob: BilevelRL, x: jax.Array, pi: jax.Array) -> jax.Array:
    """rho . V^pi_{M_tau(x)}: the lower-level (regularised) value, by exact policy evaluation."""
    return prob.rho @ evaluate(prob.P, reward(prob, x), pi, prob.gamma, prob.tau)


def upper_objective(prob: BilevelRL, x: jax.Array, pi: jax.Array) -> jax.Array:
    """f(x, pi) for the problem's ``kind`` (see :class:`BilevelRL`)."""
    ridge = 0.5 * prob.beta * jnp.sum(x * x)
    if prob.kind == "incentive":
        return -prob.rho @ evaluate(prob.P, prob.target, pi, prob.gamma, 0.0) + ridge
    d = state_action_occupancy(prob.P, pi, prob.rho, prob.gamma).reshape(-1)
    rx, rt = reward(prob, x).reshape(-1), prob.target.reshape(-1)
    z = rx[:, None] - rx[None, :]
    p_true = jax.nn.sigmoid(rt[:, None] - rt[None, :])
    ce = -(p_true * jax.nn.log_sigmoid(z) + (1.0 - p_true) * jax.nn.log_sigmoid(-z))
    return d @ ce @ d + ridge


def optimal_values(prob: BilevelRL, x: jax.Array, iters: int, V0: jax.Array | None = None) -> jax.Array:
    """V*_{M_tau(x)} by ``iters`` steps of soft value iteration (warm-started at ``V0``)."""
    return soft_value_iteration(prob.P, reward(prob, x), prob.gamma, prob.tau, iters, V0)


def optimal_policy(prob: BilevelRL, x: jax.Array, V: jax.Array) -> jax.Array:
    """pi*_x = softmax(Q_V / tau), the lower-level solution when V = V*_x."""
    return soft_greedy(prob.P, reward(prob, x), V, prob.gamma, prob.tau)


def value_penalty(prob: BilevelRL, x: jax.Array, theta: jax.Array, V_star: jax.Array) -> jax.Array:
    """p(x, theta) = rho.V^{pi*}_x - rho.V^{pi_theta}_x with pi* = softmax(Q_{V_star}/tau) held fixed.

    The value is the lower-level value gap when ``V_star`` = V*_x; holding pi* fixed (``stop_gradient``) makes its
    gradient in x the Danskin gradient grad_x max_pi V(x, pi) = grad_x V(x, pi)|_{pi = pi*_x}.
    """
    pi_star = jax.lax.stop_gradient(optimal_policy(prob, x, V_star))
    return lower_value(prob, x, pi_star) - lower_value(prob, x, softmax_policy(theta))


def optimal_value_implicit(prob: BilevelRL, x: jax.Array, iters: int) -> jax.Array:
    """V*_{M_tau(x)} from ``iters`` soft-VI steps, differentiated by the implicit function theorem
    (:func:`bilevel.tabular_mdp.soft_optimal_value`): exact derivatives of every order at the fixed point."""
    return soft_optimal_value(prob.P, reward(prob, x), prob.gamma, prob.tau, iters)


def value_penalty_exact(prob: BilevelRL, x: jax.Array, theta: jax.Array, iters: int) -> jax.Array:
    """p(x, theta) = rho.V*_x - rho.V^{pi_theta}_x with V*_x from ``iters`` soft-value-iteration steps from zero,
    differentiable to any order through the implicit function theorem (used for Newton solves)."""
    return prob.rho @ optimal_value_implicit(prob, x, iters) - lower_value(prob, x, softmax_policy(theta))


def bellman_penalty(prob: BilevelRL, x: jax.Array, theta: jax.Array) -> jax.Array:
    """g(x, theta) = sum_s rho(s) [tau logsumexp(Q^pi(s, .)/tau) - <pi(s), Q^pi(s, .)> + tau h_s(pi)], pi = pi_theta.

    Equal to tau sum_s rho(s) KL(pi(s) || softmax(Q^pi(s, .)/tau)) >= 0, zero iff pi is soft-greedy with respect to
    its own Q, i.e. iff pi = pi*_x (on the support of rho).
    """
    pi = softmax_policy(theta)
    r = reward(prob, x)
    Q = q_from_v(prob.P, r, evaluate(prob.P, r, pi, prob.gamma, prob.tau), prob.gamma)
    best = prob.tau * logsumexp(Q / prob.tau, axis=-1)
    return prob.rho @ (best - jnp.sum(pi * Q, axis=-1) + prob.tau * neg_entropy(pi))


def hyperobjective(prob: BilevelRL, x: jax.Array, iters: int) -> jax.Array:
    """phi(x) = f(x, pi*_x), the bilevel objective with the (unique, regularised) lower-level solution plugged in;
    pi*_x = softmax(Q*_x / tau) is differentiated by the implicit function theorem."""
    return upper_objective(prob, x, optimal_policy(prob, x, optimal_value_implicit(prob, x, iters)))


# ------------------------------------------------------------------------------------------------------- solver


class PBRLState(NamedTuple):
    x: jax.Array
    theta: jax.Array
    V: jax.Array  # warm-started estimate of V*_x (the lower-level inner loop)
    count: jax.Array
    F0: jax.Array  # F_lambda at the first iterate (for the descent-lemma check)
    half_sum: jax.Array  # sum_j alpha_j / 2 ||grad F_lambda(z_j)||^2


def pbrl(lam: Any, step_size: Any, *, penalty: str = "value", inner_iters: int = 10, init_scale: float = 1.0,
         init_inner_iters: int = 200) -> Solver:
    """PBRL (Shen, Yang & Chen 2024, Algorithm 1) with exact tabular policy gradients.

    Each step: ``inner_iters`` soft-value-iteration steps warm-started at the previous V (the lower-level loop that
    approximates max_pi V_{M_tau(x)}), then a gradient step on F_lambda = f + lam * p jointly in (x, theta),
    x <- x - alpha grad_x F, theta <- theta - alpha grad_theta F (the paper's (x, y) update; no projection since x is
    unconstrained and the policy is softmax-parameterised).

    Args:
      lam: the penalty constant lambda > 0 (float or traced: sweepable).
      step_size: alpha, a float or a schedule k -> alpha_k (the theory takes alpha <= 1 / L_lambda).
      penalty: ``"value"`` (value gap, Danskin gradient) or ``"bellman"`` (Bellman / optimality-gap penalty).
      inner_iters: soft-VI steps per outer step; ``init_inner_iters`` at initialisation.
      init_scale: x_0 ~ init_scale N(0, I), theta_0 ~ init_scale N(0, I) (one draw per seed).

    Metrics (before the step, at z_k): ``upper_loss`` f, ``lower_gap`` (value gap, with the current V* estimate),
    ``bellman_gap`` (Bellman penalty runs only), ``penalized`` F_lambda, ``grad_norm_sq`` ||grad F_lambda||^2,
    ``descent_ratio`` = sum_{j<k} alpha_j/2 ||grad F(z_j)||^2 / (F(z_0) - F(z_k)) (0 at k = 0, inf if F has not
    decreased), which the descent lemma F(z_{j+1}) <= F(z_j) - alpha/2 ||grad F(z_j)||^2 keeps <= 1 when
    alpha <= 1 / L_lambda.
    """
    check_positive("lam", lam)
    check_positive("step_size", step_size)
    check_choice("penalty", penalty, PENALTIES)
    inner_iters = check_positive_int("inner_iters", inner_iters)
    init_inner_iters = check_positive_int("init_inner_iters", init_inner_iters)
    check_positive("init_scale", init_scale)
    schedule = as_schedule(step_size)

    def objective(prob: BilevelRL, x, theta, V):
        f = upper_objective(prob, x, softmax_policy(theta))
        pen = value_penalty(prob, x, theta, V) if penalty == "value" else bellman_penalty(prob, x, theta)
        return f + lam * pen, (f, pen)

    def init(prob: BilevelRL, key: jax.Array) -> PBRLState:
        kx, kt = jax.random.split(key)
        dt = jnp.result_type(prob.P)
        x = init_scale * jax.random.normal(kx, (prob.dim_x,), dt)
        theta = init_scale * jax.random.normal(kt, (prob.n_states, prob.n_actions), dt)
        V = optimal_values(prob, x, init_inner_iters)
        F0, _ = objective(prob, x, theta, V)
        return PBRLState(x, theta, V, jnp.zeros((), jnp.int32), F0, jnp.zeros((), dt))

    def step(state: PBRLState, prob: BilevelRL, key: jax.Array):
        del key
        V = optimal_values(prob, state.x, inner_iters, state.V)
        (F, (f, pen)), (gx, gt) = jax.value_and_grad(objective, argnums=(1, 2), has_aux=True)(
            prob, state.x, state.theta, V)
        alpha = jnp.asarray(schedule(state.count), state.x.dtype)
        gn = jnp.sum(gx * gx) + jnp.sum(gt * gt)
        drop = state.F0 - F
        ratio = jnp.where(state.count == 0, 0.0, state.half_sum / jnp.where(drop > 0, drop, jnp.inf))
        ratio = jnp.where((state.count > 0) & (drop <= 0), jnp.inf, ratio)
        metrics = {"upper_loss": f, "penalized": F, "grad_norm_sq": gn, "descent_ratio": ratio}
        if penalty == "value":
            metrics["lower_gap"] = pen
        else:
            metrics["bellman_gap"] = pen
            metrics["lower_gap"] = value_penalty(prob, state.x, state.theta, V)
        new = PBRLState(state.x - alpha * gx, state.theta - alpha * gt, V, state.count + 1, state.F0,
                        state.half_sum + 0.5 * alpha * gn)
        return new, metrics

    return Solver(init, step)


def sampled_gradient(prob: BilevelRL, lam: Any, x: jax.Array, theta: jax.Array, V_star: jax.Array, key: jax.Array,
                     batch: int) -> tuple[jax.Array, jax.Array]:
    """Unbiased minibatch estimate of grad F_lambda (value penalty, ``kind="incentive"``).

    Policy-gradient theorem with an exact (model-based) critic: B pairs (s, a) ~ d^pi(s) pi(a|s) and B pairs from
    the optimal policy's occupancy d^{pi*}, then
      grad_x F     = beta x + lam / (1 - gamma) (E_{d*}[phi(s, a)] - E_{d^pi}[phi(s, a)]),
      grad_theta F = -1/(1 - gamma) E_{d^pi}[grad log pi(a|s) (Q_L^pi(s, a) + lam (Q_tau^pi(s, a) - tau log pi(a|s)))]
    with Q_L the leader's (unregularised) and Q_tau the follower's regularised action values of pi = pi_theta.
    """
    if prob.kind != "incentive":
        raise RatelabError(f"sampled gradients are implemented for kind 'incentive', got {prob.kind!r}")
    S, A = prob.n_states, prob.n_actions
    pi = softmax_policy(theta)
    r = reward(prob, x)
    pi_star = optimal_policy(prob, x, V_star)
    Q_L = q_from_v(prob.P, prob.target, evaluate(prob.P, prob.target, pi, prob.gamma, 0.0), prob.gamma)
    Q_F = q_from_v(prob.P, r, evaluate(prob.P, r, pi, prob.gamma, prob.tau), prob.gamma)
    k1, k2 = jax.random.split(key)
    d_pi = state_action_occupancy(prob.P, pi, prob.rho, prob.gamma).reshape(-1)
    d_star = state_action_occupancy(prob.P, pi_star, prob.rho, prob.gamma).reshape(-1)
    idx = jax.random.categorical(k1, jnp.log(d_pi), shape=(batch,))
    idx_star = jax.random.categorical(k2, jnp.log(d_star), shape=(batch,))
    phi = jnp.asarray(prob.phi).reshape(S * A, -1)  # (a float64 leaf may be NumPy: bilevel.precision)
    gx = prob.beta * x + lam / (1.0 - prob.gamma) * (phi[idx_star].mean(0) - phi[idx].mean(0))
    s, a = idx // A, idx % A
    weight = Q_L[s, a] + lam * (Q_F[s, a] - prob.tau * jnp.log(pi[s, a]))
    score = jax.nn.one_hot(a, A, dtype=pi.dtype) - pi[s]  # grad_{theta_s} log pi(a|s) for the softmax
    gt = -jnp.zeros((S, A), pi.dtype).at[s].add(weight[:, None] * score) / (batch * (1.0 - prob.gamma))
    return gx, gt


class SampledState(NamedTuple):
    x: jax.Array
    theta: jax.Array
    V: jax.Array
    count: jax.Array


def pbrl_sampled(lam: Any, step_size: Any, *, batch: int = 16, inner_iters: int = 10, init_scale: float = 1.0,
                 init_inner_iters: int = 200) -> Solver:
    """Stochastic PBRL: the update of :func:`pbrl` (value penalty) with the minibatch gradient
    :func:`sampled_gradient` (``batch`` state-action samples from each occupancy measure per step).

    Metrics at z_k (exact, for evaluation only): ``grad_norm_sq`` ||grad F_lambda||^2, ``upper_loss``,
    ``lower_gap``, ``penalized``.
    """
    check_positive("lam", lam)
    check_positive("step_size", step_size)
    batch = check_positive_int("batch", batch)
    inner_iters = check_positive_int("inner_iters", inner_iters)
    init_inner_iters = check_positive_int("init_inner_iters", init_inner_iters)
    check_positive("init_scale", init_scale)
    schedule = as_schedule(step_size)

    def init(prob: BilevelRL, key: jax.Array) -> SampledState:
        kx, kt = jax.random.split(key)
        dt = jnp.result_type(prob.P)
        x = init_scale * jax.random.normal(kx, (prob.dim_x,), dt)
        theta = init_scale * jax.random.normal(kt, (prob.n_states, prob.n_actions), dt)
        return SampledState(x, theta, optimal_values(prob, x, init_inner_iters), jnp.zeros((), jnp.int32))

    def exact(prob, x, theta, V):
        f = upper_objective(prob, x, softmax_policy(theta))
        pen = value_penalty(prob, x, theta, V)
        return f + lam * pen, (f, pen)

    def step(state: SampledState, prob: BilevelRL, key: jax.Array):
        V = optimal_values(prob, state.x, inner_iters, state.V)
        gx, gt = sampled_gradient(prob, lam, state.x, state.theta, V, key, batch)
        (F, (f, pen)), (ex, et) = jax.value_and_grad(exact, argnums=(1, 2), has_aux=True)(
            prob, state.x, state.theta, V)
        alpha = jnp.asarray(schedule(state.count), state.x.dtype)
        metrics = {"grad_norm_sq": jnp.sum(ex * ex) + jnp.sum(et * et), "upper_loss": f, "lower_gap": pen,
                   "penalized": F}
        return SampledState(state.x - alpha * gx, state.theta - alpha * gt, V, state.count + 1), metrics

    return Solver(init, step)


# --------------------------------------------------------------------------- reference solutions (Newton, float64)


def _full_logits(theta_r: jax.Array) -> jax.Array:
    """Reduced softmax parameters [S, A-1] -> logits [S, A] with the last action's logit fixed at 0."""
    return jnp.concatenate([theta_r, jnp.zeros(theta_r.shape[:-1] + (1,), theta_r.dtype)], axis=-1)


def reduced_logits(pi: jax.Array) -> jax.Array:
    """The reduced parameters theta_r[s, a] = log pi(a|s) - log pi(A-1|s) of a full-support policy."""
    logp = jnp.log(pi)
    return logp[:, :-1] - logp[:, -1:]


def _newton(fun, z0: jax.Array, iters: int, max_step: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Saddle-free Newton (|H| with an eigenvalue floor) inside a trust region: a step is accepted only if it
    decreases ``fun`` (then the radius doubles, up to ``max_step``), else the radius shrinks fourfold. One lax.scan;
    returns (z, ||grad fun(z)||, ||grad fun(z0)||)."""
    grad, hess = jax.grad(fun), jax.hessian(fun)

    def body(carry, _):
        z, fz, radius = carry
        g, H = grad(z), hess(z)
        w, U = jnp.linalg.eigh(0.5 * (H + H.T))
        w = jnp.maximum(jnp.abs(w), 1e-10 * jnp.max(jnp.abs(w)) + 1e-14)
        dz = U @ ((U.T @ g) / w)
        n = jnp.linalg.norm(dz)
        dz = dz * jnp.minimum(1.0, radius / jnp.maximum(n, 1e-300))
        z_new = z - dz
        f_new = fun(z_new)
        ok = f_new <= fz
        return (jnp.where(ok, z_new, z), jnp.where(ok, f_new, fz),
                jnp.where(ok, jnp.minimum(2.0 * radius, max_step), 0.25 * radius)), None

    (z, _, _), _ = jax.lax.scan(body, (z0, fun(z0), jnp.asarray(max_step, z0.dtype)), None, length=iters)
    return z, jnp.linalg.norm(grad(z)), jnp.linalg.norm(grad(z0))


def bilevel_solution(prob: BilevelRL, x0: jax.Array, *, vi_iters: int, newton_iters: int = 40,
                     max_step: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The bilevel solution near ``x0``: Newton on the hyperobjective phi(x) = f(x, pi*_x) (implicit function
    theorem via differentiation through converged soft value iteration). Returns (x*, pi*_{x*}, ||grad phi(x*)||)."""
    x, g, _ = _newton(lambda z: hyperobjective(prob, z, vi_iters), x0, newton_iters, max_step)
    return x, optimal_policy(prob, x, optimal_values(prob, x, vi_iters)), g


def penalized_solution(prob: BilevelRL, lam: Any, x0: jax.Array, pi0: jax.Array, *, vi_iters: int,
                       newton_iters: int = 40, max_step: float = 1.0,
                       with_start: bool = False) -> tuple[jax.Array, ...]:
    """A minimiser of F_lambda = f + lam * p (value penalty, exact V*) near (x0, pi0), by Newton in (x, reduced
    logits). Returns (x_lambda, pi_lambda, ||grad F_lambda||), and ||grad F_lambda(x0, pi0)|| when ``with_start``."""
    dx = x0.shape[0]
    S, A = pi0.shape

    def F(z):
        x, th = z[:dx], _full_logits(z[dx:].reshape(S, A - 1))
        return upper_objective(prob, x, softmax_policy(th)) + lam * value_penalty_exact(prob, x, th, vi_iters)

    z0 = jnp.concatenate([x0, reduced_logits(pi0).reshape(-1)])
    z, g, g0 = _newton(F, z0, newton_iters, max_step)
    out = (z[:dx], softmax_policy(_full_logits(z[dx:].reshape(S, A - 1))), g)
    return (*out, g0) if with_start else out
