"""XLA compiler flags for short runs: LLVM's optimization level 2 instead of XLA's default 3 on the CPU backend, and
XLA's older CPU fusion code generator instead of the fusion emitters.

Measured here (jax 0.10.2, 2-core CPU): XLA's default backend optimization level makes LLVM spend seconds on some
programs that are cheap to run, most of all the threefry random-bit generator on a multi-dimensional shape (what
``jax.random.uniform(key, (24, 4, 256, 14))`` or a ``vmap`` of draws over seeds compiles to): 6 to 18 s at the
default against 0.2 s at level 2, with the same bits. Quick runs are mostly compile time, so ``ratelab run`` and
``ratelab verify`` (and the test suite) ask for level 2. Its run time on the experiments' heavy loops was the same
(hessian-blocks: 19.4 s vs 19.0 s) and the results were the same to the last digit there; level 2 keeps IEEE
semantics (no fast-math), though vectorising a reduction differently may change a sum's last bits, so a run is
bitwise reproducible under the same flags. The flags are part of the persistent cache's key (``ratelab.cache``).
With the fusion emitters off (``--xla_cpu_use_fusion_emitters=false``) the compile fell further, by 5 to 35 %
(zo-rasa-dimension 9.0 -> 5.8 s, pbrl-lambda 7.6 -> 5.4 s, oop-bandit 19.4 -> 18.5 s; emc2's program 10 -> 2.4 s),
at the same run time; float32 results can differ in their last bits from the default code generator's.

The user's own ``XLA_FLAGS`` win: a flag is not added when they already name it, and none is when
``RATELAB_XLA_DEFAULTS=0``. XLA reads the variable when jax starts its backend (the first computation), so
:func:`apply` must run before that; it does nothing once a backend is up.
"""

from __future__ import annotations

import os
import sys

FLAGS = ("--xla_backend_optimization_level=2", "--xla_cpu_use_fusion_emitters=false")
ENV_OFF = "RATELAB_XLA_DEFAULTS"


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def apply() -> bool:
    """Add the :data:`FLAGS` the user's ``XLA_FLAGS`` does not name (see the module docstring); returns whether any
    was added."""
    current = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(ENV_OFF, "1") == "0" or _backend_started():
        return False
    new = [f for f in FLAGS if f.split("=")[0] not in current]
    if not new:
        return False
    os.environ["XLA_FLAGS"] = " ".join([current, *new]).strip()
    return True
