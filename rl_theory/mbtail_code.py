"""MB-TAIL as the authors' published code runs it, beside :mod:`rl_theory.mbtail` (which follows the paper).

T. Xu, Z. Li, Y. Yu, Z.-Q. Luo, "Provably Efficient Adversarial Imitation Learning with Unknown Transitions",
UAI 2023, arXiv:2306.06563. The authors' experiments (their ``tabular-ail`` repository: ``mbtail/main.py``,
``mbtail/rf_express.py``, ``estimators/estimator.py``, ``newail/main.py``, ``bc/main.py``) make choices the paper
leaves open or states differently; this module implements those choices (written here from reading the code, so
that ``benchmarks/mbtail_reset_cliff.py`` can time the same algorithm against a NumPy port of their loop):

* **Estimator** (``UnknownTransitionFineGrainedEstimator``): the expert data D is split into D1 (the first
  ceil(N/2) trajectories) and D2. A step h of a trajectory is "covered" when its whole prefix
  (s_0, a_0, ..., s_h, a_h) is the prefix of some trajectory of D1. d_hat_h(s, a) = (covered steps at (s, a) among
  the BC rollouts) / #rollouts + (uncovered steps at (s, a) in D2) / |D2|. :mod:`rl_theory.mbtail` uses the
  state-level event "some state visited by step h is unseen in D1 at its step" instead.
* **BC policy** (``TableBC``): counts over D1's first floor(N/2) trajectories; unseen (s, h) keep the random
  initial policy (uniform draws normalised over actions), not the uniform one.
* **Budget**: of K interaction episodes, floor(0.2 K) are BC rollouts and floor(0.8 K) RF-Express episodes; only the
  RF-Express episodes build the model, and the model's initial distribution is their empirical first-state
  distribution.
* **RF-Express** (``RFExpress.run``): time-homogeneous counts C(s, a), T(s, a, s'), P_hat = T / (C + 1e-8) (uniform
  where C = 0); after each episode W_h(s, a) = min(H, 15 H^2 beta(C(s, a)) / C(s, a) + (1 + 1/H) P_hat(s, a) .
  max_a' W_{h+1}(., a')) with beta(n) = log(3 S A H / delta) + S log(8 e (n + 1)), and the next policy is greedy in
  W with ties broken at random; the first episode plays action 0 everywhere.
* **Reward player** (``TableNewAIL._multiplicative_weights``): a reward c_h(s, .) on the action simplex per (s, h),
  initialised at normalised uniform draws, updated c <- c exp(-eta_t g_t) / normaliser with the gradient
  g_t = d^{pi_t}_{P_hat} - d_hat and the adaptive step eta_t = clip(sqrt(2 H S A / sum_{tau <= t} ||g_tau||^2),
  1e-8, 1e8); the policy player is value iteration in the model (ties to the lowest action), T = 500 iterations.
* **Output**: the Markov policy of the average true occupancy of the T policies (uniform where a state's
  probability is below 1e-8), evaluated exactly in the true MDP.

Symbols -> arguments: N (``expert_states`` / ``expert_actions`` rows), K (``episodes``, masked up to the static
``episodes_max``), T (``iterations``), delta (``delta``), the 0.2 K BC share (``bc_fraction``). Layout as in
:mod:`rl_theory.tabular`: policies, rewards and occupancies are ``[H, S, A]`` (the code's are ``[S, A, H]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ratelab.validate import check_in_range, check_positive_int, check_shape
from rl_theory.imitation import counts, policy_from_counts
from rl_theory.mbtail import _episode_keys, _rollout_full, empirical_model, greedy_random_ties, rf_express_bonus
from rl_theory.tabular import TabularMDP, greedy_policy, imitation_gap, occupancy

P_EPS = 1e-8  # RFExpress.run: P = T / (C + 1e-8)
STEP_CLIP = (1e-8, 1e8)  # TableNewAIL: np.clip(step_size, a_min=EPS, a_max=INF)


def prefix_covered(states: jax.Array, actions: jax.Array, ref_states: jax.Array, ref_actions: jax.Array) -> jax.Array:
    """``[n, H]``: whether trajectory i's prefix (s_0, a_0, ..., s_h, a_h) is the prefix of a reference trajectory."""
    same = (states[:, None] == ref_states[None]) & (actions[:, None] == ref_actions[None])  # [n, m, H]
    return jnp.any(jnp.cumsum(~same, axis=-1) == 0, axis=1)


def table_bc(states: jax.Array, actions: jax.Array, n_states: int, n_actions: int, key: jax.Array) -> jax.Array:
    """``TableBC``: the empirical policy where (h, s) was seen, a random normalised one (``key``) elsewhere."""
    n = counts(states, actions, jnp.ones(states.shape[0], bool), n_states, n_actions)
    u = jax.random.uniform(key, n.shape, n.dtype)
    return jnp.where(n.sum(-1, keepdims=True) > 0, policy_from_counts(n), u / u.sum(-1, keepdims=True))


def prefix_estimator(expert_states: jax.Array, expert_actions: jax.Array, bc_states: jax.Array,
                     bc_actions: jax.Array, bc_mask: jax.Array, n_states: int, n_actions: int) -> jax.Array:
    """The code's d_hat[h, s, a] (module docstring) from the expert data and the (masked) BC rollouts."""
    n1 = (expert_states.shape[0] + 1) // 2
    s1, a1, s2, a2 = expert_states[:n1], expert_actions[:n1], expert_states[n1:], expert_actions[n1:]
    cov_bc = prefix_covered(bc_states, bc_actions, s1, a1) & bc_mask[:, None]
    unc_2 = ~prefix_covered(s2, a2, s1, a1)
    H = expert_states.shape[1]
    d = jnp.zeros((H, n_states, n_actions), jnp.result_type(float))

    def add(d, st, ac, w):
        return d.at[jnp.broadcast_to(jnp.arange(H), st.shape), st, ac].add(w)

    d = add(d, bc_states, bc_actions, cov_bc / jnp.maximum(bc_mask.sum(), 1))
    return add(d, s2, a2, unc_2 / s2.shape[0])


def rf_express_code(mdp: TabularMDP, key: jax.Array, episodes: jax.Array, episodes_max: int,
                    delta: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """``episodes`` (<= ``episodes_max``) of the code's RF-Express (module docstring). Returns the transition counts
    T[s, a, s'] and the first-state counts [S]."""
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon

    def body(carry, inputs):
        n_sas, n_init, pi = carry
        k, key_k = inputs
        k_roll, k_tie = jax.random.split(key_k)
        st, ac, nx = _rollout_full(mdp, pi, k_roll)
        on = k < episodes
        n_sas = n_sas + jnp.where(on, jnp.zeros_like(n_sas).at[st, ac, nx].add(1.0), 0.0)
        n_init = n_init + jnp.where(on, jax.nn.one_hot(st[0], S, dtype=n_init.dtype), 0.0)
        w = rf_express_bonus(n_sas, delta, P_EPS, horizon=H)
        pi = jnp.where(on, greedy_random_ties(w, k_tie), pi)
        return (n_sas, n_init, pi), None

    dt = mdp.P.dtype
    pi0 = jnp.broadcast_to(jax.nn.one_hot(0, A, dtype=dt), (H, S, A))
    init = (jnp.zeros((S, A, S), dt), jnp.zeros(S, dt), pi0)
    (n_sas, n_init, _), _ = jax.lax.scan(body, init, (jnp.arange(episodes_max), _episode_keys(key, episodes_max)))
    return n_sas, n_init


def policy_from_occupancy(d: jax.Array, floor: float = 1e-8) -> jax.Array:
    """``get_policy_from_occ``: pi_h(a|s) = d_h(s, a) / d_h(s), uniform where d_h(s) < ``floor``."""
    tot = d.sum(-1, keepdims=True)
    return jnp.where(tot < floor, 1.0 / d.shape[-1], d / jnp.where(tot < floor, 1.0, tot))


def ail_multiplicative_weights(mdp: TabularMDP, pi_expert: jax.Array, p_hat: jax.Array, rho_hat: jax.Array,
                               d_hat: jax.Array, reward0: jax.Array, iterations: int) -> jax.Array:
    """The code's AIL loop in the model (P_hat, rho_hat) from the reward ``reward0[h, s, a]`` (module docstring);
    returns the exact gap J(pi_E) - J(policy of the average true occupancy), both in ``mdp``."""
    H, S, A = d_hat.shape
    model = TabularMDP(p_hat, mdp.r, rho_hat, mdp.horizon)
    pi0 = jnp.full((H, S, A), 1.0 / A, d_hat.dtype)

    def body(carry, _):
        c, pi, g2, occ = carry
        g = occupancy(model, pi) - d_hat
        g2 = g2 + jnp.sum(g * g)
        eta = jnp.clip(jnp.sqrt(2.0 * H * S * A / g2), *STEP_CLIP)
        c = c * jnp.exp(-eta * g)
        c = c / c.sum(-1, keepdims=True)
        pi = greedy_policy(p_hat, c)
        return (c, pi, g2, occ + occupancy(mdp, pi)), None

    init = (reward0, pi0, jnp.zeros((), d_hat.dtype), jnp.zeros_like(d_hat))
    (_, _, _, occ), _ = jax.lax.scan(body, init, None, length=iterations)
    return imitation_gap(mdp, pi_expert, policy_from_occupancy(occ / iterations))


def mb_tail_code(mdp: TabularMDP, pi_expert: jax.Array, expert_states: jax.Array, expert_actions: jax.Array,
                 key: jax.Array, episodes: jax.Array, episodes_max: int, *, iterations: int = 500,
                 bc_fraction: float = 0.2, delta: float = 0.1) -> jax.Array:
    """The exact gap of MB-TAIL as the authors' code runs it (module docstring) with K = ``episodes``."""
    check_positive_int("episodes_max", episodes_max)
    check_positive_int("iterations", iterations)
    check_in_range("bc_fraction", bc_fraction, 0.0, 1.0, closed="neither")
    check_in_range("delta", delta, 0.0, 1.0, closed="neither")
    check_shape("expert_actions", expert_actions, expert_states.shape, "one action per expert state")
    S, A = mdp.n_states, mdp.n_actions
    k_bc, k_roll, k_rf, k_c = jax.random.split(key, 4)
    N = expert_states.shape[0]
    pi_bc = table_bc(expert_states[: N // 2], expert_actions[: N // 2], S, A, k_bc)
    n_bc = jnp.floor(bc_fraction * episodes).astype(jnp.int32)
    n_bc_max = max(int(bc_fraction * episodes_max), 1)
    st, ac, _ = jax.vmap(lambda k: _rollout_full(mdp, pi_bc, k))(_episode_keys(k_roll, n_bc_max))
    d_hat = prefix_estimator(expert_states, expert_actions, st, ac, jnp.arange(n_bc_max) < n_bc, S, A)
    rf_fraction = 1.0 - bc_fraction
    n_rf = jnp.floor(rf_fraction * episodes).astype(jnp.int32)
    n_sas, n_init = rf_express_code(mdp, k_rf, n_rf, max(int(rf_fraction * episodes_max), 1), delta)
    u = jax.random.uniform(k_c, d_hat.shape, d_hat.dtype)
    return ail_multiplicative_weights(mdp, pi_expert, empirical_model(n_sas, P_EPS),
                                      n_init / jnp.maximum(n_init.sum(), 1.0), d_hat, u / u.sum(-1, keepdims=True),
                                      iterations)
