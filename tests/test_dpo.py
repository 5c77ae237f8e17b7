"""DPO vs RMB-PO on the linear contextual bandit: the authors' features and data, the likelihood fits, the derived
coincidence of the three methods in the well-specified class, the missing maximiser at the code's beta = 0.01, the
population limits, and bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.dpo import (
    PAPER_THETA,
    Data,
    bt_mle,
    dpo,
    features,
    oop_study,
    policy_objective,
    population_limits,
    quadrature,
    rmb_po,
    sample_data,
)
from ratelab import RatelabError


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_features_and_data_follow_the_authors_code():
    f = np.asarray(features(np.array([0.25]), 4, xp=np))[0]
    assert np.allclose(f[:, 0], np.arange(1, 5) * np.cos(np.pi / 4))
    assert np.allclose(f[:, 1], np.sin(np.pi / 4) / np.arange(1, 5))
    g = np.asarray(features(np.array([0.25]), 4, flip=True, xp=np))[0]
    assert np.allclose(g[:, 0], np.arange(1, 5) * np.sin(np.pi / 4))
    d = sample_data(0, 3, 500, 10, 4)
    assert np.all(d.winner != d.loser) and d.states.shape == (3, 500) and d.new_states.shape == (3, 10)
    # labels follow Bradley-Terry: the better action wins more often than not, but not always
    r = features(d.states, 4, xp=np) @ np.asarray(PAPER_THETA)
    rw = np.take_along_axis(r, d.winner[..., None], -1)[..., 0]
    rl = np.take_along_axis(r, d.loser[..., None], -1)[..., 0]
    assert 0.6 < np.mean(rw > rl) < 0.99


def _dataset(seed, n, flip, theta=PAPER_THETA):
    d = sample_data(seed, 1, n, n, 4, theta)
    d = Data(*(jnp.asarray(x[0]) for x in d))
    phi, psi = features(d.states, 4), features(d.states, 4, flip)
    take = lambda f, a: jnp.take_along_axis(f, a[:, None, None], axis=1)[:, 0]  # noqa: E731
    return d, phi, psi, take(phi, d.winner) - take(phi, d.loser), take(psi, d.winner) - take(psi, d.loser)


def test_likelihood_fits_are_stationary():
    d, phi, psi, dphi, dpsi = _dataset(1, 200, True)

    @jax.jit
    def fits(dphi, dpsi):
        mask = jnp.ones(dphi.shape[0])
        theta = bt_mle(dphi, mask, 0.1)
        loss = lambda t: jnp.sum(jax.nn.softplus(-dphi @ t)) + 0.05 * t @ t  # noqa: E731
        return jax.grad(loss)(theta), dpo(dpsi, mask, 0.3, 0.1), bt_mle(dpsi, mask, 0.1)

    g, w, v = fits(dphi, dpsi)
    assert np.linalg.norm(g) < 1e-9
    assert np.allclose(0.3 * w, v)


@jax.jit
def _three_methods(phi, dphi, phi_new):
    mask = jnp.ones(phi.shape[0])
    theta_hat = bt_mle(dphi, mask, 0.1)
    more = jnp.concatenate([phi, phi_new])
    return (theta_hat, dpo(dphi, mask, 0.3, 0.1), rmb_po(phi, phi @ theta_hat, mask, 0.3),
            rmb_po(more, more @ theta_hat, jnp.ones(more.shape[0]), 0.3))


@pytest.mark.parametrize("theta", [PAPER_THETA, (-0.7, 1.3)])
def test_well_specified_class_makes_the_three_methods_coincide(theta):
    """Derived here: with psi = phi, RMB-PO's maximiser over any prompt set is theta_hat / beta, DPO's too."""
    d, phi, psi, dphi, _ = _dataset(2, 60, False, theta)
    theta_hat, w_dpo, w_po, w_plus = _three_methods(phi, dphi, features(d.new_states, 4))
    for w in (w_dpo, w_po, w_plus):
        assert np.allclose(w, theta_hat / 0.3, atol=1e-8)


def test_flipped_class_at_beta_001_has_no_maximiser():
    """The authors' reg_coef = 0.01: along the population maximiser's direction the objective keeps increasing."""
    q = quadrature(128)
    psi_q, r_q = features(q.s, 4, True), features(q.s, 4) @ jnp.asarray(PAPER_THETA)
    direction = jnp.asarray([-0.034, -1.0])
    vals = [float(policy_objective(t * direction, psi_q, r_q, jnp.asarray(q.weights), 0.01))
            for t in (1e2, 1e3, 1e4, 1e5)]
    assert all(b > a for a, b in zip(vals, vals[1:], strict=False))


def test_population_limits_and_study():
    q = quadrature(128)
    lim = population_limits(PAPER_THETA, 0.3, 4, True, q)
    assert 0 < lim.subopt_po < lim.subopt_dpo
    d = Data(*(jnp.asarray(x[0]) for x in sample_data(3, 1, 80, 40, 4)))
    study = jax.jit(oop_study, static_argnums=(11,))
    out = study(d, jnp.asarray([20.0, 80.0]), 0.5, jnp.asarray(PAPER_THETA), 0.3, 0.1, jnp.asarray(lim.w_dpo),
                jnp.asarray(lim.w_po), jnp.asarray(q.s), jnp.asarray(q.weights), 1.0, 4)
    for k in ("excess_dpo", "excess_po", "excess_plus"):
        assert np.all(np.asarray(out[k]) >= -1e-9), k
    assert np.all(np.asarray(out["subopt_dpo"]) > np.asarray(out["subopt_po"]))


def test_bad_input_is_rejected():
    with pytest.raises(RatelabError, match="n_actions"):
        sample_data(0, 1, 10, 1, 1)
    with pytest.raises(RatelabError, match="beta"):
        population_limits(PAPER_THETA, -1.0, 4, True, quadrature(16))
    with pytest.raises(RatelabError, match="n_nodes"):
        quadrature(0)


def test_the_static_grid_solves_the_same_fits_as_the_masked_one():
    """oop_study with concrete N solves each N on its own prefix of the buffers; with traced N it masks the full
    buffers: the same objectives, so the same fits (float64, to the Newton solves' rounding)."""
    with jax.enable_x64(True):
        q = quadrature(16)
        lim = population_limits(PAPER_THETA, 0.3, 4, True, q)
        d = Data(*(jnp.asarray(x[0]) for x in sample_data(5, 1, 40, 20, 4)))
        rest = (jnp.asarray(PAPER_THETA), 0.3, 0.1, jnp.asarray(lim.w_dpo), jnp.asarray(lim.w_po), jnp.asarray(q.s),
                jnp.asarray(q.weights), 1.0, 4)
        masked = jax.jit(lambda dd: oop_study(dd, jnp.asarray([20.0, 40.0]), 0.5, *rest))(d)
        static = jax.jit(lambda dd: oop_study(dd, (20, 40), 0.5, *rest))(d)
    for k in masked:
        np.testing.assert_allclose(np.asarray(static[k]), np.asarray(masked[k]), rtol=1e-6, atol=1e-7, err_msg=k)
