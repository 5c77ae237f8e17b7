"""Bilevel data selection (the SEAL setting) on synthetic token data with a known fraction of corrupted sequences.

Paper
-----
H. Shen, P.-Y. Chen, P. Das and T. Chen, "SEAL: Safety-enhanced Aligned LLM Fine-tuning via Bilevel Data
Selection", ICLR 2025, arXiv:2410.07471. The data ranker is a score x_i per fine-tuning sequence; the lower level
fine-tunes the model y on the training data weighted by softmax(x), the upper level measures the model's loss on a
small trusted set; the problem is solved with a penalty method (V-PBGD: H. Shen and T. Chen, "On Penalty-based
Bilevel Gradient Descent Method", ICML 2023, arXiv:2302.05185)::

    min_x f(x, y)  = (1 / M) sum_{j in trusted} l_j(y)
    s.t.  y in argmin_y g(x, y) = sum_{i in train} softmax(x)_i l_i(y)

with l_i the mean next-token cross-entropy of sequence i under the transformer y (``bilevel.transformer``).
The step's batch is a minibatch B of training sequences (their indices and tokens) and of trusted sequences;
g is estimated by the softmax of x restricted to B, softmax(x_B)_i = softmax(x)_i / sum_{j in B} softmax(x)_j,
which is the full-data weighting renormalised over the batch.

Symbols -> arguments: x (``x``, shape [n_train], logits of the data weights), y (the transformer parameter
pytree), the training and trusted sets (``DataSelection.train``, ``.trusted``), B (``batch_size``).

Synthetic data: a vocabulary of V tokens and two first-order Markov chains, each "next token = pi(token) with
probability 1 - noise, uniform otherwise", with two permutations pi_clean and pi_corrupt that disagree on every
token. Clean and trusted sequences follow pi_clean, a fraction ``corrupt_frac`` of the training sequences follows
pi_corrupt: a model cannot fit both, so the trusted loss asks to down-weight exactly the corrupted sequences.
Recovery is measured by the AUC of x separating clean (positive) from corrupted sequences (:func:`auc`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.transformer import Constrain, TransformerConfig, init_params, no_constraint, sequence_losses
from ratelab.errors import RatelabError
from ratelab.validate import check_in_range, check_positive_int


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class DataSelection:
    """The bilevel data-selection problem; token arrays are pytree children, sizes and the model are static."""

    train: jax.Array  # int32 [n_train, seq_len + 1]
    trusted: jax.Array  # int32 [n_trusted, seq_len + 1]
    corrupt: jax.Array  # bool [n_train], ground truth (never seen by the solver)
    cfg: TransformerConfig = field(metadata=dict(static=True))
    batch_size: int = field(metadata=dict(static=True))
    trusted_batch: int = field(metadata=dict(static=True))
    constrain: Constrain = field(default=no_constraint, metadata=dict(static=True))

    @property
    def n_train(self) -> int:
        return self.train.shape[0]

    def initial(self, key: jax.Array) -> tuple[jax.Array, Any]:
        """x = 0 (uniform weights), y = the transformer's initialisation."""
        return jnp.zeros((self.n_train,), jnp.float32), init_params(key, self.cfg)

    def sample_batch(self, key: jax.Array) -> dict[str, jax.Array]:
        """Indices and tokens of ``batch_size`` training sequences (without replacement) and a trusted minibatch."""
        k_train, k_trusted = jax.random.split(key)
        idx = jax.random.choice(k_train, self.n_train, (self.batch_size,), replace=False).astype(jnp.int32)
        n_trusted = self.trusted.shape[0]
        if self.trusted_batch == n_trusted:
            trusted = self.trusted
        else:
            trusted = self.trusted[jax.random.choice(k_trusted, n_trusted, (self.trusted_batch,), replace=False)]
        return {"idx": idx, "tokens": self.train[idx], "trusted": trusted}

    def upper(self, x: jax.Array, y: Any, batch: dict[str, jax.Array]) -> jax.Array:
        """f(x, y): mean loss of the model on the trusted minibatch."""
        del x
        return jnp.mean(sequence_losses(y, batch["trusted"], self.cfg, self.constrain))

    def lower(self, x: jax.Array, y: Any, batch: dict[str, jax.Array]) -> jax.Array:
        """g(x, y): softmax(x_B)-weighted loss of the model on the training minibatch B."""
        weights = jax.nn.softmax(x[batch["idx"]])
        return jnp.sum(weights * sequence_losses(y, batch["tokens"], self.cfg, self.constrain))

    def metrics(self, x: jax.Array, y: Any) -> dict[str, jax.Array]:
        """AUC of x separating clean from corrupted sequences, and the mean weight n softmax(x)_i of each group."""
        del y
        w = jax.nn.softmax(x) * self.n_train
        clean = ~self.corrupt
        return {"weight_auc": auc(x, clean),
                "clean_weight": jnp.sum(jnp.where(clean, w, 0.0)) / jnp.maximum(jnp.sum(clean), 1),
                "corrupt_weight": jnp.sum(jnp.where(clean, 0.0, w)) / jnp.maximum(jnp.sum(~clean), 1)}

    def with_constraint(self, constrain: Constrain) -> DataSelection:
        """The same problem with an activation-sharding hook for the model (see ``bilevel.transformer``)."""
        return DataSelection(self.train, self.trusted, self.corrupt, self.cfg, self.batch_size, self.trusted_batch,
                             constrain)


def auc(scores: jax.Array, positive: jax.Array) -> jax.Array:
    """Area under the ROC curve of ``scores`` for the labels ``positive`` (Mann-Whitney U / (P N), ties count 1/2)."""
    scores = scores.astype(jnp.float32)
    s = jnp.sort(scores)
    ranks = 0.5 * (jnp.searchsorted(s, scores, side="left") + jnp.searchsorted(s, scores, side="right") + 1)
    pos = positive.astype(jnp.float32)
    n_pos = jnp.sum(pos)
    n_neg = pos.shape[0] - n_pos
    return (jnp.sum(ranks * pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _markov_chains(rng: np.random.Generator, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    clean = rng.permutation(vocab)
    shift = rng.integers(1, vocab)  # pi_corrupt(t) = pi_clean((t + shift) mod V): differs from pi_clean everywhere
    corrupt = clean[(np.arange(vocab) + shift) % vocab]
    return clean, corrupt


def _sample_sequences(rng: np.random.Generator, perm: np.ndarray, n: int, length: int, noise: float) -> np.ndarray:
    vocab = perm.shape[0]
    out = np.empty((n, length), np.int32)
    out[:, 0] = rng.integers(0, vocab, n)
    for t in range(1, length):
        follow = rng.random(n) >= noise
        out[:, t] = np.where(follow, perm[out[:, t - 1]], rng.integers(0, vocab, n))
    return out


def make_data_selection(seed: int, cfg: TransformerConfig, *, n_train: int = 256, n_trusted: int = 32,
                        corrupt_frac: float = 0.25, noise: float = 0.1, batch_size: int = 32,
                        trusted_batch: int | None = None) -> DataSelection:
    """Synthetic SEAL problem: ``n_train`` sequences of ``cfg.seq_len + 1`` tokens, ``round(corrupt_frac n_train)``
    of them corrupted (the first ones after a random shuffle), and ``n_trusted`` clean trusted sequences.

    Generated with NumPy from ``seed`` so that every process of a multi-host run builds the same arrays.
    """
    check_positive_int("n_train", n_train)
    check_positive_int("n_trusted", n_trusted)
    check_positive_int("batch_size", batch_size)
    check_in_range("corrupt_frac", corrupt_frac, 0.0, 1.0, closed="neither")
    check_in_range("noise", noise, 0.0, 1.0, closed="left")
    trusted_batch = n_trusted if trusted_batch is None else check_positive_int("trusted_batch", trusted_batch)
    if batch_size > n_train:
        raise RatelabError(f"batch_size must be <= n_train = {n_train}, got {batch_size}")
    if trusted_batch > n_trusted:
        raise RatelabError(f"trusted_batch must be <= n_trusted = {n_trusted}, got {trusted_batch}")
    if cfg.vocab < 2:
        raise RatelabError(f"the model's vocab must be >= 2 for two distinct Markov chains, got {cfg.vocab}")
    rng = np.random.default_rng(seed)
    clean_perm, corrupt_perm = _markov_chains(rng, cfg.vocab)
    length = cfg.seq_len + 1
    n_bad = int(round(corrupt_frac * n_train))
    corrupt = np.zeros(n_train, bool)
    corrupt[rng.permutation(n_train)[:n_bad]] = True
    train = np.where(corrupt[:, None], _sample_sequences(rng, corrupt_perm, n_train, length, noise),
                     _sample_sequences(rng, clean_perm, n_train, length, noise))
    trusted = _sample_sequences(rng, clean_perm, n_trusted, length, noise)
    return DataSelection(train=jnp.asarray(train), trusted=jnp.asarray(trusted), corrupt=jnp.asarray(corrupt),
                         cfg=cfg, batch_size=batch_size, trusted_batch=trusted_batch)
