"""Preference collapse and preference matching: the KL-regularised optimum and its value, PM's optimum softmax(r),
the conditional variant, offset invariance, collapse as beta shrinks, and bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.bandits import kl_regularized_optimum, kl_regularized_value, preference_distribution
from alignment.preferences import (
    collapse_study,
    conditional_study,
    conditional_target,
    meaningful_mask,
    minority_mass,
    mirror_ascent,
    pm_objective,
    preference_instances,
    reward_gap,
    rlhf_objective,
    table_instances,
)
from ratelab import RatelabError


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_kl_regularized_optimum_maximises_the_objective_and_has_the_stated_value():
    r, log_ref = (jnp.asarray(a[0]) for a in preference_instances(3, 1, 5))
    for beta in (0.1, 0.7, 2.0):
        star = kl_regularized_optimum(r, log_ref, beta)
        value = rlhf_objective(star, r, log_ref, beta)
        assert np.isclose(value, kl_regularized_value(r, log_ref, beta), rtol=1e-12)
        # any other distribution does worse (strict concavity on the simplex)
        for z in np.random.default_rng(0).normal(size=(20, 5)):
            assert rlhf_objective(jax.nn.softmax(jnp.asarray(z)), r, log_ref, beta) < value


def test_mirror_ascent_reaches_the_closed_forms():
    r, log_ref = (jnp.asarray(a[0]) for a in preference_instances(4, 1, 6))
    beta = 0.2
    z = mirror_ascent(lambda p: rlhf_objective(p, r, log_ref, beta), jnp.zeros(6), 60, 0.5 / beta)
    assert np.abs(jax.nn.softmax(z) - kl_regularized_optimum(r, log_ref, beta)).max() < 1e-12
    z = mirror_ascent(lambda p: pm_objective(p, r), jnp.zeros(6), 60, 0.5)
    assert np.abs(jax.nn.softmax(z) - preference_distribution(r)).max() < 1e-12


def test_pm_without_regulariser_collapses_and_kl_rlhf_matches_preferences_only_at_beta_1_uniform_reference():
    r, _ = (jnp.asarray(a[0]) for a in preference_instances(5, 1, 6))
    z = mirror_ascent(lambda p: pm_objective(p, r, 0.0), jnp.zeros(6), 200, 0.5)
    assert minority_mass(jax.nn.softmax(z), r) < 1e-6
    uniform = jnp.full(6, -np.log(6.0))
    assert np.allclose(kl_regularized_optimum(r, uniform, 1.0), preference_distribution(r), atol=1e-15)


def test_every_solution_is_offset_invariant():
    r, log_ref = (jnp.asarray(a[0]) for a in preference_instances(6, 1, 6))
    u = jnp.asarray([0.1, 1.0])
    a = collapse_study(r, log_ref, u, 60, 0.5)
    b = collapse_study(r + 7.5, log_ref, u, 60, 0.5)
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-10), k


def test_collapse_minority_mass_vanishes_like_exp_minus_gap_over_beta():
    r, log_ref = (jnp.asarray(a[0]) for a in preference_instances(7, 1, 6))
    gap = reward_gap(r)
    betas = gap * jnp.asarray([0.02, 0.01])
    m = jnp.asarray([minority_mass(kl_regularized_optimum(r, log_ref, b), r) for b in betas])
    slope = -(np.log(m[1]) - np.log(m[0])) / (1 / betas[1] - 1 / betas[0])  # -d log m / d (1/beta)
    assert np.isclose(slope, gap, rtol=1e-3)


def test_collapse_study_curves():
    r, log_ref = (jnp.asarray(a[0]) for a in preference_instances(8, 1, 6))
    out = collapse_study(r, log_ref, jnp.asarray([0.05, 0.5, 2.0]), 60, 0.5)
    assert out["rlhf_vs_closed_form"].max() < 1e-12
    assert out["rlhf_minority_ratio"][0] < 1e-4 < out["rlhf_minority_ratio"][-1]
    assert np.allclose(out["pm_minority_ratio"], 1.0)


def test_conditional_pm_matches_the_conditional_preference_distribution():
    r, log_ref = (jnp.asarray(a[0]) for a in table_instances(9, 1, 3, 6))
    mask = meaningful_mask(log_ref, 0.1)
    assert bool(jnp.all(mask.sum(-1) >= 1)) and not bool(jnp.all(mask))
    target = conditional_target(r, mask)
    assert np.allclose(target.sum(-1), 1.0) and float(jnp.where(mask, 0.0, target).max()) == 0.0
    out = conditional_study(r, log_ref, 0.1, 60, 0.5)
    assert out["conditional_vs_target"] < 1e-12 < 1e-3 < out["unconditional_vs_target"]


def test_bad_input_is_rejected():
    with pytest.raises(RatelabError, match="n_responses"):
        preference_instances(0, 2, 2)
    with pytest.raises(RatelabError, match="step_size"):
        mirror_ascent(lambda p: pm_objective(p, jnp.zeros(3)), jnp.zeros(3), 5, -1.0)
    with pytest.raises(RatelabError, match="threshold"):
        conditional_study(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 1.5, 5, 0.5)
