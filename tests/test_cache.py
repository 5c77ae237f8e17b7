"""The persistent compilation cache: programs compiled by one process load in the next, bitwise the same results;
``--no-cache`` reads and writes nothing; entries are written atomically; the folder follows the environment."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ratelab import cache

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import numpy as np
import ratelab as rl
from jax._src import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
rl.enable_cache(sys.argv[1])
from rl_theory.sa import make_scalar_sa, robbins_monro
trace = rl.run(robbins_monro(rl.harmonic(1.0, 10.0)), make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0), 0, steps=400,
               seeds=8, log_every=20)
print(events.count("/jax/compilation_cache/cache_hits"), events.count("/jax/compilation_cache/cache_misses"),
      trace["sq_dist_to_opt"].tobytes().hex())
"""


def _python(args: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert out.returncode in (0, 1), out.stderr
    return out.stdout


def test_a_program_compiled_in_one_process_is_loaded_by_the_next(tmp_path):
    folder = tmp_path / "jax"
    hits1, writes1, values1 = _python(["-c", PROBE, str(folder)]).split()
    assert int(hits1) == 0 and int(writes1) > 0
    assert cache.size_bytes(folder) > 0 and oct(folder.stat().st_mode)[-3:] == "700"
    hits2, writes2, values2 = _python(["-c", PROBE, str(folder)]).split()
    assert int(hits2) == int(writes1) and int(writes2) == 0  # every program of the first run came from disk
    assert values2 == values1  # bitwise the same trace
    assert not list(folder.glob("*.tmp"))


def test_no_cache_reads_and_writes_nothing(tmp_path):
    folder = tmp_path / "jax"
    _python(["-m", "ratelab.cli", "run", "rm-slow", "--seeds", "4", "--steps", "200", "--no-progress", "--no-cache",
             "--out", str(tmp_path / "out")], env={cache.ENV_DIR: str(folder)})
    assert not folder.exists() or cache.size_bytes(folder) == 0


def test_entries_are_written_atomically_and_once(tmp_path):
    backend = cache._atomic_cache(tmp_path)
    assert backend.get("k") is None
    backend.put("k", b"first")
    backend.put("k", b"second")  # an existing entry is kept, as jax's own cache does
    assert backend.get("k") == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["k-cache"]
    assert cache.clear(tmp_path) == 1 and backend.get("k") is None


def test_the_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "mine"))
    assert cache.default_dir() == tmp_path / "mine"
    monkeypatch.delenv(cache.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_dir() == tmp_path / "xdg" / "ratelab" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.default_dir() == tmp_path / ".cache" / "ratelab" / "jax"


def test_an_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(cache.RatelabError, match="the cache folder must be writable"):
        cache.enable(blocker / "jax")


def test_cache_hits_do_not_flood_stderr_with_the_loaders_feature_check(tmp_path):
    """XLA:CPU's loader logs ERROR lines on every cache hit on some CPUs (ratelab.cache): the command line quiets
    XLA's C++ log when the cache is on, unless the user set TF_CPP_MIN_LOG_LEVEL (then their level holds)."""
    folder = tmp_path / "jax"
    base = {k: v for k, v in os.environ.items() if k != cache.LOG_ENV}
    cmd = [sys.executable, "-m", "ratelab.cli", "run", "rm-slow", "--seeds", "4", "--steps", "200", "--no-progress",
           "--force", "--out", str(tmp_path / "out")]

    def stderr(**env: str) -> str:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**base, "PYTHONPATH": str(ROOT), cache.ENV_DIR: str(folder), **env})
        assert out.returncode in (0, 1), out.stderr
        return out.stderr

    stderr()  # fills the cache
    assert cache.size_bytes(folder) > 0
    loud = stderr(**{cache.LOG_ENV: "0"})  # the user's own level is kept: every load logs (the control)
    assert "pjrt_executable" in loud or "cpu_aot_loader" in loud
    quiet = stderr()
    assert "pjrt_executable" not in quiet and "cpu_aot_loader" not in quiet


def test_quiet_loader_log_keeps_the_users_setting(monkeypatch):
    from ratelab import xla_flags

    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setenv(cache.LOG_ENV, "1")
    assert not cache.quiet_loader_log() and os.environ[cache.LOG_ENV] == "1"
    monkeypatch.delenv(cache.LOG_ENV)
    assert cache.quiet_loader_log() and os.environ[cache.LOG_ENV] == "3"
    monkeypatch.delenv(cache.LOG_ENV)
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: True)  # too late: XLA has read it
    assert not cache.quiet_loader_log() and cache.LOG_ENV not in os.environ
