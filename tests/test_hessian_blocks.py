"""Block heterogeneity (optim_theory.hessian_blocks) and Adam-mini (optim_theory.adam_mini): the JS measure on known
spectra, the block Hessian's spectrum and structure, Adam-mini with singleton blocks is optax.adam in float64,
Adam-mini's state size, the block-mean second moment against a NumPy restatement, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim_theory import hessian_blocks as hb
from optim_theory.adam_mini import adam_mini, second_moment_size
from ratelab.errors import RatelabError


def test_js_identical_spectra_is_zero():
    s = hb.block_spectra(4, 8, 0.0, 10.0)
    assert hb.js_heterogeneity(s) == pytest.approx(0.0, abs=1e-12)


def test_js_disjoint_spectra_is_one():
    s = np.array([np.full(5, 1e-4), np.full(5, 1.0)])  # different histogram bins: disjoint supports
    assert hb.js_heterogeneity(s) == pytest.approx(1.0, abs=1e-12)


def test_js_increases_with_heterogeneity():
    js = [hb.js_heterogeneity(hb.block_spectra(4, 8, h, 5.0)) for h in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(js, js[1:], strict=False))


def test_block_hessian_spectrum_and_structure():
    s = hb.block_spectra(3, 4, 1.0, 5.0)
    h = hb.block_hessian(s, np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(h)), np.sort(s.ravel()), rtol=1e-10)
    assert np.abs(h[:4, 4:]).max() == 0.0 and s.max() == pytest.approx(1.0)
    for b in range(3):
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(h[4 * b:4 * b + 4, 4 * b:4 * b + 4])), s[b], rtol=1e-10)
    mixed = hb.block_hessian(s, np.random.default_rng(0), mix=True)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(mixed)), np.sort(s.ravel()), rtol=1e-10)
    assert np.abs(mixed[:4, 4:]).max() > 1e-3


def _run(opt, g_fn, x0, steps):
    state, x, path = opt.init(x0), x0, []
    for _ in range(steps):
        u, state = opt.update(g_fn(x), state, x)
        x = optax.apply_updates(x, u)
        path.append(x)
    return np.stack(path), state


def test_adam_mini_singleton_blocks_is_adam():
    with jax.enable_x64(True):
        d = 7
        a = jnp.asarray(np.random.default_rng(1).standard_normal((d, d)))
        H = a @ a.T / d + jnp.eye(d)
        x0 = jnp.asarray(np.random.default_rng(2).standard_normal(d))
        p_mini, _ = _run(adam_mini(0.05, np.arange(d), d), lambda x: H @ x, x0, 50)
        p_adam, _ = _run(optax.adam(0.05), lambda x: H @ x, x0, 50)
        assert p_mini.dtype == np.float64
        np.testing.assert_allclose(p_mini, p_adam, rtol=0, atol=1e-12)


def test_adam_mini_block_mean_matches_numpy():
    with jax.enable_x64(True):
        part = np.array([0, 0, 1, 1, 1, 2])
        gs = np.random.default_rng(3).standard_normal((5, 6))
        opt = adam_mini(0.1, part, 3, b1=0.9, b2=0.99, eps=1e-8)
        state, us = opt.init(jnp.zeros(6)), []
        for g in gs:
            u, state = opt.update(jnp.asarray(g), state)
            us.append(np.asarray(u))
        m, v = np.zeros(6), np.zeros(3)
        for t, g in enumerate(gs, 1):
            m = 0.9 * m + 0.1 * g
            v = 0.99 * v + 0.01 * np.array([np.mean(g[part == b] ** 2) for b in range(3)])
            ref = -0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v[part] / (1 - 0.99 ** t)) + 1e-8)
            np.testing.assert_allclose(us[t - 1], ref, rtol=1e-12)


def test_adam_mini_state_size():
    x = jnp.zeros(32)
    assert second_moment_size(adam_mini(1e-3, np.repeat(np.arange(4), 8), 4).init(x)) == 4
    assert second_moment_size(optax.adam(1e-3).init(x)) == 32


def test_bad_input():
    with pytest.raises(RatelabError, match="partition"):
        adam_mini(1e-3, np.array([0, 2]), 2)
    with pytest.raises(RatelabError, match="partition"):
        adam_mini(1e-3, np.array([0.0, 1.0]), 2)
    with pytest.raises(RatelabError, match="params"):
        adam_mini(1e-3, np.array([0, 1]), 2).init(jnp.zeros(3))
    with pytest.raises(RatelabError, match="heterogeneity"):
        hb.block_spectra(2, 2, -1.0, 2.0)
    with pytest.raises(RatelabError, match="spectra"):
        hb.js_heterogeneity(np.ones((1, 3)))
