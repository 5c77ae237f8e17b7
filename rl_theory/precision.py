"""The floating dtype a problem builder stores the user's data in, without silently losing precision.

JAX without x64 mode holds float32 only: ``jnp.asarray`` of a float64 array then rounds it to float32 without a word,
and a later ``run(..., x64=True)`` cannot undo the rounding (a rate check floors near 1e-7 instead of 1e-15). The
builders of :mod:`rl_theory` therefore store their arrays in :func:`storage_dtype`: the ``dtype`` asked for, else
JAX's default float, and they raise a :class:`RatelabError` instead of rounding user arrays that carry a float64
dtype (NumPy or JAX arrays) to float32. Python numbers and lists carry no precision of their own and take the
default float, as ``jnp.asarray`` gives them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.validate import is_traced


def _lossy_in_float32(value: Any) -> bool:
    """True when ``value`` is an array with a float64 dtype whose entries float32 does not represent exactly."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or np.dtype(dtype) != np.float64:
        return False
    arr = np.asarray(value)
    return bool(np.any(arr.astype(np.float32).astype(np.float64) != arr))


def storage_dtype(dtype: Any = None, **arrays: Any) -> Any:
    """The dtype to store ``arrays`` (the user's inputs, by argument name) in.

    ``dtype`` given: that dtype (float64 needs JAX's x64 mode, e.g. ``with jax.enable_x64(True):``). Otherwise JAX's
    default float (float64 in x64 mode, float32 outside it); outside x64 mode, a float64 array among ``arrays``
    that float32 would round raises instead of being rounded silently.
    """
    x64 = bool(jax.config.jax_enable_x64)
    if dtype is not None:
        dt = np.dtype(dtype)
        if not np.issubdtype(dt, np.floating):
            raise RatelabError(f"dtype must be a floating dtype, got {dtype!r}")
        if dt == np.float64 and not x64:
            raise RatelabError("dtype float64 needs JAX's x64 mode: build the problem inside "
                               "`with jax.enable_x64(True):` (or set jax_enable_x64)")
        return dt
    if not x64:
        lossy = [name for name, value in arrays.items() if _lossy_in_float32(value)]
        if lossy:
            raise RatelabError(
                f"{', '.join(lossy)} {'is' if len(lossy) == 1 else 'are'} float64 but JAX's x64 mode is off, so "
                "storing it would round it to float32 (and run(..., x64=True) could not undo that): build the "
                "problem inside `with jax.enable_x64(True):`, or pass dtype=jnp.float32 to accept the rounding")
    return np.dtype(jnp.result_type(float))


def device_array(value: Any, dtype: Any) -> jax.Array:
    """``jnp.asarray(value, dtype)`` for host data, as one transfer: the cast is NumPy's (the same rounding) and no
    jax program is compiled (jax 0.10 compiles a conversion or copy program per new shape for ``jnp.asarray``, about
    12-45 ms each). Traced values go through ``jnp.asarray``."""
    if is_traced(value):
        return jnp.asarray(value, dtype)
    return jax.device_put(np.asarray(value, dtype))
