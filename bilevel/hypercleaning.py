"""Data hyper-cleaning (Shen, Xiao & Chen, arXiv:2302.05185, Section 6 "data hyper-cleaning"; the authors' code
``V-PBGD/data-hyper-cleaning``) on a synthetic dataset with the structure of their MNIST setting.

A fraction ``corruption`` of the training labels is replaced by a uniformly random *other* class. The upper variable
x in R^{n_train} holds one weight logit per training sample, the lower variable y the model's parameters:

    g(x, y) = (1/n) sum_i sigmoid(x_i) CE(h_y(a_i), b_i) + reg ||y||^2     (weighted training loss)
    f(x, y) = CE of h_y on the (clean) validation set

Sample i is declared clean when x_i >= 0 (the authors' rule), corrupted otherwise. Data: a 10-class Gaussian
mixture with 64 features (class means ~ N(0, separation^2 I), unit within-class noise), because the repository
ships no image dataset; the model is linear (64 -> 10) or an MLP (64 -> hidden -> 10, sigmoid activation as in the
authors' MLP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.precision import check_float_dtype, float_array
from ratelab.errors import RatelabError
from ratelab.validate import check_in_range, check_nonnegative, check_positive, check_positive_int


def _ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample cross-entropy."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def _f1(pred: jax.Array, truth: jax.Array) -> jax.Array:
    tp = jnp.sum(pred & truth)
    return 2 * tp / jnp.maximum(jnp.sum(pred) + jnp.sum(truth), 1)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class HyperCleaning:
    """Full-batch data hyper-cleaning (deterministic: the ``batch`` argument is ignored)."""

    X_tr: jax.Array
    b_tr: jax.Array
    corrupted: jax.Array
    X_val: jax.Array
    b_val: jax.Array
    X_test: jax.Array
    b_test: jax.Array
    reg: jax.Array
    hidden: int = field(default=0, metadata={"static": True})
    classes: int = field(default=10, metadata={"static": True})

    @property
    def n_train(self) -> int:
        return self.X_tr.shape[0]

    def init_params(self, key: jax.Array) -> dict[str, jax.Array]:
        d, dt = self.X_tr.shape[1], jnp.result_type(self.X_tr)
        k1, k2 = jax.random.split(key)
        if self.hidden == 0:
            return {"W": jax.random.normal(k1, (d, self.classes), dt) / np.sqrt(d), "b": jnp.zeros(self.classes, dt)}
        return {"W1": jax.random.normal(k1, (d, self.hidden), dt) / np.sqrt(d), "b1": jnp.zeros(self.hidden, dt),
                "W2": jax.random.normal(k2, (self.hidden, self.classes), dt) / np.sqrt(self.hidden),
                "b2": jnp.zeros(self.classes, dt)}

    def logits(self, params: dict[str, jax.Array], X: jax.Array) -> jax.Array:
        if self.hidden == 0:
            return X @ params["W"] + params["b"]
        return jax.nn.sigmoid(X @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]

    def _reg(self, y):
        return self.reg * sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(y))

    def upper(self, x, y, batch=None):
        return jnp.mean(_ce(self.logits(y, self.X_val), self.b_val))

    def lower(self, x, y, batch=None):
        return jnp.mean(jax.nn.sigmoid(x) * _ce(self.logits(y, self.X_tr), self.b_tr)) + self._reg(y)

    def initial(self, key):
        """x = 0 (every weight 1/2, as in the authors' code), y: a random initialisation of the model."""
        return jnp.zeros(self.n_train, jnp.result_type(self.X_tr)), self.init_params(key)

    def metrics(self, x, y):
        acc = jnp.mean(jnp.argmax(self.logits(y, self.X_test), axis=1) == self.b_test)
        flagged = x < 0
        return {"test_acc": acc, "f1_corrupted": _f1(flagged, self.corrupted),
                "f1_clean": _f1(~flagged, ~self.corrupted)}


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StochasticHyperCleaning(HyperCleaning):
    """Minibatch variant: each step sees ``batch_size`` training and validation samples (indices drawn with
    replacement by :meth:`sample_batch`); the sum over the training set is estimated by the batch mean."""

    batch_size: int = field(default=64, metadata={"static": True})

    def sample_batch(self, key):
        kt, kv = jax.random.split(key)
        return {"tr": jax.random.randint(kt, (self.batch_size,), 0, self.X_tr.shape[0]),
                "val": jax.random.randint(kv, (self.batch_size,), 0, self.X_val.shape[0])}

    def upper(self, x, y, batch=None):
        i = batch["val"]  # (jnp.asarray: a float64 leaf may be a NumPy array, see bilevel.precision)
        return jnp.mean(_ce(self.logits(y, jnp.asarray(self.X_val)[i]), self.b_val[i]))

    def lower(self, x, y, batch=None):
        i = batch["tr"]
        X = jnp.asarray(self.X_tr)[i]
        return jnp.mean(jax.nn.sigmoid(x[i]) * _ce(self.logits(y, X), self.b_tr[i])) + self._reg(y)


def gaussian_mixture(key: jax.Array, n: int, *, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of the mixture with the given class means (uniform class prior, unit noise)."""
    kc, kn = jax.random.split(key)
    labels = np.asarray(jax.random.randint(kc, (n,), 0, means.shape[0], jnp.int32))
    noise = np.asarray(jax.random.normal(kn, (n, means.shape[1]), jnp.float32), dtype=float)
    return means[labels] + noise, labels


def make_hypercleaning(key: jax.Array, *, n_train: int = 1000, n_val: int = 1000, n_test: int = 2000,
                       features: int = 64, classes: int = 10, separation: float = 0.4, corruption: float = 0.5,
                       hidden: int = 0, reg: float = 0.0, batch_size: int = 0, dtype: Any = None) -> HyperCleaning:
    """A hyper-cleaning instance: Gaussian-mixture data, exactly ``round(corruption * n_train)`` corrupted labels
    (draws in float32/int32 whatever the x64 setting, so a key gives the same data in both precisions).

    ``hidden = 0`` gives the linear model, ``hidden > 0`` the sigmoid MLP; ``batch_size > 0`` the minibatch variant.
    The features are float64 and kept so (``dtype=None``; see :mod:`bilevel.precision`), or cast to ``dtype``.
    """
    check_float_dtype("make_hypercleaning", dtype)
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("features", features)):
        check_positive_int(name, v)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise RatelabError(f"classes must be an integer >= 2, got {classes!r}")
    check_positive("separation", separation)
    check_in_range("corruption", corruption, 0.0, 1.0, closed="left")
    check_nonnegative("reg", reg)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise RatelabError(f"hidden must be an integer >= 0 (0 = linear model), got {hidden!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise RatelabError(f"batch_size must be an integer >= 0 (0 = full batch), got {batch_size!r}")
    km, ktr, kval, kte, kc, kl = jax.random.split(key, 6)
    means = separation * np.asarray(jax.random.normal(km, (classes, features), jnp.float32), dtype=float)
    X_tr, b_tr = gaussian_mixture(ktr, n_train, means=means)
    X_val, b_val = gaussian_mixture(kval, n_val, means=means)
    X_te, b_te = gaussian_mixture(kte, n_test, means=means)
    n_bad = int(round(corruption * n_train))
    bad = np.zeros(n_train, bool)
    bad[np.argsort(np.asarray(jax.random.uniform(kc, (n_train,), jnp.float32)), kind="stable")[:n_bad]] = True
    shift = np.asarray(jax.random.randint(kl, (n_train,), 1, classes, jnp.int32))  # a different class, uniformly
    noisy = np.where(bad, (b_tr + shift) % classes, b_tr)
    arr = lambda v: float_array("make_hypercleaning", v, dtype)  # noqa: E731
    kw = dict(X_tr=arr(X_tr), b_tr=jnp.asarray(noisy, jnp.int32), corrupted=jnp.asarray(bad), X_val=arr(X_val),
              b_val=jnp.asarray(b_val, jnp.int32), X_test=arr(X_te), b_test=jnp.asarray(b_te, jnp.int32),
              reg=arr(reg), hidden=hidden, classes=classes)
    if batch_size:
        return StochasticHyperCleaning(**kw, batch_size=batch_size)
    return HyperCleaning(**kw)
