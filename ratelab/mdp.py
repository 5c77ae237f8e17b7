"""Discounted finite MDPs by linear algebra: the exact policy evaluation both RL families share.

``P[s, a, s']`` transition kernel, ``r[s, a]`` (expected) reward, ``pi[s, a]`` a stochastic policy, ``gamma`` the
discount, ``tau >= 0`` an entropy-regularisation weight (``h_s(pi) = sum_a pi(a|s) log pi(a|s)``):

* V^pi_tau solves (I - gamma P_pi) V = r_pi - tau h(pi), with P_pi[s, s'] = sum_a pi(a|s) P[s, a, s'];
* Q^pi(s, a) = r(s, a) + gamma sum_s' P[s, a, s'] V^pi(s');
* the normalised discounted occupancy d^pi = (1 - gamma) rho^T (I - gamma P_pi)^{-1}.

Pure JAX; works under ``vmap`` / ``grad``. Used by ``bilevel.tabular_mdp`` (PBRL) and ``rl_theory.linear_mdp``
(A3C-TD(0)).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.linalg import lu_factor, lu_solve
from jax.scipy.special import xlogy


def policy_kernel(P: jax.Array, pi: jax.Array) -> jax.Array:
    """P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']."""
    return jnp.einsum("sa,sat->st", pi, P)


def neg_entropy(pi: jax.Array) -> jax.Array:
    """h_s(pi) = sum_a pi(a|s) log pi(a|s) (0 log 0 = 0)."""
    return jnp.sum(xlogy(pi, pi), axis=-1)


def regularized_reward(r: jax.Array, pi: jax.Array, tau: Any) -> jax.Array:
    """r_pi(s) - tau h_s(pi) = sum_a pi(a|s) r(s, a) - tau sum_a pi log pi."""
    return jnp.sum(pi * r, axis=-1) - tau * neg_entropy(pi)


def resolvent(P: jax.Array, pi: jax.Array, gamma: Any) -> jax.Array:
    """(I - gamma P_pi)^{-1} = sum_t (gamma P_pi)^t."""
    return jnp.linalg.inv(bellman_matrix(P, pi, gamma))


def bellman_matrix(P: jax.Array, pi: jax.Array, gamma: Any) -> jax.Array:
    """I - gamma P_pi: the matrix of policy evaluation's linear system."""
    return jnp.eye(P.shape[0], dtype=P.dtype) - gamma * policy_kernel(P, pi)


def evaluate(P: jax.Array, r: jax.Array, pi: jax.Array, gamma: Any, tau: Any = 0.0) -> jax.Array:
    """Exact V^pi_tau: solve (I - gamma P_pi) V = r_pi - tau h(pi)."""
    return jnp.linalg.solve(bellman_matrix(P, pi, gamma), regularized_reward(r, pi, tau))


def q_from_v(P: jax.Array, r: jax.Array, V: jax.Array, gamma: Any) -> jax.Array:
    """Q(s, a) = r(s, a) + gamma sum_s' P[s, a, s'] V(s')."""
    return r + gamma * jnp.einsum("sat,t->sa", P, V)


def evaluate_with_occupancy(P: jax.Array, r: jax.Array, pi: jax.Array, rho: jax.Array, gamma: Any,
                            tau: Any = 0.0) -> tuple[jax.Array, jax.Array]:
    """(V^pi_tau, d^pi) from one LU factorisation of I - gamma P_pi: V solves the system, d its transpose (what
    :func:`evaluate` and :func:`occupancy` return, for half the factorisations)."""
    lu = lu_factor(bellman_matrix(P, pi, gamma))
    V = lu_solve(lu, regularized_reward(r, pi, tau))
    return V, (1.0 - gamma) * lu_solve(lu, rho, trans=1)


def occupancy(P: jax.Array, pi: jax.Array, rho: jax.Array, gamma: Any) -> jax.Array:
    """Normalised discounted state occupancy d^pi(s) = (1 - gamma) [rho^T (I - gamma P_pi)^{-1}](s)."""
    return (1.0 - gamma) * jnp.linalg.solve(bellman_matrix(P, pi, gamma).T, rho)
