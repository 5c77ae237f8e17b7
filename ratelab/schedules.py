"""Step-size schedules the papers use and optax does not ship.

A schedule is an ``optax.Schedule``: a function from the (integer) step count k = 0, 1, ... to a value. Every
solver argument documented as "float or schedule" accepts either; :func:`as_schedule` normalises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from ratelab.validate import check_nonnegative, check_positive, is_traced


def power_decay(scale: Any, offset: Any = 1.0, power: Any = 1.0) -> optax.Schedule:
    """``k -> scale / (k + offset) ** power``.

    ``power=1`` is the Robbins-Monro step a/(k + k0); ``power=0.6`` with ``offset=1`` is A3C's
    c1/(1 + k)^0.6. Any argument may be a JAX tracer (for a vmapped sweep).
    """
    check_positive("scale", scale)
    check_positive("offset", offset)
    check_nonnegative("power", power)

    if not is_traced(power) and float(power) == 1.0:

        def schedule(count):
            return scale / (jnp.asarray(count, jnp.result_type(float)) + offset)

    else:

        def schedule(count):
            return scale / (jnp.asarray(count, jnp.result_type(float)) + offset) ** power

    return schedule


def harmonic(a: Any, k0: Any = 1.0) -> optax.Schedule:
    """Robbins-Monro's classical step ``a_k = a / (k + k0)``."""
    check_positive("a", a)
    check_positive("k0", k0)
    return power_decay(a, k0, 1.0)


def as_schedule(value: Any) -> Callable[[Any], Any]:
    """A callable is returned as is; a number becomes ``optax.constant_schedule(value)``."""
    return value if callable(value) else optax.constant_schedule(value)
