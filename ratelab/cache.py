"""JAX's persistent compilation cache, in a per-user folder, on by default for the ``ratelab`` command.

XLA compilation is most of a quick run's wall time; with the cache on, a program compiled once (by any earlier
process of the same user, with the same jax / jaxlib, backend, shapes and flags) is loaded from disk instead of
being compiled again. A cached executable is the very program XLA built, so results are bitwise the same.

Where: ``$RATELAB_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/ratelab/jax``, else ``~/.cache/ratelab/jax`` (a folder
set through jax's own ``JAX_COMPILATION_CACHE_DIR`` is used as is). The folder is created private to the user
(mode 0700): jax treats its cache as trusted code, so it must not be writable by users you do not trust.

Safe under concurrent runs: every entry is written to a temporary file in the cache folder and moved into place
with ``os.replace``, so a reader sees either no entry or a complete one, and two processes writing the same entry
leave one complete copy (jax's own file cache writes in place unless the ``filelock`` package is installed and a
size limit is set). An entry removed while another process reads it (``clear``) reads as a miss.

Use:

* command line: ``ratelab run`` and ``ratelab verify`` call :func:`enable` first; ``--no-cache`` calls
  :func:`disable` instead (no cache is read or written);
* Python: ``ratelab.enable_cache()`` (optionally with a folder) before the compilations you want cached;
  ``ratelab.cache.disable()``; ``ratelab.cache.clear()`` deletes the entries; ``ratelab.cache.size_bytes()``.

Quiet loads: on some x86 CPUs every cache hit makes XLA's C++ log print a warning and two ERROR lines of about
3 KB each from XLA:CPU's executable loader ("Target machine feature +prefer-no-gather is not supported on the host
machine ... could lead to execution errors such as SIGILL"; jax issue 38445, openxla issue 44565): the check counts
LLVM's tuning hints as instruction-set features, and the executable loads and runs correctly (it was compiled on
this machine). A warm ``verify --quick`` loads about 400 programs, so it printed about 1,200 such lines (seen with
jax 0.9.2 on a Xeon with AMX). The command line therefore sets ``TF_CPP_MIN_LOG_LEVEL=3`` (XLA's C++ log: fatal
messages only) when the cache is on and the user has not set the variable (:func:`quiet_loader_log`); errors still
reach Python as exceptions. XLA reads the variable when jax starts its backend: in a notebook, set it before the
first computation to get the same.

Every program is cached, however fast it compiled (``jax_persistent_cache_min_compile_time_secs = 0`` and
``jax_persistent_cache_min_entry_size_bytes = 0``): jax's default skips programs that compile in under 1 s, and
most of a quick experiment's programs do, while loading one takes milliseconds. The cache saves XLA's compile
only: tracing and lowering to StableHLO still run in every process. Nothing is evicted: ``clear()`` empties it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ratelab.errors import RatelabError

ENV_DIR = "RATELAB_CACHE_DIR"
_SUFFIX = "-cache"


def default_dir() -> Path:
    """``$RATELAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/ratelab/jax``, else ``~/.cache/ratelab/jax``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ratelab" / "jax"


def _atomic_cache(folder: Path):
    """A jax cache backend over ``folder`` whose writes are atomic (temporary file + ``os.replace``)."""
    from jax._src.compilation_cache_interface import CacheInterface

    class AtomicFileCache(CacheInterface):
        def __init__(self, path: Path):
            self._path = path

        def get(self, key: str) -> bytes | None:
            try:
                return (self._path / f"{key}{_SUFFIX}").read_bytes()
            except FileNotFoundError:
                return None

        def put(self, key: str, value: bytes) -> None:
            target = self._path / f"{key}{_SUFFIX}"
            if target.exists():
                return
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self._path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

        def clear(self) -> None:
            clear(self._path)

    return AtomicFileCache(folder)


LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"


def quiet_loader_log() -> bool:
    """Set ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it or jax's backend is up (see the module docstring);
    returns whether it was set."""
    from ratelab.xla_flags import _backend_started

    if LOG_ENV in os.environ or _backend_started():
        return False
    os.environ[LOG_ENV] = "3"
    return True


def enable(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` and return the folder.

    ``path`` defaults to jax's ``jax_compilation_cache_dir`` when the user set one, else :func:`default_dir`. Call
    it before the compilations you want cached (programs compiled earlier in the process are not written); it may be
    called again, e.g. after :func:`disable`.
    """
    import jax
    from jax._src import compilation_cache as cc

    folder = Path(path or jax.config.jax_compilation_cache_dir or default_dir()).expanduser()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RatelabError(f"the cache folder must be writable (set {ENV_DIR}, or --no-cache), got "
                           f"{str(folder)!r} ({err.strerror or err})") from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    cc.reset_cache()  # jax decides once per process whether a cache is used: let it decide again
    try:  # jax's file cache writes in place without filelock: install the atomic one (private API, guarded)
        with cc._cache_initialized_mutex:
            cc._cache = _atomic_cache(folder)
            cc._cache_initialized = True
    except (AttributeError, ImportError):  # another jax layout: its own file cache in the same folder
        pass
    return folder


def disable() -> None:
    """Turn the persistent cache off for this process: nothing is read from or written to disk."""
    import jax
    from jax._src import compilation_cache as cc

    jax.config.update("jax_enable_compilation_cache", False)
    cc.reset_cache()


def active_dir() -> Path | None:
    """The folder this process's persistent cache reads and writes, or ``None`` when it is off."""
    import jax

    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return Path(jax.config.jax_compilation_cache_dir)


def clear(path: str | os.PathLike | None = None) -> int:
    """Delete the cache entries in ``path`` (default :func:`default_dir`); returns how many were removed."""
    folder = Path(path).expanduser() if path is not None else default_dir()
    removed = 0
    for entry in folder.glob("*"):
        if entry.is_file() and (entry.name.endswith(_SUFFIX) or entry.name.endswith(".tmp")):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def size_bytes(path: str | os.PathLike | None = None) -> int:
    """Bytes held by the cache entries in ``path`` (default :func:`default_dir`)."""
    folder = Path(path).expanduser() if path is not None else default_dir()
    return sum(e.stat().st_size for e in folder.glob(f"*{_SUFFIX}") if e.is_file())


enable_cache = enable
