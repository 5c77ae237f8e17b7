"""AiPOD (Xiao et al., AISTATS 2023): closed forms of the constrained quadratic bilevel problem, the implicit
gradient against finite differences, the projected Neumann series, the deterministic limit, feasibility in float64,
projection counts of the efficient variants, vmapped == looped, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from bilevel.aipod import (
    aipod,
    aipod_variant,
    e_aipod,
    e_aipod_small_batch,
    expected_lower_projections,
    implicit_gradient,
    mean_oracle_curvature,
    mean_oracle_limit,
    projected_hessian_solve,
    projected_neumann,
    quarter_decay,
    samples_per_step,
    sqrt_decay,
    stationarity,
    upper_projection_counts,
)
from bilevel.eq_problems import build_problem, make_federated_bilevel, make_quadratic_bilevel, solve_lower
from ratelab import RatelabError
from ratelab.runner import run, sweep


def _problem(seed=0, **kw):
    with jax.enable_x64(True):
        return make_quadratic_bilevel(jax.random.key(seed), **kw)


def _np(a):
    return np.asarray(a, dtype=float)


def _F(p, x):
    """F(x) = f(x, y*(x)) with y*(x) from the lower-level KKT system (NumPy; independent of Phi, phi)."""
    y = solve_lower(_np(p.Q), _np(p.P), _np(p.q), _np(p.A), _np(p.H), _np(p.c), x)
    return float(0.5 * x @ _np(p.Fxx) @ x + x @ _np(p.Fxy) @ y + 0.5 * y @ _np(p.Fyy) @ y + _np(p.fx) @ x
                 + _np(p.fy) @ y)


@pytest.mark.parametrize("cond", [2.0, 50.0])
def test_closed_form_solution_minimises_F_on_the_constraint_set(cond):
    """x* from the upper KKT system equals a direct numerical minimisation of F over {B x = e}."""
    p = _problem(1, lower_cond=cond, upper_cond=cond)
    B, e = _np(p.B), _np(p.e)
    x_p, VB = np.linalg.lstsq(B, e, rcond=None)[0], scipy.linalg.null_space(B)
    res = scipy.optimize.minimize(lambda z: _F(p, x_p + VB @ z), np.zeros(VB.shape[1]), method="BFGS",
                                  options={"gtol": 1e-10})
    x_num = x_p + VB @ res.x
    np.testing.assert_allclose(_np(p.x_star), x_num, atol=1e-5)
    assert np.max(np.abs(B @ _np(p.x_star) - e)) < 1e-10
    with jax.enable_x64(True):
        assert float(stationarity(p, p.x_star)) < 1e-20
        y = p.y_star(p.x_star)
        assert float(p.lower_violation(p.x_star, y)) < 1e-10
        # Lower-level optimality on Y(x): the gradient of g is normal to the constraint set (P_A grad = 0).
        assert float(jnp.max(jnp.abs(p.PA @ p.grad_y_g(p.x_star, y)))) < 1e-10


def test_implicit_gradient_matches_finite_differences_on_the_constraint_set():
    """v' ∇F(x) = d/dt F(x + t v) for v in null(B), F evaluated through a numerical lower-level solve; the
    -H' A^+' ∇_y f term (absent in the authors' synthetic script) is needed when H != 0."""
    p = _problem(2, coupling=1.0)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = p.project_x(jnp.asarray(rng.standard_normal(p.dim_x)))
        g = _np(implicit_gradient(p, x, p.y_star(x)))
        np.testing.assert_allclose(g, _np(p.grad_F(x)), atol=1e-10)
        gy = p.grad_y_f(x, p.y_star(x))
        without = g + _np(p.H.T @ p.Ap.T @ gy)
    VB = scipy.linalg.null_space(_np(p.B))
    h = 1e-5
    fd = np.array([(_F(p, _np(x) + h * v) - _F(p, _np(x) - h * v)) / (2 * h) for v in VB.T])
    np.testing.assert_allclose(VB.T @ g, fd, atol=1e-7)
    assert np.max(np.abs(VB.T @ without - fd)) > 1e-3


def test_projected_neumann_series_converges_to_the_projected_inverse():
    p = _problem(3, lower_cond=5.0)
    V, Q = _np(p.V), _np(p.Q)
    lam = np.linalg.eigvalsh(V.T @ Q @ V)
    eta = 1.0 / lam.max()
    with jax.enable_x64(True):
        v = jnp.asarray(np.random.default_rng(1).standard_normal(p.dim_y))
        exact = _np(projected_hessian_solve(p, p.Q, v))
        np.testing.assert_allclose(exact, V @ np.linalg.solve(V.T @ Q @ V, V.T @ _np(v)), atol=1e-12)
        for n in (5, 20, 80):
            approx = _np(projected_neumann(p, jnp.zeros((n, p.dim_y)), v, eta))
            # Error of the N-term series: V (V'QV)^-1 (I - eta V'QV)^N V' v.
            bound = (1 - eta * lam.min()) ** n / lam.min() * np.linalg.norm(_np(v))
            assert np.linalg.norm(approx - exact) <= bound * (1 + 1e-9) + 1e-13
        assert np.linalg.norm(approx - exact) < 1e-10


# One solver object per Hessian-inverse mode: runs on problems of the same shapes reuse its compiled code.
_DETERMINISTIC = {"solve": aipod(0.5, 1.0, lower_steps=3, hessian_inverse="solve"),
                  "neumann": aipod(0.5, 1.0, lower_steps=3, neumann_steps=40)}


@pytest.mark.parametrize(("cond", "inverse"), [(2.0, "solve"), (30.0, "solve"), (2.0, "neumann")])
def test_deterministic_limit_recovers_the_closed_form(cond, inverse):
    """sigma = 0: AiPOD with constant steps converges to (x*, y*(x*)) of the KKT systems (well- and
    ill-conditioned; the 40-term Neumann series has truncation error (1 - mu/L)^40 < 1e-12 here)."""
    p = _problem(4, lower_cond=cond, upper_cond=cond, sigma=0.0, hess_sigma=0.0)
    tr = run(_DETERMINISTIC[inverse], p, 0, steps=3000, seeds=1, log_every=3000, x64=True)
    x, y = tr.final_state.x[0], tr.final_state.y[0]
    np.testing.assert_allclose(x, _np(p.x_star), atol=1e-7)
    with jax.enable_x64(True):
        y_star = _np(p.y_star(p.x_star))
    np.testing.assert_allclose(y, y_star, atol=1e-7)
    assert tr["grad_norm_sq"][0, -1] < 1e-14


def test_iterates_stay_feasible_in_float64_and_vmapped_equals_looped():
    p = _problem(5)
    solver = aipod(sqrt_decay(0.5), sqrt_decay(1.0), neumann_steps=4)
    keys = jax.random.split(jax.random.key(7), 3)
    tr = run(solver, p, keys, steps=4000, seeds=3, log_every=1000, x64=True)
    assert tr["max_violation"].max() < 1e-6
    B, e = _np(p.B), _np(p.e)
    assert np.abs(tr.final_state.x @ B.T - e).max() < 1e-6
    with jax.enable_x64(True):
        assert tr["grad_norm_sq"][:, -1].mean() < float(stationarity(p, p.x0)) / 10
    one = run(solver, p, keys[1:2], steps=4000, seeds=1, log_every=1000, x64=True)
    np.testing.assert_allclose(one.final_state.x[0], tr.final_state.x[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one["grad_norm_sq"][0], tr["grad_norm_sq"][1], rtol=1e-12)


def test_efficient_variants_count_projections_and_stay_feasible_when_projecting():
    p = _problem(6)
    a, b = sqrt_decay(0.5), sqrt_decay(1.0)
    prob = quarter_decay(1.0)
    steps = 2000
    t1 = run(e_aipod(a, b, projection_interval=4, lower_prob=prob, neumann_steps=4), p, 0, steps=steps, seeds=8,
             log_every=500, x64=True)
    t2 = run(e_aipod_small_batch(a, b, lower_prob=prob, neumann_steps=4), p, 0, steps=steps, seeds=8,
             log_every=500, x64=True)
    ks = t1.steps
    np.testing.assert_array_equal(t1["upper_projections"][0], upper_projection_counts(ks, interval=4))
    np.testing.assert_array_equal(t2["upper_projections"][0], upper_projection_counts(ks, rate=1.0, power=0.75))
    assert upper_projection_counts([steps], rate=1.0, power=0.75)[0] == np.floor(steps ** 0.75)
    expected = expected_lower_projections(ks, prob, 1)
    for t in (t1, t2):
        got = t["lower_projections"]  # Binomial-like counts: mean within 5 standard errors of S sum_k p_k
        se = np.sqrt(expected) / np.sqrt(got.shape[0])
        assert np.all(np.abs(got.mean(axis=0) - expected) < 5 * se)
        assert t["max_violation"].max() < 1e-6
        assert np.all(np.isfinite(t["grad_norm_sq"]))


def test_samples_per_step_counts_oracle_calls():
    assert samples_per_step(lower_steps=3, lower_batch=4, neumann_steps=8) == 12 + 2 + 9
    assert samples_per_step(lower_steps=1, hessian_inverse="solve") == 1 + 2 + 2


def test_federated_projections_are_client_averages():
    with jax.enable_x64(True):
        p = make_federated_bilevel(jax.random.key(0), clients=4, dim_x=2, dim_y=3)
        x = jnp.arange(8.0)
        avg = x.reshape(4, 2).mean(axis=0)
        np.testing.assert_allclose(p.project_x(x), np.tile(avg, 4), atol=1e-12)
        y = jnp.arange(12.0)
        np.testing.assert_allclose(p.project_y(x, y), np.tile(y.reshape(4, 3).mean(axis=0), 4), atol=1e-12)
        xs, ys = p.solution()
        assert float(p.upper_violation(xs)) < 1e-10 and float(p.lower_violation(xs, ys)) < 1e-10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_quadratic_bilevel(jax.random.key(0), dim_x=3, upper_constraints=3), "upper_constraints must"),
        (lambda: make_quadratic_bilevel(jax.random.key(0), lower_cond=0.5), "lower_cond must be >= 1"),
        (lambda: make_quadratic_bilevel(jax.random.key(0), dim_y=0), "dim_y must be an integer"),
        (lambda: make_federated_bilevel(jax.random.key(0), clients=1), "clients must be >= 2"),
        (lambda: build_problem(Fxx=np.eye(2), Fxy=np.zeros((2, 2)), Fyy=np.eye(2), fx=np.zeros(2), fy=np.zeros(2),
                               Q=np.diag([1.0, -1.0]), P=np.zeros((2, 2)), q=np.zeros(2), B=[[1.0, 0.0]], e=[0.0],
                               A=[[1.0, 0.0]], H=np.zeros((1, 2)), c=[0.0]),
         "Q must be positive definite on null"),
        (lambda: build_problem(Fxx=np.eye(2), Fxy=np.zeros((2, 2)), Fyy=np.eye(2), fx=np.zeros(2), fy=np.zeros(2),
                               Q=np.eye(2), P=np.zeros((2, 2)), q=np.zeros(2), B=[[1.0, 0.0], [2.0, 0.0]],
                               e=[0.0, 1.0], A=[[1.0, 0.0]], H=np.zeros((1, 2)), c=[0.0]),
         "e must lie in the range of B"),
        (lambda: build_problem(Fxx=np.eye(2), Fxy=np.zeros((2, 2)), Fyy=np.eye(2), fx=np.zeros(3), fy=np.zeros(2),
                               Q=np.eye(2), P=np.zeros((2, 2)), q=np.zeros(2), B=[[1.0, 0.0]], e=[0.0],
                               A=[[1.0, 0.0]], H=np.zeros((1, 2)), c=[0.0]),
         r"Fxx must have shape \(3, 3\)"),
        (lambda: aipod(-0.1, 1.0), "step_size must be"),
        (lambda: aipod(0.1, 1.0, lower_steps=0), "lower_steps must be an integer"),
        (lambda: aipod(0.1, 1.0, hessian_inverse="cg"), "hessian_inverse must be one of"),
        (lambda: e_aipod(0.1, 1.0, projection_interval=0, lower_prob=0.5), "projection_interval must be"),
        (lambda: e_aipod(0.1, 1.0, projection_interval=2, lower_prob=1.5), r"lower_prob must lie in \(0.0, 1.0\]"),
        (lambda: e_aipod_small_batch(0.1, 1.0, lower_prob=0.5, projection_rate=2.0), "projection_rate must lie"),
        (lambda: aipod(0.1, 1.0, constraint_term=2.0), "constraint_term must lie"),
        (lambda: aipod_variant(0.1, 1.0, projection_power=1.5), "projection_power must lie"),
        (lambda: aipod_variant(0.1, 1.0, lower_batch=0), "lower_batch must be an integer"),
        (lambda: build_problem(
            Fxx=np.eye(2), Fxy=np.zeros((2, 2)), Fyy=np.eye(2), fx=np.zeros(2), fy=np.zeros(2), Q=np.eye(2),
            P=np.zeros((2, 2)), q=np.zeros(2), B=[[1.0, 0.0]], e=[0.0], A=[[1.0, 0.0]], H=np.zeros((1, 2)), c=[0.0],
            dtype="int32"), "dtype must be None or a floating dtype"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, message):
    with pytest.raises(RatelabError, match=message):
        call()


def test_the_biased_oracle_converges_to_its_closed_form_floor():
    """sigma = 0: without the -H' A^+' grad_y f term AiPOD converges to x~ of mean_oracle_limit (not x*), where the
    stationarity is the predicted floor ||P_X grad F(x~)||^2 > 0; with the term, x~ = x* up to the Neumann bias."""
    p = _problem(4, sigma=0.0, hess_sigma=0.0)
    solver = aipod(0.5, 1.0, lower_steps=3, neumann_steps=40, constraint_term=0.0)
    tr = run(solver, p, 0, steps=3000, seeds=1, log_every=3000, x64=True)
    x_t = mean_oracle_limit(p, neumann_steps=40, constraint_term=0.0)
    np.testing.assert_allclose(tr.final_state.x[0], x_t, atol=1e-7)
    with jax.enable_x64(True):
        floor = float(stationarity(p, jnp.asarray(x_t)))
    assert floor > 1e-3
    assert tr["grad_norm_sq"][0, -1] == pytest.approx(floor, rel=1e-6)
    np.testing.assert_allclose(mean_oracle_limit(p, neumann_steps=40), _np(p.x_star), atol=1e-10)
    assert mean_oracle_curvature(p, neumann_steps=40) > 0


def test_one_program_for_the_variants_equals_the_constructors():
    """The experiments' sweep over a table of traced variant parameters runs the same iterations as e_aipod and
    e_aipod_small_batch built one by one (the table's rows: method x step power x constraint weight)."""
    from experiments.aipod import _QUICK, _maker, _rows

    cfg = {**_QUICK, "neumann_steps": 4}
    p = _problem(0, **{k: cfg[k] for k in ("dim_x", "dim_y", "upper_constraints", "lower_constraints")})
    kw = dict(steps=300, seeds=1, log_every=100, aggregate="mean", x64=True)
    swept = sweep(_maker(cfg, 3), _rows(cfg, 3)[1:], p, 3, **kw)
    a, b, q = sqrt_decay(cfg["alpha"]), sqrt_decay(cfg["beta"]), quarter_decay(cfg["lower_prob_scale"])
    common = dict(lower_steps=cfg["lower_steps"], neumann_steps=cfg["neumann_steps"])
    singles = (e_aipod(a, b, projection_interval=cfg["interval"], lower_prob=q, **common),
               e_aipod_small_batch(a, b, lower_prob=q, projection_rate=cfg["projection_rate"], **common))
    for i, solver in enumerate(singles):
        one = run(solver, p, 3, **kw)
        for name in ("grad_norm_sq", "upper_projections", "lower_projections", "max_violation_any"):
            np.testing.assert_allclose(swept[name][i], one[name], rtol=1e-9, atol=1e-13)


def test_float64_data_keep_their_precision_outside_x64():
    """Built with x64 off, the float64 projectors stay float64 (NumPy arrays), so a float64 run keeps the iterates
    feasible to ~1e-14 rather than float32's ~1e-7; an explicit float64 dtype without x64 is refused."""
    args = dict(Fxx=np.eye(3), Fxy=np.zeros((3, 3)), Fyy=np.eye(3), fx=np.ones(3) / 3, fy=np.zeros(3), Q=np.eye(3),
                P=np.eye(3) / 7, q=np.ones(3) / 3, B=[[1.0, 2.0, 3.0]], e=[0.1], A=[[3.0, 1.0, 1.0]],
                H=[[1.0, 1.0, 0.3]], c=[0.7], sigma=0.1, hess_sigma=0.01)
    assert not jax.config.jax_enable_x64
    p = build_problem(**args)
    assert p.PB.dtype == np.float64 and p.Ap.dtype == np.float64
    tr = run(aipod(sqrt_decay(0.5), sqrt_decay(1.0), neumann_steps=4), p, 0, steps=500, seeds=2, log_every=500,
             x64=True)
    assert tr["max_violation"].max() < 1e-12
    with pytest.raises(RatelabError, match="build_problem: dtype float64 needs JAX's x64"):
        build_problem(**args, dtype=np.float64)
    assert build_problem(**args, dtype=np.float32).PB.dtype == jnp.float32
    with jax.enable_x64(True):
        assert isinstance(build_problem(**args).PB, jax.Array)
