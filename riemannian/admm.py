"""Riemannian ADMM with Moreau-envelope smoothing.

Paper: Jiaxiang Li, Shiqian Ma, Tejes Srivastava, "A Riemannian ADMM", arXiv:2211.02163 (2022; v3 2024).

Problem (paper's (1.1)): min_{x in M} f(x) + h(A x), f smooth, h convex, Lipschitz and nonsmooth, M a compact
embedded submanifold (here the Stiefel manifold). The paper splits y = A x and replaces h by its Moreau envelope
h_gamma(y) = min_z h(z) + ||z - y||^2 / (2 gamma), so that the y-block is smooth:

    min_{x in M, y} f(x) + h_gamma(y)   s.t.  A x = y,
    L_rho(x, y, lambda) = f(x) + h_gamma(y) + <lambda, A x - y> + (rho / 2) ||A x - y||^2.

Algorithm (RADMM, Algorithm 1 of the paper), one iteration:

    x_{k+1}      = R_{x_k}( -eta grad_x L_rho(x_k, y_k, lambda_k) )                (one Riemannian gradient step)
    y_{k+1}      = argmin_y L_rho(x_{k+1}, y, lambda_k)                            (closed form, see below)
    lambda_{k+1} = lambda_k + rho (A x_{k+1} - y_{k+1})                            (multiplier ascent)

with grad_x L = P_{T_x M}( grad f(x) + A^T (lambda + rho (A x - y)) ). The y-subproblem
min_y h_gamma(y) + (rho/2) ||y - w||^2, w = A x_{k+1} + lambda_k / rho, has the closed form
z = prox_{(gamma + 1/rho) h}(w), y = (z + rho gamma w) / (1 + rho gamma) (minimise jointly over (y, z) in the
definition of h_gamma). Its optimality condition gives lambda_{k+1} = grad h_gamma(y_{k+1}), a subgradient of h at
prox_{gamma h}(y_{k+1}), which lies within gamma * Lip(h) of y_{k+1}.

Parameters (the paper's complexity theorem): for a target accuracy eps, gamma = O(eps), rho = O(1/eps),
eta = O(eps) give an eps-stationary point within K = O(eps^-4) iterations; :func:`theory_parameters` maps eps to
(gamma, rho, eta) with constants that are arguments (the theorem's constants involve Lipschitz constants of f, h
and the retraction; the defaults c = 1 are ours, with eta * rho * ||A||^2 = c_eta c_rho ||A||^2 kept below 2).

Symbols -> arguments: eta -> ``step_size`` (a float or a schedule), rho -> ``rho``, gamma -> ``gamma``, R ->
``retraction`` (a method of the manifold), A x -> ``problem.lin(x)`` and A^T z -> ``problem.lin_vjp(x, z)``,
h -> ``problem.h`` / ``problem.prox_h``. The problem may also use a smooth nonlinear map c in place of A (sparse
spectral clustering, c(U) = U U^T): the x-step then uses J_c(x)^T, which is what ``lin_vjp`` returns; the
y- and lambda-updates are unchanged. The step must then also scale like 1 / (rho ||J_c||^2).

Stationarity measure (logged as ``stationarity``): ||P_{T_x}(grad f(x) + A^T lambda)||_F + ||A x - y||_F at
(x_{k+1}, y_{k+1}, lambda_{k+1}); its first term is ``kkt_residual`` and its second ``constraint_violation``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_positive
from riemannian.manifolds import retraction_method, tangent_basis
from riemannian.sparse_problems import CompositeProblem, moreau_envelope, sparsity

Array = jax.Array


class RADMMState(NamedTuple):
    """The iterate (x, y, lambda), the iteration count and ``gx`` = grad f(x), the Euclidean gradient at x, carried
    from the step that made x (its metrics need it) so each step evaluates grad f once: one n x n by n x p matmul
    per step on sparse PCA instead of two."""

    x: Array
    y: Array
    lam: Array
    k: Array
    gx: Array


def y_update(problem: CompositeProblem, ax: Array, lam: Array, rho: Any, gamma: Any) -> Array:
    """argmin_y h_gamma(y) - <lambda, y> + (rho/2) ||A x - y||^2 in closed form (see the module docstring)."""
    w = ax + lam / rho
    z = problem.prox_h(w, gamma + 1.0 / rho)
    return (z + rho * gamma * w) / (1.0 + rho * gamma)


def augmented_lagrangian(problem: CompositeProblem, x: Array, y: Array, lam: Array, rho: Any, gamma: Any) -> Array:
    """L_rho(x, y, lambda) = f(x) + h_gamma(y) + <lambda, A x - y> + (rho/2) ||A x - y||^2."""
    r = problem.lin(x) - y
    return problem.f(x) + moreau_envelope(problem, y, gamma) + jnp.sum(lam * r) + 0.5 * rho * jnp.sum(r * r)


def stationarity_terms(problem: CompositeProblem, x: Array, y: Array, lam: Array, gx: Array | None = None
                       ) -> tuple[Array, Array]:
    """(||P_x(grad f(x) + A^T lambda)||_F, ||A x - y||_F); ``gx``: grad f(x) where it is already known."""
    man = problem.manifold
    g = man.proj(x, (problem.egrad_f(x) if gx is None else gx) + problem.lin_vjp(x, lam))
    return jnp.linalg.norm(g), jnp.linalg.norm(problem.lin(x) - y)


def x_update(problem: CompositeProblem, x: Array, y: Array, lam: Array, *, eta: Any, rho: Any,
             retraction: str | None = None, gx: Array | None = None) -> Array:
    """The x-step x+ = R_x(-eta P_x(grad_x L_rho(x, y, lambda))) (RADMM's and ARADMM's); ``gx``: grad f(x) where it is
    already known."""
    man = problem.manifold
    egrad = (problem.egrad_f(x) if gx is None else gx) + problem.lin_vjp(x, lam + rho * (problem.lin(x) - y))
    return man.retr(x, -eta * man.proj(x, egrad), method=retraction_method(man, retraction))


def radmm_map(problem: CompositeProblem, x: Array, y: Array, lam: Array, *, eta: Any, rho: Any, gamma: Any,
              retraction: str | None = None, gx: Array | None = None) -> tuple[Array, Array, Array]:
    """One RADMM iteration (x, y, lambda) -> (x+, y+, lambda+) (Algorithm 1; see the module docstring); ``gx``:
    grad f(x) where it is already known."""
    x_new = x_update(problem, x, y, lam, eta=eta, rho=rho, retraction=retraction, gx=gx)
    ax = problem.lin(x_new)
    y_new = y_update(problem, ax, lam, rho, gamma)
    return x_new, y_new, lam + rho * (ax - y_new)


def map_jacobian(problem: CompositeProblem, x: Array, y: Array, lam: Array, *, step_size: Any, rho: Any, gamma: Any,
                 retraction: str | None = None) -> Array:
    """The derivative of one RADMM iteration at (x, y, lambda), in a chart at x (jit- and vmap-able).

    The chart: x = R_x(sum_i u_i b_i) over an orthonormal basis b of T_x M, the image read back through the tangent
    coordinates <b_i, x+ - x> (exact to first order), y and lambda as they are: a square matrix of size
    dim M + 2 size(y)."""
    man = problem.manifold
    basis = tangent_basis(man, x)
    d, ny = man.dim, y.size

    def chart(z: Array) -> Array:
        u, dy, dl = z[:d], z[d:d + ny].reshape(y.shape), z[d + ny:].reshape(lam.shape)
        xn, yn, ln = radmm_map(problem, man.retr(x, jnp.tensordot(u, basis, axes=1),
                                                 method=retraction_method(man, retraction)),
                               y + dy, lam + dl, eta=step_size, rho=rho, gamma=gamma, retraction=retraction)
        return jnp.concatenate([jnp.tensordot(basis, xn - x, axes=x.ndim), (yn - y).ravel(), (ln - lam).ravel()])

    return jax.jacfwd(chart)(jnp.zeros(d + ny + lam.size, x.dtype))


def spectral_rate(jacobian: Any) -> float:
    """-ln of the spectral radius of a square matrix (LAPACK below 500 rows, ARPACK's largest-magnitude eigenvalue
    above, where a full eigendecomposition would take seconds)."""
    J = np.asarray(jacobian, dtype=float)
    if J.shape[0] <= 500:
        return float(-np.log(np.max(np.abs(np.linalg.eigvals(J)))))
    top = scipy.sparse.linalg.eigs(J, k=1, which="LM", return_eigenvectors=False, maxiter=20 * J.shape[0])
    return float(-np.log(np.abs(top[0])))


def linear_rate(problem: CompositeProblem, x: Array, y: Array, lam: Array, *, step_size: Any, rho: Any, gamma: Any,
                retraction: str | None = None) -> float:
    """The asymptotic linear rate of RADMM at (x, y, lambda): -ln of the spectral radius rho_J of
    :func:`map_jacobian` there (derived here).

    At a fixed point where the soft-threshold is differentiable (no entry of the y-update's argument exactly at a
    threshold) the map is smooth, so the iterates converge to it linearly: every error (and the stationarity
    measure) shrinks by rho_J per iteration asymptotically. The rate is 0 when the fixed point is not isolated (the
    O(p)-orbit of PCA minimisers on St(n, p), p >= 2, at mu = 0). Call it at (a close approximation of) the fixed
    point, with a constant step size.
    """
    jac = jax.jit(functools.partial(map_jacobian, step_size=step_size, rho=rho, gamma=gamma,
                                    retraction=retraction))(problem, x, y, lam)
    return spectral_rate(jac)


def theory_parameters(eps: float, *, c_gamma: float = 1.0, c_rho: float = 1.0, c_eta: float = 1.0
                      ) -> dict[str, float]:
    """The parameter scaling of the complexity theorem: gamma = c_gamma eps, rho = c_rho / eps, eta = c_eta eps."""
    check_positive("eps", eps)
    return {"gamma": c_gamma * eps, "rho": c_rho / eps, "step_size": c_eta * eps}


def radmm(step_size: Any, rho: Any, gamma: Any, *, retraction: str | None = None, random_init: bool = False,
          sparsity_tol: float = 1e-5) -> Solver:
    """Riemannian ADMM (Li, Ma, Srivastava, arXiv:2211.02163, Algorithm 1) for a :class:`CompositeProblem`.

    Args:
      step_size: eta, the Riemannian gradient step of the x-update (float or schedule of k).
      rho: the penalty parameter of the augmented Lagrangian (> 0).
      gamma: the Moreau-envelope smoothing parameter of h (> 0).
      retraction: a retraction method of the problem's manifold (``"qr"``, ``"polar"``, ``"exp"`` on Stiefel,
        ``"normalize"``, ``"exp"`` on the sphere); None (default): the manifold's first one.
      random_init: draw x_0 uniformly on the manifold from the init key (per seed) instead of ``problem.x0``.
      sparsity_tol: threshold of the ``sparsity`` metrics.

    Metrics: ``objective`` F(x) = f(x) + h(A x), ``stationarity``, ``kkt_residual``, ``constraint_violation``,
    ``feasibility`` ||X^T X - I||_F, ``sparsity`` of x (fraction of |x_ij| < 1e-5), ``sparsity_z`` (of
    prox_{gamma h}(y), exactly sparse), ``lagrangian`` L_rho.
    """
    check_positive("step_size", step_size)
    check_positive("rho", rho)
    check_positive("gamma", gamma)
    if retraction is not None and not isinstance(retraction, str):
        raise RatelabError(f"retraction must be None or a method name such as 'qr', got {retraction!r}")
    check_positive("sparsity_tol", sparsity_tol)
    eta = as_schedule(step_size)

    def init(problem: CompositeProblem, key: Array) -> RADMMState:
        retraction_method(problem.manifold, retraction)
        x = problem.manifold.random_point(key, dtype=problem.x0.dtype) if random_init else problem.x0
        y = problem.lin(x)
        # lambda_0 = grad h_gamma(y_0): the multiplier the y-update's optimality condition would give
        lam = (y - problem.prox_h(y, gamma)) / gamma
        return RADMMState(x=x, y=y, lam=lam, k=jnp.zeros((), jnp.int32), gx=problem.egrad_f(x))

    def step(state: RADMMState, problem: CompositeProblem, xi: Any) -> tuple[RADMMState, dict[str, Array]]:
        del xi
        x_new, y_new, lam_new = radmm_map(problem, state.x, state.y, state.lam, eta=eta(state.k), rho=rho,
                                          gamma=gamma, retraction=retraction, gx=state.gx)
        gx_new = problem.egrad_f(x_new)
        kkt, cons = stationarity_terms(problem, x_new, y_new, lam_new, gx_new)
        metrics = {
            "objective": problem.objective(x_new),
            "stationarity": kkt + cons,
            "kkt_residual": kkt,
            "constraint_violation": cons,
            "feasibility": problem.manifold.feasibility(x_new),
            "sparsity": sparsity(x_new, sparsity_tol),
            "sparsity_z": sparsity(problem.prox_h(y_new, gamma), sparsity_tol),
            "lagrangian": augmented_lagrangian(problem, x_new, y_new, lam_new, rho, gamma),
        }
        return RADMMState(x_new, y_new, lam_new, state.k + 1, gx_new), metrics

    return Solver(init=init, step=step)
