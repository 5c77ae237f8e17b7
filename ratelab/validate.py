"""Up-front input checks with messages that name the argument and what is allowed.

Every check accepts concrete Python/NumPy values and silently passes JAX tracers, so that a solver
constructor can validate a float given by a user yet still be ``vmap``-ed over that same hyperparameter.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import jax
import numpy as np

from ratelab.errors import RatelabError


def is_traced(value: Any) -> bool:
    """True when ``value`` is (or contains) a JAX tracer, i.e. only known at run time."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def _concrete_array(name: str, value: Any) -> np.ndarray | None:
    if callable(value) or is_traced(value):
        return None
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise RatelabError(f"{name} must be a number, got {value!r}") from None


def check_positive(name: str, value: Any) -> Any:
    """``value > 0`` elementwise (and finite); schedules and tracers pass unchecked."""
    arr = _concrete_array(name, value)
    if arr is not None and (arr.size == 0 or not np.all(np.isfinite(arr)) or not np.all(arr > 0)):
        raise RatelabError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_nonnegative(name: str, value: Any) -> Any:
    """``value >= 0`` elementwise (and finite); schedules and tracers pass unchecked."""
    arr = _concrete_array(name, value)
    if arr is not None and (arr.size == 0 or not np.all(np.isfinite(arr)) or not np.all(arr >= 0)):
        raise RatelabError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_in_range(name: str, value: Any, low: float, high: float, *, closed: str = "both") -> Any:
    """``low <= value <= high`` (``closed`` in {'both', 'left', 'right', 'neither'})."""
    arr = _concrete_array(name, value)
    if arr is None:
        return value
    lo_ok = arr >= low if closed in ("both", "left") else arr > low
    hi_ok = arr <= high if closed in ("both", "right") else arr < high
    if arr.size == 0 or not np.all(lo_ok & hi_ok):
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        raise RatelabError(f"{name} must lie in {lb}{low}, {high}{rb}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """A Python/NumPy integer >= 1 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise RatelabError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, allowed: tuple[str, ...] | list[str]) -> Any:
    """``value`` is one of ``allowed``."""
    if value not in allowed:
        raise RatelabError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_shape(name: str, value: Any, shape: tuple[int, ...], why: str = "") -> Any:
    """``value`` has exactly ``shape`` (``why`` explains where the expected shape comes from)."""
    got = tuple(np.shape(value))
    if got != tuple(shape):
        extra = f" {why}" if why else ""
        raise RatelabError(f"{name} must have shape {tuple(shape)}{extra}, got {got}")
    return value


def check_finite_real(name: str, value: Any) -> Any:
    """A finite real number (or array of them)."""
    if isinstance(value, Real) and not math.isfinite(value):
        raise RatelabError(f"{name} must be finite, got {value!r}")
    arr = _concrete_array(name, value)
    if arr is not None and not np.all(np.isfinite(arr)):
        raise RatelabError(f"{name} must be finite, got {value!r}")
    return value
