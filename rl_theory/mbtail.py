"""Adversarial imitation with unknown transitions: MB-TAIL and the OAL baseline, on tabular episodic MDPs.

Papers
------
* T. Xu, Z. Li, Y. Yu, Z.-Q. Luo, "Provably Efficient Adversarial Imitation Learning with Unknown Transitions",
  UAI 2023, arXiv:2306.06563 (MB-TAIL), building on T. Xu, Z. Li, Y. Yu, Z.-Q. Luo, "Understanding Adversarial
  Imitation Learning in Small Sample Regime: A Stage-coupled Analysis", arXiv:2208.01899 (the TAIL estimator).
  MB-TAIL (i) estimates the expert's state-action distribution with the transition-aware estimator: with the expert
  data split into D1 / D2 and the event E_h = "by step h the trajectory visited a state that D1 never shows at that
  step", d_hat_h(s, a) = P^{pi_BC(D1)}(not E_h, s_h = s, a_h = a) [Monte Carlo from BC rollouts in the environment]
  + P_hat_{D2}(E_h, s_h = s, a_h = a); (ii) collects reward-free exploration episodes with RF-Express
  (P. Menard, O. D. Domingues, A. Jonsson, E. Kaufmann, E. Leurent, M. Valko, "Fast Active Learning for Pure
  Exploration in Reinforcement Learning", ICML 2021, Algorithm 1) to build the empirical model P_hat; (iii) solves
  min_pi max_{w in [-1, 1]^{H x S x A}} sum_h <w_h, d_hat_h - d^pi_{P_hat, h}> in the model: the reward player runs
  multiplicative weights (Hedge between -1 and +1 per coordinate, w_t = tanh(eta sum_{tau < t} g_tau)), the policy
  player best-responds by value iteration; the output is the uniform mixture of the T policies.
* L. Shani, T. Zahavy, S. Mannor, "Online Apprenticeship Learning", AAAI 2022, arXiv:2102.06924 (OAL): every
  episode plays the current policy in the environment (one episode of interaction), updates the empirical model,
  evaluates the policy optimistically (reward w_k plus a count-based bonus in P_hat_k), takes a mirror-descent
  (exponentiated-Q) policy step and an online projected-gradient step on the reward against the empirical expert
  occupancy (the plain frequencies of D_E). The output is the uniform mixture of the K policies.

Symbols -> arguments: N (expert trajectories: ``expert_states``/``expert_actions``), K (interaction episodes:
``episodes``; MB-TAIL spends ``bc_fraction`` of them on BC rollouts, the rest on RF-Express), T (``iterations``),
eta (``eta``), delta (``delta``), OAL's step sizes (``eta_policy``, ``eta_reward``) and bonus scale (``bonus``).
Everything is one ``jit``-able function of a key, ``vmap``-able over seeds and (masked) budgets K.
The mixture policy's return is the average of its components' returns, so its gap is evaluated exactly as the
average of their exact gaps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from rl_theory.imitation import behavior_cloning, counts
from rl_theory.tabular import TabularMDP, greedy_policy, occupancy, policy_values, rollout_transitions


def empirical_model(n_sas: jax.Array, eps: float = 0.0) -> jax.Array:
    """P_hat(s'|s, a) = n(s, a, s') / (n(s, a) + ``eps``); uniform over states where (s, a) was never tried."""
    tot = n_sas.sum(-1, keepdims=True)
    return jnp.where(tot > 0, n_sas / (tot + eps if eps else jnp.maximum(tot, 1.0)), 1.0 / n_sas.shape[-1])


def transition_counts(states: jax.Array, actions: jax.Array, next_states: jax.Array, mask: jax.Array,
                      n_states: int, n_actions: int) -> jax.Array:
    """n(s, a, s') over all steps of the (masked) trajectories ``[n, H]``."""
    w = jnp.broadcast_to(mask[:, None], states.shape).astype(jnp.result_type(float))
    out = jnp.zeros((n_states, n_actions, n_states), w.dtype)
    return out.at[states, actions, next_states].add(w)


def _episode_keys(key: jax.Array, n: int) -> jax.Array:
    """Episode k's key is fold_in(key, k): a run masked to K of K_max episodes equals the run of K episodes."""
    return jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n))


def _rollout_full(mdp: TabularMDP, pi: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One episode's states, actions and next states."""
    states, actions, _, next_states = rollout_transitions(mdp, pi, key)
    return states, actions, next_states


def tail_estimator(mdp: TabularMDP, expert_states: jax.Array, expert_actions: jax.Array, key: jax.Array,
                   n_rollouts: jax.Array, n_rollouts_max: int) -> tuple[jax.Array, jax.Array]:
    """The transition-aware estimate d_hat[h, s, a] of the expert's occupancy (see the module docstring) and the
    transition counts of the ``n_rollouts`` BC rollouts (interaction that MB-TAIL also learns its model from)."""
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    N = expert_states.shape[0]
    n1 = N // 2
    ones1 = jnp.ones(n1, bool)
    seen = counts(expert_states[:n1], expert_actions[:n1], ones1, S, A).sum(-1) > 0  # [H, S]
    pi_bc = behavior_cloning(expert_states[:n1], expert_actions[:n1], ones1, S, A)

    def left(states):  # [n, H] -> E_h indicator [n, H]
        off = ~seen[jnp.arange(H)[None], states]
        return jnp.cumsum(off, axis=1) > 0

    st, ac, nx = jax.vmap(lambda k: _rollout_full(mdp, pi_bc, k))(_episode_keys(key, n_rollouts_max))
    mask = jnp.arange(n_rollouts_max) < n_rollouts
    stay = (~left(st)) & mask[:, None]
    h_idx = jnp.broadcast_to(jnp.arange(H), st.shape)
    first = jnp.zeros((H, S, A)).at[h_idx, st, ac].add(stay / jnp.maximum(n_rollouts, 1))
    d2s, d2a = expert_states[n1:], expert_actions[n1:]
    out = left(d2s)
    second = jnp.zeros((H, S, A)).at[jnp.broadcast_to(jnp.arange(H), d2s.shape), d2s, d2a].add(out / (N - n1))
    return first + second, transition_counts(st, ac, nx, mask, S, A)


def rf_express_bonus(n_hsas: jax.Array, delta: float, eps: float = 0.0, horizon: int | None = None) -> jax.Array:
    """RF-Express's W[h, s, a] (Menard et al. 2021, Algorithm 1) from per-step counts ``n_hsas[h, s, a, s']``:

        W_h(s, a) = min(H, 15 H^2 beta(n_h(s, a), delta) / n_h(s, a)
                           + (1 + 1/H) sum_s' P_hat_h(s'|s, a) max_a' W_{h+1}(s', a')),   W_H = 0,

    beta(n, delta) = log(3 S A H / delta) + S log(8 e (n + 1)), and W_h(s, a) = H where n_h(s, a) = 0; P_hat_h is
    the empirical transition of step h (:func:`empirical_model` with ``eps``). (With few episodes the first term
    exceeds H everywhere, so W = H and the exploration policy breaks its ties at random: uniform exploration, as in
    the paper.) Time-homogeneous counts ``[S, A, S]``, shared by every step, need ``horizon`` = H; they give what
    the same table repeated H times gives, with the model and the first term computed once."""
    homogeneous = n_hsas.ndim == 3
    if homogeneous and horizon is None:
        raise RatelabError("horizon must be given with time-homogeneous counts n[s, a, s'] (shape [S, A, S])")
    H = horizon if homogeneous else n_hsas.shape[0]
    S, A = n_hsas.shape[-3:-1]
    n = n_hsas.sum(-1)  # [(H,) S, A]
    p_hat = empirical_model(n_hsas, eps)  # [(H,) S, A, S]
    beta = jnp.log(3 * S * A * H / delta) + S * jnp.log(8 * jnp.e * (n + 1))
    first = 15 * H**2 * beta / jnp.maximum(n, 1)

    def step(w_next, first_h, p_h, n_h):
        w = jnp.minimum(float(H), first_h + (1 + 1 / H) * p_h @ w_next.max(-1))
        w = jnp.where(n_h > 0, w, float(H))
        return w, w

    w_end = jnp.zeros((S, A), n_hsas.dtype)
    if homogeneous:
        _, ws = jax.lax.scan(lambda w, _: step(w, first, p_hat, n), w_end, None, length=H, reverse=True)
    else:
        _, ws = jax.lax.scan(lambda w, xs: step(w, *xs), w_end, (first, p_hat, n), reverse=True)
    return ws


def greedy_random_ties(w: jax.Array, key: jax.Array) -> jax.Array:
    """The deterministic policy pi_h(s) = argmax_a w[h, s, a] as one-hot ``[H, S, A]``, each tie broken uniformly
    at random (a fresh draw per (h, s))."""
    u = jax.random.uniform(key, w.shape, w.dtype)
    best = w >= w.max(-1, keepdims=True)
    return jax.nn.one_hot(jnp.argmax(jnp.where(best, u, -1.0), axis=-1), w.shape[-1], dtype=w.dtype)


def rf_express(mdp: TabularMDP, key: jax.Array, episodes: jax.Array, episodes_max: int,
               delta: float = 0.1) -> jax.Array:
    """``episodes`` (<= ``episodes_max``, may be traced) of RF-Express (Menard et al. 2021, Algorithm 1): each plays
    the greedy policy of W (:func:`rf_express_bonus` on the per-step counts n_h(s, a, s'), ties at random) and adds
    its transitions to the counts. Returns the counts n(s, a, s') summed over the steps (the model of a
    time-homogeneous MDP uses every transition)."""
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon

    def body(n_hsas, inputs):
        k, key_k = inputs
        k_tie, k_roll = jax.random.split(key_k)
        pi = greedy_random_ties(rf_express_bonus(n_hsas, delta), k_tie)
        st, ac, nx = _rollout_full(mdp, pi, k_roll)
        add = jnp.zeros_like(n_hsas).at[jnp.arange(H), st, ac, nx].add(1.0)
        return n_hsas + jnp.where(k < episodes, add, 0.0), None

    n0 = jnp.zeros((H, S, A, S), mdp.P.dtype)
    n_hsas, _ = jax.lax.scan(body, n0, (jnp.arange(episodes_max), _episode_keys(key, episodes_max)))
    return n_hsas.sum(0)


def ail_in_model(mdp: TabularMDP, p_hat: jax.Array, d_hat: jax.Array, iterations: int,
                 eta: Any) -> jax.Array:
    """min_pi max_w <w, d_hat - d^pi_{P_hat}> in the model: Hedge on w in [-1, 1] (w_t = tanh(eta_t G_t), G_t the
    sum of past gradients d_hat - d^{pi_tau}), value-iteration best responses. Returns the T policies [T, H, S, A].
    ``eta``: a float or an optax schedule of t = 0, ..., T - 1."""
    eta_s = as_schedule(eta)
    model = TabularMDP(p_hat, mdp.r, mdp.rho, mdp.horizon)

    def body(g_sum, t):
        pi = greedy_policy(p_hat, jnp.tanh(eta_s(t) * g_sum))
        g = d_hat - occupancy(model, pi)
        return g_sum + g, pi

    _, pis = jax.lax.scan(body, jnp.zeros_like(d_hat), jnp.arange(iterations))
    return pis


def mixture_gap(mdp: TabularMDP, pi_expert: jax.Array, pis: jax.Array) -> jax.Array:
    """J(pi_E) - J(uniform mixture of ``pis``) = the average of the components' exact gaps."""
    j_e = mdp.rho @ policy_values(mdp, pi_expert)[0]
    return j_e - jnp.mean(jax.vmap(lambda p: mdp.rho @ policy_values(mdp, p)[0])(pis))


def mb_tail(mdp: TabularMDP, pi_expert: jax.Array, expert_states: jax.Array, expert_actions: jax.Array,
            key: jax.Array, episodes: jax.Array, episodes_max: int, *, bc_fraction: float = 0.5,
            iterations: int = 100, eta: Any = 0.5, delta: float = 0.1) -> jax.Array:
    """MB-TAIL's exact gap with an interaction budget of ``episodes``: ``bc_fraction`` of it for the BC rollouts of
    the TAIL estimator, the rest for RF-Express; the model uses every collected transition."""
    k_bc, k_rf = jax.random.split(key)
    n_bc = jnp.floor(bc_fraction * episodes).astype(jnp.int32)
    n_bc_max = int(bc_fraction * episodes_max)
    d_hat, n_bc_sas = tail_estimator(mdp, expert_states, expert_actions, k_bc, n_bc, max(n_bc_max, 1))
    n_rf_sas = rf_express(mdp, k_rf, episodes - n_bc, episodes_max - n_bc_max)
    pis = ail_in_model(mdp, empirical_model(n_bc_sas + n_rf_sas), d_hat, iterations, eta)
    return mixture_gap(mdp, pi_expert, pis)


def oal(mdp: TabularMDP, pi_expert: jax.Array, expert_states: jax.Array, expert_actions: jax.Array,
        key: jax.Array, episodes: jax.Array, episodes_max: int, *, eta_policy: Any = None,
        eta_reward: Any = None, bonus: float = 1.0, delta: float = 0.1) -> jax.Array:
    """OAL's exact gap after ``episodes`` = K episodes (the mixture of the policies played).

    Step sizes default to the online-mirror-descent rates for a horizon-H problem run for K episodes (our choice,
    not read off the paper): eta_policy = sqrt(2 log|A| / (H^2 K)), eta_reward = sqrt(1 / (H K)); the bonus is
    ``bonus`` * H sqrt(S L / max(n, 1)) capped at H, L = log(S A H K_max / delta) (UCRL-style). A given step is a
    float or an optax schedule of the episode k = 0, 1, ..."""
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    k_float = jnp.maximum(episodes, 1).astype(mdp.P.dtype)
    eta_policy = jnp.sqrt(2 * jnp.log(A) / (H**2 * k_float)) if eta_policy is None else eta_policy
    eta_reward = jnp.sqrt(1.0 / (H * k_float)) if eta_reward is None else eta_reward
    N = expert_states.shape[0]
    d_expert = counts(expert_states, expert_actions, jnp.ones(N, bool), S, A) / N
    log_term = jnp.log(S * A * H * jnp.maximum(episodes_max, 2) / delta)
    j_expert = mdp.rho @ policy_values(mdp, pi_expert)[0]

    def body(carry, inputs):
        pi, w, n_sas = carry
        k, key_k = inputs
        active = k < episodes
        st, ac, nx = _rollout_full(mdp, pi, key_k)
        n_new = n_sas + jnp.where(active, jnp.zeros_like(n_sas).at[st, ac, nx].add(1.0), 0.0)
        p_hat = empirical_model(n_new)
        model = TabularMDP(p_hat, mdp.r, mdp.rho, H)
        n = n_new.sum(-1)
        b = jnp.minimum(float(H), bonus * H * jnp.sqrt(S * log_term / jnp.maximum(n, 1.0)))
        vals = policy_values(model, pi, w + b[None])

        q = w + b[None] + jnp.einsum("sat,ht->hsa", p_hat, vals[1:])
        eta_p = eta_policy(k) if callable(eta_policy) else eta_policy
        eta_r = eta_reward(k) if callable(eta_reward) else eta_reward
        logits = jnp.log(jnp.maximum(pi, 1e-300)) + eta_p * q
        pi_next = jax.nn.softmax(logits, axis=-1)
        w_next = jnp.clip(w + eta_r * (d_expert - occupancy(model, pi)), -1.0, 1.0)
        gap_k = j_expert - mdp.rho @ policy_values(mdp, pi)[0]
        new = (jnp.where(active, pi_next, pi), jnp.where(active, w_next, w), n_new)
        return new, jnp.where(active, gap_k, 0.0)

    pi0 = jnp.full((H, S, A), 1.0 / A, mdp.P.dtype)
    init = (pi0, jnp.zeros((H, S, A), mdp.P.dtype), jnp.zeros((S, A, S), mdp.P.dtype))
    _, gaps = jax.lax.scan(body, init, (jnp.arange(episodes_max), _episode_keys(key, episodes_max)))
    return gaps.sum() / jnp.maximum(episodes, 1)


def compare_study(mdps: TabularMDP, pi_experts: jax.Array, n_expert: int, budgets: jax.Array, keys: jax.Array,
                  episodes_max: int, mbtail_kw: dict[str, Any] | None = None,
                  oal_kw: dict[str, Any] | None = None) -> dict[str, jax.Array]:
    """MB-TAIL's and OAL's exact gaps for every (seed, budget K): ``[seeds, len(budgets)]`` each; both use the same
    ``n_expert`` expert trajectories per seed. ``mdps`` / ``pi_experts`` carry one instance per seed (leading axis
    ``seeds``). Vmapped over seeds and budgets (masked up to ``episodes_max``)."""
    from rl_theory.tabular import sample_trajectories

    mbtail_kw, oal_kw = mbtail_kw or {}, oal_kw or {}

    def one_seed(mdp, pi_expert, key):
        k_e, k_run = jax.random.split(key)
        es, ea = sample_trajectories(mdp, pi_expert, k_e, n_expert)

        def one(budget, j):
            kk = jax.random.fold_in(k_run, j)
            g_m = mb_tail(mdp, pi_expert, es, ea, kk, budget, episodes_max, **mbtail_kw)
            g_o = oal(mdp, pi_expert, es, ea, jax.random.fold_in(kk, 1), budget, episodes_max, **oal_kw)
            return g_m, g_o

        g_m, g_o = jax.vmap(one)(budgets, jnp.arange(budgets.shape[0]))
        return {"gap_mbtail": g_m, "gap_oal": g_o}

    return jax.vmap(one_seed)(mdps, pi_experts, keys)
