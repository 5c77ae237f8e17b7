"""The (L0, L1)-smooth wall + ramp of optim_theory.nonuniform: the closed-form gradient and Hessian against
autodiff, the constants (L0, L1) checked on a grid and shown tight, the start's exact gap, the iteration count on
cases with a known answer, the grid rule, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim_theory import nonuniform as nu
from ratelab.errors import RatelabError

INST = nu.Instance(l0=1.0, a=10.0, slope=0.1)


def _grid(inst):
    xs = np.linspace(-12.0 / inst.a, 12.0 / inst.a, 241)
    ys = np.linspace(-40.0, 40.0, 161) * inst.slope / inst.l0
    return jnp.asarray(np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2))


@pytest.mark.parametrize("wall", nu.WALLS)
def test_grad_and_hessian_match_autodiff(wall):
    with jax.enable_x64(True):
        inst = INST._replace(wall=wall)
        pts = _grid(inst)[::97]

        @jax.jit
        def both(pts):
            f = lambda p: nu.value(inst, p)  # noqa: E731
            return (jax.vmap(jax.grad(f))(pts), jax.vmap(jax.hessian(f))(pts), nu.grad(inst, pts),
                    nu.hessian_norm(inst, pts))

        g, h, g_closed, hn_closed = (np.asarray(v) for v in both(pts))
        np.testing.assert_allclose(g_closed, g, rtol=1e-10, atol=1e-12)
        assert np.abs(h[:, 0, 1]).max() == 0.0  # separable: diagonal Hessian
        np.testing.assert_allclose(hn_closed, np.abs(np.linalg.eigvalsh(h)).max(axis=1), rtol=1e-10)


@pytest.mark.parametrize("wall", nu.WALLS)
def test_l0_l1_bound_holds_on_a_grid_and_is_tight(wall):
    with jax.enable_x64(True):
        inst = INST._replace(wall=wall)
        L0, L1 = nu.constants(inst)
        assert (L0, L1) == ((1.0, 10.0) if wall == "exp" else (1.0, 0.0))
        hn, g = jax.jit(lambda p: (nu.hessian_norm(inst, p), nu.grad(inst, p)))(_grid(inst))
        hn, gn = np.asarray(hn), np.linalg.norm(np.asarray(g), axis=-1)
        assert np.all(hn <= L0 + L1 * gn + 1e-12 * (1 + hn))
        # L0 is attained at the minimiser, so no smaller L0 works with this L1
        assert np.max(hn - L1 * gn) == pytest.approx(L0, rel=1e-12)
        if wall == "exp":
            # (||H|| - L0) / ||grad|| -> a = L1 along the wall: 0.9 L1 fails on the grid
            ratio = (hn - L0) / np.maximum(gn, 1e-300)
            assert ratio.max() == pytest.approx(L1, rel=1e-4) and ratio.max() <= L1
            assert np.any(hn > L0 + 0.9 * L1 * gn)


@pytest.mark.parametrize("wall", nu.WALLS)
def test_start_has_the_requested_gap(wall):
    with jax.enable_x64(True):
        inst = INST._replace(wall=wall)
        deltas, splits = jnp.array([4.0, 16.0, 32.0, 8.0]), jnp.array([0.3, 0.5, 0.7, 1.0])

        @jax.jit
        def gaps(d, sp):
            p0 = nu.start(inst, d, sp)
            return nu.value(inst, p0), nu._wall(inst, p0[:, 0])[0], nu.value(inst, jnp.zeros(2)), nu.grad(
                inst, jnp.zeros(2))

        total, wall, v0, g0 = (np.asarray(v) for v in gaps(deltas, splits))
        np.testing.assert_allclose(total, deltas, rtol=1e-12)
        np.testing.assert_allclose(wall, splits * deltas, rtol=1e-12)
        assert v0 == 0.0 and np.all(g0 == 0.0)


def test_stay_count_known_answers():
    with jax.enable_x64(True):
        quad = INST._replace(wall="quadratic")
        p0, p_wall = jnp.array([2.0, 0.0]), nu.start(INST, 16.0, 1.0)

        @jax.jit
        def cases():
            # GD with step 1/L0 on the quadratic wall lands on the minimiser in one step
            one = [nu.stay_count(optax.sgd(1.0 / quad.l0), quad, p0, 1e-3, 20, window=w) for w in (5, None)]
            # too small a step: |x_t| = 2 (1 - 1e-3)^t, never within eps in 20 steps
            slow = nu.stay_count(optax.sgd(1e-3), quad, p0, 1e-3, 20, window=5)
            # a large step on the exponential wall jumps across the valley, higher each time, and blows up
            blow = nu.stay_count(optax.sgd(1.0), INST, p_wall, 0.05, 50, window=5)
            # step 2/L0 flips x_t = (-1)^t x0: from 1e-4 every iterate is eps-stationary, from 2 none is
            flip_in = nu.stay_count(optax.sgd(2.0), quad, jnp.array([1e-4, 0.0]), 1e-3, 30, window=10)
            flip_out = nu.stay_count(optax.sgd(2.0), quad, p0, 1e-3, 30, window=10)
            tail = [nu.success_tail(optax.sgd(lr), quad, p0, 1e-3, 20, 4) for lr in (1.0, 1e-3)]
            return one, slow, blow, flip_in, flip_out, tail

        one, slow, blow, flip_in, flip_out, tail = jax.tree.map(np.asarray, cases())
        assert [int(c) for c, _ in one] == [1, 1] and not any(bool(d) for _, d in one)
        assert int(slow[0]) == 20 and not bool(slow[1])
        assert int(blow[0]) == 50 and bool(blow[1])
        assert int(flip_in[0]) == 0 and int(flip_out[0]) == 30
        assert float(tail[0][0]) == 1.0 and float(tail[1][0]) == 0.0


def test_optimizers_are_optax():
    g, p = jnp.array([0.3, -2.0]), jnp.array([1.0, 1.0])
    pairs = (("adam", optax.adam(0.1)), ("sgdm", optax.sgd(0.1, momentum=0.9)))

    @jax.jit
    def updates():
        out = []
        for method, ref in pairs:
            opt = nu.optimizer(method, 0.1)
            out.append((opt.update(g, opt.init(p), p)[0], ref.update(g, ref.init(p), p)[0]))
        return out

    for u, r in updates():
        np.testing.assert_array_equal(u, r)


def test_tuned_rule_takes_the_fewest_iterations_and_the_smallest_step_on_ties():
    grid = np.array([0.1, 0.2, 0.4])
    best, lr = nu.tuned(np.array([[5, 3, 3], [9, 9, 1]]), grid)
    np.testing.assert_array_equal(best, [3, 1])
    np.testing.assert_array_equal(lr, [0.2, 0.4])


def test_bad_input():
    with pytest.raises(RatelabError, match="l0"):
        nu.constants(INST._replace(l0=0.0))
    with pytest.raises(RatelabError, match="wall"):
        nu.constants(INST._replace(wall="cubic"))
    with pytest.raises(RatelabError, match="method"):
        nu.optimizer("lion", 0.1)
    with pytest.raises(RatelabError, match="window"):
        nu.stay_count(optax.sgd(0.1), INST, jnp.zeros(2), 0.1, 10, window=11)
    with pytest.raises(RatelabError, match="tail"):
        nu.success_tail(optax.sgd(0.1), INST, jnp.zeros(2), 0.1, 10, 0)


def test_experiment_config_validation():
    from experiments import l0l1

    cfg = l0l1._DELTA_QUICK
    l0l1._validate(cfg)
    for key, bad in (("wall", "cubic"), ("slope", "steep"), ("momentum", 1.0), ("window", 10**9),
                     ("n_delta", 2), ("lr_min", 2.0)):
        with pytest.raises(RatelabError, match=key.split("_")[0]):
            l0l1._validate({**cfg, key: bad})


def test_no_denominator_control_is_sgd_with_ema_momentum():
    """l0l1-stochastic's control arm: Adam with eps = E and step lr E updates by -lr m_hat (bias-corrected EMA of
    the gradients) up to a relative sqrt(v_hat) / E; here |g| <= 1e3, so within 1e-5 relative."""
    from experiments import l0l1_stochastic as st

    lr, b1 = 0.01, 0.9
    gs = np.random.default_rng(0).uniform(-1e3, 1e3, size=(20, 2)).astype(np.float32)
    opt = nu.optimizer("adam", lr * st.NODENOM, eps=st.NODENOM)

    def body(s, g):
        u, s = opt.update(g, s)
        return s, u

    us = np.asarray(jax.jit(lambda g: jax.lax.scan(body, opt.init(jnp.zeros(2)), g)[1])(jnp.asarray(gs)))
    m = np.zeros(2)
    for t, g in enumerate(gs, 1):
        m = b1 * m + (1 - b1) * g
        np.testing.assert_allclose(us[t - 1], -lr * m / (1 - b1 ** t), rtol=1e-5, atol=1e-6)
    assert "adam-nodenom" in st.ARMS
