"""PDHG for LP (optim_theory.pdhg): planted optima and random LPs against scipy's linprog (HiGHS), the PageRank LP's
only feasible point against power iteration, the PDHG-Net layer identity, the derived local theory, and bad input."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from optim_theory import pdhg as P
from ratelab.errors import RatelabError


def _linprog(lp: P.LP):
    A, b, c, eq = (np.asarray(v, dtype=float) for v in lp)
    e, i = eq > 0, eq == 0
    res = linprog(c, A_ub=-A[i] if i.any() else None, b_ub=-b[i] if i.any() else None,
                  A_eq=A[e] if e.any() else None, b_eq=b[e] if e.any() else None, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return res


def _random_lp(seed: int, m: int, n: int) -> P.LP:
    """A random feasible, bounded LP with mixed rows and an unknown optimum: b = A x0 - slack for x0 > 0 (feasible),
    c = A^T y0 + positive with y0 >= 0 on the inequality rows (dual feasible, so bounded)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    eq = (np.arange(m) < m // 2).astype(float)
    b = A @ rng.uniform(0.1, 1.0, n) - (1 - eq) * rng.uniform(0.0, 1.0, m)
    y0 = rng.standard_normal(m)
    y0 = np.where(eq > 0, y0, np.abs(y0))
    return P.LP(A, b, A.T @ y0 + rng.uniform(0.1, 1.0, n), eq)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_optimum_is_linprogs(seed):
    pl = P.planted_lp(seed, 10, 30, 0.05)
    res = _linprog(pl.lp)
    np.testing.assert_allclose(res.x, pl.x_star, atol=1e-7)
    assert res.fun == pytest.approx(pl.lp.c @ pl.x_star, rel=1e-9)
    assert pl.lp.c @ pl.x_star == pytest.approx(pl.lp.b @ pl.y_star, rel=1e-12)  # strong duality, planted
    np.testing.assert_allclose(np.linalg.svd(pl.lp.A[:, pl.x_star > 0], compute_uv=False)[::-1],
                               pl.basis_singular_values, rtol=1e-10)


def test_restarted_pdhg_matches_linprog_on_planted_and_random_lps():
    """One compiled program: restarted PDHG on two planted LPs and two random mixed-row LPs (zero-padded to one
    shape, which is exact) reaches linprog's (HiGHS) optimum; without restarts it is still far from the planted one
    (ill-conditioned basis), while on the well-conditioned random LPs plain PDHG gets close too."""
    from experiments.pdhg import _padded

    m, n = 12, 30
    lps = [P.planted_lp(s, 10, 30, 0.05).lp for s in (3, 4)] + [_random_lp(s, m, n) for s in (5, 6)]
    stacked = _padded(lps, m, n)
    eta = 0.9 / np.array([np.linalg.norm(A, 2) for A in stacked.A])
    with jax.enable_x64(True):
        def both(lp, e):
            return jax.vmap(lambda r: P.restarted_pdhg(lp, eta=e, steps=4096, restart=r))(jnp.array([1.0, 0.0]))

        out = jax.jit(jax.vmap(both))(P.LP(*(jnp.asarray(v) for v in stacked)), jnp.asarray(eta))
    for k, lp in enumerate(lps):
        ref = _linprog(lp)
        x, x_plain = (np.asarray(out["x"][k, a])[:lp.A.shape[1]] for a in (0, 1))
        assert lp.c @ x == pytest.approx(ref.fun, rel=1e-8)
        np.testing.assert_allclose(x, ref.x, atol=1e-7)
        assert float(out["kkt"][k, 0, -1]) < 1e-9 * float(out["kkt0"][k, 0])
        if k < 2:  # planted, s_min = 0.05: the no-restart control is far from the optimum
            assert np.abs(x_plain - ref.x).max() > 1e-3
        assert float(out["restarts"][k, 1, -1]) == 0.0 and float(out["restarts"][k, 0, -1]) > 5


def test_pagerank_lps_only_feasible_point_is_power_iterations():
    pr = P.pagerank_lp(7, 60, 3, 0.85)
    x_pr = P.power_iteration(pr.S, pr.damping)
    np.testing.assert_allclose(pr.S.sum(axis=0), 1.0, rtol=1e-12)  # no dangling node: column-stochastic
    A, b, _, eq = pr.lp
    r = A @ x_pr - b
    assert np.abs(r).max() < 1e-14  # every row active at the PageRank vector: the slacks are all zero
    np.testing.assert_allclose(x_pr, (1 - 0.85) / 60 * np.linalg.solve(np.eye(60) - 0.85 * pr.S, np.ones(60)),
                               rtol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(2):  # any objective: HiGHS lands on the same, only, feasible point
        lp = P.LP(A, b, rng.standard_normal(60), eq)
        np.testing.assert_allclose(_linprog(lp).x, x_pr, atol=1e-9)
    nosum = P.pagerank_lp(7, 60, 3, 0.85, with_sum=False)  # the control: a cone, other feasible points exist
    far = _linprog(P.LP(nosum.lp.A, nosum.lp.b, np.full(60, 1e-3), nosum.lp.eq))
    assert np.all(far.x >= x_pr - 1e-9)
    x_up = 2 * x_pr
    assert np.all(nosum.lp.A @ x_up - nosum.lp.b >= -1e-15) and np.abs(x_up - x_pr).max() > 1e-3


def test_pdhg_net_layer_with_pdhg_weights_is_one_pdhg_step_and_without_extrapolation_is_not():
    """On the PageRank LP (inequality rows: relu dual) and a planted LP (equality rows; zero-padded to the same shape,
    one compiled program), on 3 channels, against the solver's step and a NumPy restatement of PDHG."""
    from experiments.pdhg import _padded

    lps = _padded([P.pagerank_lp(2, 40).lp, P.planted_lp(2, 10, 30, 0.05).lp], 41, 40)
    rng = np.random.default_rng(1)
    X, Y = rng.uniform(0, 1, (2, 40, 3)), rng.standard_normal((2, 41, 3))
    tau, sigma = 0.3, 0.2

    def layers(lp, X, Y):
        exact = P.pdhg_net_layer(P.pdhg_layer_params(3, tau, sigma), lp, X, Y)
        arrow = P.pdhg_net_layer(P.pdhg_layer_params(3, tau, sigma, extrapolate=False), lp, X, Y)
        step = jax.vmap(lambda x, y: P.pdhg_step(lp, x, y, tau, sigma), in_axes=(1, 1), out_axes=1)(X, Y)
        return exact, arrow, step

    with jax.enable_x64(True):
        out = jax.jit(jax.vmap(layers))(P.LP(*map(jnp.asarray, lps)), jnp.asarray(X), jnp.asarray(Y))
    (Xl, Yl), (Xa, Ya), (Xs, Ys) = jax.tree_util.tree_map(np.asarray, out)
    for k in range(2):
        A, b, c, eq = (v[k] for v in lps)
        assert np.abs(Xl[k] - Xs[k]).max() <= 1e-12 and np.abs(Yl[k] - Ys[k]).max() <= 1e-12
        assert np.abs(Ya[k] - Ys[k]).max() > 1e-3  # Arrow-Hurwicz: off by sigma A (x' - x)
        np.testing.assert_allclose(Ya[k] - Ys[k], np.where(eq[:, None] > 0, sigma * A @ (Xs[k] - X[k]), Ya[k] - Ys[k]),
                                   atol=1e-12)
        Xn = np.maximum(X[k] - tau * (c[:, None] - A.T @ Y[k]), 0)
        Yn = Y[k] + sigma * (b[:, None] - A @ (2 * Xn - X[k]))
        Yn = np.where(eq[:, None] > 0, Yn, np.maximum(Yn, 0))
        np.testing.assert_allclose(Xl[k], Xn, atol=1e-12)
        np.testing.assert_allclose(Yl[k], Yn, atol=1e-12)
    assert np.any(lps.eq[0] == 0) and np.all(lps.eq[1] == 1)


@pytest.mark.parametrize("a", [0.01, 0.3, 0.9, 1.2, 4 / 3 - 1e-6, 4 / 3 + 1e-6, 2.0])
def test_local_mode_matches_the_2x2_block_and_diverges_past_two_over_root_three(a):
    eta, s, omega = 0.7, math.sqrt(a) / 0.7, 1.7
    tau, sigma = eta / omega, eta * omega
    M = np.array([[1.0, tau * s], [-sigma * s, 1 - 2 * sigma * tau * s * s]])  # derived block (error coordinates)
    ev = np.linalg.eigvals(M)
    mod, ang = P.local_mode(eta, s)
    assert np.abs(ev).max() == pytest.approx(mod, rel=1e-6)
    if a < 1:
        assert np.abs(np.angle(ev)).max() == pytest.approx(ang, rel=1e-9)
    assert (mod > 1) == (eta * s > 2 / math.sqrt(3))
    assert P.local_divergence_eta(s) * s == pytest.approx(2 / math.sqrt(3))


def test_block_is_the_pdhg_error_map_on_a_square_system():
    """x' - x* and y' - y* of one PDHG step on A x = b (interior x, no projection active) follow the 2x2 blocks."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((4, 4))
    x_star, y_star = rng.uniform(5, 6, 4), rng.standard_normal(4)
    lp = P.LP(A, A @ x_star, A.T @ y_star, np.ones(4))
    ex, ey = 1e-3 * rng.standard_normal(4), 1e-3 * rng.standard_normal(4)
    with jax.enable_x64(True):
        x1, y1 = jax.jit(lambda lp, x, y: P.pdhg_step(lp, x, y, 0.1, 0.2))(P.LP(*map(jnp.asarray, lp)),
                                                                            x_star + ex, y_star + ey)
    J = np.block([[np.eye(4), 0.1 * A.T], [-0.2 * A, np.eye(4) - 2 * 0.2 * 0.1 * A @ A.T]])
    np.testing.assert_allclose(np.concatenate([np.asarray(x1) - x_star, np.asarray(y1) - y_star]),
                               J @ np.concatenate([ex, ey]), atol=1e-14)


def test_fit_window_and_speed_on_exact_geometric_curves():
    from experiments.pdhg import fit_window, iters_per_decade_speed

    x = 64.0 * np.arange(1, 101)
    curve = 10 ** (-x / 400)  # 400 iterations per decade
    i1, i2 = fit_window(curve)
    assert curve[i1] <= 1e-3 < curve[i1 - 1] and curve[i2] <= 1e-9 < curve[i2 - 1]
    assert iters_per_decade_speed(x, curve, 400.0) == pytest.approx(1.0, rel=1e-12)
    assert iters_per_decade_speed(x, 10 ** (x / 1000), 400.0) == pytest.approx(-0.4, rel=1e-12)
    assert iters_per_decade_speed(x, np.full(100, 1e30), 400.0) == pytest.approx(0.0, abs=1e-12)
    # a curve that first reaches 1e-3 at the last check: fitted on the last two checks, its exact slope, no warning
    late = 10 ** (-3.0 * x / x[-1])
    assert fit_window(late) == (98, 99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iters_per_decade_speed(x, late, x[-1] / 3) == pytest.approx(1.0, rel=1e-9)


def test_predicted_iters_per_decade_from_the_sinc_root():
    u = P._sinc_root(0.2)
    assert math.sin(u) / u == pytest.approx(0.2, abs=1e-12)
    _, theta = P.local_mode(0.01, 1.0)
    t = math.ceil(2 * u / theta / 64) * 64
    assert P.predicted_iters_per_decade(0.01, 1.0) == pytest.approx(t * math.log(10) / math.log(5), rel=1e-12)
    assert P.plain_iters_per_decade(0.01, 1.0) == pytest.approx(math.log(10) / -math.log(math.sqrt(1 - 1e-4)))


def test_padding_is_exact():
    from experiments.pdhg import _padded

    lp = _random_lp(9, 5, 8)
    pad = P.LP(*(v[0] for v in _padded([lp], 7, 11)))

    def both(small, big):
        s = P.pdhg_step(small, jnp.ones(8), jnp.ones(5), 0.1, 0.1)
        b = P.pdhg_step(big, jnp.pad(jnp.ones(8), (0, 3)), jnp.pad(jnp.ones(5), (0, 2)), 0.1, 0.1)
        return s, b, P.kkt_error(small, *s), P.kkt_error(big, *b)

    with jax.enable_x64(True):
        small, big, k_small, k_big = jax.jit(both)(P.LP(*map(jnp.asarray, lp)), P.LP(*map(jnp.asarray, pad)))
    np.testing.assert_array_equal(np.asarray(big[0])[:8], np.asarray(small[0]))
    assert np.all(np.asarray(big[0])[8:] == 0) and np.all(np.asarray(big[1])[5:] == 0)
    assert float(k_big) == pytest.approx(float(k_small), rel=1e-14)
    assert np.linalg.norm(pad.A, 2) == pytest.approx(np.linalg.norm(lp.A, 2), rel=1e-14)


def test_bad_input_is_named():
    lp = P.planted_lp(0, 3, 6, 0.5).lp
    with pytest.raises(RatelabError, match="steps"):
        P.restarted_pdhg(lp, eta=0.1, steps=100)
    with pytest.raises(RatelabError, match="eta"):
        P.restarted_pdhg(lp, eta=-1.0, steps=128)
    with pytest.raises(RatelabError, match="restart"):
        P.restarted_pdhg(lp, eta=0.1, steps=128, restart=2.0)
    with pytest.raises(RatelabError, match="beta_necessary"):
        P.restarted_pdhg(lp, eta=0.1, steps=128, beta_necessary=0.1)
    with pytest.raises(RatelabError, match="n must exceed m"):
        P.planted_lp(0, 5, 5, 0.1)
    with pytest.raises(RatelabError, match="s_min"):
        P.planted_lp(0, 3, 6, 0.0)
    with pytest.raises(RatelabError, match="damping"):
        P.pagerank_lp(0, 20, damping=1.0)
    with pytest.raises(RatelabError, match="b must have shape"):
        P.check_lp(P.LP(np.ones((2, 3)), np.ones(3), np.ones(3), np.ones(2)))
    with pytest.raises(RatelabError, match="eq must"):
        P.check_lp(P.LP(np.ones((2, 3)), np.ones(2), np.ones(3), np.array([0.5, 1.0])))


@pytest.mark.parametrize("overrides, match", [({"steps": 100}, "steps"), ({"step_factor": 1.5}, "step_factor"),
                                              ({"seeds": 1}, "seeds"), ({"n": 10}, "n must exceed m")])
def test_experiment_config_rejects_bad_settings_before_compute(overrides, match):
    from ratelab.harness import plan
    from ratelab.registry import get

    with pytest.raises(RatelabError, match=match):
        plan(get("pdhg-lp"), "quick", overrides)


@pytest.mark.slow
def test_the_textbook_step_bound_is_not_tight_and_factor_three_diverges():
    """The measurement behind pdhg-lp's divergent-step control (module docstring): on the 64 planted instances of
    seeds 100-163, eta = 1.5 / |A|_2 (past the textbook bound eta |A|_2 < 1) still converges on most, and
    eta = 3 / |A|_2 blows up on all."""
    pls = [P.planted_lp(s, 10, 30, 0.05).lp for s in range(100, 164)]
    lps = P.LP(*(np.stack([np.asarray(lp[i], dtype=float) for lp in pls]) for i in range(4)))
    norm = np.array([np.linalg.norm(A, 2) for A in lps.A])
    with jax.enable_x64(True):
        def arms(lp, na):
            return jax.vmap(lambda f: P.restarted_pdhg(lp, eta=f / na, steps=6400))(jnp.array([1.5, 3.0]))

        out = jax.jit(jax.vmap(arms))(P.LP(*map(jnp.asarray, lps)), jnp.asarray(norm))
    final = np.asarray(out["kkt"][:, :, -1]) / np.asarray(out["kkt0"])
    assert np.sum(final[:, 0] < 1e-8) >= 48  # measured 58 of 64
    assert np.all(np.asarray(out["kkt"][:, 1, -1]) == P.BLOW_UP)
