"""Rate fitting: exact recovery on noiseless power laws and calibrated intervals on noisy ones."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelab import RatelabError
from ratelab.rates import (
    fit_constant,
    fit_power_law,
    fit_sample_complexity,
    running_mean,
    running_min,
    samples_to_reach,
)


@settings(max_examples=30, deadline=None)
@given(p=st.floats(-3.0, 1.0), c=st.floats(1e-3, 1e3))
def test_noiseless_power_law_is_recovered_exactly(p, c):
    x = np.arange(1, 5001, dtype=float)
    fit = fit_power_law(x, c * x ** p, window=(10, 5000))
    assert fit.exponent == pytest.approx(p, abs=1e-9)
    assert fit.constant == pytest.approx(c, rel=1e-8)


def test_interval_covers_the_true_exponent_in_at_least_90_percent_of_200_trials():
    """20 seeds, multiplicative log-normal noise, independent exponent per trial, 95 % bootstrap interval."""
    x = np.geomspace(10, 1e4, 40)
    hits = 0
    for trial in range(200):
        rng = np.random.default_rng(trial)
        p = rng.uniform(-2.0, -0.3)
        values = 3.0 * x ** p * np.exp(0.5 * rng.standard_normal((20, x.size)))
        fit = fit_power_law(x, values, n_boot=1000, seed=trial)
        hits += fit.exponent_ci[0] <= p <= fit.exponent_ci[1]
    assert hits >= 180, f"coverage {hits / 200:.3f}"


def test_interval_covers_with_seed_level_noise_too():
    """A random prefactor per seed (noise shared along a seed's whole curve) plus per-point noise: still >= 90 %."""
    x = np.geomspace(10, 1e4, 40)
    hits = 0
    for trial in range(200):
        rng = np.random.default_rng(1000 + trial)
        p = rng.uniform(-1.5, -0.5)
        prefactor = np.exp(rng.standard_normal((30, 1)))
        values = prefactor * x ** p * np.exp(0.3 * rng.standard_normal((30, x.size)))
        fit = fit_power_law(x, values, n_boot=1000, seed=trial)
        hits += fit.exponent_ci[0] <= p <= fit.exponent_ci[1]
    assert hits >= 180, f"coverage {hits / 200:.3f}"


def test_constant_of_known_exponent():
    x = np.arange(1, 10001, dtype=float)
    rng = np.random.default_rng(0)
    values = 2.5 / x * rng.exponential(1.0, size=(400, x.size))
    fit = fit_constant(x, values, -1.0, window=(1000, 10000))
    assert fit.constant_ci[0] <= 2.5 <= fit.constant_ci[1]
    assert fit.constant_ci[1] - fit.constant_ci[0] < 0.2


def test_running_mean_and_min():
    v = np.array([[4.0, 2.0, 3.0, 1.0]])
    np.testing.assert_allclose(running_mean(v), [[4.0, 3.0, 3.0, 2.5]])
    np.testing.assert_allclose(running_min(v), [[4.0, 2.0, 2.0, 1.0]])


def test_averaged_gradient_norm_rate():
    """If g_k = c k^-1/2 exactly, then (1/K) sum_k g_k ~ 2 c K^-1/2: the running mean keeps the exponent."""
    k = np.arange(1, 100001, dtype=float)
    avg = running_mean(k ** -0.5)[None]
    assert fit_power_law(k, avg, window=(10000, 100000)).exponent == pytest.approx(-0.5, abs=0.01)
    # sum_{k<=K} k^-1/2 = 2 sqrt(K) + zeta(1/2) + O(K^-1/2): the relative correction is below 1 % for K >= 10^4.
    assert fit_constant(k, avg, -0.5, window=(10000, 100000)).constant == pytest.approx(2.0, rel=0.01)


def test_sample_complexity_of_an_eps_minus_two_method():
    """values = c / sqrt(n) reaches eps after n = (c / eps)^2 samples: N(eps) exponent -2."""
    n = np.arange(1, 200001, dtype=float)
    rng = np.random.default_rng(1)
    c = rng.uniform(0.8, 1.2, size=(16, 1))
    values = c / np.sqrt(n)
    eps = np.geomspace(0.1, 0.003, 8)
    hits = samples_to_reach(n, values, eps)
    np.testing.assert_allclose(hits, np.ceil((c / eps) ** 2), rtol=0, atol=1)
    fit = fit_sample_complexity(n, values, eps)
    assert fit.exponent == pytest.approx(-2.0, abs=0.01)
    assert fit.exponent_ci[0] <= -2.0 + 0.01 and fit.exponent_ci[1] >= -2.0 - 0.01


def test_sample_complexity_names_unreached_eps():
    n = np.arange(1, 101, dtype=float)
    with pytest.raises(RatelabError, match=r"eps \[0\.001\] not reached"):
        fit_sample_complexity(n, 1 / np.sqrt(n)[None], [0.5, 0.2, 0.001])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.arange(1, 10.0), np.ones(5)), {}, "values must have shape"),
        ((np.arange(1, 10.0), np.ones(9)), {"window": (5, 2)}, "window must satisfy"),
        ((np.arange(1, 10.0), np.ones(9)), {"window": (8, 9)}, "at least 3 are needed"),
        ((np.arange(1, 10.0), -np.ones(9)), {}, "positive mean"),
        ((np.arange(1, 10.0), np.ones(9)), {"level": 1.5}, "level must lie in"),
    ],
)
def test_bad_fit_inputs(args, kwargs, message):
    with pytest.raises(RatelabError, match=message):
        fit_power_law(*args, **kwargs)
