"""Verdicts: true claims pass, false claims fail with their numbers, noisy or diverged runs never pass."""

import numpy as np
import pytest

from experiments.claims import Claim, check
from experiments.runner import Trace
from ratelab import RatelabError


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
