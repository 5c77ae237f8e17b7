"""The finite-sum bilevel quadratic (benchmark_bilevel form): closed forms, builder validation; SOBA / SABA / F2SA
and AID's warm-started linear system on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel.finite_sum import build_finite_sum_quadratic, make_finite_sum_quadratic
from bilevel.implicit import implicit_gradient
from bilevel.stochastic import f2sa, f2sa_schedules, saba, soba
from ratelab import RatelabError
from ratelab.runner import run


@pytest.fixture(scope="module")
def prob():
    with jax.enable_x64(True):
        yield make_finite_sum_quadratic(0, n_inner=16, n_outer=16, dim_inner=5, dim_outer=3, inner_batch=2,
                                        outer_batch=2)


def test_closed_forms(prob):
    with jax.enable_x64(True):
        xs, zs = prob.solution()
        assert float(jnp.max(jnp.abs(jax.grad(prob.lower, argnums=1)(xs, zs)))) < 1e-12
        h = lambda x: prob.upper(x, prob.lower_solution(x))  # noqa: E731
        assert float(jnp.max(jnp.abs(jax.grad(h)(xs)))) < 1e-12
        x = jnp.linspace(-1.0, 1.0, 3)
        assert abs(float(h(x) - prob.h_star - prob.value(x))) < 1e-12
        assert float(prob.value(x)) > 0 and abs(float(prob.value(xs))) < 1e-12
        # the per-sample sums are the minibatch means over all indices
        full = (jnp.arange(16), jnp.arange(16))
        assert abs(float(prob.lower(x, zs, full) - prob.lower(x, zs))) < 1e-12
        assert abs(float(prob.upper(x, zs, full) - prob.upper(x, zs))) < 1e-12
        assert abs(float(prob.metrics(jnp.zeros(3), zs)["rel_subopt"]) - 1.0) < 1e-12


def _arrays(n=4, m=3, p=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    eye = lambda k, q: np.broadcast_to(np.eye(q), (k, q, q)).copy()  # noqa: E731
    return dict(Hz=eye(n, p), Hx=eye(n, d), C=0.1 * rng.standard_normal((n, d, p)), c=rng.standard_normal((n, p)),
                d=rng.standard_normal((n, d)), Fz=eye(m, p), Fx=eye(m, d), D=0.1 * rng.standard_normal((m, d, p)),
                e=rng.standard_normal((m, p)), h=rng.standard_normal((m, d)))


def test_builder_from_user_matrices():
    a = _arrays()
    p = build_finite_sum_quadratic(**a)
    assert p.n_inner == 4 and p.n_outer == 3
    bad = dict(a, C=a["C"][:, :, :2])
    with pytest.raises(RatelabError, match="C must have shape"):
        build_finite_sum_quadratic(**bad)
    asym = a["Hz"].copy()
    asym[0, 0, 1] = 0.5
    with pytest.raises(RatelabError, match="Hz must be symmetric"):
        build_finite_sum_quadratic(**dict(a, Hz=asym))
    neg = a["Hz"].copy()
    neg[:, 0, 0] = -2.0
    with pytest.raises(RatelabError, match="smallest eigenvalue is -2"):
        build_finite_sum_quadratic(**dict(a, Hz=neg))
    with pytest.raises(RatelabError, match="inner_batch"):
        build_finite_sum_quadratic(**a, inner_batch=0)
    with pytest.raises(RatelabError, match="L_inner"):
        make_finite_sum_quadratic(0, mu_inner=1.0, L_inner=0.5)


def test_saba_converges_linearly_and_frozen_memory_does_not(prob):
    with jax.enable_x64(True):
        tr = run(saba(inner_lr=0.3, outer_lr=0.1), prob, jax.random.key(0), steps=2000, log_every=100)
        rel = np.asarray(tr.metrics["rel_subopt"]).ravel()
        assert rel[-1] < 1e-10
        frozen = run(saba(inner_lr=0.3, outer_lr=0.1, refresh=False), prob, jax.random.key(0), steps=2000,
                     log_every=100)
        assert np.min(np.asarray(frozen.metrics["rel_subopt"]).ravel()[-5:]) > 1e-4
        plain = run(soba(inner_lr=0.3, outer_lr=0.1), prob, jax.random.key(0), steps=2000, log_every=100)
        assert np.min(np.asarray(plain.metrics["rel_subopt"]).ravel()[-5:]) > 1e-4
        calls = np.asarray(tr.metrics["oracle_calls"]).ravel()
        np.testing.assert_allclose(np.diff(calls), 100 * (3 * 2 + 2 * 2))


def test_f2sa_deterministic_fixed_point_is_the_penalised_solution():
    """With full batches and constant lam, F2SA's (x, y) converge to the minimiser of f(x, y) + lam (g(x, y) -
    min_z g(x, z)) (derived: its x direction is that function's x gradient by Danskin), i.e. V-PBGD's closed-form
    penalised solution at gamma = lam; its distance to x* shrinks as lam grows (O(1/lam))."""
    with jax.enable_x64(True):
        p = make_finite_sum_quadratic(1, n_inner=4, n_outer=4, dim_inner=4, dim_outer=2, full_batch=True)
        xs, _ = p.solution()
        errs = []
        for lam in (2.0, 8.0):
            s = f2sa(x_lr=0.05, y_lr=0.5 / (1 + lam), z_lr=0.5, multiplier=lam, inner_steps=3)
            tr = run(s, p, jax.random.key(0), steps=4000, log_every=4000)
            x_lam, y_lam = p.penalised_solution(lam)
            np.testing.assert_allclose(np.asarray(tr.final_state.x[0]), np.asarray(x_lam), atol=1e-8)
            np.testing.assert_allclose(np.asarray(tr.final_state.y[0]), np.asarray(y_lam), atol=1e-8)
            errs.append(float(jnp.linalg.norm(x_lam - xs)))
        assert errs[1] < 0.5 * errs[0]


def test_f2sa_schedules_decay():
    """decay 1: the stochastic-regime exponents; decay 0: every schedule constant at its k = 0 value."""
    kw = dict(alpha=0.05, gamma=0.5, lam=2.0, xi=3.0, k0=10.0)
    one, zero = f2sa_schedules(**kw), f2sa_schedules(**kw, decay=0.0)
    k = 990.0
    np.testing.assert_allclose(float(one["y_lr"](k)), 0.05 * 1000 ** (-5 / 7), rtol=1e-6)
    np.testing.assert_allclose(float(one["z_lr"](k)), 0.5 * 1000 ** (-4 / 7), rtol=1e-6)
    np.testing.assert_allclose(float(one["multiplier"](k)), 2.0 * 1000 ** (2 / 7), rtol=1e-6)
    np.testing.assert_allclose(float(one["x_lr"](k)), 0.15 * 1000 ** (-5 / 7), rtol=1e-6)
    for name, value in (("y_lr", 0.05), ("z_lr", 0.5), ("multiplier", 2.0), ("x_lr", 0.15)):
        np.testing.assert_allclose(float(zero[name](k)), value, rtol=1e-6)
    with pytest.raises(RatelabError, match="decay"):
        f2sa_schedules(**kw, decay=2.0)


def test_aid_linear_warm_start_matches_neumann_from_zero_on_first_step():
    with jax.enable_x64(True):
        p = make_finite_sum_quadratic(2, n_inner=4, n_outer=4, dim_inner=4, dim_outer=2)
        kw = dict(x_optimizer=0.1, inner_steps=3, inner_lr=0.3, neumann_steps=6)
        a = run(implicit_gradient(**kw), p, jax.random.key(0), steps=1)
        b = run(implicit_gradient(**kw, linear_warm_start=True), p, jax.random.key(0), steps=1)
        np.testing.assert_allclose(np.asarray(a.final_state.x), np.asarray(b.final_state.x), rtol=1e-12)
        with pytest.raises(RatelabError, match="linear_warm_start"):
            implicit_gradient(**kw, method="itd", linear_warm_start=True)


def test_trace_block_wall_time(tmp_path):
    from ratelab.harness import load_trace, save_trace

    p = make_finite_sum_quadratic(3, n_inner=4, n_outer=4, dim_inner=3, dim_outer=2)
    tr = run(soba(inner_lr=0.1, outer_lr=0.05), p, jax.random.key(0), steps=40, log_every=10, chunks=4)
    w = tr.block_wall_s
    assert w.shape == tr.steps.shape and np.all(np.diff(w) >= 0) and w[0] > 0
    assert w[-1] <= tr.timings["run_s"] + 1e-9
    save_trace(tmp_path / "t.npz", tr)
    np.testing.assert_array_equal(load_trace(tmp_path / "t.npz").block_wall_s, w)


def test_user_matrix_builders_for_pbgd_families():
    from bilevel.bilevel_problems import build_box_constrained, build_quadratic, make_quadratic

    with jax.enable_x64(True):
        q = make_quadratic(jax.random.key(0), dx=2, dy=3)
        p = build_quadratic(a=q.a, b=q.b, c=q.c, H=q.H, B=q.B)
        np.testing.assert_allclose(np.asarray(p.solution()[0]), np.asarray(q.solution()[0]), rtol=1e-12)
        with pytest.raises(RatelabError, match="smallest eigenvalue is -1"):
            build_quadratic(a=np.zeros(2), b=np.zeros(2), c=np.zeros(2), H=np.diag([1.0, -1.0]), B=np.eye(2))
        with pytest.raises(RatelabError, match=r"B must have shape \(2, 2\)"):
            build_quadratic(a=np.zeros(2), b=np.zeros(2), c=np.zeros(2), H=np.eye(2), B=np.eye(3))
        with pytest.raises(RatelabError, match="H must be symmetric"):
            build_quadratic(a=np.zeros(2), b=np.zeros(2), c=np.zeros(2), H=np.array([[1.0, 0.5], [0.0, 1.0]]),
                            B=np.eye(2))
        box = build_box_constrained(a=[2.0, -0.1], b=[0.0, 0.0], radius=[0.5, 1.0])
        xs, ys = box.solution()
        # coordinate 1: phi(x) = 1/2 (x - 2)^2 + 1/2 clip(x)^2 is minimised at x = a = 2 (outside the box);
        # coordinate 2: inside, x = (a + b)/2
        np.testing.assert_allclose(np.asarray(xs), [2.0, -0.05], atol=1e-12)
        np.testing.assert_allclose(np.asarray(ys), [0.5, -0.05], atol=1e-12)
        with pytest.raises(RatelabError, match="radius"):
            build_box_constrained(a=[1.0], b=[0.0], radius=-1.0)


def test_v_pbgd_floor_falls_like_gamma_to_the_minus_two():
    """Derived here: on the quadratic, the exact penalised solution x_gamma of f + gamma (g - v) has
    ||x_gamma - x*|| = Theta(1/gamma) and, since grad h(x*) = 0, h(x_gamma) - h* = Theta(1/gamma^2); V-PBGD's floor
    at fixed gamma is h(x_gamma) - h* (test_pbgd checks that V-PBGD converges to x_gamma). Band +-0.1 on the
    log-log slopes over gamma in [1e2, 1e4], registered before computing."""
    from bilevel.bilevel_problems import make_quadratic

    with jax.enable_x64(True):
        q = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), make_quadratic(jax.random.key(5), dx=3, dy=4))
        xs, _ = q.solution()
        h = lambda x: q.upper(x, q.lower_solution(x))  # noqa: E731
        gammas = np.logspace(2, 4, 9)
        gap, dist = [], []
        for gam in gammas:
            xg, _ = q.penalised_solution(gam, "value")
            gap.append(float(h(xg) - h(xs)))
            dist.append(float(jnp.linalg.norm(xg - xs)))
        slope_gap = np.polyfit(np.log(gammas), np.log(gap), 1)[0]
        slope_dist = np.polyfit(np.log(gammas), np.log(dist), 1)[0]
        assert abs(slope_gap + 2.0) < 0.1, slope_gap
        assert abs(slope_dist + 1.0) < 0.1, slope_dist
