"""Tabular, entropy-regularised MDPs: exact policy evaluation, occupancy measures, soft value iteration, rollouts.

Conventions (those of Shen, Yang & Chen, ICML 2024, arXiv 2402.06886, Sec. 2, with the entropy regulariser
h_s(pi) = sum_a pi(a|s) log pi(a|s)):

* ``P[s, a, s']`` transition kernel, ``r[s, a]`` reward, ``rho[s]`` initial distribution, ``gamma`` discount,
  ``tau >= 0`` regularisation weight.
* V^pi_tau(s) = E[sum_t gamma^t (r(s_t, a_t) - tau log pi(a_t | s_t)) | s_0 = s]: the solution of the linear system
  (I - gamma P_pi) V = r_pi - tau h(pi), with P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'].
* Q^pi(s, a) = r(s, a) + gamma sum_s' P[s, a, s'] V^pi(s').
* Soft Bellman optimality: V*(s) = tau log sum_a exp(Q*(s, a) / tau), pi*(a|s) = softmax(Q*(s, .) / tau); the
  operator is a gamma-contraction in the sup norm, so soft value iteration converges from any start.
* Normalised discounted state occupancy d^pi = (1 - gamma) rho^T (I - gamma P_pi)^{-1}; then
  rho . V^pi = sum_{s,a} d^pi(s) pi(a|s) (r(s,a) - tau log pi(a|s)) / (1 - gamma).

Everything is pure JAX (``lax.scan`` for the iterations) and works under ``vmap``/``grad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from bilevel.precision import float_array
from ratelab.errors import RatelabError
from ratelab.mdp import (  # noqa: F401  (re-exported: the PBRL module and its tests use them from here)
    bellman_matrix,
    evaluate,
    neg_entropy,
    occupancy,
    policy_kernel,
    q_from_v,
    regularized_reward,
    resolvent,
)
from ratelab.validate import check_in_range, check_nonnegative, check_positive, check_positive_int


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class TabularMDP:
    """An entropy-regularised discounted MDP (S states, A actions)."""

    P: jax.Array
    r: jax.Array
    rho: jax.Array
    gamma: jax.Array
    tau: jax.Array

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]


def check_mdp(P: Any, r: Any, rho: Any, gamma: Any, tau: Any) -> None:
    """Shapes, stochasticity and ranges; raises :class:`RatelabError` naming the argument."""
    P_s, r_s, rho_s = jnp.shape(P), jnp.shape(r), jnp.shape(rho)
    if len(P_s) != 3 or P_s[0] != P_s[2] or P_s[0] < 1 or P_s[1] < 1:
        raise RatelabError(f"P must have shape [S, A, S], got {P_s}")
    if r_s != P_s[:2]:
        raise RatelabError(f"r must have shape {P_s[:2]} (S, A) to match P, got {r_s}")
    if rho_s != P_s[:1]:
        raise RatelabError(f"rho must have shape {P_s[:1]} to match P, got {rho_s}")
    if not any(isinstance(a, jax.core.Tracer) for a in (P, rho)):
        Pn, rhon = np.asarray(P, float), np.asarray(rho, float)
        if np.any(Pn < 0) or not np.allclose(Pn.sum(-1), 1.0, atol=1e-6):
            raise RatelabError("P must be row-stochastic: P[s, a, :] >= 0 summing to 1")
        if np.any(rhon < 0) or not np.isclose(rhon.sum(), 1.0, atol=1e-6):
            raise RatelabError("rho must be a probability vector (>= 0, summing to 1)")
    check_in_range("gamma", gamma, 0.0, 1.0, closed="left")
    check_nonnegative("tau", tau)


def tabular_mdp(P: Any, r: Any, rho: Any, *, gamma: float, tau: float) -> TabularMDP:
    """Build a :class:`TabularMDP` after :func:`check_mdp`."""
    check_mdp(P, r, rho, gamma, tau)
    a = lambda v: float_array("tabular_mdp", v)  # noqa: E731  (the caller's precision is kept)
    return TabularMDP(P=a(P), r=a(r), rho=a(rho), gamma=a(gamma), tau=a(tau))


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key's bits (problem generation stays off the compiler: no PRNG kernels
    to compile for a few dozen numbers)."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def random_mdp(key: jax.Array, *, n_states: int, n_actions: int, gamma: float = 0.9, tau: float = 0.1,
               concentration: float = 1.0) -> TabularMDP:
    """Transitions P[s, a] ~ Dirichlet(concentration), rewards ~ U[0, 1], uniform rho (NumPy draws seeded by
    ``key``; stack several instances with :func:`stack` to vmap over them)."""
    check_positive_int("n_states", n_states)
    check_positive_int("n_actions", n_actions)
    check_in_range("gamma", gamma, 0.0, 1.0, closed="left")
    check_nonnegative("tau", tau)
    check_positive("concentration", concentration)
    return draw_mdp(numpy_rng(key), n_states=n_states, n_actions=n_actions, gamma=gamma, tau=tau,
                    concentration=concentration)


def draw_mdp(rng: np.random.Generator, *, n_states: int, n_actions: int, gamma: float, tau: float,
             concentration: float = 1.0) -> TabularMDP:
    """:func:`random_mdp` from a NumPy generator (to draw further problem data from the same stream)."""
    P = rng.dirichlet(np.full(n_states, concentration), size=(n_states, n_actions))
    r = rng.uniform(size=(n_states, n_actions))
    rho = np.full(n_states, 1.0 / n_states)
    return tabular_mdp(P, r, rho, gamma=gamma, tau=tau)


def stack(instances: list) -> Any:
    """Stack same-shaped problem pytrees along a new leading axis (for ``vmap`` over instances)."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *instances)


def softmax_policy(logits: jax.Array) -> jax.Array:
    """pi(a|s) = exp(theta_{s,a}) / sum_b exp(theta_{s,b}) (tabular softmax parameterisation)."""
    return jax.nn.softmax(logits, axis=-1)


def soft_bellman(P: jax.Array, r: jax.Array, V: jax.Array, gamma: Any, tau: Any) -> jax.Array:
    """The soft Bellman optimality operator (T V)(s) = tau log sum_a exp(Q_V(s, a) / tau), tau > 0."""
    return tau * logsumexp(q_from_v(P, r, V, gamma) / tau, axis=-1)


def soft_value_iteration(P: jax.Array, r: jax.Array, gamma: Any, tau: Any, iters: int,
                         V0: jax.Array | None = None) -> jax.Array:
    """``iters`` applications of :func:`soft_bellman` from ``V0`` (zeros by default) in one ``lax.scan``.

    The error after k steps is at most gamma^k ||V0 - V*||_inf (contraction); differentiable by autodiff.
    """
    check_positive_int("iters", iters)
    V = jnp.zeros(P.shape[0], jnp.result_type(P)) if V0 is None else V0
    V, _ = jax.lax.scan(lambda v, _: (soft_bellman(P, r, v, gamma, tau), None), V, None, length=iters)
    return V


def soft_optimal_value(P: jax.Array, r: jax.Array, gamma: Any, tau: Any, iters: int) -> jax.Array:
    """V*_tau(r) by ``iters`` soft-VI steps from zero, differentiated in ``r`` by the implicit function theorem.

    From V* = T_r(V*): dV* = (I - gamma P_{pi*})^{-1} sum_a pi*(a|.) dr(., a), with pi* = softmax(Q*/tau) (the
    derivative of the log-sum-exp is the soft-greedy policy). The rule is itself differentiable, so Hessians (for
    Newton solves) come out exact without differentiating through the iteration. ``P``, ``gamma`` and ``tau`` are
    treated as constants (their tangents are ignored).
    """
    check_positive_int("iters", iters)
    return _soft_optimal_value(iters, P, r, gamma, tau)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _soft_optimal_value(iters: int, P: jax.Array, r: jax.Array, gamma: Any, tau: Any) -> jax.Array:
    V0 = jnp.zeros(P.shape[0], jnp.result_type(r))
    V, _ = jax.lax.scan(lambda v, _: (soft_bellman(P, r, v, gamma, tau), None), V0, None, length=iters)
    return V


@_soft_optimal_value.defjvp
def _soft_optimal_value_jvp(iters, primals, tangents):
    P, r, gamma, tau = primals
    dr = tangents[1]
    V = _soft_optimal_value(iters, P, r, gamma, tau)
    pi = soft_greedy(P, r, V, gamma, tau)
    return V, jnp.linalg.solve(bellman_matrix(P, pi, gamma), jnp.sum(pi * dr, axis=-1))


def soft_greedy(P: jax.Array, r: jax.Array, V: jax.Array, gamma: Any, tau: Any) -> jax.Array:
    """pi(a|s) = softmax(Q_V(s, .) / tau): the optimal regularised policy when V = V*."""
    return jax.nn.softmax(q_from_v(P, r, V, gamma) / tau, axis=-1)


def state_action_occupancy(P: jax.Array, pi: jax.Array, rho: jax.Array, gamma: Any) -> jax.Array:
    """d^pi(s, a) = d^pi(s) pi(a|s) (sums to one)."""
    return occupancy(P, pi, rho, gamma)[:, None] * pi


def sample_returns(key: jax.Array, mdp: TabularMDP, pi: jax.Array, *, episodes: int, horizon: int) -> jax.Array:
    """Monte Carlo: truncated discounted regularised returns sum_{t<H} gamma^t (r - tau log pi) of ``episodes``
    trajectories with s_0 ~ rho, a_t ~ pi(.|s_t), s_{t+1} ~ P(.|s_t, a_t). Returns ``[episodes]``.

    The truncation bias is at most gamma^H max|r - tau log pi| / (1 - gamma).
    """
    episodes = check_positive_int("episodes", episodes)
    horizon = check_positive_int("horizon", horizon)
    logpi = jnp.log(pi)
    k0, kt = jax.random.split(key)
    s0 = jax.random.categorical(k0, jnp.log(mdp.rho), shape=(episodes,))

    def step(carry, k):
        s, disc, ret = carry
        ka, ks = jax.random.split(k)
        a = jax.random.categorical(ka, logpi[s])
        reward = jnp.asarray(mdp.r)[s, a] - mdp.tau * logpi[s, a]  # (a float64 leaf may be NumPy: bilevel.precision)
        s_next = jax.random.categorical(ks, jnp.log(jnp.asarray(mdp.P)[s, a]))
        return (s_next, disc * mdp.gamma, ret + disc * reward), None

    def one(s, k):
        init = (s, jnp.ones((), jnp.result_type(mdp.r)), jnp.zeros((), jnp.result_type(mdp.r)))
        (_, _, ret), _ = jax.lax.scan(step, init, jax.random.split(k, horizon))
        return ret

    return jax.vmap(one)(s0, jax.random.split(kt, episodes))
