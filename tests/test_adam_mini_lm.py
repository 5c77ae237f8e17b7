"""experiments/adam_mini_lm.py and the traced-partition Adam-mini it runs: a partition given as data under vmap is
the same optimizer as the host partition, the singleton partition is optax.adam on the transformer's loss (float32),
the rare-token masks, per-position losses, the arms' partitions, and the config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from bilevel import transformer as tfm
from experiments import adam_mini_lm as e
from optim_theory.adam_mini import adam_mini, transformer_partition
from ratelab.errors import RatelabError


def _path(opt, grad, x0, steps):
    def body(carry, _):
        x, s = carry
        u, s = opt.update(grad(x), s, x)
        return (x + u, s), x + u

    return jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)[1]


def test_traced_partitions_under_vmap_equal_the_host_partitions():
    with jax.enable_x64(True):
        d, rng = 10, np.random.default_rng(0)
        a = rng.standard_normal((d, d))
        H = jnp.asarray(a @ a.T / d + np.eye(d))
        x0 = jnp.asarray(rng.standard_normal(d))
        parts = np.stack([np.arange(d), np.repeat(np.arange(2), 5), np.zeros(d, int), np.arange(d) % 3])
        counts = [d, 2, 1, 3]
        traced = jax.jit(jax.vmap(lambda p: _path(adam_mini(0.05, p, d), lambda x: H @ x, x0, 30)))(parts)
        for i, (p, n) in enumerate(zip(parts, counts, strict=True)):
            host = jax.jit(lambda p=p, n=n: _path(adam_mini(0.05, p, n), lambda x: H @ x, x0, 30))()
            np.testing.assert_allclose(traced[i], host, rtol=0, atol=1e-13)
        adam = jax.jit(lambda: _path(optax.adam(0.05), lambda x: H @ x, x0, 30))()
        np.testing.assert_allclose(traced[0], adam, rtol=0, atol=1e-12)


def test_singleton_partition_is_adam_on_the_transformer_in_float32():
    mcfg = tfm.get_config("tiny", vocab=16, d_model=16, n_heads=2, d_ff=32, n_layers=1, seq_len=8)
    params = tfm.init_params(jax.random.PRNGKey(1), mcfg)
    x0, unravel = ravel_pytree(params)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (4, mcfg.seq_len + 1), 0, mcfg.vocab)
    grad = jax.grad(lambda x: jnp.mean(tfm.sequence_losses(unravel(x), tokens, mcfg)))
    d = x0.size
    mini = jax.jit(lambda p: _path(adam_mini(1e-2, p, d, b2=0.95), grad, x0, 20))(jnp.arange(d, dtype=jnp.int32))
    adam = jax.jit(lambda: _path(optax.adam(1e-2, b2=0.95), grad, x0, 20))()
    assert mini.dtype == jnp.float32
    np.testing.assert_allclose(mini, adam, rtol=0, atol=2e-5)
    assert float(jnp.abs(adam[-1] - x0).max()) > 0.05  # it moved: the comparison is not of two frozen vectors


def test_position_losses_average_to_sequence_losses():
    mcfg = tfm.get_config("tiny", vocab=16, d_model=16, n_heads=2, d_ff=32, n_layers=1, seq_len=8)
    params = tfm.init_params(jax.random.PRNGKey(0), mcfg)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (3, mcfg.seq_len + 1), 0, mcfg.vocab)
    per = tfm.position_losses(params, tokens, mcfg)
    assert per.shape == (3, mcfg.seq_len) and bool(jnp.all(per > 0))
    np.testing.assert_allclose(jnp.mean(per, axis=-1), tfm.sequence_losses(params, tokens, mcfg), rtol=1e-6)


def test_rare_tokens_are_the_lower_half_of_the_stationary_law():
    pi = np.array([[0.4, 0.05, 0.3, 0.1, 0.1, 0.05], [1 / 6] * 6])
    mask = e.rare_tokens(pi)
    assert mask.sum(axis=1).tolist() == [3, 3]
    assert mask[0, [1, 5]].all() and not mask[0, [0, 2]].any() and mask[0, 3:5].sum() == 1  # ties at 0.1
    assert pi[0][mask[0]].max() <= pi[0][~mask[0]].min()


def test_arm_partitions_and_the_chains():
    cfg = {**e.EXPERIMENT.config("quick"), "seeds": 2}
    probe = tfm.init_params(jax.random.PRNGKey(0), e.model_config(cfg))
    part, n = transformer_partition(probe)
    parts = e.arm_partitions(cfg, part)
    assert parts.shape == (len(e.ARMS), part.size)
    assert np.array_equal(parts[0], np.arange(part.size)) and np.array_equal(parts[1], part)
    assert np.unique(parts[2]).tolist() == [0]
    assert np.array_equal(np.bincount(parts[3], minlength=n), np.bincount(part, minlength=n))  # same sizes
    assert np.mean(parts[3] == part) < 0.5  # shuffled
    P, pi = e.chains(cfg)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.einsum("si,sij->sj", pi, P), pi, atol=1e-10)  # stationary


def test_bad_config_is_refused_before_compute():
    cfg = e.EXPERIMENT.config("quick")
    e._validate(cfg)
    for bad, word in (({"b2": 1.0}, "b2"), ({"steps": 310}, "multiple"), ({"warmup": 300}, "warmup"),
                      ({"lr": 0.0}, "lr")):
        with pytest.raises(RatelabError, match=word):
            e._validate({**cfg, **bad})
