"""MoFO (momentum-filtered Adam) as an optax.GradientTransformation.

Chen, Wang, Zhang, Lin, Zhang, Sun, Ding, Sun (2024), "MoFO: Momentum-Filtered Optimizer for Mitigating Forgetting
in LLM Fine-Tuning", arXiv:2407.20999 (TMLR 2025), Algorithm 1, restated (not copied). The parameters are split
into partitions (here: the leaves of the parameter pytree, one tensor each, as in the authors' public code
YChen-zzz/MoFO, ``AdamW_MoFO``). Every step keeps Adam's moments for *all* coordinates,

    m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2,   d_t = m_hat_t / (sqrt(v_hat_t) + eps),

(bias-corrected as in Adam) and applies the step only on the filtered coordinates: in each partition of n
entries, the k = max(1, floor(alpha n)) entries with the largest |m_t| (the momentum filter; alpha = ``fraction``),

    theta_{t+1} = theta_t - eta_t * (d_t * mask_t  [+ lambda theta_t]).

Symbols: alpha = ``fraction`` (the paper's top-alpha, the code's ``fraction``), beta1, beta2, epsilon = ``b1``,
``b2``, ``eps``, eta_t = ``learning_rate`` (a float or an optax schedule), lambda = ``weight_decay``.

From the public code (read, restated): k = int(n * fraction) per tensor, the threshold is the k-th largest |m|
(the raw momentum: the bias correction is one scalar per tensor and does not change the order); decoupled weight
decay p <- p (1 - lr lambda) on *every* coordinate, filtered or not (so with lambda > 0 the unselected coordinates
do move, towards 0); biases and norm weights are not filtered (``filtered`` = False for such leaves here). The code's
defaults are b1 = 0.9, b2 = 0.999, eps = 1e-8, weight decay 0.1, fraction 0.03; its README recommends 5-20 %, 15 %
in its examples.

Reconstructed / chosen here: (i) ties at the threshold: as in the code, every entry with |m| >= the k-th largest
is kept (exactly k whenever the k-th and (k+1)-th |m| differ, more on ties); (ii) k = floor(alpha n + 1e-9), so
that alpha = 0.29, n = 100 gives 29, not the 28 of int(0.29 * 100), and at least 1 (the code fails for k = 0);
(iii) Adam's arithmetic is optax.scale_by_adam's (sqrt(v / (1 - b2^t)) + eps), which the code writes as
sqrt(v) / sqrt(1 - b2^t) + eps: equal up to rounding.
Consequences used by the tests: with fraction = 1 (a Python float, no weight decay) the filter is not built and
the update is optax.adam's bit for bit (a *traced* fraction of 1 is a runtime select that is all True: the same
values, but XLA may then round Adam's part differently, by 1 ulp per step in experiments/mofo.py's second run); a
coordinate never selected keeps its initial value exactly when weight_decay = 0.

The convergence measure of the paper's theorem is the filtered gradient norm ||g||_{1,top-alpha}: the sum over
partitions of the l1 norm of the top-alpha fraction (by magnitude) of that partition's entries
(:func:`filtered_norm`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_in_range, check_nonnegative, check_positive, is_traced

TIE_GUARD = 1e-9  # k = floor(alpha n + TIE_GUARD): alpha n = 28.999999999999996 counts as 29


def _check_fraction(fraction: Any) -> None:
    if isinstance(fraction, bool) or callable(fraction):
        raise RatelabError(f"fraction must be a number in (0, 1], got {fraction!r}")
    check_in_range("fraction", fraction, 0.0, 1.0, closed="right")


def top_count(n: int, fraction: Any) -> Any:
    """k = max(1, floor(fraction * n)), the number of entries kept in a partition of n (a tracer if ``fraction`` is)."""
    _check_fraction(fraction)
    if is_traced(fraction):
        return jnp.clip(jnp.floor(fraction * n + TIE_GUARD), 1, n).astype(jnp.int32)
    return int(min(max(int(float(fraction) * n + TIE_GUARD), 1), n))


def top_mask(x: jax.Array, fraction: Any) -> jax.Array:
    """Boolean mask of ``x``'s shape, True where |x| >= the k-th largest |x| (k = :func:`top_count`): the k entries
    of largest |x| when the k-th and (k+1)-th differ, and every tie at the threshold otherwise (the public code's
    rule). A concrete ``fraction`` finds the threshold with ``lax.top_k`` (a traced one sorts)."""
    a = jnp.abs(jnp.ravel(x))
    n = a.shape[0]
    k = top_count(n, fraction)
    if is_traced(k):
        threshold = jnp.sort(a)[n - k]
    elif k == n:
        return jnp.ones(jnp.shape(x), bool)
    elif 2 * k <= n:
        threshold = jax.lax.top_k(a, k)[0][k - 1]
    else:  # the k-th largest is the (n - k + 1)-th smallest
        threshold = -jax.lax.top_k(-a, n - k + 1)[0][n - k]
    return jnp.reshape(a >= threshold, jnp.shape(x))


def filtered_norm(tree: Any, fraction: Any) -> jax.Array:
    """||tree||_{1,top-alpha}: the sum over leaves (partitions) of the l1 norm of each leaf's top-alpha entries."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise RatelabError("tree must hold at least one array")
    return sum(jnp.sum(jnp.where(top_mask(x, fraction), jnp.abs(x), 0)) for x in leaves)


def scale_by_mofo(fraction: Any = 0.15, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  filtered: Any = None) -> optax.GradientTransformation:
    """Adam's direction d_t (optax.scale_by_adam), zeroed outside the top-``fraction`` |m_t| of each leaf.

    ``filtered``: None (every leaf is filtered) or a pytree of bools like the parameters; a False leaf gets Adam's
    full direction (the public code leaves biases and norm weights unfiltered). The state is optax's
    ``ScaleByAdamState`` (count, mu, nu) for all coordinates.
    """
    _check_fraction(fraction)
    check_in_range("b1", b1, 0.0, 1.0, closed="left")
    check_in_range("b2", b2, 0.0, 1.0, closed="left")
    check_nonnegative("eps", eps)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def flags(tree: Any) -> list[bool]:
        leaves, struct = jax.tree_util.tree_flatten(tree)
        if filtered is None:
            return [True] * len(leaves)
        f_leaves, f_struct = jax.tree_util.tree_flatten(filtered)
        if f_struct != struct or not all(isinstance(f, bool) for f in f_leaves):
            raise RatelabError(f"filtered must be None or a pytree of bools shaped like the parameters "
                               f"({struct}), got {f_struct}")
        return f_leaves

    def init(params: Any) -> Any:
        flags(params)
        return adam.init(params)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        direction, state = adam.update(updates, state, params)
        d_leaves, struct = jax.tree_util.tree_flatten(direction)
        m_leaves = jax.tree_util.tree_leaves(state.mu)
        out = [jnp.where(top_mask(m, fraction), d, jnp.zeros_like(d)) if f else d
               for d, m, f in zip(d_leaves, m_leaves, flags(direction), strict=True)]
        return jax.tree_util.tree_unflatten(struct, out), state

    return optax.GradientTransformation(init, update)


def mofo(learning_rate: Any, fraction: Any = 0.15, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: Any = 0.0, filtered: Any = None) -> optax.GradientTransformation:
    """MoFO: :func:`scale_by_mofo`, then (if ``weight_decay`` is not 0) decoupled weight decay on every coordinate
    as in the public code, then -``learning_rate`` (a float or an optax schedule). With ``fraction=1`` and no weight
    decay this is ``optax.adam(learning_rate, b1, b2, eps)`` bit for bit."""
    if not callable(learning_rate):
        check_positive("learning_rate", learning_rate)
    if not callable(weight_decay):
        check_nonnegative("weight_decay", weight_decay)
    parts = [scale_by_mofo(fraction, b1, b2, eps, filtered)]
    if callable(weight_decay) or is_traced(weight_decay) or float(weight_decay) != 0.0:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)
