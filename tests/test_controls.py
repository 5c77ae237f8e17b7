"""Negative controls through the harness: a control reruns the experiment with its change, is judged with the same
claim, is written beside the result, and a claim whose control passes is WEAK (exit 1)."""

import json

import pytest

from ratelab.claims import Claim, Control
from ratelab.cli import main
from ratelab.registry import Experiment, experiments, get, register, unregister


def test_every_registered_claim_has_a_control_or_says_why_none_can_exist():
    missing = [(e.id, c.id) for e in experiments() for c in e.claims(e.config("quick"))
               if not c.controls and not c.no_control]
    assert not missing, f"claims without a control or a reason: {missing}"


def test_every_control_config_is_valid_in_both_modes():
    from ratelab.harness import plan

    for exp in experiments():
        for mode in ("quick", "full"):
            plan(exp, mode)  # builds every control's config, raising on an unknown setting


@pytest.fixture
def controlled():
    """rm-slow's run, its claim with one control that breaks it (2 a lambda = 2) and one without power (seed)."""
    base = get("rm-slow")
    strong = Control("fast-steps", "2 a lambda = 2 > 1: the rate saturates at 1/k", overrides={"a": 1.0})
    weak = Control("other-seed", "a deliberately powerless control: another seed", overrides={"seed": 7})

    def make(exp_id, controls, known=""):
        exp = Experiment(
            id=exp_id, paper=base.paper, figure="none", title="controls",
            configs={m: {**base.configs["quick"], "seeds": 200, "steps": 5000} for m in ("quick", "full")},
            execute=base.execute, panels=base.panels,
            claims=lambda cfg: [Claim("rate", "E x_k^2 = Theta(k^-1/2)", "sq_dist_to_opt", expected=-0.5,
                                      tolerance=0.05, window=(cfg["steps"] / 100, cfg["steps"]), controls=controls,
                                      known_failure=known)])
        return register(exp)

    exps = [make("test-controlled", (strong,)), make("test-weak", (strong, weak)),
            make("test-weak-known-quick", (strong, weak), {"quick": "other-seed has no power (deliberately)"}),
            make("test-weak-known-full", (strong, weak), {"full": "other-seed has no power (deliberately)"})]
    yield exps
    for e in exps:
        unregister(e.id)


def test_control_runs_fails_and_is_reported(controlled, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["verify", "--only", "test-controlled", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "test-controlled" / "result.json").read_text())
    (v,) = result["verdicts"]
    assert v["status"] == "PASS" and v["power"] == "controlled"
    (c,) = v["controls"]
    assert c["id"] == "fast-steps" and c["status"] == "FAIL" and abs(c["measured"] + 1.0) < 0.1
    assert (out / "test-controlled" / result["files"]["control-fast-steps"]).exists()
    (row,) = json.loads((out / "report.json").read_text())["claims"]
    assert row["control"].startswith("fails as it must")
    assert "fails as it must (fast-steps FAIL)" in (out / "REPORT.md").read_text()
    assert "controlled" in capsys.readouterr().out


def test_a_weak_claim_exits_1_and_its_main_verdict_is_unchanged(controlled, tmp_path):
    out = tmp_path / "w"
    assert main(["verify", "--only", "test-controlled", "test-weak", "--out", str(out), "--no-progress"]) == 1
    rows = {r["experiment"]: r for r in json.loads((out / "report.json").read_text())["claims"]}
    strong, weak = rows["test-controlled"], rows["test-weak"]
    assert weak["power"] == "WEAK" and "other-seed PASS" in weak["control"]
    assert (weak["status"], weak["measured"], weak["ci"]) == (strong["status"], strong["measured"], strong["ci"])
    assert "## Controls that do not fail" in (out / "REPORT.md").read_text()


def test_a_known_failure_of_one_mode_covers_that_mode_only(controlled, tmp_path, capsys):
    out = tmp_path / "k"
    # known in quick: the WEAK PASS is as the registry expects (exit 0), reported as known, with the text
    assert main(["verify", "--only", "test-weak-known-quick", "--out", str(out), "--no-progress"]) == 0
    (row,) = json.loads((out / "report.json").read_text())["claims"]
    assert (row["status"], row["power"]) == ("PASS", "WEAK")
    assert row["known_failure"] == "other-seed has no power (deliberately)"
    assert "PASS (known)" in capsys.readouterr().out
    # known in full only: in quick it is an ordinary WEAK claim (exit 1, no known-failure text)
    assert main(["verify", "--only", "test-weak-known-full", "--out", str(tmp_path / "f"), "--no-progress"]) == 1
    (row,) = json.loads((tmp_path / "f" / "report.json").read_text())["claims"]
    assert row["power"] == "WEAK" and row["known_failure"] == ""
