"""Baseline for nonsmooth problems on the Stiefel manifold: the Riemannian subgradient method.

Paper: Xiao Li, Shixiang Chen, Zengde Deng, Qing Qu, Zhihui Zhu, Anthony Man-Cho So, "Weakly Convex Optimization
over Stiefel Manifold Using Riemannian Subgradient-Type Methods", SIAM J. Optim. 31(3), 2021 (arXiv:1911.05047),
Algorithm 1: x_{k+1} = R_{x_k}(-eta_k v_k) with v_k = P_{T_x M}(grad f(x_k) + A^T s_k), s_k in d h(A x_k),
and diminishing (eta_k = eta_0 / sqrt(k + 1)) or geometrically diminishing (eta_k = eta_0 beta^k) steps.
It is one of the baselines of Li, Ma, Srivastava, "A Riemannian ADMM" (arXiv:2211.02163, Sec. 5).

Symbols -> arguments: eta_k -> ``step_size`` (float or schedule of k), R -> ``retraction``; the subgradient of
mu ||.||_1 is mu sign(.).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_positive
from riemannian.manifolds import retraction_method
from riemannian.sparse_problems import CompositeProblem, sparsity

Array = jax.Array


class SubgradientState(NamedTuple):
    x: Array
    k: Array


def riemannian_subgradient(step_size: Any, *, retraction: str | None = None, random_init: bool = False,
                           sparsity_tol: float = 1e-5) -> Solver:
    """Riemannian subgradient method (Li et al., SIOPT 2021, Algorithm 1) for a :class:`CompositeProblem`.

    ``retraction``: a retraction method of the problem's manifold (None, the default: its first one, e.g. QR on
    Stiefel, normalisation on the sphere). ``random_init`` draws x_0 on the manifold from the init key (per seed)
    instead of ``problem.x0``; ``sparsity_tol`` is the threshold of the ``sparsity`` metric.

    Metrics: ``objective``, ``subgrad_norm`` (||v_k||_F), ``feasibility``, ``sparsity`` (fraction of |x_ij| < 1e-5).
    """
    check_positive("step_size", step_size)
    if retraction is not None and not isinstance(retraction, str):
        raise RatelabError(f"retraction must be None or a method name such as 'qr', got {retraction!r}")
    check_positive("sparsity_tol", sparsity_tol)
    eta = as_schedule(step_size)

    def init(problem: CompositeProblem, key: Array) -> SubgradientState:
        retraction_method(problem.manifold, retraction)
        x = problem.manifold.random_point(key, dtype=problem.x0.dtype) if random_init else problem.x0
        return SubgradientState(x, jnp.zeros((), jnp.int32))

    def step(state: SubgradientState, problem: CompositeProblem, xi: Any) -> tuple[SubgradientState, dict]:
        del xi
        man = problem.manifold
        x = state.x
        sub = problem.egrad_f(x) + problem.lin_vjp(x, problem.mu * jnp.sign(problem.lin(x)))
        v = man.proj(x, sub)
        x_new = man.retr(x, -eta(state.k) * v, method=retraction_method(man, retraction))
        metrics = {"objective": problem.objective(x_new), "subgrad_norm": jnp.linalg.norm(v),
                   "feasibility": man.feasibility(x_new), "sparsity": sparsity(x_new, sparsity_tol)}
        return SubgradientState(x_new, state.k + 1), metrics

    return Solver(init=init, step=step)
