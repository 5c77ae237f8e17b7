"""Riemannian ADMM: the PCA limit (mu = 0), feasibility, the Moreau envelope, the closed-form y-update, fixed
points, the subgradient baseline and input checks (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.radmm import RADMM_COMPARE, RADMM_COMPLEXITY, RADMM_ODL, RADMM_SSC, tail_rate
from ratelab import RatelabError, power_decay
from ratelab.runner import run
from riemannian.admm import (
    augmented_lagrangian,
    linear_rate,
    radmm,
    stationarity_terms,
    theory_parameters,
    y_update,
)
from riemannian.baselines import riemannian_subgradient
from riemannian.manifolds import Sphere, Stiefel
from riemannian.sparse_problems import (
    make_dictionary_learning,
    make_sparse_pca,
    make_sparse_spectral_clustering,
    moreau_envelope,
    moreau_grad,
    pca_optimum,
    sparse_pca,
    sparsity,
)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _spca(mu=0.1, n=12, p=2, m=8, seed=0):
    return make_sparse_pca(jax.random.key(seed), m=m, n=n, p=p, mu=mu)


def _iterate(solver, problem, steps, key=0):
    def body(state, _):
        state, metrics = solver.step(state, problem, None)
        return state, metrics

    state = solver.init(problem, jax.random.key(key))
    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(state)


def test_mu_zero_reduces_to_pca_and_finds_the_top_eigenspace():
    """h = 0: the multiplier stays 0, y = A x, and the x-step is Riemannian gradient descent on -tr(X^T C X), whose
    minimum over St(n, p) is minus the sum of the p largest eigenvalues (Ky Fan), attained by the top eigenspace."""
    problem = _spca(mu=0.0)
    value, v = pca_optimum(problem)
    state, metrics = _iterate(radmm(step_size=0.05, rho=1.0, gamma=0.1), problem, 3000)
    assert float(metrics["objective"][-1]) == pytest.approx(value, abs=1e-9)
    x = np.asarray(state.x)
    np.testing.assert_allclose(x @ x.T, v @ v.T, atol=1e-6)
    np.testing.assert_allclose(state.lam, 0.0, atol=1e-15)
    np.testing.assert_allclose(state.y, state.x, atol=1e-15)


def test_iterates_stay_on_the_stiefel_manifold():
    problem = _spca(mu=0.3, n=15, p=3)
    for retraction in ("qr", "polar", "exp"):
        _, metrics = _iterate(radmm(**theory_parameters(0.05), retraction=retraction), problem, 500)
        assert float(jnp.max(metrics["feasibility"])) < 1e-12, retraction


def test_moreau_envelope_gradient_matches_finite_differences_and_huber():
    """grad h_gamma = (y - prox(y)) / gamma; for mu ||.||_1, h_gamma is mu times the Huber function."""
    problem = _spca(mu=0.7)
    gamma = 0.3
    y = jax.random.normal(jax.random.key(3), (12, 2))
    g = moreau_grad(problem, y, gamma)
    h = 1e-6
    e = jnp.zeros_like(y)
    env = jax.jit(lambda z: moreau_envelope(problem, z, gamma))
    fd = np.array([[(env(y + h * e.at[i, j].set(1.0)) - env(y - h * e.at[i, j].set(1.0))) / (2 * h)
                    for j in range(2)] for i in range(12)])
    np.testing.assert_allclose(g, fd, atol=1e-8)
    np.testing.assert_allclose(g, jax.grad(lambda z: moreau_envelope(problem, z, gamma))(y), atol=1e-12)
    t = 0.7 * gamma
    huber = jnp.where(jnp.abs(y) <= t, y**2 / (2 * gamma), 0.7 * (jnp.abs(y) - t / 2))
    assert float(moreau_envelope(problem, y, gamma)) == pytest.approx(float(jnp.sum(huber)), rel=1e-12)


def test_closed_form_y_update_is_the_subproblem_minimiser():
    """y solves min_y h_gamma(y) + <lambda, A x - y> + rho/2 ||A x - y||^2: its gradient vanishes there, and the
    updated multiplier lambda + rho (A x - y) equals grad h_gamma(y)."""
    problem = _spca(mu=0.5)
    kx, kl = jax.random.split(jax.random.key(4))
    x = problem.manifold.random_point(kx)
    lam = 0.3 * jax.random.normal(kl, x.shape)
    rho, gamma = 2.5, 0.2
    y = y_update(problem, problem.lin(x), lam, rho, gamma)
    grad_y = jax.grad(lambda z: augmented_lagrangian(problem, x, z, lam, rho, gamma))(y)
    np.testing.assert_allclose(grad_y, 0.0, atol=1e-12)
    np.testing.assert_allclose(lam + rho * (problem.lin(x) - y), moreau_grad(problem, y, gamma), atol=1e-12)


def test_converged_iterate_is_stationary_and_multiplier_is_the_envelope_gradient():
    problem = _spca(mu=0.2)
    par = theory_parameters(0.05)
    state, metrics = _iterate(radmm(**par), problem, 4000)
    assert float(metrics["stationarity"][-1]) < 1e-8
    kkt, cons = stationarity_terms(problem, state.x, state.y, state.lam)
    assert float(kkt) < 1e-8 and float(cons) < 1e-8
    np.testing.assert_allclose(state.lam, moreau_grad(problem, state.y, par["gamma"]), atol=1e-12)
    # lambda is a subgradient of h at z = prox_{gamma h}(y): |lambda_ij| <= mu, = mu sign(z_ij) where z_ij != 0
    z = problem.prox_h(state.y, par["gamma"])
    assert float(jnp.max(jnp.abs(state.lam))) <= 0.2 + 1e-12
    nz = np.abs(np.asarray(z)) > 0
    np.testing.assert_allclose(np.asarray(state.lam)[nz], 0.2 * np.sign(np.asarray(z)[nz]), atol=1e-12)


def test_the_objective_is_below_the_subgradient_baselines_on_a_common_start_and_lagrangian_decreases():
    problem = _spca(mu=0.2)
    par = theory_parameters(0.05)
    _, ma = _iterate(radmm(**par), problem, 3000)
    lag = np.asarray(ma["lagrangian"])
    assert np.all(np.diff(lag[100:]) <= 1e-10)  # monotone once the penalty dominates (sufficient decrease)
    _, mb = _iterate(riemannian_subgradient(power_decay(0.05, 1.0, 0.5)), problem, 3000)
    assert float(ma["objective"][-1]) <= float(mb["objective"][-1]) + 1e-3


def test_subgradient_direction_is_the_riemannian_gradient_when_mu_is_zero():
    problem = _spca(mu=0.0)
    solver = riemannian_subgradient(0.01)
    state = solver.init(problem, jax.random.key(0))
    new, metrics = solver.step(state, problem, None)
    rg = problem.manifold.rgrad(problem.f, problem.x0)
    np.testing.assert_allclose(new.x, problem.manifold.retr(problem.x0, -0.01 * rg), atol=1e-14)
    assert float(metrics["subgrad_norm"]) == pytest.approx(float(jnp.linalg.norm(rg)), rel=1e-12)


def test_seeds_are_independent_runs_with_random_starts():
    """run's vmapped seeds equal single runs started from the same keys (random_init draws x0 from the key)."""
    problem = _spca(mu=0.1)
    solver = radmm(**theory_parameters(0.1), random_init=True)
    keys = jax.random.split(jax.random.key(7), 2)
    both = run(solver, problem, keys, steps=200, seeds=2, log_every=50, x64=True)
    for s in range(2):
        one = run(solver, problem, keys[s:s + 1], steps=200, seeds=1, log_every=50, x64=True)
        np.testing.assert_allclose(both["objective"][s], one["objective"][0], rtol=1e-12)


def test_generators():
    problem = _spca(mu=0.4, n=10, p=3, m=6)
    a_cols = np.linalg.eigvalsh(np.asarray(problem.C))
    assert np.all(a_cols > -1e-12) and np.trace(np.asarray(problem.C)) == pytest.approx(10.0)  # unit-norm columns
    assert problem.manifold == Stiefel(10, 3)
    assert float(problem.manifold.feasibility(problem.x0)) < 1e-13
    odl, q = make_dictionary_learning(jax.random.key(1), n=6, samples=50, theta=0.3)
    np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-12)
    assert odl.B.shape == (50, 6)
    assert float(sparsity(jnp.array([0.0, 1e-7, 0.5, 1.0]))) == 0.5


def test_spectral_clustering_map_adjoint_and_the_mu_zero_limit():
    """J_c(U)^T Z for c(U) = U U^T equals jax.vjp; with mu = 0 RADMM minimises tr(U^T L U) over St(n, k), whose
    minimum is the sum of the k smallest eigenvalues of L (Ky Fan)."""
    problem, planted = make_sparse_spectral_clustering(jax.random.key(0), k=3, per_cluster=6, mu=0.0)
    u = problem.x0
    z = jax.random.normal(jax.random.key(1), (18, 18))
    _, vjp = jax.vjp(problem.lin, u)
    np.testing.assert_allclose(problem.lin_vjp(u, z), vjp(z)[0], atol=1e-13)
    np.testing.assert_allclose(planted @ planted, planted, atol=1e-13)  # an orthogonal projector of rank k
    assert float(jnp.trace(planted)) == pytest.approx(3.0)
    _, metrics = _iterate(radmm(**theory_parameters(0.05, c_eta=0.25)), problem, 3000)
    evals = np.linalg.eigvalsh(np.asarray(problem.L))
    assert float(metrics["objective"][-1]) == pytest.approx(float(evals[:3].sum()), abs=1e-9)
    assert float(metrics["stationarity"][-1]) < 1e-8


def test_sparse_pca_from_the_users_matrices_uses_the_papers_half_trace():
    """F(X) = -1/2 tr(X^T H X) + mu ||X||_1 (the RADMM code's convention), from H or from a data matrix A (H = A^T A),
    with the checks: shape, symmetry, positive semidefiniteness (the smallest eigenvalue in the error)."""
    a = np.random.default_rng(0).standard_normal((6, 5))
    p = sparse_pca(data=a, mu=0.3, p=2)
    q = sparse_pca(a.T @ a, mu=0.3, p=2)
    np.testing.assert_allclose(np.asarray(p.C), a.T @ a, atol=1e-12)
    x = np.asarray(p.x0)
    expected = -0.5 * np.trace(x.T @ a.T @ a @ x) + 0.3 * np.abs(x).sum()
    assert float(p.objective(p.x0)) == pytest.approx(expected, rel=1e-12)
    assert float(q.objective(q.x0)) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(np.asarray(p.egrad_f(p.x0)), -(a.T @ a) @ x, atol=1e-12)
    with pytest.raises(RatelabError, match=r"H must hold symmetric matrices: max \|H_ij - H_ji\|"):
        sparse_pca(np.triu(np.ones((4, 4))), mu=0.1)
    with pytest.raises(RatelabError, match="H must be positive semidefinite: its smallest eigenvalue is -1"):
        sparse_pca(np.diag([2.0, 1.0, -1.0]), mu=0.1)
    with pytest.raises(RatelabError, match=r"H must have shape \[d, d\]"):
        sparse_pca(np.ones((3, 4)), mu=0.1)
    with pytest.raises(RatelabError, match="exactly one of H"):
        sparse_pca(mu=0.1)
    with pytest.raises(RatelabError, match="x0 must lie on the manifold"):
        sparse_pca(a.T @ a, mu=0.1, p=2, x0=np.ones((5, 2)))


def test_radmm_and_the_subgradient_method_default_to_the_manifolds_retraction_on_the_sphere():
    """QR is no retraction of the sphere: the solvers take the manifold's first one (normalisation) by default."""
    a = np.random.default_rng(1).standard_normal((8, 6))
    problem = sparse_pca(data=a, mu=0.05, manifold="sphere")
    assert problem.manifold == Sphere(6)
    for solver in (radmm(**theory_parameters(0.05)), riemannian_subgradient(power_decay(0.05, 1.0, 0.5))):
        _, metrics = _iterate(solver, problem, 300)
        assert float(jnp.max(metrics["feasibility"])) < 1e-13
    _, metrics = _iterate(radmm(step_size=0.05, rho=1.0, gamma=0.1), sparse_pca(data=a, mu=0.0, manifold="sphere"),
                          3000)
    top = np.linalg.eigvalsh(a.T @ a)[-1]
    assert float(metrics["objective"][-1]) == pytest.approx(-0.5 * top, abs=1e-9)  # mu = 0: the top eigenvector


def test_float64_data_built_without_x64_keeps_its_precision():
    """Built with x64 off, the float64 H stays float64 (not truncated to float32), so a float64 run reaches the
    PCA optimum to 1e-12 rather than to float32 rounding."""
    a = np.random.default_rng(2).standard_normal((10, 7))
    with jax.enable_x64(False):
        problem = sparse_pca(data=a, mu=0.0, p=2)
        assert problem.C.dtype == np.float64
    tr = run(radmm(step_size=0.05, rho=1.0, gamma=0.1), problem, 0, steps=4000, seeds=1, log_every=4000, x64=True)
    value, _ = pca_optimum(problem)
    assert value == pytest.approx(-0.5 * np.linalg.eigvalsh(a.T @ a)[-2:].sum(), rel=1e-14)
    assert abs(float(tr["objective"][0, -1]) - value) < 1e-12


def test_the_linearised_map_predicts_the_linear_rate_of_the_tail():
    """Near an isolated fixed point the stationarity measure decays at -ln rho_J per iteration, rho_J the spectral
    radius of the RADMM map's Jacobian there; at mu = 0 on St(n, 2) the fixed points form an O(2)-orbit and
    rho_J = 1 (the prediction, no contraction, fails while the measure still decays)."""
    par = theory_parameters(0.1)
    solver = radmm(**par, random_init=True)  # one solver: mu is data, both runs share the compiled code
    for mu, isolated in ((0.1, True), (0.0, False)):
        problem = _spca(mu=mu, n=8, p=2, m=6, seed=1)
        tr = run(solver, problem, 0, steps=3000, seeds=1, log_every=10, aggregate="min", x64=True)
        measured = tail_rate(tr.steps, tr["stationarity"], 1e-10, 1e-4)[0]
        s = tr.final_state
        predicted = linear_rate(problem, s.x[0], s.y[0], s.lam[0], **par)
        assert measured > 1e-3
        if isolated:
            assert predicted == pytest.approx(measured, rel=1e-3)
        else:
            assert abs(predicted) < 1e-9


def test_bad_input_errors():
    with pytest.raises(RatelabError, match="step_size"):
        radmm(step_size=-1.0, rho=1.0, gamma=0.1)
    with pytest.raises(RatelabError, match="rho"):
        radmm(step_size=0.1, rho=0.0, gamma=0.1)
    with pytest.raises(RatelabError, match="gamma"):
        radmm(step_size=0.1, rho=1.0, gamma=float("nan"))
    with pytest.raises(RatelabError, match="retraction must be one of"):
        radmm(0.1, 1.0, 0.1, retraction="cayley").init(_spca(), jax.random.key(0))
    with pytest.raises(RatelabError, match="eps"):
        theory_parameters(0.0)
    with pytest.raises(RatelabError, match="p must satisfy"):
        make_sparse_pca(jax.random.key(0), m=5, n=3, p=4)
    with pytest.raises(RatelabError, match="mu"):
        make_sparse_pca(jax.random.key(0), mu=-1.0)
    with pytest.raises(RatelabError, match="theta"):
        make_dictionary_learning(jax.random.key(0), theta=1.5)
    with pytest.raises(RatelabError, match="n_eps"):
        RADMM_COMPLEXITY.validate(RADMM_COMPLEXITY.config("quick", {"n_eps": 2}))
    with pytest.raises(RatelabError, match="eps"):
        RADMM_COMPARE.validate(RADMM_COMPARE.config("quick", {"eps": 0.0}))
    with pytest.raises(RatelabError, match="samples"):
        RADMM_ODL.validate(RADMM_ODL.config("quick", {"samples": 0}))
    with pytest.raises(RatelabError, match="dim"):
        make_sparse_spectral_clustering(jax.random.key(0), dim=1)
    with pytest.raises(RatelabError, match="c_eta"):
        RADMM_SSC.validate(RADMM_SSC.config("quick", {"c_eta": -0.25}))


def test_identity_map_without_a_matrix_is_the_dense_identity():
    # sparse PCA's B = None (lin and its adjoint are the identity, no n x n matmul) runs the same iterates as an
    # explicit B = eye(n), and the step constants agree
    import dataclasses

    from riemannian.aradmm import step_constants

    problem = _spca(mu=0.2, n=12, p=3)
    assert problem.B is None
    dense = dataclasses.replace(problem, B=jnp.eye(12, dtype=problem.C.dtype))
    solver = radmm(step_size=0.05, rho=2.0, gamma=0.1)
    (x, _), (xd, _) = (_iterate(solver, q, 50) for q in (problem, dense))
    np.testing.assert_allclose(np.asarray(x.x), np.asarray(xd.x), rtol=0, atol=1e-13)
    assert step_constants(problem) == pytest.approx(step_constants(dense), rel=1e-12)
    assert float(problem.lipschitz_h()) == pytest.approx(float(dense.lipschitz_h()))
