"""A3C-TD(0) and the linear-feature MDP: exact J and grad J (finite differences, autodiff, Monte Carlo), the
visitation measure and the TD fixed point, delay-model bounds, the zero-delay single-worker reduction to sequential
actor-critic, and vmapped == looped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.a3c import WORKERS, samples_to_target, target_reward
from ratelab import RatelabError
from ratelab.registry import get
from ratelab.runner import run, sweep, trace_from_arrays
from rl_theory.a3c import a3c_td0, actor_critic, paper_steps
from rl_theory.linear_mdp import make_linear_mdp, rollout_returns, sample_index


def _mdp(policy="tabular", **kw):
    return make_linear_mdp(jax.random.key(0), n_states=8, n_actions=3, feature_dim=4, gamma=0.8, policy=policy,
                           policy_dim=5, **kw)


def _theta(mdp, scale=1.0, seed=1):
    return scale * jax.random.normal(jax.random.key(seed), (mdp.theta_dim,), mdp.phi.dtype)


def test_generator_normalisation_and_paper_sizes():
    mdp = make_linear_mdp(jax.random.key(3))
    assert (mdp.n_states, mdp.n_actions, mdp.omega_dim, mdp.theta_dim) == (100, 5, 10, 500)
    np.testing.assert_allclose(mdp.P.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(mdp.phi, axis=1), 1.0, rtol=1e-5)
    assert float(mdp.P.min()) >= 0 and 0 <= float(mdp.R.min()) and float(mdp.R.max()) <= 1


@pytest.mark.parametrize("policy", ["tabular", "features"])
def test_grad_J_matches_finite_differences_and_autodiff(policy):
    with jax.enable_x64(True):
        mdp = _mdp(policy)
        theta = _theta(mdp)
        g = np.asarray(jax.jit(mdp.grad_J)(theta))
        np.testing.assert_allclose(g, np.asarray(jax.jit(jax.grad(mdp.J))(theta)), rtol=1e-8, atol=1e-12)
        h = 1e-6
        eye = jnp.eye(mdp.theta_dim)
        J = jax.jit(jax.vmap(mdp.J))
        fd = np.asarray((J(theta + h * eye) - J(theta - h * eye)) / (2 * h))
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("policy", ["tabular", "features"])
def test_score_is_the_gradient_of_log_pi(policy):
    with jax.enable_x64(True):
        mdp = _mdp(policy)
        theta = _theta(mdp)
        s, a = jnp.asarray([0, 3, 7, 5]), jnp.asarray([0, 2, 1, 2])
        auto = jax.jit(jax.vmap(jax.grad(lambda t, s, a: jnp.log(mdp.policy(t, s)[a])), (None, 0, 0)))(theta, s, a)
        score = jax.jit(jax.vmap(mdp.score, (None, 0, 0)))(theta, s, a)
        np.testing.assert_allclose(score, auto, atol=1e-12)


def test_J_matches_monte_carlo_rollouts():
    mdp = _mdp("features", reward="sas")
    theta = _theta(mdp, 2.0)
    returns = np.asarray(rollout_returns(mdp, theta, jax.random.key(5), 2000, 80), dtype=float)
    se = returns.std(ddof=1) / np.sqrt(returns.size)
    # truncation bias gamma^80 / (1 - gamma) < 1e-7
    assert abs(returns.mean() - float(jax.jit(mdp.J)(theta))) < 4 * se + 1e-4


def test_visitation_is_stationary_for_the_restart_kernel_and_td_fixed_point():
    with jax.enable_x64(True):
        mdp = _mdp()
        theta = _theta(mdp)
        @jax.jit
        def pieces(theta):
            pi = mdp.policy(theta)
            P_tilde = mdp.gamma * jnp.einsum("sa,sat->st", pi, mdp.P) + (1 - mdp.gamma) * mdp.eta[None, :]
            return mdp.visitation(theta), P_tilde, *mdp.td_system(theta), mdp.critic_target(theta)

        d, P_tilde, A, b, w = pieces(theta)
        np.testing.assert_allclose(d @ P_tilde, d, atol=1e-12)
        assert float(d.sum()) == pytest.approx(1.0)
        np.testing.assert_allclose(A @ w + b, 0.0, atol=1e-10)
        assert float(jnp.linalg.eigvalsh(A + A.T).max()) < 0  # Assumption 2: A_theta negative definite


def test_optimal_J_bounds_every_policy():
    with jax.enable_x64(True):
        mdp = _mdp()
        j_star = mdp.optimal_J()
        J = jax.jit(mdp.J)
        greedy = jnp.argmax(jax.jit(mdp.values)(_theta(mdp))[1], axis=1)
        for scale in (0.0, 1.0, 5.0):
            assert float(J(_theta(mdp, scale))) <= j_star + 1e-9
        assert float(J(50.0 * jax.nn.one_hot(greedy, mdp.n_actions).reshape(-1))) <= j_star + 1e-9


def test_inverse_cdf_sampling_has_the_right_law():
    p = jnp.asarray([0.1, 0.5, 0.15, 0.25])
    draws = sample_index(jnp.cumsum(p), jax.random.uniform(jax.random.key(0), (20000,)))
    freq = np.bincount(np.asarray(draws), minlength=4) / 20000
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / 20000))


def _steps():
    return paper_steps(5.0, 1.0)


def test_random_delays_are_bounded_by_K0():
    mdp = _mdp()
    n, k0 = 4, 6
    tr = run(a3c_td0(*_steps(), num_workers=n, max_workers=8, delay="random", max_delay=k0, metrics="none"), mdp, 0,
             steps=300, seeds=2, log_every=1)
    tau, worker, k = tr["delay"], tr["worker"], tr.steps - 1
    assert np.all((tau >= 0) & (tau <= k0) & (tau <= k))
    assert tau.max() == k0 and tau.min() == 0
    assert np.all((worker >= 0) & (worker < n)) and np.unique(worker).size == n


def test_zero_delay_single_worker_is_sequential_actor_critic():
    """Bitwise: the same samples, the same updates, the same final (theta, omega) after 400 steps on 3 seeds."""
    mdp = _mdp()
    seq = run(actor_critic(*_steps(), metrics="none"), mdp, 7, steps=400, seeds=3, log_every=1)
    par = run(a3c_td0(*_steps(), num_workers=1, delay="zero", metrics="none"), mdp, 7, steps=400, seeds=3,
              log_every=1)
    assert np.all(par["delay"] == 0) and np.all(par["worker"] == 0)
    assert np.abs(par.final_state.theta).max() > 0.1  # the policy moved
    np.testing.assert_array_equal(par.final_state.theta, seq.final_state.theta)
    np.testing.assert_array_equal(par.final_state.omega, seq.final_state.omega)


def test_vmapped_over_workers_equals_looped_and_round_robin_delays():
    mdp = _mdp()
    alpha, beta = _steps()
    ns = [1.0, 3.0, 8.0]

    def make(n):
        return a3c_td0(alpha, beta, num_workers=n, max_workers=8, metrics="none")

    swept = sweep(make, ns, mdp, 11, steps=300, seeds=2, log_every=1)
    k = swept.steps - 1
    for j, n in enumerate(ns):  # round robin: tau_k = min(k, N - 1) <= K0 = N - 1, worker k mod N
        np.testing.assert_array_equal(swept["delay"][j], np.broadcast_to(np.minimum(k, n - 1), (2, k.size)))
        np.testing.assert_array_equal(swept["worker"][j], np.broadcast_to(k % n, (2, k.size)))
    for j, n in enumerate(ns):  # one value at a time: the same compiled code for every n
        one = sweep(make, [n], mdp, 11, steps=300, seeds=2, log_every=1)
        np.testing.assert_allclose(swept.final_state.theta[j], one.final_state.theta[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(swept.final_state.omega[j], one.final_state.omega[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(swept.final_state.theta[0], swept.final_state.theta[2])  # delays change the path


def test_samples_to_target_reads_the_running_mean():
    cfg = get("a3c-speedup").config("quick")
    assert target_reward(cfg) > target_reward({**cfg, "target_fraction": 0.1})
    J = np.tile(np.arange(1.0, 11.0), (len(WORKERS), 2, 1))  # running mean of 1..10 at index i is (i + 2) / 2
    tr = trace_from_arrays(np.arange(1, 11) * 100.0, {"J": J})
    np.testing.assert_array_equal(samples_to_target(tr, 3.0), np.full((len(WORKERS), 2), 500.0))
    assert np.isinf(samples_to_target(tr, 100.0)).all()


def test_bad_inputs_are_rejected():
    alpha, beta = _steps()
    with pytest.raises(RatelabError, match="num_workers"):
        a3c_td0(alpha, beta, num_workers=5, max_workers=4)
    with pytest.raises(RatelabError, match="num_workers"):
        a3c_td0(alpha, beta, num_workers=0)
    with pytest.raises(RatelabError, match="max_delay"):
        a3c_td0(alpha, beta, num_workers=2, max_delay=3)
    with pytest.raises(RatelabError, match="delay"):
        a3c_td0(alpha, beta, delay="sometimes")
    with pytest.raises(RatelabError, match="sigma1"):
        paper_steps(1.0, 1.0, sigma1=0.4, sigma2=0.6)
    with pytest.raises(RatelabError, match="gamma"):
        make_linear_mdp(jax.random.key(0), gamma=1.0)
    with pytest.raises(RatelabError, match="policy"):
        make_linear_mdp(jax.random.key(0), policy="neural")
    with pytest.raises(RatelabError, match="max_workers"):
        jax.jit(lambda n: a3c_td0(alpha, beta, num_workers=n).init)(1.0)


def test_stale_snapshots_give_delays_between_s_n_minus_1_and_s_n_minus_1():
    """staleness s: a worker reads the snapshot N - 1 before the latest, snapshots every s writes, so
    tau_k = k - s max(floor(k / s) - (N - 1), 0); s = 1 is the plain round robin."""
    mdp = _mdp()
    n, s = 3, 5
    tr = run(a3c_td0(*_steps(), num_workers=n, staleness=s, metrics="none"), mdp, 0, steps=200, seeds=2,
             log_every=1)
    k = tr.steps - 1
    expected = k - s * np.maximum(k // s - (n - 1), 0)
    np.testing.assert_array_equal(tr["delay"], np.broadcast_to(expected, (2, k.size)))
    late = k >= s * (n - 1)
    assert expected[late].min() == s * (n - 1) and expected[late].max() == s * n - 1
    with pytest.raises(RatelabError, match="staleness"):
        a3c_td0(*_steps(), delay="zero", staleness=2)


def test_speedup_is_claimed_on_total_samples_with_a_control_that_scales_the_steps():
    """Samples per worker = total / N has slope -1 + (total's slope) by construction, so the claim is on the total
    (slope 0); its control divides the steps by N, and every row the claims read exists in the one sweep."""
    from experiments.a3c import row, settings

    exp = get("a3c-speedup")
    cfg = exp.config("quick")
    (claim,) = exp.claims(cfg)
    assert (claim.metric, claim.expected) == ("total_samples", 0.0)
    assert claim.controls[0].claim["metric"] == "scaled_total_samples"
    rows = settings(cfg)
    for label in ("paper", "steps-over-N"):
        for n in WORKERS:
            lab, n_row, scale, power = rows[row(cfg, label, n)]
            assert n_row == n and scale == (1.0 if label == "paper" or n == 1 else 1.0 / n) and power == 0.6
    stat = get("a3c-stationarity")
    for c in stat.claims(cfg):
        (control,) = c.controls
        assert rows[control.claim["index"][0]][0] == "slow-actor"
        assert rows[c.index[0]][1] == rows[control.claim["index"][0]][1]  # same N as the claim's row
