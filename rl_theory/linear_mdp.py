"""Finite MDPs with linear features, softmax policies and exact (linear-algebra) values and policy gradients.

The synthetic environment of Shen, Zhang, Hong & Chen, "Asynchronous Advantage Actor Critic: Non-asymptotic
Analysis and Linear Speedup" (arXiv:2012.15511), Section 5.1: |S| = 100 states, |A| = 5 actions, critic features
phi(s) in R^10; transition probabilities, rewards and features drawn from U(0, 1), then normalised (rows of P to
probability vectors, ||phi(s)||_2 = 1 as in its Assumption 2). The policy is a softmax over policy features
x(s, a) in R^{d_theta}: pi_theta(a|s) ∝ exp(theta^T x(s, a)); ``policy="tabular"`` (the paper's choice) makes
x(s, a) the one-hot vector of (s, a), so d_theta = |S||A|.

Symbols -> fields: P(s'|s, a) = ``P[s, a, s']``, r(s, a, s') = ``R[s, a, s']``, gamma = ``gamma``, the initial
distribution eta = ``eta``, phi(s) = ``phi[s]``, x(s, a) = ``X[s, a]``.

Exact quantities (all from linear solves, no Monte Carlo): V_pi = (I - gamma P_pi)^{-1} r_pi, J(theta) = eta^T V_pi
(eq. (3)); the discounted visitation d_theta = (1 - gamma) eta^T (I - gamma P_pi)^{-1}, which is also the stationary
law mu_theta of the kernel P~ = gamma P + (1 - gamma) eta; the policy gradient (eq. (4), with the 1/(1 - gamma) of the
policy gradient theorem) grad J = 1/(1 - gamma) sum_s d(s) sum_a pi(a|s) A_pi(s, a) psi_theta(s, a), where
psi = grad log pi = x(s, a) - sum_b pi(b|s) x(s, b); the TD(0) fixed point omega*_theta solving
A_theta omega + b_theta = 0 with A_theta = E_{s~mu, s'~P_pi}[phi(s)(gamma phi(s') - phi(s))^T],
b_theta = E[r phi(s)] (eq. (10)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.mdp import evaluate, evaluate_with_occupancy, occupancy, policy_kernel, q_from_v
from ratelab.validate import check_choice, check_in_range, check_positive_int
from rl_theory.precision import device_array, storage_dtype

POLICIES = ("tabular", "features")


class Exact(NamedTuple):
    """What exact policy evaluation gives at one theta: pi ``[S, A]``, V_pi ``[S]``, Q_pi ``[S, A]``, d_theta
    ``[S]`` (:meth:`LinearMDP.exact`)."""

    pi: jax.Array
    V: jax.Array
    Q: jax.Array
    d: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class LinearMDP:
    """A finite discounted MDP with critic features ``phi`` and softmax-policy features ``X``."""

    P: jax.Array  # [S, A, S]
    P_cdf: jax.Array  # [S, A, S] cumulative sums of P (inverse-CDF sampling)
    R: jax.Array  # [S, A, S]
    eta: jax.Array  # [S]
    eta_cdf: jax.Array  # [S]
    phi: jax.Array  # [S, d]
    X: jax.Array  # [S, A, d_theta]
    gamma: jax.Array
    r_max: float = field(metadata={"static": True})
    tabular: bool = field(metadata={"static": True})

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def theta_dim(self) -> int:
        return self.X.shape[-1]

    @property
    def omega_dim(self) -> int:
        return self.phi.shape[-1]

    # ---------------------------------------------------------------------------------------------------- policy

    def logits(self, theta: jax.Array, s: jax.Array | None = None) -> jax.Array:
        """theta^T x(s, a): ``[A]`` for one state, ``[S, A]`` for all."""
        if self.tabular:
            table = theta.reshape(self.n_states, self.n_actions)
            return table if s is None else table[s]
        return (self.X if s is None else self.X[s]) @ theta

    def policy(self, theta: jax.Array, s: jax.Array | None = None) -> jax.Array:
        return jax.nn.softmax(self.logits(theta, s), axis=-1)

    def score(self, theta: jax.Array, s: jax.Array, a: jax.Array) -> jax.Array:
        """psi_theta(s, a) = grad_theta log pi_theta(a|s) = x(s, a) - sum_b pi(b|s) x(s, b)."""
        pi = self.policy(theta, s)
        if self.tabular:
            row = jax.nn.one_hot(a, self.n_actions, dtype=theta.dtype) - pi
            return jnp.zeros((self.n_states, self.n_actions), theta.dtype).at[s].set(row).reshape(-1)
        return self.X[s, a] - pi @ self.X[s]

    # ---------------------------------------------------------------------------------------------- exact values

    def expected_reward(self) -> jax.Array:
        """r(s, a) = sum_s' P(s'|s, a) r(s, a, s'), ``[S, A]``."""
        return jnp.einsum("sat,sat->sa", self.P, self.R)

    def values(self, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(V_pi [S], Q_pi [S, A])."""
        r_sa = self.expected_reward()
        V = evaluate(self.P, r_sa, self.policy(theta), self.gamma)
        return V, q_from_v(self.P, r_sa, V, self.gamma)

    def J(self, theta: jax.Array) -> jax.Array:
        """J(theta) = E_{s ~ eta} V_pi(s)."""
        return self.eta @ self.values(theta)[0]

    def visitation(self, theta: jax.Array) -> jax.Array:
        """d_theta = (1 - gamma) eta^T (I - gamma P_pi)^{-1}: the stationary law of gamma P_pi + (1 - gamma) eta."""
        return occupancy(self.P, self.policy(theta), self.eta, self.gamma)

    def exact(self, theta: jax.Array) -> Exact:
        """pi_theta, V_pi, Q_pi and d_theta from one factorisation of I - gamma P_pi (what :meth:`values` and
        :meth:`visitation` give); :meth:`grad_J` and :meth:`critic_target` take it to share it."""
        pi = self.policy(theta)
        r_sa = self.expected_reward()
        V, d = evaluate_with_occupancy(self.P, r_sa, pi, self.eta, self.gamma)
        return Exact(pi, V, q_from_v(self.P, r_sa, V, self.gamma), d)

    def grad_J(self, theta: jax.Array, exact: Exact | None = None) -> jax.Array:
        """The exact policy gradient (policy gradient theorem), ``[d_theta]``; ``exact``: :meth:`exact` (theta)."""
        pi, V, Q, d = self.exact(theta) if exact is None else exact
        w = d[:, None] * pi * (Q - V[:, None]) / (1 - self.gamma)  # [S, A]: weight of psi(s, a)
        if self.tabular:
            return w.reshape(-1)  # sum_a w(s, a) (e_{sa} - sum_b pi(b|s) e_{sb}) = w(s, a): advantages sum to 0
        mean_x = jnp.einsum("sb,sbk->sk", pi, self.X)
        return jnp.einsum("sa,sak->k", w, self.X - mean_x[:, None, :])

    def td_system(self, theta: jax.Array, exact: Exact | None = None) -> tuple[jax.Array, jax.Array]:
        """(A_theta, b_theta) of eq. (10), with s ~ mu_theta = d_theta, a ~ pi, s' ~ P(.|s, a)."""
        pi, d = (self.policy(theta), self.visitation(theta)) if exact is None else (exact.pi, exact.d)
        Phi = self.phi
        A = Phi.T @ (d[:, None] * (self.gamma * policy_kernel(self.P, pi) @ Phi - Phi))
        b = Phi.T @ (d * jnp.sum(pi * self.expected_reward(), axis=1))
        return A, b

    def critic_target(self, theta: jax.Array, exact: Exact | None = None) -> jax.Array:
        """omega*_theta with A_theta omega* + b_theta = 0; ``exact``: :meth:`exact` (theta), to share its d_theta."""
        A, b = self.td_system(theta, exact)
        return jnp.linalg.solve(A, -b)

    def optimal_J(self, iters: int = 2000) -> float:
        """max_pi J(pi) by value iteration (the upper limit of the running reward)."""
        r_sa = np.einsum("sat,sat->sa", np.asarray(self.P, float), np.asarray(self.R, float))
        P = np.asarray(self.P, float)
        g = float(self.gamma)
        V = np.zeros(self.n_states)
        for _ in range(iters):
            V = np.max(r_sa + g * P @ V, axis=1)
        return float(np.asarray(self.eta, float) @ V)


def make_linear_mdp(key: jax.Array, *, n_states: int = 100, n_actions: int = 5, feature_dim: int = 10,
                    gamma: float = 0.9, policy: str = "tabular", policy_dim: int = 10,
                    eta: str = "uniform", reward: str = "sa") -> LinearMDP:
    """The paper's synthetic MDP: P, r, phi ~ U(0, 1), rows of P normalised, ||phi(s)|| = 1.

    ``policy="tabular"`` (the paper) uses one-hot x(s, a); ``"features"`` draws x(s, a) ~ U(0, 1) of dimension
    ``policy_dim``, normalised to unit norm. ``eta``: ``"uniform"`` or ``"random"`` (U(0, 1), normalised).
    ``reward``: ``"sa"`` draws one U(0, 1) reward per (s, a) (the paper's reward matrix, r(s, a, s') = r(s, a)),
    ``"sas"`` one per transition (s, a, s').
    """
    n_states = check_positive_int("n_states", n_states)
    n_actions = check_positive_int("n_actions", n_actions)
    feature_dim = check_positive_int("feature_dim", feature_dim)
    check_in_range("gamma", gamma, 0.0, 1.0, closed="neither")
    check_choice("policy", policy, POLICIES)
    check_choice("eta", eta, ("uniform", "random"))
    check_choice("reward", reward, ("sa", "sas"))
    if policy == "features":
        policy_dim = check_positive_int("policy_dim", policy_dim)
    kp, kr, kf, kx, ke = jax.random.split(key, 5)
    P = np.array(jax.random.uniform(kp, (n_states, n_actions, n_states)), dtype=float)
    P /= P.sum(axis=-1, keepdims=True)
    R = np.array(jax.random.uniform(kr, (n_states, n_actions, n_states if reward == "sas" else 1)), dtype=float)
    R = np.broadcast_to(R, (n_states, n_actions, n_states))
    phi = np.array(jax.random.uniform(kf, (n_states, feature_dim)), dtype=float)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    if policy == "tabular":
        X = np.eye(n_states * n_actions).reshape(n_states, n_actions, n_states * n_actions)
    else:
        X = np.array(jax.random.uniform(kx, (n_states, n_actions, policy_dim)), dtype=float)
        X /= np.linalg.norm(X, axis=-1, keepdims=True)
    if eta == "uniform":
        e = np.full(n_states, 1.0 / n_states)
    else:
        e = np.array(jax.random.uniform(ke, (n_states,)), dtype=float)
    e = e / e.sum()
    return _assemble(P, R, phi, X, e, gamma, storage_dtype(), tabular=policy == "tabular")


def _assemble(P: np.ndarray, R: np.ndarray, phi: np.ndarray, X: np.ndarray, e: np.ndarray, gamma: Any, dt: Any, *,
              tabular: bool) -> LinearMDP:
    cdf = np.cumsum(P, axis=-1)
    cdf[..., -1] = 1.0
    ecdf = np.cumsum(e)
    ecdf[-1] = 1.0
    return LinearMDP(P=device_array(P, dt), P_cdf=device_array(cdf, dt), R=device_array(R, dt),
                     eta=device_array(e, dt), eta_cdf=device_array(ecdf, dt), phi=device_array(phi, dt),
                     X=device_array(X, dt), gamma=device_array(gamma, dt), r_max=float(R.max()), tabular=tabular)


def _finite(name: str, value: Any, ndim: int, shape: tuple, why: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise RatelabError(f"{name} must be an array of real numbers, got {type(value).__name__}") from None
    if arr.ndim != ndim or any(want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)):
        want = "[" + ", ".join("?" if w is None else str(w) for w in shape) + "]"
        raise RatelabError(f"{name} must have shape {want} ({why}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RatelabError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} non-finite entries")
    return arr


def _distribution(name: str, arr: np.ndarray) -> None:
    low = float(arr.min())
    if low < 0:
        raise RatelabError(f"{name} must be nonnegative (probabilities); its smallest entry is {low:.6g}")
    err = float(np.max(np.abs(arr.sum(axis=-1) - 1.0)))
    if err > 1e-9:
        raise RatelabError(f"{name} must sum to 1 over its last axis; the largest deviation is {err:.3g}")


def linear_mdp(P: Any, R: Any, phi: Any, *, gamma: float, X: Any = None, eta: Any = None,
               dtype: Any = None) -> LinearMDP:
    """A :class:`LinearMDP` from the user's own arrays (the paper's symbols): transition kernel P ``[S, A, S]``
    (rows nonnegative, summing to 1), reward R ``[S, A, S]`` (r(s, a, s')) or ``[S, A]`` (r(s, a)), critic features
    phi ``[S, d]`` of full column rank (else the TD(0) fixed point omega* is not unique; the smallest singular value
    is in the error), softmax-policy features X ``[S, A, d_theta]`` (None: tabular, one-hot x(s, a)), initial law
    eta ``[S]`` (None: uniform), discount gamma in (0, 1). Stored in ``dtype`` (default as
    :func:`rl_theory.precision.storage_dtype`: JAX's default float, and float64 input that float32 would round is
    refused outside x64 mode). Every check runs before any computation."""
    P_ = _finite("P", P, 3, (None, None, None), "[S, A, S]")
    S, A = P_.shape[:2]
    if P_.shape[2] != S:
        raise RatelabError(f"P must have shape [S, A, S] with the same S first and last, got {P_.shape}")
    _distribution("P", P_)
    if np.ndim(R) == 2:  # r(s, a): the same reward whatever s'
        R_ = np.broadcast_to(_finite("R", R, 2, (S, A), "[S, A], from P")[:, :, None], (S, A, S))
    else:
        R_ = _finite("R", R, 3, (S, A, S), "[S, A, S] or [S, A], from P")
    phi_ = _finite("phi", phi, 2, (S, None), "[S, d], S from P")
    sv = float(np.linalg.svd(phi_, compute_uv=False).min()) if phi_.shape[1] <= S else 0.0
    if sv <= 1e-12 * max(1.0, float(np.abs(phi_).max())):
        raise RatelabError(f"phi must have full column rank (d <= S and independent columns, so that the TD(0) "
                           f"system has a unique solution); its smallest singular value is {sv:.3g}")
    tabular = X is None
    X_ = (np.eye(S * A).reshape(S, A, S * A) if tabular
          else _finite("X", X, 3, (S, A, None), "[S, A, d_theta], S and A from P"))
    e = np.full(S, 1.0 / S) if eta is None else _finite("eta", eta, 1, (S,), "[S], from P")
    _distribution("eta", e)
    check_in_range("gamma", gamma, 0.0, 1.0, closed="neither")
    dt = storage_dtype(dtype, P=P_, R=R_, phi=phi_, X=X_, eta=e)
    return _assemble(P_, R_, phi_, X_, e, gamma, dt, tabular=tabular)


def sample_index(cdf: jax.Array, u: jax.Array) -> jax.Array:
    """Inverse-CDF draw: the first i with u < cdf[i] (``u ~ U(0, 1)``, a scalar or a batch of draws)."""
    u = jnp.asarray(u)
    return jnp.minimum(jnp.sum(cdf <= u[..., None], axis=-1), cdf.shape[-1] - 1).astype(jnp.int32)


def rollout_returns(mdp: LinearMDP, theta: jax.Array, key: jax.Array, n: int, horizon: int) -> jax.Array:
    """``[n]`` Monte Carlo discounted returns sum_{t < horizon} gamma^t r_t from s_0 ~ eta under pi_theta."""
    check_positive_int("n", n)
    check_positive_int("horizon", horizon)
    pi = mdp.policy(theta)
    pi_cdf = jnp.cumsum(pi, axis=-1)

    def one(k):
        k0, k1 = jax.random.split(k)
        s0 = sample_index(mdp.eta_cdf, jax.random.uniform(k0))

        def body(carry, u):
            s, disc, total = carry
            a = sample_index(pi_cdf[s], u[0])
            s2 = sample_index(mdp.P_cdf[s, a], u[1])
            return (s2, disc * mdp.gamma, total + disc * mdp.R[s, a, s2]), None

        us = jax.random.uniform(k1, (horizon, 2))
        (_, _, total), _ = jax.lax.scan(body, (s0, jnp.ones((), pi.dtype), jnp.zeros((), pi.dtype)), us)
        return total

    return jax.vmap(one)(jax.random.split(key, n))
