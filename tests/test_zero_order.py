"""ZO estimators (optim_theory.zeroth_order): unbiasedness for linear functions, the two-sided / forward-gradient
identity on quadratics and its failure for the one-sided estimate, block-wise perturbations, chaining with optax,
and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim_theory.zeroth_order import (
    zo_adam,
    zo_estimate,
    zo_gradient,
    zo_sgd,
    zo_sgd_momentum,
    zo_sgd_sign,
)
from ratelab import RatelabError


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _quadratic(d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(d, d))
    A, b = jnp.asarray(B.T @ B / d + 0.5 * np.eye(d)), jnp.asarray(rng.normal(size=d))
    return (lambda x: 0.5 * x @ A @ x + b @ x), A, b


def test_two_sided_gaussian_estimator_is_unbiased_for_linear_functions():
    """f(x) = a^T x: each two-sided query is (u^T a) u exactly, E = E[u u^T] a = a; the Monte Carlo mean over M
    keys lies within 4.5 standard errors of a in every coordinate (and the one-sided one too: f is linear)."""
    d, M = 6, 40_000
    a = jnp.asarray(np.random.default_rng(1).normal(size=d))
    x = jnp.asarray(np.random.default_rng(2).normal(size=d))
    keys = jax.random.split(jax.random.key(3), M)
    for kind in ("two_sided", "one_sided"):
        g = np.asarray(jax.jit(jax.vmap(lambda k, kind=kind: zo_gradient(lambda z: a @ z, x, k, mu=0.3, q=1,
                                                                       kind=kind)))(keys))
        se = g.std(0) / np.sqrt(M)
        assert np.all(np.abs(g.mean(0) - np.asarray(a)) <= 4.5 * se)
        # the spread is real (E||g||^2 = (d + 2)||a||^2), so the check above has power
        assert np.isclose((g ** 2).sum(1).mean(), (d + 2) * float(a @ a), rtol=0.05)


def test_two_sided_equals_forward_gradient_on_quadratics_for_any_mu():
    """Derived: f(x + mu u) - f(x - mu u) = 2 mu u^T grad f(x) for a quadratic, so the two-sided estimate is the
    forward gradient (jax.jvp) on the same directions, at every mu (1e-12 relative in float64); the one-sided one
    is off by (mu / 2) (u^T A u) u, exactly."""
    f, A, b = _quadratic(20)
    x = jnp.asarray(np.random.default_rng(4).normal(size=20))
    key = jax.random.key(5)
    est = jax.jit(lambda mu, kind: zo_gradient(f, x, key, mu=mu, q=3, kind=kind), static_argnums=1)
    fwd = np.asarray(est(1.0, "forward"))
    scale = np.linalg.norm(fwd)
    for mu in (1e-3, 0.1, 10.0):  # one program, mu traced
        two = np.asarray(est(mu, "two_sided"))
        assert np.linalg.norm(two - fwd) <= 1e-12 * scale * max(1.0, mu)
    # the one-sided bias in closed form: the directions are those of the forward gradient (same key)
    u = [np.asarray(v) for v in _directions(key, 3, 20)]
    mu = 0.1
    one = np.asarray(est(mu, "one_sided"))
    bias = sum(0.5 * mu * (ui @ np.asarray(A) @ ui) * ui for ui in u) / 3
    np.testing.assert_allclose(one - fwd, bias, rtol=1e-9, atol=1e-12 * scale)
    assert np.linalg.norm(one - fwd) > 1e-3 * scale


def _directions(key, q, d):
    """The q directions zo_gradient draws from ``key`` (one block: split(key, 1), then split(., q), one leaf)."""
    kb = jax.random.split(key, 1)[0]
    return [jax.random.normal(jax.random.split(k, 1)[0], (d,), jnp.float32).astype(jnp.float64)
            for k in jax.random.split(kb, q)]


def test_forward_gradient_is_u_u_transpose_grad():
    f, A, b = _quadratic(7, seed=6)
    x = jnp.asarray(np.random.default_rng(7).normal(size=7))
    key = jax.random.key(8)
    (u,) = _directions(key, 1, 7)
    grad = np.asarray(A @ x + b)
    np.testing.assert_allclose(np.asarray(zo_gradient(f, x, key, kind="forward")),
                               np.asarray(u) * (np.asarray(u) @ grad), rtol=1e-12)


def test_blockwise_perturbs_one_block_per_query_and_stays_unbiased():
    """Block-wise: the estimate for each leaf comes from queries that move that leaf only, so on f = a^T x + c^T y
    the y-part of a query for block x is 0; the mean over keys is (a, c) within Monte Carlo error."""
    a, c = jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([3.0, 1.0])
    params = {"x": jnp.zeros(3), "y": jnp.zeros(2)}

    def f(p):
        return a @ p["x"] + c @ p["y"]

    M = 20_000
    g = jax.jit(jax.vmap(lambda k: zo_gradient(f, params, k, mu=0.1, q=1, blockwise=True)))(
        jax.random.split(jax.random.key(9), M))
    for leaf, ref in (("x", a), ("y", c)):
        v = np.asarray(g[leaf])
        assert np.all(np.abs(v.mean(0) - np.asarray(ref)) <= 4.5 * v.std(0) / np.sqrt(M))
    # per block the second moment is (d_b + 2) ||a_b||^2: block-wise variance uses the block's size, not d
    assert np.isclose((np.asarray(g["y"]) ** 2).sum(1).mean(), 4 * float(c @ c), rtol=0.05)
    # one block's query leaves the other block's estimate at exactly zero
    only_x = zo_gradient(lambda p: a @ p["x"], params, jax.random.key(10), mu=0.1, blockwise=True)
    assert np.all(np.asarray(only_x["y"]) == 0.0)


def test_chains_with_optax_and_matches_the_manual_update():
    """optax.chain(zo_estimate, optax.sgd(lr)) is x <- x - lr g with g = zo_gradient(key_t): the same numbers by
    hand; ZO-SGD-Sign, -MMT and ZO-Adam run through optax's own transformations and decrease a quadratic."""
    f, A, b = _quadratic(10, seed=11)
    x0 = jnp.asarray(np.random.default_rng(12).normal(size=10))
    key = jax.random.key(13)
    opt = zo_sgd(f, key, 0.05, mu=1e-3, q=2)

    @jax.jit
    def both(x0):
        def body(carry, _):
            x, state, k = carry
            upd, state = opt.update(None, state, x)
            now, k = jax.random.split(k)
            manual = -0.05 * zo_gradient(f, x, now, mu=1e-3, q=2)
            return (optax.apply_updates(x, upd), state, k), (upd, manual)

        return jax.lax.scan(body, (x0, opt.init(x0), key), None, length=3)[1]

    upd, manual = both(x0)
    np.testing.assert_allclose(np.asarray(upd), np.asarray(manual), rtol=1e-12, atol=1e-15)

    def run(opt, steps=300):
        def body(carry, _):
            x, s = carry
            u, s = opt.update(None, s, x)
            return (optax.apply_updates(x, u), s), None

        (x, _), _ = jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)
        return f(x)

    opts = (zo_sgd_sign(f, key, 0.01), zo_sgd_momentum(f, key, 0.01, momentum=0.9), zo_adam(f, key, 0.05),
            optax.chain(zo_estimate(f, key, kind="forward"), optax.sgd(0.05)))
    finals = np.asarray(jax.jit(lambda: jnp.stack([run(o) for o in opts]))())  # one program
    f_star = float(f(-jnp.linalg.solve(A, b)))
    assert np.all(finals - f_star < 0.2 * (float(f(x0)) - f_star))


def test_bad_inputs_raise_before_compute():
    f = lambda x: jnp.sum(x ** 2)  # noqa: E731
    x, key = jnp.ones(3), jax.random.key(0)
    with pytest.raises(RatelabError, match="kind"):
        zo_gradient(f, x, key, kind="central")
    with pytest.raises(RatelabError, match="q"):
        zo_gradient(f, x, key, q=0)
    with pytest.raises(RatelabError, match="mu"):
        zo_gradient(f, x, key, mu=-1.0)
    with pytest.raises(RatelabError, match="blockwise"):
        zo_gradient(f, x, key, blockwise=1)
    with pytest.raises(RatelabError, match="key"):
        zo_estimate(f, 3)
    with pytest.raises(RatelabError, match="params"):
        zo_estimate(f, key).update(None, zo_estimate(f, key).init(x))
