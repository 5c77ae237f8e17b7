"""AIHF: one-stage reward learning from demonstrations and pairwise preferences on tabular toys (a contextual K-armed
bandit and a small discounted MDP), against preference-only RLHF and demonstration-only SFT / IRL.

Paper: C. Li, S. Zeng, Z. Liao, J. Li, D. Kang, A. Garcia, M. Hong, "Joint Demonstration and Preference Learning
Improves Policy Alignment with Human Feedback" (Alignment with Integrated Human Feedback, AIHF), arXiv:2406.06874
(2024). Its formulation, restated: one reward model r_theta defines the policy pi_theta as the optimum of the
entropy-regularised RL problem (lower level), and theta maximises a weighted sum of the demonstrations'
log-likelihood under pi_theta (maximum-entropy IRL) and the preferences' Bradley-Terry log-likelihood under r_theta
(upper level), in one stage rather than SFT -> reward model -> RL.

Here (tabular, solved exactly; the paper trains LLMs and MuJoCo policies with stochastic alternating updates):

* lower level: soft value iteration V <- beta log sum_a exp((r_theta + gamma P V) / beta) for a fixed number of
  iterations under ``lax.scan``; pi_theta(a|s) = exp((Q_theta(s, a) - V_theta(s)) / beta). With gamma = 0 it is the
  bandit's softmax(r_theta(x, .) / beta) (the KL-regularised optimum with a uniform reference);
* demonstrations (s, a) with s from the expert's normalised discounted occupancy and a ~ pi_{r*}(.|s):
  L_D(theta) = sum_i log pi_theta(a_i | s_i) (the MaxEnt / causal-entropy IRL likelihood: the dynamics' factors
  of a trajectory's likelihood do not depend on theta);
* preferences: pairs of segments (tau, tau') of length L from a common start state under a uniform behaviour
  policy (L = 1 on the bandit: two distinct arms of one context), label y ~ Bernoulli(sigma(R*(tau) - R*(tau')))
  with R the segment's undiscounted return; L_P(theta) = sum_j y_j log sigma(R_theta(tau_j) - R_theta(tau'_j))
  + (1 - y_j) log sigma(R_theta(tau'_j) - R_theta(tau_j)), where R_theta(tau) - R_theta(tau') = <r_theta, c_j>
  with c_j the difference of the segments' state-action counts;
* AIHF: theta_hat = argmax w_D L_D + w_P L_P - (lambda / 2) ||theta||^2 with w_D = w_P = 1 on summed
  log-likelihoods, i.e. the two averages weighted by the data ratio n_D / N and n_P / N (reconstructed: the paper
  leaves the weight a hyperparameter; the data-ratio weight makes theta_hat the joint MAP estimate). RLHF is
  (w_D, w_P) = (0, 1) followed by the soft-optimal policy of its reward; SFT is (1, 0): IRL from the
  demonstrations alone, whose tabular bandit solution is a smoothed behaviour cloning (log pi = r_hat - log Z).

Symbols -> arguments: P(s'|s, a) (``P[s, a, s']``), r_theta (``theta``, tabular ``[S, A]``), gamma (``gamma``),
beta (``beta``, the entropy weight), the start distribution (``rho``), the demonstrations (``states``, ``actions``,
``demo_weight``: 1 for a used datum, 0 for the unused tail of a buffer, or population probabilities), the
preferences (``diffs`` = c_j, ``labels`` = y_j in [0, 1], ``pref_weight``), (w_D, w_P) (``w_demo``, ``w_pref``),
lambda (``prior``). The joint loss is convex in theta (both log-likelihoods are concave in a linear reward), and it
is solved by damped Fisher scoring with analytic derivatives (:func:`fit_reward`; S A <= 16 parameters).

Facts derived here (tested): at theta = r* the population gradients of L_D (any state distribution) and of L_P
vanish, so r* (up to the invariances: a constant offset, potential shaping for L_D) is a fixed point of the joint
population likelihood for every weight; the soft suboptimality V*_soft(rho) - V^pi_soft(rho) is >= 0 and equals
E_{x ~ rho} beta KL(pi(.|x) || pi*(.|x)) when gamma = 0. In the infinite-data limit the joint estimator's error
covariance is (I_D + I_P)^{-1} (Fisher informations of the two sources, both per unit of the budget), below the
single-source I_P^{-1} / I_D^{-1}: at a fixed budget split, adding the other source helps when both are well
specified, and misaligned demonstrations (an expert of another reward) bias it instead.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp as np_logsumexp

from alignment.bandits import small_solve
from ratelab.errors import RatelabError
from ratelab.validate import check_in_range, check_positive, check_positive_int


class Data(NamedTuple):
    """One dataset (buffers; a weight of 0 leaves a datum out): demonstrations and preference pairs."""

    states: Any  # [n_d] int
    actions: Any  # [n_d] int
    demo_weight: Any  # [n_d]
    diffs: Any  # [n_p, S * A] count differences c_j
    labels: Any  # [n_p] y_j in [0, 1]
    pref_weight: Any  # [n_p]


# ----------------------------------------------------------------------------------------------- lower level


def _soft_backup(P: jax.Array, r: jax.Array, gamma: Any, beta: Any, q: jax.Array) -> jax.Array:
    """The soft Bellman map g(Q) = r + gamma P V(Q), V(Q)(s) = beta log sum_a exp(Q(s, a) / beta)."""
    v = beta * jax.scipy.special.logsumexp(q / beta, axis=-1)
    return r + gamma * jnp.einsum("sat,t->sa", P, v)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def soft_q(P: jax.Array, r: jax.Array, gamma: Any, beta: Any, iters: int) -> jax.Array:
    """Soft-optimal Q of reward ``r [S, A]``: ``iters`` steps of soft value iteration Q <- g(Q) from Q = r under
    ``lax.scan`` (a gamma-contraction; exact after one step when gamma = 0).

    Derivatives (any order, in every argument) are those of the exact fixed point Q = g(Q) (implicit function
    theorem), not of the truncated iteration: dQ = u + gamma P y with u = dg at fixed Q and
    (I - gamma P_pi) y = sum_a pi u, solved by unrolled elimination (I - gamma P_pi is strictly diagonally dominant,
    so no pivoting is needed; :func:`small_inverse`)."""
    q, _ = jax.lax.scan(lambda q, _: (_soft_backup(P, r, gamma, beta, q), None), r, None, length=iters)
    return q


@soft_q.defjvp
def _soft_q_jvp(iters, primals, tangents):
    P, r, gamma, beta = primals
    q = soft_q(P, r, gamma, beta, iters)
    _, u = jax.jvp(lambda *a: _soft_backup(*a, q), primals, tangents)
    pi = jax.nn.softmax(q / beta, axis=-1)
    y = small_inverse(_bellman(P, pi, gamma)) @ jnp.sum(pi * u, axis=-1)  # linear in u (transposable)
    return q, u + gamma * jnp.einsum("sat,t->sa", P, y)


def _bellman(P: jax.Array, pi: jax.Array, gamma: Any) -> jax.Array:
    return jnp.eye(P.shape[0], dtype=P.dtype) - gamma * jnp.einsum("sa,sat->st", pi, P)


def small_inverse(a: jax.Array) -> jax.Array:
    """Inverse of a small ``[d, d]`` matrix with nonzero elimination pivots (diagonally dominant here) by Gauss-Jordan
    unrolled over d (no LAPACK custom call)."""
    d = a.shape[-1]
    m = jnp.concatenate([a, jnp.eye(d, dtype=a.dtype)], axis=1)
    for i in range(d):
        row = m[i] / m[i, i]
        m = (m - m[:, i : i + 1] * row[None, :]).at[i].set(row)
    return m[:, d:]


def soft_value_iteration(P: jax.Array, r: jax.Array, gamma: Any, beta: Any, iters: int) -> tuple[jax.Array,
                                                                                               jax.Array]:
    """(Q, V) of :func:`soft_q`, V(s) = beta log sum_a exp(Q(s, a) / beta)."""
    check_positive_int("iters", iters)
    q = soft_q(P, r, gamma, beta, iters)
    return q, beta * jax.scipy.special.logsumexp(q / beta, axis=-1)


def soft_log_policy(P: jax.Array, r: jax.Array, gamma: Any, beta: Any, iters: int) -> jax.Array:
    """log pi_r(a|s) = (Q(s, a) - V(s)) / beta of the soft-optimal policy (normalised on the last axis)."""
    return jax.nn.log_softmax(soft_value_iteration(P, r, gamma, beta, iters)[0] / beta, axis=-1)


def policy_value(P: jax.Array, r: jax.Array, pi: jax.Array, gamma: Any, tau: Any) -> jax.Array:
    """Exact V^pi_tau: (I - gamma P_pi) V = sum_a pi (r - tau log pi), by unrolled elimination (LAPACK's custom call
    dominates the compile time of these tiny vmapped problems)."""
    logp = jnp.log(jnp.where(pi > 0, pi, 1.0))
    return small_solve(_bellman(P, pi, gamma), jnp.sum(pi * (r - tau * logp), axis=-1))


def soft_suboptimality(P: jax.Array, r_true: jax.Array, rho: jax.Array, log_pi: jax.Array, gamma: Any, beta: Any,
                       iters: int) -> jax.Array:
    """rho . (V*_beta - V^pi_beta) under the true reward: the entropy-regularised regret of the policy ``log_pi``."""
    _, v_star = soft_value_iteration(P, r_true, gamma, beta, iters)
    return rho @ (v_star - policy_value(P, r_true, jnp.exp(log_pi), gamma, beta))


# ----------------------------------------------------------------------------------------------- upper level


def bt_loglik(theta: jax.Array, diffs: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
    """L_P = sum_j w_j [y_j log sigma(z_j) + (1 - y_j) log sigma(-z_j)], z_j = <theta, c_j>."""
    z = diffs @ theta.reshape(-1)
    return jnp.sum(weight * (labels * jax.nn.log_sigmoid(z) + (1 - labels) * jax.nn.log_sigmoid(-z)))


def bt_grad(theta: jax.Array, diffs: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
    """Closed-form gradient of :func:`bt_loglik`: sum_j w_j (y_j - sigma(z_j)) c_j (shaped like ``theta``)."""
    z = diffs @ theta.reshape(-1)
    return ((weight * (labels - jax.nn.sigmoid(z))) @ diffs).reshape(theta.shape)


def demo_loglik(log_pi: jax.Array, states: jax.Array, actions: jax.Array, weight: jax.Array) -> jax.Array:
    """L_D = sum_i w_i log pi(a_i | s_i)."""
    return jnp.sum(weight * log_pi[states, actions])


def joint_loss(theta: jax.Array, data: Data, P: jax.Array, gamma: Any, beta: Any, iters: int, w_demo: Any,
               w_pref: Any, prior: Any) -> jax.Array:
    """-(w_D L_D + w_P L_P) + (prior / 2) ||theta||^2: AIHF at (1, 1), RLHF's reward model at (0, 1), SFT / IRL at
    (1, 0)."""
    log_pi = soft_log_policy(P, theta, gamma, beta, iters)
    ll = (w_demo * demo_loglik(log_pi, data.states, data.actions, data.demo_weight)
          + w_pref * bt_loglik(theta, data.diffs, data.labels, data.pref_weight))
    return -ll + 0.5 * prior * jnp.sum(theta**2)


def soft_q_jacobian(P: jax.Array, q: jax.Array, gamma: Any, beta: Any) -> jax.Array:
    """dQ(s, a) / dr(s', a') = 1{(s, a) = (s', a')} + gamma sum_t P(t|s, a) [(I - gamma P_pi)^{-1}](t, s') pi(a'|s')
    at the soft fixed point ``q`` (pi = softmax(q / beta)); shape ``[S, A, S, A]``."""
    S, A = q.shape
    pi = jax.nn.softmax(q / beta, axis=-1)
    m = small_inverse(_bellman(P, pi, gamma))
    j = gamma * jnp.einsum("sat,tu,ub->saub", P, m, pi)
    return j + jnp.eye(S * A, dtype=q.dtype).reshape(S, A, S, A)


def demo_counts(data: Data, n_states: int, n_actions: int) -> jax.Array:
    """N[s, a] = sum_i w_i 1{s_i = s, a_i = a}."""
    return jnp.zeros((n_states, n_actions), data.demo_weight.dtype).at[data.states, data.actions].add(
        data.demo_weight)


def demo_grad_fisher(theta: jax.Array, counts: jax.Array, P: jax.Array, gamma: Any, beta: Any,
                     iters: int) -> tuple[jax.Array, jax.Array]:
    """Gradient of L_D in theta (``[S, A]``) and its Fisher information ``[S A, S A]`` (the expected negative
    Hessian of the empirical state counts; the exact negative Hessian when gamma = 0):
    grad = sum_{s, a} (N[s, a] - n_s pi(a|s)) dz(s, a), F = sum_s n_s dz_s^T (diag pi_s - pi_s pi_s^T) dz_s, with
    z = Q / beta the policy's logits and dz = dQ / dr / beta."""
    S, A = theta.shape
    q = soft_q(P, theta, gamma, beta, iters)
    dz = soft_q_jacobian(P, q, gamma, beta).reshape(S, A, S * A) / beta
    grad, fisher = _grad_fisher_from(counts, jax.nn.softmax(q / beta, axis=-1), dz)
    return grad.reshape(S, A), fisher


def _grad_fisher_from(counts: jax.Array, pi: jax.Array, dz: jax.Array) -> tuple[jax.Array, jax.Array]:
    n_s = counts.sum(-1)
    grad = jnp.einsum("sa,sak->k", counts - n_s[:, None] * pi, dz)
    mean = jnp.einsum("sa,sak->sk", pi, dz)
    fisher = jnp.einsum("s,sa,sak,sal->kl", n_s, pi, dz, dz) - jnp.einsum("s,sk,sl->kl", n_s, mean, mean)
    return grad, fisher


def fit_reward(data: Data, P: jax.Array, gamma: Any, beta: Any, iters: int, w_demo: Any, w_pref: Any, prior: Any,
               newton_iters: int = 12, halvings: int = 6) -> tuple[jax.Array, jax.Array]:
    """theta_hat = argmin :func:`joint_loss` (convex) by Fisher scoring from theta = 0 (Newton's method with the
    demonstrations' Fisher information in place of their Hessian: exact Newton when gamma = 0; the same fixed point,
    the gradient being exact), taking the best of the steps t d, t = 1, 1/2, ..., 2^-halvings (kept only when it
    decreases the loss). Derivatives are analytic (:func:`demo_grad_fisher`, :func:`bt_grad`).

    Returns (theta_hat ``[S, A]``, its soft-optimal Q): one soft value iteration per candidate step, none besides."""
    S, A = P.shape[:2]
    if S * A > 16:
        raise RatelabError(f"fit_reward solves on S * A <= 16 parameters, got S = {S}, A = {A}")
    check_positive_int("newton_iters", newton_iters)
    counts = demo_counts(data, S, A)
    ts = 2.0 ** -jnp.arange(halvings + 1, dtype=P.dtype)
    eye = jnp.eye(S * A, dtype=P.dtype)

    def loss_and_q(theta):
        q = soft_q(P, theta, gamma, beta, iters)
        ll = (w_demo * demo_loglik(jax.nn.log_softmax(q / beta, axis=-1), data.states, data.actions,
                                   data.demo_weight)
              + w_pref * bt_loglik(theta, data.diffs, data.labels, data.pref_weight))
        return -ll + 0.5 * prior * jnp.sum(theta**2), q

    def step(carry, _):
        theta, q, value = carry
        pi = jax.nn.softmax(q / beta, axis=-1)
        dz = soft_q_jacobian(P, q, gamma, beta).reshape(S, A, S * A) / beta
        g_d, f_d = _grad_fisher_from(counts, pi, dz)
        sig = jax.nn.sigmoid(data.diffs @ theta.reshape(-1))
        h_p = jnp.einsum("j,jk,jl->kl", data.pref_weight * sig * (1 - sig), data.diffs, data.diffs)
        g = -(w_demo * g_d.reshape(S, A) + w_pref * bt_grad(theta, data.diffs, data.labels, data.pref_weight))
        g = g + prior * theta
        d = small_solve(w_demo * f_d + w_pref * h_p + prior * eye, -g.reshape(-1)).reshape(S, A)
        cands = theta + ts[:, None, None] * d
        values, qs = jax.vmap(loss_and_q)(cands)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        best = jnp.argmin(values)
        take = values[best] <= value
        return (jnp.where(take, cands[best], theta), jnp.where(take, qs[best], q),
                jnp.where(take, values[best], value)), None

    theta0 = jnp.zeros((S, A), P.dtype)
    value0, q0 = loss_and_q(theta0)
    (theta, q, _), _ = jax.lax.scan(step, (theta0, q0, value0), None, length=newton_iters)
    return theta, q


METHODS = {"aihf": (1.0, 1.0), "rlhf": (0.0, 1.0), "sft": (1.0, 0.0)}


def compare(data: Data, P: jax.Array, r_true: jax.Array, rho: jax.Array, gamma: Any, beta: Any, iters: int,
            prior: Any, newton_iters: int = 12) -> dict[str, jax.Array]:
    """AIHF, RLHF and SFT on one dataset: each method's soft suboptimality under ``r_true`` (``subopt_<method>``)."""
    w = jnp.asarray(list(METHODS.values()), P.dtype)
    _, v_star = soft_value_iteration(P, r_true, gamma, beta, iters)

    def one(wd, wp):
        _, q = fit_reward(data, P, gamma, beta, iters, wd, wp, prior, newton_iters)
        pi = jax.nn.softmax(q / beta, axis=-1)
        return rho @ (v_star - policy_value(P, r_true, pi, gamma, beta))

    soft = jax.vmap(one)(w[:, 0], w[:, 1])
    return {f"subopt_{name}": soft[i] for i, name in enumerate(METHODS)}


# ----------------------------------------------------------------------------------------------- instances (NumPy)


class Instance(NamedTuple):
    P: np.ndarray  # [S, A, S]
    r: np.ndarray  # [S, A] true reward
    r_other: np.ndarray  # [S, A] another reward of the same law (misaligned controls)
    rho: np.ndarray  # [S]


def make_instance(rng: np.random.Generator, n_states: int, n_actions: int, kind: str, offset_scale: float = 3.0,
                  dirichlet: float = 0.5) -> Instance:
    """A contextual bandit (``kind="bandit"``: contexts uniform, P irrelevant) or an MDP (``"mdp"``: P(.|s, a) ~
    Dirichlet(dirichlet)), with r*(s, a) = c(s) + z(s, a), z ~ N(0, 1): c(s) ~ U(-offset_scale, offset_scale) per
    context on the bandit (both data models and the soft policy are invariant to it), one global c on the MDP (a
    state-dependent c changes an MDP's optimal policy). The expert's best action differs by state by construction."""
    S, A = n_states, n_actions
    if kind == "bandit":
        P = np.full((S, A, S), 1.0 / S)
        c = rng.uniform(-offset_scale, offset_scale, (S, 1))
    elif kind == "mdp":
        P = rng.dirichlet(np.full(S, dirichlet), (S, A))
        c = np.full((S, 1), rng.uniform(-offset_scale, offset_scale))
    else:
        raise RatelabError(f"kind must be 'bandit' or 'mdp', got {kind!r}")
    r = c + rng.standard_normal((S, A))
    r_other = c + rng.standard_normal((S, A))
    return Instance(P, r, r_other, np.full(S, 1.0 / S))


def np_soft_policy(P: np.ndarray, r: np.ndarray, gamma: float, beta: float, iters: int) -> np.ndarray:
    """NumPy twin of :func:`soft_log_policy` (probabilities), for drawing data outside the compiled study."""
    v = np.zeros(r.shape[0])
    for _ in range(iters):
        v = beta * np_logsumexp((r + gamma * P @ v) / beta, axis=-1)
    q = (r + gamma * P @ v) / beta
    return np.exp(q - np_logsumexp(q, axis=-1, keepdims=True))


def occupancy(P: np.ndarray, pi: np.ndarray, rho: np.ndarray, gamma: float) -> np.ndarray:
    """Normalised discounted state occupancy (1 - gamma) rho^T (I - gamma P_pi)^{-1} (rho when gamma = 0)."""
    p_pi = np.einsum("sa,sat->st", pi, P)
    d = (1 - gamma) * np.linalg.solve((np.eye(P.shape[0]) - gamma * p_pi).T, rho)
    return np.clip(d, 0, None) / np.clip(d, 0, None).sum()


def sample_data(rng: np.random.Generator, inst: Instance, n: int, gamma: float, beta: float, segment: int,
                iters: int, demo_reward: np.ndarray | None = None,
                pref_reward: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Buffers of ``n`` demonstrations and ``n`` preference pairs (the first n_D / n_P are used at a split).

    Demonstrations: s from the occupancy of the soft-optimal policy of ``demo_reward`` (default the true reward),
    a from that policy. Preferences: two segments of ``segment`` steps from one start state s0 ~ rho under a uniform
    behaviour policy, their first actions distinct; label ~ Bernoulli(sigma(R(tau) - R(tau'))) with R the return
    under ``pref_reward`` (default the true reward). Returns (states, actions, diffs, labels)."""
    check_positive_int("n", n)
    check_positive_int("segment", segment)
    S, A = inst.r.shape
    r_d = inst.r if demo_reward is None else demo_reward
    r_p = inst.r if pref_reward is None else pref_reward
    pi_d = np_soft_policy(inst.P, r_d, gamma, beta, iters)
    d = occupancy(inst.P, pi_d, inst.rho, gamma)
    states = rng.choice(S, size=n, p=d)
    u = rng.random(n)
    actions = np.minimum((np.cumsum(pi_d[states], axis=1) < u[:, None]).sum(1), A - 1)
    s0 = rng.choice(S, size=n, p=inst.rho)
    a1 = rng.integers(0, A, n)
    a2 = (a1 + 1 + rng.integers(0, A - 1, n)) % A
    counts = np.zeros((2, n, S * A))
    for k, a0 in enumerate((a1, a2)):
        s, a = s0, a0
        for t in range(segment):
            if t > 0:
                a = rng.integers(0, A, n)
            np.add.at(counts[k], (np.arange(n), s * A + a), 1.0)
            if t + 1 < segment:
                cdf = np.cumsum(inst.P[s, a], axis=1)
                s = np.minimum((cdf < rng.random(n)[:, None]).sum(1), S - 1)
    diffs = counts[0] - counts[1]
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-(diffs @ r_p.reshape(-1))))).astype(float)
    return states, actions, diffs, labels


def split_weights(n: int, fractions: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 weights ``[len(fractions), n]`` of the demonstration and preference buffers: at demo fraction f the first
    round(f budget) demonstrations and the first budget - round(f budget) preferences (common random numbers across
    splits)."""
    check_positive_int("budget", budget)
    if budget > n:
        raise RatelabError(f"budget must be <= the buffer size {n}, got {budget}")
    for f in np.atleast_1d(fractions):
        check_in_range("fraction", float(f), 0.0, 1.0)
    n_d = np.rint(np.asarray(fractions) * budget).astype(int)
    idx = np.arange(n)
    return (idx[None] < n_d[:, None]).astype(float), (idx[None] < (budget - n_d)[:, None]).astype(float)


def check_study(n_states: int, n_actions: int, gamma: float, beta: float) -> None:
    """Validate a tabular study's sizes before any compute."""
    check_positive_int("n_states", n_states)
    check_positive_int("n_actions", n_actions)
    if n_actions < 2:
        raise RatelabError(f"n_actions must be >= 2 (preferences compare distinct actions), got {n_actions}")
    if n_states * n_actions > 16:
        raise RatelabError(f"n_states * n_actions must be <= 16 (exact Newton fit), got {n_states * n_actions}")
    check_in_range("gamma", gamma, 0.0, 1.0, closed="left")
    check_positive("beta", beta)
