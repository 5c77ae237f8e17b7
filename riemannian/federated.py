"""Federated optimisation on manifolds: RFedSVRG, and the baselines Riemannian FedAvg and FedProx.

Paper: Jiaxiang Li and Shiqian Ma, "Federated Learning on Riemannian Manifolds", arXiv:2206.05668, 2022.
Problem: min_{x in M} f(x) = (1/n) sum_i f_i(x), f_i held by client i. (The algorithm is restated here from the
paper and its authors' public experiment code, github.com/JasonJiaxiangLi/Fed_manifold: kPCA on St(200, 5) with
n = 100 clients of p = 100 Gaussian samples, k = 10 clients per round, tau in {1, 10, 50, 100}, FedProx mu = 50.)

RFedSVRG (the paper's Algorithm 1), one communication round t:

1. the server broadcasts x^t and collects grad f(x^t) = (1/n) sum_i grad f_i(x^t) (all clients), then samples a
   subset S_t of k clients uniformly without replacement (partial participation; k = n is full participation);
2. each i in S_t runs tau local steps from x_{i,0} = x^t,
       x_{i,l+1} = R_{x_{i,l}}( -eta [ grad f_i(x_{i,l}) - T_{x^t -> x_{i,l}}( grad f_i(x^t) - grad f(x^t) ) ] ),
   i.e. an SVRG-corrected Riemannian gradient step whose correction is transported to the current local point;
   it returns x_i = x_{i,tau} (Option 1, ``output="last"``) or x_{i,l} with l uniform in {0..tau-1} (Option 2,
   ``output="random"``);
3. the server averages in its tangent space: x^{t+1} = R_{x^t}( (1/k) sum_{i in S_t} R^{-1}_{x^t}(x_i) ) (the
   "tangent space mean"; with R = Exp it is one step of the Karcher-mean iteration from x^t).

The analysis uses Exp / Exp^{-1} / parallel transport (``retraction="exp"``, ``transport="parallel"``); the
authors' experiments use a retraction, its inverse and transport by projection (the defaults here: QR on
Stiefel / Grassmann, normalisation on the sphere). Symbols -> arguments: eta -> ``step_size``, tau ->
``local_steps``, k = |S_t| -> ``clients_per_round`` (None: all n), mu (FedProx) -> ``mu``.

Baselines on the same server step (the paper's comparison):

* R-FedAvg: local steps x_{i,l+1} = R(-eta grad f_i(x_{i,l})) (no correction): with heterogeneous clients its
  fixed point is not x* (client drift);
* R-FedProx: local steps on f_i(z) + mu/2 d^2(z, x^t), whose gradient is grad f_i(z) - mu Exp_z^{-1}(x^t)
  (R_z^{-1} with a retraction).

Metrics (after the round, at x^{t+1}): the problem's ``metrics`` (e.g. ``gap`` = f - f*, ``grad_norm_sq`` =
||grad f||^2, ``dist_to_opt``, ``feasibility``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_nonnegative, check_positive, check_positive_int
from riemannian.manifolds import retraction_method, tangent_basis

KINDS = ("rfedsvrg", "rfedavg", "rfedprox")
CORRECTION = {"rfedsvrg": 1.0, "rfedavg": 0.0, "rfedprox": 0.0}
TRANSPORTS = ("projection", "parallel")
OUTPUTS = ("last", "random")


class FedState(NamedTuple):
    """The server point x^t and the number of rounds done."""

    x: jax.Array
    count: jax.Array


class Geometry(NamedTuple):
    retr: Callable[[jax.Array, jax.Array], jax.Array]
    inv_retr: Callable[[jax.Array, jax.Array], jax.Array]
    transp: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def geometry(manifold: Any, retraction: str | None = None, transport: str = "projection") -> Geometry:
    """The retraction R, its inverse and the vector transport the algorithms use on ``manifold``.

    ``retraction``: one of ``manifold.retractions`` (default: the first, e.g. "qr" or "normalize"); "exp" uses the
    exponential map and the logarithm. ``transport``: "projection" (T_{x->y} v = P_y v) or "parallel".
    """
    method = retraction_method(manifold, retraction)
    check_choice("transport", transport, TRANSPORTS)
    inv_methods = getattr(manifold, "inverse_retractions", manifold.retractions)
    if method not in inv_methods:
        raise RatelabError(f"retraction must have an inverse on {type(manifold).__name__} (one of "
                           f"{', '.join(map(repr, inv_methods))}), got {method!r}")

    def retr(x, v):
        return manifold.retr(x, v, method=method)

    def inv_retr(x, y):
        return manifold.inv_retr(x, y, method=method)

    transp = manifold.transp if transport == "projection" else manifold.parallel_transp
    return Geometry(retr, inv_retr, transp)


def _is_zero(c: Any) -> bool:
    """Whether a coefficient is a concrete zero (a Python or NumPy number; a traced one never is)."""
    return isinstance(c, (int, float, np.number)) and c == 0


def _as_coefficient(c: Any, dtype: Any) -> Any:
    """A concrete zero stays a Python 0.0 (its term is dropped); anything else becomes an array of ``dtype``."""
    return 0.0 if _is_zero(c) else jnp.asarray(c, dtype)


def federated_round(problem: Any, x: jax.Array, clients: jax.Array, ells: jax.Array, *, eta: Any, local_steps: int,
                    correction: Any = 1.0, mu: Any = 0.0, geom: Geometry | None = None,
                    output: str = "last") -> jax.Array:
    """One communication round from server point ``x`` with participating ``clients`` (``[k]`` ints).

    Local direction at z: grad f_i(z) - c T_{x->z}(grad f_i(x) - grad f(x)) - mu R_z^{-1}(x), with c =
    ``correction``: c = 1, mu = 0 is RFedSVRG; c = 0, mu = 0 is R-FedAvg; c = 0, mu > 0 is R-FedProx (c and mu may be
    traced, so one compiled round serves all three; a concrete 0 drops its term at trace time, exactly what adding
    0 times it gives). ``ells`` (``[k]`` ints in [0, tau)) picks the returned local iterate when ``output="random"``
    (Option 2). Clients run in parallel (``vmap``), local steps in a ``lax.scan``.
    """
    geom = geom or geometry(problem.manifold)
    corrected, proximal = not _is_zero(correction), not _is_zero(mu)
    # grad f(x) = (1/n) sum_i grad f_i(x) (f is the clients' average): one gradient of f, not n client gradients
    g_full = problem.rgrad(x) if corrected else None

    def client(i, ell):
        corr = correction * (problem.client_rgrad(x, i) - g_full) if corrected else None

        def local(z, _):
            v = problem.client_rgrad(z, i)
            if corrected:
                v = v - geom.transp(x, z, corr)
            if proximal:
                v = v - mu * geom.inv_retr(z, x)
            return geom.retr(z, -eta * v), z

        z_last, zs = jax.lax.scan(local, x, None, length=local_steps)
        x_i = z_last if output == "last" else jnp.take(zs, ell, axis=0)
        return geom.inv_retr(x, x_i)

    v = jax.vmap(client)(clients, ells)
    return geom.retr(x, jnp.mean(v, axis=0))


def federated(step_size: Any, *, local_steps: int, correction: Any = 1.0, mu: Any = 0.0,
              clients_per_round: int | None = None, retraction: str | None = None, transport: str = "projection",
              output: str = "last") -> Solver:
    """The family behind :func:`rfedsvrg` (correction 1, mu 0), :func:`rfedavg` (0, 0), :func:`rfedprox` (0, mu).

    ``correction`` and ``mu`` may be traced (a ``sweep`` over methods compiles one round for all of them).
    """
    check_positive("step_size", step_size)
    check_positive_int("local_steps", local_steps)
    check_nonnegative("correction", correction)
    check_nonnegative("mu", mu)
    if clients_per_round is not None:
        check_positive_int("clients_per_round", clients_per_round)
    check_choice("transport", transport, TRANSPORTS)
    check_choice("output", output, OUTPUTS)
    schedule = as_schedule(step_size)

    def participants(problem: Any) -> int:
        n = problem.n_clients
        k = n if clients_per_round is None else clients_per_round
        if k > n:
            raise RatelabError(f"clients_per_round must be at most the number of clients ({n}), got {k}")
        return k

    def init(problem: Any, key: jax.Array) -> FedState:
        del key
        participants(problem)
        geometry(problem.manifold, retraction, transport)
        return FedState(problem.x0, jnp.zeros((), jnp.int32))

    def sample(problem: Any, key: jax.Array, n: int) -> dict[str, jax.Array]:
        """One flat uniform draw per block: the k clients of each round are the k smallest of n_clients uniforms (a
        uniform subset without replacement), the local iterate of Option 2 is floor(tau u). (A vmapped
        ``permutation`` or a multi-axis ``randint`` compiles ~8x slower on CPU.)"""
        k, total = participants(problem), problem.n_clients
        picks = 0 if k == total else total
        u = jax.random.uniform(key, (n * (picks + k),))
        if k == total:
            clients = jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (n, k))
        else:
            clients = jnp.argsort(u[: n * total].reshape(n, total), axis=1)[:, :k].astype(jnp.int32)
        ells = jnp.minimum((u[n * picks:] * local_steps).astype(jnp.int32), local_steps - 1).reshape(n, k)
        return {"clients": clients, "ell": ells}

    def step(state: FedState, problem: Any, xi: dict[str, jax.Array]) -> tuple[FedState, dict[str, jax.Array]]:
        geom = geometry(problem.manifold, retraction, transport)
        dtype = state.x.dtype
        eta = jnp.asarray(schedule(state.count), dtype)
        x = federated_round(problem, state.x, xi["clients"], xi["ell"], eta=eta, local_steps=local_steps,
                            correction=_as_coefficient(correction, dtype), mu=_as_coefficient(mu, dtype), geom=geom,
                            output=output)
        return FedState(x, state.count + 1), problem.metrics(x)

    return Solver(init, step, sample)


def rfedsvrg(step_size: Any, *, local_steps: int, clients_per_round: int | None = None, retraction: str | None = None,
             transport: str = "projection", output: str = "last") -> Solver:
    """RFedSVRG (Li & Ma 2022, Algorithm 1): SVRG-corrected local steps, tangent-space-mean server step.

    Args:
      step_size: eta, a float or a schedule over rounds.
      local_steps: tau, local steps per round.
      clients_per_round: k = |S_t| (None: all clients, full participation).
      retraction: the retraction (and its inverse) used everywhere; "exp" = Exp / Exp^{-1}.
      transport: "projection" or "parallel" (for the correction term).
      output: "last" (Option 1) or "random" (Option 2: a uniformly random local iterate).
    """
    return federated(step_size, local_steps=local_steps, correction=1.0, mu=0.0, clients_per_round=clients_per_round,
                     retraction=retraction, transport=transport, output=output)


def rfedavg(step_size: Any, *, local_steps: int, clients_per_round: int | None = None, retraction: str | None = None,
            output: str = "last") -> Solver:
    """Riemannian FedAvg: tau plain local Riemannian gradient steps, then the same tangent-space mean."""
    return federated(step_size, local_steps=local_steps, correction=0.0, mu=0.0, clients_per_round=clients_per_round,
                     retraction=retraction, output=output)


def rfedprox(step_size: Any, *, mu: float, local_steps: int, clients_per_round: int | None = None,
             retraction: str | None = None, output: str = "last") -> Solver:
    """Riemannian FedProx: tau local gradient steps on f_i(z) + mu/2 d^2(z, x^t) (gradient grad f_i - mu R_z^{-1} x^t).

    (The authors' public script adds +mu R_z^{-1}(x^t), which pushes away from x^t; this follows the definition.)
    """
    check_positive("mu", mu)
    return federated(step_size, local_steps=local_steps, correction=0.0, mu=mu, clients_per_round=clients_per_round,
                     retraction=retraction, output=output)


def linearized_contraction(kind: str, problem: Any, *, step_size: float, local_steps: int, mu: float = 0.0,
                           retraction: str | None = None, transport: str = "projection") -> float:
    """Spectral radius of the derivative at x* of one full-participation round (Option 1), in a chart at x*.

    Near an isolated minimiser the round map x -> Phi(x) satisfies d(Phi(x), x*) ~ rho d(x, x*), so the optimality
    gap and the distance contract per round by rho^2 and rho: the linear rate, computed exactly (float64) from the
    algorithm and the problem, with no run. Needs an isolated minimiser (sphere or Grassmann, not Stiefel).
    """
    check_choice("kind", kind, KINDS)
    if type(problem.manifold).__name__ == "Stiefel":
        raise RatelabError("linearized_contraction needs isolated minimisers; use the Grassmann or sphere version")
    with jax.enable_x64(True):
        prob = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), problem)
        geom = geometry(prob.manifold, retraction, transport)

        @jax.jit
        def jacobian(prob):
            m, xs = prob.manifold, prob.x_star
            basis = tangent_basis(m, xs)
            clients = jnp.arange(prob.n_clients, dtype=jnp.int32)

            def chart(u):
                y = federated_round(prob, geom.retr(xs, jnp.tensordot(u, basis, axes=1)), clients, clients * 0,
                                    eta=step_size, local_steps=local_steps, correction=CORRECTION[kind], mu=mu,
                                    geom=geom)
                return jnp.tensordot(basis, geom.inv_retr(xs, y), axes=xs.ndim)

            return jax.jacfwd(chart)(jnp.zeros(m.dim, jnp.float64))

        return float(np.max(np.abs(np.linalg.eigvals(np.asarray(jacobian(prob))))))
