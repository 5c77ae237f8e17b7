"""ReMax on a generation tree: the tree's indexing, exact gradients and covariances by enumeration, unbiasedness of
the greedy baseline (and the bias of a sample-dependent one), offset invariance, random tie-breaking, the
closed-form optimum, state sizes, and bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.remax import (
    exact_moments,
    greedy,
    learner_init,
    objective,
    optimum_value,
    regularized_rewards,
    sample_scores,
    sequence_logprobs,
    state_size,
    tree,
    value_baseline_step,
)
from ratelab import RatelabError

TR = tree(3, 3)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _instance(seed):
    rng = np.random.default_rng(seed)
    shape = (TR.n_prefixes, 3)
    return (jnp.asarray(rng.standard_normal(shape)), jnp.asarray(rng.standard_normal(shape)),
            jnp.asarray(rng.standard_normal(27)))


def test_tree_enumerates_a_distribution():
    assert TR.n_prefixes == 1 + 3 + 9 and TR.sequences.shape == (27, 3)
    theta, _, _ = _instance(0)
    assert np.isclose(jnp.exp(sequence_logprobs(theta, TR)).sum(), 1.0)


@jax.jit
def _enumerated(theta, ref, r, offset):
    """Exact expectations of the per-response estimates over the policy (every response weighted by pi)."""
    codes = jnp.arange(27)
    p = jnp.exp(sequence_logprobs(theta, TR))
    s = sample_scores(theta, codes, TR)
    rb = regularized_rewards(theta, ref, r + offset, 0.1, TR)
    b = rb[greedy(theta, jnp.full(3, 0.5), TR)]
    mean = lambda adv: jnp.einsum("a,a,aij->ij", p, adv, s)  # noqa: E731
    # the pair-mean baseline: E_{a, a'} s(a) (r(a) - r(a')) / 2 with a' an independent draw
    pair = 0.5 * (mean(rb) - jnp.sum(p * rb) * mean(jnp.ones_like(rb)))
    return mean(rb - b), mean(rb), pair, jax.grad(objective)(theta, ref, r + offset, 0.1, TR)


def test_greedy_baseline_is_unbiased_the_pair_mean_is_halved_and_both_offset_invariant():
    theta, ref, r = _instance(1)
    remax, reinforce, half, grad = _enumerated(theta, ref, r, 0.0)
    assert np.allclose(remax, grad, atol=1e-12) and np.allclose(reinforce, grad, atol=1e-12)
    assert np.allclose(half, grad / 2)
    remax_c, _, _, grad_c = _enumerated(theta, ref, r, 5.0)
    assert np.allclose(remax_c, remax, atol=1e-12) and np.allclose(grad_c, grad, atol=1e-12)


def test_exact_covariance_matches_enumeration_and_reinforce_pays_the_offset():
    theta, ref, r = _instance(2)

    @jax.jit
    def check(offset):
        p = jnp.exp(sequence_logprobs(theta, TR))
        s = sample_scores(theta, jnp.arange(27), TR)
        rb = regularized_rewards(theta, ref, r + offset, 0.1, TR)
        b = rb[greedy(theta, jnp.full(3, 0.5), TR)]
        g = s * (rb - b)[:, None, None]
        mean = jnp.einsum("a,aij->ij", p, g)
        brute = jnp.einsum("a,a->", p, jnp.sum(g**2, (1, 2))) - jnp.sum(mean**2)
        _, closed = exact_moments(theta, ref, r + offset, 0.1, b, TR)
        _, none = exact_moments(theta, ref, r + offset, 0.1, 0.0, TR)
        return brute, closed, none

    brute, closed, none0 = check(0.0)
    assert np.isclose(brute, closed, rtol=1e-10)
    brute3, closed3, none3 = check(3.0)
    assert np.isclose(closed3, closed, rtol=1e-10)  # ReMax: offset invariant
    assert none3 > none0  # vanilla REINFORCE pays the offset


def test_greedy_breaks_ties_at_random_and_otherwise_takes_the_mode():
    theta = jnp.zeros((TR.n_prefixes, 3))  # every token ties
    picks = {int(greedy(theta, jnp.full(3, u), TR)) for u in (0.1, 0.5, 0.9)}
    assert len(picks) == 3
    theta = theta.at[0, 2].set(1.0)
    assert int(greedy(theta, jnp.full(3, 0.1), TR)) // 9 == 2


def test_optimum_value_is_the_supremum():
    theta, ref, r = _instance(3)
    best = optimum_value(ref, r, 0.1, TR)
    assert objective(theta, ref, r, 0.1, TR) < best
    assert np.isclose(objective(ref, ref, r, 0.1, TR), jnp.sum(jnp.exp(sequence_logprobs(ref, TR)) * r))


def test_remax_state_holds_no_value_model():
    theta, ref, r = _instance(4)
    opt = optax.adam(1e-2)
    remax, value = learner_init(theta, TR, opt, False), learner_init(theta, TR, opt, True)
    p = TR.n_prefixes * 3
    assert state_size(remax) == 3 * p + 1 and state_size(value) == 3 * (p + TR.n_prefixes) + 1
    u = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 3)))
    after = value_baseline_step(value, ref, r, 0.1, u, opt, TR)
    assert float(jnp.abs(after.value).sum()) > 0


def test_bad_input_is_rejected():
    with pytest.raises(RatelabError, match="vocab"):
        tree(1, 3)
    with pytest.raises(RatelabError, match="vocab \\*\\* horizon"):
        tree(4, 9)
