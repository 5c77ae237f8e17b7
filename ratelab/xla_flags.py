"""XLA compiler flags for short runs: LLVM's optimization level 2 instead of XLA's default 3 on the CPU backend.

Measured here (jax 0.10.2, 2-core CPU): XLA's default backend optimization level makes LLVM spend seconds on some
programs that are cheap to run, most of all the threefry random-bit generator on a multi-dimensional shape (what
``jax.random.uniform(key, (24, 4, 256, 14))`` or a ``vmap`` of draws over seeds compiles to): 6 to 18 s at the
default against 0.2 s at level 2, with the same bits. Quick runs are mostly compile time, so ``ratelab run`` and
``ratelab verify`` (and the test suite) ask for level 2. Its run time on the experiments' heavy loops was the same
(hessian-blocks: 19.4 s vs 19.0 s) and the results were the same to the last digit there; level 2 keeps IEEE
semantics (no fast-math), though vectorising a reduction differently may change a sum's last bits, so a run is
bitwise reproducible under the same flags. The flag is part of the persistent cache's key (``ratelab.cache``).

The user's own ``XLA_FLAGS`` win: nothing is added when they already name ``xla_backend_optimization_level``, or
when ``RATELAB_XLA_DEFAULTS=0``. XLA reads the variable when jax starts its backend (the first computation), so
:func:`apply` must run before that; it does nothing once a backend is up.
"""

from __future__ import annotations

import os
import sys

FLAG = "--xla_backend_optimization_level=2"
ENV_OFF = "RATELAB_XLA_DEFAULTS"


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def apply() -> bool:
    """Add :data:`FLAG` to ``XLA_FLAGS`` (see the module docstring); returns whether it was added."""
    current = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(ENV_OFF, "1") == "0" or "xla_backend_optimization_level" in current or _backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{current} {FLAG}".strip()
    return True
