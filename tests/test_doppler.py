"""DOPPLER (optim_theory.doppler): the filter against scipy.signal.lfilter with the bias correction, a constant input
passes unbiased from the first step, the all-pass filter is DPSGD bit for bit, the white-noise gain and the
closed-loop moments against independent impulse-response sums, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import signal

from optim_theory import doppler as P
from optim_theory import dp
from optim_theory.dp_problems import make_quadratic
from optim_theory.stationary import sgd_floor
from ratelab.errors import RatelabError

FILTERS = {
    "ema": P.ema(0.9),
    "code-default": P.CODE_DEFAULT,
    "fir": ((1.0,), (0.5, 0.3, 0.2)),
    "iir2": ((1.0, -0.5, 0.06), (0.3, 0.26)),
    "all-pass": P.ALL_PASS,
}


def _run_filter(a, b, inputs, bias_correction=True):
    filt = P.lowpass_filter(a, b, bias_correction=bias_correction)

    def step(state, g):
        out, state = filt.update(g, state)
        return state, out

    return np.asarray(jax.lax.scan(step, filt.init(inputs[0]), inputs)[1])


@pytest.mark.parametrize("name", FILTERS)
def test_filter_is_lfilter_divided_by_its_step_response(name):
    a, b = FILTERS[name]
    with jax.enable_x64(True):
        g = np.asarray(jax.random.normal(jax.random.key(0), (50, 3), jnp.float64))
        ours = _run_filter(jnp.asarray(a), jnp.asarray(b), jnp.asarray(g))
    m = signal.lfilter(b, a, g, axis=0)
    c = signal.lfilter(b, a, np.ones(50))
    np.testing.assert_allclose(ours, m / c[:, None], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", FILTERS)
def test_bias_correction_passes_a_constant_from_the_first_step(name):
    a, b = FILTERS[name]
    with jax.enable_x64(True):
        out = _run_filter(jnp.asarray(a), jnp.asarray(b), jnp.full((20, 2), 3.0))
        raw = _run_filter(jnp.asarray(a), jnp.asarray(b), jnp.full((20, 2), 3.0), bias_correction=False)
    np.testing.assert_allclose(out, 3.0, rtol=1e-10)
    if name != "all-pass":
        assert abs(raw[0, 0] - 3.0) > 0.1  # the uncorrected filter starts biased


def test_all_pass_is_dpsgd_bit_for_bit_and_a_near_all_pass_is_not():
    """Op by op (as in test_disk.py: compiled programs may fuse the shared aggregate differently)."""
    q = make_quadratic([0.1, 0.5, 1.0], step=1.0, replicates=2, tau=0.3, batch=4)
    kw = {"clip_norm": 0.5, "noise_multiplier": 1.0, "key": jax.random.key(4)}

    def path(opt):
        def step(carry, k):
            x, state = carry
            u, state = opt.update(q.per_sample_grads(x, q.sample(k)), state, x)
            return (x + u, state), x + u

        x = jnp.ones(6)
        return np.asarray(jax.lax.scan(step, (x, opt.init(x)), jax.random.split(jax.random.key(1), 6))[1])

    with jax.disable_jit():
        dpsgd = path(dp.dp_optimizer(optax.sgd(0.8), **kw))
        allpass = path(P.doppler(optax.sgd(0.8), a=(1.0,), b=(1.0,), **kw))
        padded = path(P.doppler(optax.sgd(0.8), a=(1.0, 0.0, 0.0), b=(1.0, 0.0, 0.0), **kw))
        near = path(P.doppler(optax.sgd(0.8), a=(1.0,), b=(1 - 1e-6, 1e-6), **kw))
    assert np.array_equal(allpass, dpsgd) and np.array_equal(padded, dpsgd)
    assert not np.array_equal(near, dpsgd) and np.abs(near - dpsgd).max() < 1e-3


@pytest.mark.parametrize("name", ["ema", "fir", "iir2", "code-default"])
def test_white_noise_gain_is_the_impulse_responses_energy(name):
    a, b = FILTERS[name]
    h = signal.lfilter(b, a, np.r_[1.0, np.zeros(40_000)]) * np.sum(a) / np.sum(b)
    assert P.white_noise_gain(a, b) == pytest.approx(np.sum(h**2), rel=1e-8)


def test_white_noise_gain_of_the_ema():
    assert P.white_noise_gain(*P.ema(0.9)) == pytest.approx(0.1 / 1.9, rel=1e-12)


@pytest.mark.parametrize("name", ["ema", "fir", "iir2"])
@pytest.mark.parametrize("eh", [0.02, 0.3, 1.0])
def test_closed_loop_against_the_transfer_functions_impulse_response(name, eh):
    """x = -eta H / (z - 1 + eta h H) n and e = m - h x = H (z - 1 + eta h) / (z - 1 + eta h H) n (H normalised to
    unit DC gain); their impulse responses' energies are the stationary variances for unit white noise."""
    a, b = (np.asarray(v, dtype=float) for v in FILTERS[name])
    b = b * a.sum() / b.sum()
    step, h = 0.5, eh / 0.5
    A1 = np.convolve([1.0, -1.0], a)  # (1 - z^-1) A(z^-1)
    Bz = np.r_[0.0, b]  # z^-1 B(z^-1)
    den = np.zeros(max(A1.size, Bz.size))
    den[:A1.size] += A1
    den[:Bz.size] += step * h * Bz
    impulse = np.r_[1.0, np.zeros(60_000)]
    x = signal.lfilter(-step * Bz, den, impulse)
    e = signal.lfilter(np.convolve(b, [1.0, -1.0 + step * h]), den, impulse)
    floor, err = P.closed_loop(a, b, step, h, 2.0)
    assert floor == pytest.approx(2.0 * np.sum(x**2), rel=1e-6)
    assert err == pytest.approx(2.0 * np.sum(e**2), rel=1e-6)


def test_closed_loop_limits():
    floor, err = P.closed_loop(*P.ALL_PASS, 0.5, 1.2, 3.0)
    assert floor == pytest.approx(sgd_floor(0.5, 1.2, 3.0), rel=1e-12) and err == pytest.approx(3.0)
    floor, err = P.closed_loop(*P.ema(0.9), 1.0, 1e-5, 1.0)
    assert floor / sgd_floor(1.0, 1e-5, 1.0) == pytest.approx(1.0, abs=1e-4)  # no gain in flat directions
    assert err == pytest.approx(P.white_noise_gain(*P.ema(0.9)), rel=1e-3)  # the gain where h x is slow
    assert P.closed_loop(*P.CODE_DEFAULT, 1.0, 0.03, 1.0) == (float("inf"), float("inf"))


@pytest.mark.parametrize("a, b, match", [
    ((2.0, 0.5), (1.0,), "a\\[0\\]"), ((), (1.0,), "non-empty"), ((1.0, np.nan), (1.0,), "finite"),
    ((1.0,), (np.inf,), "finite"),
])
def test_bad_coefficients_are_named(a, b, match):
    with pytest.raises(RatelabError, match=match):
        P.lowpass_filter(a, b)


def test_zero_dc_gain_is_rejected_by_the_closed_forms():
    with pytest.raises(RatelabError, match="DC gain"):
        P.white_noise_gain((1.0,), (0.5, -0.5))
    with pytest.raises(RatelabError, match="beta"):
        P.ema(1.0)
