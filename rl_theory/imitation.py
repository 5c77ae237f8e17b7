"""Offline imitation learning on tabular episodic MDPs: behavioral cloning, NBCU and WBCU, and the closed-form
expected imitation gap of behavioral cloning on Reset-Cliff.

Papers
------
* N. Rajaraman, L. F. Yang, J. Jiao, K. Ramchandran, "Toward the Fundamental Limits of Imitation Learning",
  NeurIPS 2020, arXiv:2009.05990. Behavioral cloning in the no-interaction setting (Section 4): the non-stationary
  policy pi_h(.|s) = empirical distribution of the expert's actions at (h, s) where state s was visited at step h in
  the dataset D of N trajectories, and an arbitrary (here uniform) distribution elsewhere. Section 4 (deterministic
  expert): E[J(pi_E) - J(pi_BC)] <~ min(H, |S| H^2 / N); Section 6: a matching Omega(|S| H^2 / N) lower bound on
  the Reset-Cliff instance (``rl_theory.tabular.reset_cliff`` with ``lower_bound_rho``).
* Z. Li, T. Xu, Z. Qin, Y. Yu, Z.-Q. Luo, "Imitation Learning from Imperfection: Theoretical Justifications and
  Algorithms", NeurIPS 2023, arXiv:2301.11687. With an expert dataset D_E and a supplementary dataset D_S of mixed
  quality, NBCU is BC on the union D_U = D_E u D_S; WBCU is weighted BC on D_U with importance weights
  w(s, a) = c(s, a) / (1 - c(s, a)), where the discriminator c maximises
  E_{D_E}[log c(s, a)] + E_{D_U}[log(1 - c(s, a))] (so that at the optimum w = d_E / d_U). Over tabular features
  that optimum is known in closed form (:func:`density_ratio_weights`, the default); a logistic discriminator on
  other features is trained by Adam (:func:`discriminator_weights`).

Symbols -> arguments: N (``mask.sum()``: the first N rows of a max-N buffer are the dataset), H (the second axis of
``states``), pi_h(a|s) (``pi[h, s, a]``), D_E / D_S (``expert_*`` / ``supp_*`` arrays), the discriminator's
feature map phi(s, a) (``features``), its L2 penalty (``l2``) and optimiser steps (``steps``, ``learning_rate``).

The closed form (:func:`bc_gap_reset_cliff`)
--------------------------------------------
On Reset-Cliff under the expert, every state s_h (h = 0..H-1, every trajectory) is an independent draw from rho:
the expert's action resets the state. So the set U_h of good states that no trajectory of D visits at step h
satisfies P(s in U_h) = (1 - rho(s))^N, independently over h. BC plays the expert action on visited (h, s) and a
uniform action on U_h. Under BC, a good state at step h is again distributed as rho (every surviving step resets),
so the step is survived and rewarded with probability 1 - delta_h, delta_h = (1 - 1/|A|) rho(U_h), and a mistake
falls into the absorbing bad state (reward 0 until H). Hence, for a given dataset,

    J(pi_BC | D) = sum_{h=0}^{H-1} prod_{k=0}^{h} (1 - delta_k),        J(pi_E) = H,

and since the U_k are independent, E prod_k (1 - delta_k) = (1 - m)^{h+1} with

    m = E delta_h = (1 - 1/|A|) sum_{s good} rho(s) (1 - rho(s))^N,

    E[J(pi_E) - J(pi_BC)] = H - sum_{j=1}^{H} (1 - m)^j = H - (1 - m) (1 - (1 - m)^H) / m.

For m H << 1 this is m H (H + 1) / 2 (1 + O(m H)): quadratic in H. With the lower-bound rho of N
(``lower_bound_rho``), m = (1 - 1/|A|) [(1 - (|S|-2)/(N+1)) ((|S|-2)/(N+1))^N + (|S|-2)/(N+1) (N/(N+1))^N]
~ (1 - 1/|A|) (|S| - 2) / (e N): the gap is ~ (1 - 1/|A|) (|S| - 2) H^2 / (2 e N), the |S| H^2 / N rate.

With ``decoys`` of the |A| - 1 non-expert actions resetting like the expert's (earning 0), a step of BC at U_h loses
its reward with probability delta_h and falls with probability c_h = (|A| - 1 - decoys) / |A| rho(U_h). The reward
of step j needs no fall at steps k < j and the expert's action at step j; each U_k enters once, so

    E[J(pi_E) - J(pi_BC)] = H - (1 - m) sum_{j=0}^{H-1} (1 - m_c)^j,   m_c = E c_h = m (|A| - 1 - decoys) / (|A| - 1),

~ m H + m_c H (H - 1) / 2 for m_c H << 1: the linear term (one lost reward per mistake) makes the log-log slope in
H fall short of 2 until H >> 2 m / m_c, and the saturation 1 - (1 - m_c)^H bends it down again for m_c H ~ 1; with
no cliff (decoys = |A| - 1) the gap is exactly m H.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_nonnegative, check_positive, check_positive_int, is_traced


def counts(states: jax.Array, actions: jax.Array, mask: jax.Array, n_states: int, n_actions: int,
           weights: jax.Array | None = None) -> jax.Array:
    """``n[h, s, a]`` = number of trajectories i with mask_i and (s_{i,h}, a_{i,h}) = (s, a).

    ``states``/``actions`` are [N_max, H] integer arrays (a max-N buffer); ``mask`` [N_max] selects the dataset;
    ``weights`` (optional, [N_max]) multiplies each trajectory's contribution.
    """
    n_max, horizon = states.shape
    w = mask.astype(jnp.result_type(float)) if weights is None else mask * weights
    h_idx = jnp.broadcast_to(jnp.arange(horizon), (n_max, horizon))
    out = jnp.zeros((horizon, n_states, n_actions), w.dtype)
    return out.at[h_idx, states, actions].add(jnp.broadcast_to(w[:, None], (n_max, horizon)))


def policy_from_counts(n: jax.Array) -> jax.Array:
    """pi_h(a|s) = n_h(s, a) / n_h(s) where n_h(s) > 0, uniform over actions where (h, s) is unseen."""
    tot = n.sum(-1, keepdims=True)
    uniform = jnp.full_like(n, 1.0 / n.shape[-1])
    return jnp.where(tot > 0, n / jnp.where(tot > 0, tot, 1.0), uniform)


def behavior_cloning(states: jax.Array, actions: jax.Array, mask: jax.Array, n_states: int,
                     n_actions: int) -> jax.Array:
    """Count-based BC (Rajaraman et al. 2020, Section 4): the empirical expert policy, uniform on unseen (h, s)."""
    return policy_from_counts(counts(states, actions, mask, n_states, n_actions))


def first_n_mask(n: jax.Array | int, n_max: int) -> jax.Array:
    """[n_max] mask that selects the first ``n`` rows of a buffer (``n`` may be traced, so it can be vmapped)."""
    return jnp.arange(n_max) < n


def nbcu(expert_states: jax.Array, expert_actions: jax.Array, expert_mask: jax.Array, supp_states: jax.Array,
         supp_actions: jax.Array, supp_mask: jax.Array, n_states: int, n_actions: int) -> jax.Array:
    """NBCU (Li et al. 2023): BC on the union D_U = D_E u D_S."""
    n = (counts(expert_states, expert_actions, expert_mask, n_states, n_actions)
         + counts(supp_states, supp_actions, supp_mask, n_states, n_actions))
    return policy_from_counts(n)


def state_action_features(n_states: int, n_actions: int, kind: str = "tabular+action") -> np.ndarray:
    """phi(s, a) as an [S, A, d] array: ``"tabular"`` = one-hot of (s, a); ``"tabular+action"`` appends a one-hot
    of a (a discriminator that can generalise an action's label across states)."""
    onehot = np.eye(n_states * n_actions).reshape(n_states, n_actions, -1)
    if kind == "tabular":
        return onehot
    if kind == "tabular+action":
        act = np.broadcast_to(np.eye(n_actions)[None], (n_states, n_actions, n_actions))
        return np.concatenate([onehot, act], axis=-1)
    raise RatelabError(f"kind must be one of 'tabular', 'tabular+action', got {kind!r}")


def discriminator_weights(n_expert: jax.Array, n_union: jax.Array, features: jax.Array, *, l2: float = 1e-3,
                          steps: int = 300, learning_rate: float = 0.5) -> jax.Array:
    """w(s, a) = c / (1 - c) = exp(theta . phi(s, a)) for the logistic discriminator c = sigmoid(theta . phi) that
    minimises -E_{D_E} log c - E_{D_U} log(1 - c) + l2/2 ||theta||^2 (Li et al. 2023, eq. for WBCU's
    discriminator), by ``steps`` of Adam (optax). ``n_expert``/``n_union`` are [S, A] visit counts."""
    check_nonnegative("l2", l2)
    check_positive("learning_rate", learning_rate)
    steps = check_positive_int("steps", steps)
    p_e = n_expert / jnp.maximum(n_expert.sum(), 1.0)
    p_u = n_union / jnp.maximum(n_union.sum(), 1.0)
    phi = jnp.asarray(features, p_e.dtype)

    def loss(theta):
        z = phi @ theta
        return jnp.sum(p_e * jax.nn.softplus(-z) + p_u * jax.nn.softplus(z)) + 0.5 * l2 * theta @ theta

    opt = optax.adam(learning_rate)
    theta0 = jnp.zeros(phi.shape[-1], p_e.dtype)

    def body(carry, _):
        theta, st = carry
        g = jax.grad(loss)(theta)
        upd, st = opt.update(g, st, theta)
        return (optax.apply_updates(theta, upd), st), None

    (theta, _), _ = jax.lax.scan(body, (theta0, opt.init(theta0)), None, length=steps)
    return jnp.exp(phi @ theta)


def density_ratio_weights(n_expert: jax.Array, n_union: jax.Array) -> jax.Array:
    """w(s, a) = c*/(1 - c*) = p_E(s, a) / p_U(s, a): the weights of WBCU's discriminator at the optimum of its
    logistic loss over tabular features, c* = p_E / (p_E + p_U) (Li et al. 2023: at the optimum w = d_E / d_U), in
    closed form; w = 0 wherever D_E never shows (s, a). ``n_expert``/``n_union`` are [S, A] visit counts."""
    p_e = n_expert / jnp.maximum(n_expert.sum(), 1.0)
    p_u = n_union / jnp.maximum(n_union.sum(), 1.0)
    return jnp.where(p_e > 0, p_e / jnp.where(p_u > 0, p_u, 1.0), 0.0)


def wbcu(expert_states: jax.Array, expert_actions: jax.Array, expert_mask: jax.Array, supp_states: jax.Array,
         supp_actions: jax.Array, supp_mask: jax.Array, n_states: int, n_actions: int, features: Any = None, *,
         l2: float = 1e-3, steps: int = 300, learning_rate: float = 0.5) -> jax.Array:
    """WBCU (Li et al. 2023): BC on D_U with each (s, a) weighted by w(s, a) = c / (1 - c).

    ``features=None``: the discriminator's optimum over tabular features in closed form
    (:func:`density_ratio_weights`); otherwise the logistic discriminator on those features trained by
    :func:`discriminator_weights`. Where every weighted count of (h, s) is 0, the policy is uniform (as BC's on an
    unseen state)."""
    n_e = counts(expert_states, expert_actions, expert_mask, n_states, n_actions)
    n_u = n_e + counts(supp_states, supp_actions, supp_mask, n_states, n_actions)
    if features is None:
        w = density_ratio_weights(n_e.sum(0), n_u.sum(0))
    else:
        w = discriminator_weights(n_e.sum(0), n_u.sum(0), features, l2=l2, steps=steps, learning_rate=learning_rate)
    return policy_from_counts(n_u * w[None])


# ------------------------------------------------------------------------------------------- closed forms


def bc_death_rate_reset_cliff(rho: Any, n_actions: int, n: Any) -> np.ndarray:
    """m = (1 - 1/|A|) sum_{s good} rho(s) (1 - rho(s))^N: BC's expected per-step probability of a non-expert action
    on Reset-Cliff (its fall probability when every non-expert action falls).

    ``rho`` is [S] (the last state is the bad one) or [..., S] for several instances; ``n`` broadcasts with it.
    """
    rho = np.asarray(rho, dtype=float)
    n_actions = check_positive_int("n_actions", n_actions)
    n = np.asarray(n, dtype=float)
    if np.any(n < 1) or np.any(n != np.round(n)):
        raise RatelabError(f"n must hold integers >= 1, got {n}")
    good = rho[..., :-1]
    return (1 - 1 / n_actions) * np.sum(good * (1 - good) ** np.asarray(n)[..., None], axis=-1)


def bc_gap_reset_cliff(rho: Any, n_actions: int, horizon: Any, n: Any, decoys: int = 0) -> np.ndarray:
    """E[J(pi_E) - J(pi_BC)] on Reset-Cliff (derivation in the module docstring), with ``decoys`` of the |A| - 1
    non-expert actions resetting like the expert's (:func:`rl_theory.tabular.reset_cliff`):

        H - (1 - m) sum_{j<H} (1 - m_c)^j,   m_c = m (|A| - 1 - decoys) / (|A| - 1),

    m = :func:`bc_death_rate_reset_cliff` the per-step probability of a non-expert action and m_c that of a fall.
    decoys = 0: H - (1 - m)(1 - (1 - m)^H) / m; decoys = |A| - 1 (no cliff): m H, linear in H.
    """
    n_actions = check_positive_int("n_actions", n_actions)
    if isinstance(decoys, bool) or not isinstance(decoys, int) or not 0 <= decoys <= n_actions - 1:
        raise RatelabError(f"decoys must be an integer in [0, n_actions - 1] = [0, {n_actions - 1}], got {decoys!r}")
    m = bc_death_rate_reset_cliff(rho, n_actions, n)
    m_c = m * (n_actions - 1 - decoys) / (n_actions - 1)
    H = np.asarray(horizon, dtype=float)
    if np.any(H < 1):
        raise RatelabError(f"horizon must be >= 1, got {horizon}")
    j = np.arange(int(np.max(H)))
    # sum_{j<H} (1 - m_c)^j by direct summation (stable for m_c -> 0)
    partial = np.cumsum((1 - m_c)[..., None] ** j, axis=-1)
    idx = (np.broadcast_to(H, np.shape(partial)[:-1]) - 1).astype(int)
    return H - (1 - m) * np.take_along_axis(partial, idx[..., None], axis=-1)[..., 0]


def bc_gap_given_unseen_reset_cliff(rho: jax.Array, unseen: jax.Array, n_actions: int) -> jax.Array:
    """J(pi_E) - J(pi_BC) for one dataset: H - sum_h prod_{k<=h} (1 - delta_k), delta_k = (1 - 1/|A|) rho(U_k);
    ``unseen`` is a [H, S] boolean array (True where good state s is unvisited at step h)."""
    delta = (1 - 1 / n_actions) * (unseen[:, :-1] * rho[:-1]).sum(-1)
    return unseen.shape[0] - jnp.cumprod(1 - delta).sum()


# ----------------------------------------------------------------------------------------------- studies


def stack_trees(trees: list[Any], axis: int = 0) -> Any:
    """Stack pytrees of equal structure leaf by leaf along a new ``axis``: on the host when every leaf is concrete
    (``np.stack`` and one transfer: no jax program per leaf shape, which eager ``jnp.stack`` compiles), else with
    ``jnp.stack``. The same values and dtypes either way."""
    def stack(*xs):
        if any(is_traced(x) for x in xs):
            return jnp.stack(xs, axis=axis)
        return jax.device_put(np.stack([np.asarray(x) for x in xs], axis=axis))

    return jax.tree_util.tree_map(stack, *trees)


def stack_mdps(mdps: list[Any]) -> Any:
    """Stack instances of equal sizes along a new leading axis (to ``vmap`` over them)."""
    if not mdps:
        raise RatelabError("mdps must hold at least one instance")
    return stack_trees(mdps)


def _over_seeds(f: Any, keys: jax.Array, seed_batch: int) -> Any:
    """``vmap`` of ``f`` over seeds, or (``seed_batch`` > 0) ``lax.map`` over batches of that many vmapped seeds,
    which bounds memory for large studies with the same results."""
    if seed_batch <= 0 or seed_batch >= keys.shape[0]:
        return jax.vmap(f)(keys)
    return jax.lax.map(f, keys, batch_size=seed_batch)


LEARNERS = ("bc", "pooled")


def pooled_behavior_cloning(n: jax.Array) -> jax.Array:
    """A stationary BC from counts ``n[h, s, a]``: the empirical action distribution of state s pooled over all steps,
    the same policy at every step (uniform at states never visited). Not the paper's learner (whose pi_h uses the
    data of step h only): it sees about H times more samples per state, so its gap is below the closed form's."""
    return jnp.broadcast_to(policy_from_counts(n.sum(0)), n.shape)


def _learned(n: jax.Array, learners: tuple[str, ...]) -> jax.Array:
    """``[len(learners), H, S, A]`` policies from the counts ``n[h, s, a]``."""
    make = {"bc": policy_from_counts, "pooled": pooled_behavior_cloning}
    return jnp.stack([make[name](n) for name in learners])


def _check_learners(learners: tuple[str, ...]) -> tuple[str, ...]:
    learners = tuple(learners)
    bad = [name for name in learners if name not in LEARNERS]
    if not learners or bad:
        raise RatelabError(f"learners must be a non-empty tuple of {', '.join(map(repr, LEARNERS))}, got {learners!r}")
    return learners


def bc_gaps(mdps: Any, pi_expert: jax.Array, ns: Any, keys: jax.Array, n_max: int, seed_batch: int = 0,
            learners: tuple[str, ...] = ("bc",)) -> dict[str, jax.Array]:
    """Exact imitation gaps of BC-type learners for every (seed, N): ``{learner: [seeds, len(ns)]}``.

    ``mdps`` is a stack of one instance per N (leading axis ``len(ns)``; e.g. Reset-Cliff with ``lower_bound_rho``
    of each N). For seed i and N_j the dataset is the first N_j of the ``n_max`` trajectories with keys
    ``split(fold_in(key_i, j), n_max)`` under the expert (``lax.scan`` over H); the gap J(pi_E) - J(pi) is then
    evaluated exactly by backward induction. With concrete ``ns`` only those N_j trajectories are drawn (sum_j N_j
    rollouts per seed); with traced ``ns`` every N draws the whole max-N buffer and masks it (same datasets, same
    gaps). ``learners``: ``"bc"`` (the paper's per-step BC) and / or ``"pooled"`` (:func:`pooled_behavior_cloning`).
    Vmapped over N and over seeds (``seed_batch`` > 0: ``lax.map`` over batches of that many vmapped seeds, to
    bound memory); jit it at the call site (``ns`` static for the cheaper draw).
    """
    from rl_theory.tabular import imitation_gap, rollout, sample_trajectories

    learners = _check_learners(learners)
    S, A = pi_expert.shape[-2:]
    traced = is_traced(ns)
    if not traced:
        ns_np = np.asarray(ns, dtype=int)
        if ns_np.ndim != 1 or np.any(ns_np < 1) or np.any(ns_np > n_max):
            raise RatelabError(f"ns must be a 1-D array of integers in [1, n_max = {n_max}], got {ns!r}")
        owner = np.repeat(np.arange(ns_np.size), ns_np)  # instance index of each drawn trajectory
        row = np.concatenate([np.arange(n) for n in ns_np])  # its row in that instance's max-N buffer

    def gaps_of(mdp, n_hsa):
        pis = _learned(n_hsa, learners)
        return jax.vmap(lambda p: imitation_gap(mdp, pi_expert, p))(pis)

    def one_seed(key):
        sub = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(mdps.P.shape[0]))
        if traced:
            def one(mdp, n, k):
                states, actions = sample_trajectories(mdp, pi_expert, k, n_max)
                return gaps_of(mdp, counts(states, actions, first_n_mask(n, n_max), S, A))

            return jax.vmap(one)(mdps, jnp.asarray(ns), sub)
        buffers = jax.vmap(lambda k: jax.random.split(k, n_max))(sub)  # [len(ns), n_max] keys
        traj_keys = buffers[owner, row]

        def draw(j, k):
            mdp = jax.tree_util.tree_map(lambda x: x[j], mdps)
            states, actions, _ = rollout(mdp, pi_expert, k)
            return states, actions

        states, actions = jax.vmap(draw)(jnp.asarray(owner), traj_keys)
        H = states.shape[1]
        n_all = jnp.zeros((ns_np.size, H, S, A), mdps.P.dtype)
        h_idx = jnp.broadcast_to(jnp.arange(H), states.shape)
        n_all = n_all.at[jnp.asarray(owner)[:, None], h_idx, states, actions].add(1.0)
        return jax.vmap(gaps_of)(mdps, n_all)

    out = _over_seeds(one_seed, keys, seed_batch)  # [seeds, len(ns), len(learners)]
    return {name: out[..., i] for i, name in enumerate(learners)}


def bc_gap_study(mdps: Any, pi_expert: jax.Array, ns: Any, keys: jax.Array, n_max: int,
                 seed_batch: int = 0) -> jax.Array:
    """BC's exact imitation gap for every (seed, N): ``[seeds, len(ns)]`` (:func:`bc_gaps` with the paper's BC)."""
    return bc_gaps(mdps, pi_expert, ns, keys, n_max, seed_batch)["bc"]


def bc_step_gap_study(mdps: Any, pi_expert: jax.Array, n: int, keys: jax.Array, seed_batch: int = 0,
                      learners: tuple[str, ...] = ("bc",)) -> dict[str, jax.Array]:
    """``{learner: [seeds, M, H]}`` per-step gaps E_pi_E[r_h] - E_pi[r_h] on each of the M stacked instances
    ``mdps`` of learners trained on ``n`` expert trajectories of the first instance.

    The instances must give the expert's trajectories the same law as the first one (e.g. Reset-Cliff variants that
    differ only in what non-expert actions do), so one dataset serves all. The cumulative sum over h < H' of the
    per-step gaps is the exact gap of the horizon-H' problem (the truncation of a time-homogeneous MDP, with the
    learner trained on the first H' steps of the same trajectories).
    """
    from rl_theory.tabular import sample_trajectories, step_rewards

    learners = _check_learners(learners)
    first = jax.tree_util.tree_map(lambda x: x[0], mdps)
    S, A = first.n_states, first.n_actions

    def one(key):
        states, actions = sample_trajectories(first, pi_expert, key, n)
        pis = _learned(counts(states, actions, jnp.ones(n, bool), S, A), learners)

        def per_instance(mdp):
            r_expert = step_rewards(mdp, pi_expert)
            return jax.vmap(lambda p: r_expert - step_rewards(mdp, p))(pis)

        return jax.vmap(per_instance)(mdps)  # [M, len(learners), H]

    out = _over_seeds(one, keys, seed_batch)
    return {name: out[:, :, i] for i, name in enumerate(learners)}


def bc_step_gaps(mdp: Any, pi_expert: jax.Array, n: int, keys: jax.Array, seed_batch: int = 0) -> jax.Array:
    """``[seeds, H]`` per-step gaps of BC from ``n`` trajectories of ``mdp`` (:func:`bc_step_gap_study` on one
    instance); their cumulative sum over h < H' is the exact gap of the horizon-H' problem."""
    return bc_step_gap_study(stack_mdps([mdp]), pi_expert, n, keys, seed_batch)["bc"][:, 0]


def nbcu_population_policy(mdp: Any, pi_expert: jax.Array, pi_noise: jax.Array, quality: jax.Array,
                           n_expert: int, n_supp: int) -> jax.Array:
    """NBCU's limit policy as N_E, N_S -> infinity at a fixed ratio: BC on the occupancy
    N_E d^{pi_E} + N_S (q d^{pi_E} + (1 - q) d^{pi_noise}) (Li et al. 2023, the mixture policy NBCU converges to)."""
    from rl_theory.tabular import occupancy

    d_e, d_n = occupancy(mdp, pi_expert), occupancy(mdp, pi_noise)
    mix = (n_expert + n_supp * quality) * d_e + n_supp * (1 - quality) * d_n
    return policy_from_counts(jnp.where(mix > 1e-300, mix, 0.0))


def bcu_study(mdps: Any, pi_experts: jax.Array, pi_noise: jax.Array, qualities: jax.Array, keys: jax.Array,
              n_expert: int, n_supp: int, features: Any = None, *, l2: float = 1e-3, steps: int = 300,
              learning_rate: float = 0.5) -> dict[str, jax.Array]:
    """BC (on D_E), NBCU and WBCU (on D_E u D_S) for every (seed, quality q): each metric ``[seeds, len(q)]``.

    ``mdps`` / ``pi_experts`` carry one instance per seed (leading axis ``seeds``: e.g. Reset-Cliff with expert
    actions drawn per seed). D_E holds ``n_expert`` expert trajectories; D_S holds ``n_supp`` trajectories, each
    independently the expert's with probability q and ``pi_noise``'s otherwise (both drawn into buffers, selected by
    a Bernoulli mask). Gaps are exact (backward induction); ``nbcu_limit`` is the gap of
    :func:`nbcu_population_policy`. ``features``: WBCU's discriminator (see :func:`wbcu`).
    """
    from rl_theory.tabular import imitation_gap, rollout

    S, A = pi_experts.shape[-2:]
    phi = None if features is None else jnp.asarray(features)

    def one(mdp, pi_expert, q, key):
        kz, kt = jax.random.split(key)
        # one rollout call: rows [0, N_E) are D_E, rows [N_E, N_E + N_S) are D_S (expert w.p. q, else pi_noise)
        is_expert = jnp.concatenate([jnp.ones(n_expert, bool), jax.random.uniform(kz, (n_supp,)) < q])
        pis = jnp.where(is_expert[:, None, None, None], pi_expert, pi_noise)
        states, actions, _ = jax.vmap(lambda p, k: rollout(mdp, p, k))(pis, jax.random.split(kt, n_expert + n_supp))
        e_s, e_a, s_s, s_a = states[:n_expert], actions[:n_expert], states[n_expert:], actions[n_expert:]
        full_e, full_s = jnp.ones(n_expert, bool), jnp.ones(n_supp, bool)
        pi_bc = behavior_cloning(e_s, e_a, full_e, S, A)
        pi_n = nbcu(e_s, e_a, full_e, s_s, s_a, full_s, S, A)
        pi_w = wbcu(e_s, e_a, full_e, s_s, s_a, full_s, S, A, phi, l2=l2, steps=steps, learning_rate=learning_rate)
        gaps = jax.vmap(lambda p: imitation_gap(mdp, pi_expert, p))(jnp.stack([pi_bc, pi_n, pi_w]))
        limit = imitation_gap(mdp, pi_expert, nbcu_population_policy(mdp, pi_expert, pi_noise, q, n_expert, n_supp))
        return {"gap_bc": gaps[0], "gap_nbcu": gaps[1], "gap_wbcu": gaps[2], "nbcu_limit": limit}

    def one_seed(mdp, pi_expert, key):
        sub = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(qualities.shape[0]))
        return jax.vmap(lambda q, k: one(mdp, pi_expert, q, k))(qualities, sub)

    return jax.vmap(one_seed)(mdps, pi_experts, keys)


# ------------------------------------------------------------------------------------------------ MIMIC-MD


def mimic_md(P: Any, rho: Any, states: Any, actions: Any) -> np.ndarray:
    """MIMIC-MD (Rajaraman et al. 2020, Section 5, the known-transition setting; deterministic expert).

    The N trajectories are split into D1 (the first floor(N/2)) and D2 (the rest). The learner copies the expert
    wherever D1 shows its action (Pi_mimic(D1)) and chooses the other (t, s) to minimise the minimum-distance
    functional sum_t sum_{s,a} | P_pi(T_t(s, a)) - P_hat_{D2}(T_t(s, a)) |, where T_t(s, a) is the event "the
    trajectory visited, at some tau <= t, a state that D1 never shows at step tau, and (s_t, a_t) = (s, a)".

    Exact solution with known P: in the MDP augmented by the bit b_t = 1{T-event by t}, P_pi(T_t(s, a)) is the
    occupancy x_t((s, 1), a), and the policies of Pi_mimic(D1) are exactly the occupancies of the augmented MDP with
    x_t((s, b), a) = 0 for a != a_D1(t, s) at D1-visited (t, s) (where b cannot matter, and at unvisited (t, s) b = 1),
    so the problem is the linear program min sum e s.t. flow constraints, e >= +-(x_t((s,1), a) - p_hat_t(s, a)),
    solved by scipy's HiGHS. Returns pi[h, s, a] (NumPy; uniform where the solution puts no mass).

    ``P`` [S, A, S] and ``rho`` [S] are the known transitions; ``states``/``actions`` are [N, H] integer arrays.
    """
    from scipy import optimize, sparse

    P, rho = np.asarray(P, dtype=float), np.asarray(rho, dtype=float)
    states, actions = np.asarray(states), np.asarray(actions)
    if states.ndim != 2 or states.shape != actions.shape:
        raise RatelabError(f"states and actions must be [N, H] arrays of equal shape, got {states.shape}, "
                           f"{actions.shape}")
    N, H = states.shape
    S, A = P.shape[:2]
    if N < 2:
        raise RatelabError(f"the dataset must hold N >= 2 trajectories (D1 and D2 non-empty), got {N}")
    n1 = N // 2
    h_idx = np.broadcast_to(np.arange(H), (n1, H))
    seen = np.zeros((H, S), bool)
    seen[h_idx, states[:n1]] = True
    a_d1 = np.zeros((H, S), int)
    a_d1[h_idx, states[:n1]] = actions[:n1]
    unseen = ~seen
    # D2's estimate of P(T_t(s, a))
    d2s, d2a = states[n1:], actions[n1:]
    b_d2 = np.maximum.accumulate(unseen[np.arange(H)[None], d2s], axis=1)
    p_hat = np.zeros((H, S, A))
    np.add.at(p_hat, (np.broadcast_to(np.arange(H), d2s.shape)[b_d2], d2s[b_d2], d2a[b_d2]), 1.0 / (N - n1))

    def xi(t, s, b, a):
        return ((t * S + s) * 2 + b) * A + a

    nx, ne = H * S * 2 * A, H * S * A
    rows, cols, vals = [], [], []
    t_g, s_g, b_g, a_g = np.meshgrid(np.arange(H), np.arange(S), np.arange(2), np.arange(A), indexing="ij")
    t_g, s_g, b_g, a_g = (z.ravel() for z in (t_g, s_g, b_g, a_g))
    row_of = (t_g * S + s_g) * 2 + b_g  # one flow row per augmented (t, s, b)
    rows.append(row_of)
    cols.append(xi(t_g, s_g, b_g, a_g))
    vals.append(np.ones(nx))
    # inflow into (t, s', b') from (t-1, s, b, a): b' = max(b, unseen[t, s'])
    src = t_g < H - 1
    for s_next in range(S):
        p = P[s_g[src], a_g[src], s_next]
        nz = p > 0
        b_next = np.maximum(b_g[src], unseen[t_g[src] + 1, s_next])
        rows.append((((t_g[src] + 1) * S + s_next) * 2 + b_next)[nz])
        cols.append(xi(t_g[src], s_g[src], b_g[src], a_g[src])[nz])
        vals.append(-p[nz])
    b_eq = np.zeros(H * S * 2)
    b0 = unseen[0].astype(int)
    b_eq[np.arange(S) * 2 + b0] = rho
    A_eq = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(H * S * 2, nx + ne))
    # |x_t((s,1),a) - p_hat| <= e
    t1, s1, a1 = (z.ravel() for z in np.meshgrid(np.arange(H), np.arange(S), np.arange(A), indexing="ij"))
    xcols, ecols = xi(t1, s1, 1, a1), nx + (t1 * S + s1) * A + a1
    r = np.arange(ne)
    A_ub = sparse.csr_matrix((np.r_[np.ones(ne), -np.ones(ne), -np.ones(ne), -np.ones(ne)],
                              (np.r_[r, r, ne + r, ne + r], np.r_[xcols, ecols, xcols, ecols])),
                             shape=(2 * ne, nx + ne))
    b_ub = np.r_[p_hat.ravel(), -p_hat.ravel()]
    upper = np.full(nx + ne, np.inf)
    fixed = ~unseen[t_g, s_g] & (a_g != a_d1[t_g, s_g])
    upper[:nx][fixed] = 0.0
    c = np.r_[np.zeros(nx), np.ones(ne)]
    res = optimize.linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=np.c_[np.zeros(nx + ne), upper],
                           method="highs")
    if res.status != 0:
        raise RatelabError(f"MIMIC-MD's linear program failed: {res.message}")
    x = res.x[:nx].reshape(H, S, 2, A)[:, :, 1]
    pi = np.where(x.sum(-1, keepdims=True) > 1e-12, x / np.maximum(x.sum(-1, keepdims=True), 1e-300), 1.0 / A)
    pi[seen] = np.eye(A)[a_d1[seen]]
    return pi


def mimic_study(mdps: Any, pi_experts: jax.Array, ns: Any, horizons: Any, keys: jax.Array,
                n_max: int) -> dict[str, np.ndarray]:
    """MIMIC-MD and BC on the same datasets: exact gaps ``[seeds, len(ns), len(horizons)]`` each.

    ``mdps`` / ``pi_experts`` carry leading axes [seeds, len(ns)] (one instance per seed and N) and the largest
    horizon. Datasets are drawn once in JAX (``vmap`` over seeds and N, a max-N buffer of max-H trajectories): the
    first N rows and first H steps form the dataset of (N, H), a valid sample of the horizon-H problem since the MDP
    is time-homogeneous. MIMIC-MD's linear program is solved per dataset on the host (scipy HiGHS); BC and the exact
    per-step evaluations are vmapped, and the horizon-H gap is the sum of the first H per-step gaps.
    """
    from rl_theory.tabular import sample_trajectories, step_rewards

    ns, horizons = np.asarray(ns), np.asarray(horizons)
    h_max = pi_experts.shape[-3]
    if np.any(horizons > h_max) or np.any(horizons < 1):
        raise RatelabError(f"horizons must lie in [1, {h_max}] (the instances' horizon), got {horizons}")

    @jax.jit
    def draw(mdps, pis, keys):
        def per_seed(m, p, key):
            sub = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(ns.size))
            return jax.vmap(lambda mm, pp, k: sample_trajectories(mm, pp, k, n_max))(m, p, sub)

        return jax.vmap(per_seed)(mdps, pis, keys)

    states, actions = (np.asarray(x) for x in draw(mdps, pi_experts, keys))
    n_seeds = states.shape[0]
    P, rho, pe = np.asarray(mdps.P), np.asarray(mdps.rho), np.asarray(pi_experts)
    pi_mimic = np.empty((n_seeds, ns.size, horizons.size) + pe.shape[-3:])
    for i in range(n_seeds):
        for j, n in enumerate(ns):
            for k, h in enumerate(horizons):
                pi_mimic[i, j, k] = pe[i, j]  # steps >= h do not count towards the horizon-h gap
                pi_mimic[i, j, k, :h] = mimic_md(P[i, j], rho[i, j], states[i, j, :n, :h], actions[i, j, :n, :h])

    @jax.jit
    def gaps(mdps, pis, pi_m, states, actions):
        S, A = mdps.P.shape[-3], mdps.P.shape[-2]

        def one(m, pe, pm, st, ac, n):
            r_e = step_rewards(m, pe)
            pb = behavior_cloning(st, ac, first_n_mask(n, n_max), S, A)
            g_m = jnp.cumsum(r_e[None] - jax.vmap(lambda p: step_rewards(m, p))(pm), axis=-1)
            g_b = jnp.cumsum(r_e - step_rewards(m, pb))
            idx = jnp.asarray(horizons) - 1
            return g_m[jnp.arange(idx.size), idx], g_b[idx]

        over_n = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0))
        return jax.vmap(over_n, in_axes=(0, 0, 0, 0, 0, None))(mdps, pis, pi_m, states, actions, jnp.asarray(ns))

    g_mimic, g_bc = gaps(mdps, pi_experts, jnp.asarray(pi_mimic), jnp.asarray(states), jnp.asarray(actions))
    return {"gap_mimic": np.asarray(g_mimic), "gap_bc": np.asarray(g_bc)}


def mimic_objective(P: Any, rho: Any, states: Any, actions: Any, pi: Any) -> float:
    """MIMIC-MD's loss of a policy: sum_t sum_{s,a} |P_pi(T_t(s, a)) - P_hat_{D2}(T_t(s, a))|, with P_pi(T_t) from a
    forward pass in the augmented MDP (NumPy; D1 / D2 split as in :func:`mimic_md`)."""
    P, rho, pi = np.asarray(P, dtype=float), np.asarray(rho, dtype=float), np.asarray(pi, dtype=float)
    states, actions = np.asarray(states), np.asarray(actions)
    N, H = states.shape
    S, A = P.shape[:2]
    n1 = N // 2
    seen = np.zeros((H, S), bool)
    seen[np.broadcast_to(np.arange(H), (n1, H)), states[:n1]] = True
    unseen = ~seen
    d2s, d2a = states[n1:], actions[n1:]
    b_d2 = np.maximum.accumulate(unseen[np.arange(H)[None], d2s], axis=1)
    p_hat = np.zeros((H, S, A))
    np.add.at(p_hat, (np.broadcast_to(np.arange(H), d2s.shape)[b_d2], d2s[b_d2], d2a[b_d2]), 1.0 / (N - n1))
    mu = np.zeros((S, 2))  # distribution of the augmented state (s, b) at step t
    mu[np.arange(S), unseen[0].astype(int)] = rho
    loss = 0.0
    for t in range(H):
        x = mu[:, :, None] * pi[t][:, None, :]  # [S, 2, A]
        loss += np.abs(x[:, 1] - p_hat[t]).sum()
        if t + 1 < H:
            nxt = np.einsum("sba,sat->tb", x, P)  # mass at s' by previous bit
            mu = np.zeros((S, 2))
            u = unseen[t + 1]
            mu[:, 1] = nxt[:, 1] + np.where(u, nxt[:, 0], 0.0)
            mu[:, 0] = np.where(u, 0.0, nxt[:, 0])
    return float(loss)
