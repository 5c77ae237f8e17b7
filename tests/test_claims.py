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
    assert "outside claimed band" in wrong.reason
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


def test_too_noisy_measurement_is_inconclusive_not_pass():
    t = _trace(_power(-1.0, seeds=3, noise=3.0))
    v = check(Claim("r", "1/k", "err", expected=-1.0, tolerance=0.05), t)
    assert not v.passed and "inconclusive" in v.reason
    # one-sided: a wide interval entirely past the bound is still a pass; one that straddles it is not
    wide_le = check(Claim("r", "O(1/k)", "err", relation="le", expected=-1.0, tolerance=0.05), t)
    assert wide_le.passed == (wide_le.ci[1] <= -0.95)
    loose = check(Claim("r", "O(k^2)", "err", relation="le", expected=2.0, tolerance=0.05), t)
    assert loose.ci[1] - loose.ci[0] > loose.claim.width_limit and loose.passed


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
