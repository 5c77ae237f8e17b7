"""``verify(scheduler=ADDRESS)`` / ``ratelab verify --scheduler ADDRESS``: experiments as tasks on a running dask
distributed cluster (the optional extra: ``pip install ratelab[cluster]``).

Each experiment is one task, run by :func:`ratelab.harness._run_in_worker` (the same function ``--jobs`` runs in
its process pool). A worker runs its experiment in a private temporary folder and returns the files' bytes; the
client writes them into ``OUT/ID/`` atomically, ``result.json`` last, then ``REPORT.md``, ``report.json`` and
``index.html`` as a local run does. So workers need no shared filesystem (only the same ratelab checkout, checked
here before any compute), and OUT has one writer, the client. An interrupted cluster run keeps every finished
experiment (its ``result.json`` is on the client); the unfinished ones start over on the next run (their
checkpoints lived in the workers' temporary folders).

Start a cluster with ``dask scheduler`` on one machine and ``dask worker tcp://HOST:8786 --nthreads 1`` on each
worker machine (one thread: a worker process runs one experiment at a time, pyplot and jax's config being
process-global; JAX uses the machine's cores itself). The client's compilation-cache setting carries over:
with the cache on, each worker uses its own :func:`ratelab.cache.default_dir`; ``--no-cache`` turns it off there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ratelab.errors import RatelabError

CONNECT_TIMEOUT_S = 5.0  # to reach the scheduler, and again for it to have a worker: an error before any compute
INSTALL_HINT = "pip install ratelab[cluster]"


def check_address(address: Any) -> str:
    """A scheduler address: ``host:port`` or ``tcp://host:port`` (``tls://`` too; other dask schemes are passed on
    as they are), checked here because distributed's own parse error leaves a client that hangs at exit."""
    text = address.strip() if isinstance(address, str) else ""
    scheme, sep, rest = text.rpartition("://") if "://" in text else ("tcp", "", text)
    host, colon, port = rest.rpartition(":")
    tcp_ok = bool(host.strip("[]")) and colon and port.isdigit() and 0 < int(port) < 65536
    if not text or any(c.isspace() for c in text) or (scheme in ("tcp", "tls") and not tcp_ok):
        raise RatelabError(f"scheduler must be an address such as tcp://host:8786, got {address!r}")
    return text


def require_distributed() -> None:
    """Raise a RatelabError naming the extra to install when dask's distributed scheduler is not importable."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise RatelabError(f"scheduler needs dask's distributed package, which is not installed: {INSTALL_HINT}") \
            from None


def worker_code_version() -> str:
    """Run on each worker by :func:`connect`: the ratelab code version it would run."""
    from ratelab.provenance import code_version

    return code_version()


def connect(address: str, *, timeout: float | None = None, log: Callable[[str], None] = lambda msg: None):
    """A ``distributed.Client`` on ``address`` with at least one worker, every worker running this ratelab code.

    Raises a RatelabError (no compute has started) when distributed is missing, the scheduler cannot be reached
    within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT_S`), no worker joins within it, or a worker cannot
    import ratelab or runs other code."""
    address = check_address(address)
    require_distributed()
    from distributed import Client

    from ratelab.provenance import code_version

    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except ValueError as err:
        raise RatelabError(f"scheduler must be an address such as tcp://host:8786, got {address!r} ({err})") from None
    except (OSError, TimeoutError) as err:
        raise RatelabError(f"scheduler {address!r} cannot be reached within {timeout:g} s ({err}); start one with "
                           "'dask scheduler' and workers with 'dask worker ADDRESS --nthreads 1'") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise RatelabError(f"scheduler {address!r} has no worker (none joined within {timeout:g} s); start "
                               f"them with 'dask worker {address} --nthreads 1'") from None
        found = client.run(worker_code_version, on_error="return")
        mine = code_version()
        for worker, version in sorted(found.items()):
            if isinstance(version, BaseException):
                raise RatelabError(f"worker {worker} cannot run ratelab ({type(version).__name__}: {version}); "
                                   "install this same checkout there") from None
            if version != mine:
                raise RatelabError(f"worker {worker} runs ratelab code {version}, this client {mine}: install this "
                                   "same checkout on every worker (results record the code they ran)")
        threads = client.nthreads()
        busy = sorted(w for w, n in threads.items() if n > 1)
        if busy:
            log(f"verify: worker(s) {', '.join(busy)} have more than one thread; each runs one experiment at a "
                "time (start them with --nthreads 1)")
        log(f"verify: scheduler {address}, {len(threads)} worker(s), {sum(threads.values())} thread(s)")
    except BaseException:
        client.close()
        raise
    return client
