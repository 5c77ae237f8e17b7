"""The NumPy ports of the authors' loops (``benchmarks/``) and ratelab compute the same iterates, on tiny instances
(no timings: the benchmarks time them at the papers' sizes)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import attention_kernels  # noqa: E402
import bc_reset_cliff  # noqa: E402
import mbtail_reset_cliff  # noqa: E402
import pbgd_hyperclean  # noqa: E402
import radmm_spca  # noqa: E402
import rfedsvrg_kpca  # noqa: E402

import ratelab as rl  # noqa: E402
from bilevel.hypercleaning import make_hypercleaning  # noqa: E402
from bilevel.pbgd import linear_ramp, penalty_scaled, v_pbgd  # noqa: E402
from optim_theory import attention as att  # noqa: E402
from riemannian.fed_problems import federated_pca  # noqa: E402
from riemannian.federated import rfedavg, rfedsvrg  # noqa: E402
from riemannian.sparse_problems import sparse_pca  # noqa: E402
from rl_theory.tabular import expected_return, reset_cliff  # noqa: E402


def test_authors_rfedsvrg_and_rfedavg_loops_match_ratelab_iterate_for_iterate():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((6, 12, 8))
    A = Z @ np.swapaxes(Z, 1, 2)
    x0 = np.linalg.qr(rng.standard_normal((12, 2)))[0]
    key = jax.random.key(3)
    with jax.enable_x64(True):
        problem = federated_pca(A, manifold="stiefel", rank=2, x0=x0)
        authors = rfedsvrg_kpca.AuthorsKPCA(A, np.asarray(problem.x_star))
        for kind, make, eta in (("rfedsvrg", rfedsvrg, 2e-3), ("rfedavg", rfedavg, 1e-3)):
            solver = make(eta, local_steps=2, clients_per_round=3)
            trace = rl.run(solver, problem, key, steps=5, seeds=1, x64=True)
            batches = rfedsvrg_kpca.client_batches(solver, problem, key, 5)
            x_np, fvals, _, _ = authors.run(kind, x0, batches, eta, 2)
            np.testing.assert_allclose(np.asarray(trace.final_state.x)[0], x_np, atol=1e-12)
            np.testing.assert_allclose(trace["gap"][0] + float(problem.f_star), fvals, rtol=1e-12)


def test_authors_radmm_loop_matches_ratelab_iterate_for_iterate():
    n, p = 20, 3
    rng = np.random.default_rng(1)
    Q = radmm_spca.orth(rng.standard_normal((n, n)))
    H = Q @ np.diag(np.abs(rng.standard_normal(n))) @ Q.T
    X0 = radmm_spca.orth(rng.standard_normal((n, p)))
    X_np, fvals = radmm_spca.authors_radmm(H, X0, 0.01, 40)
    with jax.enable_x64(True):
        problem = sparse_pca(H, mu=0.01, p=p, x0=X0)
        trace = rl.run(radmm_spca.ratelab_solver(False), problem, 0, steps=len(fvals) - 1, seeds=1, x64=True)
    np.testing.assert_allclose(np.asarray(trace.final_state.x)[0], X_np, atol=1e-12)
    np.testing.assert_allclose(trace["objective"][0], fvals[1:], rtol=1e-12)


def test_authors_vpbgd_loop_matches_ratelab_in_float32():
    problem = make_hypercleaning(jax.random.key(0), n_train=60, n_val=40, n_test=50, features=16, classes=4,
                                 corruption=0.5, dtype=jnp.float32)
    data = {"Xtr": np.asarray(problem.X_tr), "ytr": np.asarray(problem.b_tr), "Xval": np.asarray(problem.X_val),
            "yval": np.asarray(problem.b_val), "Xte": np.asarray(problem.X_test), "yte": np.asarray(problem.b_test),
            "clean": ~np.asarray(problem.corrupted)}
    y0 = problem.init_params(jax.random.key(1))
    gamma = linear_ramp(pbgd_hyperclean.GAMMA_MAX, 15)
    base = v_pbgd(x_optimizer=penalty_scaled(pbgd_hyperclean.LRX, gamma),
                  y_optimizer=penalty_scaled(pbgd_hyperclean.LRY, gamma), gamma=gamma, inner_steps=1,
                  inner_lr=pbgd_hyperclean.LR_INNER)
    solver = base._replace(init=lambda prob, key: base.init(prob, key)._replace(y=y0, z=y0))
    trace = rl.run(solver, problem, 0, steps=20, seeds=1, log_every=10)
    ref = pbgd_hyperclean.authors_loop(data, np.asarray(y0["W"]), np.asarray(y0["b"]), 20, 15)
    np.testing.assert_allclose(np.asarray(trace.final_state.x)[0], ref["x"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(trace.final_state.y["W"])[0], ref["W"], rtol=1e-4, atol=1e-6)


def test_authors_cliff_walking_is_ratelabs_reset_cliff():
    rho = bc_reset_cliff.authors_rho(bc_reset_cliff.S, bc_reset_cliff.N)
    T, r = bc_reset_cliff.authors_env(rho, opt=3)
    rng = np.random.default_rng(2)
    pi = rng.random((bc_reset_cliff.S, bc_reset_cliff.A, bc_reset_cliff.H))
    pi /= pi.sum(axis=1, keepdims=True)
    with jax.enable_x64(True):
        mdp = reset_cliff(bc_reset_cliff.S, bc_reset_cliff.A, bc_reset_cliff.H, rho,
                          expert_actions=np.full(bc_reset_cliff.S - 1, 3))
        np.testing.assert_allclose(np.asarray(mdp.P), T)
        value = float(expected_return(mdp, jnp.asarray(np.moveaxis(pi, 2, 0))))
    assert np.isclose(value, bc_reset_cliff.policy_evaluation(T, r, rho, pi), rtol=1e-12)


def test_authors_mbtail_loop_and_ratelab_compute_the_same_estimate_bonus_and_gap():
    """One pass of the MB-TAIL code's ``main`` at K = 100 (NumPy port): its estimate d_hat, its last RF-Express W
    and its AIL gap are ratelab's (``prefix_estimator``, ``rf_express_bonus``, ``ail_multiplicative_weights``) on
    the same trajectories, counts, model and initial reward."""
    rho = bc_reset_cliff.authors_rho(bc_reset_cliff.S, bc_reset_cliff.N)
    keep: dict = {}
    gap = mbtail_reset_cliff.authors_once(100, rho, np.random.RandomState(3), keep)
    assert 0 <= gap <= bc_reset_cliff.H
    with jax.enable_x64(True):
        diffs = mbtail_reset_cliff.exact_checks(keep, rho)
    assert all(v <= 1e-9 for v in diffs.values()), diffs


def test_attention_numpy_loop_is_ratelabs_gd_over_its_first_steps():
    """The hand-written backpropagation through both kernels is jax.grad's, and the NumPy GD loop (its own D, no
    padding) follows ratelab's padded, vmapped GD: the same losses over the first steps, for D below the padding
    width too."""
    X0, Y0, W0 = att.make_data(1, 2, 3, 6, 2)
    for d in (4, 6):
        X, Y, W, M = att.embed(X0, Y0, W0, d, 6)
        for kernel in att.KERNELS:
            assert attention_kernels.grad_gap(W, X, Y, kernel) <= 1e-12
            curves, _, _ = attention_kernels.ratelab_gd(W, X, Y, M, kernel, 8)
            for i in range(2):
                own = tuple(w[i][:d, :d] for w in W)
                mine = attention_kernels.numpy_gd(own, X[..., :d], Y[..., :d], kernel, 8)
                np.testing.assert_allclose(mine, curves[i], rtol=1e-10)
