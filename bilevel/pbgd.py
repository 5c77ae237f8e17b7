"""Penalty-based bilevel gradient descent: V-PBGD (value-gap penalty) and G-PBGD (gradient-norm penalty).

Paper
-----
H. Shen, Q. Xiao and T. Chen, "On Penalty-based Bilevel Gradient Descent Method", ICML 2023 (PMLR 202) and
Mathematical Programming (2025), arXiv:2302.05185. The bilevel problem

    BP:  min_{x in C, y} f(x, y)   s.t.  y in S(x) = argmin_{y in U(x)} g(x, y)

is replaced by the penalised problem  BP_{gamma p}:  min_{x in C, y in U(x)} F_gamma(x, y) = f(x, y) + gamma p(x, y)
with a rho-squared-distance-bound penalty p (p >= 0, rho p(x, y) >= d_{S(x)}(y)^2, p = 0 iff y in S(x)):

* V-PBGD, p(x, y) = g(x, y) - v(x) with v(x) = min_{y in U(x)} g(x, y) (a distance bound when g(x, .) satisfies the
  PL / quadratic-growth condition). By Danskin, grad v(x) = grad_x g(x, y*(x)); the algorithm replaces y*(x) by an
  inner iterate z (the paper's omega / hat y_k) obtained by T projected gradient steps on g(x_k, .), warm-started
  at the previous z:  z_{t+1} = Proj_{U(x_k)}(z_t - beta grad_y g(x_k, z_t)).
* G-PBGD, p(x, y) = ||grad_y g(x, y)||^2 (a distance bound under the lower-level error-bound condition; for an
  unconstrained lower level).

One outer step of PBGD (the paper's Algorithm 1 / projected gradient descent on F_gamma) is

    x_{k+1} = Proj_C(x_k - alpha grad_x F_gamma(x_k, y_k)),
    y_{k+1} = Proj_{U(x_{k+1})}(y_k - alpha grad_y F_gamma(x_k, y_k))

and its stationarity measure is the projected gradient mapping G_gamma(x_k, y_k) = ((x_k, y_k) - (x_{k+1},
y_{k+1})) / alpha, whose average squared norm decays like O(L_gamma / K) for a fixed gamma (the finite-time
theorem for PBGD; V-PBGD needs T_k = O(log k) inner steps, fewer with warm start). The general relations between
BP and BP_{gamma p} (Theorem 1, global: gamma >= gamma* = L^2 rho / (4 eps); Theorem 2, local: a local solution of
BP_{gamma p} solves BP_eps with eps <= L^2 rho / gamma^2 when p(x, .) is convex) give p(x_gamma, y_gamma) =
O(gamma^-2) and d_{S(x)}(y_gamma) <= sqrt(rho p) = O(1/gamma), L being the Lipschitz constant of f(x, .).
Stochastic variants replace f, g by minibatch estimates (the ``batch`` argument).

Symbols -> arguments: alpha -> ``x_optimizer`` / ``y_optimizer`` (a float or schedule means plain SGD with that
step; any optax transformation is accepted, e.g. the authors' step scaled by min(1, 1/gamma)); gamma -> ``gamma``
(a float, or a schedule k -> gamma_k such as the authors' linear ramp from gamma_0 to gamma_max); T ->
``inner_steps``; beta -> ``inner_lr``; Proj_C -> ``project_x(x)``; Proj_{U(x)} -> ``project_y(x, y)``.

Problem protocol: ``problem.upper(x, y, batch)`` (f), ``problem.lower(x, y, batch)`` (g), ``problem.initial(key)
-> (x, y)``; optional ``problem.sample_batch(key)`` (one step's minibatch; otherwise each step receives a key) and
``problem.metrics(x, y) -> dict`` of extra scalar metrics (e.g. ``dist_to_opt``). Variables may be any pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver, split_keys
from ratelab.validate import check_nonnegative, check_positive, check_positive_int

PyTree = Any


class PBGDState(NamedTuple):
    """x: upper variable; y: lower variable of the penalised problem; z: V-PBGD's inner iterate approximating
    argmin_z g(x, z) (warm-started; unused by G-PBGD, where it mirrors y); optimizer states; k: step counter."""

    x: PyTree
    y: PyTree
    z: PyTree
    x_opt: optax.OptState
    y_opt: optax.OptState
    k: jax.Array


def tree_sq_norm(tree: PyTree) -> jax.Array:
    """Squared Euclidean norm of a pytree."""
    return sum((jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)), jnp.zeros(()))


def _sgd_step(value: Any) -> Callable[[Any], Any] | None:
    """The step-size schedule when ``value`` means plain SGD, else None."""
    return None if isinstance(value, optax.GradientTransformation) else as_schedule(value)


def as_optimizer(name: str, value: Any) -> optax.GradientTransformation:
    """A float or schedule becomes ``optax.sgd`` with that step; a GradientTransformation is used as is."""
    if isinstance(value, optax.GradientTransformation):
        return value
    if callable(value):
        return optax.sgd(value)
    check_positive(name, value)
    return optax.sgd(value)


def _identity_x(x: PyTree) -> PyTree:
    return x


def _identity_y(x: PyTree, y: PyTree) -> PyTree:
    del x
    return y


def _check_projection(name: str, fn: Any, arity: int) -> Callable:
    if fn is None:
        return _identity_x if arity == 1 else _identity_y
    if not callable(fn):
        raise RatelabError(f"{name} must be None or a callable taking {arity} argument(s), got {type(fn).__name__}")
    return fn


def pbgd_sample(problem: Any, key: jax.Array, n: int) -> Any:
    """``n`` steps' minibatches from ``problem.sample_batch`` when the problem has one, else one key per step."""
    if hasattr(problem, "sample_batch"):
        return jax.vmap(problem.sample_batch)(jax.random.split(key, n))
    return split_keys(problem, key, n)


def _check_problem(problem: Any) -> None:
    missing = [m for m in ("upper", "lower", "initial") if not callable(getattr(problem, m, None))]
    if missing:
        raise RatelabError(f"problem must provide upper(x, y, batch), lower(x, y, batch) and initial(key); "
                           f"{type(problem).__name__} lacks {', '.join(missing)}")


def _mapping_sq(old: PyTree, new: PyTree, grad: PyTree, step: Any, project: Callable[[PyTree], PyTree]) -> jax.Array:
    """||G||^2 of the projected gradient mapping: (old - new)/step for SGD steps; with another optimizer the
    unit-step mapping old - Proj(old - grad)."""
    if step is not None:
        return tree_sq_norm(jax.tree.map(lambda a, b: (a - b) / step, old, new))
    moved = project(jax.tree.map(lambda a, g: a - g, old, grad))
    return tree_sq_norm(jax.tree.map(lambda a, b: a - b, old, moved))


def _pbgd(*, penalty: str, x_optimizer: Any, y_optimizer: Any, gamma: Any, inner_steps: int, inner_lr: Any,
          project_x: Any, project_y: Any) -> Solver:
    x_tx = as_optimizer("x_optimizer", x_optimizer)
    y_tx = as_optimizer("y_optimizer", y_optimizer)
    x_step, y_step = _sgd_step(x_optimizer), _sgd_step(y_optimizer)
    if not callable(gamma):
        check_nonnegative("gamma", gamma)
    gamma_s = as_schedule(gamma)
    proj_x = _check_projection("project_x", project_x, 1)
    proj_y = _check_projection("project_y", project_y, 2)
    inner_s = as_schedule(inner_lr)

    def init(problem: Any, key: jax.Array) -> PBGDState:
        _check_problem(problem)
        x, y = problem.initial(key)
        x = proj_x(x)
        y = proj_y(x, y)
        return PBGDState(x=x, y=y, z=y, x_opt=x_tx.init(x), y_opt=y_tx.init(y), k=jnp.zeros((), jnp.int32))

    def step(state: PBGDState, problem: Any, batch: Any) -> tuple[PBGDState, dict[str, jax.Array]]:
        x, y, k = state.x, state.y, state.k
        gam = gamma_s(k)
        if penalty == "value":
            beta = inner_s(k)

            def inner(_, z):
                gz = jax.grad(problem.lower, argnums=1)(x, z, batch)
                return proj_y(x, jax.tree.map(lambda a, b: a - beta * b, z, gz))

            z = jax.lax.fori_loop(0, inner_steps, inner, state.z)
            z_c = jax.lax.stop_gradient(z)

            def objective(x_, y_):
                f = problem.upper(x_, y_, batch)
                p = problem.lower(x_, y_, batch) - problem.lower(x_, z_c, batch)
                return f + gam * p, (f, p)
        else:
            z = y

            def objective(x_, y_):
                f = problem.upper(x_, y_, batch)
                p = tree_sq_norm(jax.grad(problem.lower, argnums=1)(x_, y_, batch))
                return f + gam * p, (f, p)

        (value, (f, p)), (gx, gy) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(x, y)
        ux, x_opt = x_tx.update(gx, state.x_opt, x)
        x_new = proj_x(optax.apply_updates(x, ux))
        uy, y_opt = y_tx.update(gy, state.y_opt, y)
        y_new = proj_y(x_new, optax.apply_updates(y, uy))
        if penalty != "value":
            z = y_new
        ax = None if x_step is None else x_step(k)
        ay = None if y_step is None else y_step(k)
        gmap = _mapping_sq(x, x_new, gx, ax, proj_x) + _mapping_sq(y, y_new, gy, ay, lambda v: proj_y(x, v))
        metrics = {"upper_loss": f, "penalty": p, "gamma": jnp.asarray(gam, f.dtype), "objective": value,
                   "grad_map_sq": gmap}
        extra = getattr(problem, "metrics", None)
        if callable(extra):
            metrics.update({name: jnp.asarray(v) for name, v in extra(x, y).items()})
        new = PBGDState(x=x_new, y=y_new, z=z, x_opt=x_opt, y_opt=y_opt, k=k + 1)
        return new, metrics

    return Solver(init=init, step=step, sample=pbgd_sample)


def v_pbgd(*, x_optimizer: Any, y_optimizer: Any, gamma: Any, inner_steps: int, inner_lr: Any,
           project_x: Callable | None = None, project_y: Callable | None = None) -> Solver:
    """V-PBGD (Shen, Xiao & Chen, arXiv:2302.05185, Algorithm 1 with p = g - v): projected gradient steps on
    f + gamma (g(x, y) - g(x, z)) with z from ``inner_steps`` warm-started projected gradient steps of size
    ``inner_lr`` on g(x, .). Metrics: ``upper_loss`` f(x_k, y_k), ``penalty`` g(x_k, y_k) - g(x_k, z_k),
    ``gamma``, ``objective`` F_gamma, ``grad_map_sq`` ||G_gamma(x_k, y_k)||^2 and the problem's own metrics."""
    inner_steps = check_positive_int("inner_steps", inner_steps)
    check_positive("inner_lr", inner_lr)
    return _pbgd(penalty="value", x_optimizer=x_optimizer, y_optimizer=y_optimizer, gamma=gamma,
                 inner_steps=inner_steps, inner_lr=inner_lr, project_x=project_x, project_y=project_y)


def g_pbgd(*, x_optimizer: Any, y_optimizer: Any, gamma: Any, project_x: Callable | None = None,
           project_y: Callable | None = None) -> Solver:
    """G-PBGD (Shen, Xiao & Chen, arXiv:2302.05185, Algorithm 1 with p = ||grad_y g||^2): projected gradient steps
    on f + gamma ||grad_y g(x, y)||^2 (Hessian-vector products by autodiff). ``penalty`` is ||grad_y g(x_k, y_k)||^2;
    other metrics as in :func:`v_pbgd`; ``z`` mirrors ``y``."""
    return _pbgd(penalty="gradient", x_optimizer=x_optimizer, y_optimizer=y_optimizer, gamma=gamma, inner_steps=1,
                 inner_lr=0.0, project_x=project_x, project_y=project_y)


def linear_ramp(gamma_max: Any, ramp_steps: int, gamma_init: Any = 0.0) -> optax.Schedule:
    """The authors' penalty schedule: gamma_k = min(gamma_max, gamma_init + k (gamma_max - gamma_init) / ramp_steps)
    (their code's ``gamma_init``, ``gamma_max``, ``gamma_argmax_step``)."""
    check_positive("gamma_max", gamma_max)
    ramp_steps = check_positive_int("ramp_steps", ramp_steps)
    return optax.linear_schedule(gamma_init, gamma_max, ramp_steps)


def penalty_scaled(lr: Any, gamma: Any) -> optax.Schedule:
    """Step schedule lr * min(1, 1/gamma_k): the authors' code multiplies F_gamma by min(1, 1/gamma), which keeps
    alpha <= 1/L_gamma as gamma grows (L_gamma = O(gamma))."""
    lr_s, gam_s = as_schedule(lr), as_schedule(gamma)
    return lambda k: lr_s(k) * jnp.minimum(1.0, 1.0 / jnp.maximum(gam_s(k), 1e-12))
