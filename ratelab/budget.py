"""A size guard: the memory a run's recorded metrics need, estimated before any compute and compared with the
machine's memory, so that an absurd ``--seeds`` is refused in one line instead of dying in an allocation."""

from __future__ import annotations

import os
from typing import Any

from ratelab.errors import RatelabError

BYTES_PER_VALUE = 4  # float32, the smallest dtype a metric is recorded in: the estimate is a lower bound
FRACTION = 0.8  # of the physical memory a run may ask for


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


MAX_AUTO_JOBS = 4  # verify's default worker count: the usable cores, up to this


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def metrics_bytes(cfg: dict[str, Any], n_metrics: int) -> int:
    """Seeds x logged points x metrics x 4 bytes: what the trace alone holds (the solver state comes on top)."""
    return int(cfg["seeds"]) * (int(cfg["steps"]) // int(cfg["log_every"])) * max(1, n_metrics) * BYTES_PER_VALUE


def check_memory(exp_id: str, cfg: dict[str, Any], n_metrics: int, *, limit: int | None = None) -> None:
    """Raise :class:`RatelabError` when the recorded metrics alone need more than 80 % of the machine's memory."""
    limit = physical_memory() if limit is None else limit
    need = metrics_bytes(cfg, n_metrics)
    if limit and need > FRACTION * limit:
        raise RatelabError(
            f"{exp_id}: seeds={cfg['seeds']} x {int(cfg['steps']) // int(cfg['log_every'])} logged steps x "
            f"{n_metrics} metric(s) need at least {_gib(need)} for the trace alone, more than 80 % of this machine's "
            f"{_gib(limit)}; use fewer --seeds, fewer --steps or a larger log_every")


def _nbytes(tree: Any) -> int:
    import math

    import jax

    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def check_run_memory(runs: int, n_blocks: int, log_every: int, state: Any, sample: Any, metrics: Any, *,
                     limit: int | None = None) -> None:
    """Raise :class:`RatelabError` when one run of ``runs`` parallel seeds (times swept values) would need more than
    80 % of the machine's memory: the solver state twice (in and out of a jitted call), one block's samples, and the
    recorded metrics; ``state``, ``sample`` (one step's) and ``metrics`` are abstract shapes of one seed."""
    limit = physical_memory() if limit is None else limit
    state_bytes = _nbytes(state)
    per_seed = 2 * state_bytes + log_every * _nbytes(sample) + n_blocks * _nbytes(metrics)
    need = runs * per_seed
    if limit and need > FRACTION * limit:
        raise RatelabError(
            f"seeds: {runs} parallel runs x {_gib(per_seed)} each (solver state {_gib(state_bytes)}, "
            f"{n_blocks} logged steps) need about {_gib(need)}, more than 80 % of this machine's {_gib(limit)}; "
            "use fewer seeds, fewer steps or a larger log_every")
