"""``benchmarks/verify_full.py``'s bookkeeping (no run, no timing): the digest sees every result array but the
wall-clock ones, a ``/usr/bin/time -v`` log is read back, and the RESULTS.md section says whether two runs agree."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import verify_full  # noqa: E402


def _folder(root: Path, value: float, wall: float) -> Path:
    exp = root / "exp-a"
    exp.mkdir(parents=True)
    (exp / "result.json").write_text(json.dumps({"verdicts": [{"id": "c", "measured": 1.0}]}))
    np.savez(exp / "trace.npz", **{"metric/x": np.array([value]), "block_wall_s": np.array([wall])})
    (root / "report.json").write_text(json.dumps({
        "claims": [{"status": "PASS"}, {"status": "FAIL"}], "generated": "2026-12-03 08:00 UTC",
        "experiments": [{"id": "exp-a", "timings": {"wall_s": wall}}]}))
    return root


def test_digest_ignores_wall_clock_and_sees_results(tmp_path):
    a = verify_full.digest(_folder(tmp_path / "a", 1.0, wall=3.0))
    assert a == verify_full.digest(_folder(tmp_path / "b", 1.0, wall=7.0))
    assert a != verify_full.digest(_folder(tmp_path / "c", 1.0 + 2.0 ** -40, wall=3.0))


def test_adopt_reads_time_v_log_and_render_compares(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("exp-a: PASS in 3.0s\n\tUser time (seconds): 100.5\n\tSystem time (seconds): 4.5\n"
                   "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03\n\tExit status: 0\n")
    rec = verify_full.adopt(2, log, _folder(tmp_path / "out", 1.0, wall=3.0))
    assert (rec["wall_s"], rec["user_s"], rec["sys_s"], rec["exit"]) == (3723.0, 100.5, 4.5, 0)
    assert rec["verdicts"] == {"PASS": 1, "FAIL": 1} and rec["claims"] == 2
    machine = {"cores": 2, "cpu": "cpu"}
    one = {**rec, "jobs": 1, "wall_s": 7446.0, "machine": machine, "commit": "abc"}
    two = {**rec, "machine": machine, "commit": "abc"}
    text = verify_full.render({1: one, 2: two})
    assert "2.00x" in text and "identical" in text
    assert "DIFFER" in verify_full.render({1: {**one, "digest": "0" * 64}, 2: two})
    noted = verify_full.render({1: {**one, "note": "a test suite ran beside it"}, 2: two})
    assert "\n\nConditions of the `--jobs 1` run: a test suite ran beside it" in noted
    # runs of different code (another commit, or the same commit under another jax) are not compared
    for other in ({**two, "commit": "def"}, {**two, "machine": {**machine, "jax": "0.9.2"}}):
        text = verify_full.render({1: {**one, "digest": "0" * 64}, 2: other})
        assert "not compared" in text and "DIFFER" not in text and "identical" not in text and "x in wall" not in text
