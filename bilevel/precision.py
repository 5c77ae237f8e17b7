"""Problem builders keep the caller's floating precision: nothing is rounded to float32 when a problem is built.

JAX holds float64 only with x64 enabled. Built outside ``jax.enable_x64``, float64 data (NumPy's default) would
become float32 at once, and even ``ratelab.run(..., x64=True)`` would then compute with the rounded data (a floor
near 1e-7 where float64 reaches 1e-14). :func:`float_array` therefore returns a JAX array only when JAX can hold the
data at their own precision, and otherwise the float64 NumPy array itself: the data are rounded only if a
computation runs without x64, and ``run(..., x64=True)`` uses them unrounded.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError


def check_float_dtype(name: str, dtype: Any) -> Any:
    """``dtype`` is None or a floating dtype that JAX can hold now (a 64-bit one needs x64); returns it."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise RatelabError(f"{name} dtype must be None or a floating dtype, got {dtype!r}") from None
    if not np.issubdtype(dt, np.floating):
        raise RatelabError(f"{name} dtype must be None or a floating dtype, got {dtype!r}")
    if dt.itemsize > 4 and not jax.config.jax_enable_x64:
        raise RatelabError(f"{name}: dtype {dt.name} needs JAX's x64 mode (build the problem inside "
                           f"jax.enable_x64(True)), or pass dtype=None to keep the data's own precision")
    return dt


def float_array(name: str, value: Any, dtype: Any = None) -> Any:
    """``value`` as a floating array of its own precision (or of ``dtype``), never silently downcast.

    ``dtype=None``: float32 data (or any data while x64 is enabled) become a JAX array; float64 data while x64 is
    disabled stay a float64 NumPy array. An explicit 64-bit ``dtype`` while x64 is disabled raises
    :class:`RatelabError` (JAX would truncate it to float32 with a warning).
    """
    if dtype is not None:
        return jnp.asarray(value, check_float_dtype(name, dtype))
    if isinstance(value, jax.Array):
        return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(jnp.result_type(float))
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(float)
    if arr.dtype.itemsize > 4 and not jax.config.jax_enable_x64:
        return arr
    return jax.device_put(arr)  # a transfer; jnp.asarray compiles a copy program per new shape (jax 0.10)
