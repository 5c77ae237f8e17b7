"""AIHF on tabular toys: the soft Bellman fixed point and its implicit derivatives, the Bradley-Terry gradient, the
demonstrations' gradient and Fisher information, the true reward as a fixed point of the joint population
likelihood, the exactness of the fit, the soft suboptimality's closed form on a bandit, and bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import block_diag

from alignment.aihf import (
    Data,
    bt_grad,
    bt_loglik,
    check_study,
    demo_counts,
    demo_grad_fisher,
    demo_loglik,
    fit_reward,
    joint_loss,
    make_instance,
    np_soft_policy,
    occupancy,
    policy_value,
    sample_data,
    soft_log_policy,
    soft_q,
    soft_suboptimality,
    soft_value_iteration,
    split_weights,
)
from ratelab import RatelabError

S, A, GAMMA, BETA, ITERS = 5, 3, 0.7, 0.8, 100


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _mdp(seed=0, kind="mdp"):
    inst = make_instance(np.random.default_rng(seed), S, A, kind)
    return inst, jnp.asarray(inst.P), jnp.asarray(inst.r)


def _population(inst, gamma, r_demo=None, r_pref=None, segment=3, n_pairs=400, seed=1):
    """Infinite-data stand-ins: every (s, a) weighted by d(s) pi*(a|s) (d the expert's occupancy), and a fixed set of
    segment pairs with soft labels sigma(<r, c>) (their population label probabilities)."""
    r_demo = inst.r if r_demo is None else r_demo
    r_pref = inst.r if r_pref is None else r_pref
    pi = np_soft_policy(inst.P, r_demo, gamma, BETA, ITERS)
    d = occupancy(inst.P, pi, inst.rho, gamma)
    st, ac = np.divmod(np.arange(S * A), A)
    _, _, diffs, _ = sample_data(np.random.default_rng(seed), inst, n_pairs, gamma, BETA, segment, ITERS)
    labels = 1.0 / (1.0 + np.exp(-(diffs @ r_pref.reshape(-1))))
    return Data(jnp.asarray(st), jnp.asarray(ac), jnp.asarray((d[:, None] * pi).reshape(-1)), jnp.asarray(diffs),
                jnp.asarray(labels), jnp.full(n_pairs, 1.0 / n_pairs))


def test_soft_q_is_the_soft_bellman_fixed_point_and_the_bandit_softmax():
    inst, P, r = _mdp()

    @jax.jit
    def f(P, r, gamma, shift):
        q, v = soft_value_iteration(P, r, gamma, BETA, ITERS)
        lp = soft_log_policy(P, r + shift, gamma, BETA, ITERS)
        return q, v, r + gamma * jnp.einsum("sat,t->sa", P, v), lp

    q, v, backup, lp = f(P, r, GAMMA, 0.0)
    assert np.allclose(q, backup, atol=1e-12)
    assert np.allclose(v, BETA * jax.scipy.special.logsumexp(q / BETA, axis=-1), atol=1e-12)
    assert np.allclose(np.exp(lp), np_soft_policy(inst.P, inst.r, GAMMA, BETA, ITERS), atol=1e-12)
    # gamma = 0: the bandit's softmax(r / beta), invariant to a per-context offset
    shift = jnp.arange(S, dtype=r.dtype)[:, None]
    assert np.allclose(f(P, r, 0.0, shift)[3], jax.nn.log_softmax(np.asarray(r) / BETA, axis=-1), atol=1e-12)


def test_implicit_derivatives_of_soft_q_match_finite_differences_in_every_argument():
    _, P, r = _mdp(2)
    rng = np.random.default_rng(0)
    dP, dr = jnp.asarray(rng.normal(size=P.shape)), jnp.asarray(rng.normal(size=r.shape))
    h = 1e-6

    @jax.jit
    def check(P, r, g, b):
        f = lambda P, r, g, b: jnp.sum(jnp.sin(soft_q(P, r, g, b, ITERS)))  # noqa: E731
        grads = jax.grad(f, argnums=(0, 1, 2, 3))(P, r, g, b)
        fd = (f(P + h * dP, r + h * dr, g + h, b + h) - f(P - h * dP, r - h * dr, g - h, b - h)) / (2 * h)
        return jnp.sum(grads[0] * dP) + jnp.sum(grads[1] * dr) + grads[2] + grads[3], fd

    analytic, fd = check(P, r, GAMMA, BETA)
    assert np.isclose(analytic, fd, rtol=1e-6)


def test_bradley_terry_gradient_matches_jax_grad():
    rng = np.random.default_rng(3)
    theta = jnp.asarray(rng.normal(size=(S, A)))
    diffs = jnp.asarray(rng.integers(-2, 3, size=(40, S * A)).astype(float))
    labels, weight = jnp.asarray(rng.random(40)), jnp.asarray(rng.random(40))
    auto, closed = jax.jit(lambda *a: (jax.grad(bt_loglik)(*a), bt_grad(*a)))(theta, diffs, labels, weight)
    assert np.allclose(closed, auto, atol=1e-12)
    # offset invariance: segments of equal length have count differences summing to 0
    _, _, d, _ = sample_data(rng, make_instance(rng, S, A, "mdp"), 30, GAMMA, BETA, 3, ITERS)
    assert np.allclose(d.sum(1), 0.0)


def test_demo_gradient_and_fisher_are_exact():
    inst, P, _ = _mdp(4)
    rng = np.random.default_rng(5)
    theta = jnp.asarray(rng.normal(size=(S, A)))
    st, ac, *_ = sample_data(rng, inst, 50, GAMMA, BETA, 3, ITERS)
    w = jnp.asarray(rng.random(50))
    data = Data(jnp.asarray(st), jnp.asarray(ac), w, None, None, None)
    counts = demo_counts(data, S, A)

    @jax.jit
    def f(theta, gamma):
        L = lambda t: demo_loglik(soft_log_policy(P, t, gamma, BETA, ITERS), data.states, data.actions, w)  # noqa
        return (*demo_grad_fisher(theta, counts, P, gamma, BETA, ITERS), jax.grad(L)(theta))

    for gamma in (GAMMA, 0.0):
        grad, fisher, auto = f(theta, gamma)
        assert np.allclose(grad, auto, atol=1e-10)
        assert np.all(np.linalg.eigvalsh(fisher) > -1e-10)
    # gamma = 0: F = sum_s n_s (diag pi_s - pi_s pi_s^T) / beta^2 on the block of state s (the exact negative Hessian)
    pi0 = jax.nn.softmax(np.asarray(theta) / BETA, axis=-1)
    n_s = np.asarray(counts).sum(1)
    blocks = [n_s[s] * (np.diag(pi0[s]) - np.outer(pi0[s], pi0[s])) / BETA**2 for s in range(S)]
    assert np.allclose(fisher, block_diag(*blocks), atol=1e-12)


def test_true_reward_is_a_fixed_point_of_the_joint_population_likelihood():
    weights = jnp.asarray([(1.0, 1.0), (0.3, 2.0), (1.0, 0.0), (0.0, 1.0)])

    @jax.jit
    def grads(theta, pop, P, gamma):
        return jax.vmap(lambda wd, wp: jax.grad(joint_loss)(theta, pop, P, gamma, BETA, ITERS, wd, wp, 0.0))(
            weights[:, 0], weights[:, 1])

    for kind, gamma in (("bandit", 0.0), ("mdp", GAMMA)):
        inst, P, r = _mdp(6, kind)
        pop = _population(inst, gamma, segment=1 if kind == "bandit" else 3)
        bent = r + 0.3 * jnp.asarray(np.random.default_rng(0).normal(size=r.shape))
        # zero at r* and at r* + a constant offset, for every weighting (and each source alone) ...
        assert np.max(np.abs(grads(r, pop, P, gamma))) < 1e-9
        assert np.max(np.abs(grads(r + 1.7, pop, P, gamma))) < 1e-9
        # ... and not at a generic perturbation
        assert np.all(np.max(np.abs(grads(bent, pop, P, gamma)), axis=(1, 2)) > 1e-3)


def test_fit_recovers_the_soft_optimal_policy_on_population_data_and_misaligned_demos_bias_it():
    inst, P, r = _mdp(7)
    fit = jax.jit(lambda d: fit_reward(d, P, GAMMA, BETA, ITERS, 1.0, 1.0, 1e-9, 20)[1])
    pi_star = np_soft_policy(inst.P, inst.r, GAMMA, BETA, ITERS)
    q = fit(_population(inst, GAMMA))
    assert np.allclose(jax.nn.softmax(np.asarray(q) / BETA, axis=-1), pi_star, atol=1e-6)
    # demonstrations of another reward pull the joint optimum away from pi*
    q_bad = fit(_population(inst, GAMMA, r_demo=inst.r_other))
    assert np.max(np.abs(jax.nn.softmax(np.asarray(q_bad) / BETA, axis=-1) - pi_star)) > 0.05


def test_soft_suboptimality_is_nonnegative_zero_at_the_optimum_and_a_kl_on_bandits():
    inst, P, r = _mdp(8)
    rho = jnp.asarray(inst.rho)
    rng = np.random.default_rng(9)
    lps = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(5, S, A))), axis=-1)

    @jax.jit
    def f(lps, gamma):
        lp_star = soft_log_policy(P, r, gamma, BETA, ITERS)
        sub = jax.vmap(lambda lp: soft_suboptimality(P, r, rho, lp, gamma, BETA, ITERS))
        v = jax.vmap(lambda lp: policy_value(P, r, jnp.exp(lp), gamma, BETA))(lps)
        return sub(lp_star[None])[0], sub(lps), v

    at_star, subs, v = f(lps, GAMMA)
    assert abs(at_star) < 1e-10 and np.all(subs > 0)
    # exact policy evaluation: V = r_pi - beta h(pi) + gamma P_pi V
    pis = np.exp(lps)
    rhs = np.sum(pis * (np.asarray(r) - BETA * lps), -1) + GAMMA * np.einsum("nsa,sat,nt->ns", pis, inst.P, v)
    assert np.allclose(v, rhs, atol=1e-12)
    # gamma = 0: beta E_rho KL(pi || softmax(r / beta))
    kl = np.sum(pis * (lps - jax.nn.log_softmax(np.asarray(r) / BETA, axis=-1)), axis=-1)
    assert np.allclose(f(lps, 0.0)[1], BETA * kl @ inst.rho, rtol=1e-10)


def test_split_weights_share_the_budget_and_bad_inputs_raise():
    wd, wp = split_weights(10, np.array([0.25, 0.5, 0.75]), 8)
    assert wd.sum(1).tolist() == [2, 4, 6] and (wd.sum(1) + wp.sum(1)).tolist() == [8, 8, 8]
    with pytest.raises(RatelabError, match="budget"):
        split_weights(10, np.array([0.5]), 11)
    with pytest.raises(RatelabError, match="fraction"):
        split_weights(10, np.array([1.5]), 8)
    with pytest.raises(RatelabError, match="n_states \\* n_actions"):
        check_study(6, 3, 0.5, 1.0)
    with pytest.raises(RatelabError, match="gamma"):
        check_study(5, 3, 1.0, 1.0)
    with pytest.raises(RatelabError, match="n_actions"):
        check_study(5, 1, 0.5, 1.0)
    with pytest.raises(RatelabError, match="kind"):
        make_instance(np.random.default_rng(0), 3, 2, "pomdp")
    with pytest.raises(RatelabError, match="iters"):
        soft_value_iteration(np.ones((2, 2, 2)) / 2, np.zeros((2, 2)), 0.5, 1.0, 0)
