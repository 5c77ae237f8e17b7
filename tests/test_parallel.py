"""``verify(jobs=N)``: experiments in spawned worker processes give the serial run's report and traces, bit for bit."""

import json

import numpy as np
import pytest

import ratelab as rl
from ratelab.errors import RatelabError

IDS = ["rm-slow", "msa-nonconvex"]
SMALL = {"seeds": 64}  # the equality is the point, not the verdicts


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if "time" not in k and not k.endswith("_s")}


def test_parallel_verify_equals_serial(tmp_path):
    serial = rl.verify(IDS, out=tmp_path / "serial", overrides=SMALL)
    parallel = rl.verify(IDS, out=tmp_path / "parallel", overrides=SMALL, jobs=2)
    assert [_strip(r) for r in parallel.rows] == [_strip(r) for r in serial.rows]
    assert parallel.passed == serial.passed
    for exp_id in IDS:
        a = np.load(tmp_path / "serial" / exp_id / "trace.npz")
        b = np.load(tmp_path / "parallel" / exp_id / "trace.npz")
        assert sorted(a.files) == sorted(b.files)
        for name in (n for n in a.files if n != "block_wall_s"):  # wall-clock times, not results
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{exp_id}/{name}")
        ra = json.loads((tmp_path / "serial" / exp_id / "result.json").read_text())
        rb = json.loads((tmp_path / "parallel" / exp_id / "result.json").read_text())
        assert ra["verdicts"] == rb["verdicts"] and ra["config_hash"] == rb["config_hash"]
    js = json.loads((tmp_path / "parallel" / "report.json").read_text())
    assert [c["experiment"] for c in js["claims"]] == [r["experiment"] for r in serial.rows]
    # every result current: reused in this process, no worker started (a pool would raise here)
    import concurrent.futures

    def no_pool(*args, **kw):
        raise AssertionError("verify started a worker pool for results it could reuse")

    mp = pytest.MonkeyPatch()
    mp.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    try:
        again = rl.verify(IDS, out=tmp_path / "parallel", overrides=SMALL, jobs=2)
    finally:
        mp.undo()
    assert all(r["reused"] for r in again.results)
    assert [_strip(r) for r in again.rows] == [_strip(r) for r in parallel.rows]
    assert (tmp_path / "parallel" / "index.html").exists()


def test_jobs_must_be_a_positive_int(tmp_path):
    with pytest.raises(RatelabError, match="jobs"):
        rl.verify(IDS, out=tmp_path, jobs=0)


def test_tasks_keep_a_module_together_longest_first(tmp_path, monkeypatch):
    from ratelab import harness
    from ratelab.harness import tasks
    from ratelab.io import atomic_write_json
    from ratelab.registry import get

    exps = [get(i) for i in ("rm-slow", "a3c-stationarity", "rm-fast", "a3c-speedup")]
    for exp_id, wall in (("rm-slow", 1.0), ("rm-fast", 2.0), ("a3c-stationarity", 5.0), ("a3c-speedup", 5.0)):
        (tmp_path / exp_id).mkdir()
        atomic_write_json(tmp_path / exp_id / "result.json", {"timings": {"wall_s": wall}})
    assert [[e.id for e in g] for g in tasks(exps, tmp_path)] == [["a3c-stationarity", "a3c-speedup"],
                                                                  ["rm-slow", "rm-fast"]]
    monkeypatch.setattr(harness, "WALLS_FILE", tmp_path / "no-walls.json")  # no shipped estimate either
    (tmp_path / "rm-fast" / "result.json").unlink()  # an unknown cost goes first
    assert [g[0].id for g in tasks(exps, tmp_path)] == ["rm-slow", "a3c-stationarity"]


def test_tasks_fall_back_to_the_shipped_walls(tmp_path, monkeypatch):
    """A fresh results folder: the walls shipped in experiments/walls.json order the tasks; a recorded wall wins."""
    from ratelab import harness
    from ratelab.io import atomic_write_json
    from ratelab.registry import get

    walls = tmp_path / "walls.json"
    atomic_write_json(walls, {"walls": {"quick": {"rm-slow": 9.0, "rm-fast": 9.0, "a3c-stationarity": 1.0,
                                                  "a3c-speedup": 1.0}}})
    monkeypatch.setattr(harness, "WALLS_FILE", walls)
    exps = [get(i) for i in ("a3c-stationarity", "a3c-speedup", "rm-slow", "rm-fast")]
    out = tmp_path / "out"
    assert [g[0].id for g in harness.tasks(exps, out, "quick")] == ["rm-slow", "a3c-stationarity"]
    assert [g[0].id for g in harness.tasks(exps, out, "full")] == ["a3c-stationarity", "rm-slow"]  # no full walls
    (out / "a3c-stationarity").mkdir(parents=True)
    atomic_write_json(out / "a3c-stationarity" / "result.json", {"timings": {"wall_s": 30.0}})
    assert [g[0].id for g in harness.tasks(exps, out, "quick")] == ["a3c-stationarity", "rm-slow"]
    walls.write_text("not json")
    assert harness.shipped_walls("quick") == {}


def test_shipped_walls_name_registered_experiments():
    """experiments/walls.json (quick: benchmarks/quick_profile.py --walls; full: benchmarks/verify_full.py's serial
    record) covers the registered experiments with non-negative seconds and names no unknown one."""
    from ratelab import harness
    from ratelab.registry import experiments

    ids = {e.id for e in experiments()}
    for mode in ("quick", "full"):
        walls = harness.shipped_walls(mode)
        assert set(walls) <= ids and len(walls) >= 0.9 * len(ids), mode
        assert all(v >= 0 for v in walls.values()), mode
