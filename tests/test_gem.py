"""GEM (Li et al., arXiv:2408.16673) on categorical models: the reduction to cross entropy at beta = 1, the loss's
gradient against the paper's / code's formula, the population fixed point p* ∝ p_data^beta (stationarity, root
finder, entropy-regularised reverse-KL minimiser), training to it, schedules == floats bitwise, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import softmax

from alignment.gem import (
    cross_entropy,
    cross_entropy_tokens,
    empirical_weights,
    entropy,
    fixed_point,
    fixed_point_root,
    gem_logit_grad,
    gem_loss,
    gem_tokens,
    make_optimizer,
    population_grad,
    sft_loss,
    train,
)
from ratelab import RatelabError

K = 7
_pop_grad = jax.jit(jax.grad(sft_loss), static_argnums=(4,))  # (z, target, beta, gem=True, h)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _pdata(seed: int = 0) -> np.ndarray:
    return softmax(np.random.default_rng(seed).standard_normal(K))


def _logits(seed: int = 1, n: int = 5) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    return jnp.asarray(2 * rng.standard_normal((n, K))), jnp.asarray(rng.integers(0, K, n))


def test_beta1_gradient_is_cross_entropy_gradient():
    z, y = _logits()

    @jax.jit
    def f(z, y):
        return (jax.grad(lambda z: gem_loss(z, y, 1.0))(z), jax.grad(lambda z: cross_entropy(z, y))(z),
                gem_tokens(z, y, 1.0), cross_entropy_tokens(z, y), jax.nn.softmax(z))

    g_gem, g_ce, l_gem, l_ce, p = f(z, y)
    np.testing.assert_allclose(g_gem, g_ce, atol=1e-15, rtol=0)
    # the values differ by the (stop-gradient) entropy: l_GEM(beta = 1) = CE - H(p)
    np.testing.assert_allclose(l_gem, l_ce - entropy(np.asarray(p)), atol=1e-13)


def test_beta1_training_path_is_cross_entropy_path():
    target = jnp.asarray(empirical_weights(np.array([0, 0, 1, 2, 2, 2, 4]), K))
    tx = make_optimizer("sgd", 1.0)
    arms = jax.jit(jax.vmap(lambda b, g: train(jnp.zeros(K), target, tx, 400, beta=b, gem=g, log_every=20)[1]))
    p_gem, p_ce, p_07 = np.asarray(arms(jnp.array([1.0, 1.0, 0.7]), jnp.array([True, False, True])))
    assert np.max(np.abs(p_gem - p_ce)) <= 1e-12
    assert np.max(np.abs(p_07 - p_ce)) > 1e-3


@pytest.mark.parametrize("h", ["linear", "logsigmoid"])
def test_autodiff_gradient_matches_formula(h):
    z, y = _logits(seed=3, n=6)

    @jax.jit
    def f(beta):
        auto = jax.grad(lambda z: jnp.sum(gem_tokens(z, y, beta, h)))(z)
        return auto, gem_logit_grad(z, y, beta, h), jax.nn.softmax(z / beta) - jax.nn.one_hot(y, K)

    for beta in (0.3, 0.7, 1.0):
        auto, formula, q_minus_e = f(beta)
        np.testing.assert_allclose(auto, formula, atol=1e-14, rtol=0)
        if h == "linear":  # q - e_y
            np.testing.assert_allclose(auto, q_minus_e, atol=1e-14, rtol=0)


def test_sample_mean_equals_frequency_weighted_loss():
    labels = np.random.default_rng(5).integers(0, K, 30)
    z = jnp.asarray(np.random.default_rng(6).standard_normal(K))
    w = jnp.asarray(empirical_weights(labels, K))
    y = jnp.asarray(labels)

    @jax.jit
    def f(z, w):
        zz = jnp.broadcast_to(z, (labels.size, K))
        return (sft_loss(z, w, 0.7, True), gem_loss(zz, y, 0.7), sft_loss(z, w, 0.7, False), cross_entropy(zz, y),
                sft_loss(z, w, 0.7, True, "logsigmoid"), gem_loss(zz, y, 0.7, "logsigmoid"))

    a, b, c, d, e, f_ = f(z, w)
    np.testing.assert_allclose(a, b, atol=1e-13)
    np.testing.assert_allclose(c, d, atol=1e-13)
    np.testing.assert_allclose(e, f_, atol=1e-13)


@pytest.mark.parametrize("beta", [0.4, 0.7, 1.0])
def test_fixed_point_is_stationary_and_the_roots(beta):
    p = _pdata()
    star = fixed_point(p, beta)
    z = np.log(star)
    np.testing.assert_allclose(population_grad(z, p, beta), 0.0, atol=1e-15)  # q = softmax(z / beta) = p_data
    g = _pop_grad(jnp.asarray(z), jnp.asarray(p), beta, True, "linear")
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-15)
    np.testing.assert_allclose(fixed_point_root(p, beta, start="uniform"), star, atol=1e-12)
    if beta < 1:
        assert np.abs(star - p).sum() > 0.05  # not p_data
        assert entropy(star) > entropy(p)


def test_fixed_point_minimises_entropy_regularised_reverse_kl():
    p, beta = _pdata(2), 0.6
    gamma = 1 / beta - 1

    def objective(f):
        return np.sum(f * (np.log(f) - np.log(p))) - gamma * entropy(f)

    star = fixed_point(p, beta)
    rng = np.random.default_rng(0)
    others = softmax(np.log(star) + 0.3 * rng.standard_normal((200, K)), axis=-1)
    assert np.all(np.array([objective(f) for f in others]) > objective(star))


def test_logsigmoid_fixed_point_is_stationary_and_differs():
    p, beta = _pdata(4), 0.7
    star = fixed_point_root(p, beta, "logsigmoid")
    np.testing.assert_allclose(fixed_point_root(p, beta, "logsigmoid", start="uniform"), star, atol=1e-12)
    np.testing.assert_allclose(population_grad(np.log(star), p, beta, "logsigmoid"), 0.0, atol=1e-12)
    g = _pop_grad(jnp.asarray(np.log(star)), jnp.asarray(p), beta, True, "logsigmoid")
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-12)
    assert 1e-8 < np.abs(star - fixed_point(p, beta)).max() < 0.05


def test_traced_h_switch_selects_the_weight():
    z, p = jnp.asarray(np.random.default_rng(9).standard_normal(K)), jnp.asarray(_pdata(9))

    @jax.jit
    def f(h):
        return (jax.grad(sft_loss)(z, p, 0.7, True, h), jax.grad(sft_loss)(z, p, 0.7, True, "logsigmoid"),
                jax.grad(sft_loss)(z, p, 0.7, True, "linear"))

    out = f(jnp.asarray(True))
    assert np.array_equal(np.asarray(out[0]), np.asarray(out[1]))
    out = f(jnp.asarray(False))  # the [K, K] table with w = 1 against the O(K) linear form
    np.testing.assert_allclose(out[0], out[2], atol=1e-15, rtol=0)


def test_training_reaches_fixed_point():
    p, beta = _pdata(7), 0.7
    run = jax.jit(lambda t: train(jnp.zeros(K), t, make_optimizer("sgd", 1.0), 3000, beta=beta, log_every=3000))
    z, probs = run(jnp.asarray(p))
    assert 0.5 * np.abs(np.asarray(probs[-1]) - fixed_point(p, beta)).sum() < 1e-6
    np.testing.assert_allclose(jnp.sum(z), 0.0, atol=1e-10)  # SGD keeps the mean logit (gradients sum to 0)


def test_schedule_equals_float_bitwise():
    target = jnp.asarray(_pdata(8))

    @jax.jit
    def runs(t):
        return [train(jnp.zeros(K), t, make_optimizer(name, lr), 30, beta=0.7, log_every=10)[1]
                for name in ("sgd", "adam") for lr in (0.3, optax.constant_schedule(0.3))]

    sgd_f, sgd_s, adam_f, adam_s = runs(target)
    assert np.array_equal(np.asarray(sgd_f), np.asarray(sgd_s))
    assert np.array_equal(np.asarray(adam_f), np.asarray(adam_s))


@pytest.mark.parametrize("beta", [0.0, -0.5, 1.5, float("nan")])
def test_bad_beta(beta):
    z, y = _logits()
    with pytest.raises(RatelabError, match="beta"):
        gem_loss(z, y, beta)
    with pytest.raises(RatelabError, match="beta"):
        fixed_point(_pdata(), beta)


def test_bad_arguments():
    z, y = _logits()
    with pytest.raises(RatelabError, match="h must be one of"):
        gem_loss(z, y, 0.7, h="tanh")
    with pytest.raises(RatelabError, match="optimizer"):
        make_optimizer("lion", 0.1)
    with pytest.raises(RatelabError, match="learning_rate"):
        make_optimizer("sgd", -1.0)
    with pytest.raises(RatelabError, match="multiple of log_every"):
        train(jnp.zeros(K), jnp.asarray(_pdata()), make_optimizer("sgd", 1.0), 10, log_every=3)
    with pytest.raises(RatelabError, match="p_data"):
        fixed_point(np.array([0.5, 0.6]), 0.7)
    with pytest.raises(RatelabError, match="labels"):
        empirical_weights(np.array([0, K]), K)


def test_experiment_rejects_bad_config():
    from experiments.gem import GEM as exp
    for bad in ({"beta": 1.2}, {"h": "logsigmoid"}, {"steps": 3001}, {"optimizer": "rmsprop"}):
        with pytest.raises(RatelabError):
            exp.validate(exp.config("quick", bad))
