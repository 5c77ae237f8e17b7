"""Tabular MDPs and imitation learning: exact evaluation vs Monte Carlo, BC's closed form on Reset-Cliff, BC = expert
on seen states, vmapped == looped, NBCU / WBCU facts, and bad-input errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError
from rl_theory.imitation import (
    bc_death_rate_reset_cliff,
    bc_gap_given_unseen_reset_cliff,
    bc_gap_reset_cliff,
    bc_gap_study,
    bc_gaps,
    bc_step_gaps,
    behavior_cloning,
    counts,
    discriminator_weights,
    first_n_mask,
    mimic_md,
    mimic_objective,
    nbcu,
    nbcu_population_policy,
    stack_mdps,
    stack_trees,
    state_action_features,
    wbcu,
)
from rl_theory.tabular import (
    check_policy,
    expected_return,
    imitation_gap,
    lower_bound_rho,
    monte_carlo_return,
    occupancy,
    policy_values,
    random_mdp,
    reset_cliff,
    reset_cliff_expert,
    sample_trajectories,
    step_rewards,
    tabular_mdp,
    value_iteration,
)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _random_policy(seed, H, S, A):
    return jnp.asarray(np.random.default_rng(seed).dirichlet(np.ones(A), (H, S)))


def _np_return(P, r, rho, pi):
    """Reference: backward induction in plain NumPy."""
    P, r, rho, pi = (np.asarray(x, dtype=float) for x in (P, r, rho, pi))
    v = np.zeros(P.shape[0])
    for h in reversed(range(pi.shape[0])):
        v = np.sum(pi[h] * (r + P @ v), axis=-1)
    return float(rho @ v)


def _np_bc(states, actions, S, A):
    """Reference: count-based BC in plain NumPy (a Python loop over the data)."""
    n_traj, H = states.shape
    n = np.zeros((H, S, A))
    for i in range(n_traj):
        for h in range(H):
            n[h, states[i, h], actions[i, h]] += 1
    tot = n.sum(-1, keepdims=True)
    return np.where(tot > 0, n / np.maximum(tot, 1), 1.0 / A)


_sample = jax.jit(sample_trajectories, static_argnums=3)


def test_exact_return_matches_monte_carlo():
    mdp = random_mdp(jax.random.key(0), 6, 3, 7)
    pi = _random_policy(1, 7, 6, 3)
    exact = float(expected_return(mdp, pi))
    mean, se = jax.jit(monte_carlo_return, static_argnums=3)(mdp, pi, jax.random.key(2), 40_000)
    assert abs(float(mean) - exact) < 4 * float(se)
    assert float(se) < 0.02 * exact


def test_sampled_state_frequencies_match_occupancy():
    mdp = random_mdp(jax.random.key(3), 5, 2, 4)
    pi = _random_policy(4, 4, 5, 2)
    states, actions = _sample(mdp, pi, jax.random.key(5), 50_000)
    freq = jax.jit(counts, static_argnums=(3, 4))(states, actions, jnp.ones(50_000, bool), 5, 2) / 50_000
    d = jax.jit(occupancy)(mdp, pi)
    se = np.sqrt(np.asarray(d) * (1 - np.asarray(d)) / 50_000)
    assert np.all(np.abs(np.asarray(freq) - np.asarray(d)) < 5 * se + 1e-12)


def test_forward_occupancy_and_backward_induction_agree_for_every_truncated_horizon():
    mdp = random_mdp(jax.random.key(6), 5, 3, 9)
    pi = _random_policy(7, 9, 5, 3)
    per_step = np.asarray(jax.jit(step_rewards)(mdp, pi))
    assert per_step.sum() == pytest.approx(float(jax.jit(expected_return)(mdp, pi)), rel=1e-12)
    for h in range(1, 10):
        assert per_step[:h].sum() == pytest.approx(_np_return(mdp.P, mdp.r, mdp.rho, pi[:h]), rel=1e-12)


def test_value_iteration_satisfies_bellman_optimality_and_dominates():
    mdp = random_mdp(jax.random.key(8), 6, 3, 5)
    pi_star, v = jax.jit(value_iteration)(mdp)
    q = mdp.r[None] + jnp.einsum("sat,ht->hsa", mdp.P, v[1:])
    np.testing.assert_allclose(np.asarray(v[:-1]), np.asarray(q.max(-1)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jit(policy_values)(mdp, pi_star)), np.asarray(v), rtol=1e-12)
    for i in range(5):
        pi = _random_policy(10 + i, 5, 6, 3)
        assert _np_return(mdp.P, mdp.r, mdp.rho, pi) <= float(mdp.rho @ v[0]) + 1e-12


def test_reset_cliff_expert_earns_h_and_a_mistake_loses_the_rest():
    mdp = reset_cliff(5, 3, 6)
    pi_e = reset_cliff_expert(mdp)
    assert _np_return(mdp.P, mdp.r, mdp.rho, pi_e) == pytest.approx(6.0)
    # the default expert action differs by state: a_E(s) = s mod |A|
    np.testing.assert_array_equal(np.asarray(pi_e[0, :-1].argmax(-1)), np.arange(4) % 3)
    # a policy that errs only at step 2 on every good state earns exactly 2
    wrong = jax.nn.one_hot((np.arange(4) % 3 + 1) % 3, 3)
    pi = pi_e.at[2, :-1].set(wrong)
    assert float(jax.jit(imitation_gap)(mdp, pi_e, pi)) == pytest.approx(4.0)
    # without the cliff (every action resets) the same mistakes cost one reward each, never the rest
    no_cliff = reset_cliff(5, 3, 6, decoys=2)
    assert float(jax.jit(imitation_gap)(no_cliff, pi_e, pi)) == pytest.approx(1.0)


def test_bc_equals_expert_on_seen_states():
    mdp = random_mdp(jax.random.key(20), 8, 4, 6)
    pi_e, _ = jax.jit(value_iteration)(mdp)
    states, actions = _sample(mdp, pi_e, jax.random.key(21), 30)

    @jax.jit
    def fit(states, actions):
        mask = jnp.ones(30, bool)
        return counts(states, actions, mask, 8, 4), behavior_cloning(states, actions, mask, 8, 4)

    n, pi = fit(states, actions)
    seen = np.asarray(n.sum(-1) > 0)
    assert seen.sum() > 10 and (~seen).sum() > 0
    np.testing.assert_array_equal(np.asarray(pi)[seen], np.asarray(pi_e)[seen])
    np.testing.assert_allclose(np.asarray(pi)[~seen], 0.25)
    np.testing.assert_allclose(np.asarray(pi), _np_bc(np.asarray(states), np.asarray(actions), 8, 4))


def test_mask_selects_the_first_n_trajectories():
    mdp = random_mdp(jax.random.key(22), 5, 2, 4)
    pi = _random_policy(23, 4, 5, 2)
    states, actions = _sample(mdp, pi, jax.random.key(24), 16)
    a = counts(states, actions, first_n_mask(5, 16), 5, 2)
    b = _np_bc(np.asarray(states)[:5], np.asarray(actions)[:5], 5, 2)
    np.testing.assert_allclose(np.asarray(behavior_cloning(states, actions, first_n_mask(5, 16), 5, 2)), b)
    b = counts(states[:5], actions[:5], jnp.ones(5, bool), 5, 2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_closed_form_given_the_unseen_sets_is_exact():
    """For each sampled dataset: DP gap == H - sum_h prod_{k<=h} (1 - (1 - 1/A) rho(U_k))."""
    S, A, H, N = 7, 3, 10, 12
    mdp = reset_cliff(S, A, H, lower_bound_rho(S, N))
    pi_e = reset_cliff_expert(mdp)

    def one(key):
        states, actions = sample_trajectories(mdp, pi_e, key, N)
        mask = jnp.ones(N, bool)
        pi = behavior_cloning(states, actions, mask, S, A)
        unseen = counts(states, actions, mask, S, A).sum(-1) == 0
        return imitation_gap(mdp, pi_e, pi), bc_gap_given_unseen_reset_cliff(mdp.rho, unseen, A)

    dp, formula = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(100), 50))
    assert float(jnp.std(dp)) > 0.1
    np.testing.assert_allclose(np.asarray(dp), np.asarray(formula), atol=1e-12)


def test_closed_form_expectation_by_enumerating_unseen_patterns():
    """E over every unseen pattern (U_0, ..., U_{H-1}) with its exact probability == the closed form."""
    S, A, H, N = 4, 2, 2, 3
    rho = np.array([0.5, 0.3, 0.2, 0.0])
    good = S - 1
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=good * H):
        unseen = np.array(pattern, dtype=bool).reshape(H, good)
        p_unseen = (1 - rho[:good]) ** N
        prob = np.prod(np.where(unseen, p_unseen, 1 - p_unseen))
        u = np.concatenate([unseen, np.zeros((H, 1), bool)], axis=1)
        total += prob * float(bc_gap_given_unseen_reset_cliff(jnp.asarray(rho), jnp.asarray(u), A))
    assert total == pytest.approx(float(bc_gap_reset_cliff(rho, A, H, N)), rel=1e-12)


def test_monte_carlo_mean_of_bc_gap_matches_closed_form():
    S, A, H = 8, 4, 12
    ns = np.array([16, 64])
    mdps = stack_mdps([reset_cliff(S, A, H, lower_bound_rho(S, int(n))) for n in ns])
    pi_e = reset_cliff_expert(reset_cliff(S, A, H))
    keys = jax.random.split(jax.random.key(7), 3000)
    gaps = np.asarray(jax.jit(bc_gap_study, static_argnums=4)(mdps, pi_e, jnp.asarray(ns), keys, 64))
    for j, n in enumerate(ns):
        closed = bc_gap_reset_cliff(lower_bound_rho(S, int(n)), A, H, int(n))
        se = gaps[:, j].std(ddof=1) / np.sqrt(gaps.shape[0])
        assert abs(gaps[:, j].mean() - closed) < 4 * se


@pytest.mark.parametrize("decoys", [1, 2])
def test_closed_form_with_decoys_matches_monte_carlo(decoys):
    """Decoy actions reset like the expert's: the gap H - (1 - m) sum_{j<H} (1 - m_c)^j, m_c = m (A-1-decoys)/(A-1);
    with no cliff left (decoys = A - 1) it is m H exactly, linear in H."""
    S, A, H, N = 7, 3, 10, 16
    rho = lower_bound_rho(S, N)
    mdp = reset_cliff(S, A, H, rho, expert_actions=np.random.default_rng(decoys).integers(0, A, S - 1),
                      decoys=decoys)
    pi_e = reset_cliff_expert(mdp)
    keys = jax.random.split(jax.random.key(8), 4000)
    per_step = np.asarray(jax.jit(bc_step_gaps, static_argnums=2)(mdp, pi_e, N, keys))
    for h in (3, H):
        g = per_step[:, :h].sum(-1)
        closed = float(bc_gap_reset_cliff(rho, A, h, N, decoys))
        assert abs(g.mean() - closed) < 4 * g.std(ddof=1) / np.sqrt(g.size), (h, g.mean(), closed)
    if decoys == A - 1:
        m = float(bc_death_rate_reset_cliff(rho, A, N))
        assert float(bc_gap_reset_cliff(rho, A, H, N, decoys)) == pytest.approx(m * H, rel=1e-12)
    assert float(bc_gap_reset_cliff(rho, A, H, N, 0)) == pytest.approx(
        H - float(sum((1 - bc_death_rate_reset_cliff(rho, A, N)) ** j for j in range(1, H + 1))), rel=1e-12)


def test_concrete_ns_draw_only_the_needed_trajectories_with_the_same_gaps():
    """bc_gaps with static ns (sum_j N_j rollouts) == with traced ns (a max-N buffer per N, masked); the pooled BC
    sees H times more samples per state and lies below the paper's BC."""
    S, A, H = 6, 3, 5
    ns = (8, 16, 32)
    mdps = stack_mdps([reset_cliff(S, A, H, lower_bound_rho(S, n)) for n in ns])
    pi_e = reset_cliff_expert(reset_cliff(S, A, H))
    keys = jax.random.split(jax.random.key(9), 6)
    static = jax.jit(lambda m, k: bc_gaps(m, pi_e, ns, k, 32, 0, ("bc", "pooled")))(mdps, keys)
    traced = jax.jit(lambda m, n, k: bc_gaps(m, pi_e, n, k, 32, 0, ("bc", "pooled")))(mdps, jnp.asarray(ns), keys)
    for name in ("bc", "pooled"):
        np.testing.assert_allclose(np.asarray(static[name]), np.asarray(traced[name]), atol=1e-12)
    assert np.all(np.asarray(static["pooled"]) <= np.asarray(static["bc"]) + 1e-12)
    assert float(np.asarray(static["bc"]).mean()) > 0


def test_closed_form_limits():
    """m H << 1: gap ~ m H (H + 1) / 2; the lower-bound rho gives m ~ (1 - 1/A)(|S| - 2) / (e N)."""
    S, A, N = 12, 5, 100_000
    rho = lower_bound_rho(S, N)
    m = float(bc_death_rate_reset_cliff(rho, A, N))
    assert m == pytest.approx((1 - 1 / A) * (S - 2) / (np.e * N), rel=1e-3)
    H = 20
    assert float(bc_gap_reset_cliff(rho, A, H, N)) == pytest.approx(m * H * (H + 1) / 2, rel=1e-3)
    assert float(bc_gap_reset_cliff(rho, A, 1, N)) == pytest.approx(m, rel=1e-12)


def test_vmapped_over_n_equals_looped():
    """The vmapped (seeds x N, max-N buffer + mask) study == a loop over seeds and N with a NumPy BC and NumPy
    backward induction on the first N trajectories of the same buffers."""
    S, A, H = 6, 3, 5
    ns = np.array([8, 16, 32])
    mdp_list = [reset_cliff(S, A, H, lower_bound_rho(S, int(n))) for n in ns]
    pi_e = reset_cliff_expert(mdp_list[0])
    keys = jax.random.split(jax.random.key(9), 4)
    both = np.asarray(jax.jit(bc_gap_study, static_argnums=4)(stack_mdps(mdp_list), pi_e, jnp.asarray(ns), keys, 32))
    for i, key in enumerate(keys):
        for j, (n, mdp) in enumerate(zip(ns, mdp_list, strict=True)):
            states, actions = _sample(mdp, pi_e, jax.random.fold_in(key, j), 32)
            pi = _np_bc(np.asarray(states)[:n], np.asarray(actions)[:n], S, A)
            looped = _np_return(mdp.P, mdp.r, mdp.rho, pi_e) - _np_return(mdp.P, mdp.r, mdp.rho, pi)
            assert both[i, j] == pytest.approx(looped, abs=1e-12)


def test_step_gaps_sum_to_the_horizon_h_gap():
    S, A, H, N = 6, 3, 8, 20
    mdp = reset_cliff(S, A, H, lower_bound_rho(S, N))
    pi_e = reset_cliff_expert(mdp)
    keys = jax.random.split(jax.random.key(11), 3)
    per_step = np.asarray(jax.jit(bc_step_gaps, static_argnums=2)(mdp, pi_e, N, keys))
    states, actions = _sample(mdp, pi_e, keys[1], N)
    for h in (3, 8):
        pi = _np_bc(np.asarray(states)[:, :h], np.asarray(actions)[:, :h], S, A)
        ref = _np_return(mdp.P, mdp.r, mdp.rho, pi_e[:h]) - _np_return(mdp.P, mdp.r, mdp.rho, pi)
        assert per_step[1, :h].sum() == pytest.approx(ref, abs=1e-12)


def test_discriminator_weights_reach_the_density_ratio():
    """Tabular features, no penalty: the optimum of the logistic loss is c = p_E / (p_E + p_U), so w = p_E / p_U."""
    rng = np.random.default_rng(0)
    n_e = jnp.asarray(rng.integers(1, 20, (3, 2)).astype(float))
    n_u = n_e + jnp.asarray(rng.integers(1, 20, (3, 2)).astype(float))
    w = jax.jit(lambda a, b: discriminator_weights(a, b, state_action_features(3, 2, "tabular"), l2=0.0,
                                                   steps=3000, learning_rate=0.05))(n_e, n_u)
    ratio = (n_e / n_e.sum()) / (n_u / n_u.sum())
    np.testing.assert_allclose(np.asarray(w), np.asarray(ratio), rtol=1e-3)


def test_wbcu_with_the_optimal_discriminator_is_no_worse_than_bc_on_a_state_dependent_expert():
    """Expert actions drawn per state, a uniform-noise D_S: the discriminator's optimum (w = p_E / p_U, 0 off D_E's
    support) leaves only expert actions with weight, so WBCU plays the expert wherever BC does and its gap is at most
    BC's, dataset by dataset; the trained discriminator with tabular features and an L2 penalty gets there only
    approximately (weights exp(theta . phi) > 0 off the support)."""
    from rl_theory.imitation import density_ratio_weights
    from rl_theory.tabular import rollout

    S, A, H, NE, NS = 6, 3, 6, 6, 40
    mdp = reset_cliff(S, A, H, expert_actions=np.random.default_rng(4).integers(0, A, S - 1))
    pi_e = reset_cliff_expert(mdp)
    noise = jnp.full_like(pi_e, 1.0 / A)

    @jax.jit
    def gaps(key):
        ke, ks = jax.random.split(key)
        es, ea = sample_trajectories(mdp, pi_e, ke, NE)
        ss, sa, _ = jax.vmap(lambda k: rollout(mdp, noise, k))(jax.random.split(ks, NS))
        full_e, full_s = jnp.ones(NE, bool), jnp.ones(NS, bool)
        pi_w = wbcu(es, ea, full_e, ss, sa, full_s, S, A)
        n_e = counts(es, ea, full_e, S, A).sum(0)
        w = density_ratio_weights(n_e, n_e + counts(ss, sa, full_s, S, A).sum(0))
        return (imitation_gap(mdp, pi_e, pi_w), imitation_gap(mdp, pi_e, behavior_cloning(es, ea, full_e, S, A)),
                imitation_gap(mdp, pi_e, nbcu(es, ea, full_e, ss, sa, full_s, S, A)), w, n_e)

    g_w, g_bc, g_n, w, n_e = (np.asarray(x) for x in jax.vmap(gaps)(jax.random.split(jax.random.key(5), 20)))
    assert np.all(g_w <= g_bc + 1e-12) and g_bc.mean() > 0.05
    assert g_n.mean() > g_bc.mean() + 1.0  # NBCU imitates the noise
    np.testing.assert_array_equal(w > 0, n_e > 0)


def test_nbcu_and_wbcu_reduce_to_bc():
    """D_S all expert: NBCU = BC on D_E u D_S. D_S empty: WBCU = BC on D_E (deterministic expert: each seen state
    has one action, whatever its weight)."""
    S, A, H = 6, 3, 5
    mdp = reset_cliff(S, A, H)
    pi_e = reset_cliff_expert(mdp)
    st, ac = _sample(mdp, pi_e, jax.random.key(30), 12)
    full = jnp.ones(12, bool)
    first, rest = first_n_mask(4, 12), ~first_n_mask(4, 12)
    pi_n = nbcu(st, ac, first, st, ac, rest, S, A)
    np.testing.assert_allclose(np.asarray(pi_n), np.asarray(behavior_cloning(st, ac, full, S, A)))
    phi = state_action_features(S, A)
    pi_w = jax.jit(lambda s, a: wbcu(s, a, first, s, a, jnp.zeros(12, bool), S, A, phi))(st, ac)
    np.testing.assert_allclose(np.asarray(pi_w), np.asarray(behavior_cloning(st, ac, first, S, A)), atol=1e-12)


def test_nbcu_limit_policy_is_the_expert_at_q_one_and_imitates_the_mixture_below():
    S, A, H = 5, 3, 6
    mdp = reset_cliff(S, A, H)
    pi_e = reset_cliff_expert(mdp)
    pi_noise = jnp.full_like(pi_e, 1.0 / A)
    f = jax.jit(lambda q: imitation_gap(mdp, pi_e, nbcu_population_policy(mdp, pi_e, pi_noise, q, 10, 90)))
    assert float(f(1.0)) == pytest.approx(0.0, abs=1e-12)
    # at step 0 the union's action frequencies are (10 + 90 q) expert : 90 (1 - q) uniform
    pi0 = nbcu_population_policy(mdp, pi_e, pi_noise, 0.0, 10, 90)[0, 0]
    np.testing.assert_allclose(np.asarray(pi0), [(10 + 30) / 100, 0.3, 0.3])
    assert float(f(0.0)) > float(f(0.5)) > 0


def _mimic_case(decoys, seed, S=6, A=3, H=6, N=24):
    ae = np.random.default_rng(seed).integers(0, A, S - 1)
    mdp = reset_cliff(S, A, H, lower_bound_rho(S, N), expert_actions=ae, decoys=decoys)
    pi_e = reset_cliff_expert(mdp)
    states, actions = (np.asarray(x) for x in _sample(mdp, pi_e, jax.random.key(seed), N))
    return mdp, pi_e, states, actions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mimic_md_solves_its_program_and_copies_d1(seed):
    """MIMIC-MD's policy copies the expert on D1-visited (t, s) and its loss is no larger than that of any other
    policy of Pi_mimic(D1): the expert itself and random completions."""
    mdp, pi_e, states, actions = _mimic_case(1, seed)
    P, rho = np.asarray(mdp.P), np.asarray(mdp.rho)
    pi = mimic_md(P, rho, states, actions)
    n1 = states.shape[0] // 2
    seen = np.zeros(pi.shape[:2], bool)
    seen[np.broadcast_to(np.arange(pi.shape[0]), states[:n1].shape), states[:n1]] = True
    np.testing.assert_array_equal(pi[seen], np.asarray(pi_e)[seen])
    best = mimic_objective(P, rho, states, actions, pi)
    assert best <= mimic_objective(P, rho, states, actions, pi_e) + 1e-9
    rng = np.random.default_rng(seed)
    for _ in range(10):
        other = rng.dirichlet(np.ones(pi.shape[-1]), pi.shape[:2])
        other[seen] = pi[seen]
        assert best <= mimic_objective(P, rho, states, actions, other) + 1e-9


def test_mimic_md_with_known_transitions_never_falls_off_the_cliff():
    """Plain Reset-Cliff: a cliff action adds mass to the bad state, which D2 never shows, so before the last step
    MIMIC-MD plays only the expert's action and loses nothing (BC, on the same data, does lose)."""
    mdp, pi_e, states, actions = _mimic_case(0, 5, H=8, N=16)
    pi = mimic_md(np.asarray(mdp.P), np.asarray(mdp.rho), states, actions)
    per_step = np.asarray(jax.jit(step_rewards)(mdp, pi_e) - jax.jit(step_rewards)(mdp, jnp.asarray(pi)))
    np.testing.assert_allclose(per_step[:-1], 0.0, atol=1e-12)
    bc = behavior_cloning(jnp.asarray(states), jnp.asarray(actions), jnp.ones(16, bool), 6, 3)
    assert float(jax.jit(imitation_gap)(mdp, pi_e, bc)) > 0.01


def test_float64_data_is_never_rounded_silently():
    """Outside x64 mode a float64 P / rho that float32 cannot hold raises instead of being rounded (main rounded it
    without a word); inside x64 mode it is kept; Python lists take the default float."""
    P = np.full((3, 2, 3), 1 / 3)
    with jax.enable_x64(False):
        with pytest.raises(RatelabError, match="x64"):
            tabular_mdp(P, np.zeros((3, 2)), np.ones(3) / 3, 4)
        with pytest.raises(RatelabError, match="x64"):
            reset_cliff(4, 2, 3, rho=lower_bound_rho(4, 6))
        assert tabular_mdp(P, np.zeros((3, 2)), np.ones(3) / 3, 4, dtype=jnp.float32).P.dtype == jnp.float32
        assert reset_cliff(4, 2, 3).P.dtype == jnp.float32
    mdp = tabular_mdp(P, np.zeros((3, 2)), np.ones(3) / 3, 4)
    assert mdp.P.dtype == jnp.float64 and float(mdp.P[0, 0, 0]) == 1 / 3


def test_bad_input_errors():
    with pytest.raises(RatelabError, match="n_states"):
        reset_cliff(1, 2, 3)
    with pytest.raises(RatelabError, match="n_actions"):
        reset_cliff(4, 1, 3)
    with pytest.raises(RatelabError, match="horizon"):
        reset_cliff(4, 2, 0)
    with pytest.raises(RatelabError, match="rho"):
        reset_cliff(4, 2, 3, rho=[0.5, 0.2, 0.2, 0.1])
    with pytest.raises(RatelabError, match="n_trajectories"):
        lower_bound_rho(10, 5)
    with pytest.raises(RatelabError, match="P must"):
        tabular_mdp(np.ones((3, 2, 3)), np.zeros((3, 2)), np.ones(3) / 3, 4)
    with pytest.raises(RatelabError, match="r must"):
        tabular_mdp(np.ones((3, 2, 3)) / 3, np.zeros((2, 3)), np.ones(3) / 3, 4)
    mdp = reset_cliff(4, 2, 3)
    with pytest.raises(RatelabError, match=r"pi must have shape"):
        check_policy("pi", np.ones((2, 4, 2)) / 2, mdp)
    with pytest.raises(RatelabError, match="probability"):
        check_policy("pi", np.ones((3, 4, 2)), mdp)
    with pytest.raises(RatelabError, match="n must"):
        bc_gap_reset_cliff(lower_bound_rho(4, 4), 2, 3, 0)
    with pytest.raises(RatelabError, match="horizon"):
        bc_gap_reset_cliff(lower_bound_rho(4, 4), 2, 0, 4)
    with pytest.raises(RatelabError, match="kind"):
        state_action_features(3, 2, "linear")
    with pytest.raises(RatelabError, match="N >= 2"):
        mimic_md(np.asarray(mdp.P), np.asarray(mdp.rho), np.zeros((1, 3), int), np.zeros((1, 3), int))
    with pytest.raises(RatelabError, match="decoys"):
        reset_cliff(4, 3, 3, decoys=3)
    with pytest.raises(RatelabError, match="decoys"):
        bc_gap_reset_cliff(lower_bound_rho(4, 4), 3, 3, 4, decoys=3)
    with pytest.raises(RatelabError, match="expert_actions"):
        reset_cliff(4, 3, 3, expert_actions=[0, 3, 1])
    with pytest.raises(RatelabError, match="l2"):
        discriminator_weights(jnp.ones((2, 2)), jnp.ones((2, 2)), state_action_features(2, 2), l2=-1.0)


def test_experiment_configs_are_validated():
    from ratelab.registry import get

    exp = get("il-bc-n")
    with pytest.raises(RatelabError, match="power of two"):
        exp.validate(exp.config("quick", {"n_max": 1000}))
    with pytest.raises(RatelabError, match="n_states"):
        exp.validate(exp.config("quick", {"n_states": 2}))
    exp.validate(exp.config("quick"))
    exp.validate(exp.config("full"))
    bcu = get("il-bcu")
    with pytest.raises(RatelabError, match="q_max"):
        bcu.validate(bcu.config("quick", {"q_max": 1.0}))
    bcu.validate(bcu.config("full"))


# ------------------------------------------------------------------------------------------ MB-TAIL and OAL


def _np_rf_express_w(n, delta):
    """Reference: Menard et al. (2021)'s W recursion in NumPy, a Python loop over h, s, a (per-step counts)."""
    H, S, A, _ = n.shape
    w = np.zeros((H + 1, S, A))
    for h in reversed(range(H)):
        for s in range(S):
            for a in range(A):
                tot = n[h, s, a].sum()
                if tot == 0:
                    w[h, s, a] = H
                    continue
                beta = np.log(3 * S * A * H / delta) + S * np.log(8 * np.e * (tot + 1))
                nxt = n[h, s, a] / tot @ w[h + 1].max(-1)
                w[h, s, a] = min(H, 15 * H**2 * beta / tot + (1 + 1 / H) * nxt)
    return w[:H]


def test_empirical_model_and_rf_express_bonus():
    from rl_theory.mbtail import empirical_model, rf_express_bonus

    rng = np.random.default_rng(0)
    n = rng.integers(0, 5, (4, 2, 4)).astype(float)
    n[1, 0] = 0.0
    p = np.asarray(empirical_model(jnp.asarray(n)))
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[1, 0], 0.25)
    H, delta = 5, 0.1
    n_h = rng.integers(0, 3, (H, 4, 2, 4)).astype(float)
    n_h[:, 1, 0] = 0.0
    bonus = jax.jit(rf_express_bonus, static_argnums=1)
    w = np.asarray(bonus(jnp.asarray(n_h), delta))
    assert w.shape == (H, 4, 2) and np.all(w <= H) and np.all(w[:, 1, 0] == H)
    np.testing.assert_allclose(w, _np_rf_express_w(n_h, delta), rtol=1e-12)
    # with many visits the bonus drops below H (the clipping stops binding) and more data never raises it
    w_more = np.asarray(bonus(jnp.asarray(1e7 * n_h), delta))
    np.testing.assert_allclose(w_more, _np_rf_express_w(1e7 * n_h, delta), rtol=1e-12)
    assert np.all(w_more <= w + 1e-12) and w_more[-1][n_h[-1].sum(-1) > 0].max() < H
    # one time-homogeneous table is the same table at every step
    n_s = n_h[0]
    w_hom = np.asarray(jax.jit(rf_express_bonus, static_argnums=(1, 2, 3))(jnp.asarray(n_s), delta, 1e-8, H))
    w_rep = np.asarray(jax.jit(rf_express_bonus, static_argnums=(1, 2))(jnp.asarray(np.broadcast_to(n_s, n_h.shape)),
                                                                   delta, 1e-8))
    np.testing.assert_array_equal(w_hom, w_rep)
    with pytest.raises(RatelabError, match="horizon"):
        rf_express_bonus(jnp.asarray(n_s), delta)


def test_rf_express_explores_every_reachable_pair():
    """A state-dependent expert (a_E(s) = s mod |A|): RF-Express's exploration (W = H everywhere at this sample size,
    ties broken at random) tries every action of every good state and reaches the bad state; on main its argmax
    broke every tie to action 0 and never tried the other actions."""
    from rl_theory.mbtail import rf_express

    mdp = reset_cliff(5, 3, 4)
    n_sas = np.asarray(jax.jit(lambda k: rf_express(mdp, k, jnp.int32(60), 60))(jax.random.key(3)))
    tried = n_sas.sum(-1) > 0
    assert tried.all(), tried
    # ties are broken at random: the actions tried at step 0 are spread over all three
    assert n_sas.sum(-1)[:-1].min() >= 3


def test_tail_estimator_is_unbiased_for_the_expert_occupancy():
    """E d_hat = d^{pi_E}: BC(D1) is the expert on D1's states (deterministic expert) and D2 is unbiased."""
    from rl_theory.mbtail import tail_estimator

    S, A, H, N = 5, 3, 4, 6
    mdp = random_mdp(jax.random.key(40), S, A, H)
    pi_e, _ = jax.jit(value_iteration)(mdp)

    def one(key):
        k1, k2 = jax.random.split(key)
        st, ac = sample_trajectories(mdp, pi_e, k1, N)
        return tail_estimator(mdp, st, ac, k2, 20, 20)[0]

    d = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(41), 4000)))
    target = np.asarray(jax.jit(occupancy)(mdp, pi_e))
    se = d.std(0, ddof=1) / np.sqrt(d.shape[0])
    assert np.all(np.abs(d.mean(0) - target) < 5 * se + 1e-9)


def test_ail_in_the_true_model_with_the_true_occupancy_recovers_the_expert():
    from rl_theory.mbtail import ail_in_model, mixture_gap

    mdp = reset_cliff(5, 3, 6)
    pi_e = reset_cliff_expert(mdp)
    d_e = occupancy(mdp, pi_e)

    @jax.jit
    def gap(eta):
        pis = ail_in_model(mdp, mdp.P, d_e, 100, eta)
        return mixture_gap(mdp, pi_e, pis), jnp.mean(jax.vmap(lambda p: imitation_gap(mdp, pi_e, p))(pis))

    g, avg = gap(0.5)
    assert float(g) == pytest.approx(float(avg), abs=1e-12)
    assert float(g) < 0.05 * 6


@pytest.mark.slow  # compiles MB-TAIL and OAL four times (about a minute on 2 busy cores)
def test_masked_budgets_equal_direct_runs():
    """vmapped over budgets (masked up to K_max) == each budget run on its own."""
    from rl_theory.mbtail import mb_tail, oal

    mdp = reset_cliff(4, 3, 4)
    pi_e = reset_cliff_expert(mdp)
    es, ea = _sample(mdp, pi_e, jax.random.key(50), 4)
    key = jax.random.key(51)
    budgets = jnp.array([8, 16])
    f_m = jax.jit(lambda b: mb_tail(mdp, pi_e, es, ea, key, b, 16, iterations=20))
    f_o = jax.jit(lambda b: oal(mdp, pi_e, es, ea, key, b, 16))
    masked_m, masked_o = np.asarray(jax.vmap(f_m)(budgets)), np.asarray(jax.vmap(f_o)(budgets))
    direct_m = float(jax.jit(lambda: mb_tail(mdp, pi_e, es, ea, key, jnp.int32(8), 8, iterations=20))())
    direct_o = float(jax.jit(lambda: oal(mdp, pi_e, es, ea, key, jnp.int32(8), 8))())
    assert masked_m[0] == pytest.approx(direct_m, abs=1e-12)
    assert masked_o[0] == pytest.approx(direct_o, abs=1e-12)
    assert masked_m[1] == pytest.approx(float(f_m(jnp.int32(16))), abs=1e-12)


def test_stack_trees_on_the_host_equals_jnp_stack_and_traces_inside_jit():
    trees = [{"p": jnp.full((3, 2), float(i)), "n": jnp.arange(4, dtype=jnp.int32) + i} for i in range(5)]
    for axis in (0, 1):
        got = stack_trees(trees, axis=axis)
        want = jax.tree.map(lambda *x, a=axis: jnp.stack(x, axis=a), *trees)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            assert np.array_equal(got[k], want[k])
    traced = jax.jit(lambda ts: stack_trees(ts, axis=1))(trees)  # tracers: stacked with jnp.stack
    assert np.array_equal(traced["p"], stack_trees(trees, axis=1)["p"])
