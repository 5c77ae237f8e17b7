"""Robbins-Monro and Chung's constants: fixed points, the exact second-moment recursion, and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ratelab import RatelabError, harmonic
from rl_theory.sa import (
    chung_constant,
    chung_exponent,
    exact_second_moment,
    linear_sa,
    make_linear_sa,
    make_scalar_sa,
    robbins_monro,
)


def test_solution_is_the_root_of_the_mean_field():
    problem = make_linear_sa(jax.random.key(0), dim=6, lam_min=0.5, lam_max=3.0)
    with jax.enable_x64(True):
        residual = problem.mean_field(problem.solution())
    assert float(jnp.max(jnp.abs(residual))) < 1e-5
    eig = np.linalg.eigvalsh(np.asarray(problem.A, dtype=float))
    np.testing.assert_allclose([eig.min(), eig.max()], [0.5, 3.0], rtol=1e-5)


def test_noiseless_iteration_is_the_exact_linear_recursion():
    """sigma -> 0: x_{k+1} - x* = (1 - a lam / (k + k0)) (x_k - x*), a product with a closed form."""
    problem = make_scalar_sa(lam=1.0, sigma=1e-30, x0=1.0, x_star=0.5)
    solver = robbins_monro(harmonic(1.5, 4.0))
    state = solver.init(problem, jax.random.key(0))
    for _ in range(50):
        state, metrics = solver.step(state, problem, jnp.zeros(1))
    expected = 0.5 * np.prod([1 - 1.5 / (k + 4.0) for k in range(50)])
    assert float(state.x[0]) - 0.5 == pytest.approx(expected, rel=1e-5)
    assert float(metrics["dist_to_opt"]) == pytest.approx(abs(expected), rel=1e-5)
    assert int(state.count) == 50


def test_fixed_point_stays_put_without_noise():
    problem = make_linear_sa(jax.random.key(1), dim=4, lam_min=1.0, lam_max=2.0)
    problem = linear_sa(problem.A, problem.b, sigma=1.0, x0=problem.x_star)
    solver = robbins_monro(0.1)
    state = solver.init(problem, jax.random.key(0))
    state, metrics = solver.step(state, problem, jnp.zeros(4))
    assert float(metrics["dist_to_opt"]) < 1e-5


@pytest.mark.parametrize(("a", "lam", "sigma"), [(1.0, 1.0, 1.0), (0.8, 2.0, 0.5), (2.0, 1.0, 3.0)])
def test_exact_recursion_converges_to_chungs_constant(a, lam, sigma):
    """k E(x_k - x*)^2 -> a^2 sigma^2 / (2 a lam - 1): the recursion, not the formula, is what we compute."""
    problem = make_scalar_sa(lam=lam, sigma=sigma, x0=1.0)
    m = exact_second_moment(problem, harmonic(a, 10.0), 200_000)
    k = np.arange(1, m.size + 1)
    assert k[-1] * m[-1] == pytest.approx(chung_constant(a, lam, sigma), rel=0.01)


def test_exact_recursion_slow_regime_exponent():
    problem = make_scalar_sa(lam=1.0, sigma=1.0, x0=1.0)
    m = exact_second_moment(problem, harmonic(0.25, 10.0), 400_000)
    slope = np.log(m[-1] / m[3999]) / np.log(400_000 / 4000)
    assert slope == pytest.approx(chung_exponent(0.25, 1.0), abs=0.02)


def test_exact_recursion_in_several_dimensions_is_the_sum_of_modes():
    """With A = Q diag(l_i) Q^T the trace of P_k splits into scalar problems, one per eigenvalue."""
    problem = make_linear_sa(jax.random.key(2), dim=3, lam_min=1.0, lam_max=2.0, sigma=0.7)
    total = exact_second_moment(problem, harmonic(1.0, 10.0), 3000)
    lams, q = np.linalg.eigh(np.asarray(problem.A, dtype=float))
    e0 = q.T @ (np.asarray(problem.x0, dtype=float) - np.asarray(problem.x_star, dtype=float))
    modes = sum(exact_second_moment(make_scalar_sa(lam=lam, sigma=0.7, x0=e), harmonic(1.0, 10.0), 3000)
                for lam, e in zip(lams, e0, strict=True))
    np.testing.assert_allclose(total, modes, rtol=1e-4)


def test_chung_formulas_and_their_domain():
    assert chung_constant(1.0, 1.0, 1.0) == 1.0
    assert chung_exponent(1.0, 1.0) == -1.0
    assert chung_exponent(0.25, 1.0) == -0.5
    with pytest.raises(RatelabError, match="only when 2\\*a\\*lam > 1"):
        chung_constant(0.25, 1.0, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_sa(np.eye(2), np.ones(3)), r"b must have shape \(2,\)"),
        (lambda: linear_sa(np.ones((2, 3)), np.ones(2)), "A must be a square matrix"),
        (lambda: linear_sa(np.eye(2), np.ones(2), x0=np.ones(3)), r"x0 must have shape \(2,\)"),
        (lambda: linear_sa(-np.eye(2), np.ones(2)), "A must be strongly monotone"),
        (lambda: linear_sa(np.eye(2), np.ones(2), sigma=0.0), "sigma must be"),
        (lambda: make_scalar_sa(lam=-1.0), "lam must be"),
        (lambda: make_linear_sa(jax.random.key(0), dim=0), "dim must be"),
        (lambda: make_linear_sa(jax.random.key(0), dim=2, lam_min=2.0, lam_max=1.0), "lam_max must be >= lam_min"),
        (lambda: robbins_monro(0.0), "step_size must be"),
        (lambda: robbins_monro(-1.0), "step_size must be"),
        (lambda: harmonic(-1.0, 10.0), "a must be"),
    ],
)
def test_bad_inputs_name_the_argument(call, message):
    with pytest.raises(RatelabError, match=message):
        call()


def test_device_array_equals_jnp_asarray_without_a_program():
    from rl_theory.precision import device_array

    rng = np.random.default_rng(3)
    for value in (rng.standard_normal((5, 3)), 0.9, [1.0, 2.5], rng.standard_normal(4).astype(np.float32)):
        for dt in (jnp.float32, jnp.result_type(float)):
            got, want = device_array(value, dt), jnp.asarray(value, dt)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    with jax.enable_x64(True):
        x = rng.standard_normal(6)
        assert device_array(x, jnp.float64).dtype == jnp.float64 and np.array_equal(device_array(x, jnp.float64), x)
    traced = jax.jit(lambda v: device_array(v, jnp.float32) * 2)(jnp.arange(3.0))
    assert np.array_equal(traced, 2 * np.arange(3.0))
