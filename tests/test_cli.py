"""The ``ratelab`` command line end to end: verdicts, files, reuse, exit codes and one-line errors."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.robbins_monro import CHUNG
from ratelab import harmonic
from ratelab.claims import Claim
from ratelab.cli import main
from ratelab.rates import fit_power_law
from ratelab.registry import Experiment, experiments, get, register, unregister
from ratelab.report import md_cell
from rl_theory.sa import exact_second_moment, make_scalar_sa

SMALL = ["--seeds", "64", "--steps", "2000", "--no-progress"]
RM = ("rm-fast", "rm-slow")


def _one_line_error(capsys, fragment: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    assert err.startswith("ratelab: error:") and fragment in err, err
    return err


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """One real ``ratelab verify --quick`` of the Robbins-Monro experiments, shared by the tests that read its output.

    (The other papers' experiments have their own tests; ``tests/test_slow.py`` runs every ``--full`` config.)"""
    out = tmp_path_factory.mktemp("verify")
    code = main(["verify", "--quick", "--only", *RM, "--out", str(out), "--no-progress"])
    return code, out


def test_verify_quick_passes_every_claim_and_writes_everything(verified):
    code, out = verified
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    ids = {(r["experiment"], r["claim"]) for r in report["claims"]}
    assert ids == {(e.id, c.id) for e in map(get, RM) for c in e.claims(e.config("quick"))}
    assert all(r["status"] == "PASS" for r in report["claims"])
    md = (out / "REPORT.md").read_text()
    for exp in map(get, RM):
        assert f"`{exp.id}`" in md and f"({exp.id}/figure.png)" in md
        folder = out / exp.id
        assert (folder / "figure.png").stat().st_size > 10_000
        assert not list(folder.glob("checkpoint*.npz"))
        result = json.loads((folder / "result.json").read_text())
        assert result["config"] == exp.config("quick")
        assert {"jax", "numpy", "python"} <= set(result["versions"])
        assert result["seed"] == exp.config("quick")["seed"]
        assert result["timings"]["wall_s"] > 0 and result["timings"]["compile_s"] > 0
        assert result["divergence"]["diverged_seeds"] == 0
        with np.load(folder / "trace.npz") as z:
            assert z["metric/sq_dist_to_opt"].shape == (result["config"]["seeds"],
                                                        result["config"]["steps"] // result["config"]["log_every"])
    assert not list(out.rglob("*.tmp"))


def test_chungs_constant_is_measured_not_assumed(verified):
    """The constant verdict compares the Monte Carlo k E x_k^2 with a^2 sigma^2 / (2 a lambda - 1) = 1."""
    _, out = verified
    row = next(r for r in json.loads((out / "report.json").read_text())["claims"]
               if (r["experiment"], r["claim"]) == ("rm-fast", "constant"))
    assert row["ci"][0] <= 1.0 <= row["ci"][1]
    assert row["ci"][1] - row["ci"][0] < 0.2


def test_rerun_reuses_and_force_reproduces_bitwise(verified, capsys, tmp_path):
    out = tmp_path / "r"
    assert main(["run", "rm-slow", "--out", str(out), *SMALL]) in (0, 1)
    before = (out / "rm-slow" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    main(["run", "rm-slow", "--out", str(out), *SMALL])
    assert "reusing" in capsys.readouterr().err
    assert (out / "rm-slow" / "result.json").stat().st_mtime_ns == before
    with np.load(out / "rm-slow" / "trace.npz") as z:
        first = z["metric/sq_dist_to_opt"]
    main(["run", "rm-slow", "--out", str(out), "--force", *SMALL])
    assert (out / "rm-slow" / "result.json").stat().st_mtime_ns != before
    with np.load(out / "rm-slow" / "trace.npz") as z:
        assert np.array_equal(z["metric/sq_dist_to_opt"], first)
    main(["run", "rm-slow", "--out", str(out), "--no-progress", "--seeds", "65", "--steps", "2000"])
    assert "running" in capsys.readouterr().err  # a changed config is not reused


def test_list_shows_every_claim(capsys, verified):
    _, out = verified
    assert main(["list", "--markdown", "--results", str(out)]) == 0
    table = capsys.readouterr().out
    for exp in experiments():
        for c in exp.claims(exp.config("quick")):
            assert md_cell(c.statement) in table
    assert table.count("| PASS:") == sum(len(e.claims(e.config("quick"))) for e in map(get, RM))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'; known: "),
        (["verify", "--only", "rm-fast", "nope"], "unknown experiment 'nope'"),
        (["run", "rm-fast", "--seeds", "0"], "argument --seeds: must be an integer >= 1, got '0'"),
        (["run", "rm-fast", "--steps", "-5"], "argument --steps: must be an integer >= 1, got '-5'"),
        (["run", "rm-fast", "--steps", "1234"], "steps must be a multiple of log_every (50), got 1234"),
        (["run", "rm-fast", "--set", "a=-1"], "a must be a finite number > 0, got -1.0"),
        (["run", "rm-fast", "--set", "sigma=0"], "sigma must be a finite number > 0"),
        (["run", "rm-fast", "--set", "k0=abc"], "k0 must be a float, got 'abc'"),
        (["run", "rm-fast", "--set", "a=0.25"], "2*a*lam > 1"),
        (["run", "rm-fast", "--set", "alpha=1"], "unknown setting 'alpha' for rm-fast; allowed:"),
        (["run", "rm-fast", "--set", "a"], "must look like KEY=VALUE"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, fragment, capsys, tmp_path):
    out = tmp_path / "out"
    assert _exit_code([*argv, "--out", str(out)]) == 2
    _one_line_error(capsys, fragment)
    assert not out.exists()


def _exit_code(argv: list[str]) -> int:
    """What the ``ratelab`` script exits with: main's return value, or argparse's SystemExit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "rm-fast", "--out", str(blocker / "results"), *SMALL]) == 2
    _one_line_error(capsys, "out must be a writable folder")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["run", "rm-fast", "--out", str(ro), *SMALL]) == 2
        _one_line_error(capsys, "out must be a writable folder")


def test_diverging_run_is_flagged_not_plotted(capsys, tmp_path):
    """a = 1e4, k0 = 1: |1 - a/(k+k0)| ~ 1e4 / k for the first steps overflows float32 within ~12 steps."""
    out = tmp_path / "div"
    code = main(["run", "rm-fast", "--out", str(out), "--set", "a=1e4", "--set", "k0=1", "--seeds", "4",
                 "--steps", "200", "--no-progress"])
    assert code == 1
    result = json.loads((out / "rm-fast" / "result.json").read_text())
    assert result["divergence"]["diverged_seeds"] == 4 and result["divergence"]["first_k"] <= 50
    assert result["status"] == "FAIL"
    assert all(v["status"] == "FAIL" and "diverged" in v["reason"] and v["measured"] is None
               for v in result["verdicts"])
    assert (out / "rm-fast" / "figure.png").exists()
    assert "FAIL" in capsys.readouterr().out


@pytest.fixture
def false_claim():
    """rm-fast's run with a claim of the wrong exponent (k^-2): the harness must say FAIL."""
    base = get("rm-fast")
    exp = Experiment(
        id="test-false-claim", paper=CHUNG, figure="none", title="a false claim",
        configs={m: {**base.configs["quick"], "seeds": 200, "steps": 5000} for m in ("quick", "full")},
        execute=base.execute,
        claims=lambda cfg: [Claim("rate", "E x_k^2 = Theta(k^-2)", "sq_dist_to_opt", expected=-2.0, tolerance=0.05,
                                  window=(cfg["steps"] / 100, cfg["steps"]))],
        panels=base.panels, validate=base.validate)
    register(exp)
    yield exp
    unregister(exp.id)


def test_false_claim_fails_with_its_numbers(false_claim, capsys, tmp_path):
    out = tmp_path / "false"
    assert main(["verify", "--only", false_claim.id, "--out", str(out), "--no-progress"]) == 1
    report = json.loads((out / "report.json").read_text())
    (row,) = report["claims"]
    assert row["status"] == "FAIL" and "outside claimed band" in row["reason"]
    # What it measured is the true slope of E x_k^2 over the window (pre-asymptotic: k0 = 10 bends it below -1).
    k = np.arange(50, 5001, 50)
    exact = exact_second_moment(make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0), harmonic(1.0, 10.0), 5000)[k - 1]
    truth = fit_power_law(k, exact, window=(50, 5000)).exponent
    assert row["ci"][0] <= truth <= row["ci"][1]
    md = (out / "REPORT.md").read_text()
    assert "**FAIL**" in md and "## Not passing" in md


def test_crash_mid_run_leaves_no_result(false_claim, tmp_path):
    out = tmp_path / "crash"

    def boom(cfg, key, **kw):
        raise KeyboardInterrupt

    crashing = Experiment(**{**false_claim.__dict__, "id": "test-crash", "execute": boom})
    register(crashing)
    try:
        assert main(["run", "test-crash", "--out", str(out), "--no-progress"]) == 130
    finally:
        unregister("test-crash")
    folder = out / "test-crash"
    assert not (folder / "result.json").exists() and not list(folder.glob("*.tmp"))


def test_curves_over_gamma_with_a_level_claim_and_an_extra_figure(capsys, tmp_path):
    """An experiment whose x is a penalty grid (trace_from_arrays): exponent and level claims are judged on the
    measured curves, the extra figure is written beside figure.png and reuse checks for it."""
    import matplotlib.pyplot as plt

    from ratelab.registry import Panel
    from ratelab.runner import trace_from_arrays

    def execute(cfg, key, **kw):
        gammas = np.geomspace(1.0, 1e3, 12)
        scale = np.exp(0.1 * np.asarray(jax.random.normal(key, (cfg["seeds"], 1))))
        return trace_from_arrays(gammas, {"dist": scale / gammas, "floor": 0.3 + 0 * scale / gammas})

    def landscape(cfg, trace, verdicts):
        fig, ax = plt.subplots()
        ax.plot(trace.steps, trace["dist"].mean(axis=0))
        return fig

    exp = Experiment(
        id="test-gamma-curves", paper=CHUNG, figure="none", title="distance against the penalty",
        configs={m: {"seed": 0, "seeds": 16, "steps": 12, "log_every": 1} for m in ("quick", "full")},
        execute=execute,
        claims=lambda cfg: [Claim("rate", "dist = O(1/gamma)", "dist", expected=-1.0, tolerance=0.05),
                            Claim("floor", "floor stays 0.3", "floor", kind="value", expected=0.3, tolerance=0.01)],
        panels=(Panel("dist", "distance", xlabel="gamma"), Panel("floor", "floor", xlabel="gamma", yscale="linear")),
        extra_figures={"landscape": landscape})
    register(exp)
    try:
        out = tmp_path / "g"
        assert main(["run", exp.id, "--out", str(out), "--no-progress"]) == 0
        result = json.loads((out / exp.id / "result.json").read_text())
        assert [v["status"] for v in result["verdicts"]] == ["PASS", "PASS"]
        assert abs(result["verdicts"][0]["measured"] + 1.0) < 1e-9
        assert result["files"]["landscape"] == "landscape.png"
        assert (out / exp.id / "landscape.png").stat().st_size > 5_000
        capsys.readouterr()
        main(["run", exp.id, "--out", str(out), "--no-progress"])
        assert "reusing" in capsys.readouterr().err
        (out / exp.id / "landscape.png").unlink()
        main(["run", exp.id, "--out", str(out), "--no-progress"])
        assert "reusing" not in capsys.readouterr().err and (out / exp.id / "landscape.png").exists()
    finally:
        unregister(exp.id)
