"""Adam-mini as an optax.GradientTransformation: one second-moment scalar per parameter block.

Zhang, Chen, Li, Ding, Chen, Kingma, Sun, Luo (2024), "Adam-mini: Use Fewer Learning Rates To Gain More",
arXiv:2406.16793, Algorithm 1 (restated, not copied): for each block b of the partition,
m_t = beta1 m_{t-1} + (1 - beta1) g_t (per coordinate, as Adam), v_{b,t} = beta2 v_{b,t-1} + (1 - beta2) mean(g_b^2)
(one scalar per block), update -lr * (m_t / (1 - beta1^t)) / (sqrt(v_{b,t} / (1 - beta2^t)) + eps).
Symbols: beta1 = ``b1``, beta2 = ``b2``, epsilon = ``eps``, the partition = ``partition`` (an integer block id per
coordinate of a flat parameter vector, ``n_blocks`` blocks). The paper's partition rule for transformers (by head,
by output neuron) is not needed here: the caller passes the partition (the Hessian blocks, or a wrong one).
With one block per coordinate the update is optax.adam's, in the same operation order (tests/test_hessian_blocks.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.validate import is_traced


class ScaleByAdamMiniState(NamedTuple):
    count: jax.Array
    mu: jax.Array  # [d] first moment, per coordinate
    nu: jax.Array  # [n_blocks] second moment, one scalar per block


def scale_by_adam_mini(partition: Any, n_blocks: int, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam-mini's preconditioner on a flat parameter vector; ``partition[i]`` in [0, n_blocks) is i's block.

    ``partition`` is a host array (checked here: every id used) or a traced integer array, so that one program
    serves several partitions under ``vmap``; then ``n_blocks`` only bounds the ids (unused ids are empty blocks,
    their ``nu`` entries stay 0) and the caller checks the ids."""
    traced = is_traced(partition)
    if not traced:
        part = np.asarray(partition)
        if part.ndim != 1 or part.size == 0 or not np.issubdtype(part.dtype, np.integer):
            raise RatelabError(f"partition must be a non-empty 1-D integer array, got {part.dtype} {part.shape}")
        if part.min() < 0 or part.max() >= n_blocks or np.unique(part).size != n_blocks:
            raise RatelabError(f"partition must use every block id in [0, {n_blocks}) (n_blocks), got ids "
                               f"{np.unique(part)[:8]}...")
        sizes = np.bincount(part, minlength=n_blocks).astype(float)
        part_j = jnp.asarray(part)
    else:
        part_j = partition
    shape = tuple(np.shape(partition))

    def block_sizes(dtype: Any) -> jax.Array:
        if not traced:
            return jnp.asarray(sizes, dtype)
        return jnp.maximum(jax.ops.segment_sum(jnp.ones(shape, dtype), part_j, num_segments=n_blocks), 1)

    def init(params):
        if params.shape != shape:
            raise RatelabError(f"params must be a flat vector of shape {shape} like partition, got {params.shape}")
        return ScaleByAdamMiniState(jnp.zeros([], jnp.int32), jnp.zeros_like(params),
                                    jnp.zeros(n_blocks, params.dtype))

    def update(updates, state, params=None):
        del params
        mu = (1 - b1) * updates + b1 * state.mu
        sq = jax.ops.segment_sum(updates * updates, part_j, num_segments=n_blocks) / block_sizes(updates.dtype)
        nu = (1 - b2) * sq + b2 * state.nu
        count = optax.safe_increment(state.count)
        mu_hat = mu / (1 - b1 ** count.astype(updates.dtype))
        nu_hat = nu / (1 - b2 ** count.astype(updates.dtype))
        out = mu_hat / (jnp.sqrt(nu_hat[part_j]) + eps)
        return out, ScaleByAdamMiniState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def adam_mini(learning_rate: Any, partition: Any, n_blocks: int, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam-mini: :func:`scale_by_adam_mini` then -learning_rate (a float or an optax schedule)."""
    return optax.chain(scale_by_adam_mini(partition, n_blocks, b1, b2, eps),
                       optax.scale_by_learning_rate(learning_rate))


def second_moment_size(state: Any) -> int:
    """Entries of the second-moment state (``nu``) in an optax state tree: Adam's [d], Adam-mini's [n_blocks]."""
    n = 0
    for s in jax.tree_util.tree_leaves(state, is_leaf=lambda s: hasattr(s, "nu")):
        if hasattr(s, "nu"):
            n += sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(s.nu))
    return n


# Parameter names of bilevel.transformer whose second moment stays per coordinate (the authors' code keeps Adam for
# the embedding and output layers) and those split by attention head (queries and keys).
PER_COORDINATE = ("embed", "unembed")
PER_HEAD = ("wq", "wk")


def transformer_partition(params: Any) -> tuple[np.ndarray, int]:
    """Adam-mini's partition of a :mod:`bilevel.transformer` parameter tree, in ``ravel_pytree`` order.

    The rule of Zhang et al. (2024), Sec. 2.3, as the authors' public code applies it (restated): the embedding and
    output matrices keep one second moment per coordinate (Adam), queries and keys get one block per attention head,
    and every other tensor is one block; here per layer, since the tree stacks the layers on a leading axis (a
    query tensor [layers, d, heads, d_head] gives layers x heads blocks). ``params`` may hold arrays or only their
    shapes (``jax.eval_shape``). Returns ``(partition, n_blocks)``.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    ids, start = [], 0
    for path, leaf in flat:
        names = [getattr(k, "key", str(k)) for k in path]
        shape = np.shape(leaf)  # an array or a jax.ShapeDtypeStruct
        if names[0] in PER_COORDINATE:
            block = np.arange(int(np.prod(shape))).reshape(shape)
        elif names[-1] in PER_HEAD:  # [layers, d, heads, d_head]: the block is (layer, head)
            block = np.broadcast_to(np.arange(shape[0])[:, None, None, None] * shape[2]
                                    + np.arange(shape[2])[None, None, :, None], shape)
        elif names[0] == "layers":  # [layers, ...]: one block per layer
            block = np.broadcast_to(np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)), shape)
        else:
            block = np.zeros(shape, int)
        ids.append(block.ravel() + start)
        start += int(block.max()) + 1
    return np.concatenate(ids), start


def transformer_block_count(vocab: int, d_model: int, n_layers: int, n_heads: int) -> int:
    """The number of Adam-mini blocks of :func:`transformer_partition`, counted from the sizes: 2 vocab d_model
    (embedding and output, per coordinate) + n_layers (2 n_heads + 7) (queries and keys per head; values, output
    projection, the three MLP matrices and the two norm scales one each) + 1 (the final norm)."""
    return 2 * vocab * d_model + n_layers * (2 * n_heads + 7) + 1
