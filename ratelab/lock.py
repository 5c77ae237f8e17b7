"""One writer per results folder: an advisory ``flock`` on ``FOLDER/.lock``.

A second run into the same folder (another terminal, another ``verify --jobs`` worker, a cluster worker on a shared
filesystem that honours locks) waits for the first with one line naming it, then rechecks the folder: it reuses
the first run's result when config and code agree. The lock lives as long as the holder's open file, so a killed
holder releases it at once (the kernel drops it): there is no stale lock to remove by hand.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not serialised there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another run"
    return f"pid {text}" if text.isdigit() else "another run"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, log: Callable[[str], None] = lambda msg: None) -> Iterator[None]:
    """Hold the folder's lock for the block; wait (saying so once through ``log``) while another process holds it."""
    path = Path(folder) / LOCK_NAME
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder}: waiting for {_holder(path)}, which is writing this folder")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
