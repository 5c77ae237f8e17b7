"""Zeroth-order Riemannian estimator and Zo-RASA: unbiasedness (Monte Carlo within error bars), mu -> 0 limit,
batch variance, invariants, reductions, padding, and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError
from ratelab.runner import run
from riemannian.federated import geometry
from riemannian.zo_rasa import make_stochastic_rayleigh, zo_gradient, zo_rasa

M = 100_000


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _draws(problem, x, mu, key, m=M, retraction=None):
    """[m, *x.shape] one-direction estimates G_mu(x; u_j) (noise-free oracle) and the directions P_x u_j."""
    u = jax.random.normal(key, (m, 1, *x.shape))
    xi = jnp.zeros((m, 1, *x.shape))
    f = jax.jit(jax.vmap(lambda uj, xj: zo_gradient(problem, x, uj, xj, mu, retraction)))
    return np.asarray(f(u, xi)), np.asarray(jax.vmap(lambda uj: problem.manifold.proj(x, uj[0]))(u))


def _within(mean, ref, se, k=4.5):
    return np.all(np.abs(mean - ref) <= k * se + 1e-12)


@pytest.mark.parametrize("retraction", ["normalize", "exp"])
def test_estimator_is_unbiased_for_the_smoothed_pullback_gradient(retraction):
    """E G_mu(x) = grad_v E_u f(R_x(v + mu u)) at v = 0 (Stein): compared with the first-order estimate
    mean_j grad_v f(R_x(mu u_j)) on the same directions, the two agree within Monte Carlo error; at this mu both
    differ from grad f(x) (the smoothing bias is real)."""
    p = make_stochastic_rayleigh(jax.random.key(0), n=5, sigma=0.0)
    m, x = p.manifold, p.x0
    geom = geometry(m, retraction)
    mu = 0.4
    G, V = _draws(p, x, mu, jax.random.key(1), retraction=retraction)
    pull = jax.jit(jax.vmap(jax.grad(lambda v: p.loss(geom.retr(x, m.proj(x, v))))))
    first = np.asarray(pull(jnp.asarray(mu * V)))
    diff = G - first
    assert _within(diff.mean(0), 0.0, diff.std(0) / np.sqrt(M))
    grad = np.asarray(p.rgrad(x))
    assert np.max(np.abs(first.mean(0) - grad) / (first.std(0) / np.sqrt(M) + 1e-300)) > 8


def test_estimator_converges_to_the_riemannian_gradient_as_mu_vanishes():
    for manifold, n, pp in (("sphere", 6, 1), ("stiefel", 5, 2)):
        p = make_stochastic_rayleigh(jax.random.key(2), n=n, p=pp, sigma=0.0, manifold=manifold)
        G, _ = _draws(p, p.x0, 1e-6, jax.random.key(3))
        assert _within(G.mean(0), np.asarray(p.rgrad(p.x0)), G.std(0) / np.sqrt(M))
        # second moment of a one-direction estimate: E||<g, u> u||^2 = (d + 2) ||g||^2 for u ~ N(0, I_d)
        g2 = float(jnp.sum(p.rgrad(p.x0) ** 2))
        d = p.manifold.dim
        sq = (G ** 2).reshape(M, -1).sum(1)
        assert sq.mean() == pytest.approx((d + 2) * g2, abs=4.5 * sq.std() / np.sqrt(M))


def test_a_batch_of_m_directions_divides_the_variance_by_m():
    p = make_stochastic_rayleigh(jax.random.key(4), n=6, sigma=0.0)
    x = p.x0
    u = jax.random.normal(jax.random.key(5), (20_000, 8, 6))
    xi = jnp.zeros_like(u)
    batch = np.asarray(jax.jit(jax.vmap(lambda uu, xx: zo_gradient(p, x, uu, xx, 1e-6)))(u, xi))
    single = np.asarray(jax.jit(jax.vmap(lambda uu, xx: zo_gradient(p, x, uu[:1], xx[:1], 1e-6)))(u, xi))
    ratio = single.var(0).sum() / batch.var(0).sum()
    assert ratio == pytest.approx(8.0, rel=0.1)


@pytest.mark.parametrize(("manifold", "n", "pp"), [("sphere", 8, 1),
                                                   pytest.param("stiefel", 6, 2, marks=pytest.mark.slow)])
def test_iterates_stay_on_the_manifold_and_approach_the_minimiser(manifold, n, pp):
    p = make_stochastic_rayleigh(jax.random.key(6), n=n, p=pp, sigma=0.1, manifold=manifold)
    tr = run(zo_rasa(0.05, mu=1e-4), p, 0, steps=3000, seeds=3, log_every=100, x64=True)
    assert tr["feasibility"].max() < 1e-10
    assert tr["gap"][:, -1].max() < 0.05 * float(p.loss(p.x0) - p.f_star)


@pytest.mark.slow  # two compiled runs (~30 s on a loaded 2-core machine)
def test_without_averaging_equals_a_unit_averaging_weight():
    """average=False is Zo-RSGD: g_{k+1} = G_{k+1}, the same as a tau = 1 in the moving average."""
    p = make_stochastic_rayleigh(jax.random.key(7), n=6, sigma=1.0)
    a = run(zo_rasa(0.05, average=False), p, 0, steps=200, seeds=2, log_every=20, x64=True)
    b = run(zo_rasa(0.05, averaging=1 / 0.05), p, 0, steps=200, seeds=2, log_every=20, x64=True)
    np.testing.assert_allclose(a["grad_norm_sq"], b["grad_norm_sq"], rtol=1e-10)


def test_padded_problem_gives_the_same_estimate_as_the_small_one():
    """S^{n-1} embedded in R^{n+3} by zero padding: masked directions give exactly the unpadded estimate."""
    small = make_stochastic_rayleigh(jax.random.key(8), n=5, sigma=1.0)
    big = make_stochastic_rayleigh(jax.random.key(8), n=5, sigma=1.0, ambient=8)
    assert big.manifold.n == 8 and float(big.support.sum()) == 5
    u = jax.random.normal(jax.random.key(9), (4, 8))
    z = jax.random.normal(jax.random.key(10), (4, 8))
    est = jax.jit(zo_gradient)
    g_big = est(big, big.x0, u, big.noise(z), 1e-3)
    g_small = est(small, small.x0, u[:, :5], small.noise(z[:, :5]), 1e-3)
    np.testing.assert_allclose(np.asarray(g_big[:5]), np.asarray(g_small), atol=1e-12)
    assert float(jnp.abs(g_big[5:]).max()) == 0.0


def test_solution_is_the_bottom_eigenspace():
    p = make_stochastic_rayleigh(jax.random.key(11), n=7, p=2, manifold="stiefel")
    assert float(jnp.linalg.norm(p.rgrad(p.x_star))) < 1e-12
    assert float(p.loss(p.x_star)) == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.eigvalsh(np.asarray(p.A)).min() > -1e-12


def test_bad_inputs_are_rejected():
    with pytest.raises(RatelabError, match="step_size"):
        zo_rasa(-0.1)
    with pytest.raises(RatelabError, match="mu"):
        zo_rasa(0.1, mu=0.0)
    with pytest.raises(RatelabError, match="batch"):
        zo_rasa(0.1, batch=0)
    with pytest.raises(RatelabError, match="averaging"):
        zo_rasa(0.5, averaging=3.0)
    with pytest.raises(RatelabError, match="average must be"):
        zo_rasa(0.1, average="yes")
    with pytest.raises(RatelabError, match="manifold"):
        make_stochastic_rayleigh(jax.random.key(0), n=4, manifold="grassmann")
    with pytest.raises(RatelabError, match="ambient"):
        make_stochastic_rayleigh(jax.random.key(0), n=4, ambient=2)
    with pytest.raises(RatelabError, match="p < n"):
        make_stochastic_rayleigh(jax.random.key(0), n=4, p=2)
    p = make_stochastic_rayleigh(jax.random.key(0), n=4)
    with pytest.raises(RatelabError, match="retraction"):
        run(zo_rasa(0.1, retraction="qr"), p, 0, steps=2)
