"""Manifold geometry: invariants of projections, retractions, exp/log, transports and metrics (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError
from riemannian.data import keep_precision, start_point, swept_index, symmetric_matrices, take
from riemannian.manifolds import AmbientStep, Grassmann, Sphere, Stiefel, normal_draws, retraction_method


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


MANIFOLDS = [Sphere(7), Stiefel(8, 3), Stiefel(5, 5), Grassmann(8, 3)]
# Stiefel(5, 5)'s exp is the same code path as Stiefel(8, 3)'s: left out of the expensive (expm) tests
RETRACTIONS = [(m, method) for m in MANIFOLDS for method in m.retractions if (m.shape, method) != ((5, 5), "exp")]
GEODESIC = [Sphere(7), Stiefel(8, 3), Grassmann(8, 3)]
IDS = [f"{type(m).__name__}{m.shape}" for m in MANIFOLDS]


def _point_and_tangent(m, seed=0):
    kx, kv = jax.random.split(jax.random.key(seed))
    x = m.random_point(kx)
    return x, m.random_tangent(kv, x)


def _on_tangent_space(m, x, v):
    """Distance of v from T_x M (0 when v is tangent)."""
    return float(jnp.linalg.norm(v - m.proj(x, v)))


def _tangent_residual(m, x, v):
    """Defining equations of T_x M: <x, v> = 0 (sphere), sym(X^T V) = 0 (Stiefel), X^T V = 0 (Grassmann)."""
    if isinstance(m, Sphere):
        return float(abs(jnp.dot(x, v)))
    xtv = x.T @ v
    return float(jnp.linalg.norm(xtv + xtv.T if isinstance(m, Stiefel) else xtv))


def test_instances_are_hashable_static_pytrees():
    assert Stiefel(5, 2) == Stiefel(5, 2) and hash(Stiefel(5, 2)) == hash(Stiefel(5, 2))
    assert Stiefel(5, 2) != Grassmann(5, 2)
    assert len(jax.tree_util.tree_leaves({"m": Sphere(3), "x": jnp.ones(3)})) == 1
    assert len(jax.tree_util.tree_leaves(Sphere(3))) == 0
    f = jax.jit(lambda m, x: m.proj(x, 2 * x), static_argnums=0)
    x = Sphere(4).random_point(jax.random.key(0))
    np.testing.assert_allclose(f(Sphere(4), x), 0.0, atol=1e-14)


def test_dimensions():
    assert Sphere(7).dim == 6
    assert Stiefel(8, 3).dim == 8 * 3 - 6
    assert Stiefel(5, 5).dim == 10  # O(5)
    assert Grassmann(8, 3).dim == 15


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_random_point_is_on_manifold_and_tangent_unit(m):
    x, v = _point_and_tangent(m)
    assert float(m.feasibility(x)) < 1e-13
    assert float(m.norm(x, v)) == pytest.approx(1.0, abs=1e-13)
    assert _tangent_residual(m, x, v) < 1e-13


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_projection_is_idempotent_self_adjoint_and_tangent(m):
    x, _ = _point_and_tangent(m)
    ku, kw = jax.random.split(jax.random.key(3))
    u = jax.random.normal(ku, x.shape)
    w = jax.random.normal(kw, x.shape)
    pu = m.proj(x, u)
    np.testing.assert_allclose(m.proj(x, pu), pu, atol=1e-13)
    assert float(m.inner(x, pu, w)) == pytest.approx(float(m.inner(x, u, m.proj(x, w))), abs=1e-12)
    assert _tangent_residual(m, x, pu) < 1e-13
    # u - P u is normal: orthogonal to every tangent vector
    assert float(m.inner(x, u - pu, m.proj(x, w))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_rgrad_matches_directional_derivative(m):
    """<grad f(x), v> = d/dt f(R_x(t v)) at t = 0 for a smooth f on the ambient space."""
    x, v = _point_and_tangent(m, seed=1)
    c = jax.random.normal(jax.random.key(9), x.shape)
    a = jax.random.normal(jax.random.key(8), (x.shape[0], x.shape[0]))

    def f(z):
        return jnp.sum(z * (a @ z)) + jnp.sum(jnp.sin(c * z))

    g = m.rgrad(f, x)
    assert _on_tangent_space(m, x, g) < 1e-12
    np.testing.assert_allclose(g, m.egrad2rgrad(x, jax.grad(f)(x)), atol=1e-14)
    deriv = jax.jvp(lambda t: f(m.retr(x, t * v)), (0.0,), (1.0,))[1]
    assert float(m.inner(x, g, v)) == pytest.approx(float(deriv), rel=1e-9, abs=1e-10)


@pytest.mark.parametrize(("m", "method"), RETRACTIONS, ids=[f"{type(m).__name__}{m.shape}-{r}" for m, r in RETRACTIONS])
def test_ten_thousand_retractions_stay_on_manifold(m, method):
    x0, _ = _point_and_tangent(m)
    keys = jax.random.split(jax.random.key(5), 10_000)

    def body(x, key):
        v = 0.3 * m.random_tangent(key, x)
        y = m.retr(x, v, method=method)
        return y, m.feasibility(y)

    x, feas = jax.jit(lambda x0: jax.lax.scan(body, x0, keys))(x0)
    assert float(jnp.max(feas)) < 1e-6
    assert float(m.feasibility(x)) < 1e-6


@pytest.mark.parametrize(("m", "method"), RETRACTIONS, ids=[f"{type(m).__name__}{m.shape}-{r}" for m, r in RETRACTIONS])
def test_retraction_is_first_order(m, method):
    """||R_x(t v) - (x + t v)|| = O(t^2): the fitted log-log slope is 2 (and R_x(0) = x)."""
    x, v = _point_and_tangent(m, seed=2)
    np.testing.assert_allclose(m.retr(x, jnp.zeros_like(v), method=method), x, atol=1e-14)
    ts = np.logspace(-4, -1, 10)
    errs = np.asarray(jax.jit(jax.vmap(lambda t: jnp.linalg.norm(m.retr(x, t * v, method=method) - (x + t * v))))(ts))
    slope = np.polyfit(np.log(ts), np.log(errs), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("m", GEODESIC, ids=[type(m).__name__ for m in GEODESIC])
def test_exponential_map_is_a_geodesic(m):
    """t -> exp_x(t v) starts at x with velocity v and its acceleration is normal to the tangent space."""
    x, v = _point_and_tangent(m, seed=4)

    def curve(t):
        return m.exp(x, t * v)

    h = 1e-4

    @jax.jit
    def derivatives(t):  # central differences: O(h^2) = 1e-8 truncation error in float64
        ym, y, yp = jax.vmap(curve)(t + jnp.array([-h, 0.0, h]))
        return y, (yp - ym) / (2 * h), (yp - 2 * y + ym) / h**2

    y0, vel, acc = derivatives(0.0)
    np.testing.assert_allclose(y0, x, atol=1e-13)
    np.testing.assert_allclose(vel, v, atol=1e-7)
    assert float(jnp.linalg.norm(m.proj(x, acc))) < 1e-6  # normal acceleration
    # constant speed, normal acceleration along the curve (t = 0.7), not only at its start
    y, vel, acc = derivatives(0.7)
    assert float(m.norm(y, vel)) == pytest.approx(1.0, abs=1e-7)
    assert float(jnp.linalg.norm(m.proj(y, acc))) < 1e-6


@pytest.mark.parametrize("m", [Sphere(7), Grassmann(8, 3)], ids=["Sphere", "Grassmann"])
def test_exp_and_log_are_inverse(m):
    x, v = _point_and_tangent(m, seed=6)
    v = 1.2 * v  # inside the injectivity radius (pi for the sphere, pi/2 in spectral norm for Grassmann)
    y = m.exp(x, v)
    np.testing.assert_allclose(m.log(x, y), v, atol=1e-10)
    w = m.log(x, m.random_point(jax.random.key(11)))
    y2 = m.exp(x, w)
    if isinstance(m, Grassmann):  # compare subspaces by their projectors, and log is basis-independent
        q = Stiefel(3, 3).random_point(jax.random.key(12))
        np.testing.assert_allclose(m.log(x, y @ q), v, atol=1e-10)
        target = m.random_point(jax.random.key(11))
        np.testing.assert_allclose(y2 @ y2.T, target @ target.T, atol=1e-10)
    else:
        np.testing.assert_allclose(y2, m.random_point(jax.random.key(11)), atol=1e-12)
    assert float(m.dist(x, y)) == pytest.approx(1.2, abs=1e-10)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_inverse_retractions_invert_their_retraction(m):
    x, v = _point_and_tangent(m, seed=7)
    v = 0.4 * v
    inverses = getattr(m, "inverse_retractions", m.retractions)
    for method in inverses:
        if method == "proj":  # exact only to first order: see the next test
            continue
        back = jax.jit(lambda x, v, method=method: m.inv_retr(x, m.retr(x, v, method=method), method=method))(x, v)
        np.testing.assert_allclose(back, v, atol=1e-11, err_msg=method)


def test_projection_based_inverse_retraction_is_third_order_accurate_after_polar():
    """The polar retraction is second order, R_x(tv) = x + tv + (normal) t^2 + O(t^3), so P_x(R_x(tv) - x) - tv is
    O(t^3): the fitted slope is 3."""
    m = Stiefel(8, 3)
    x, v = _point_and_tangent(m, seed=8)
    ts = np.logspace(-3, -1, 6)
    errs = [float(jnp.linalg.norm(m.inv_retr(x, m.retr(x, t * v, "polar"), "proj") - t * v)) for t in ts]
    assert np.polyfit(np.log(ts), np.log(errs), 1)[0] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_transport_lands_in_the_target_tangent_space(m):
    x, v = _point_and_tangent(m, seed=9)
    y = m.retr(x, 0.5 * m.random_tangent(jax.random.key(1), x))
    w = m.transp(x, y, v)
    assert _tangent_residual(m, y, w) < 1e-13
    assert float(m.norm(y, w)) <= 1.0 + 1e-12  # a projection does not increase the norm


@pytest.mark.parametrize("m", [Sphere(7), Grassmann(8, 3)], ids=["Sphere", "Grassmann"])
def test_parallel_transport_is_an_isometry_into_the_target_space(m):
    x, _ = _point_and_tangent(m, seed=10)
    y = m.exp(x, 0.9 * m.random_tangent(jax.random.key(2), x))
    ku, kw = jax.random.split(jax.random.key(3))
    u, w = m.random_tangent(ku, x), m.random_tangent(kw, x)
    pu, pw = m.parallel_transp(x, y, u), m.parallel_transp(x, y, w)
    assert _tangent_residual(m, y, pu) < 1e-12
    assert float(m.inner(y, pu, pw)) == pytest.approx(float(m.inner(x, u, w)), abs=1e-12)
    # the geodesic's own velocity is transported to minus the log back: P(log_x y) = -log_y x
    np.testing.assert_allclose(m.parallel_transp(x, y, m.log(x, y)), -m.log(y, x), atol=1e-11)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_distance_is_symmetric_zero_on_diagonal_and_bounded_by_paths(m):
    x, v = _point_and_tangent(m, seed=11)
    y = m.random_point(jax.random.key(21))
    z = m.random_point(jax.random.key(22))
    assert float(m.dist(x, y)) == pytest.approx(float(m.dist(y, x)), abs=1e-12)
    assert float(m.dist(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert float(m.dist(x, z)) <= float(m.dist(x, y) + m.dist(y, z)) + 1e-12
    if not isinstance(m, Stiefel):  # geodesic distance = length of the geodesic
        assert float(m.dist(x, m.exp(x, 0.5 * v))) == pytest.approx(0.5, abs=1e-10)


def test_flat_draws_are_the_same_numbers_as_multi_axis_draws():
    """normal_draws draws flat and reshapes (it compiles much faster under vmap): threefry's counters are the
    row-major index, so the numbers equal jax.random.normal's of the full shape, with x64 on and off."""
    key = jax.random.key(5)
    for shape in ((3, 4, 5), (7,), (2, 1, 6)):
        np.testing.assert_array_equal(np.asarray(normal_draws(key, shape, jnp.float32)),
                                      np.asarray(jax.random.normal(key, shape, jnp.float32)))
        with jax.enable_x64(False):
            np.testing.assert_array_equal(np.asarray(normal_draws(key, shape)),
                                          np.asarray(jax.random.normal(key, shape)))


def test_default_retraction_is_the_manifolds_first():
    assert retraction_method(Sphere(4)) == "normalize" and retraction_method(Stiefel(4, 2)) == "qr"
    with pytest.raises(RatelabError, match="retraction must be one of"):
        retraction_method(Sphere(4), "qr")


def test_the_ambient_step_leaves_the_manifold_by_the_square_of_the_step():
    """AmbientStep (negative controls) steps to X + V: for tangent V, (X + V)^T (X + V) - I = V^T V."""
    m = Stiefel(6, 2)
    x, v = _point_and_tangent(m, seed=3)
    a = AmbientStep(m)
    assert a.retractions == ("ambient",) and a.dim == m.dim and a.shape == m.shape
    y = a.retr(x, 0.1 * v)
    np.testing.assert_allclose(np.asarray(y.T @ y - jnp.eye(2)), np.asarray(0.01 * v.T @ v), atol=1e-14)
    assert float(a.feasibility(y)) == pytest.approx(float(jnp.linalg.norm(0.01 * v.T @ v)), rel=1e-12)
    np.testing.assert_allclose(np.asarray(a.proj(x, v)), np.asarray(v), atol=1e-14)
    assert len(jax.tree_util.tree_leaves(a)) == 0 and hash(a) == hash(AmbientStep(m))


def test_the_users_data_keeps_its_precision_and_is_validated():
    a = np.diag([3.0, 1.0, 2.0]) + 1e-3
    with jax.enable_x64(False):  # float64 data, x64 off: kept as float64 NumPy, never truncated
        kept = keep_precision(a)
        assert isinstance(kept, np.ndarray) and kept.dtype == np.float64
        assert keep_precision(a.astype(np.float32)).dtype == jnp.float32
    assert keep_precision(a).dtype == jnp.float64 and isinstance(keep_precision(a), jax.Array)
    np.testing.assert_array_equal(symmetric_matrices("H", a, definite="semi"), a)
    with pytest.raises(RatelabError, match=r"H must hold symmetric matrices: max \|H_ij - H_ji\| = 0.5"):
        symmetric_matrices("H", a + np.triu(np.full((3, 3), 0.5), 1))
    with pytest.raises(RatelabError, match="H must be positive semidefinite: its smallest eigenvalue is -2"):
        symmetric_matrices("H", np.diag([1.0, -2.0]), definite="semi")
    with pytest.raises(RatelabError, match=r"A must have shape \[n, d, d\]"):
        symmetric_matrices("A", np.eye(3), batched=True)
    with pytest.raises(RatelabError, match="finite"):
        symmetric_matrices("H", np.array([[1.0, np.nan], [np.nan, 1.0]]))
    x0 = start_point(Stiefel(5, 2), key=jax.random.key(1))
    np.testing.assert_allclose(x0.T @ x0, np.eye(2), atol=1e-14)
    with pytest.raises(RatelabError, match="x0 must lie on the manifold"):
        start_point(Sphere(3), np.ones(3))
    assert take(np.arange(5.0), swept_index(3.0)) == 3.0


def test_bad_input_errors():
    with pytest.raises(RatelabError, match="p must satisfy"):
        Stiefel(3, 4)
    with pytest.raises(RatelabError, match="n must"):
        Sphere(1)
    with pytest.raises(RatelabError, match="n must be an integer"):
        Grassmann(2.5, 1)
    x = Stiefel(4, 2).random_point(jax.random.key(0))
    with pytest.raises(RatelabError, match="method must be one of"):
        Stiefel(4, 2).retr(x, x, method="cayley")
    with pytest.raises(RatelabError, match="inv_retr"):
        Stiefel(4, 2).log(x, x)
    with pytest.raises(RatelabError, match="transp"):
        Stiefel(4, 2).parallel_transp(x, x, x)


def test_matches_pymanopt_on_a_few_values():
    pymanopt = pytest.importorskip("pymanopt")
    manifolds = pymanopt.manifolds
    x, v = _point_and_tangent(Stiefel(6, 2), seed=12)
    ref = manifolds.Stiefel(6, 2)
    np.testing.assert_allclose(Stiefel(6, 2).retr(x, 0.3 * v), ref.retraction(np.asarray(x), 0.3 * np.asarray(v)),
                               atol=1e-10)
    xs, vs = _point_and_tangent(Sphere(5), seed=13)
    sref = manifolds.Sphere(5)
    np.testing.assert_allclose(Sphere(5).exp(xs, vs), sref.exp(np.asarray(xs), np.asarray(vs)), atol=1e-10)
    xg, vg = _point_and_tangent(Grassmann(6, 2), seed=14)
    gref = manifolds.Grassmann(6, 2)
    yg = Grassmann(6, 2).exp(xg, 0.5 * vg)
    assert float(Grassmann(6, 2).dist(xg, yg)) == pytest.approx(gref.dist(np.asarray(xg), np.asarray(yg)), abs=1e-8)
