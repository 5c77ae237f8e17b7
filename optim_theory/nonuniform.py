"""(L0, L1)-smooth test functions and iteration counts for Adam vs gradient descent with momentum.

Wang, Zhang, Meng, Sun, Ma & Chen (2024), "On the Convergence of Adam under Non-uniform Smoothness: Separability
from SGDM and Beyond", arXiv:2403.15146. The paper's setting: f is (L0, L1)-smooth, ||Hess f(x)|| <= L0 +
L1 ||grad f(x)||, Delta = f(x0) - inf f; the goal is an eps-stationary point, ||grad f|| <= eps. Its abstract: in the
deterministic case Adam attains the first-order lower bound (of order Delta L0 eps^-2) while gradient descent with
momentum (GDM) has a higher-order dependence on Delta; in the stochastic case there are instances on which SGDM
fails with every learning rate. The methods are optax's own: ``optax.adam(lr, b1, b2, eps)`` (Adam: beta1 = ``b1``,
beta2 = ``b2``, the paper's lambda = ``eps``) and ``optax.sgd(lr, momentum=beta)`` (SGDM/GDM with heavy-ball
momentum beta).

The instance (derived here, a reconstruction: the paper's lower-bound functions are not restated) is separable,
f(x, y) = wall(x) + ramp(y), the two hard parts of the GD lower-bound argument in two coordinates so that one step
size must serve both:

* ``wall(x) = (m / a) (cosh(a x) - 1)`` with m = L0 / a: an exponential wall, wall' = m sinh(a x), wall'' = L0
  cosh(a x) <= L0 + a |wall'| (cosh <= 1 + |sinh|), so it is (L0, a)-smooth. Starting at height Delta_x a step
  eta must stay below about 2 log(2 a Delta_x / m) / (a^2 Delta_x), or the iterate jumps to the far side of the
  valley, higher, and diverges. ``wall="quadratic"`` replaces it by L0 x^2 / 2 (the L1 = 0 limit a -> 0).
* ``ramp(y) = (s^2 / L0) (sqrt(1 + z^2) - 1)``, z = L0 y / s (a pseudo-Huber ramp): slope -> s = ``slope`` far
  out, curvature L0 / (1 + z^2)^(3/2) <= L0 at its bowl. With s = 2 eps every point with |y| > s / (sqrt(3) L0) is
  not eps-stationary; crossing the ramp's gap Delta_y at step eta takes Delta_y / (eta s^2) steps.

So ||Hess f|| = max(wall'', ramp'') <= L0 + a ||grad f||: (L0, L1) = (L0, a), both tight (:func:`constants`; at the
origin ||Hess|| = L0, and (wall'' - L0) / |wall'| -> a as |x| -> inf). Derived predictions: GDM's step is capped
by the wall at about log(Delta) / (a^2 Delta), so it needs about a^2 Delta^2 / (eps^2 log Delta) iterations; Adam's
normalised step crosses the wall in log(Delta) / (a lr) steps and the ramp in Delta_y / (s lr) with lr ~ eps / L0,
about Delta L0 eps^-2 in all: Delta-exponent 1 for Adam (the lower bound's), near 2 for GDM; eps-exponent -2 for both.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_in_range, check_positive

WALLS = ("exp", "quadratic")
METHODS = ("adam", "sgdm")


class Instance(NamedTuple):
    """f(x, y) = wall(x) + ramp(y): ``l0`` = L0, ``a`` = L1 (the wall's exponent), ``slope`` = s."""

    l0: float
    a: float
    slope: Any
    wall: str = "exp"


def check_instance(inst: Instance) -> None:
    """RatelabError naming the field when an instance is not one this module defines."""
    check_positive("l0", inst.l0)
    check_choice("wall", inst.wall, WALLS)
    if inst.wall == "exp":
        check_positive("a", inst.a)
    if isinstance(inst.slope, (int, float)):
        check_positive("slope", inst.slope)


def constants(inst: Instance) -> tuple[float, float]:
    """(L0, L1) of f in closed form (derived here): (L0, a) for the exponential wall, (L0, 0) for the quadratic one."""
    check_instance(inst)
    return float(inst.l0), float(inst.a) if inst.wall == "exp" else 0.0


def _wall(inst: Instance, x):
    if inst.wall == "exp":
        m = inst.l0 / inst.a
        return m / inst.a * (jnp.cosh(inst.a * x) - 1.0), m * jnp.sinh(inst.a * x), inst.l0 * jnp.cosh(inst.a * x)
    return 0.5 * inst.l0 * x**2, inst.l0 * x, inst.l0 * jnp.ones_like(x)


def _ramp(inst: Instance, y):
    s, l0 = inst.slope, inst.l0
    z = l0 * y / s
    r = jnp.sqrt(1.0 + z**2)
    return s**2 / l0 * (r - 1.0), s * z / r, l0 / r**3


def value(inst: Instance, p):
    """f at p = [..., 2] (x, y); inf f = f(0) = 0."""
    return _wall(inst, p[..., 0])[0] + _ramp(inst, p[..., 1])[0]


def grad(inst: Instance, p):
    """grad f at p = [..., 2] (closed form)."""
    return jnp.stack([_wall(inst, p[..., 0])[1], _ramp(inst, p[..., 1])[1]], axis=-1)


def hessian_norm(inst: Instance, p):
    """||Hess f(p)||: the Hessian is diagonal, so its largest diagonal entry."""
    return jnp.maximum(_wall(inst, p[..., 0])[2], _ramp(inst, p[..., 1])[2])


def start(inst: Instance, delta, split):
    """x0 = (x, y) > 0 with wall(x) = split Delta and ramp(y) = (1 - split) Delta, so f(x0) - inf f = Delta."""
    dx, dy = split * delta, (1.0 - split) * delta
    if inst.wall == "exp":
        m = inst.l0 / inst.a
        x = jnp.arccosh(1.0 + inst.a * dx / m) / inst.a
    else:
        x = jnp.sqrt(2.0 * dx / inst.l0)
    s = inst.slope
    y = s / inst.l0 * jnp.sqrt((1.0 + inst.l0 * dy / s**2) ** 2 - 1.0)
    return jnp.stack([x, y], axis=-1)


def optimizer(method: str, lr: Any, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
              momentum: float = 0.9) -> optax.GradientTransformation:
    """optax's Adam (``b1``, ``b2``, ``eps``) or SGD with heavy-ball ``momentum`` (SGDM), step ``lr`` (a float or an
    optax schedule)."""
    check_choice("method", method, METHODS)
    if method == "adam":
        return optax.adam(lr, b1=b1, b2=b2, eps=eps)
    return optax.sgd(lr, momentum=momentum)


def stay_count(opt: optax.GradientTransformation, inst: Instance, p0, eps, steps: int, *, window: int | None = 200,
               noise=None, blowup: float = 1e6):
    """Iterations to an eps-stationary point that the method keeps: the first t with ||grad f(x_s)|| <= eps for
    every s in [t, t + ``window``) (``window=None``: for every s up to ``steps``), ``steps`` if there is none; and
    whether the run blew up. Asking for ``window`` consecutive eps-stationary iterates keeps a large step that
    passes through the region by chance from counting, without tying the count to the horizon (constant-step Adam
    spikes again much later, when its second moment has decayed). ``noise``: ``[steps, 2]`` added to the gradient
    (the stochastic oracle); ``None`` is the deterministic case. A run whose iterate leaves ||x|| <= ``blowup`` (or
    becomes non-finite) is frozen there and is never eps-stationary."""
    if window is not None and not 0 < window <= steps:
        raise RatelabError(f"window must be None or in [1, steps = {steps}], got {window}")

    def body(carry, inp):
        p, s, last_bad, run, hit, dead = carry
        t, xi = inp
        g = grad(inst, p)
        bad = (jnp.linalg.norm(g) > eps) | dead
        last_bad = jnp.where(bad, t, last_bad)
        run = jnp.where(bad, 0, run + 1)
        if window is not None:
            hit = jnp.where((hit == steps) & (run >= window), t - window + 1, hit)
        u, s_new = opt.update(g + xi, s, p)
        p_new = optax.apply_updates(p, u)
        dead = dead | ~jnp.all(jnp.isfinite(p_new)) | (jnp.max(jnp.abs(p_new)) > blowup)
        p = jnp.where(dead, p, p_new)
        s = jax.tree.map(lambda a, b: jnp.where(dead, a, b), s, s_new)
        return (p, s, last_bad, run, hit, dead), None

    noise = jnp.zeros((steps, 2), p0.dtype) if noise is None else noise
    init = (p0, opt.init(p0), jnp.asarray(-1), jnp.asarray(0), jnp.asarray(steps), jnp.asarray(False))
    (p, _, last_bad, _, hit, dead), _ = jax.lax.scan(body, init, (jnp.arange(steps), noise))
    if window is not None:
        return hit, dead
    final_bad = (jnp.linalg.norm(grad(inst, p)) > eps) | dead
    return jnp.where(final_bad, steps, last_bad + 1), dead


def success_tail(opt: optax.GradientTransformation, inst: Instance, p0, eps, steps: int, tail: int, *, noise=None,
                 blowup: float = 1e6):
    """The fraction of the last ``tail`` iterates of ``steps`` with ||grad f|| <= eps (0 after a blow-up), and whether
    the run blew up (left ||x|| <= ``blowup`` or became non-finite; it is then frozen). ``noise`` as in
    :func:`stay_count`."""
    if not 0 < tail <= steps:
        raise RatelabError(f"tail must be in [1, steps = {steps}], got {tail}")

    def body(carry, inp):
        p, s, hits, dead = carry
        t, xi = inp
        g = grad(inst, p)
        u, s_new = opt.update(g + xi, s, p)
        p_new = optax.apply_updates(p, u)
        dead = dead | ~jnp.all(jnp.isfinite(p_new)) | (jnp.max(jnp.abs(p_new)) > blowup)
        p = jnp.where(dead, p, p_new)
        s = jax.tree.map(lambda a, b: jnp.where(dead, a, b), s, s_new)
        ok = (jnp.linalg.norm(grad(inst, p)) <= eps) & ~dead & (t >= steps - tail)
        return (p, s, hits + ok, dead), None

    noise = jnp.zeros((steps, 2), p0.dtype) if noise is None else noise
    init = (p0, opt.init(p0), jnp.asarray(0), jnp.asarray(False))
    (_, _, hits, dead), _ = jax.lax.scan(body, init, (jnp.arange(steps), noise))
    return jnp.where(dead, 0.0, hits / tail), dead


def tuned(counts: np.ndarray, grid: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The grid rule used for every method: the fewest iterations over the step-size grid (``axis``) and the step
    that gives them (the smallest such step on ties)."""
    counts = np.asarray(counts)
    idx = np.argmin(counts, axis=axis)
    return np.min(counts, axis=axis), np.asarray(grid)[idx]


def check_split(split: float) -> None:
    check_in_range("split", split, 0.0, 1.0)
