"""ARADMM (Deng, Jin, Hu, Wang, arXiv:2510.18617): manifold feasibility, the multiplier update and the y-update's
exact subgradient identity, RADMM as a point of ARADMM's parameter space, agreement with RADMM's objective, the
mu = 0 limit, and input checks (float64)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.aradmm import ARADMM_SPCA
from ratelab import RatelabError
from riemannian.admm import radmm, theory_parameters
from riemannian.aradmm import aradmm, kkt_terms, radmm_parameters
from riemannian.sparse_problems import make_sparse_pca, pca_optimum


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


STEPS = 3000


def _spca(mu=0.2, seed=0):
    return make_sparse_pca(jax.random.key(seed), m=8, n=12, p=2, mu=mu)


@functools.partial(jax.jit, static_argnums=2)
def _run(problem, params, steps=STEPS):
    """ARADMM with traced ``params`` (one compiled program for every parameter point and every mu) from
    ``problem.x0``: the final state, the per-step metrics and the per-step multipliers and residuals c = X - Y."""
    solver = aradmm(**params)

    def body(state, _):
        new, metrics = solver.step(state, problem, None)
        return new, (metrics, new.lam, problem.lin(new.x) - new.y)

    return jax.lax.scan(body, solver.init(problem, jax.random.key(0)), None, length=steps)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _run_radmm(problem, eps, steps=STEPS):
    solver = radmm(**theory_parameters(eps))

    def body(state, _):
        return solver.step(state, problem, None)

    return jax.lax.scan(body, solver.init(problem, jax.random.key(0)), None, length=steps)


def _params(**kw):
    base = {"rho0": 1.0, "penalty_power": 1.0 / 3.0, "beta0": 1.0, "adaptive_dual": 1.0, "gamma": 0.0,
            "c_eta": 0.5}
    return {k: jnp.asarray(v, jnp.float64) for k, v in {**base, **kw}.items()}


def test_feasibility_multiplier_update_subgradient_identity_and_dual_rule():
    """On St(n, p) to rounding; lambda_{k+1} - lambda_k = beta_k (A x_{k+1} - y_{k+1}); lambda~ = lambda_k + rho_k c
    lies in partial h(y_{k+1}) (the y-update's optimality), so the KKT measure's subgradient term is 0 to rounding;
    beta_k follows the rule (beta_0 at k = 0) and the dual steps are summable:
    sum_k ||lambda_{k+1} - lambda_k|| <= beta0 ||c_1|| log^2 2 sum_k 1 / ((k+1) log^2(k+2))."""
    problem = _spca()
    _, (m, lam, c) = _run(problem, _params())
    m, lam, c = {k: np.asarray(v) for k, v in m.items()}, np.asarray(lam), np.asarray(c)
    assert m["feasibility"].max() < 1e-12
    assert m["kkt_subgrad"].max() < 1e-13
    lam_prev = np.concatenate([np.zeros_like(lam[:1]), lam[:-1]])
    np.testing.assert_allclose(lam - lam_prev, m["beta"][:, None, None] * c, atol=1e-15)
    cn = np.linalg.norm(c, axis=(1, 2))
    k = np.arange(STEPS)
    rule = np.minimum(1.0, cn[0] * math.log(2) ** 2 / (cn * (k + 1) * np.log(k + 2) ** 2))
    np.testing.assert_allclose(m["beta"], rule, rtol=1e-12)
    np.testing.assert_allclose(m["rho"], (k + 1) ** (1 / 3), rtol=1e-12)
    assert m["dual_step"].sum() <= cn[0] * math.log(2) ** 2 * np.sum(1.0 / ((k + 1) * np.log(k + 2) ** 2)) * 1.000001


def test_radmm_is_a_point_of_aradmms_parameter_space_and_the_objectives_agree():
    """At radmm_parameters(eps), ARADMM's iteration is RADMM's (Li, Ma, Srivastava, Algorithm 1 with gamma = eps,
    rho = 1 / eps, eta = eps), start included: the same iterates to rounding. ARADMM itself (default parameters)
    reaches the same local minimiser from the same start: RADMM a minimiser of f + h_gamma, ARADMM one of f + (an
    envelope of h with parameter 1 / rho_K), so (derived) |F(X_A) - F(X_R)| <= (gamma + 1 / rho_K) L_h^2 / 2 with
    L_h = mu sqrt(n p); RADMM's exact KKT residual there is its smoothing floor ||X - prox_{gamma h}(Y)|| =
    gamma ||lambda_R||."""
    problem = _spca(seed=3)
    eps = 0.05
    sr, mr = _run_radmm(problem, eps)
    sa, (ma, _, _) = _run(problem, _params(**radmm_parameters(problem, eps)))
    for a, r in ((sa.x, sr.x), (sa.y, sr.y), (sa.lam, sr.lam)):
        np.testing.assert_allclose(a, r, atol=1e-12)
    np.testing.assert_allclose(ma["objective"], mr["objective"], atol=1e-12)
    sb, (mb, _, _) = _run(problem, _params())
    gap = abs(float(mb["objective"][-1]) - float(mr["objective"][-1]))
    assert gap <= (eps + STEPS ** (-1 / 3)) * 0.2**2 * 12 * 2 / 2
    xb, xr = np.asarray(sb.x), np.asarray(sr.x)
    assert np.linalg.norm(xb @ xb.T - xr @ xr.T) < 0.1
    grad, feas, sub = kkt_terms(problem, sr.x, sr.y, sr.lam, eps)
    assert float(feas) == pytest.approx(eps * float(jnp.linalg.norm(sr.lam)), rel=1e-6)
    assert float(grad) < 1e-8 and float(sub) < 1e-12


def test_mu_zero_is_riemannian_gradient_descent_on_pca():
    """h = 0: y = A x + lambda / rho, so c = 0, lambda stays 0 and the x-step is Riemannian gradient descent on
    -1/2 tr(X^T C X), whose minimum over St(n, p) is -1/2 (sum of the p largest eigenvalues) (Ky Fan)."""
    problem = _spca(mu=0.0)
    value, v = pca_optimum(problem)
    state, (m, lam, _) = _run(problem, _params(rho0=0.1, beta0=0.1, penalty_power=0.0))
    assert float(m["objective"][-1]) == pytest.approx(value, abs=1e-9)
    np.testing.assert_allclose(lam, 0.0, atol=1e-15)
    x = np.asarray(state.x)
    np.testing.assert_allclose(x @ x.T, v @ v.T, atol=1e-6)


def test_bad_input_errors():
    with pytest.raises(RatelabError, match="rho0"):
        aradmm(0.0)
    with pytest.raises(RatelabError, match="penalty_power"):
        aradmm(1.0, penalty_power=-0.1)
    with pytest.raises(RatelabError, match="c_eta"):
        aradmm(1.0, c_eta=2.5)
    with pytest.raises(RatelabError, match="adaptive_dual"):
        aradmm(1.0, adaptive_dual=2.0)
    with pytest.raises(RatelabError, match="gamma"):
        aradmm(1.0, gamma=-1.0)
    with pytest.raises(RatelabError, match="lipschitz"):
        aradmm(1.0, lipschitz=(1.0,))
    with pytest.raises(RatelabError, match="retraction must be one of"):
        aradmm(1.0, retraction="cayley").init(_spca(), jax.random.key(0))
    with pytest.raises(RatelabError, match="variant"):
        ARADMM_SPCA.validate(ARADMM_SPCA.config("quick", {"variant": "admm"}))
    with pytest.raises(RatelabError, match="steps must be >= 100 log_every"):
        ARADMM_SPCA.validate(ARADMM_SPCA.config("quick", {"steps": 500}))
