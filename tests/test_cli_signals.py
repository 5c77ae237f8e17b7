"""Interrupts with real signals: SIGINT at several moments (imports, compile, run) and SIGTERM exit 130 / 143,
one message, no traceback, no temporary file left behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _interrupt(tmp_path: Path, sig: int, delay_s: float) -> tuple[int, str, list[str]]:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a new session: not a background job of this shell, so SIGINT is not ignored on the way in
    proc = subprocess.Popen([sys.executable, "-m", "ratelab.cli", "run", "rm-fast", "--out", str(out),
                             "--no-progress", "--no-cache"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay_s)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no exit within 60 s of the signal: {err}")
    left = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else []
    return proc.returncode, err, left


@pytest.mark.parametrize(("sig", "delay_s", "code"), [
    (signal.SIGINT, 0.3, 130),   # during the imports
    (signal.SIGINT, 4.0, 130),   # compile or run, depending on the load
    (signal.SIGINT, 6.0, 130),
    (signal.SIGTERM, 4.0, 143),
])
def test_an_interrupt_exits_cleanly_with_the_signal_code(tmp_path, sig, delay_s, code):
    rc, err, left = _interrupt(tmp_path, sig, delay_s)
    assert rc == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert not left, left
