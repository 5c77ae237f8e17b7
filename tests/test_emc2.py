"""EMC^2 (optim_theory.contrastive): the global contrastive loss's closed-form gradient, the unbiasedness of the chain
estimate under the softmax, the MH kernel's reversibility, and schedule == float."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from optim_theory import contrastive as ct
from ratelab.errors import RatelabError


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        problem = ct.random_problem(3, 6, 5, 0.3, 4.0)
        problem = ct.ContrastiveProblem(jnp.asarray(problem.views, jnp.float64), 4.0)
        params = jnp.asarray(np.random.default_rng(7).standard_normal((3, 5)))
        yield problem, params


def test_closed_form_gradient_equals_autodiff(setup):
    problem, params = setup
    with jax.enable_x64(True):
        auto = jax.jit(jax.grad(ct.global_loss))(params, problem)
        closed = jax.jit(ct.global_grad)(params, problem)
    np.testing.assert_allclose(closed, auto, rtol=1e-12, atol=1e-14)


def test_full_batch_in_batch_loss_is_the_global_gradient(setup):
    """In-batch negatives with the whole dataset as the batch are the global loss (up to the constant log(2n - 2))."""
    problem, params = setup
    with jax.enable_x64(True):
        g = jax.jit(jax.grad(ct.in_batch_surrogate))(params, problem.views, problem.beta)
        np.testing.assert_allclose(g, jax.jit(ct.global_grad)(params, problem), rtol=1e-12, atol=1e-14)


def test_chain_estimate_is_unbiased_under_the_softmax(setup):
    """E_i E_{zeta ~ softmax} of EMC^2's estimate = grad L: the estimate is A + h0(zeta_0) + h1(zeta_1), so
    E = sum_s pi_0(s) g(s, s*) + sum_s pi_1(s) g(s*, s) - g(s*, s*) for any fixed s*, exactly."""
    problem, params = setup
    n = problem.views.shape[0]
    flat = problem.views.reshape(2 * n, -1)
    pi = ct.softmax_targets(params, problem.views, problem.beta)

    with jax.enable_x64(True):
        @jax.jit
        def g(xa, s0, s1):  # EMC^2's estimate for point xa [2, p] with chain negatives s0, s1 (vectorised over them)
            one = jax.grad(ct.chain_surrogate)
            return jax.vmap(lambda a, b: one(params, xa[None], jnp.stack([flat[a], flat[b]])[None], problem.beta,
                                             jnp.ones(1)))(s0, s1)

        total = np.zeros(params.shape)
        for i in range(n):
            negs = np.flatnonzero(np.arange(2 * n) // 2 != i)
            star = np.full_like(negs, negs[0])
            e0 = np.einsum("s,sij->ij", pi[2 * i, negs], np.asarray(g(problem.views[i], negs, star)))
            e1 = np.einsum("s,sij->ij", pi[2 * i + 1, negs], np.asarray(g(problem.views[i], star, negs)))
            total += (e0 + e1 - np.asarray(g(problem.views[i], star[:1], star[:1]))[0]) / n
        np.testing.assert_allclose(total, jax.jit(ct.global_grad)(params, problem), rtol=1e-11, atol=1e-13)


def test_mh_kernel_reversible_with_softmax_stationary_vector():
    scores = 6.0 * np.cos(np.arange(9.0))  # beta phi in [-6, 6]
    pi = np.exp(scores - scores.max())
    pi /= pi.sum()
    P = ct.mh_kernel(scores)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    flow = pi[:, None] * P
    np.testing.assert_allclose(flow, flow.T, rtol=0, atol=1e-16)  # detailed balance
    a = np.vstack([P.T - np.eye(9), np.ones((1, 9))])
    stat = scipy.linalg.lstsq(a, np.r_[np.zeros(9), 1.0])[0]
    np.testing.assert_allclose(stat, pi, rtol=0, atol=1e-12)
    U = ct.mh_kernel(scores, accept_all=True)  # uniform proposal always accepted: stationary vector uniform
    np.testing.assert_allclose(U, np.full((9, 9), 1 / 9), atol=1e-15)
    assert np.max(np.abs(pi - 1 / 9)) > 0.1


def test_distinct_draws_distinct_points():
    u = jax.random.uniform(jax.random.key(0), (500, 4))
    idx = np.asarray(jax.jit(jax.vmap(lambda v: ct._distinct(v, 7)))(u))
    assert idx.min() >= 0 and idx.max() < 7
    assert all(len(set(row)) == 4 for row in idx)
    one = np.asarray(jax.jit(jax.vmap(lambda v: ct._distinct(v, 7)))(u[:, :1]))[:, 0]
    np.testing.assert_array_equal(one, np.floor(np.asarray(u[:, 0]) * 7).astype(int))


def test_schedule_equals_float_bitwise():
    problem = ct.random_problem(0, 8, 4, 0.3, 5.0)
    w0 = jnp.ones((2, 4), jnp.float32) / 2

    def go(lr):
        f = jax.jit(lambda arm: ct.run(problem, jax.random.key(1), w0, steps=64, eval_every=16, learning_rate=lr,
                                       sampler=arm))
        exe = f.lower(np.int32(0)).compile({"xla_cpu_use_fusion_emitters": False})  # as experiments/emc2.py
        return [exe(np.int32(arm)) for arm in (0, 2)]  # EMC^2 and in-batch, one program

    for (a, sa), (b, sb) in zip(go(0.05), go(optax.constant_schedule(0.05)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(sa.params), np.asarray(sb.params))
        np.testing.assert_array_equal(np.asarray(sa.chains), np.asarray(sb.chains))
        chains = np.asarray(sa.chains)  # every chain state is a negative of its anchor (another point's view)
        assert np.all(chains // 2 != np.arange(8)[:, None])


def test_bad_arguments_raise():
    with pytest.raises(RatelabError, match="views"):
        ct.make_problem(np.zeros((4, 3, 2)), 1.0)
    with pytest.raises(RatelabError, match="beta"):
        ct.make_problem(np.ones((4, 2, 2)), 0.0)
    problem = ct.random_problem(0, 4, 3, 0.3, 1.0)
    w0 = jnp.ones((2, 3))
    with pytest.raises(RatelabError, match="sampler"):
        ct.run(problem, jax.random.key(0), w0, steps=8, eval_every=4, learning_rate=0.1, sampler="gumbel")
    with pytest.raises(RatelabError, match="multiple"):
        ct.run(problem, jax.random.key(0), w0, steps=10, eval_every=4, learning_rate=0.1)
    with pytest.raises(RatelabError, match="learning_rate"):
        ct.run(problem, jax.random.key(0), w0, steps=8, eval_every=4, learning_rate=-1.0)
    with pytest.raises(RatelabError, match="batch_size"):
        ct.run(problem, jax.random.key(0), w0, steps=8, eval_every=4, learning_rate=0.1, in_batch_size=5)
