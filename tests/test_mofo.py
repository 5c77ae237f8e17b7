"""MoFO (optim_theory/mofo.py) and its least-squares references (optim_theory/mofo_ls.py): mathematical facts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim_theory.mofo import filtered_norm, mofo, scale_by_mofo, top_count, top_mask
from optim_theory.mofo_ls import build_instance, random_instance, references
from ratelab.errors import RatelabError


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.standard_normal((6, 7))), "b": jnp.asarray(rng.standard_normal(11))}


def _grads(params, t: int):
    return jax.tree_util.tree_map(lambda x: jnp.sin(3.0 * x + 0.7 * t) + 0.1 * x, params)


def _run(opts, params, steps: int = 8):
    """Per optimizer of ``opts``: (final params, updates of every step) of ``steps`` steps from ``params`` on a
    deterministic gradient field, all in one jitted program."""
    @jax.jit
    def go(p0):
        def one(opt):
            def body(carry, t):
                p, s = carry
                u, s = opt.update(_grads(p, t), s, p)
                return (optax.apply_updates(p, u), s), u
            (p, _), us = jax.lax.scan(body, (p0, opt.init(p0)), jnp.arange(steps))
            return p, us
        return [one(o) for o in opts]
    return go(params)


def _bitwise(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def test_fraction_one_is_adam_bitwise():
    p = _params()
    for lr in (3e-2, optax.cosine_decay_schedule(3e-2, 12)):
        (pm, um), (pa, ua) = _run([mofo(lr, fraction=1.0, b1=0.8, b2=0.99, eps=1e-6),
                                   optax.adam(lr, b1=0.8, b2=0.99, eps=1e-6)], p)
        assert _bitwise(um, ua) and _bitwise(pm, pa)


def test_schedule_equals_float_bitwise():
    p = _params(1)
    (pf, uf), (ps, us) = _run([mofo(2e-2, fraction=0.3, weight_decay=0.1),
                               mofo(optax.constant_schedule(2e-2), fraction=0.3, weight_decay=0.1)], p)
    assert _bitwise(uf, us) and _bitwise(pf, ps)


@pytest.mark.parametrize(("n", "fraction", "k"), [(100, 0.15, 15), (100, 0.29, 29), (100, 0.99, 99), (100, 1.0, 100),
                                                  (7, 0.1, 1), (42, 0.5, 21), (13, 0.6, 7)])
def test_mask_keeps_the_k_largest(n, fraction, k):
    """k = max(1, floor(alpha n)) entries, exactly those of largest |x| (distinct values), static and traced."""
    x = jnp.asarray(np.random.default_rng(n).permutation(n) - n / 2 + 0.25)
    assert top_count(n, fraction) == k
    want = np.zeros(n, bool)
    want[np.argsort(-np.abs(np.asarray(x)))[:k]] = True
    assert np.array_equal(np.asarray(top_mask(x, fraction)), want)
    if n in (100, 13) and fraction < 1:  # a traced fraction takes the sort path
        assert np.array_equal(np.asarray(jax.jit(top_mask)(x, fraction)), want)


def test_update_touches_k_coordinates_per_tensor():
    """Per leaf (partition) exactly k_leaf = floor(alpha n_leaf) nonzero updates, at the largest |m| of that leaf."""
    p = _params(2)
    opt = scale_by_mofo(0.2)
    s, update = opt.init(p), jax.jit(opt.update)
    for t in range(3):
        u, s = update(_grads(p, t), s, p)
        for leaf_u, leaf_m in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(s.mu), strict=True):
            n, k = leaf_u.size, top_count(leaf_u.size, 0.2)
            nz = np.flatnonzero(np.asarray(leaf_u).ravel())
            assert nz.size == k
            assert set(nz) == set(np.argsort(-np.abs(np.asarray(leaf_m).ravel()))[:k]) and k < n


def test_unfiltered_leaf_gets_adams_direction():
    p = _params(3)
    opt = scale_by_mofo(0.1, filtered={"w": True, "b": False})
    u, s = opt.update(_grads(p, 0), opt.init(p), p)
    ua, _ = optax.scale_by_adam().update(_grads(p, 0), optax.scale_by_adam().init(p), p)
    assert np.array_equal(np.asarray(u["b"]), np.asarray(ua["b"]))
    assert np.count_nonzero(np.asarray(u["w"])) == top_count(42, 0.1)


def test_never_selected_coordinates_stay_at_theta0():
    """Without weight decay a coordinate whose |m_t| is never in the top fraction keeps theta0 exactly; the public
    code's decoupled weight decay moves it (theta0 (1 - lr lambda)^t)."""
    inst = random_instance(np.random.default_rng(5), 10, 60)
    A, b, th0 = (jnp.asarray(v) for v in inst)

    def run(wd):
        opt = mofo(1e-2, fraction=0.1, weight_decay=wd)

        @jax.jit
        def go(th):
            def body(carry, _):
                th, s, ever = carry
                u, s = opt.update(A.T @ (A @ th - b), s, th)
                return (optax.apply_updates(th, u), s, ever | top_mask(s[0].mu, 0.1)), None
            return jax.lax.scan(body, (th, opt.init(th), jnp.zeros(60, bool)), None, length=30)[0]

        th, _, ever = go(th0)
        return np.asarray(th), np.asarray(ever)

    th, ever = run(0.0)
    assert 0 < (~ever).sum() < 60
    assert np.array_equal(th[~ever], np.asarray(th0)[~ever]) and np.all(th[ever] != np.asarray(th0)[ever])
    th_wd, ever_wd = run(0.1)
    assert 0 < (~ever_wd).sum() < 60  # never selected, yet decayed: theta0 (1 - lr lambda)^30
    np.testing.assert_allclose(th_wd[~ever_wd], np.asarray(th0)[~ever_wd] * (1 - 1e-3) ** 30, rtol=1e-12)


def test_weight_decay_is_the_codes_rule():
    """One step: p <- p (1 - lr lambda) - lr * mask * m_hat / (sqrt(v_hat) + eps), decay on every coordinate."""
    p = _params(4)
    g = _grads(p, 0)
    u, _ = mofo(0.1, fraction=0.25, weight_decay=0.5).update(g, mofo(0.1, 0.25, weight_decay=0.5).init(p), p)
    for key in p:
        x, gx = np.asarray(p[key]), np.asarray(g[key])
        d = gx / (np.abs(gx) + 1e-8)  # the first Adam step: m_hat = g, v_hat = g^2
        keep = np.abs(gx) >= np.sort(np.abs(gx).ravel())[::-1][top_count(x.size, 0.25) - 1]
        np.testing.assert_allclose(x + np.asarray(u[key]), x * (1 - 0.05) - 0.1 * np.where(keep, d, 0.0),
                                   rtol=1e-13, atol=1e-15)


def test_filtered_norm_sums_each_leafs_top_entries():
    p = _params(6)
    want = sum(np.sort(np.abs(np.asarray(x)).ravel())[::-1][:top_count(x.size, 0.3)].sum()
               for x in jax.tree_util.tree_leaves(p))
    np.testing.assert_allclose(float(filtered_norm(p, 0.3)), want, rtol=1e-14)
    np.testing.assert_allclose(float(filtered_norm(p, 1.0)), sum(np.abs(np.asarray(x)).sum() for x in p.values()),
                               rtol=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_references_are_feasible_and_minimal(seed):
    inst = random_instance(np.random.default_rng(seed), 12, 40)
    ref = references(inst)
    A, b, th0 = inst
    for th in (ref.theta_l2, ref.theta_l1):
        np.testing.assert_allclose(A @ th, b, atol=1e-9)
    d2 = ref.theta_l2 - th0
    # least l2: d2 lies in the row space (orthogonal to the null space), so every other minimiser is farther
    null = np.linalg.svd(A)[2][12:]
    np.testing.assert_allclose(null @ d2, 0, atol=1e-10)
    np.testing.assert_allclose(ref.dist_l2, np.linalg.norm(np.linalg.pinv(A) @ (b - A @ th0)), rtol=1e-10)
    # least l1: a dual certificate y with ||A^T y||_inf <= 1 and y^T r = ||d1||_1 (weak duality gives optimality)
    r = b - A @ th0
    y = np.linalg.lstsq(A[:, np.abs(ref.theta_l1 - th0) > 1e-9].T,
                        np.sign(ref.theta_l1 - th0)[np.abs(ref.theta_l1 - th0) > 1e-9], rcond=None)[0]
    assert np.abs(A.T @ y).max() <= 1 + 1e-8
    np.testing.assert_allclose(y @ r, ref.dist_l1, rtol=1e-8)
    assert ref.dist_l1 <= np.abs(d2).sum() + 1e-12 and ref.dist_l2 <= np.linalg.norm(ref.theta_l1 - th0) + 1e-12
    for v in np.random.default_rng(seed).standard_normal((5, 28)):  # other minimisers are not closer
        other = d2 + v @ null
        assert np.abs(other).sum() >= ref.dist_l1 - 1e-9 and np.linalg.norm(other) >= ref.dist_l2 - 1e-12


@pytest.mark.parametrize(("kwargs", "name"), [({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"),
                                              ({"fraction": -0.2}, "fraction"), ({"fraction": True}, "fraction"),
                                              ({"b1": 1.0}, "b1"), ({"b2": -0.1}, "b2"), ({"eps": -1.0}, "eps"),
                                              ({"weight_decay": -0.1}, "weight_decay")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(RatelabError, match=name):
        mofo(0.1, **kwargs)


def test_bad_learning_rate_and_partition():
    with pytest.raises(RatelabError, match="learning_rate"):
        mofo(-1.0)
    with pytest.raises(RatelabError, match="filtered"):
        scale_by_mofo(0.5, filtered={"w": True}).init(_params())
    with pytest.raises(RatelabError, match="A must"):
        build_instance(np.ones((3, 3)), np.ones(3), np.ones(3))
    with pytest.raises(RatelabError, match="full row rank"):
        build_instance(np.ones((2, 4)), np.ones(2), np.ones(4))


def test_experiment_claims_and_bound():
    from experiments import mofo as exp

    cfg = exp.MOFO_EXP.config("quick")
    x = cfg["log_every"] * np.arange(1, cfg["steps"] // cfg["log_every"] + 1)
    inside = x[(x >= cfg["steps"] / 100)]
    # the slope of log T / sqrt T is -1/2 + 1/ln T, between its values at the window's ends
    assert -0.5 + 1 / np.log(inside[0]) >= exp.bound_slope(cfg) >= -0.5 + 1 / np.log(inside[-1])
    ids = [c.id for c in exp.MOFO_EXP.claims(cfg)]
    assert ids == ["convergence", "closer-l1", "closer-l2", "fraction-one-is-adam"]
