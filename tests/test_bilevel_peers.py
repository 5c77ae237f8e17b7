"""The math behind saba-linear and vpbgd-floor: the closed-form penalised solution of the finite-sum quadratic against a
numeric solve, V-PBGD's fixed point, the full-batch framework map, SAGA's conditional unbiasedness, the window rule."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from bilevel.finite_sum import make_finite_sum_quadratic
from bilevel.pbgd import v_pbgd
from bilevel.stochastic import _directions, _per_sample, saba
from experiments.bilevel_peers import _map
from ratelab import RatelabError


@pytest.fixture(scope="module")
def small():
    with jax.enable_x64(True):
        yield make_finite_sum_quadratic(3, n_inner=4, n_outer=3, dim_inner=3, dim_outer=2, mu_inner=0.3,
                                        full_batch=True)


_penalised = jax.jit(lambda p, gamma: p.penalised_solution(gamma))


@jax.jit
def _penalised_value_and_grad(p, w, gamma):
    def F(w_):
        x, y = w_[:2], w_[2:]
        return p.upper(x, y) + gamma * (p.lower(x, y) - p.lower(x, p.lower_solution(x)))
    return jax.value_and_grad(F)(w)


def test_penalised_solution_matches_a_numeric_minimisation(small):
    with jax.enable_x64(True):
        for gamma in (0.5, 5.0, 50.0):
            x, y = _penalised(small, gamma)
            w = np.concatenate([np.asarray(x), np.asarray(y)])
            _, grad = _penalised_value_and_grad(small, jnp.asarray(w), gamma)
            assert float(jnp.max(jnp.abs(grad))) < 1e-10
            fun = lambda u, g=gamma: tuple(np.asarray(a) for a in _penalised_value_and_grad(small, jnp.asarray(u), g))  # noqa: E731
            num = minimize(fun, np.zeros(5), jac=True, method="BFGS", options={"gtol": 1e-11})
            np.testing.assert_allclose(num.x, w, atol=1e-7)
        # gamma -> infinity recovers the bilevel solution (derived: x_gamma - x* = O(1/gamma))
        xs, _ = small.solution()
        d1, d2 = (float(jnp.linalg.norm(_penalised(small, g)[0] - xs)) for g in (1e3, 1e4))
        assert 8 < d1 / d2 < 12


def test_v_pbgd_fixed_point_is_the_penalised_solution(small):
    with jax.enable_x64(True):
        gamma = 7.0
        x, y = _penalised(small, gamma)
        z = small.lower_solution(x)
        s = v_pbgd(x_optimizer=0.1, y_optimizer=0.1, gamma=gamma, inner_steps=1, inner_lr=0.5)
        state = s.init(small, jax.random.key(0))._replace(x=x, y=y, z=z)
        new, _ = jax.jit(s.step)(state, small, small.sample_batch(jax.random.key(1)))
        for a, b in ((new.x, x), (new.y, y), (new.z, z)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-13)


def test_framework_map_is_the_hand_built_linear_part(small):
    with jax.enable_x64(True):
        rho, gam = 0.3, 0.1
        M = np.asarray(_map(small, rho, gam))
        m = lambda a: np.asarray(a).mean(0)  # noqa: E731
        Hz, C, Fz, Fx, D = m(small.Hz), m(small.C), m(small.Fz), m(small.Fx), m(small.D)
        d, q = 2, 3
        X, Z, V = slice(0, d), slice(d, d + q), slice(d + q, d + 2 * q)
        ref = np.eye(d + 2 * q)
        ref[Z, Z] -= rho * Hz
        ref[Z, X] -= rho * C.T
        ref[V, V] -= rho * Hz
        ref[V, Z] -= rho * Fz
        ref[V, X] -= rho * D.T
        ref[X, V] -= gam * C
        ref[X, X] -= gam * Fx
        ref[X, Z] -= gam * D
        np.testing.assert_allclose(M, ref, atol=1e-13)


def test_saga_estimate_is_conditionally_unbiased():
    """The premise of saba-linear's prediction: averaged over every (inner, outer) draw of one sample each, SABA's
    estimate new_i - memory_i + mean(memory) is the full-batch direction, whatever the (stale) memory."""
    with jax.enable_x64(True):
        p = make_finite_sum_quadratic(4, n_inner=4, n_outer=3, dim_inner=3, dim_outer=2)
        keys = jax.random.split(jax.random.key(2), 4)
        x, z, v = (jax.random.normal(k, n, jnp.float64) for k, n in zip(keys, ((2,), (3,), (3,)), strict=False))
        samples = jax.jit(lambda p_, x_, z_, v_: _per_sample(p_, x_, z_, v_, jnp.arange(4), jnp.arange(3)))
        mem = [np.asarray(a) for a in samples(p, x + 1.0, z - 0.5, 2 * v)]  # stale memory
        full = [np.asarray(a) for a in samples(p, x, z, v)]
        pairs = list(itertools.product(range(4), range(3)))
        est = [np.mean([full[t][(i, i, i, j, j)[t]] - mem[t][(i, i, i, j, j)[t]] for i, j in pairs], 0)
               + mem[t].mean(0) for t in range(5)]
        gz, hv, cx, fz, fx = est
        dz, dv, dx = jax.jit(lambda p_, x_, z_, v_: _directions(p_, x_, z_, v_, None))(p, x, z, v)
        for a, b in ((gz, dz), (hv + fz, dv), (cx + fx, dx)):
            np.testing.assert_allclose(a, np.asarray(b), atol=1e-12)


def test_saba_linear_window_rule():
    from experiments.bilevel_peers import FADE, FLOOR, SABA_LINEAR, prediction

    pred = prediction(SABA_LINEAR.config("quick"))
    ratio = pred["lambda2"] / pred["rho"]
    assert ratio ** (2 * pred["k0"]) <= FADE < ratio ** (2 * (pred["k0"] - 1))
    assert pred["rho"] ** (2 * pred["k1"]) >= FLOOR > pred["rho"] ** (2 * (pred["k1"] + 1))
    assert pred["memory"] < pred["rho"] ** 2 and math.isclose(pred["rate"], -2 * math.log(pred["rho"]))


def test_full_batch_and_refresh_inputs(small):
    with jax.enable_x64(True):
        x, z = small.solution()
        assert float(small.lower(x, z, small.sample_batch(jax.random.key(0))) - small.lower(x, z)) == 0.0
    with pytest.raises(RatelabError, match="full_batch=False"):
        saba(inner_lr=0.1, outer_lr=0.1).init(small, jax.random.key(0))
    with pytest.raises(RatelabError, match="refresh must be True or False"):
        saba(inner_lr=0.1, outer_lr=0.1, refresh="yes")
