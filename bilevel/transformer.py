"""A decoder-only transformer in plain JAX: token embeddings, rotary causal self-attention, SwiGLU MLP, RMSNorm.

The lower-level model of bilevel data selection (``bilevel.data_selection``). Parameters are a plain pytree of
arrays (nested dicts), with the ``n_layers`` blocks stacked along a leading ``layers`` axis and run by
``lax.scan``, so that compiling a 32-layer model costs the same as compiling one layer::

    {"embed":      {"tokens": [vocab, d_model]},
     "layers":     {"attn_norm": {"scale": [L, d_model]},
                    "attn":      {"wq", "wk", "wv": [L, d_model, n_heads, d_head], "wo": [L, n_heads, d_head, d_model]},
                    "mlp_norm":  {"scale": [L, d_model]},
                    "mlp":       {"w_gate", "w_up": [L, d_model, d_ff], "w_down": [L, d_ff, d_model]}},
     "final_norm": {"scale": [d_model]},
     "unembed":    {"w": [d_model, vocab]}}

The architecture follows LLaMA (H. Touvron et al., "LLaMA: Open and Efficient Foundation Language Models",
arXiv:2302.13971, 2023): pre-normalisation with RMSNorm (B. Zhang and R. Sennrich, NeurIPS 2019), SwiGLU MLP
(N. Shazeer, arXiv:2002.05202) and rotary position embeddings (J. Su et al., arXiv:2104.09864); the ``7b``
configuration has LLaMA-7B's sizes (6.74e9 parameters) and ``1b`` TinyLlama-1.1B's (1.26e9 parameters here: all 32
heads have their own keys and values, where TinyLlama groups them in 4).

Activations pass through ``constrain(array, logical_axes)`` at block boundaries (identity by default). A caller
that shards the model hands in a function that applies ``jax.lax.with_sharding_constraint`` for the logical axis
names ``batch``, ``seq``, ``act_embed``, ``act_heads``, ``act_ff``, ``act_vocab``; this module knows no mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_positive_int

Params = dict[str, Any]
Constrain = Callable[[jax.Array, tuple[str | None, ...]], jax.Array]


def no_constraint(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """The default activation hook: leaves ``x`` where the compiler puts it."""
    del axes
    return x


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of the model. ``dtype`` is the compute dtype (parameters are stored in ``param_dtype``)."""

    name: str
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False  # recompute each block in the backward pass (activation memory O(1) in the depth)
    rope_base: float = 10_000.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for field in ("vocab", "d_model", "n_layers", "n_heads", "d_ff", "seq_len"):
            check_positive_int(field, getattr(self, field))
        if self.d_model % self.n_heads:
            raise RatelabError(f"d_model must be a multiple of n_heads, got d_model={self.d_model}, "
                               f"n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise RatelabError(f"d_model / n_heads must be even for rotary embeddings, got {self.d_head}")
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_choice("param_dtype", self.param_dtype, ("float32", "bfloat16"))

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def n_params(self) -> int:
        """Number of parameters, from the sizes (equals the leaf sizes of :func:`init_params`)."""
        d, f, v, n = self.d_model, self.d_ff, self.vocab, self.n_layers
        return 2 * v * d + d + n * (2 * d + 4 * d * d + 3 * d * f)

    def flops_per_token(self) -> float:
        """Forward + backward matmul FLOPs per token of one loss gradient: 6 N_matmul + 12 L T d (attention),
        the count of J. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361, Table 1
        (without the embedding lookup, with the unembedding matmul)."""
        d, f, v, n = self.d_model, self.d_ff, self.vocab, self.n_layers
        matmul = n * (4 * d * d + 3 * d * f) + d * v
        return 6.0 * matmul + 12.0 * n * self.seq_len * d


CONFIGS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig("tiny", vocab=32, d_model=32, n_layers=2, n_heads=4, d_ff=64, seq_len=16),
    "small": TransformerConfig("small", vocab=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, seq_len=64),
    "1b": TransformerConfig("1b", vocab=32_000, d_model=2048, n_layers=22, n_heads=32, d_ff=5632, seq_len=2048,
                            dtype="bfloat16", remat=True),
    "7b": TransformerConfig("7b", vocab=32_000, d_model=4096, n_layers=32, n_heads=32, d_ff=11_008, seq_len=2048,
                            dtype="bfloat16", remat=True),
}


def get_config(name: str, **overrides: Any) -> TransformerConfig:
    """The named configuration (``tiny``, ``small``, ``1b``, ``7b``), with fields replaced by ``overrides``."""
    check_choice("model", name, tuple(CONFIGS))
    return replace(CONFIGS[name], **overrides) if overrides else CONFIGS[name]


def init_params(key: jax.Array, cfg: TransformerConfig) -> Params:
    """Normal(0, init_std) matrices (output projections scaled by 1 / sqrt(2 L), as in GPT-2), unit norm scales."""
    d, f, v, n, h, dh = cfg.d_model, cfg.d_ff, cfg.vocab, cfg.n_layers, cfg.n_heads, cfg.d_head
    dt = jnp.dtype(cfg.param_dtype)
    ks = iter(jax.random.split(key, 9))
    std, out_std = cfg.init_std, cfg.init_std / (2 * n) ** 0.5

    def normal(shape: tuple[int, ...], s: float) -> jax.Array:
        return (s * jax.random.normal(next(ks), shape, jnp.float32)).astype(dt)

    return {
        "embed": {"tokens": normal((v, d), std)},
        "layers": {
            "attn_norm": {"scale": jnp.ones((n, d), dt)},
            "attn": {"wq": normal((n, d, h, dh), std), "wk": normal((n, d, h, dh), std),
                     "wv": normal((n, d, h, dh), std), "wo": normal((n, h, dh, d), out_std)},
            "mlp_norm": {"scale": jnp.ones((n, d), dt)},
            "mlp": {"w_gate": normal((n, d, f), std), "w_up": normal((n, d, f), std),
                    "w_down": normal((n, f, d), out_std)},
        },
        "final_norm": {"scale": jnp.ones((d,), dt)},
        "unembed": {"w": normal((d, v), std)},
    }


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * scale, the statistics in float32."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


def rotary(x: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding of ``x`` [batch, seq, heads, d_head] (pairs (i, i + d_head / 2) rotated)."""
    t, dh = x.shape[1], x.shape[-1]
    freqs = base ** (-jnp.arange(0, dh // 2, dtype=jnp.float32) * 2.0 / dh)
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * freqs[None, :]
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def _block(cfg: TransformerConfig, constrain: Constrain, h: jax.Array, layer: Params) -> jax.Array:
    dt = jnp.dtype(cfg.dtype)
    w = jax.tree_util.tree_map(lambda a: a.astype(dt), layer)
    a = rms_norm(h, w["attn_norm"]["scale"])
    q = constrain(jnp.einsum("btd,dhk->bthk", a, w["attn"]["wq"]), ("batch", "seq", "act_heads", None))
    k = constrain(jnp.einsum("btd,dhk->bthk", a, w["attn"]["wk"]), ("batch", "seq", "act_heads", None))
    v = constrain(jnp.einsum("btd,dhk->bthk", a, w["attn"]["wv"]), ("batch", "seq", "act_heads", None))
    q, k = rotary(q, cfg.rope_base), rotary(k, cfg.rope_base)
    t = h.shape[1]
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(cfg.d_head))
    causal = jnp.tril(jnp.ones((t, t), bool))
    logits = jnp.where(causal[None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    att = constrain(jnp.einsum("bhqs,bshk->bqhk", probs, v), ("batch", "seq", "act_heads", None))
    h = constrain(h + jnp.einsum("bthk,hkd->btd", att, w["attn"]["wo"]), ("batch", "seq", "act_embed"))
    m = rms_norm(h, w["mlp_norm"]["scale"])
    gate = jnp.einsum("btd,df->btf", m, w["mlp"]["w_gate"])
    up = jnp.einsum("btd,df->btf", m, w["mlp"]["w_up"])
    hidden = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_ff"))
    return constrain(h + jnp.einsum("btf,fd->btd", hidden, w["mlp"]["w_down"]), ("batch", "seq", "act_embed"))


def forward(params: Params, tokens: jax.Array, cfg: TransformerConfig,
            constrain: Constrain = no_constraint) -> jax.Array:
    """Next-token logits [batch, seq, vocab] (float32) for ``tokens`` [batch, seq] (int)."""
    dt = jnp.dtype(cfg.dtype)
    h = constrain(params["embed"]["tokens"].astype(dt)[tokens], ("batch", "seq", "act_embed"))

    def body(h: jax.Array, layer: Params) -> tuple[jax.Array, None]:
        return _block(cfg, constrain, h, layer), None

    if cfg.remat:
        body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)
    h, _ = jax.lax.scan(body, h, params["layers"])
    h = rms_norm(h, params["final_norm"]["scale"].astype(dt))
    logits = jnp.einsum("btd,dv->btv", h, params["unembed"]["w"].astype(dt)).astype(jnp.float32)
    return constrain(logits, ("batch", "seq", "act_vocab"))


def position_losses(params: Params, tokens: jax.Array, cfg: TransformerConfig,
                    constrain: Constrain = no_constraint) -> jax.Array:
    """Next-token cross-entropy at every position: ``tokens`` [batch, seq_len + 1] -> [batch, seq_len] (float32)."""
    logits = forward(params, tokens[:, :-1], cfg, constrain)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def sequence_losses(params: Params, tokens: jax.Array, cfg: TransformerConfig,
                    constrain: Constrain = no_constraint) -> jax.Array:
    """Mean next-token cross-entropy of each sequence: ``tokens`` [batch, seq_len + 1] -> [batch] (float32)."""
    return jnp.mean(position_losses(params, tokens, cfg, constrain), axis=-1)
