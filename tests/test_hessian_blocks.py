"""Block heterogeneity (optim_theory.hessian_blocks) and Adam-mini (optim_theory.adam_mini): the JS measure on known
spectra, the block Hessian's spectrum and structure, Adam-mini with singleton blocks is optax.adam in float64,
Adam-mini's state size, the block-mean second moment against a NumPy restatement, bad input; and the paper's
quadratic instance of experiments/hessian_blocks.py (the global spectrum fixed over heterogeneity levels, GD's
closed-form count and its invariance, the blockwise step)."""

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
    def body(carry, _):
        x, state = carry
        u, state = opt.update(g_fn(x), state, x)
        x = optax.apply_updates(x, u)
        return (x, state), x

    (_, state), path = jax.jit(lambda x: jax.lax.scan(body, (x, opt.init(x)), None, length=steps))(x0)
    return np.asarray(path), state


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
        def body(state, g):
            u, state = opt.update(g, state)
            return state, u

        us = np.asarray(jax.jit(lambda g: jax.lax.scan(body, opt.init(jnp.zeros(6)), g)[1])(jnp.asarray(gs)))
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


# --- the paper's quadratic instance (experiments/hessian_blocks.py) ---------------------------------------------

def _tiny(**kw):
    from experiments import hessian_blocks as e
    return e, {**e._C, "block_dim": 3, "n_own": (0, 3), "seeds": 2, "eps": 1e-3, "steps": 300, "n_lr": 3, **kw}


def test_range_spectra_inside_the_scaled_ranges():
    g = hb.range_spectra(hb.PAPER_RANGES, 5, np.random.default_rng(0))
    r = np.asarray(hb.PAPER_RANGES) / 5000.0
    assert g.shape == (3, 5) and np.all(g >= r[:, :1]) and np.all(g <= r[:, 1:]) and g.max() <= 1.0


@pytest.mark.parametrize("n_own", [0, 3, 6, 9])
def test_assign_blocks_is_a_permutation_with_the_right_shares(n_own):
    g = hb.range_spectra(hb.PAPER_RANGES, 9, np.random.default_rng(1))
    spec, src = hb.assign_blocks(g, n_own)
    np.testing.assert_array_equal(np.sort(src), np.arange(27))  # every eigenvalue used once: same global spectrum
    np.testing.assert_array_equal(spec.ravel(), g.ravel()[src])
    rng_of = src // 9  # the range each block slot came from
    for b in range(3):
        counts = np.bincount(rng_of.reshape(3, 9)[b], minlength=3)
        expected = np.full(3, (9 - n_own) // 3)
        expected[b] += n_own
        np.testing.assert_array_equal(counts, expected)


def test_rotated_blocks_eigenvectors_and_structure():
    spec, _ = hb.assign_blocks(hb.range_spectra(hb.PAPER_RANGES, 4, np.random.default_rng(2)), 4)
    for mix in (False, True):
        H, q = hb.rotated_blocks(spec, np.random.default_rng(3), mix=mix)
        np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-12)
        np.testing.assert_allclose(H @ q, q * spec.ravel(), atol=1e-12)
        assert (np.abs(H[:4, 4:]).max() == 0.0) != mix


def test_gd_iterations_are_the_closed_form_and_the_same_at_every_level():
    """Derived fact behind gd-invariant: with the global spectrum and the eigen-coordinates fixed, GD's loss curve
    f_t = sum_i lambda_i c_i^2 (1 - eta lambda_i)^(2t) / 2 does not depend on how the eigenvalues sit in blocks."""
    e, cfg = _tiny()
    p = e.problems(cfg)
    eta = 1.5
    with jax.enable_x64(True):
        run = jax.vmap(jax.vmap(lambda H, x: e.iterations(optax.sgd(eta), H, x, cfg["eps"], cfg["steps"])))
        its = np.asarray(jax.jit(run)(jnp.asarray(p["H"]), jnp.asarray(p["x0"])))
    for s in range(2):
        lam, vec = np.linalg.eigh(p["H"][s, 0])
        c = vec.T @ p["x0"][s, 0]
        f = np.array([0.5 * np.sum(lam * c ** 2 * (1 - eta * lam) ** (2 * t)) for t in range(cfg["steps"])])
        assert its[s, 0] == its[s, 1] == int(np.argmax(f <= cfg["eps"] * f[0]))
        for lv in range(2):  # the same (eigenvalue, coordinate) pairs at both levels, and in the dense rotation
            for H, x in ((p["H"][s, lv], p["x0"][s, lv]), (p["Hd"][s, lv], p["xd"][s, lv])):
                lam2, vec2 = np.linalg.eigh(H)
                np.testing.assert_allclose(lam2, lam, atol=1e-12)
                np.testing.assert_allclose(np.abs(vec2.T @ x), np.abs(c), atol=1e-9)


def test_blockwise_gd_on_scalar_blocks_converges_in_one_step():
    """c / L_b with c = 1 on blocks that are multiples of the identity is Newton's step: f(x_1) = 0."""
    e, _ = _tiny()
    lam = np.repeat([1e-3, 0.1, 1.0], 2)
    with jax.enable_x64(True):
        opt = e.optimizer("gd-blockwise", 1.0, jnp.asarray(1.0 / lam), 3, 2)
        curve = e.loss_curve(opt, jnp.diag(jnp.asarray(lam)), jnp.ones(6), 3)
    assert float(curve[0]) == 1.0 and float(curve[1]) < 1e-28


def test_experiment_registered_with_validated_config():
    e, cfg = _tiny()
    exp = e.EXPERIMENT
    assert all(c.controls for c in exp.claims(exp.config("quick")))
    e._validate(cfg)
    for bad in ({"n_own": (0, 2)}, {"n_own": (1, 3)}, {"lr_max": 1e-4}):
        with pytest.raises(RatelabError, match="n_own|lr_max"):
            e._validate({**cfg, **bad})
    with pytest.raises(RatelabError, match="method"):
        e.optimizer("sgd", 0.1, 1.0, 3, 3)
    with pytest.raises(RatelabError, match="ranges"):
        hb.range_spectra(((2.0, 1.0), (3.0, 4.0)), 3, np.random.default_rng(0))


def test_blockwise_matvec_is_the_dense_product():
    """The experiment's blockwise product of a block-diagonal H equals H @ x; an off-block entry is refused."""
    import experiments.hessian_blocks as hbx

    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((3, 4, 4))
    H = np.zeros((12, 12))
    for b in range(3):
        H[4 * b:4 * b + 4, 4 * b:4 * b + 4] = blocks[b]
    x = rng.standard_normal(12)
    np.testing.assert_array_equal(hbx.diagonal_blocks(H, 3), blocks)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(hbx.matvec(jnp.asarray(blocks), jnp.asarray(x))), H @ x, rtol=1e-12)
    H[0, 11] = 1e-3
    with pytest.raises(RatelabError, match="block diagonal"):
        hbx.diagonal_blocks(H, 3)


def test_transformer_partition_follows_heads_layers_and_tokens():
    """Adam-mini's transformer partition: embedding and output one block per coordinate, a query or key block is
    exactly one (layer, head) slice, every other tensor one block per layer; the count matches the closed form and
    the optax state."""
    from jax.flatten_util import ravel_pytree

    from bilevel import transformer as tfm
    from optim_theory.adam_mini import transformer_block_count, transformer_partition

    cfg = tfm.get_config("tiny", d_model=16, n_heads=2, d_ff=32, vocab=8)
    params = tfm.init_params(jax.random.PRNGKey(0), cfg)
    part, n = transformer_partition(params)
    flat, unravel = ravel_pytree(params)
    assert part.shape == flat.shape and np.array_equal(np.unique(part), np.arange(n))
    assert n == transformer_block_count(cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads)
    tree = jax.tree_util.tree_map(np.asarray, unravel(jnp.asarray(part, jnp.float32)))
    for name in ("embed", "unembed"):
        ids = jax.tree_util.tree_leaves(tree[name])[0]
        assert np.unique(ids).size == ids.size  # one block per coordinate
    for name in ("wq", "wk"):
        ids = tree["layers"]["attn"][name]  # [layers, d, heads, d_head]
        for layer in range(cfg.n_layers):
            for head in range(cfg.n_heads):
                block = ids[layer, :, head, :]
                assert np.unique(block).size == 1
                assert np.sum(part == block.flat[0]) == block.size  # nothing else in that block
    wv = tree["layers"]["attn"]["wv"]
    assert [np.unique(wv[layer]).size for layer in range(cfg.n_layers)] == [1] * cfg.n_layers
    assert np.unique(wv).size == cfg.n_layers
    assert second_moment_size(adam_mini(1e-3, part, n).init(jnp.zeros(flat.size))) == n


def _scale_cfg(**kw):
    from experiments import hessian_blocks as e
    return e, {**e._S, "seeds": 2, "block_dim": 4, **kw}


def test_scale_levels_differ_by_one_scalar_per_block():
    e, cfg = _scale_cfg()
    p = e.scale_problems(cfg)
    blocks = e.diagonal_blocks(p["H"], cfg["n_blocks"])  # [seeds, levels, B, m, m]
    ratio = blocks / blocks[:, :1]
    for lvl, h in enumerate(cfg["spread"]):
        scale = hb.block_spectra(cfg["n_blocks"], cfg["block_dim"], h, cfg["cond"]).max(axis=1)
        np.testing.assert_allclose(ratio[:, lvl], np.broadcast_to(scale[None, :, None, None], ratio[:, lvl].shape),
                                   rtol=1e-10)
    np.testing.assert_array_equal(p["x0"][:, 1:], p["x0"][:, :1].repeat(len(cfg["spread"]) - 1, axis=1))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(p["Hd"][0, 2])), np.sort(p["spectra"][0, 2].ravel()),
                               rtol=1e-9, atol=1e-14)
    assert p["js"][0, 0] == pytest.approx(0.0, abs=1e-12) and p["js"][0, -1] > 0.5


def test_adam_iterates_do_not_see_a_power_of_two_block_scale():
    """m / sqrt(v) is unchanged when a block's gradient is multiplied by a scalar (eps = 0; powers of two scale
    exactly in floating point): the iterates agree bit for bit, while GD's do not."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        q = hb.block_rotation(3, 4, rng)
        spec = np.geomspace(0.1, 1.0, 4)[None, :].repeat(3, 0)
        s = np.repeat(2.0 ** -np.arange(0, 9, 4), 4)
        H0 = jnp.asarray((q * spec.ravel()) @ q.T)
        Hs = jnp.asarray(s[:, None] * np.asarray(H0))
        x0 = jnp.asarray(rng.standard_normal(12))
        adam = optax.adam(0.05, eps=0.0)
        p0, _ = _run(adam, lambda x: H0 @ x, x0, 40)
        ps, _ = _run(adam, lambda x: Hs @ x, x0, 40)
        np.testing.assert_array_equal(p0, ps)
        g0, _ = _run(optax.sgd(0.5), lambda x: H0 @ x, x0, 40)
        gs, _ = _run(optax.sgd(0.5), lambda x: Hs @ x, x0, 40)
        assert np.abs(g0 - gs).max() > 1e-3


def test_scale_experiment_validates_and_counts_on_a_tiny_instance():
    e, cfg = _scale_cfg(n_lr=3, steps=300, seeds=2)
    e._validate_scale(cfg)
    for bad, word in (({"spread": (1.0, 2.0)}, "spread"), ({"spread": (0.0,)}, "spread"),
                      ({"cond": 0.5}, "cond"), ({"lr_max": 1e-4}, "lr_max")):
        with pytest.raises(RatelabError, match=word):
            e._validate_scale({**cfg, **bad})
    best, lr, _ = e.tuned_iterations(cfg, e.scale_problems(cfg), e.SCALE_METHODS, cfg["n_blocks"], "t")
    assert set(best) == set(e.SCALE_METHODS) and best["gd"].shape == (2, 3)
    assert np.all((best["gd"] >= 1) & (best["gd"] <= cfg["steps"]))
    assert np.all(np.isin(lr["lr_adam"], e._grid(cfg)))
