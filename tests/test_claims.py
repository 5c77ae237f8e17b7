"""Verdicts: true claims pass, false claims fail with their numbers, noisy or diverged runs never pass."""

import numpy as np
import pytest

from ratelab import RatelabError
from ratelab.claims import Claim, check
from ratelab.runner import Trace


def _trace(values: np.ndarray, diverged: np.ndarray | None = None) -> Trace:
    steps = np.arange(1, values.shape[-1] + 1) * 10
    div = np.zeros(values.shape[:-1], bool) if diverged is None else diverged
    return Trace(steps=steps, metrics={"err": values}, diverged=div, diverged_at=np.where(div, 50, -1),
                 final_state=None, log_every=10, aggregate="last")


def _power(p: float, c: float = 1.0, seeds: int = 64, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    k = np.arange(1, 2001) * 10.0
    rng = np.random.default_rng(seed)
    return c * k ** p * np.exp(noise * rng.standard_normal((seeds, k.size)))


def test_true_exponent_passes_and_false_one_fails():
    t = _trace(_power(-1.0))
    assert check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05), t).passed
    wrong = check(Claim("r", "1/k^2", "err", expected=-2.0, tolerance=0.05), t)
    assert not wrong.passed
    assert "outside claimed band" in wrong.reason and wrong.status == "FAIL"
    assert wrong.measured == pytest.approx(-1.0, abs=0.02)


def test_upper_bound_claims():
    t = _trace(_power(-1.0))
    assert check(Claim("r", "O(k^-1/2)", "err", expected=-0.5, tolerance=0.05, relation="le"), t).passed
    assert not check(Claim("r", "O(k^-2)", "err", expected=-2.0, tolerance=0.05, relation="le"), t).passed
    assert check(Claim("r", "Omega(k^-2)", "err", expected=-2.0, tolerance=0.05, relation="ge"), t).passed


def test_constant_claims_are_relative():
    t = _trace(_power(-1.0, c=3.0, noise=0.1))
    assert check(Claim("c", "C=3", "err", kind="constant", exponent=-1.0, expected=3.0, tolerance=0.05), t).passed
    bad = check(Claim("c", "C=3.6", "err", kind="constant", exponent=-1.0, expected=3.6, tolerance=0.05), t)
    assert not bad.passed and bad.measured == pytest.approx(3.0, rel=0.02)


def test_too_noisy_measurement_is_inconclusive_with_the_seeds_that_would_decide():
    t = _trace(_power(-1.0, seeds=8, noise=1.0, seed=1))
    v = check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05), t)
    assert v.status == "INCONCLUSIVE" and not v.passed and "straddles" in v.reason
    assert v.ci[0] < -1.05 or v.ci[1] > -0.95
    # the estimate: seeds * (shrink factor)^2; more seeds then decide (here: PASS, the claim is true)
    assert v.seeds_needed is not None and v.seeds_needed > 8
    many = check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05),
                 _trace(_power(-1.0, seeds=4 * v.seeds_needed, noise=1.0, seed=2)))
    assert many.status == "PASS", many.reason


def test_equivalence_rule_meeting_the_band_is_not_enough():
    """An interval that meets the band but is wider than it (e.g. [-0.96, -0.76] against -1 +- 0.05) no longer
    passes: PASS needs the whole interval inside the band, FAIL the whole interval outside."""
    rng = np.random.default_rng(3)
    gammas = np.geomspace(1, 100, 5)
    from ratelab.runner import trace_from_arrays

    level = trace_from_arrays(gammas, {"y": -0.86 + 0.35 * rng.standard_normal((40, 5))})
    v = check(Claim("v", "s", "y", kind="value", expected=-1.0, tolerance=0.05), level)
    assert v.ci[1] >= -1.05 and v.ci[0] <= -0.95 or v.ci[0] > -0.95
    assert v.status in ("INCONCLUSIVE", "FAIL") and not v.passed
    one_sided = check(Claim("v", "s", "y", kind="value", relation="le", expected=-0.9, tolerance=0.05), level)
    assert one_sided.status == "INCONCLUSIVE" and one_sided.ci[0] <= -0.85 <= one_sided.ci[1]
    assert check(Claim("v", "s", "y", kind="value", relation="le", expected=-0.5, tolerance=0.05), level).passed
    assert check(Claim("v", "s", "y", kind="value", relation="ge", expected=-0.5, tolerance=0.05),
                 level).status == "FAIL"


def test_any_divergence_fails_the_claim():
    values = _power(-1.0)
    div = np.zeros(64, bool)
    div[3] = True
    values[3, 5:] = np.nan
    v = check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05), _trace(values, div))
    assert not v.passed
    assert "1/64 seeds diverged" in v.reason
    assert np.isfinite(v.measured)  # the fit on the 63 finite seeds is still reported


def test_claim_definition_errors():
    with pytest.raises(RatelabError, match="kind must be one of"):
        Claim("x", "s", "err", expected=1.0, tolerance=0.1, kind="slope")
    with pytest.raises(RatelabError, match="needs exponent"):
        Claim("x", "s", "err", expected=1.0, tolerance=0.1, kind="constant")
    with pytest.raises(RatelabError, match="tolerance must be a finite number > 0"):
        Claim("x", "s", "err", expected=1.0, tolerance=0.0)
    with pytest.raises(RatelabError, match="metric must be one of 'err'"):
        check(Claim("x", "s", "loss", expected=1.0, tolerance=0.1), _trace(_power(-1.0)))


def test_value_claim_on_curves_over_a_non_iteration_axis():
    """A level claim on a trace built from curves (x = a penalty grid): PASS inside the band, FAIL outside,
    and a NaN marks that seed diverged."""
    from ratelab.runner import trace_from_arrays

    rng = np.random.default_rng(0)
    gammas = np.array([1.0, 10.0, 100.0])
    gap = 0.2 + 0.01 * rng.standard_normal((50, 3))
    trace = trace_from_arrays(gammas, {"gap": gap})
    ok = check(Claim(id="floor", statement="s", metric="gap", kind="value", expected=0.2, tolerance=0.02), trace)
    assert ok.passed and abs(ok.measured - gap[:, -1].mean()) < 1e-12
    assert ok.ci[0] < gap[:, -1].mean() < ok.ci[1]
    low = check(Claim(id="low", statement="s", metric="gap", kind="value", relation="le", expected=0.1,
                      tolerance=0.01), trace)
    assert not low.passed and "outside" in low.reason
    windowed = check(Claim(id="w", statement="s", metric="gap", kind="value", expected=0.2, tolerance=0.02,
                           window=(1.0, 100.0)), trace)
    assert abs(windowed.measured - gap.mean()) < 1e-12
    gap[3, 1] = np.nan
    bad = trace_from_arrays(gammas, {"gap": gap})
    assert bad.diverged.sum() == 1 and bad.diverged_at[3] == 10.0
    assert not check(Claim(id="f", statement="s", metric="gap", kind="value", expected=0.2, tolerance=0.02),
                     bad).passed


def test_exponent_claim_over_a_penalty_grid():
    """dist(gamma) = c / gamma per seed: the fitted exponent is -1 on a trace whose x is gamma."""
    from ratelab.runner import trace_from_arrays

    gammas = np.geomspace(1, 1e3, 10)
    c = np.random.default_rng(1).uniform(0.5, 2.0, size=(20, 1))
    v = check(Claim(id="r", statement="s", metric="dist", expected=-1.0, tolerance=0.05),
              trace_from_arrays(gammas, {"dist": c / gammas}))
    assert v.passed and abs(v.measured + 1) < 1e-9


def test_worst_case_level_claim_judges_the_largest_value():
    """statistic="max": one bad seed at one point decides a feasibility claim, whatever the mean says."""
    from ratelab.runner import trace_from_arrays

    viol = np.full((30, 5), 1e-12)
    viol[7, 2] = 3e-6
    trace = trace_from_arrays(np.arange(1.0, 6.0), {"viol": viol})
    mean = check(Claim(id="m", statement="s", metric="viol", kind="value", relation="le", expected=0.0,
                       tolerance=1e-6, window=(1.0, 5.0)), trace)
    worst = check(Claim(id="w", statement="s", metric="viol", kind="value", relation="le", expected=0.0,
                        tolerance=1e-6, window=(1.0, 5.0), statistic="max"), trace)
    assert mean.passed and not worst.passed and worst.measured == 3e-6
    with pytest.raises(RatelabError, match="statistic"):
        Claim(id="x", statement="s", metric="viol", expected=-1.0, tolerance=0.1, statistic="max")


def test_a_control_that_breaks_the_claim_fails_and_one_without_power_is_weak():
    from ratelab.claims import Control

    strong = Control("k-2", "a trace decaying like k^-2 must fail a 1/k claim", claim={"metric": "fast"})
    weak = Control("same", "a deliberately powerless control: the same curve again", claim={"metric": "err"})
    claim = Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05, controls=(strong, weak))
    t = _trace(_power(-1.0))
    t.metrics["fast"] = _power(-2.0)
    alone = check(claim, t)
    v = check(claim, t, controls={"k-2": t, "same": t})
    assert alone.power == "not run" and v.power == "WEAK"
    assert [c.status for c in v.controls] == ["FAIL", "PASS"]
    # controls never change the main verdict
    assert (v.status, v.measured, v.ci, v.reason) == (alone.status, alone.measured, alone.ci, alone.reason)
    only_strong = check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05, controls=(strong,)), t,
                        controls={"k-2": t})
    assert only_strong.power == "controlled"
    assert only_strong.as_dict()["controls"][0]["status"] == "FAIL"


def test_control_definition_errors():
    from ratelab.claims import Control

    with pytest.raises(RatelabError, match="changes nothing"):
        Control("c", "nothing")
    with pytest.raises(RatelabError, match="claim may change only"):
        Control("c", "a new band", claim={"expected": 2.0})
    c = Control("c", "another curve", claim={"metric": "x"})
    with pytest.raises(RatelabError, match="unique"):
        Claim("r", "s", "err", expected=1.0, tolerance=0.1, controls=(c, c))
    with pytest.raises(RatelabError, match="not both"):
        Claim("r", "s", "err", expected=1.0, tolerance=0.1, controls=(c,), no_control="none can exist")
    with pytest.raises(RatelabError, match="has no control 'd'"):
        check(Claim("r", "s", "err", expected=-1.0, tolerance=0.1, controls=(c,)), _trace(_power(-1.0)),
              controls={"d": _trace(_power(-1.0))})


def test_known_failure_per_mode_resolves_to_that_mode_and_rejects_other_keys():
    c = Claim("r", "s", "m", expected=-1.0, tolerance=0.1, known_failure={"full": "too few rounds before the floor"})
    assert c.in_mode("full").known_failure == "too few rounds before the floor"
    assert c.in_mode("quick").known_failure == ""
    plain = Claim("r", "s", "m", expected=-1.0, tolerance=0.1, known_failure="both modes")
    assert plain.in_mode("quick") is plain and plain.in_mode("full").known_failure == "both modes"
    for bad in ({"paper": "x"}, {"full": ""}, 3):
        with pytest.raises(RatelabError, match="known_failure"):
            Claim("r", "s", "m", expected=-1.0, tolerance=0.1, known_failure=bad)
