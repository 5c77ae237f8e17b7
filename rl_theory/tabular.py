"""Tabular episodic MDPs: exact policy evaluation by dynamic programming, rollouts in JAX, and the instances of the
imitation-learning papers.

An episodic MDP M = (S, A, P, r, H, rho) (Rajaraman, Yang, Jiao, Ramchandran, "Toward the Fundamental Limits of
Imitation Learning", NeurIPS 2020, arXiv:2009.05990, Section 3) is held as a :class:`TabularMDP`:

* ``P[s, a, s']`` the (time-homogeneous) transition kernel, ``r[s, a]`` in [0, 1] the reward, ``rho[s]`` the
  initial distribution, ``horizon`` = H (static). Time-homogeneous kernels cover every instance used here; a
  horizon-H MDP is then the truncation of a longer one, which the gap-vs-H studies use.
* A (non-stationary, Markov) policy is an array ``pi[h, s, a]`` = pi_h(a | s), h = 0..H-1.
* J(pi) = E[sum_{h<H} r(s_h, a_h)] is computed exactly by backward induction
  V_h(s) = sum_a pi_h(a|s) (r(s, a) + sum_s' P(s'|s, a) V_{h+1}(s')), V_H = 0, J = rho . V_0 (:func:`policy_values`),
  and, equivalently, from the forward state-action occupancies d_h(s, a) (:func:`occupancy`):
  J = sum_h sum_{s,a} d_h(s, a) r(s, a). The per-step expected rewards give J of every truncated horizon at once.

Instances:

* :func:`reset_cliff` - the Reset-Cliff MDP (the no-interaction lower-bound construction of Rajaraman et al. 2020,
  Section 6 / Appendix B.5; used again by Xu, Li, Zhang, Yu, Luo, arXiv:2106.10424 and arXiv:2306.06563): good states
  0..|S|-2 and one absorbing bad state b = |S|-1. At a good state the expert action a_E(s) earns reward 1 and
  resets the state to rho; any other action earns 0 and falls into b, where every action earns 0 forever.
* :func:`lower_bound_rho` - the initial distribution of the lower-bound construction for a dataset of N expert
  trajectories: mass 1 - (|S|-2)/(N+1) on good state 0 and 1/(N+1) on each of the other |S|-2 good states.
* :func:`random_mdp` - Dirichlet transitions and uniform rewards, with its optimal policy as expert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.validate import check_positive, check_positive_int
from rl_theory.precision import storage_dtype


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TabularMDP:
    """An episodic tabular MDP: ``P[s, a, s']``, ``r[s, a]``, ``rho[s]`` (arrays) and ``horizon`` H (static)."""

    P: jax.Array
    r: jax.Array
    rho: jax.Array
    horizon: int = field(metadata={"static": True})

    @property
    def n_states(self) -> int:
        return self.P.shape[-3]

    @property
    def n_actions(self) -> int:
        return self.P.shape[-2]


def tabular_mdp(P: Any, r: Any, rho: Any, horizon: int, *, dtype: Any = None) -> TabularMDP:
    """Build a :class:`TabularMDP` after checking shapes and that P(.|s, a) and rho are distributions.

    Arrays are stored in ``dtype`` (:func:`rl_theory.precision.storage_dtype`: JAX's default float, and an error
    rather than a silent rounding of float64 data to float32 outside x64 mode)."""
    horizon = check_positive_int("horizon", horizon)
    dtype = storage_dtype(dtype, P=P, r=r, rho=rho)
    P_np, r_np, rho_np = (np.asarray(x, dtype=float) for x in (P, r, rho))
    if P_np.ndim != 3 or P_np.shape[0] != P_np.shape[2]:
        raise RatelabError(f"P must have shape [S, A, S], got {P_np.shape}")
    S, A = P_np.shape[:2]
    if r_np.shape != (S, A):
        raise RatelabError(f"r must have shape [S, A] = {(S, A)} to match P, got {r_np.shape}")
    if rho_np.shape != (S,):
        raise RatelabError(f"rho must have shape [S] = {(S,)} to match P, got {rho_np.shape}")
    if np.any(P_np < 0) or not np.allclose(P_np.sum(-1), 1.0, atol=1e-6):
        raise RatelabError("P must be non-negative with P[s, a, :] summing to 1")
    if np.any(rho_np < 0) or not np.isclose(rho_np.sum(), 1.0, atol=1e-6):
        raise RatelabError(f"rho must be a probability vector (non-negative, sum 1), got sum {rho_np.sum():g}")
    if not np.all(np.isfinite(r_np)):
        raise RatelabError("r must be finite")
    return TabularMDP(jnp.asarray(P_np, dtype), jnp.asarray(r_np, dtype), jnp.asarray(rho_np, dtype), horizon)


def check_policy(name: str, pi: Any, mdp: TabularMDP) -> None:
    """``pi`` has shape [H, S, A] with rows that are distributions (concrete arrays only)."""
    shape = (mdp.horizon, mdp.n_states, mdp.n_actions)
    if tuple(np.shape(pi)) != shape:
        raise RatelabError(f"{name} must have shape [H, S, A] = {shape}, got {tuple(np.shape(pi))}")
    if isinstance(pi, jax.core.Tracer):
        return
    arr = np.asarray(pi, dtype=float)
    if np.any(arr < -1e-9) or not np.allclose(arr.sum(-1), 1.0, atol=1e-5):
        raise RatelabError(f"{name}[h, s, :] must be probability vectors (non-negative, summing to 1)")


# ----------------------------------------------------------------------------------------------- evaluation


def policy_values(mdp: TabularMDP, pi: jax.Array, reward: jax.Array | None = None) -> jax.Array:
    """``V[h, s]`` for h = 0..H (V[H] = 0) by backward induction over H (a reversed ``lax.scan``).

    ``reward`` (default ``mdp.r``) is [S, A] or a time-varying [H, S, A].
    """
    r = mdp.r if reward is None else reward
    r = jnp.broadcast_to(r, (mdp.horizon, mdp.n_states, mdp.n_actions))

    def body(v_next, inputs):
        pi_h, r_h = inputs
        q = r_h + mdp.P @ v_next
        v = jnp.sum(pi_h * q, axis=-1)
        return v, v

    v_end = jnp.zeros(mdp.n_states, mdp.P.dtype)
    _, vs = jax.lax.scan(body, v_end, (pi, r), reverse=True)
    return jnp.concatenate([vs, v_end[None]], axis=0)


def expected_return(mdp: TabularMDP, pi: jax.Array, reward: jax.Array | None = None) -> jax.Array:
    """J(pi) = rho . V_0, exactly (backward induction)."""
    return mdp.rho @ policy_values(mdp, pi, reward)[0]


def imitation_gap(mdp: TabularMDP, pi_expert: jax.Array, pi: jax.Array) -> jax.Array:
    """J(pi_E) - J(pi), exactly."""
    return expected_return(mdp, pi_expert) - expected_return(mdp, pi)


def occupancy(mdp: TabularMDP, pi: jax.Array) -> jax.Array:
    """``d[h, s, a]`` = P_pi(s_h = s, a_h = a), forward recursion d_{h+1}(s') = sum_{s,a} d_h(s, a) P(s'|s, a)."""

    def body(state_dist, pi_h):
        d = state_dist[:, None] * pi_h
        return jnp.einsum("sa,sat->t", d, mdp.P), d

    _, d = jax.lax.scan(body, mdp.rho, pi)
    return d


def step_rewards(mdp: TabularMDP, pi: jax.Array) -> jax.Array:
    """``[H]`` expected reward at each step; its cumulative sum is J of every truncated horizon H' <= H."""
    return jnp.einsum("hsa,sa->h", occupancy(mdp, pi), mdp.r)


def greedy_policy(P: jax.Array, reward: jax.Array) -> jax.Array:
    """The optimal deterministic policy ``pi[h, s, a]`` of the horizon-H problem with kernel ``P[s, a, s']`` and
    reward ``reward[h, s, a]``, by backward induction (one-hot, ties to the lowest action, as ``argmax``)."""

    def body(v_next, r_h):
        q = r_h + P @ v_next
        return q.max(-1), jax.nn.one_hot(q.argmax(-1), P.shape[-2], dtype=P.dtype)

    _, pis = jax.lax.scan(body, jnp.zeros(P.shape[0], P.dtype), reward, reverse=True)
    return pis


def value_iteration(mdp: TabularMDP, reward: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """An optimal deterministic policy ``pi[h, s, a]`` (one-hot, ties to the lowest action) and ``V*[h, s]``."""
    r = mdp.r if reward is None else reward
    r = jnp.broadcast_to(r, (mdp.horizon, mdp.n_states, mdp.n_actions))
    pis = greedy_policy(mdp.P, r)
    return pis, policy_values(mdp, pis, r)


# ------------------------------------------------------------------------------------------------- sampling


def _draw(cdf: jax.Array, u: jax.Array) -> jax.Array:
    """Inverse-CDF draw for u ~ U[0, 1): the index i with cdf[i-1] <= u cdf[-1] < cdf[i] (rescaling by cdf[-1]
    keeps rounding in the cumulative sum from ever selecting a zero-probability index)."""
    return jnp.minimum(jnp.sum(u * cdf[-1] >= cdf), cdf.shape[-1] - 1)


def rollout_transitions(mdp: TabularMDP, pi: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
    """One episode under ``pi``: ``states[H]``, ``actions[H]``, ``rewards[H]`` and ``next_states[H]`` (the state
    after each step, the last one included), from a ``lax.scan`` over H.

    All the episode's uniforms are drawn in one call and turned into states/actions by inverse-CDF lookups.
    """
    u = jax.random.uniform(key, (mdp.horizon + 1, 2), mdp.P.dtype)
    s0 = _draw(jnp.cumsum(mdp.rho), u[0, 0])
    cdf_pi = jnp.cumsum(pi, axis=-1)
    cdf_p = jnp.cumsum(mdp.P, axis=-1)

    def body(s, inputs):
        cdf_h, u_h = inputs
        a = _draw(cdf_h[s], u_h[0])
        s_next = _draw(cdf_p[s, a], u_h[1])
        return s_next, (s, a, mdp.r[s, a], s_next)

    _, out = jax.lax.scan(body, s0, (cdf_pi, u[1:]))
    return out


def rollout(mdp: TabularMDP, pi: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One episode under ``pi``: ``states[H]``, ``actions[H]``, ``rewards[H]`` (see :func:`rollout_transitions`)."""
    states, actions, rewards, _ = rollout_transitions(mdp, pi, key)
    return states, actions, rewards


def sample_trajectories(mdp: TabularMDP, pi: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` independent episodes: ``states[n, H]``, ``actions[n, H]`` (``vmap`` of :func:`rollout`)."""
    states, actions, _ = jax.vmap(lambda k: rollout(mdp, pi, k))(jax.random.split(key, n))
    return states, actions


def monte_carlo_return(mdp: TabularMDP, pi: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Mean and standard error of the return over ``n`` sampled episodes."""
    _, _, rewards = jax.vmap(lambda k: rollout(mdp, pi, k))(jax.random.split(key, n))
    g = rewards.sum(-1)
    return g.mean(), g.std(ddof=1) / jnp.sqrt(n)


# ------------------------------------------------------------------------------------------------ instances


def lower_bound_rho(n_states: int, n_trajectories: int) -> np.ndarray:
    """Rajaraman et al. (2020), Appendix B.5: rho = 1 - (|S|-2)/(N+1) on good state 0, 1/(N+1) on good states
    1..|S|-2, 0 on the bad state |S|-1 (so that about (|S|-2)/e good states are missing from N trajectories)."""
    n_states = check_positive_int("n_states", n_states)
    n = check_positive_int("n_trajectories", n_trajectories)
    if n_states < 3:
        raise RatelabError(f"n_states must be >= 3 (two good states and the bad one), got {n_states}")
    if n + 1 <= n_states - 2:
        raise RatelabError(f"n_trajectories must be >= n_states - 2 = {n_states - 2} so that rho is a distribution, "
                           f"got {n}")
    rho = np.zeros(n_states)
    rho[1:-1] = 1.0 / (n + 1)
    rho[0] = 1.0 - (n_states - 2) / (n + 1)
    return rho


def reset_cliff(n_states: int, n_actions: int, horizon: int, rho: Any = None, *, expert_actions: Any = None,
                decoys: int = 0, dtype: Any = None) -> TabularMDP:
    """The Reset-Cliff MDP (see the module docstring); ``rho`` defaults to uniform over the good states.

    ``expert_actions[s]`` is the rewarded action of good state s; the default a_E(s) = s mod |A| differs by state,
    so that no learner's tie-breaking (towards action 0, say) lines up with the expert by accident. ``decoys`` > 0
    adds the known-transition variant constructed here (not from the papers): the ``decoys`` actions a_E(s) + 1,
    ..., a_E(s) + decoys (mod |A|) also reset the state to rho but earn 0, so a learner who knows P cannot tell
    them from the expert's action, while the remaining actions still fall off the cliff (``decoys = n_actions - 1``:
    no cliff is left, every action resets, and a mistake costs one step's reward without compounding).
    The expert (:func:`reset_cliff_expert`) plays a_E(s) and earns H.
    """
    n_states = check_positive_int("n_states", n_states)
    n_actions = check_positive_int("n_actions", n_actions)
    if n_states < 2:
        raise RatelabError(f"n_states must be >= 2 (a good state and the bad one), got {n_states}")
    if n_actions < 2:
        raise RatelabError(f"n_actions must be >= 2 (the expert action and a mistake), got {n_actions}")
    if isinstance(decoys, bool) or not isinstance(decoys, int) or not 0 <= decoys <= n_actions - 1:
        raise RatelabError(f"decoys must be an integer in [0, n_actions - 1] = [0, {n_actions - 1}], got {decoys!r}")
    dtype = storage_dtype(dtype, rho=rho)
    if rho is None:
        rho = np.r_[np.full(n_states - 1, 1.0 / (n_states - 1)), 0.0]
    rho = np.asarray(rho, dtype=float)
    if rho.shape == (n_states,) and rho[-1] != 0:
        raise RatelabError(f"rho must put no mass on the bad state {n_states - 1}, got {rho[-1]:g}")
    bad = n_states - 1
    a_e = np.arange(bad) % n_actions if expert_actions is None else np.asarray(expert_actions)
    if a_e.shape != (bad,) and a_e.shape != (n_states,):
        raise RatelabError(f"expert_actions must have shape [S] = {(n_states,)}, got {a_e.shape}")
    a_e = a_e[:bad]
    if np.any(a_e < 0) or np.any(a_e >= n_actions) or np.any(a_e != np.round(a_e)):
        raise RatelabError(f"expert_actions must hold integers in [0, {n_actions - 1}]")
    a_e = a_e.astype(int)
    goods = np.arange(bad)
    P = np.zeros((n_states, n_actions, n_states))
    P[:bad, :, bad] = 1.0
    for k in range(decoys + 1):
        a = (a_e + k) % n_actions
        P[goods, a, :] = rho
    P[bad, :, bad] = 1.0
    r = np.zeros((n_states, n_actions))
    r[goods, a_e] = 1.0
    return tabular_mdp(P, r, rho, horizon, dtype=dtype)


def reset_cliff_expert(mdp: TabularMDP) -> jax.Array:
    """The deterministic expert of Reset-Cliff: the rewarded action a_E(s) at every good state (action 0 at the bad
    state), at every step."""
    pi = jax.nn.one_hot(jnp.argmax(mdp.r, axis=-1), mdp.n_actions, dtype=mdp.P.dtype)
    return jnp.broadcast_to(pi, (mdp.horizon, mdp.n_states, mdp.n_actions))


def random_mdp(key: jax.Array, n_states: int, n_actions: int, horizon: int, *, concentration: float = 1.0,
               dtype: Any = None) -> TabularMDP:
    """P(.|s, a) ~ Dirichlet(concentration), r ~ U[0, 1], rho ~ Dirichlet(1) (drawn with NumPy's generator seeded
    by ``key``'s data: the instance is a constant, not part of any traced computation)."""
    n_states = check_positive_int("n_states", n_states)
    n_actions = check_positive_int("n_actions", n_actions)
    check_positive("concentration", concentration)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    P = rng.dirichlet(np.full(n_states, concentration), (n_states, n_actions))
    r = rng.uniform(size=(n_states, n_actions))
    rho = rng.dirichlet(np.ones(n_states))
    return tabular_mdp(P / P.sum(-1, keepdims=True), r, rho / rho.sum(), horizon, dtype=storage_dtype(dtype))
