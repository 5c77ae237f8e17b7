"""Zeroth-order Riemannian optimisation: the Gaussian-smoothing gradient estimator and Zo-RASA.

Papers
------
* J. Li, K. Balasubramanian, S. Ma, "Stochastic Zeroth-order Riemannian Derivative Estimation and Optimization",
  arXiv:2003.11238, 2020. The estimator (their Sec. 3): with u a
  standard Gaussian vector of the tangent space T_x M (u = P_x(z), z ~ N(0, I) in the ambient space, for an
  embedded manifold) and a smoothing radius mu,
      G_mu(x; u, xi) = [F(R_x(mu u), xi) - F(x, xi)] / mu * u,
  an unbiased estimate of the gradient at 0 of the smoothed pull-back E_u F(R_x(mu u), xi) (Stein's identity),
  hence of grad f(x) up to O(mu); averaging m directions gives the constant-batch version.
* J. Li, K. Balasubramanian, S. Ma, "Zeroth-order Riemannian Averaging Stochastic Approximation Algorithms",
  arXiv:2309.14506, 2023. Zo-RASA keeps a moving average g_k of the estimates,
  carried between tangent spaces by a vector transport, and moves along it:
      x_{k+1} = R_{x_k}( -(tau_k / beta) g_k ),
      g_{k+1} = (1 - a tau_k) T_{x_k -> x_{k+1}}(g_k) + a tau_k G_mu(x_{k+1}; u_{k+1}, xi_{k+1}),
  the Riemannian form of the single-timescale averaging SA of Ghadimi, Ruszczynski & Wang (SIOPT 2020); the
  parametrisation (tau_k / beta, a tau_k) is that of the Euclidean ASA, not checked symbol by symbol against the
  paper's algorithm box, which was not available to us (only its abstract). One
  sample (or a constant batch) per iteration and tau_k = O(1/sqrt(N)) give E||grad f(x_R)||^2 = O(sqrt(d / N))
  for x_R drawn uniformly from the N iterates, i.e. N = O(d / eps^2) samples for eps-stationarity (optimal for
  zeroth-order methods). Exp + parallel transport (``retraction="exp"``, ``transport="parallel"``) is the
  analysed version; a retraction + projection transport is the practical one, with the same rate.

Symbols -> arguments: tau_k -> ``step_size`` (float or schedule), beta -> ``beta``, a -> ``averaging``,
mu -> ``mu``, batch m -> ``batch``. ``average=False`` gives Zo-RSGD (g_{k+1} = G, i.e. a tau = 1): the version
without averaging. Metrics (at x_{k+1}): the problem's ``metrics`` (``grad_norm_sq`` = ||grad f||^2, ``gap``,
``dist_to_opt``, ``feasibility``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import (
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    is_traced,
)
from riemannian.data import data_dtype, keep_precision, start_point, symmetric_matrices
from riemannian.federated import geometry
from riemannian.manifolds import Sphere, Stiefel, normal_draws


@dataclass(frozen=True)
class StochasticRayleigh:
    """min_X f(X) = 1/2 tr(X^T A X) on the sphere (X a vector) or St(n, p), from noisy values only:

        F(X, xi) = f(X) + <xi, X>,   xi ~ N(0, sigma^2 / (n p) I),

    so that the stochastic gradient's noise has E||P_X xi||^2 ~ sigma^2 whatever n. The minimisers are the
    orthonormal bases of the bottom-p eigenspace of A (``x_star``), f* = 1/2 (sum of the p smallest eigenvalues).
    ``smoothness`` L = lambda_max(A) - lambda_min(A) bounds the Riemannian Hessian of f (on the sphere
    Hess f(x)[v] = P_x(A v) - (x^T A x) v; on St(n, p) the same with sym(X^T A X)), the L of Zo-RASA's analysis.

    Build it with :func:`stochastic_rayleigh` (the user's A, validated) or :func:`make_stochastic_rayleigh`:
    constructing the dataclass directly skips every check.

    ``support`` (0/1, the shape of X) restricts the problem to the first ``n_active`` coordinates of a larger
    ambient space: the sphere S^{n_active - 1} is exactly the set of unit vectors supported there, so problems of
    several dimensions can share array shapes and be vmapped (directions and noise are masked by ``support``).
    """

    A: jax.Array
    sigma: jax.Array
    support: jax.Array
    x0: jax.Array
    x_star: jax.Array
    f_star: jax.Array
    smoothness: jax.Array
    manifold: Any = field(metadata={"static": True})

    def loss(self, x: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(x * (self.A @ x))

    def value(self, x: jax.Array, xi: jax.Array) -> jax.Array:
        """The zeroth-order oracle F(x, xi)."""
        return self.loss(x) + jnp.sum(xi * x)

    def noise(self, z: jax.Array) -> jax.Array:
        """xi from standard normal draws z (``[..., *x.shape]``): sigma / sqrt(n_active p) * support * z."""
        return (self.sigma / jnp.sqrt(jnp.sum(self.support))) * self.support * z

    def rgrad(self, x: jax.Array) -> jax.Array:
        return self.manifold.egrad2rgrad(x, self.A @ x)

    def metrics(self, x: jax.Array) -> dict[str, jax.Array]:
        g = self.rgrad(x)
        X = x[:, None] if x.ndim == 1 else x
        S = self.x_star[:, None] if self.x_star.ndim == 1 else self.x_star
        return {"grad_norm_sq": jnp.sum(g * g), "gap": self.loss(x) - self.f_star,
                "dist_to_opt": jnp.linalg.norm(X - S @ (S.T @ X)), "feasibility": self.manifold.feasibility(x)}


jax.tree_util.register_dataclass(StochasticRayleigh,
                                 data_fields=["A", "sigma", "support", "x0", "x_star", "f_star", "smoothness"],
                                 meta_fields=["manifold"])


def stochastic_rayleigh(A: Any, *, sigma: float = 1.0, p: int = 1, manifold: str = "sphere", x0: Any = None,
                        key: jax.Array | None = None, ambient: int | None = None,
                        dtype: Any = None) -> StochasticRayleigh:
    """The noisy Rayleigh problem of the user's symmetric ``A`` (``[n, n]``): min 1/2 tr(X^T A X) on the sphere
    (p = 1) or St(n, p), observed through F(X, xi) = f(X) + <xi, X>, xi ~ N(0, sigma^2 / (n p) I).

    The minimiser (bottom-p eigenspace), f* and L = lambda_max - lambda_min come from ``eigh``; the bottom-p
    eigenspace must be unique (a gap after the p smallest eigenvalues). ``x0`` defaults to a random point drawn in
    float32 with ``key`` (``jax.random.key(0)``). ``ambient`` > n embeds the problem in the first n of ``ambient``
    coordinates (zero padding and ``support``), so that problems of several sizes can be stacked and vmapped. The
    arrays keep the data's precision (:func:`riemannian.data.keep_precision`) unless ``dtype`` is given.
    """
    prec = data_dtype(A, dtype)
    A_ = symmetric_matrices("A", A, dtype=prec)
    n = A_.shape[0]
    check_positive_int("p", p)
    check_nonnegative("sigma", sigma)
    check_choice("manifold", manifold, ("sphere", "stiefel"))
    if p >= n or (manifold == "sphere" and p != 1):
        raise RatelabError(f"need 1 <= p < n (p = 1 on the sphere), got n={n}, p={p}, manifold={manifold!r}")
    w, v = np.linalg.eigh(A_)
    scale = max(1.0, float(np.abs(w).max()))
    if w[p] - w[p - 1] <= 1e-12 * scale:
        raise RatelabError(f"A has no eigengap after its {p} smallest eigenvalue(s) ({w[p - 1]:.6g} vs {w[p]:.6g}): "
                           "the minimiser is not unique")
    m = Sphere(n) if manifold == "sphere" else Stiefel(n, p)
    x0 = start_point(m, x0, key)
    x_star = v[:, 0] if manifold == "sphere" else v[:, :p]
    support = np.ones(m.shape)
    if ambient is not None and ambient != n:
        if not (isinstance(ambient, (int, np.integer)) and ambient > n):
            raise RatelabError(f"ambient must be an integer >= n = {n}, got {ambient!r}")
        pad = [(0, ambient - n)] + [(0, 0)] * (len(m.shape) - 1)
        A_ = np.pad(A_, [(0, ambient - n), (0, ambient - n)])
        x0, x_star, support = np.pad(x0, pad), np.pad(x_star, pad), np.pad(support, pad)
        m = Sphere(ambient) if manifold == "sphere" else Stiefel(ambient, p)
    arrays = {"A": A_, "sigma": sigma, "support": support, "x0": x0, "x_star": x_star, "f_star": 0.5 * w[:p].sum(),
              "smoothness": w[-1] - w[0]}
    return StochasticRayleigh(**{k: keep_precision(a, prec) for k, a in arrays.items()}, manifold=m)


_draw = jax.jit(normal_draws, static_argnums=(1, 2))  # an instance's draws: one program each, not draw + reshape


def make_stochastic_rayleigh(key: jax.Array, *, n: int, p: int = 1, sigma: float = 1.0, gap: float = 0.5,
                             manifold: str = "sphere", ambient: int | None = None,
                             dtype: Any = None) -> StochasticRayleigh:
    """A with eigenvalues 0 (p times) then evenly in [gap, 1] (so L = 1 and the eigengap is ``gap`` for every n),
    a random eigenbasis and a random start (drawn in float32, so the same with or without x64; the problem is
    float64 unless ``dtype`` says otherwise, see :func:`stochastic_rayleigh`).

    ``ambient`` >= n embeds the problem in the first n of ``ambient`` coordinates (zero padding, ``support``)."""
    check_positive_int("n", n)
    check_positive_int("p", p)
    check_in_range("gap", gap, 0.0, 1.0, closed="right")
    check_choice("manifold", manifold, ("sphere", "stiefel"))
    if p >= n or (manifold == "sphere" and p != 1):
        raise RatelabError(f"need 1 <= p < n (p = 1 on the sphere), got n={n}, p={p}, manifold={manifold!r}")
    k_q, k_x = jax.random.split(key)
    q, _ = np.linalg.qr(np.asarray(_draw(k_q, (n, n), jnp.float32), dtype=float))
    lam = np.concatenate([np.zeros(p), np.linspace(gap, 1.0, n - p)])
    shape = (n,) if manifold == "sphere" else (n, p)
    x0 = np.asarray(_draw(k_x, shape, jnp.float32), dtype=float)
    x0 = x0 / np.linalg.norm(x0) if manifold == "sphere" else np.linalg.qr(x0)[0]
    A = (q * lam) @ q.T
    return stochastic_rayleigh(0.5 * (A + A.T), sigma=sigma, p=p, manifold=manifold, x0=x0, ambient=ambient,
                               dtype=dtype or np.float64)


def zo_gradient(problem: Any, x: jax.Array, u: jax.Array, xi: jax.Array, mu: Any,
                retraction: str | None = None) -> jax.Array:
    """The zeroth-order Riemannian gradient estimate at x from ambient Gaussian draws ``u`` (``[m, *x.shape]``) and
    oracle noise ``xi`` (``[m, ...]``): (1/m) sum_j [F(R_x(mu P_x u_j), xi_j) - F(x, xi_j)] / mu * P_x u_j.

    (u is first masked by ``problem.support`` when the problem has one.)"""
    m = problem.manifold
    geom = geometry(m, retraction)
    support = getattr(problem, "support", None)
    if support is not None:
        u = u * support
    v = jax.vmap(lambda uj: m.proj(x, uj))(u)
    diffs = jax.vmap(lambda vj, xj: problem.value(geom.retr(x, mu * vj), xj) - problem.value(x, xj))(v, xi)
    return jnp.tensordot(diffs / mu, v, axes=1) / u.shape[0]


class ZoState(NamedTuple):
    x: jax.Array
    g: jax.Array
    count: jax.Array


def zo_rasa(step_size: Any, *, mu: float = 1e-4, averaging: float = 1.0, beta: Any = None, batch: int = 1,
            average: bool = True, retraction: str | None = None, transport: str = "projection") -> Solver:
    """Zo-RASA (Li, Balasubramanian & Ma, arXiv:2309.14506); ``average=False`` is Zo-RSGD (arXiv:2003.11238).

    Args:
      step_size: tau_k (float or schedule); the theory takes tau = c / sqrt(N) for a horizon of N iterations.
      mu: smoothing radius of the Gaussian estimator.
      averaging: a, the moving average's weight is a tau_k (needs a tau_k <= 1).
      beta: the x-step is tau_k / beta along the averaged direction; beta plays the role of the smoothness
        constant L. None (default): the problem's ``smoothness`` (L of f on the manifold; a problem without one
        needs beta given).
      batch: m directions (and oracle samples) per iteration; 1 is the one-sample version.
      average: False drops the moving average (g = the current estimate).
      retraction: "exp" (with ``transport="parallel"``) is the analysed version; default the manifold's first
        retraction with transport by projection.
    """
    check_positive("step_size", step_size)
    check_positive("mu", mu)
    check_positive("averaging", averaging)
    if beta is not None:
        check_positive("beta", beta)
    batch = check_positive_int("batch", batch)
    if not isinstance(average, bool):
        raise RatelabError(f"average must be True or False, got {average!r}")
    if not (callable(step_size) or is_traced(step_size) or is_traced(averaging)):
        check_in_range("averaging * step_size (the moving average's weight a tau)",
                       float(np.max(np.asarray(averaging) * np.asarray(step_size))), 0.0, 1.0, closed="right")
    schedule = as_schedule(step_size)

    def x_step(problem: Any) -> Any:
        """1 / beta: from the argument, else from the problem's smoothness L."""
        if beta is not None:
            return 1.0 / beta
        L = getattr(problem, "smoothness", None)
        if L is None:
            raise RatelabError(f"beta must be given: the problem ({type(problem).__name__}) has no smoothness "
                               "attribute (the Lipschitz constant L of its Riemannian gradient) to take it from")
        return 1.0 / L

    def init(problem: Any, key: jax.Array) -> ZoState:
        geometry(problem.manifold, retraction, transport)
        x_step(problem)
        x = problem.x0
        s = sample(problem, key, 1)
        g = zo_gradient(problem, x, s["u"][0], s["xi"][0], mu, retraction)
        return ZoState(x, g, jnp.zeros((), jnp.int32))

    def sample(problem: Any, key: jax.Array, n: int) -> dict[str, jax.Array]:
        """One bulk normal draw per block: the directions u and (mapped by ``problem.noise``) the oracle noise."""
        z = normal_draws(key, (2, n, batch, *problem.x0.shape), problem.x0.dtype)
        return {"u": z[0], "xi": problem.noise(z[1])}

    def step(state: ZoState, problem: Any, s: dict[str, jax.Array]) -> tuple[ZoState, dict[str, jax.Array]]:
        geom = geometry(problem.manifold, retraction, transport)
        tau = jnp.asarray(schedule(state.count), state.x.dtype)
        x = geom.retr(state.x, -(tau * x_step(problem)) * state.g)
        G = zo_gradient(problem, x, s["u"], s["xi"], mu, retraction)
        if average:
            w = averaging * tau
            g = (1.0 - w) * geom.transp(state.x, x, state.g) + w * G
        else:
            g = G
        return ZoState(x, g, state.count + 1), problem.metrics(x)

    return Solver(init, step, sample)
