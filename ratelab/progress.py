"""Progress display, the same everywhere: a bar with steps per second and the time left for iterated runs, one
line per stage (compile, run) for a single jitted call. Shown on a terminal (stderr), hidden otherwise unless asked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


def enabled(progress: bool | None) -> bool:
    """``progress`` if given, else whether stderr is a terminal."""
    return bool(progress) if progress is not None else sys.stderr.isatty()


def bar(total: int, *, desc: str, unit: str = "step", initial: int = 0, progress: bool | None = None) -> tqdm:
    """A tqdm bar over ``total`` units (iterations per seed by default): rate and remaining time on the right."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, leave=False,
                disable=not enabled(progress), file=sys.stderr, dynamic_ncols=True)


@contextmanager
def stage(desc: str, progress: bool | None = None) -> Iterator[None]:
    """``desc ...`` while the block runs, then ``desc: 1.2 s`` (terminal only; the line is cleared afterwards)."""
    show = enabled(progress)
    t0 = time.perf_counter()
    if show:
        sys.stderr.write(f"\r{desc} ...")
        sys.stderr.flush()
    try:
        yield
    finally:
        if show:
            sys.stderr.write(f"\r{desc}: {time.perf_counter() - t0:.1f} s\x1b[K\r\x1b[K")
            sys.stderr.flush()
