"""Meshes, sharding rules by parameter path, and placing pytrees on a mesh, with the standard JAX machinery.

A mesh has up to three named axes: ``data`` (data parallel: the batch is split, parameters replicated), ``fsdp``
(fully sharded data parallel: the batch *and* every parameter's ``embed`` dimension are split) and ``tensor``
(tensor parallel: attention heads, MLP hidden units and the vocabulary are split). Any product works, e.g.
``data=8``, ``fsdp=8``, ``fsdp=2,tensor=4``, ``data=2,fsdp=2,tensor=2``.

Rules are written once, by the *path* of a leaf in its pytree (keys joined by ``/``, e.g. ``y/layers/attn/wq`` or
``y_opt/0/mu/layers/attn/wq``), as regular expressions matched against the end of the path. A rule names the
*logical* axis of each dimension (``vocab``, ``embed``, ``heads``, ``ff``, ``layers``, ``batch``); a mesh maps logical
axes to its own axes (:func:`logical_axes`). The same rules therefore shard the parameters y, the inner copy z, the
optimizer moments of y, and the data, on every mesh and for every model size. A dimension whose size the mapped
mesh axes do not divide is left unsplit (recorded in :attr:`ShardingPlan.fallbacks`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ratelab.errors import RatelabError

MESH_AXES = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, tuple[str | None, ...]], ...]

#: Parameters of ``bilevel.transformer`` (wherever they sit: y, z, optimizer moments of y).
PARAM_RULES: Rules = (
    (r"embed/tokens$", ("vocab", "embed")),
    (r"attn/w[qkv]$", ("layers", "embed", "heads", None)),
    (r"attn/wo$", ("layers", "heads", None, "embed")),
    (r"mlp/w_(gate|up)$", ("layers", "embed", "ff")),
    (r"mlp/w_down$", ("layers", "ff", "embed")),
    (r"(attn_norm|mlp_norm)/scale$", ("layers", "embed")),
    (r"final_norm/scale$", ("embed",)),
    (r"unembed/w$", ("embed", "vocab")),
)

#: Per-sequence arrays: the data weights x and their optimizer moments, token data, minibatches.
DATA_RULES: Rules = (
    (r"(^|/)x(_opt/.+)?$", ("batch",)),
    (r"(^|/)(train|trusted|tokens)$", ("batch", None)),
    (r"(^|/)(idx|corrupt)$", ("batch",)),
)

RULES: Rules = PARAM_RULES + DATA_RULES


def parse_mesh(text: str) -> dict[str, int]:
    """``"fsdp=2,tensor=4"`` -> ``{"fsdp": 2, "tensor": 4}`` (axis names from :data:`MESH_AXES`, sizes >= 1)."""
    axes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, sep, size = part.partition("=")
        name = name.strip()
        if not sep or name not in MESH_AXES:
            raise RatelabError(f"--mesh must look like AXIS=SIZE,... with AXIS in {', '.join(MESH_AXES)}, got {text!r}")
        if name in axes:
            raise RatelabError(f"--mesh names axis {name!r} twice, got {text!r}")
        try:
            axes[name] = int(size)
        except ValueError:
            raise RatelabError(f"--mesh sizes must be integers >= 1, got {part!r}") from None
        if axes[name] < 1:
            raise RatelabError(f"--mesh sizes must be integers >= 1, got {part!r}")
    if not axes:
        raise RatelabError(f"--mesh must name at least one axis (AXIS=SIZE with AXIS in {', '.join(MESH_AXES)})")
    return axes


def make_mesh(axes: dict[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """``jax.make_mesh`` over the first ``prod(sizes)`` devices (or ``devices``), compiler-propagated axes."""
    n = math.prod(axes.values())
    pool = list(jax.devices() if devices is None else devices)
    if n > len(pool):
        raise RatelabError(f"--mesh {fmt_mesh(axes)} needs {n} devices, {len(pool)} available "
                           "(on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N before starting)")
    return jax.make_mesh(tuple(axes.values()), tuple(axes), axis_types=(AxisType.Auto,) * len(axes),
                         devices=pool[:n])


def fmt_mesh(axes: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in axes.items())


def logical_axes(mesh: Mesh) -> dict[str, tuple[str, ...]]:
    """Logical axis -> mesh axes. ``embed`` is a parameter axis only; activations use ``act_*`` names."""
    present = set(mesh.axis_names)

    def pick(*names: str) -> tuple[str, ...]:
        return tuple(n for n in names if n in present)

    return {"batch": pick("data", "fsdp"), "embed": pick("fsdp"), "heads": pick("tensor"), "ff": pick("tensor"),
            "vocab": pick("tensor"), "act_heads": pick("tensor"), "act_ff": pick("tensor"),
            "act_vocab": pick("tensor"), "act_embed": (), "layers": (), "seq": ()}


def path_str(path: tuple[Any, ...]) -> str:
    """A key path as ``a/b/0/c`` (dict keys, attribute names, sequence indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _resolve(mesh: Mesh, logical: tuple[str | None, ...], shape: tuple[int, ...],
             fallbacks: list[str] | None, where: str) -> PartitionSpec:
    table = logical_axes(mesh)
    used: set[str] = set()
    spec: list[Any] = []
    for name, size in zip(logical, shape, strict=True):
        axes = [a for a in (table.get(name, ()) if name else ()) if a not in used]
        while axes and size % math.prod(mesh.shape[a] for a in axes):
            axes.pop()
        if name and table.get(name) and len(axes) < len(table[name]) and fallbacks is not None:
            fallbacks.append(f"{where}: {name} of size {size} not split over {table[name]}")
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules: Rules = RULES,
             fallbacks: list[str] | None = None) -> PartitionSpec:
    """The PartitionSpec of the leaf at ``path``: the first rule whose pattern matches; scalars and unmatched
    leaves are replicated (unmatched non-scalars are recorded in ``fallbacks``)."""
    if len(shape) == 0:
        return PartitionSpec()
    for pattern, logical in rules:
        if re.search(pattern, path):
            if len(logical) != len(shape):
                raise RatelabError(f"sharding rule {pattern!r} names {len(logical)} axes but {path} has shape "
                                   f"{tuple(shape)}")
            return _resolve(mesh, logical, tuple(shape), fallbacks, path)
    if fallbacks is not None:
        fallbacks.append(f"{path}: no rule, replicated")
    return PartitionSpec()


@dataclass
class ShardingPlan:
    """Shardings of a pytree (same structure) and the rules' fallbacks."""

    shardings: Any
    fallbacks: list[str] = field(default_factory=list)


def shardings_for(tree: Any, mesh: Mesh, rules: Rules = RULES, prefix: str = "") -> ShardingPlan:
    """A NamedSharding for every leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s), from ``rules`` by path."""
    fallbacks: list[str] = []

    def one(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        p = "/".join(filter(None, (prefix, path_str(path))))
        return NamedSharding(mesh, spec_for(p, tuple(np.shape(leaf)), mesh, rules, fallbacks))

    return ShardingPlan(jax.tree_util.tree_map_with_path(one, tree), fallbacks)


def place(tree: Any, shardings: Any) -> Any:
    """Put every leaf of ``tree`` on the mesh with its sharding. Single process: ``jax.device_put``; several
    processes: ``jax.make_array_from_callback`` from the host copy that every process holds."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(leaf: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree, shardings)


def abstract(tree: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct``s with shardings (nothing allocated): the input of ``jit(...).lower`` for planning."""
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s), tree,
                                  shardings)


def shard_bytes(tree: Any, shardings: Any) -> int:
    """Bytes of ``tree`` held by one device under ``shardings`` (from the shard shapes; the largest device)."""
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, s: math.prod(s.shard_shape(np.shape(a))) * np.dtype(a.dtype).itemsize, tree, shardings))
    return int(sum(leaves))


def global_bytes(tree: Any) -> int:
    """Bytes of the whole (unsharded) pytree."""
    return int(sum(math.prod(np.shape(a)) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(tree)))


def addressable_bytes(tree: Any) -> dict[int, int]:
    """Measured bytes per device id, summed over the ``addressable_shards`` of every array of ``tree``."""
    out: dict[int, int] = {}
    for arr in jax.tree_util.tree_leaves(tree):
        for shard in arr.addressable_shards:
            out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
    return out


@dataclass(frozen=True)
class ActivationSharding:
    """The model's activation hook: ``with_sharding_constraint`` to the mesh axes of the logical names."""

    mesh: Mesh

    def __call__(self, x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        spec = _resolve(self.mesh, tuple(axes), tuple(x.shape), None, "activation")
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))
