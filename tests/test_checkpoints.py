"""Checkpoints in the harness (issue 20 items 1, 7 and the checkpoint part of 12): a checkpoint is resumed only by the
same config, problem and code; a run never deletes another config's checkpoint, and deletes its own only after
its result.json is written; an unreadable checkpoint is ignored with one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ratelab import harmonic, run
from ratelab.runner import _data_digest
from rl_theory.sa import make_scalar_sa, robbins_monro

ROOT = Path(__file__).parents[1]


def test_another_problem_never_resumes_a_checkpoint(tmp_path, capsys, interrupted_run):
    solver = robbins_monro(harmonic(1.0, 10.0))
    ckpt = tmp_path / "c.npz"
    kw = dict(steps=400, seeds=4, log_every=10, chunks=4, progress=False, checkpoint=ckpt)
    interrupted_run(solver, make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0), 0, **kw)
    other = run(solver, make_scalar_sa(lam=2.0, sigma=1.0, x0=1.0), 0, **kw)
    assert "resuming" not in capsys.readouterr().err
    plain = run(solver, make_scalar_sa(lam=2.0, sigma=1.0, x0=1.0), 0, steps=400, seeds=4, log_every=10, chunks=4)
    np.testing.assert_array_equal(other["sq_dist_to_opt"], plain["sq_dist_to_opt"])
    assert _data_digest(make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)) != _data_digest(
        make_scalar_sa(lam=2.0, sigma=1.0, x0=1.0))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"garbage"])
def test_an_unreadable_checkpoint_is_ignored_with_one_line(tmp_path, capsys, content):
    ckpt = tmp_path / "c.npz"
    ckpt.write_bytes(content)
    solver = robbins_monro(harmonic(1.0, 10.0))
    problem = make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)
    tr = run(solver, problem, 0, steps=400, seeds=4, log_every=10, chunks=4, checkpoint=ckpt)
    plain = run(solver, problem, 0, steps=400, seeds=4, log_every=10, chunks=4)
    np.testing.assert_array_equal(tr["sq_dist_to_opt"], plain["sq_dist_to_opt"])
    err = capsys.readouterr().err
    assert err.count("ignoring unreadable checkpoint") == 1, err


def test_sigkill_mid_run_then_another_config_then_the_same_one(tmp_path):
    """Real signals: kill -9 a long run of a = 1 mid-way, run a = 2 into the same folder (its own, clean verdict), then
    a = 1 again: it resumes its own checkpoint and the folder ends with a = 1's result and no checkpoint."""
    out = tmp_path / "res"
    base = [sys.executable, "-m", "ratelab.cli", "run", "rm-fast", "--out", str(out), "--no-progress",
            "--steps", "600000", "--seeds", "1024", "--set", "log_every=1000"]  # 3 chunks of 2e8 seed-steps
    proc = subprocess.Popen([*base, "--set", "a=1.0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "rm-fast").glob("checkpoint-*.npz")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpts = list((out / "rm-fast").glob("checkpoint-*.npz"))
    assert len(ckpts) == 1, "the long run wrote no checkpoint before the kill"
    two = subprocess.run([*base, "--set", "a=2.0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "resuming" not in two.stderr
    assert ckpts[0].exists()
    one = subprocess.run([*base, "--set", "a=1.0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "resuming from" in one.stderr, one.stderr[-1000:]
    assert not list((out / "rm-fast").glob("checkpoint-*.npz"))
    assert json.loads((out / "rm-fast" / "result.json").read_text())["config"]["a"] == 1.0
