"""Implicit-gradient baselines for bilevel problems: approximate implicit differentiation (AID) and iterative
differentiation (ITD), the methods PBGD is compared with (Shen, Xiao & Chen, arXiv:2302.05185, Section 6; the
authors' code compares with RHG/ITD of Franceschi et al., ICML 2017, and T-RHG of Shaban et al., AISTATS 2019).

Both approximate the hypergradient of F(x) = f(x, y*(x)) after T warm-started lower-level steps
y_{t+1} = Proj_U(y_t - beta grad_y g(x, y_t)):

* ITD (reverse-mode through the unrolled steps): grad_x f(x, y_T(x)) with y_T a differentiable function of x.
* AID (implicit function theorem with a Neumann-series inverse): grad_x f - grad_xy g v with
  v = eta sum_{i<N} (I - eta grad_yy g)^i grad_y f, evaluated at (x, y_T).

Both assume a unique, non-degenerate lower-level solution. When g(x, .) has many minimisers (only PL), the
lower-level iterates never move along the flat directions and the hypergradient ignores the upper level's
preference among minimisers, which is where they fail and PBGD does not.

Symbols -> arguments: alpha -> ``x_optimizer`` (float/schedule = SGD, or an optax transformation); T ->
``inner_steps``; beta -> ``inner_lr``; N -> ``neumann_steps``; eta -> ``neumann_lr``; Proj_C -> ``project_x``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bilevel.pbgd import _check_problem, _check_projection, as_optimizer, pbgd_sample, tree_sq_norm
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_positive, check_positive_int

PyTree = Any
METHODS = ("aid", "itd")


class ImplicitState(NamedTuple):
    """x: upper variable; y: last lower-level iterate y_T; y_init: the initial y (the start of every unroll when
    ``warm_start=False``); x_opt: optimizer state; k: step counter."""

    x: PyTree
    y: PyTree
    y_init: PyTree
    x_opt: optax.OptState
    k: jax.Array
    v: PyTree = None


def implicit_gradient(*, x_optimizer: Any, inner_steps: int, inner_lr: Any, method: str = "aid",
                      neumann_steps: int = 20, neumann_lr: Any = None, warm_start: bool = True,
                      linear_warm_start: bool = False, project_x: Callable | None = None,
                      project_y: Callable | None = None) -> Solver:
    """AID / ITD bilevel gradient descent.

    ``warm_start=True`` starts each outer step's T lower-level steps from the previous y_T (truncated, warm-started
    ITD/AID); ``warm_start=False`` restarts them from the initial y every outer step, as the authors' RHG baseline
    does (their code re-initialises the network and unrolls T = K = 500 steps per outer iteration).

    ``linear_warm_start=True`` (AID only) keeps the linear-system solution v ~ [grad^2_yy g]^{-1} grad_y f across
    outer steps and runs the N Richardson steps v <- v - eta (grad^2_yy g v - grad_y f) from the previous v instead
    of the Neumann sum from zero (the two coincide from v = 0; the warm start is the "v warm-started across
    iterations" of AmIGO / SOBA-type methods, Arbel & Mairal 2022, Dagreou et al. 2022).

    Metrics: ``upper_loss`` f(x_k, y_T), ``hypergrad_sq`` ||hypergradient||^2, ``lower_loss`` g(x_k, y_T) and the
    problem's own metrics at (x_k, y_T).
    """
    check_choice("method", method, METHODS)
    if not isinstance(warm_start, bool):
        raise RatelabError(f"warm_start must be True or False, got {warm_start!r}")
    if not isinstance(linear_warm_start, bool):
        raise RatelabError(f"linear_warm_start must be True or False, got {linear_warm_start!r}")
    if linear_warm_start and method != "aid":
        raise RatelabError("linear_warm_start=True needs method='aid' (ITD solves no linear system)")
    inner_steps = check_positive_int("inner_steps", inner_steps)
    neumann_steps = check_positive_int("neumann_steps", neumann_steps)
    check_positive("inner_lr", inner_lr)
    eta_s = as_schedule(inner_lr if neumann_lr is None else check_positive("neumann_lr", neumann_lr))
    beta_s = as_schedule(inner_lr)
    x_tx = as_optimizer("x_optimizer", x_optimizer)
    proj_x = _check_projection("project_x", project_x, 1)
    proj_y = _check_projection("project_y", project_y, 2)

    def init(problem: Any, key: jax.Array) -> ImplicitState:
        _check_problem(problem)
        x, y = problem.initial(key)
        x = proj_x(x)
        y = proj_y(x, y)
        return ImplicitState(x=x, y=y, y_init=y, x_opt=x_tx.init(x), k=jnp.zeros((), jnp.int32),
                             v=jax.tree.map(jnp.zeros_like, y))

    def step(state: ImplicitState, problem: Any, batch: Any) -> tuple[ImplicitState, dict[str, jax.Array]]:
        beta, eta = beta_s(state.k), eta_s(state.k)

        def lower_steps(x, y0):
            def body(_, y):
                gy = jax.grad(problem.lower, argnums=1)(x, y, batch)
                return proj_y(x, jax.tree.map(lambda a, b: a - beta * b, y, gy))

            return jax.lax.fori_loop(0, inner_steps, body, y0)

        y0 = jax.lax.stop_gradient(state.y if warm_start else state.y_init)
        x = state.x
        if method == "itd":
            def hyper(x_):
                y_T = lower_steps(x_, y0)
                return problem.upper(x_, y_T, batch), y_T

            (f, y_T), hg = jax.value_and_grad(hyper, has_aux=True)(x)
        else:
            y_T = lower_steps(x, y0)
            f, (fx, fy) = jax.value_and_grad(problem.upper, argnums=(0, 1))(x, y_T, batch)
            grad_y = lambda y_: jax.grad(problem.lower, argnums=1)(x, y_, batch)  # noqa: E731

            def neumann(_, carry):
                v, p = carry
                hp = jax.jvp(grad_y, (y_T,), (p,))[1]
                p = jax.tree.map(lambda a, b: a - eta * b, p, hp)
                return jax.tree.map(lambda a, b: a + eta * b, v, p), p

            if linear_warm_start:
                def richardson(_, v):
                    hv = jax.jvp(grad_y, (y_T,), (v,))[1]
                    return jax.tree.map(lambda a, h_, b: a - eta * (h_ - b), v, hv, fy)

                v = jax.lax.fori_loop(0, neumann_steps, richardson, jax.lax.stop_gradient(state.v))
            else:
                v0 = jax.tree.map(lambda a: eta * a, fy)
                v, _ = jax.lax.fori_loop(0, neumann_steps - 1, neumann, (v0, fy))
            cross = jax.grad(lambda x_: _vdot(jax.grad(problem.lower, argnums=1)(x_, y_T, batch), v))(x)
            hg = jax.tree.map(lambda a, b: a - b, fx, cross)
        updates, x_opt = x_tx.update(hg, state.x_opt, x)
        x_new = proj_x(optax.apply_updates(x, updates))
        metrics = {"upper_loss": f, "hypergrad_sq": tree_sq_norm(hg), "lower_loss": problem.lower(x, y_T, batch)}
        extra = getattr(problem, "metrics", None)
        if callable(extra):
            metrics.update({name: jnp.asarray(val) for name, val in extra(x, y_T).items()})
        v_keep = jax.lax.stop_gradient(v) if method == "aid" else state.v
        return ImplicitState(x=x_new, y=jax.lax.stop_gradient(y_T), y_init=state.y_init, x_opt=x_opt,
                             k=state.k + 1, v=v_keep), metrics

    return Solver(init=init, step=step, sample=pbgd_sample)


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
    return sum((jnp.vdot(u, w) for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)), jnp.zeros(()))
