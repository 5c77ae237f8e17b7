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

Real data: :func:`hypercleaning` builds the problem from the user's own arrays (validated; the generator goes
through it), :func:`corrupt_labels` applies the corruption rule to clean labels, :func:`stratified_split` gives a
seeded stratified train / validation / test split, and :func:`load_digits_split` loads scikit-learn's bundled
8x8 digits (1797 x 64, 10 classes; scikit-learn imported on first use). :func:`erm` is the no-cleaning baseline:
gradient descent on the unweighted training loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.precision import check_float_dtype, float_array
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.solver import Solver
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

    def train_loss(self, y):
        """The unweighted training loss (1/n) sum_i CE(h_y(a_i), b_i) + reg ||y||^2 on the (corrupted) labels, full
        batch: the objective of the no-cleaning baseline :func:`erm`."""
        return jnp.mean(_ce(self.logits(y, jnp.asarray(self.X_tr)), self.b_tr)) + self._reg(y)

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
    _check_classes(classes)
    check_positive("separation", separation)
    check_in_range("corruption", corruption, 0.0, 1.0, closed="left")
    _check_model(hidden, reg, batch_size)
    km, ktr, kval, kte, kc, kl = jax.random.split(key, 6)
    means = separation * np.asarray(jax.random.normal(km, (classes, features), jnp.float32), dtype=float)
    X_tr, b_tr = gaussian_mixture(ktr, n_train, means=means)
    X_val, b_val = gaussian_mixture(kval, n_val, means=means)
    X_te, b_te = gaussian_mixture(kte, n_test, means=means)
    order = np.argsort(np.asarray(jax.random.uniform(kc, (n_train,), jnp.float32)), kind="stable")
    shift = np.asarray(jax.random.randint(kl, (n_train,), 1, classes, jnp.int32))  # a different class, uniformly
    noisy, bad = _corrupt(b_tr, int(round(corruption * n_train)), order, shift, classes)
    return hypercleaning(X_tr, noisy, X_val, b_val, X_te, b_te, corrupted=bad, classes=classes, hidden=hidden,
                         reg=reg, batch_size=batch_size, dtype=dtype, _name="make_hypercleaning")


def _corrupt(labels: np.ndarray, n_bad: int, order: np.ndarray, shift: np.ndarray,
             classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The corruption rule: the samples ``order[:n_bad]`` get label (b + shift) mod classes, shift in 1..classes-1
    (so always another class; uniform over the others when shift is uniform)."""
    bad = np.zeros(labels.shape[0], bool)
    bad[order[:n_bad]] = True
    return np.where(bad, (labels + shift) % classes, labels), bad


def _check_labels(name: str, b: Any, n: int, classes: int | None) -> np.ndarray:
    arr = np.asarray(b)
    if arr.shape != (n,):
        raise RatelabError(f"{name} must have shape ({n},) (one label per row of its X), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise RatelabError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if n and arr.min() < 0:
        raise RatelabError(f"{name} must hold labels >= 0, got {int(arr.min())}")
    if classes is not None and n and arr.max() >= classes:
        raise RatelabError(f"{name} must hold labels in 0..{classes - 1} (classes = {classes}), got {int(arr.max())}")
    return arr


def _check_model(hidden: Any, reg: Any, batch_size: Any) -> None:
    check_nonnegative("reg", reg)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise RatelabError(f"hidden must be an integer >= 0 (0 = linear model), got {hidden!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise RatelabError(f"batch_size must be an integer >= 0 (0 = full batch), got {batch_size!r}")


def _check_classes(classes: Any) -> int:
    if isinstance(classes, bool) or not isinstance(classes, int | np.integer) or classes < 2:
        raise RatelabError(f"classes must be an integer >= 2, got {classes!r}")
    return int(classes)


def hypercleaning(X_tr: Any, b_tr: Any, X_val: Any, b_val: Any, X_test: Any, b_test: Any, *, corrupted: Any,
                  classes: int | None = None, hidden: int = 0, reg: float = 0.0, batch_size: int = 0,
                  dtype: Any = None, _name: str = "hypercleaning") -> HyperCleaning:
    """A hyper-cleaning problem from the user's own data: features ``X_* [n_*, d]`` (finite, one d), integer labels
    ``b_* [n_*]`` in 0..classes-1 (``b_tr`` the training labels as observed, i.e. corrupted; the validation labels
    clean), ``corrupted [n_tr]`` the boolean ground truth of which training labels were corrupted (used only by the
    F1 metrics). ``classes=None``: one more than the largest label. ``hidden``, ``reg``, ``batch_size``, ``dtype`` as
    in :func:`make_hypercleaning`. Every check runs before any computation."""
    check_float_dtype(_name, dtype)
    Xs = {}
    for name, X in (("X_tr", X_tr), ("X_val", X_val), ("X_test", X_test)):
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.size == 0:
            raise RatelabError(f"{name} must be a non-empty [n, d] matrix, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise RatelabError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise RatelabError(f"{name} must be finite, got {int(np.sum(~np.isfinite(arr)))} non-finite entries")
        Xs[name] = X
        if arr.shape[1] != np.shape(X_tr)[1]:
            raise RatelabError(f"{name} must have the {np.shape(X_tr)[1]} columns of X_tr, got {arr.shape[1]}")
    if classes is not None:
        classes = _check_classes(classes)
    labels = {name: _check_labels(name, b, np.shape(X)[0], classes)
              for name, b, X in (("b_tr", b_tr, X_tr), ("b_val", b_val, X_val), ("b_test", b_test, X_test))}
    if classes is None:
        classes = _check_classes(int(max(v.max() for v in labels.values())) + 1)
    bad = np.asarray(corrupted)
    if bad.shape != (np.shape(X_tr)[0],) or not (bad.dtype == bool or np.all((bad == 0) | (bad == 1))):
        raise RatelabError(f"corrupted must be a boolean [n_tr] = ({np.shape(X_tr)[0]},) mask of the corrupted "
                           f"training labels, got shape {bad.shape}, dtype {bad.dtype}")
    _check_model(hidden, reg, batch_size)
    arr = lambda v: float_array(_name, v, dtype)  # noqa: E731
    kw = dict(X_tr=arr(Xs["X_tr"]), b_tr=jnp.asarray(labels["b_tr"], jnp.int32), corrupted=jnp.asarray(bad, bool),
              X_val=arr(Xs["X_val"]), b_val=jnp.asarray(labels["b_val"], jnp.int32), X_test=arr(Xs["X_test"]),
              b_test=jnp.asarray(labels["b_test"], jnp.int32), reg=arr(reg), hidden=hidden, classes=classes)
    if batch_size:
        return StochasticHyperCleaning(**kw, batch_size=batch_size)
    return HyperCleaning(**kw)


def corrupt_labels(labels: Any, rate: float, *, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shen, Xiao & Chen's corruption (their ``data_polluting``, with the other class drawn uniformly; their code's
    ``random.randint(0, 9)`` may redraw the clean one): exactly ``round(rate * n)`` samples, chosen by a seeded
    permutation, get a uniformly random *other* class. Returns (corrupted labels, boolean mask). NumPy
    (``default_rng(seed)``), no JAX program."""
    if np.ndim(labels) != 1:
        raise RatelabError(f"labels must be a 1-D array of class labels, got shape {np.shape(labels)}")
    b = _check_labels("labels", labels, np.shape(labels)[0], _check_classes(classes))
    check_in_range("rate", rate, 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise RatelabError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    order, shift = rng.permutation(b.shape[0]), rng.integers(1, classes, b.shape[0])
    return _corrupt(b, int(round(rate * b.shape[0])), order, shift, classes)


def stratified_split(labels: Any, sizes: tuple[int, ...], *, seed: int) -> tuple[np.ndarray, ...]:
    """Disjoint index sets of the given ``sizes`` (sum <= n), each holding every class in proportion (within about
    one sample per class): the samples of each class are put in a seeded random order, sample r of class c (of
    n_c) gets the position (r + 1/2) / n_c, and the sets are consecutive runs of the samples sorted by position."""
    b = np.asarray(labels)
    if b.ndim != 1 or b.size == 0 or not np.issubdtype(b.dtype, np.integer):
        raise RatelabError(f"labels must be a non-empty 1-D array of integer labels, got shape {b.shape}, "
                           f"dtype {b.dtype}")
    if not sizes or any(isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1 for m in sizes):
        raise RatelabError(f"sizes must be positive integers, got {sizes!r}")
    if sum(sizes) > b.size:
        raise RatelabError(f"sizes must sum to at most the {b.size} samples, got {sum(sizes)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise RatelabError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    pos = np.empty(b.size)
    for c in np.unique(b):
        idx = np.flatnonzero(b == c)
        pos[rng.permutation(idx)] = (np.arange(idx.size) + 0.5) / idx.size
    order = np.lexsort((b, pos))  # by position, ties by class
    ends = np.cumsum((0, *sizes))
    return tuple(order[ends[j]:ends[j + 1]] for j in range(len(sizes)))


def load_digits_split(*, n_train: int, n_val: int, n_test: int, seed: int,
                      scale: float = 16.0) -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 x 64, pixel values 0..16, 10 classes; no download), features divided
    by ``scale`` (16: the pixels' range, as the authors divide MNIST by its maximum), split by
    :func:`stratified_split` with ``seed``. Returns float64 ``X_tr, b_tr, X_val, b_val, X_test, b_test`` (clean
    labels, int64). Needs scikit-learn (imported here, not with the package)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise RatelabError("load_digits_split needs the package scikit-learn (pip install scikit-learn)") from None
    check_positive("scale", scale)
    data = load_digits()
    X, b = np.asarray(data.data, dtype=float) / scale, np.asarray(data.target, dtype=np.int64)
    tr, val, te = stratified_split(b, (n_train, n_val, n_test), seed=seed)
    return {"X_tr": X[tr], "b_tr": b[tr], "X_val": X[val], "b_val": b[val], "X_test": X[te], "b_test": b[te]}


def erm(lr: Any) -> Solver:
    """The no-cleaning baseline: gradient descent y_{k+1} = y_k - lr_k grad HyperCleaning.train_loss(y_k) (every
    training sample weighted 1, corrupted labels included) from the model initialisation of ``problem.initial``
    (so the same key gives V-PBGD's y_0). ``lr`` a float or an optax schedule. Metrics: the problem's metrics at
    x = 0 (its F1s are those of flagging nothing)."""
    check_positive("lr", lr)
    lr_s = as_schedule(lr)

    def init(problem: Any, key: jax.Array):
        return problem.initial(key)[1], jnp.zeros((), jnp.int32)

    def step(state, problem: Any, _: Any):
        y, k = state
        loss, g = jax.value_and_grad(problem.train_loss)(y)
        y = jax.tree.map(lambda a, b: a - lr_s(k) * b, y, g)
        x0 = jnp.zeros(problem.n_train, jnp.result_type(loss))
        return (y, k + 1), {"train_loss": loss, **problem.metrics(x0, y)}

    return Solver(init=init, step=step)
