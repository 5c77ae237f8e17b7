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
from bilevel.stochastic import _directions, _per_sample, framework_map, saba
from ratelab import RatelabError


@pytest.fixture(scope="module")
def small():
    with jax.enable_x64(True):
        yield make_finite_sum_quadratic(3, n_inner=4, n_outer=3, dim_inner=3, dim_outer=2, mu_inner=0.3,
                                        full_batch=True)


_penalised = jax.jit(lambda p, gamma: p.penalised_solution(gamma))
_map = jax.jit(lambda p, rho, gam: framework_map(p, *p.solution(), inner_lr=rho, outer_lr=gam))


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


@jax.jit
def _v_pbgd_gradient(p, x, y, gamma):
    """V-PBGD's (x, y) gradient at a lower-level iterate z that has converged to z*(x) (inner gradient steps fix
    exactly z*(x)), the iterate held constant as in the algorithm."""
    z = jax.lax.stop_gradient(p.lower_solution(x))
    return jax.grad(lambda x_, y_: p.upper(x_, y_) + gamma * (p.lower(x_, y_) - p.lower(x_, z)), argnums=(0, 1))(x, y)


def test_v_pbgd_fixed_point_is_the_penalised_solution(small):
    """Danskin: with z = z*(x) held fixed, V-PBGD's gradient is grad F_gamma, so (x_gamma, y_gamma, z*(x_gamma)) is
    its fixed point; and z*(x) is the fixed point of the inner gradient steps."""
    with jax.enable_x64(True):
        x, y = _penalised(small, 7.0)
        for g in _v_pbgd_gradient(small, x, y, 7.0):
            assert float(jnp.max(jnp.abs(g))) < 1e-12


def test_framework_matrix_is_the_jacobian_of_the_full_batch_step(small):
    with jax.enable_x64(True):
        M = np.asarray(_map(small, 0.3, 0.1))
        np.testing.assert_allclose(M, small.framework_matrix(0.3, 0.1), atol=1e-13)


def test_saga_estimate_is_conditionally_unbiased():
    """The premise of saba-linear's prediction: averaged over every (inner, outer) draw of one sample each, SABA's
    estimate new_i - memory_i + mean(memory) is the full-batch direction, whatever the (stale) memory."""
    with jax.enable_x64(True):
        p = make_finite_sum_quadratic(4, n_inner=4, n_outer=3, dim_inner=3, dim_outer=2)
        keys = jax.random.split(jax.random.key(2), 4)
        x, z, v = (jax.random.normal(k, n, jnp.float64) for k, n in zip(keys, ((2,), (3,), (3,)), strict=False))
        i, j = jnp.arange(4), jnp.arange(3)
        both = jax.jit(lambda p_, x_, z_, v_: (_per_sample(p_, x_ + 1.0, z_ - 0.5, 2 * v_, i, j),
                                               _per_sample(p_, x_, z_, v_, i, j), _directions(p_, x_, z_, v_, None)))
        mem, full, (dz, dv, dx) = both(p, x, z, v)  # mem: a stale memory
        mem, full = [np.asarray(a) for a in mem], [np.asarray(a) for a in full]
        pairs = list(itertools.product(range(4), range(3)))
        est = [np.mean([full[t][(i, i, i, j, j)[t]] - mem[t][(i, i, i, j, j)[t]] for i, j in pairs], 0)
               + mem[t].mean(0) for t in range(5)]
        gz, hv, cx, fz, fx = est
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
