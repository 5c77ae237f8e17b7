"""NGDiff vs gradient difference: the exact front (stationarity, the critical t, a lower bound on feasible points),
the sign structure of NGDiff's direction, GeN's rate on a quadratic, GDiff's divergence, bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.unlearning import (
    Quadratics,
    direction,
    front_point,
    front_retain,
    gen_step_size,
    instances,
    loss,
    original_model,
    t_critical,
    unlearn,
)
from ratelab import RatelabError


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _q(seed=0, n_forget=6):
    ins = instances(seed, 1, 4, 40, n_forget)
    return Quadratics(*(jnp.asarray(ins[k][0]) for k in Quadratics._fields))


def test_front_points_are_pareto_stationary_and_t_crit_is_the_definiteness_boundary():
    q = _q()
    tc = float(t_critical(q))
    assert 0 < tc < 1  # H_R - H_F indefinite on this instance: GDiff's fixed point is a saddle
    assert np.linalg.eigvalsh(q.h_r - 0.999 * tc * q.h_f).min() > 0 > np.linalg.eigvalsh(q.h_r - 1.001 * tc * q.h_f
                                                                                         ).min()
    th = front_point(q, 0.5 * tc)
    g_r, g_f = q.h_r @ th - q.c_r, q.h_f @ th - q.c_f
    assert np.allclose(g_r, 0.5 * tc * g_f, atol=1e-10)
    # front_retain's theta(t) from the generalised eigendecomposition is the linear solve's, at every t < t_crit
    from alignment.unlearning import _pencil

    lam, w = _pencil(q)
    for t in (0.0, 0.3 * tc, 0.9 * tc):
        spectral = w @ ((w.T @ q.c_r - t * (w.T @ q.c_f)) / (lam - t))
        np.testing.assert_allclose(spectral, front_point(q, t), rtol=1e-9, atol=1e-12)


def test_front_is_a_lower_bound_on_every_point_with_that_forget_loss():
    q = _q(1)
    fr = jax.jit(front_retain)
    for th in np.random.default_rng(0).normal(size=(40, 4)):
        th = jnp.asarray(th)
        assert loss(th, q.h_r, q.c_r, q.k_r) >= fr(q, loss(th, q.h_f, q.c_f, q.k_f)) - 1e-10


def test_ngdiff_direction_descends_retain_and_ascends_forget():
    q = _q(2)
    for th in np.random.default_rng(1).normal(size=(20, 4)):
        d = direction(jnp.asarray(th), q, 1.0)  # theta moves along -d
        assert d @ (q.h_r @ th - q.c_r) >= -1e-12 and d @ (q.h_f @ th - q.c_f) <= 1e-12


def test_gen_rate_is_the_exact_line_minimiser_on_a_convex_quadratic():
    q = _q(3)
    q = q._replace(h_f=0.0 * q.h_f, c_f=0.0 * q.c_f, k_f=0.0 * q.k_f)  # L_R - L_F = L_R, convex
    th = jnp.ones(4)
    d = q.h_r @ th - q.c_r
    eta = gen_step_size(th, d, q, jnp.asarray(0.1), 10.0)
    assert np.isclose(eta, d @ d / (d @ q.h_r @ d), rtol=1e-8)


def test_ngdiff_stops_on_the_front_where_gdiff_diverges():
    q = _q(4)
    theta0 = original_model(q, 40, 6)
    run = jax.jit(unlearn, static_argnums=(3, 4))
    ng, gd = run(theta0, q, 1.0, 2000, 100), run(theta0, q, 0.0, 2000, 100)
    assert float(ng["misalignment"][-1]) < 1e-9
    assert np.isclose(ng["retain"][-1], front_retain(q, ng["forget"][-1]), atol=1e-9)
    assert not np.isfinite(np.asarray(gd["retain"][-1]))


def test_bad_input_is_rejected():
    with pytest.raises(RatelabError, match="n_forget"):
        instances(0, 1, 4, 40, 2)
    with pytest.raises(RatelabError, match="log_every"):
        unlearn(jnp.zeros(4), _q(), 1.0, 10, 3)
