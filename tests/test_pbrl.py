"""PBRL and tabular entropy-regularised MDPs: exact evaluation vs Monte Carlo, soft Bellman fixed points, the
penalties' zeros and gradients (Danskin), occupancy identities, vmapped == looped, and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel.pbrl import (
    bellman_penalty,
    bilevel_rl,
    lower_value,
    make_incentive_design,
    make_rlhf,
    optimal_policy,
    optimal_values,
    pbrl,
    pbrl_sampled,
    penalized_solution,
    reduced_logits,
    reward,
    sampled_gradient,
    upper_objective,
    value_penalty,
    value_penalty_exact,
)
from bilevel.tabular_mdp import (
    evaluate,
    occupancy,
    q_from_v,
    random_mdp,
    regularized_reward,
    resolvent,
    sample_returns,
    soft_bellman,
    soft_greedy,
    soft_value_iteration,
    softmax_policy,
    tabular_mdp,
)
from ratelab import RatelabError

VI = 400  # soft-VI steps: 0.9^400 ~ 5e-19


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _mdp(seed=0, S=5, A=3, gamma=0.9, tau=0.2):
    return random_mdp(jax.random.key(seed), n_states=S, n_actions=A, gamma=gamma, tau=tau)


def _policy(seed, S, A, scale=1.0):
    return softmax_policy(scale * jax.random.normal(jax.random.key(seed), (S, A)))


def test_resolvent_is_the_inverse_and_occupancy_is_a_distribution():
    m = _mdp()
    pi = _policy(1, 5, 3)
    resolvent_ = jax.jit(resolvent)
    Ppi = np.einsum("sa,sat->st", np.asarray(pi), np.asarray(m.P))
    np.testing.assert_allclose(resolvent_(m.P, pi, m.gamma), np.linalg.inv(np.eye(5) - 0.9 * Ppi), atol=1e-12)
    d = jax.jit(occupancy)(m.P, pi, m.rho, m.gamma)
    assert float(d.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(d.min()) > 0
    # rho . V^pi = <d^pi, r_pi - tau h(pi)> / (1 - gamma)
    V = jax.jit(evaluate)(m.P, m.r, pi, m.gamma, m.tau)
    assert float(m.rho @ V) == pytest.approx(float(d @ regularized_reward(m.r, pi, m.tau)) / 0.1, rel=1e-12)


def test_exact_policy_evaluation_matches_monte_carlo():
    m = _mdp(seed=3, S=4, A=2, gamma=0.8, tau=0.3)
    pi = _policy(4, 4, 2)
    returns = np.asarray(jax.jit(lambda k: sample_returns(k, m, pi, episodes=10_000, horizon=100))(jax.random.key(5)))
    exact = float(m.rho @ jax.jit(evaluate)(m.P, m.r, pi, m.gamma, m.tau))
    se = returns.std(ddof=1) / np.sqrt(returns.size)
    assert abs(returns.mean() - exact) < 4 * se  # truncation bias 0.8^100 is ~1e-9
    assert se < 0.03


def test_soft_value_iteration_fixed_point_and_optimal_policy():
    m = _mdp(seed=2)
    V = jax.jit(soft_value_iteration, static_argnums=4)(m.P, m.r, m.gamma, m.tau, VI)
    np.testing.assert_allclose(soft_bellman(m.P, m.r, V, m.gamma, m.tau), V, atol=1e-12)
    pi_star = soft_greedy(m.P, m.r, V, m.gamma, m.tau)
    # the soft-greedy policy's regularised value is V*, and no policy does better in any state
    evaluate_ = jax.jit(evaluate)
    np.testing.assert_allclose(evaluate_(m.P, m.r, pi_star, m.gamma, m.tau), V, atol=1e-10)
    for seed in range(5):
        Vpi = evaluate_(m.P, m.r, _policy(seed, 5, 3, 2.0), m.gamma, m.tau)
        assert np.all(np.asarray(Vpi) < np.asarray(V) - 1e-6)
    # Q* = r + gamma P V* and V* = tau logsumexp(Q*/tau): pi* = exp((Q* - V*)/tau)
    Q = q_from_v(m.P, m.r, V, m.gamma)
    np.testing.assert_allclose(pi_star, np.exp((np.asarray(Q) - np.asarray(V)[:, None]) / 0.2), atol=1e-12)


@pytest.mark.parametrize("make", [make_incentive_design, make_rlhf])
def test_penalties_vanish_exactly_at_the_lower_solution_and_are_positive_elsewhere(make):
    prob = make(jax.random.key(7))
    x = jax.random.normal(jax.random.key(8), (prob.dim_x,))
    V = jax.jit(lambda x_: optimal_values(prob, x_, VI))(x)
    theta_star = jnp.log(optimal_policy(prob, x, V))
    both = jax.jit(lambda th: (value_penalty(prob, x, th, V), bellman_penalty(prob, x, th)))
    p, g = both(theta_star)
    assert abs(float(p)) < 1e-12 and abs(float(g)) < 1e-12
    shifted = theta_star + jax.random.normal(jax.random.key(9), (prob.n_states, 1))  # same policy
    np.testing.assert_allclose(both(shifted), 0.0, atol=1e-12)
    for seed in range(4):
        p, g = both(theta_star + 0.5 * jax.random.normal(jax.random.key(seed), theta_star.shape))
        assert float(p) > 1e-6 and float(g) > 1e-6


def test_bellman_penalty_is_tau_times_kl_to_the_soft_greedy_policy():
    prob = make_incentive_design(jax.random.key(1))
    x, th = jnp.zeros(prob.dim_x), jax.random.normal(jax.random.key(2), (5, 3))
    pi = softmax_policy(th)
    r = reward(prob, x)
    Q = q_from_v(prob.P, r, evaluate(prob.P, r, pi, prob.gamma, prob.tau), prob.gamma)
    g = jax.nn.softmax(Q / prob.tau, axis=-1)
    kl = jnp.sum(pi * (jnp.log(pi) - jnp.log(g)), axis=-1)
    assert float(bellman_penalty(prob, x, th)) == pytest.approx(float(prob.tau * prob.rho @ kl), rel=1e-10)


@pytest.mark.parametrize("make", [make_incentive_design, make_rlhf])
def test_value_penalty_gradient_equals_finite_differences(make):
    """Danskin: the stop-gradient surrogate's gradient is the gradient of the true value gap max V - V^pi."""
    prob = make(jax.random.key(11))
    x = 0.5 * jax.random.normal(jax.random.key(12), (prob.dim_x,))
    th = jax.random.normal(jax.random.key(13), (prob.n_states, prob.n_actions))
    V = jax.jit(lambda z: optimal_values(prob, z, VI))(x)
    gx, gt = jax.jit(jax.grad(value_penalty, argnums=(1, 2)))(prob, x, th, V)

    exact_jit = jax.jit(lambda x_, th_: value_penalty_exact(prob, x_, th_, VI))

    def exact(x_, th_):  # V* recomputed from scratch at every point
        return float(exact_jit(x_, th_))

    h = 1e-6
    rng = np.random.default_rng(0)
    for _ in range(3):
        ux = rng.normal(size=x.shape)
        ut = rng.normal(size=th.shape)
        fd = (exact(x + h * ux, th + h * ut) - exact(x - h * ux, th - h * ut)) / (2 * h)
        assert float(gx @ ux + jnp.sum(gt * ut)) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_gradient_of_optimal_value_is_the_occupancy_weighted_feature():
    """grad_x rho.V*_x = sum_{s,a} d^{pi*}(s) pi*(a|s) phi(s, a) / (1 - gamma) (Danskin + occupancy measure)."""
    prob = make_rlhf(jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (prob.dim_x,))
    g = jax.jit(jax.grad(lambda z: prob.rho @ optimal_values(prob, z, VI)))(x)
    pi = optimal_policy(prob, x, jax.jit(lambda z: optimal_values(prob, z, VI))(x))
    d = occupancy(prob.P, pi, prob.rho, prob.gamma)[:, None] * pi
    np.testing.assert_allclose(g, jnp.einsum("sa,sai->i", d, prob.phi) / (1 - prob.gamma), rtol=1e-9)


def test_sampled_gradient_is_unbiased():
    """Minibatch policy-gradient estimate (exact critic, (s, a) drawn from the occupancy measures) averages to the
    exact gradient of F_lambda: every coordinate's mean within 4.5 standard errors (30 coordinates)."""
    prob = make_incentive_design(jax.random.key(0), n_states=4, n_actions=2)
    x = 0.3 * jnp.ones(prob.dim_x)
    th = jax.random.normal(jax.random.key(1), (4, 2))
    V = jax.jit(lambda z: optimal_values(prob, z, VI))(x)
    lam = 5.0

    def F(x_, t_):
        return upper_objective(prob, x_, softmax_policy(t_)) + lam * value_penalty(prob, x_, t_, V)

    ex, et = jax.jit(jax.grad(F, argnums=(0, 1)))(x, th)
    gx, gt = jax.jit(jax.vmap(lambda k: sampled_gradient(prob, lam, x, th, V, k, 32)))(
        jax.random.split(jax.random.key(2), 3000))
    for exact, draws in ((ex, gx), (et, gt)):
        se = np.asarray(draws.std(0)) / np.sqrt(draws.shape[0]) + 1e-15
        assert np.max(np.abs(np.asarray(draws.mean(0) - exact)) / se) < 4.5
    with pytest.raises(RatelabError, match="incentive"):
        sampled_gradient(make_rlhf(jax.random.key(0)), lam, jnp.zeros(4), jnp.zeros((5, 3)), jnp.zeros(5),
                         jax.random.key(0), 4)
    with pytest.raises(RatelabError, match="batch"):
        pbrl_sampled(1.0, 0.1, batch=0)


def test_pbrl_descends_and_reaches_the_penalised_solution():
    """Gradient steps with alpha <= 1/L decrease F_lambda monotonically and converge to Newton's minimiser."""
    prob = make_incentive_design(jax.random.key(0), n_states=4, n_actions=2, tau=1.0)
    lam = 2.0
    solver = pbrl(lam, 0.1, inner_iters=20, init_scale=0.3)  # L_lambda ~ 6.8 at the origin for this instance

    @jax.jit
    def go(key):
        def many(s, _):
            s, m = solver.step(s, prob, key)
            return s, (m["penalized"], m["descent_ratio"])

        return jax.lax.scan(many, solver.init(prob, key), None, length=1500)

    state, (F, ratio) = go(jax.random.key(1))
    assert np.all(np.diff(np.asarray(F)) <= 1e-10)
    assert float(np.max(np.asarray(ratio))) <= 1.0
    pi = softmax_policy(state.theta)
    x_l, pi_l, g = jax.jit(lambda x, p: penalized_solution(prob, lam, x, p, vi_iters=VI, newton_iters=10))(
        state.x, pi)
    assert float(g) < 1e-10
    np.testing.assert_allclose(state.x, x_l, atol=1e-9)
    np.testing.assert_allclose(pi, pi_l, atol=1e-9)


def test_vmapped_lambda_sweep_equals_looped():
    prob = make_incentive_design(jax.random.key(5), n_states=4, n_actions=2)
    x0 = jnp.zeros(prob.dim_x)
    pi0 = jax.jit(lambda z: optimal_policy(prob, z, optimal_values(prob, z, VI)))(x0)
    lams = jnp.array([3.0, 30.0, 300.0])
    one = jax.jit(lambda lam: penalized_solution(prob, lam, x0, pi0, vi_iters=VI, newton_iters=25))
    xs, pis, gs = jax.jit(jax.vmap(one))(lams)
    for i, lam in enumerate(lams):
        x, pi, g = one(lam)
        # the batched linear solves reduce in another order: both are the same converged Newton solution, equal to
        # the solve's own accuracy (gradient / lambda < 1e-10), not bitwise (seen: 1.6e-11 on a component of 0.014)
        np.testing.assert_allclose(xs[i], x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(pis[i], pi, rtol=1e-9, atol=1e-9)
        assert float(g) / float(lam) < 1e-10  # the solve is converged (gradient of F / lambda)
    # larger lambda: closer to lower-level optimality (the penalty's landscape result)
    p = np.asarray(jax.jit(jax.vmap(lambda x, pi: prob.rho @ optimal_values(prob, x, VI) - lower_value(prob, x, pi)))(
        xs, pis))
    assert p[0] > p[1] > p[2] > 0


def test_bad_input_is_rejected_with_the_argument_named():
    m = _mdp()
    phi = jnp.zeros((5, 3, 2))
    ok = dict(gamma=0.9, tau=0.2, beta=1.0, kind="incentive")
    with pytest.raises(RatelabError, match="tau"):
        bilevel_rl(m.P, m.rho, m.r, phi, m.r, **{**ok, "tau": 0.0})
    with pytest.raises(RatelabError, match="gamma"):
        bilevel_rl(m.P, m.rho, m.r, phi, m.r, **{**ok, "gamma": 1.0})
    with pytest.raises(RatelabError, match="phi"):
        bilevel_rl(m.P, m.rho, m.r, jnp.zeros((5, 2, 2)), m.r, **ok)
    with pytest.raises(RatelabError, match="kind"):
        bilevel_rl(m.P, m.rho, m.r, phi, m.r, **{**ok, "kind": "stackelberg"})
    with pytest.raises(RatelabError, match="row-stochastic"):
        tabular_mdp(2 * m.P, m.r, m.rho, gamma=0.9, tau=0.1)
    with pytest.raises(RatelabError, match="rho"):
        tabular_mdp(m.P, m.r, m.rho[:3], gamma=0.9, tau=0.1)
    with pytest.raises(RatelabError, match="lam"):
        pbrl(-1.0, 0.1)
    with pytest.raises(RatelabError, match="penalty"):
        pbrl(1.0, 0.1, penalty="gradient")
    with pytest.raises(RatelabError, match="step_size"):
        pbrl(1.0, 0.0)
    with pytest.raises(RatelabError, match="episodes"):
        sample_returns(jax.random.key(0), m, _policy(0, 5, 3), episodes=0, horizon=5)


def test_experiment_configs_are_validated():
    from ratelab.registry import get

    exp = get("pbrl-lambda")
    with pytest.raises(RatelabError, match="lam_fit_min"):
        exp.validate(exp.config("quick", {"lam_fit_min": 5000.0}))
    rate = get("pbrl-incentive")
    with pytest.raises(RatelabError, match="penalty"):
        rate.validate(rate.config("quick", {"penalty": "gradient"}))
    for e in (exp, rate, get("pbrl-bellman"), get("pbrl-rlhf")):
        e.validate(e.config("quick"))
        e.validate(e.config("full"))


def test_user_data_keep_their_float64_precision_outside_x64():
    m = _mdp()
    P, r, rho = (np.asarray(a, dtype=np.float64) for a in (m.P, m.r, m.rho))
    with jax.enable_x64(False):
        prob = bilevel_rl(P, rho, r, np.zeros((5, 3, 2)), r, gamma=0.9, tau=0.2, beta=1.0, kind="incentive")
        assert prob.P.dtype == np.float64 and not isinstance(prob.P, jax.Array)
        assert tabular_mdp(P, r, rho, gamma=0.9, tau=0.1).r.dtype == np.float64
        assert bilevel_rl(P.astype(np.float32), rho, r, np.zeros((5, 3, 2)), r, gamma=0.9, tau=0.2, beta=1.0,
                          kind="incentive").P.dtype == jnp.float32
    np.testing.assert_array_equal(prob.P, P)  # unrounded


def test_descent_ratio_is_the_mean_value_identity_of_the_logged_steps():
    """descent_ratio_K = sum_{k<K} alpha/2 ||g_k||^2 / (F_0 - F_K), and F_k - F_{k+1} = alpha ||g_k||^2
    (1 - alpha q_k / 2) defines the curvature q_k along step k: R = 1 / (2 - alpha Q) with Q the ||g||^2-weighted
    mean of q_k (the two-sided claim's identity); here every q_k lies in [0, 1/alpha], so R is in [1/2, 1]."""
    prob = make_incentive_design(jax.random.key(0), n_states=4, n_actions=2, tau=1.0)
    alpha = 0.1
    solver = pbrl(2.0, alpha, inner_iters=20, init_scale=0.3)

    @jax.jit
    def go(key):
        def one(s, _):
            s, m = solver.step(s, prob, key)
            return s, (m["penalized"], m["grad_norm_sq"], m["descent_ratio"])

        return jax.lax.scan(one, solver.init(prob, key), None, length=300)[1]

    F, g2, ratio = (np.asarray(v) for v in go(jax.random.key(1)))
    q = 2 * (F[1:] - F[:-1] + alpha * g2[:-1]) / (alpha**2 * g2[:-1])
    Q = np.cumsum(g2[:-1] * q) / np.cumsum(g2[:-1])
    np.testing.assert_allclose(ratio[1:], 1.0 / (2.0 - alpha * Q), rtol=1e-8)
    big = g2[:-1] > 1e-10  # below, F's differences are rounding noise
    assert big.sum() > 50 and np.all(q[big] > -1e-6) and np.all(alpha * q[big] <= 1.0)
    assert np.all((ratio[1:] >= 0.5 - 1e-9) & (ratio[1:] <= 1.0))


def test_penalized_solution_reports_the_gradient_at_its_start():
    prob = make_incentive_design(jax.random.key(5), n_states=4, n_actions=2)
    x0 = jnp.zeros(prob.dim_x)
    pi0 = jax.jit(lambda z: optimal_policy(prob, z, optimal_values(prob, z, VI)))(x0)
    x, pi, g, g0 = jax.jit(lambda: penalized_solution(prob, 30.0, x0, pi0, vi_iters=VI, newton_iters=25,
                                                      with_start=True))()
    th = reduced_logits(pi0)

    def F(x_, th_):
        full = jnp.concatenate([th_, jnp.zeros((th_.shape[0], 1))], axis=-1)
        return upper_objective(prob, x_, softmax_policy(full)) + 30.0 * value_penalty_exact(prob, x_, full, VI)

    gx, gt = jax.jit(jax.grad(F, argnums=(0, 1)))(x0, th)
    assert float(g0) == pytest.approx(float(jnp.sqrt(jnp.sum(gx**2) + jnp.sum(gt**2))), rel=1e-9)
    assert float(g0) > 1e-3 and float(g) / 30.0 < 1e-8  # the start is far from stationary, the end is solved
