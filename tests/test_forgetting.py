"""Sequential vs joint SFT and DPO: the exact references (SFT and DPO optima, the lambda trade-off, the min-max
point on the front), sequential training's forgetting, offset invariance of the DPO objective, bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.bandits import newton_minimize
from alignment.forgetting import (
    dpo_loss,
    forgetting_study,
    gaps,
    instances,
    make_problem,
    mix_loss,
    references,
    sft_loss,
)
from ratelab import RatelabError


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@jax.jit
def _refs(phi, q, r):
    p, theta_sft, theta_dpo = make_problem(phi, q, r, 0.5)
    ref = references(p, theta_sft, theta_dpo, 0.5)
    direct = newton_minimize(lambda t: dpo_loss(t, p), jnp.zeros(3), 30)
    grads = (jax.grad(sft_loss)(theta_sft, p), jax.grad(dpo_loss)(theta_dpo, p))
    mix_opt = newton_minimize(lambda t: mix_loss(t, p, 0.5), jnp.zeros(3), 30)
    return p, ref, theta_sft, direct, grads, mix_opt


def test_references_are_the_optima():
    ins = instances(0, 1, 6, 3)
    p, ref, theta_sft, direct, (g_sft, g_dpo), mix_opt = _refs(ins["phi"][0], ins["q"][0], ins["r"][0])
    assert np.linalg.norm(g_sft) < 1e-9 and np.linalg.norm(g_dpo) < 1e-9
    assert np.allclose(ref.theta_dpo, direct, atol=1e-8)  # the shift identity of make_problem
    assert np.isclose(ref.mix, mix_loss(mix_opt, p, 0.5), atol=1e-12)
    g = gaps(ref.theta_dpo, p, ref, 0.5)
    assert g["dpo"] < 1e-12 < g["sft"] and g["mix"] > 0 and g["max"] > 0
    # at the min-max point of the front the two weighted gaps are equal, and no random point does better
    for t in np.random.default_rng(0).normal(size=(50, 3)):
        assert gaps(jnp.asarray(t), p, ref, 0.5)["max"] >= -1e-9


def test_dpo_objective_is_offset_invariant():
    ins = instances(1, 1, 6, 3)
    p, _, _ = make_problem(ins["phi"][0], ins["q"][0], ins["r"][0], 0.5)
    t = jnp.asarray([0.3, -1.0, 0.2])
    assert np.isclose(dpo_loss(t, p), dpo_loss(t, p._replace(r=p.r + 4.0)), rtol=1e-14)


def test_sequential_ends_at_the_dpo_optimum_and_forgets():
    ins = instances(2, 1, 6, 3)
    study = jax.jit(forgetting_study, static_argnums=(8, 9))
    coins = np.random.default_rng(0).uniform(size=4000)
    out = study(ins["phi"][0], ins["q"][0], ins["r"][0], ins["theta0"][0], coins, 0.5, 0.5, 0.05, 4000, 100)
    assert np.isclose(out["seq_sft"][-1], out["forgetting_closed_form"][-1], rtol=1e-3)
    assert out["seq_dpo"][-1] < 1e-6 and out["forgetting_closed_form"][-1] > 1e-2
    assert out["alright_mix"][-1] < 1e-3 and out["maxright_max"][-1] < 1e-3


def test_bad_input_is_rejected():
    with pytest.raises(RatelabError, match="dim"):
        instances(0, 1, 3, 3)
    with pytest.raises(RatelabError, match="lam"):
        forgetting_study(*(jnp.zeros(s) for s in ((3, 2), (3,), (3,), (2,), (4,))), 0.5, 1.5, 0.05, 4, 1)
