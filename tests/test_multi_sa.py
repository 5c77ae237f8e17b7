"""Multi-sequence SA (Shen & Chen 2022): fixed points of the generators, the exact second-moment recursion, its
asymptotic constants, Monte Carlo agreement, vmapped == looped, and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.multi_sa import MSA_NONCONVEX, horizons
from ratelab import RatelabError, harmonic
from ratelab.runner import run
from rl_theory.multi_sa import (
    asymptotic_constants,
    coupled_linear,
    exact_block_second_moment,
    jacobian_at_root,
    make_bilevel_nonconvex,
    make_coupled_linear,
    make_coupled_nonlinear,
    multi_sa,
    slowest_mode,
    timescale_steps,
)
from rl_theory.sa import exact_second_moment, make_scalar_sa


def _max_abs(tup):
    return max(float(jnp.max(jnp.abs(t))) for t in tup)


@pytest.mark.parametrize("dims", [(3, 3), (2, 3, 4)])
def test_linear_root_is_the_fixed_point_and_operator_is_strongly_monotone(dims):
    with jax.enable_x64(True):
        p = make_coupled_linear(jax.random.key(0), dims=dims, coupling=0.5)
        assert _max_abs(p.mean_field(p.solution())) < 1e-10
        A = np.asarray(p.A)
    assert np.linalg.eigvalsh(0.5 * (A + A.T)).min() > 0
    # the paper's chain: block m reads only itself and its predecessor (cyclically)
    off = np.cumsum((0, *dims))
    for i in range(len(dims)):
        for j in range(len(dims)):
            blk = A[off[i]:off[i + 1], off[j]:off[j + 1]]
            assert np.any(blk != 0) == (j in (i, (i - 1) % len(dims)))


def test_nonlinear_root_and_strong_monotonicity_everywhere():
    with jax.enable_x64(True):
        p = make_coupled_nonlinear(jax.random.key(1), dim=3, lam=(1.5, 1.0), coupling=0.4)
        assert _max_abs(p.mean_field(p.solution())) < 1e-12
        mu = min(1.5 - 0.5, 1.0) - 0.4

        def jac(v):
            return jax.jacfwd(lambda u: jnp.concatenate(p.mean_field((u[:3], u[3:]))))(v)

        pts = 3.0 * jax.random.normal(jax.random.key(2), (500, 6))
        sym_min = jax.vmap(lambda v: jnp.linalg.eigvalsh(0.5 * (jac(v) + jac(v).T)).min())(pts)
        assert float(sym_min.min()) >= mu - 1e-12


def test_bilevel_fixed_points_give_the_hypergradient_and_F_is_nonconvex():
    with jax.enable_x64(True):
        p = make_bilevel_nonconvex(jax.random.key(3), dim=4)

        def fixed_point_fields(x):
            ys = p.y_star(x)
            ws = p.H_inv @ p.grad_y_f(ys)
            return (*p.mean_field((x, ys, ws)), p.grad_F(x), jax.grad(p.upper)(x))

        hx, hy, hw, gF, autodiff = jax.vmap(fixed_point_fields)(2.0 * jax.random.normal(jax.random.key(4), (50, 4)))
        np.testing.assert_allclose(hx, autodiff, atol=1e-10)
        np.testing.assert_allclose(gF, autodiff, atol=1e-10)
        assert _max_abs((hy, hw)) < 1e-10
        pts = 3.0 * jax.random.normal(jax.random.key(5), (500, 4))
        curv = jax.vmap(lambda x: jnp.linalg.eigvalsh(jax.hessian(p.upper)(x)).min())(pts)
        assert float(curv.min()) < -0.05  # F has directions of negative curvature: the main problem is nonconvex


def test_decoupled_exact_recursion_is_robbins_monro_per_block():
    """coupling = 0 and 1-D blocks: each sequence is Chung's scalar problem of rl_theory.sa."""
    p = make_coupled_linear(jax.random.key(6), dims=(1, 1), coupling=0.0, lam_min=1.0, lam_max=1.0, sigma=(1.0, 0.5))
    sched = (harmonic(1.0, 10.0), harmonic(2.0, 10.0))
    ex = exact_block_second_moment(p, sched, 2000)
    for m, (s, sig) in enumerate(zip(sched, (1.0, 0.5), strict=True)):
        e0 = float(p.z0[m][0] - p.z_star[m][0])
        ref = exact_second_moment(make_scalar_sa(lam=1.0, sigma=sig, x0=e0), s, 2000)
        np.testing.assert_allclose(ex[:, m], ref, rtol=1e-6)  # z0 rounded to float32 once


def test_exact_recursion_tends_to_the_lyapunov_constants():
    p = make_coupled_linear(jax.random.key(7), dims=(2, 3), coupling=0.5)
    assert slowest_mode(p, (1.5, 1.5)) > 0.5
    K = 200_000
    ex = exact_block_second_moment(p, timescale_steps((1.5, 1.5), (1.0, 1.0), 1.0), K)
    np.testing.assert_allclose(K * ex[-1], asymptotic_constants(p, (1.5, 1.5)), rtol=0.01)


def test_noiseless_run_is_the_deterministic_linear_recursion():
    p = make_coupled_linear(jax.random.key(8), dims=(2, 2), coupling=0.5, sigma=1e-30)
    solver = multi_sa(timescale_steps((1.0, 0.5), (1.0, 0.6), 5.0))
    state = solver.init(p, jax.random.key(0))
    e = np.concatenate([np.asarray(a) - np.asarray(b) for a, b in zip(p.z0, p.z_star, strict=True)]).astype(float)
    A = np.asarray(p.A, dtype=float)
    for k in range(30):
        state, metrics = solver.step(state, p, (jnp.zeros(2), jnp.zeros(2)))
        d = np.repeat([1.0 / (k + 5.0), 0.5 / (k + 5.0) ** 0.6], 2)
        e = e - d * (A @ e)
    np.testing.assert_allclose(float(metrics["sq_dist_to_opt"]), e @ e, rtol=1e-4)
    assert float(metrics["sq_dist_x"]) == pytest.approx(e[:2] @ e[:2], rel=1e-4)


def test_monte_carlo_matches_the_exact_second_moment():
    p = make_coupled_linear(jax.random.key(9), dims=(2, 2, 2), coupling=0.5)
    sched = timescale_steps((1.5,) * 3, (1.0,) * 3, 10.0)
    tr = run(multi_sa(sched), p, 0, steps=1000, seeds=2000, log_every=1000, x64=True)
    ex = exact_block_second_moment(p, sched, 1000)
    for m, name in enumerate(p.names):
        v = tr[f"sq_dist_{name}"][:, -1]
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - ex[-1, m]) < 4 * se, (name, v.mean(), ex[-1, m], se)


def test_vmapped_equals_looped():
    p = make_coupled_nonlinear(jax.random.key(10), dim=2)
    solver = multi_sa(timescale_steps((1.0, 1.0), (1.0, 1.0), 10.0))
    keys = jax.random.split(jax.random.key(11), 3)
    both = run(solver, p, keys, steps=200, seeds=3, log_every=50)
    for s in range(3):
        one = run(solver, p, keys[s:s + 1], steps=200, seeds=1, log_every=50)
        for k in both.metrics:
            np.testing.assert_allclose(both[k][s], one[k][0], rtol=1e-6)


def test_jacobian_at_root_of_linear_problem_is_A():
    p = make_coupled_linear(jax.random.key(12), dims=(2, 2), coupling=0.3)
    np.testing.assert_allclose(jacobian_at_root(p), np.asarray(p.A), atol=1e-6)


def test_horizons_are_multiples_of_the_block():
    cfg = MSA_NONCONVEX.config("quick")
    Ks = horizons(cfg)
    assert Ks[0] == cfg["log_every"] and Ks[-1] <= cfg["steps"] and np.all(Ks % cfg["log_every"] == 0)


def test_bad_inputs_are_rejected():
    p = make_coupled_linear(jax.random.key(0), dims=(2, 2))
    with pytest.raises(RatelabError, match="step_sizes"):
        multi_sa(0.1)
    with pytest.raises(RatelabError, match="step_sizes"):
        multi_sa((0.1, -1.0))
    with pytest.raises(RatelabError, match="one entry per sequence"):
        multi_sa((0.1, 0.1, 0.1)).init(p, jax.random.key(0))
    with pytest.raises(RatelabError, match="coupling"):
        make_coupled_linear(jax.random.key(0), dims=(2, 2), lam_min=0.1, lam_max=0.2, coupling=5.0)
    with pytest.raises(RatelabError, match="dims"):
        make_coupled_linear(jax.random.key(0), dims=(3,))
    with pytest.raises(RatelabError, match="lam and coupling"):
        make_coupled_nonlinear(jax.random.key(0), lam=(0.6, 1.0), coupling=0.2)
    with pytest.raises(RatelabError, match="scales"):
        asymptotic_constants(p, (0.1, 0.1))


def test_coupled_linear_from_a_given_matrix_computes_its_root():
    """The user's own operator: z* = A^{-1} b is computed (main's make_coupled_linear could not take a matrix)."""
    rng = np.random.default_rng(0)
    A = 2.0 * np.eye(5) + 0.3 * rng.standard_normal((5, 5))
    b = rng.standard_normal(5)
    with jax.enable_x64(True):
        p = coupled_linear(A, b, (2, 3), sigma=(1.0, 0.5), z0=np.ones(5))
        np.testing.assert_allclose(np.concatenate(p.z_star), np.linalg.solve(A, b), rtol=1e-12)
        assert _max_abs(p.mean_field(p.solution())) < 1e-12
        q = make_coupled_linear(jax.random.key(1), dims=(2, 3), A=A, b=b)
        np.testing.assert_allclose(np.asarray(q.A), A)
        np.testing.assert_allclose(np.concatenate(q.z_star), np.linalg.solve(A, b), rtol=1e-12)
        r = make_coupled_linear(jax.random.key(1), dims=(2, 3), A=A)  # b drawn, root still exact
        assert _max_abs(r.mean_field(r.solution())) < 1e-12
    with pytest.raises(RatelabError, match="strongly monotone"):
        coupled_linear(-np.eye(4), np.ones(4), (2, 2))
    with pytest.raises(RatelabError, match=r"A must have shape \(4, 4\)"):
        coupled_linear(np.eye(3), np.ones(3), (2, 2))
    with pytest.raises(RatelabError, match="b must have shape"):
        coupled_linear(np.eye(4), np.ones(3), (2, 2))


def test_float64_user_data_is_kept_or_refused_never_rounded():
    """Outside x64 mode, float64 data that float32 cannot hold raises (main rounded it silently, so that even
    run(..., x64=True) floored near 1e-7); inside x64 mode the data keep float64 and the root is exact."""
    from rl_theory.sa import linear_sa

    A = np.array([[2.0, 0.3], [0.3, 1.0]])
    b = np.array([0.1, 0.7])
    with jax.enable_x64(False):
        with pytest.raises(RatelabError, match="x64"):
            linear_sa(A, b)
        with pytest.raises(RatelabError, match="x64"):
            coupled_linear(np.kron(np.eye(2), A), np.r_[b, b], (2, 2))
        with pytest.raises(RatelabError, match="dtype float64 needs"):
            linear_sa(A, b, dtype=jnp.float64)
        assert linear_sa(A, b, dtype=jnp.float32).A.dtype == jnp.float32  # rounding asked for
        assert linear_sa(A.tolist(), b.tolist()).A.dtype == jnp.float32  # lists carry no precision
        assert make_coupled_linear(jax.random.key(0), dims=(2, 2)).A.dtype == jnp.float32
    with jax.enable_x64(True):
        p = linear_sa(A, b)
        assert p.A.dtype == jnp.float64
        assert float(jnp.max(jnp.abs(p.mean_field(p.x_star)))) < 1e-15


def test_each_control_curve_runs_in_the_claims_sweep():
    """msa-linear3's sweep holds the claim's curve and its slow-steps control's, both on the same noise: with steps
    c/(k + k0)^(2/3) the error is the larger one at the end (Theta(k^-2/3) against Theta(1/k))."""
    from experiments.multi_sa import MSA_LINEAR3

    cfg = MSA_LINEAR3.config("quick", {"seeds": 20, "steps": 2000, "log_every": 100})
    tr = MSA_LINEAR3.execute(cfg, jax.random.key(0))
    for n in ("x", "y1", "y2"):
        assert tr[f"slow_sq_dist_{n}"].shape == tr[f"sq_dist_{n}"].shape
        assert tr[f"slow_sq_dist_{n}"][:, -1].mean() > tr[f"sq_dist_{n}"][:, -1].mean()
    for claim in MSA_LINEAR3.claims(cfg):
        (control,) = claim.controls
        assert control.claim["metric"] in tr.metrics
