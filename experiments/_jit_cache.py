"""A compile cache for the paper modules whose controls rerun the same study with traced changes only.

``ratelab.runner.call`` compiles on every call; :func:`cached_call` keeps the executable per (function, static
arguments, argument shapes and dtypes), so a control that changes only traced values reuses the main run's compiled
program and pays its run time alone. Timings are reported as ``call`` reports them (``compile_s`` is 0 on a hit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

_CACHE: dict[tuple, Any] = {}


def _signature(args: tuple, static_argnums: tuple[int, ...]) -> tuple:
    def leaf(x):
        return (np.shape(x), str(getattr(x, "dtype", type(x).__name__)))

    return tuple(args[i] if i in static_argnums else jax.tree_util.tree_map(leaf, args[i]) for i in range(len(args)))


def cached_call(f: Callable[..., Any], *args: Any, static_argnums: tuple[int, ...] = ()) -> tuple[Any, dict]:
    """``jax.jit(f)`` on ``args`` (compiled once per signature), run and waited for: ``(output as NumPy, timings)``."""
    key = (f, jax.config.jax_enable_x64, _signature(args, static_argnums))
    t0 = time.perf_counter()
    if key not in _CACHE:
        _CACHE[key] = jax.jit(f, static_argnums=static_argnums).lower(*args).compile()
    t1 = time.perf_counter()
    dynamic = [a for i, a in enumerate(args) if i not in static_argnums]
    out = jax.block_until_ready(_CACHE[key](*dynamic))
    t2 = time.perf_counter()
    return jax.tree_util.tree_map(np.asarray, out), {"compile_s": t1 - t0, "run_s": t2 - t1}
