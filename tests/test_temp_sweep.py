"""A writer killed by SIGKILL mid-write leaves its temp file; the next atomic write of the same file removes it, and
never a live writer's (issue 20 item 8). Real signals in a subprocess."""

import os
import signal
import subprocess
import sys
import time

from ratelab.io import atomic_write_text, sweep_stale_temps

CHILD = """
import sys, time
from ratelab.io import atomic_write
atomic_write(sys.argv[1], lambda f: (f.write(b"partial"), f.flush(), time.sleep(600)))
"""


def test_a_killed_writers_temp_file_is_swept_by_the_next_write(tmp_path):
    target = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".result.json.*.tmp")):
        time.sleep(0.05)
    (live,) = list(tmp_path.glob(".result.json.*.tmp"))
    assert sweep_stale_temps(target) == 0 and live.exists(), "a live writer's temp file was removed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert live.exists()  # SIGKILL leaves it behind
    atomic_write_text(target, "{}\n")
    assert not list(tmp_path.glob(".result.json.*.tmp"))
    assert target.read_text() == "{}\n"
