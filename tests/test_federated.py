"""RFedSVRG, R-FedAvg, R-FedProx: fixed points, reductions to Riemannian GD, closed-form optima, vmap == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError
from ratelab.runner import run
from riemannian.fed_problems import federated_pca, make_federated_kernel_pca, make_federated_pca
from riemannian.federated import (
    federated_round,
    geometry,
    linearized_contraction,
    rfedprox,
    rfedsvrg,
    tangent_basis,
)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _pca(h=0.7, manifold="grassmann", rank=2, n=6, dim=8, seed=0):
    return make_federated_pca(jax.random.key(seed), n_clients=n, dim=dim, rank=rank if manifold != "sphere" else 1,
                              heterogeneity=h, manifold=manifold)


_round = jax.jit(federated_round, static_argnames=("local_steps", "geom", "output"))


def _span(x):
    x = np.asarray(x)
    x = x[:, None] if x.ndim == 1 else x
    return x @ x.T


def _rgd(problem, x, eta, steps, geom):
    for _ in range(steps):
        x = geom.retr(x, -eta * problem.rgrad(x))
    return x


def test_closed_form_optimum_is_stationary_and_optimal():
    p = _pca()
    assert float(jnp.linalg.norm(p.rgrad(p.x_star))) < 1e-12
    assert float(p.loss(p.x_star)) == pytest.approx(float(p.f_star), abs=1e-12)
    # any other orthonormal X is worse: -1/2 tr(X^T A X) >= -1/2 (sum of the top-r eigenvalues) (Ky Fan)
    rng = np.random.default_rng(0)
    A = np.asarray(p.A_mean)
    for _ in range(5):
        X = np.linalg.qr(rng.standard_normal((8, 2)))[0]
        assert -0.5 * np.trace(X.T @ A @ X) >= float(p.f_star) - 1e-12
    # the client average is what x* is optimal for: A_mean = mean of the clients' matrices
    np.testing.assert_allclose(np.asarray(p.A_mean), np.asarray(p.A).mean(0), atol=1e-14)


@pytest.mark.parametrize("manifold", ["sphere", "stiefel", "grassmann"])
def test_x_star_is_a_fixed_point_of_every_rfedsvrg_round(manifold):
    """grad f(x*) = 0 makes the first corrected local direction vanish, so every client stays at x*."""
    p = _pca(h=1.0, manifold=manifold)
    geom = geometry(p.manifold)
    for clients in ([1, 4], [0, 5]):
        c = jnp.asarray(clients)
        x = _round(p, p.x_star, c, c * 0, eta=0.3, local_steps=7, correction=1.0, geom=geom)
        assert float(p.subspace_dist(x)) < 1e-12


def test_fedavg_drifts_off_x_star_only_with_heterogeneous_clients():
    for h, moves in ((0.0, False), (1.0, True)):
        p = _pca(h=h)
        c = jnp.arange(p.n_clients)
        x = _round(p, p.x_star, c, c * 0, eta=0.3, local_steps=7, correction=0.0, geom=geometry(p.manifold))
        assert (float(p.subspace_dist(x)) > 1e-3) == moves


@pytest.mark.parametrize("manifold", ["sphere", "stiefel", "grassmann"])
def test_one_client_reduces_rfedsvrg_and_fedavg_to_riemannian_gd(manifold):
    """n = 1: the correction grad f_1 - grad f is 0 and R_x(R_x^{-1}(z)) = z, so a round is tau RGD steps."""
    p = _pca(manifold=manifold, n=1)
    geom = geometry(p.manifold)
    x0 = p.x0
    ref = _rgd(p, x0, 0.2, 4, geom)
    for corr in (1.0, 0.0):
        x = _round(p, x0, jnp.array([0]), jnp.array([0]), eta=0.2, local_steps=4, correction=corr,
                   geom=geom)
        # on the Grassmann manifold R_x(R_x^{-1}(z)) is another basis of span(z): compare the subspaces
        np.testing.assert_allclose(_span(x), _span(ref), atol=1e-12)
        if manifold != "grassmann":
            np.testing.assert_allclose(np.asarray(x), np.asarray(ref), atol=1e-12)


def test_one_local_step_makes_rfedsvrg_riemannian_gd_under_any_participation():
    """tau = 1: every client steps along grad f_i(x) - (grad f_i(x) - grad f(x)) = grad f(x)."""
    p = _pca(h=1.0)
    geom = geometry(p.manifold)
    ref = geom.retr(p.x0, -0.3 * p.rgrad(p.x0))
    for clients in ([0, 5], [2, 3]):
        c = jnp.asarray(clients)
        x = _round(p, p.x0, c, c * 0, eta=0.3, local_steps=1, correction=1.0, geom=geom)
        np.testing.assert_allclose(_span(x), _span(ref), atol=1e-12)


@pytest.mark.parametrize("correction, mu", [(1.0, 0.0), (0.0, 0.0), (0.0, 2.0)])
def test_a_concrete_zero_coefficient_drops_its_term_exactly(correction, mu):
    """RFedSVRG / R-FedAvg / R-FedProx with Python coefficients (a zero term skipped at trace time) give bitwise the
    round that traced coefficients give (the term computed and multiplied by 0), on Stiefel with the QR retraction."""
    p = _pca(h=0.9, manifold="stiefel", rank=2)
    geom = geometry(p.manifold)
    c = jnp.asarray([1, 4], jnp.int32)

    def round_with(cr, m):
        return federated_round(p, p.x0, c, c * 0, eta=0.05, local_steps=3, correction=cr, mu=m, geom=geom)

    concrete = jax.jit(lambda: round_with(correction, mu))()
    traced = jax.jit(round_with)(jnp.asarray(correction), jnp.asarray(mu))
    np.testing.assert_array_equal(np.asarray(concrete), np.asarray(traced))


def test_solver_round_equals_a_numpy_loop_over_clients():
    """The vmapped clients and scanned local steps equal a plain NumPy loop of Algorithm 1 (sphere, normalisation
    retraction, its inverse y / <x, y> - x, transport by projection)."""
    p = _pca(h=0.8, manifold="sphere")
    solver = rfedsvrg(0.25, local_steps=3, clients_per_round=3)
    state = solver.init(p, jax.random.key(0))
    xi = jax.tree_util.tree_map(lambda a: a[0], solver.sample(p, jax.random.key(1), 1))
    new, metrics = jax.jit(solver.step)(state, p, xi)
    A = np.asarray(p.A)

    def proj(x, u):
        return u - (x @ u) * x

    def grad(x, i):
        return proj(x, -A[i] @ x)

    def retr(x, v):
        return (x + v) / np.linalg.norm(x + v)

    x = np.asarray(p.x0)
    g = sum(grad(x, i) for i in range(p.n_clients)) / p.n_clients
    vs = []
    for i in np.asarray(xi["clients"]):
        z, corr = x, grad(x, i) - g
        for _ in range(3):
            z = retr(z, -0.25 * (grad(z, i) - proj(z, corr)))
        vs.append(z / (x @ z) - x)
    np.testing.assert_allclose(np.asarray(new.x), retr(x, sum(vs) / len(vs)), atol=1e-12)
    assert set(metrics) >= {"gap", "grad_norm_sq", "dist_to_opt", "feasibility"}


def test_partial_participation_samples_distinct_clients():
    p = _pca(n=6)
    xi = rfedsvrg(0.1, local_steps=2, clients_per_round=4).sample(p, jax.random.key(0), 50)
    cl = np.asarray(xi["clients"])
    assert cl.shape == (50, 4)
    assert all(len(set(row)) == 4 for row in cl) and cl.min() >= 0 and cl.max() < 6
    assert len(np.unique(cl)) == 6
    assert np.asarray(xi["ell"]).max() < 2


@pytest.mark.parametrize("manifold", ["grassmann", "stiefel"])
def test_rfedsvrg_recovers_the_closed_form_subspace_and_stays_on_the_manifold(manifold):
    p = _pca(h=1.0, manifold=manifold)
    tr = run(rfedsvrg(0.5, local_steps=5, clients_per_round=3), p, 0, steps=120, seeds=2, x64=True)
    assert tr["dist_to_opt"][:, -1].max() < 1e-9
    assert tr["gap"][:, -1].max() < 1e-12
    assert tr["feasibility"].max() < 1e-12


def test_fedavg_and_fedprox_stall_where_rfedsvrg_converges():
    p = _pca(h=1.0)
    geom = geometry(p.manifold)
    c = jnp.arange(p.n_clients)
    final = {}
    for name, corr, mu in (("svrg", 1.0, 0.0), ("avg", 0.0, 0.0), ("prox", 0.0, 1.0)):
        x = p.x0
        for _ in range(100):  # one compiled round: correction and mu are traced
            x = _round(p, x, c, c * 0, eta=0.5, local_steps=5, correction=corr, mu=mu, geom=geom)
        final[name] = float(p.subspace_dist(x))
    assert final["svrg"] < 1e-9 and final["avg"] > 1e-3 and final["prox"] > 1e-3


def test_exponential_map_and_parallel_transport_variant_converges():
    p = _pca(h=1.0, manifold="sphere")
    s = rfedsvrg(0.5, local_steps=5, clients_per_round=3, retraction="exp", transport="parallel")
    tr = run(s, p, 0, steps=80, seeds=2, x64=True)
    assert tr["dist_to_opt"][:, -1].max() < 1e-9


def test_sphere_parallel_transport_is_an_isometry_onto_the_target_tangent_space():
    m = _pca(manifold="sphere").manifold
    x, y = m.random_point(jax.random.key(1)), m.random_point(jax.random.key(2))
    u, v = m.random_tangent(jax.random.key(3), x), m.random_tangent(jax.random.key(4), x)
    tu, tv = m.parallel_transp(x, y, u), m.parallel_transp(x, y, v)
    assert abs(float(jnp.dot(y, tu))) < 1e-12
    assert float(jnp.dot(tu, tv)) == pytest.approx(float(jnp.dot(u, v)), abs=1e-12)
    # the velocity of the geodesic is transported to the velocity at the end point
    np.testing.assert_allclose(np.asarray(m.parallel_transp(x, y, m.log(x, y))), -np.asarray(m.log(y, x)),
                               atol=1e-10)
    # stable for y within rounding of x (the first local step from the server point)
    np.testing.assert_allclose(np.asarray(m.parallel_transp(x, x, u)), np.asarray(u), atol=1e-15)
    y_near = m.retr(x, 1e-9 * v)
    np.testing.assert_allclose(np.asarray(m.parallel_transp(x, y_near, u)), np.asarray(u), atol=1e-8)


def test_linearized_contraction_is_the_gd_rate_for_identical_clients():
    """h = 0: a full round is tau RGD steps, whose local rate on PCA is (1 - eta (lambda_r - lambda_{r+1}))^tau."""
    p = _pca(h=0.0)
    lam = np.asarray(p.eigvals)
    expected = (1 - 0.5 * (lam[1] - lam[2])) ** 5
    assert linearized_contraction("rfedsvrg", p, step_size=0.5, local_steps=5) == pytest.approx(expected, rel=1e-8)


def test_tangent_basis_is_orthonormal_and_tangent():
    p = _pca()
    b = tangent_basis(p.manifold, p.x_star)
    flat = np.asarray(b).reshape(b.shape[0], -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(p.manifold.dim), atol=1e-12)
    assert np.abs(np.asarray(p.x_star).T @ np.asarray(b[3])).max() < 1e-12


def test_kernel_pca_problem_has_a_psd_average_and_its_optimum():
    p = make_federated_kernel_pca(jax.random.key(0), n_clients=4, input_dim=2, features=10, rank=2,
                                  heterogeneity=1.0, manifold="stiefel")
    assert np.linalg.eigvalsh(np.asarray(p.A_mean)).min() > -1e-12
    assert float(jnp.linalg.norm(p.rgrad(p.x_star))) < 1e-12


def test_generators_are_the_same_with_and_without_x64():
    a = np.asarray(_pca(h=0.5).A)
    with jax.enable_x64(False):
        b = np.asarray(_pca(h=0.5).A)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_float64_client_data_built_without_x64_keeps_its_precision():
    """federated_pca chose float32 when built with x64 off, so even run(..., x64=True) floored near 1e-7 (the
    float32-rounded A has another optimum than the float64 x*); the data now keep their float64 precision."""
    p = _pca(h=1.0)
    A = np.asarray(p.A)
    with jax.enable_x64(False):
        q = federated_pca(A, manifold="grassmann", rank=2)
        assert q.A.dtype == np.float64 and q.x_star.dtype == np.float64
    tr = run(rfedsvrg(0.5, local_steps=5), q, 0, steps=80, seeds=1, log_every=80, x64=True)
    assert float(tr["dist_to_opt"][0, -1]) < 1e-12


def test_bad_inputs_are_rejected_before_compute():
    p = _pca()
    with pytest.raises(RatelabError, match="step_size"):
        rfedsvrg(0.0, local_steps=2)
    with pytest.raises(RatelabError, match="local_steps"):
        rfedsvrg(0.1, local_steps=0)
    with pytest.raises(RatelabError, match="mu"):
        rfedprox(0.1, mu=-1.0, local_steps=2)
    with pytest.raises(RatelabError, match="transport"):
        rfedsvrg(0.1, local_steps=2, transport="ladder")
    with pytest.raises(RatelabError, match="output"):
        rfedsvrg(0.1, local_steps=2, output="mean")
    with pytest.raises(RatelabError, match="clients_per_round"):
        run(rfedsvrg(0.1, local_steps=2, clients_per_round=10), p, 0, steps=2)
    with pytest.raises(RatelabError, match="retraction"):
        run(rfedsvrg(0.1, local_steps=2, retraction="cayley"), p, 0, steps=2)
    with pytest.raises(RatelabError, match="retraction must have an inverse"):
        geometry(_pca(manifold="stiefel").manifold, "exp")
    with pytest.raises(RatelabError, match="heterogeneity"):
        make_federated_pca(jax.random.key(0), n_clients=2, dim=4, heterogeneity=-1.0)
    with pytest.raises(RatelabError, match=r"A must hold symmetric matrices: max \|A_ij - A_ji\| = 1"):
        federated_pca(np.arange(8.0).reshape(2, 2, 2))
    with pytest.raises(RatelabError, match="eigengap"):
        federated_pca(np.stack([np.eye(3)] * 2), rank=1)
    with pytest.raises(RatelabError, match="rank must be 1"):
        make_federated_pca(jax.random.key(0), n_clients=2, dim=4, rank=2, manifold="sphere")
    with pytest.raises(RatelabError, match="isolated"):
        linearized_contraction("rfedsvrg", _pca(manifold="stiefel"), step_size=0.1, local_steps=2)
