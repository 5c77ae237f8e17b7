"""The user's own matrices: validated symmetric (semi)definite data, arrays that keep the data's precision, and
reading tables with a swept (concrete or traced) index.

Problem builders (:func:`riemannian.fed_problems.federated_pca`, :func:`riemannian.sparse_problems.sparse_pca`,
:func:`riemannian.zo_rasa.stochastic_rayleigh`) pass the user's data through :func:`symmetric_matrices` (shapes,
finiteness, symmetry, definiteness, each failure naming the argument and the offending number) and store it with
:func:`keep_precision`, which never downcasts: float64 data built while JAX's x64 mode is off stays a NumPy float64
array, which ``ratelab.run(..., x64=True)`` promotes without loss (a run without x64 computes in float32, as asked).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.errors import RatelabError
from ratelab.validate import is_traced
from riemannian.manifolds import normal_draws


def data_dtype(value: Any, dtype: Any = None) -> np.dtype:
    """``dtype`` if given, else the floating precision of ``value`` (float64 for Python numbers and integers)."""
    if dtype is not None:
        dt = np.dtype(dtype)
        if not np.issubdtype(dt, np.floating):
            raise RatelabError(f"dtype must be a floating dtype such as float32 or float64, got {dtype!r}")
        return dt
    dt = np.asarray(value).dtype
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


def keep_precision(value: Any, dtype: Any = None) -> Any:
    """``value`` at ``dtype`` (default: its own precision, :func:`data_dtype`), never silently downcast.

    A JAX array when JAX can hold that precision now; a NumPy array when it cannot (float64 while x64 is off)."""
    dt = data_dtype(value, dtype)
    arr = np.asarray(value).astype(dt, copy=False)
    if dt.itemsize > 4 and not jax.config.jax_enable_x64:
        return arr
    return jax.device_put(arr)  # a transfer; jnp.asarray compiles a copy program per new shape (jax 0.10)


def symmetric_matrices(name: str, value: Any, *, definite: str | None = None, batched: bool = False,
                       dtype: Any = None) -> np.ndarray:
    """``value`` as a float64 NumPy array of symmetric matrices (``[d, d]``, or ``[n, d, d]`` when ``batched``).

    ``definite="semi"`` also requires every matrix to be positive semidefinite (the smallest eigenvalue is in the
    error). Both are checked relative to the largest entry, to 1e-10 or 100 rounding units of the data's precision
    (``dtype``, default :func:`data_dtype` of ``value``) if that is coarser (float32); the matrices are then
    symmetrised exactly.
    """
    rtol = max(1e-10, 100.0 * float(np.finfo(data_dtype(value, dtype)).eps))
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise RatelabError(f"{name} must be an array of real numbers, got {type(value).__name__}") from None
    want = "[n, d, d]" if batched else "[d, d]"
    if arr.ndim != (3 if batched else 2) or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] < 2 or arr.size == 0:
        raise RatelabError(f"{name} must have shape {want} (square, d >= 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RatelabError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} non-finite entries")
    scale = max(1.0, float(np.abs(arr).max()))
    asym = float(np.abs(arr - np.swapaxes(arr, -1, -2)).max())
    if asym > rtol * scale:
        raise RatelabError(f"{name} must hold symmetric matrices: max |{name}_ij - {name}_ji| = {asym:.3g}")
    arr = 0.5 * (arr + np.swapaxes(arr, -1, -2))
    if definite == "semi":
        low = float(np.linalg.eigvalsh(arr).min())
        if low < -rtol * scale:
            raise RatelabError(f"{name} must be positive semidefinite: its smallest eigenvalue is {low:.6g}")
    elif definite is not None:
        raise RatelabError(f"definite must be None or 'semi', got {definite!r}")
    return arr


def start_point(manifold: Any, x0: Any = None, key: jax.Array | None = None) -> np.ndarray:
    """The user's start ``x0`` as float64, checked to have the manifold's shape and to lie on it (orthonormal
    columns / unit norm, to 1e-6), or a random point of the manifold drawn in float32 with ``key`` (default
    ``jax.random.key(0)``; the same point with or without x64) and made orthonormal in float64."""
    if x0 is None:
        g = np.asarray(normal_draws(jax.random.key(0) if key is None else key, manifold.shape, jnp.float32),
                       dtype=float)
        q, r = np.linalg.qr(g.reshape(g.shape[0], -1))
        x0 = (q * np.where(np.diagonal(r) < 0, -1.0, 1.0)).reshape(g.shape)  # Haar: the Q factor with R_ii > 0
    x0 = np.asarray(x0, dtype=float)
    if x0.shape != tuple(manifold.shape):
        raise RatelabError(f"x0 must have shape {tuple(manifold.shape)} for {type(manifold).__name__}, got {x0.shape}")
    X = x0.reshape(x0.shape[0], -1)
    if not np.all(np.isfinite(X)) or np.linalg.norm(X.T @ X - np.eye(X.shape[1])) > 1e-6:
        raise RatelabError("x0 must lie on the manifold (orthonormal columns / unit norm)")
    return x0


def swept_index(v: Any) -> Any:
    """A value of a ``ratelab.sweep`` used as an index: a Python int when concrete (sweep's up-front checks), an int32
    tracer inside the vmapped run."""
    return v.astype(jnp.int32) if is_traced(v) else int(v)


def take(table: Any, i: Any) -> Any:
    """``table[i]`` for an index from :func:`swept_index`: with a concrete index a NumPy table is read in NumPy (no
    JAX op, no float64 warning with x64 off); with a traced one it becomes a JAX gather."""
    return np.asarray(table)[i] if isinstance(i, int) else jnp.asarray(table)[i]
