"""A3C-TD(0): asynchronous advantage actor-critic with a linear TD(0) critic, simulated exactly inside ``lax.scan``.

Paper
-----
H. Shen, K. Zhang, M. Hong and T. Chen, "Asynchronous Advantage Actor Critic: Non-asymptotic Analysis and Linear
Speedup", arXiv:2012.15511 (2020); journal version "Towards Understanding Asynchronous Advantage Actor-Critic:
Convergence and Linear Speedup", IEEE Trans. Signal Processing, 2023.

Algorithm 1 (each worker's view) with the shared-memory update (9):

    omega_{k+1} = Pi_{R_omega}(omega_k + beta_k g(x_(k), omega_{k - tau_k})),                 (9a)
    theta_{k+1} = theta_k + alpha_k v(x_(k), theta_{k - tau_k}, omega_{k - tau_k}),            (9b)

g = delta phi(s), v = delta psi_theta(s, a), delta = r(s, a, s') + gamma phi(s')^T omega - phi(s)^T omega (eqs.
(6)-(8)); steps alpha_k = c1 / (1 + k)^sigma1 (actor) and beta_k = c2 / (1 + k)^sigma2 (critic), sigma1 = 3/5,
sigma2 = 2/5 (Corollary 1); delays tau_k <= K0 (Assumption 1).

Simulation. Iteration k is one write to shared memory by worker w_k, computed from the parameter version
k - tau_k it read. A ring buffer holds the versions of (theta, omega) a read may need (the last K0 + 1, or the
last N snapshots for the round robin); each worker keeps its own Markov chain (the paper's Option 2): from its
state s it draws a ~ pi(.|s) and s' ~ P(.|s, a) for the TD error and the actor, and its chain moves on by
P~ = gamma P + (1 - gamma) eta (s' with probability gamma, a fresh eta draw otherwise), whose stationary law
mu_theta is the discounted visitation d_theta. Delay models (``delay``):

* ``"round_robin"``: w_k = k mod N; the worker read right after its previous write, so tau_k = min(k, N - 1)
  (K0 = N - 1, the paper's remark K0 = Theta(N)). ``staleness`` s > 1 (constructed here, a stress test beyond the
  theory's regime, used as a negative control): shared memory keeps a snapshot every s writes and a worker reads
  the snapshot N - 1 before the latest, so tau_k = k - s max(floor(k / s) - (N - 1), 0), between s (N - 1) and
  s N - 1 once k >= s (N - 1) (s = 1 is the plain round robin; memory stays N snapshots for any s);
* ``"random"``: w_k uniform on the N workers, tau_k uniform on {0, ..., min(k, K0)} (``max_delay`` = K0);
* ``"zero"``: w_k = k mod N, tau_k = 0 (no staleness).

Symbols -> arguments: N = ``num_workers`` (may be traced, up to the static ``max_workers``), alpha_k / beta_k =
``actor_step`` / ``critic_step`` (floats or schedules; :func:`paper_steps`), R_omega = ``radius``, K0 =
``max_delay``, s = ``staleness``. All randomness is exogenous
(six uniforms per step, drawn in bulk), so a run is reproducible and vmaps over seeds and N.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule, power_decay
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_positive, check_positive_int, is_traced
from rl_theory.linear_mdp import LinearMDP, sample_index

DELAYS = ("round_robin", "random", "zero")
N_UNIFORMS = 6  # action, next state, reset, eta draw, worker, delay


class A3CState(NamedTuple):
    theta: jax.Array
    omega: jax.Array
    ring_theta: jax.Array  # [B, d_theta]: version j stored at slot j mod B
    ring_omega: jax.Array  # [B, d_omega]
    chains: jax.Array  # [max_workers] each worker's current state
    count: jax.Array


class ACState(NamedTuple):
    theta: jax.Array
    omega: jax.Array
    s: jax.Array
    count: jax.Array


def paper_steps(c1: Any = 1.0, c2: Any = 1.0, sigma1: float = 0.6, sigma2: float = 0.4) -> tuple[Any, Any]:
    """(alpha_k, beta_k) = (c1 / (1 + k)^sigma1, c2 / (1 + k)^sigma2): the actor and critic steps of Corollary 1."""
    if not 0 < sigma2 < sigma1 < 1:
        raise RatelabError(f"sigma1, sigma2 must satisfy 0 < sigma2 < sigma1 < 1, got {sigma1}, {sigma2}")
    return power_decay(c1, 1.0, sigma1), power_decay(c2, 1.0, sigma2)


def _project(omega: jax.Array, radius: Any) -> jax.Array:
    norm = jnp.linalg.norm(omega)
    return omega * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))


def _transition(mdp: LinearMDP, theta: jax.Array, omega: jax.Array, s: jax.Array, u: jax.Array):
    """One sample x = (s, a, s') under pi_theta and the semi-gradients g, v of eqs. (6)-(8); the chain's next state."""
    pi = mdp.policy(theta, s)
    a = sample_index(jnp.cumsum(pi), u[0])
    s2 = sample_index(mdp.P_cdf[s, a], u[1])
    delta = mdp.R[s, a, s2] + mdp.gamma * mdp.phi[s2] @ omega - mdp.phi[s] @ omega
    g = delta * mdp.phi[s]
    v = delta * mdp.score(theta, s, a)
    s_next = jnp.where(u[2] < mdp.gamma, s2, sample_index(mdp.eta_cdf, u[3]))
    return g, v, s_next


METRICS = ("exact", "none")


def _metrics(mdp: LinearMDP, theta: jax.Array, omega: jax.Array, which: str) -> dict[str, jax.Array]:
    if which == "none":
        return {}
    exact = mdp.exact(theta)  # one factorisation of I - gamma P_pi serves the three metrics
    grad = mdp.grad_J(theta, exact)
    gap = omega - mdp.critic_target(theta, exact)
    return {"grad_norm_sq": grad @ grad, "J": mdp.eta @ exact.V, "critic_gap_sq": gap @ gap}


def _init_weights(mdp: LinearMDP) -> tuple[jax.Array, jax.Array]:
    dt = mdp.phi.dtype
    return jnp.zeros(mdp.theta_dim, dt), jnp.zeros(mdp.omega_dim, dt)


def _sample(problem: LinearMDP, key: jax.Array, n: int) -> jax.Array:
    return jax.random.uniform(key, (n, N_UNIFORMS), problem.phi.dtype)


def a3c_td0(actor_step: Any, critic_step: Any, *, num_workers: Any = 1, max_workers: int | None = None,
            delay: str = "round_robin", max_delay: int | None = None, staleness: Any = 1, radius: Any = 10.0,
            metrics: str = "exact") -> Solver:
    """A3C-TD(0) (Shen et al., Algorithm 1 / eq. (9)) with N workers and bounded delays, simulated exactly.

    Args:
      actor_step: alpha_k (float or schedule), e.g. ``paper_steps(c1, c2)[0]``.
      critic_step: beta_k (float or schedule).
      num_workers: N; an int, or a traced value in a sweep (then ``max_workers`` must be given).
      max_workers: static upper bound on N (sizes the per-worker chains and the ring buffer); default N.
      delay: ``"round_robin"`` (tau_k = min(k, N - 1); with staleness s, see the module docstring),
        ``"random"`` (tau_k ~ U{0..min(k, K0)}) or ``"zero"``.
      max_delay: K0 for ``"random"`` (default max_workers - 1).
      staleness: s >= 1 for ``"round_robin"`` (1: the natural round robin); an integer, or traced in a sweep.
      radius: R_omega of the critic projection Pi_{R_omega}.
      metrics: ``"exact"`` (below) or ``"none"`` (only ``delay`` and ``worker``: no linear solves, faster to compile).

    Metrics (exact, from :class:`LinearMDP`): ``grad_norm_sq`` = ||grad J(theta_{k+1})||^2, ``J`` = J(theta_{k+1}),
    ``critic_gap_sq`` = ||omega_{k+1} - omega*_{theta_{k+1}}||^2, ``delay`` = tau_k, ``worker`` = w_k.
    """
    check_choice("metrics", metrics, METRICS)
    check_positive("actor_step", actor_step)
    check_positive("critic_step", critic_step)
    check_positive("radius", radius)
    check_choice("delay", delay, DELAYS)
    if is_traced(num_workers):
        if max_workers is None:
            raise RatelabError("max_workers must be given when num_workers is traced (a sweep over N)")
    else:
        if isinstance(num_workers, Real) and not isinstance(num_workers, Integral) and float(num_workers).is_integer():
            num_workers = int(num_workers)  # a sweep hands its values over as floats
        num_workers = check_positive_int("num_workers", num_workers)
        max_workers = num_workers if max_workers is None else max_workers
        if num_workers > max_workers:
            raise RatelabError(f"num_workers must be <= max_workers ({max_workers}), got {num_workers}")
    max_workers = check_positive_int("max_workers", max_workers)
    if not is_traced(staleness):
        if isinstance(staleness, Real) and float(staleness).is_integer():
            staleness = int(staleness)  # a sweep hands its values over as floats
        staleness = check_positive_int("staleness", staleness)
        if staleness != 1 and delay != "round_robin":
            raise RatelabError(f"staleness applies only to delay='round_robin', got delay={delay!r}")
    if delay == "random":
        max_delay = max_workers - 1 if max_delay is None else max_delay
        if isinstance(max_delay, bool) or not isinstance(max_delay, Integral) or max_delay < 0:
            raise RatelabError(f"max_delay must be an integer >= 0, got {max_delay!r}")
        K0 = int(max_delay)
        B = K0 + 1  # one slot per version
    else:
        if max_delay is not None:
            raise RatelabError(f"max_delay applies only to delay='random', got delay={delay!r}")
        B = max_workers  # round robin: one slot per snapshot (every s-th version), N of them are live
    alpha, beta = as_schedule(actor_step), as_schedule(critic_step)

    def init(mdp: LinearMDP, key: jax.Array) -> A3CState:
        theta, omega = _init_weights(mdp)
        chains = sample_index(mdp.eta_cdf, jax.random.uniform(key, (max_workers,), mdp.phi.dtype))
        return A3CState(theta, omega, jnp.broadcast_to(theta, (B, theta.size)),
                        jnp.broadcast_to(omega, (B, omega.size)), chains, jnp.zeros((), jnp.int32))

    def step(state: A3CState, mdp: LinearMDP, u: jax.Array) -> tuple[A3CState, dict[str, jax.Array]]:
        k = state.count
        n = jnp.asarray(num_workers).astype(jnp.int32)
        stride = jnp.asarray(staleness).astype(jnp.int32) if delay == "round_robin" else jnp.int32(1)
        if delay == "random":
            w = jnp.minimum((u[4] * n).astype(jnp.int32), n - 1)
            top = jnp.minimum(k, K0)
            tau = jnp.minimum((u[5] * (top + 1)).astype(jnp.int32), top)
            slot = (k - tau) % B
        else:
            w = k % n
            snap = jnp.maximum(k // stride - (n - 1), 0)  # the snapshot read: version stride * snap
            tau = jnp.zeros_like(k) if delay == "zero" else k - stride * snap
            slot = snap % B
        theta_r, omega_r = state.ring_theta[slot], state.ring_omega[slot]
        if delay == "zero":
            theta_r, omega_r = state.theta, state.omega
        g, v, s_next = _transition(mdp, theta_r, omega_r, state.chains[w], u)
        dt = state.theta.dtype
        omega = _project(state.omega + jnp.asarray(beta(k), dt) * g, radius)
        theta = state.theta + jnp.asarray(alpha(k), dt) * v
        # store version k + 1 (round robin: only every stride-th version, as snapshot (k + 1) / stride)
        write = (k + 1) % stride == 0
        new = ((k + 1) // stride) % B
        ring_theta = state.ring_theta.at[new].set(jnp.where(write, theta, state.ring_theta[new]))
        ring_omega = state.ring_omega.at[new].set(jnp.where(write, omega, state.ring_omega[new]))
        state = A3CState(theta, omega, ring_theta, ring_omega, state.chains.at[w].set(s_next), k + 1)
        return state, {**_metrics(mdp, theta, omega, metrics), "delay": tau.astype(dt), "worker": w.astype(dt)}

    return Solver(init, step, _sample)


def actor_critic(actor_step: Any, critic_step: Any, *, radius: Any = 10.0, metrics: str = "exact") -> Solver:
    """Sequential two-timescale actor-critic, eqs. (6) and (8): one worker, no delay (the N = 1, tau = 0 case of
    A3C-TD(0)), written without ring buffer or worker bookkeeping; same samples, same metrics."""
    check_positive("actor_step", actor_step)
    check_positive("critic_step", critic_step)
    check_positive("radius", radius)
    check_choice("metrics", metrics, METRICS)
    alpha, beta = as_schedule(actor_step), as_schedule(critic_step)

    def init(mdp: LinearMDP, key: jax.Array) -> ACState:
        theta, omega = _init_weights(mdp)
        s = sample_index(mdp.eta_cdf, jax.random.uniform(key, (1,), mdp.phi.dtype))[0]
        return ACState(theta, omega, s, jnp.zeros((), jnp.int32))

    def step(state: ACState, mdp: LinearMDP, u: jax.Array) -> tuple[ACState, dict[str, jax.Array]]:
        k = state.count
        g, v, s_next = _transition(mdp, state.theta, state.omega, state.s, u)
        dt = state.theta.dtype
        omega = _project(state.omega + jnp.asarray(beta(k), dt) * g, radius)
        theta = state.theta + jnp.asarray(alpha(k), dt) * v
        zero = jnp.zeros((), dt)
        return ACState(theta, omega, s_next, k + 1), {**_metrics(mdp, theta, omega, metrics), "delay": zero,
                                                      "worker": zero}

    return Solver(init, step, _sample)
