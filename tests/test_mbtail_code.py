"""MB-TAIL as the authors' code runs it (``rl_theory.mbtail_code``): each piece against its definition or a
mathematical fact."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_theory.mbtail_code import (
    ail_multiplicative_weights,
    policy_from_occupancy,
    prefix_covered,
    prefix_estimator,
    rf_express_code,
    table_bc,
)
from rl_theory.tabular import (
    occupancy,
    random_mdp,
    reset_cliff,
    reset_cliff_expert,
    sample_trajectories,
    value_iteration,
)


def test_prefix_covered_is_membership_of_the_prefix_strings():
    """Against the code's own test: the string "s a * s a * ..." of the prefix is in the reference set of step h
    (few states and actions, so that prefixes coincide often)."""
    rng = np.random.default_rng(0)
    n, m, H = 40, 12, 5
    st, ac = rng.integers(0, 2, (n, H)), rng.integers(0, 2, (n, H))
    rs, ra = st[:m].copy(), ac[:m].copy()
    rs[:, 3:] = rng.integers(0, 2, (m, H - 3))  # the rows of st[:m] are covered up to step 2, then may split
    def text(states, actions, h):
        return "".join(f"{s}{a}*" for s, a in zip(states[: h + 1], actions[: h + 1], strict=True))

    sets = [{text(rs[j], ra[j], h) for j in range(m)} for h in range(H)]
    want = np.array([[text(st[i], ac[i], h) in sets[h] for h in range(H)] for i in range(n)])
    got = np.asarray(prefix_covered(jnp.asarray(st), jnp.asarray(ac), jnp.asarray(rs), jnp.asarray(ra)))
    assert np.array_equal(got, want)
    assert got[:m, :3].all() and not got.all()  # both outcomes occur
    assert np.all(np.diff(got.astype(int), axis=1) <= 0)  # once uncovered, uncovered for ever


def test_prefix_estimator_is_unbiased_for_the_expert_occupancy():
    """E d_hat = d^{pi_E} for a deterministic expert: along a covered prefix every state was seen in D1 at its
    step, where BC(D1) plays the expert's action, so the BC rollouts' covered part has the expert's law; D2's
    uncovered part is the expert's directly."""
    S, A, H, N, n_bc = 5, 3, 4, 6, 20

    def one(mdp, pi_e, key):
        k1, k2, k3 = jax.random.split(key, 3)
        es, ea = sample_trajectories(mdp, pi_e, k1, N)
        pi_bc = table_bc(es[: N // 2], ea[: N // 2], S, A, k2)
        bs, ba = sample_trajectories(mdp, pi_bc, k3, n_bc)
        return prefix_estimator(es, ea, bs, ba, jnp.ones(n_bc, bool), S, A)

    for seed in (40, 41):  # two instances
        mdp = random_mdp(jax.random.key(seed), S, A, H)
        pi_e, _ = jax.jit(value_iteration)(mdp)
        d = np.asarray(jax.jit(jax.vmap(one, in_axes=(None, None, 0)))(mdp, pi_e,
                                                                       jax.random.split(jax.random.key(1), 4000)))
        target = np.asarray(occupancy(mdp, pi_e))
        se = d.std(0, ddof=1) / np.sqrt(d.shape[0])
        assert np.all(np.abs(d.mean(0) - target) < 5 * se + 1e-9)
        assert np.all(d >= 0)


def test_table_bc_keeps_a_random_policy_where_unseen():
    st = jnp.array([[0, 1], [0, 2]])
    ac = jnp.array([[1, 0], [1, 2]])
    pi = np.asarray(table_bc(st, ac, 3, 3, jax.random.key(0)))
    np.testing.assert_allclose(pi.sum(-1), 1.0)
    np.testing.assert_allclose(pi[0, 0], [0, 1, 0])
    np.testing.assert_allclose(pi[1, 1], [1, 0, 0])
    np.testing.assert_allclose(pi[1, 2], [0, 0, 1])
    unseen = pi[0, 2]
    assert np.all(unseen > 0) and np.ptp(unseen) > 0  # a random point of the simplex, not uniform


def test_rf_express_code_plays_action_zero_first_then_explores_and_masks():
    mdp = reset_cliff(5, 3, 4)
    run = jax.jit(lambda k, e: rf_express_code(mdp, k, e, 60))
    key = jax.random.key(3)
    n1, i1 = map(np.asarray, run(key, jnp.int32(1)))
    assert n1.sum() == 4 and n1[:, 1:].sum() == 0 and i1.sum() == 1  # one episode of H steps, all action 0
    n60, i60 = map(np.asarray, run(key, jnp.int32(60)))
    assert n60.sum() == 60 * 4 and i60.sum() == 60
    assert (n60.sum(-1) > 0).all()  # W = H everywhere at this size: random ties reach every pair
    n_direct, _ = jax.jit(lambda k: rf_express_code(mdp, k, jnp.int32(20), 20))(key)
    np.testing.assert_array_equal(np.asarray(run(key, jnp.int32(20))[0]), np.asarray(n_direct))


def test_policy_from_occupancy_realises_the_mixture_occupancy():
    """The Markov policy d_h(s, a) / d_h(s) of an average of occupancies has that average as its occupancy."""
    mdp = random_mdp(jax.random.key(5), 6, 3, 5)
    keys = jax.random.split(jax.random.key(6), 7)
    pis = [jax.nn.softmax(3 * jax.random.normal(k, (5, 6, 3)), -1) for k in keys]
    avg = sum(occupancy(mdp, p) for p in pis) / len(pis)
    np.testing.assert_allclose(np.asarray(occupancy(mdp, policy_from_occupancy(avg))), np.asarray(avg), atol=1e-6)


def test_ail_in_the_true_model_with_the_true_occupancy_recovers_the_expert():
    """With P_hat = P, rho_hat = rho and d_hat = d^{pi_E}, the mixture's occupancy error is the reward player's
    average regret, O(1/sqrt(T)), so the gap is a small fraction of H by T = 500; imitating the uniform policy's
    occupancy instead (the control) gives that policy's large gap."""
    S, A, H = 6, 3, 8
    run = jax.jit(ail_multiplicative_weights, static_argnums=6)
    for actions, seed in itertools.product((None, np.zeros(S - 1, int)), (0, 1)):
        mdp = reset_cliff(S, A, H, expert_actions=actions)
        pi_e = reset_cliff_expert(mdp)
        u = jax.random.uniform(jax.random.key(seed), (H, S, A))
        c0 = u / u.sum(-1, keepdims=True)
        gap = float(run(mdp, pi_e, mdp.P, mdp.rho, occupancy(mdp, pi_e), c0, 500))
        assert -1e-9 <= gap < 0.05 * H
        uniform = jnp.full((H, S, A), 1.0 / A)
        control = float(run(mdp, pi_e, mdp.P, mdp.rho, occupancy(mdp, uniform), c0, 500))
        assert control > 0.5 * H


def test_mb_tail_code_rejects_bad_settings_by_name():
    from ratelab.errors import RatelabError
    from rl_theory.mbtail_code import mb_tail_code

    mdp = reset_cliff(4, 2, 3)
    pi_e = reset_cliff_expert(mdp)
    es, ea = sample_trajectories(mdp, pi_e, jax.random.key(0), 4)
    key = jax.random.key(1)
    for kw, name in (({"bc_fraction": 1.5}, "bc_fraction"), ({"iterations": 0}, "iterations"),
                     ({"delta": 0.0}, "delta"), ({"episodes_max": 0}, "episodes_max")):
        args = {"episodes_max": 10, **kw}
        with pytest.raises(RatelabError, match=name):
            mb_tail_code(mdp, pi_e, es, ea, key, jnp.int32(10), args.pop("episodes_max"), **args)
    with pytest.raises(RatelabError, match="expert_actions"):
        mb_tail_code(mdp, pi_e, es, ea[:, :2], key, jnp.int32(10), 10)
