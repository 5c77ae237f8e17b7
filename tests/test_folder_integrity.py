"""A results folder is one unit written by one run (issue 20 items 2, 3, 4, 5, 11, 16, 18): a folder lock, every file's
sha256 checked before reuse, the report pair's commit record, users' own modules hashed and runnable from the CLI,
``ratelab list`` reading the newest result, a size guard on the solver state, append-only checkpoints."""

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import harmonic, run
from ratelab.cli import main
from ratelab.errors import RatelabError
from ratelab.harness import load_trace, run_experiment, verify
from ratelab.registry import get
from ratelab.solver import Solver
from rl_theory.sa import make_scalar_sa, robbins_monro

ROOT = Path(__file__).parents[1]
SMALL = {"seeds": 8, "steps": 200}  # the folder tests' runs: what they check does not depend on the size


class Stop(Exception):
    pass


USER_MODULE = '''
import ratelab as rl
from ratelab.schedules import harmonic
from rl_theory.sa import make_scalar_sa, robbins_monro

A = {a}


def execute(cfg, key, **run_kw):
    solver = robbins_monro(harmonic(A, 10.0))
    return rl.run(solver, make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0), key, steps=cfg["steps"], seeds=cfg["seeds"],
                  log_every=cfg["log_every"], **run_kw)


def claims(cfg):
    return [rl.Claim("rate", "E|x_k - x*|^2 = O(1/k) for a = 1 (Robbins-Monro)", "sq_dist_to_opt",
                     expected=-1.0, tolerance=0.3, window=(40.0, 400.0),
                     no_control="a user's example experiment: its control is not the point of this test")]


rl.register(rl.Experiment(
    id="user-rm", paper=rl.Paper("rm51", "H. Robbins and S. Monro", "A stochastic approximation method",
                                 "Ann. Math. Statist.", 1951),
    figure="user", title="a user's own experiment", execute=execute, claims=claims,
    configs={{m: {{"seed": 0, "seeds": 16, "steps": 400, "log_every": 10}} for m in ("quick", "full")}},
    panels=(rl.Panel("sq_dist_to_opt", "E|x - x*|^2"),)))
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> str:
    """A small experiment of one's own (one run and one figure, no control), loaded as ``--module`` loads it."""
    from ratelab.modules import load_module

    mod = tmp_path_factory.mktemp("toy") / "toy_experiment.py"
    mod.write_text(USER_MODULE.format(a=1.0).replace('id="user-rm"', 'id="toy-rm"'))
    (exp_id,) = load_module(mod)
    yield exp_id
    from ratelab.registry import unregister

    unregister(exp_id)


def _holder(folder: Path, release: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s lock until ``release`` exists (it imports only ratelab.lock)."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from ratelab.lock import folder_lock
        with folder_lock({str(folder)!r}):
            print("held", flush=True)
            while not os.path.exists({str(release)!r}):
                time.sleep(0.02)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_waits_for_the_folder_lock_then_runs(tmp_path, toy):
    folder = tmp_path / toy
    folder.mkdir()
    release = tmp_path / "release"
    holder = _holder(folder, release)
    logs: list[str] = []
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(run_experiment(get(toy), out=tmp_path, overrides=SMALL,
                                                                  progress=False, log=logs.append)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any("waiting for" in m for m in logs):
        time.sleep(0.05)
    assert any(f"waiting for pid {holder.pid}" in m for m in logs), logs
    time.sleep(0.3)
    assert t.is_alive() and not (folder / "result.json").exists(), "the run went on while another held the folder"
    release.touch()
    holder.wait(10)
    t.join(120)
    assert out["reused"] is False and (folder / "result.json").exists()


def test_two_concurrent_runs_into_one_folder_compute_once(tmp_path, toy):
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(run_experiment(
        get(toy), out=tmp_path, overrides=SMALL, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(r["reused"] for r in results) == [False, True]
    assert json.dumps(results[0]["verdicts"], sort_keys=True) == json.dumps(results[1]["verdicts"], sort_keys=True)
    on_disk = json.loads((tmp_path / toy / "result.json").read_text())
    assert on_disk["sha256"] == results[0]["sha256"]


def test_a_file_that_is_not_the_recorded_one_makes_the_folder_stale(tmp_path, toy):
    exp = get(toy)
    first = run_experiment(exp, out=tmp_path, overrides=SMALL, progress=False)
    folder = tmp_path / toy
    assert set(first["sha256"]) == set(first["files"].values())
    before = load_trace(folder / "trace.npz")["sq_dist_to_opt"]
    damages = {"an empty trace": lambda: (folder / "trace.npz").write_bytes(b""),
               "a replaced figure": lambda: (folder / "figure.png").write_bytes(b"\x89PNG not the figure")}
    for what, damage in damages.items():
        damage()
        logs: list[str] = []
        again = run_experiment(exp, out=tmp_path, overrides=SMALL, progress=False, log=logs.append)
        assert again["reused"] is False, f"a folder with {what} was reused"
        assert any("not the file result.json recorded" in m for m in logs), logs
        assert again["verdicts"] == first["verdicts"], what
        np.testing.assert_array_equal(load_trace(folder / "trace.npz")["sq_dist_to_opt"], before)  # bitwise
    assert run_experiment(exp, out=tmp_path, overrides=SMALL, progress=False)["reused"] is True


def test_report_json_records_the_report_it_was_written_with(tmp_path, capsys, toy):
    verify([toy], out=tmp_path, overrides=SMALL, progress=False)
    data = json.loads((tmp_path / "report.json").read_text())
    from ratelab.io import sha256_file

    assert data["report_md_sha256"] == sha256_file(tmp_path / "REPORT.md")
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "REPORT.md").write_text("# a report from another run\n")
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "REPORT.md is not the report" in err and err.strip().count("\n") == 0, err


@pytest.fixture
def unregister_user_rm():
    yield
    from ratelab.registry import unregister

    unregister("user-rm")  # the registry is the process's: later tests count its experiments


def test_a_users_module_runs_from_the_cli_and_its_code_is_hashed(tmp_path, capsys, unregister_user_rm):
    mod = tmp_path / "my_experiment.py"
    mod.write_text(USER_MODULE.format(a=1.0))
    argv = ["run", "user-rm", "--module", str(mod), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) in (0, 1)
    first = json.loads((tmp_path / "out" / "user-rm" / "result.json").read_text())
    capsys.readouterr()
    main(argv)
    assert "reusing" in capsys.readouterr().err
    mod.write_text(USER_MODULE.format(a=0.25))  # the user edits their own solver's step size
    main(argv)
    assert "reusing" not in capsys.readouterr().err
    second = json.loads((tmp_path / "out" / "user-rm" / "result.json").read_text())
    assert second["code_version"] != first["code_version"]
    assert second["verdicts"][0]["measured"] != first["verdicts"][0]["measured"]


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "module must be an existing Python file"),
    ("raise ValueError('boom')", "raised ValueError on import: boom"),
    ("x = 1", "registered no experiment"),
])
def test_a_bad_module_is_one_line_exit_2(tmp_path, capsys, content, fragment):
    mod = tmp_path / "m.py"
    if content is not None:
        mod.write_text(content)
    assert main(["run", "anything", "--module", str(mod), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ratelab: error:") and fragment in err and "\n" not in err, err


def test_list_shows_the_newest_result_and_the_band_that_ran(tmp_path, capsys, toy):
    verify([toy], out=tmp_path, overrides=SMALL, progress=False)
    result_path = tmp_path / toy / "result.json"
    result = json.loads(result_path.read_text())
    # a later run of another mode into the same folder (its band differs): list must show it, not report.json's row
    newer = dict(result, mode="full")
    newer["verdicts"] = [dict(v, claim=dict(v["claim"], tolerance=0.123), measured=-0.987654)
                         for v in result["verdicts"]]
    result_path.write_text(json.dumps(newer))
    capsys.readouterr()
    assert main(["list", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    text = out[out.index(toy):]
    assert "-0.9877" in text and "(full)" in text and "0.123" in text, text


def test_the_size_guard_counts_the_solver_state(scalar_problem):
    def init(problem, key):
        return jnp.zeros((10**6,), jnp.float32)  # 4 MB of state per seed

    def step(state, problem, key):
        return state, {"m": state[0]}

    big = Solver(init=init, step=step)
    with pytest.raises(RatelabError, match=r"seeds: 100000 parallel runs .*solver state"):
        run(big, scalar_problem, 0, steps=10, seeds=100_000)  # 800 GB: refused before any compute


def test_checkpoints_append_and_never_rewrite_a_logged_part(tmp_path):
    problem = make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)
    solver = robbins_monro(harmonic(1.0, 10.0))
    ckpt = tmp_path / "c.npz"
    seen: list[dict] = []

    def record(b):
        parts = sorted(tmp_path.glob("c.npz.part-*"))
        with np.load(ckpt) as z:
            assert not [k for k in z.files if k.startswith("metric")], "the state file holds logged metrics"
        for p in parts:
            with np.load(p) as z:
                assert z["metric_sq_dist_to_opt"].shape == (4, 10)  # one chunk: 4 seeds x 10 logged blocks
        seen.append({p.name: p.stat().st_mtime_ns for p in parts})
        if b >= 60:
            raise Stop

    kw = dict(steps=1000, seeds=4, log_every=10, chunks=10, progress=False, checkpoint=ckpt)
    with pytest.raises(Stop):
        run(solver, problem, 0, on_chunk=record, **kw)
    assert [len(s) for s in seen] == list(range(1, 7))
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert all(later[name] == t for name, t in earlier.items()), "a logged part was rewritten"
    resumed = run(solver, problem, 0, **kw)
    plain = run(solver, problem, 0, steps=1000, seeds=4, log_every=10, chunks=10)
    np.testing.assert_array_equal(resumed["sq_dist_to_opt"], plain["sq_dist_to_opt"])
    assert not ckpt.exists() and not list(tmp_path.glob("c.npz.part-*"))


def test_a_missing_checkpoint_part_restarts_cleanly(tmp_path, capsys, interrupted_run):
    problem = make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)
    solver = robbins_monro(harmonic(1.0, 10.0))
    ckpt = tmp_path / "c.npz"
    kw = dict(steps=400, seeds=4, log_every=10, chunks=4, progress=False, checkpoint=ckpt)
    interrupted_run(solver, problem, 0, after=20, **kw)
    sorted(tmp_path.glob("c.npz.part-*"))[0].unlink()
    capsys.readouterr()
    tr = run(solver, problem, 0, **kw)
    assert capsys.readouterr().err.count("ignoring unreadable checkpoint") == 1
    np.testing.assert_array_equal(tr["sq_dist_to_opt"], run(solver, problem, 0, steps=400, seeds=4, log_every=10,
                                                            chunks=4)["sq_dist_to_opt"])


def test_a_single_call_run_shows_its_stages(scalar_problem, rm_solver, capsys):
    run(rm_solver, scalar_problem, 0, steps=100, seeds=2, progress=True)
    err = capsys.readouterr().err
    assert "2 seeds: compiling" in err and "2 seeds: running 100 steps" in err, err
