"""PBGD / V-PBGD / G-PBGD (Shen, Xiao & Chen, arXiv:2302.05185): closed forms, Danskin's gradient of the value-gap
penalty, feasibility under projections, vmapped == looped sweeps, the implicit-gradient failure, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bilevel.bilevel_problems import make_box_constrained, make_many_minimisers, make_quadratic, make_toy
from bilevel.hypercleaning import make_hypercleaning
from bilevel.implicit import implicit_gradient
from bilevel.pbgd import PBGDState, g_pbgd, linear_ramp, penalty_scaled, v_pbgd
from ratelab import RatelabError
from ratelab.runner import run, sweep


def _x64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _vp(gamma, lr=0.4, inner_steps=1, inner_lr=0.25, **kw):
    return v_pbgd(x_optimizer=lr / (1 + gamma), y_optimizer=lr / (1 + gamma), gamma=gamma, inner_steps=inner_steps,
                  inner_lr=inner_lr, **kw)


@pytest.fixture(scope="module")
def quad():
    return make_quadratic(jax.random.key(3), dx=3, dy=4, mu=1.0, L=4.0)


def test_bilevel_solution_satisfies_first_order_conditions(quad):
    with jax.enable_x64(True):
        p = _x64(quad)
        xs, ys = p.solution()
        assert float(jnp.max(jnp.abs(jax.grad(p.lower, argnums=1)(xs, ys)))) < 1e-12
        F = lambda x: p.upper(x, p.lower_solution(x))  # noqa: E731
        assert float(jnp.max(jnp.abs(jax.grad(F)(xs)))) < 1e-12


@pytest.mark.parametrize(("penalty", "gamma"), [("value", 5.0), ("gradient", 2.0)])
def test_pbgd_recovers_the_closed_form_penalised_solution(quad, penalty, gamma):
    solver = _vp(gamma) if penalty == "value" else g_pbgd(x_optimizer=0.02, y_optimizer=0.02, gamma=gamma)
    tr = run(solver, quad, 0, steps=6000, seeds=2, log_every=6000, x64=True)
    with jax.enable_x64(True):
        x, y = _x64(quad).penalised_solution(gamma, penalty)
    np.testing.assert_allclose(tr.final_state.x, np.broadcast_to(x, tr.final_state.x.shape), atol=1e-9)
    np.testing.assert_allclose(tr.final_state.y, np.broadcast_to(y, tr.final_state.y.shape), atol=1e-9)
    assert np.all(tr["grad_map_sq"][:, -1] < 1e-16)


def test_penalised_solutions_approach_the_bilevel_solution_like_one_over_gamma(quad):
    with jax.enable_x64(True):
        p = _x64(quad)
        xs, ys = p.solution()

        def dist(g):
            x, y = p.penalised_solution(g)
            return float(jnp.sqrt(jnp.sum((x - xs) ** 2) + jnp.sum((y - ys) ** 2)))

        c1, c2 = 1e4 * dist(1e4), 2e4 * dist(2e4)
        assert c1 > 0 and c2 == pytest.approx(c1, rel=1e-3)
        x, y = p.penalised_solution(1e8)
        np.testing.assert_allclose(x, xs, atol=1e-6)


def test_value_gap_gradient_equals_finite_differences(quad):
    """With z = y*(x) (Danskin), V-PBGD's step direction is the gradient of f + gamma (g - v)."""
    gamma, alpha = 3.0, 1e-3
    with jax.enable_x64(True):
        p = _x64(quad)
        solver = v_pbgd(x_optimizer=alpha, y_optimizer=alpha, gamma=gamma, inner_steps=200, inner_lr=0.25)
        state = solver.init(p, jax.random.key(0))
        new, _ = solver.step(state, p, jax.random.key(1))
        gx = (state.x - new.x) / alpha
        gy = (state.y - new.y) / alpha
        F = lambda x, y: p.upper(x, y) + gamma * (p.lower(x, y) - p.value_function(x))  # noqa: E731
        h = 1e-6
        fd_x = np.array([(F(state.x + h * e, state.y) - F(state.x - h * e, state.y)) / (2 * h)
                         for e in np.eye(state.x.size)])
        fd_y = np.array([(F(state.x, state.y + h * e) - F(state.x, state.y - h * e)) / (2 * h)
                         for e in np.eye(state.y.size)])
    np.testing.assert_allclose(gx, fd_x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gy, fd_y, rtol=1e-6, atol=1e-8)


def test_vmapped_gamma_sweep_equals_looped_runs(quad):
    gammas = [2.0, 16.0]
    swept = sweep(lambda g: _vp(g), gammas, quad, 7, steps=300, seeds=2, log_every=100, x64=True)
    for i, g in enumerate(gammas):
        looped = run(_vp(g), quad, 7, steps=300, seeds=2, log_every=100, x64=True)
        for name in ("dist_to_opt", "penalty", "grad_map_sq"):
            np.testing.assert_allclose(swept[name][i], looped[name], rtol=1e-10, atol=1e-14)


def test_box_constrained_lower_level_stays_feasible_and_converges():
    p = make_box_constrained(jax.random.key(2), dim=5, radius=0.3)
    dists = []
    for gamma in (10.0, 100.0):
        solver = _vp(gamma, lr=0.5, inner_lr=0.5, project_y=p.project_y)
        tr = run(solver, p, 0, steps=4000, seeds=3, log_every=10, x64=True)
        assert np.all(tr["ll_violation"] == 0.0)
        r = float(np.float64(p.r))
        assert np.all(np.abs(tr.final_state.y) <= r) and np.all(np.abs(tr.final_state.z) <= r)
        dists.append(tr["dist_to_opt"][:, -1].mean())
    assert dists[1] < dists[0] / 5 and dists[1] < 0.02


def test_box_solution_is_the_grid_minimiser():
    p = make_box_constrained(jax.random.key(5), dim=6, radius=0.4)
    xs, _ = p.solution()
    grid = np.linspace(-4, 4, 80001)
    a, b = np.asarray(p.a), np.asarray(p.b)
    phi = 0.5 * (grid[:, None] - a) ** 2 + 0.5 * (np.clip(grid, -0.4, 0.4)[:, None] - b) ** 2
    np.testing.assert_allclose(xs, grid[np.argmin(phi, axis=0)], atol=2e-4)


def test_toy_iterates_stay_in_C_and_end_near_local_minima_of_the_hyper_objective():
    p = make_toy()
    solver = v_pbgd(x_optimizer=0.01, y_optimizer=0.01, gamma=10.0, inner_steps=1, inner_lr=0.1,
                    project_x=p.project_x)
    tr = run(solver, p, 0, steps=3000, seeds=8, log_every=3000, x64=True)
    x = tr.final_state.x
    assert np.all((x >= 0) & (x <= 3))
    mins = p.local_minimisers()
    assert mins.size == 3
    gap = np.min(np.abs(x[:, None] - mins[None]), axis=1)
    assert np.all(gap < 0.05)  # the O(1/gamma) penalty bias at gamma = 10
    assert np.all(tr["grad_map_sq"][:, -1] < 1e-12)


def test_implicit_methods_fail_where_pbgd_succeeds_on_many_minimisers():
    p = make_many_minimisers(dim=3)
    pb = run(v_pbgd(x_optimizer=0.05, y_optimizer=0.05, gamma=10.0, inner_steps=1, inner_lr=0.5), p, 0,
             steps=2000, seeds=4, log_every=2000, x64=True)
    assert np.all(pb["dist_to_opt"][:, -1] < 1e-8)
    for method in ("aid", "itd"):
        solver = implicit_gradient(x_optimizer=0.1, inner_steps=10, inner_lr=0.5, method=method)
        tr = run(solver, p, 0, steps=2000, seeds=4, log_every=2000, x64=True)
        y2 = tr.final_state.y["y2"]
        with jax.enable_x64(True):
            keys = jax.vmap(jax.random.split)(jax.random.split(jax.random.key(0), 4))[:, 0]
            y2_0 = np.asarray(jax.vmap(lambda k: _x64(p).initial(k)[1]["y2"])(keys))
        np.testing.assert_allclose(y2, y2_0, atol=1e-14)  # grad_{y2} g = 0: never moves
        # AID's fixed point is exactly (1 + y2_0)/2; ITD's truncated unroll (T = 10, warm start) scales the y1 -> x
        # sensitivity by 1 - (1 - beta)^T, a 1e-3 shift of its fixed point
        np.testing.assert_allclose(tr.final_state.x, (1 + y2_0) / 2, atol=1e-6 if method == "aid" else 1e-3)


def test_aid_matches_the_exact_hypergradient_on_a_strongly_convex_lower_level(quad):
    with jax.enable_x64(True):
        p = _x64(quad)
        solver = implicit_gradient(x_optimizer=1e-3, inner_steps=300, inner_lr=0.25, neumann_steps=400,
                                   neumann_lr=0.25)
        state = solver.init(p, jax.random.key(0))
        new, _ = solver.step(state, p, jax.random.key(1))
        exact = np.asarray(jax.grad(lambda x: p.upper(x, p.lower_solution(x)))(state.x))
        step = (np.asarray(state.x) - np.asarray(new.x)) / 1e-3
    np.testing.assert_allclose(step, exact, rtol=1e-6)


def test_rhg_restarts_the_lower_level_from_its_initial_point(quad):
    """warm_start=False: every outer step unrolls T steps from y_0, so y_T depends on x only (the authors' RHG)."""
    with jax.enable_x64(True):
        p = _x64(quad)
        solver = implicit_gradient(x_optimizer=1e-30, inner_steps=5, inner_lr=0.25, method="itd", warm_start=False)
        state = solver.init(p, jax.random.key(0))
        s1, _ = solver.step(state, p, jax.random.key(1))
        s2, _ = solver.step(s1, p, jax.random.key(2))
        np.testing.assert_allclose(np.asarray(s2.y), np.asarray(s1.y), rtol=1e-12)
        warm = implicit_gradient(x_optimizer=1e-30, inner_steps=5, inner_lr=0.25, method="itd")
        w1, _ = warm.step(warm.init(p, jax.random.key(0)), p, jax.random.key(1))
        w2, _ = warm.step(w1, p, jax.random.key(2))
        assert float(jnp.linalg.norm(w2.y - w1.y)) > 1e-6


def test_pytree_variables_and_optax_transformations():
    """Hyper-cleaning: y is a dict of arrays; Adam for x, a ramped gamma; the API holds its shapes."""
    p = make_hypercleaning(jax.random.key(0), n_train=60, n_val=40, n_test=50, hidden=8, batch_size=16)
    gamma = linear_ramp(0.2, 10)
    solver = v_pbgd(x_optimizer=optax.adam(1e-2), y_optimizer=penalty_scaled(0.1, gamma), gamma=gamma,
                    inner_steps=2, inner_lr=0.01)

    @jax.jit
    def go(key):
        state = solver.init(p, key)
        batches = solver.sample(p, key, 12)
        final, metrics = jax.lax.scan(lambda s, b: solver.step(s, p, b), state, batches)
        return state, final, metrics, batches

    state, final, m, batches = go(jax.random.key(1))
    assert isinstance(final, PBGDState) and set(final.y) == {"W1", "b1", "W2", "b2"}
    assert batches["tr"].shape == (12, 16)
    assert int(final.k) == 12 and float(m["gamma"][-1]) == pytest.approx(0.2)
    for name in ("upper_loss", "penalty", "gamma", "test_acc", "f1_corrupted"):
        assert m[name].shape == (12,) and np.all(np.isfinite(m[name]))
    assert not np.allclose(final.y["W1"], state.y["W1"])


def test_hypercleaning_corruption_and_f1():
    p = make_hypercleaning(jax.random.key(4), n_train=200, n_val=20, n_test=20, corruption=0.3)
    assert int(p.corrupted.sum()) == 60
    perfect = jnp.where(p.corrupted, -1.0, 1.0)
    m = p.metrics(perfect, p.init_params(jax.random.key(0)))
    assert float(m["f1_corrupted"]) == 1.0 and float(m["f1_clean"]) == 1.0
    m0 = p.metrics(jnp.zeros(200), p.init_params(jax.random.key(0)))
    assert float(m0["f1_corrupted"]) == 0.0


def test_gamma_schedule_is_followed():
    p = make_toy()
    solver = v_pbgd(x_optimizer=0.01, y_optimizer=0.01, gamma=linear_ramp(10.0, 50), inner_steps=1, inner_lr=0.1,
                    project_x=p.project_x)
    tr = run(solver, p, 0, steps=100, seeds=1, log_every=1)
    np.testing.assert_allclose(tr["gamma"][0], np.minimum(10.0, 10.0 * np.arange(100) / 50), rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"inner_steps": 0}, "inner_steps"),
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"gamma": -1.0}, "gamma"),
    ({"x_optimizer": -0.1}, "x_optimizer"),
    ({"y_optimizer": "fast"}, "y_optimizer"),
    ({"project_x": 3}, "project_x"),
])
def test_bad_solver_arguments(kwargs, match):
    base = {"x_optimizer": 0.1, "y_optimizer": 0.1, "gamma": 1.0, "inner_steps": 1, "inner_lr": 0.1}
    with pytest.raises(RatelabError, match=match):
        v_pbgd(**(base | kwargs))


def test_bad_problem_and_generator_arguments():
    solver = v_pbgd(x_optimizer=0.1, y_optimizer=0.1, gamma=1.0, inner_steps=1, inner_lr=0.1)
    with pytest.raises(RatelabError, match="upper"):
        solver.init(object(), jax.random.key(0))
    with pytest.raises(RatelabError, match="L must be"):
        make_quadratic(jax.random.key(0), mu=2.0, L=1.0)
    with pytest.raises(RatelabError, match="corruption"):
        make_hypercleaning(jax.random.key(0), corruption=1.0)
    with pytest.raises(RatelabError, match="method"):
        implicit_gradient(x_optimizer=0.1, inner_steps=1, inner_lr=0.1, method="newton")
    with pytest.raises(RatelabError, match="warm_start"):
        implicit_gradient(x_optimizer=0.1, inner_steps=1, inner_lr=0.1, warm_start="yes")
    with pytest.raises(RatelabError, match="lo and hi"):
        make_toy(lo=-1.0)
    with pytest.raises(RatelabError, match="hidden"):
        make_hypercleaning(jax.random.key(0), hidden=-2)
    with pytest.raises(RatelabError, match="dtype must be None or a floating dtype"):
        make_toy(dtype="int32")


def test_builders_keep_float64_outside_x64_and_refuse_a_64_bit_dtype_there():
    """Built with x64 off, float64 problem data stay float64 (NumPy arrays): a float64 run then matches the float64
    closed form to 1e-12, where float32-rounded data would leave a gap near 1e-7."""
    assert not jax.config.jax_enable_x64
    p = make_quadratic(jax.random.key(3), dx=3, dy=4)
    assert p.H.dtype == np.float64 and not isinstance(p.H, jax.Array)
    assert make_hypercleaning(jax.random.key(0), n_train=20, n_val=10, n_test=10).X_tr.dtype == np.float64
    tr = run(_vp(5.0), p, 0, steps=6000, seeds=1, log_every=6000, x64=True)
    with jax.enable_x64(True):
        x, _ = jax.tree.map(jnp.asarray, p).penalised_solution(5.0)
    np.testing.assert_allclose(tr.final_state.x[0], x, atol=1e-12)
    for make in (lambda d: make_quadratic(jax.random.key(0), dtype=d), lambda d: make_toy(dtype=d),
                 lambda d: make_many_minimisers(dtype=d), lambda d: make_box_constrained(jax.random.key(0), dtype=d),
                 lambda d: make_hypercleaning(jax.random.key(0), n_train=8, n_val=4, n_test=4, dtype=d)):
        with pytest.raises(RatelabError, match="dtype float64 needs JAX's x64"):
            make(np.float64)
        assert jax.tree.leaves(make(np.float32))[0].dtype in (jnp.float32, jnp.int32)


def test_a_step_of_one_over_gamma_is_unstable_at_every_lower_level_solution_of_the_toy():
    """The toy's negative control: the y-curvature of F_gamma = f + gamma g at (x, -x) is
    gamma (2 + 2x) - 16 cos(2 - 4x) / (1 + e^(2 - 4x)) (closed form, checked by autodiff) and at least 20.7 on
    C = [0, 3] for gamma = 10 (at x = 0), so alpha = 1/gamma gives alpha L_gamma > 2: gradient descent cannot settle
    there."""
    p, gamma = make_toy(), 10.0
    xs = np.linspace(0.0, 3.0, 3001)
    curv = gamma * (2 + 2 * xs) - 16 * np.cos(2 - 4 * xs) / (1 + np.exp(2 - 4 * xs))
    with jax.enable_x64(True):
        d2 = jax.vmap(jax.grad(jax.grad(lambda x, y: p.upper(x, y) + gamma * p.lower(x, y), argnums=1), argnums=1))
        np.testing.assert_allclose(np.asarray(d2(jnp.asarray(xs), -jnp.asarray(xs))), curv, rtol=1e-10)
    assert curv.min() > 20.7 and curv.min() / gamma > 2
