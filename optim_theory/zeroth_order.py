"""Zeroth-order (ZO) gradient estimators as optax pieces: ZO-SGD, ZO-SGD-Sign, ZO-SGD-MMT, ZO-Adam, forward gradient.

Zhang, Li, Hong, Li, Zhang, Zhang, Chen, Lee, Yin, Hong, Wang, Liu, Chen (2024), "Revisiting Zeroth-Order
Optimization for Memory-Efficient LLM Fine-Tuning: A Benchmark" (ZO-Bench), arXiv:2402.11592, Sec. 3 (restated,
not copied). With f = ``loss_fn``, x the parameters, u_i ~ N(0, I) the random directions (``q`` = q of them per
step, smoothing radius mu = ``mu``), the randomized gradient estimates (RGE) are

* one-sided (``kind="one_sided"``, the paper's RGE):  g = (1/q) sum_i [f(x + mu u_i) - f(x)] / mu * u_i;
* two-sided (``kind="two_sided"``):                   g = (1/q) sum_i [f(x + mu u_i) - f(x - mu u_i)] / (2 mu) * u_i;
* the forward gradient (``kind="forward"``, the paper's "Forward-Grad", one ``jax.jvp`` per direction):
  g = (1/q) sum_i (grad f(x)^T u_i) u_i, the mu -> 0 limit of both;
* block-wise (``blockwise=True``, the paper's block-wise ZO): each parameter block (a leaf of the parameter pytree)
  gets its own q directions that perturb that block only, g_b = (1/q) sum_i delta_{b,i} u_{b,i}; since the blocks'
  identities sum to I, g stays unbiased for linear f, with q x (number of blocks) queries per step.

The optimizers of the benchmark are the estimate followed by an optax transformation (ZO-SGD = estimate then
``optax.sgd``, ZO-SGD-Sign = then ``optax.scale_by_sign`` and ``-lr``, ZO-SGD-MMT = ``optax.sgd(momentum=...)``,
ZO-Adam = ``optax.adam``): :func:`zo_estimate` is an ``optax.GradientTransformationExtraArgs`` that ignores the incoming
updates and returns g, so ``optax.chain(zo_estimate(...), optax.adam(lr))`` is ZO-Adam (:func:`zo_sgd`,
:func:`zo_sgd_sign`, :func:`zo_sgd_momentum`, :func:`zo_adam` build these chains).

Facts used by the tests and ``experiments/zo_bench.py``: E[g] = grad f for linear f (two-sided, Gaussian u: E u u^T
= I); for a quadratic f the two-sided difference is exact, f(x + mu u) - f(x - mu u) = 2 mu u^T grad f(x), so the
two-sided estimate equals the forward gradient with the same u for every mu (derived here; the one-sided one is off
by (mu / 2) (u^T H u) u).

Queries run one after another (``lax.scan`` over the q directions, each drawn from its own key), so one
perturbation is alive at a time: the memory is that of a forward pass plus a few copies of the parameters (the
paper's point against first-order fine-tuning, which keeps the activations for the backward pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_positive, check_positive_int

KINDS = ("two_sided", "one_sided", "forward")
Loss = Callable[..., jax.Array]


def _check(kind: str, mu: float, q: int) -> None:
    check_choice("kind", kind, KINDS)
    check_positive_int("q", q)
    check_positive("mu", mu)


def _gaussian_like(key: jax.Array, params: Any, mask: Any = None) -> Any:
    """u ~ N(0, I) shaped like ``params`` (drawn in float32 and cast: the same u with x64 on and off); ``mask``
    (a pytree of 0/1 scalars per leaf) zeroes the blocks that are not perturbed."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    u = [jax.random.normal(k, jnp.shape(x), jnp.float32).astype(jnp.result_type(x)) for k, x in zip(keys, leaves,
                                                                                                   strict=True)]
    if mask is not None:
        u = [m * ui for m, ui in zip(jax.tree_util.tree_leaves(mask), u, strict=True)]
    return jax.tree_util.tree_unflatten(tree, u)


def _axpy(a: Any, u: Any, x: Any) -> Any:
    return jax.tree_util.tree_map(lambda ui, xi: xi + a * ui, u, x)


def directional(loss_fn: Loss, params: Any, u: Any, *, kind: str, mu: Any, f0: Any = None,
                loss_args: tuple = ()) -> jax.Array:
    """The scalar that multiplies u: the finite difference of ``kind`` along u, or grad f(x)^T u (``forward``)."""
    if kind == "forward":
        return jax.jvp(lambda p: loss_fn(p, *loss_args), (params,), (u,))[1]
    plus = loss_fn(_axpy(mu, u, params), *loss_args)
    if kind == "two_sided":
        return (plus - loss_fn(_axpy(-mu, u, params), *loss_args)) / (2 * mu)
    base = loss_fn(params, *loss_args) if f0 is None else f0
    return (plus - base) / mu


def zo_gradient(loss_fn: Loss, params: Any, key: jax.Array, *, mu: Any = 1e-3, q: int = 1,
                kind: str = "two_sided", blockwise: bool = False, loss_args: tuple = ()) -> Any:
    """The ZO estimate g of grad ``loss_fn(params, *loss_args)`` from ``q`` Gaussian directions drawn from ``key``.

    Symbols of ZO-Bench (arXiv:2402.11592, Sec. 3): mu = ``mu`` (smoothing radius; unused by ``forward``), q = ``q``
    (directions per step, per block when ``blockwise``), u_i the directions, the estimator formula = ``kind``
    (module docstring). Returns a pytree like ``params``.
    """
    _check(kind, mu, q)
    if not isinstance(blockwise, bool):
        raise RatelabError(f"blockwise must be True or False, got {blockwise!r}")
    leaves, tree = jax.tree_util.tree_flatten(params)
    if not leaves:
        raise RatelabError("params must hold at least one array")
    f0 = loss_fn(params, *loss_args) if kind == "one_sided" else None
    n_blocks = len(leaves) if blockwise else 1
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)

    def one_block(b: int, key_b: jax.Array, acc: Any) -> Any:
        mask = None
        if blockwise:
            mask = jax.tree_util.tree_unflatten(tree, [jnp.asarray(float(i == b)) for i in range(len(leaves))])

        def body(acc: Any, k: jax.Array) -> tuple[Any, None]:
            u = _gaussian_like(k, params, mask)
            c = directional(loss_fn, params, u, kind=kind, mu=mu, f0=f0, loss_args=loss_args)
            return jax.tree_util.tree_map(lambda a, ui: a + (c / q) * ui, acc, u), None

        return jax.lax.scan(body, acc, jax.random.split(key_b, q))[0]

    acc = zero
    for b, kb in enumerate(jax.random.split(key, n_blocks)):
        acc = one_block(b, kb, acc)
    return jax.tree_util.tree_map(lambda a, x: a.astype(jnp.result_type(x)), acc, params)


class ZOEstimateState(NamedTuple):
    key: jax.Array  # the PRNG key of the next step's directions


def zo_estimate(loss_fn: Loss, key: jax.Array, *, mu: Any = 1e-3, q: int = 1, kind: str = "two_sided",
                blockwise: bool = False) -> optax.GradientTransformationExtraArgs:
    """The ZO estimate as the first link of an optax chain: ``update(updates, state, params, loss_args=())``
    ignores ``updates`` (pass ``None`` or the parameters) and returns :func:`zo_gradient` at ``params`` with the
    state's key, then splits the key. ``key`` seeds the directions; symbols as in :func:`zo_gradient`."""
    _check(kind, mu, q)
    if not isinstance(key, jax.Array) or not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,)):
        raise RatelabError(f"key must be a jax PRNG key, got {type(key).__name__}")

    def init(params: Any) -> ZOEstimateState:
        del params
        return ZOEstimateState(key)

    def update(updates: Any, state: ZOEstimateState, params: Any = None, *, loss_args: tuple = (),
               **extra: Any) -> tuple[Any, ZOEstimateState]:
        del updates, extra
        if params is None:
            raise RatelabError("params must be given to a zeroth-order update (the loss is queried there)")
        now, nxt = jax.random.split(state.key)
        g = zo_gradient(loss_fn, params, now, mu=mu, q=q, kind=kind, blockwise=blockwise, loss_args=loss_args)
        return g, ZOEstimateState(nxt)

    return optax.GradientTransformationExtraArgs(init, update)


def zo_sgd(loss_fn: Loss, key: jax.Array, learning_rate: Any, **estimator: Any) -> optax.GradientTransformation:
    """ZO-SGD: x <- x - lr g (``learning_rate`` a float or an optax schedule)."""
    return optax.chain(zo_estimate(loss_fn, key, **estimator), optax.sgd(learning_rate))


def zo_sgd_sign(loss_fn: Loss, key: jax.Array, learning_rate: Any, **estimator: Any) -> optax.GradientTransformation:
    """ZO-SGD-Sign: x <- x - lr sign(g)."""
    return optax.chain(zo_estimate(loss_fn, key, **estimator), optax.scale_by_sign(),
                       optax.scale_by_learning_rate(learning_rate))


def zo_sgd_momentum(loss_fn: Loss, key: jax.Array, learning_rate: Any, momentum: float = 0.9,
                    **estimator: Any) -> optax.GradientTransformation:
    """ZO-SGD-MMT: heavy-ball momentum ``momentum`` on g (optax.sgd's trace)."""
    return optax.chain(zo_estimate(loss_fn, key, **estimator), optax.sgd(learning_rate, momentum=momentum))


def zo_adam(loss_fn: Loss, key: jax.Array, learning_rate: Any, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8, **estimator: Any) -> optax.GradientTransformation:
    """ZO-Adam: Adam's moments on g (optax.adam, its b1, b2, eps)."""
    return optax.chain(zo_estimate(loss_fn, key, **estimator), optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
