"""Data hyper-cleaning on real data (scikit-learn's digits; Shen, Xiao & Chen, arXiv:2302.05185, Section 6): the
corruption rule, the stratified split, the digits loader, the builder's checks, and the label-set selection that
lets one compiled V-PBGD program serve every corruption seed."""

import ast
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bilevel.hypercleaning import (
    corrupt_labels,
    erm,
    hypercleaning,
    load_digits_split,
    make_hypercleaning,
    stratified_split,
)
from ratelab import RatelabError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("n", "rate", "classes"), [(450, 0.5, 10), (101, 0.3, 3), (7, 0.0, 2), (20, 1.0, 4)])
def test_corruption_changes_exactly_round_rate_n_labels_each_to_another_class(n, rate, classes):
    clean = np.random.default_rng(1).integers(0, classes, n)
    noisy, bad = corrupt_labels(clean, rate, classes=classes, seed=3)
    assert bad.dtype == bool and int(bad.sum()) == round(rate * n)
    np.testing.assert_array_equal(noisy != clean, bad)  # every flagged label changed, no other one
    assert noisy.min() >= 0 and noisy.max() < classes
    again, _ = corrupt_labels(clean, rate, classes=classes, seed=3)
    np.testing.assert_array_equal(again, noisy)


def test_corruption_draws_the_other_classes_uniformly():
    """Over many corrupted samples of class 0, each of the 9 other classes is drawn about equally often."""
    noisy, bad = corrupt_labels(np.zeros(18_000, int), 0.5, classes=10, seed=0)
    counts = np.bincount(noisy[bad], minlength=10)
    assert counts[0] == 0
    expected = bad.sum() / 9
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))  # 5 standard deviations


def test_stratified_split_is_disjoint_exact_and_stratified():
    labels = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # the digits' counts
    sizes = (450, 450, 897)
    parts = stratified_split(labels, sizes, seed=0)
    assert tuple(p.size for p in parts) == sizes
    union = np.concatenate(parts)
    assert np.unique(union).size == union.size == labels.size  # disjoint, and here covering
    for part, m in zip(parts, sizes, strict=True):
        for c in range(10):
            share = np.sum(labels == c) * m / labels.size
            assert abs(np.sum(labels[part] == c) - share) < 2
    again = stratified_split(labels, sizes, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(stratified_split(labels, sizes, seed=1)[0], parts[0])


def test_digits_split_rows_are_the_scaled_dataset():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    d = load_digits_split(n_train=450, n_val=450, n_test=897, seed=0)
    assert d["X_tr"].shape == (450, 64) and d["X_val"].shape == (450, 64) and d["X_test"].shape == (897, 64)
    assert d["X_tr"].min() >= 0.0 and d["X_tr"].max() <= 1.0
    data = load_digits()
    rows = {tuple(r): t for r, t in zip(data.data / 16.0, data.target, strict=True)}
    for X, b in ((d["X_tr"], d["b_tr"]), (d["X_test"], d["b_test"])):
        assert all(rows[tuple(r)] == t for r, t in zip(X, b, strict=True))
    share = np.bincount(data.target, minlength=10) * 450 / data.target.size
    assert np.all(np.abs(np.bincount(d["b_tr"], minlength=10) - share) < 2)


def test_missing_scikit_learn_is_a_ratelab_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import then raises ImportError
    with pytest.raises(RatelabError, match="scikit-learn"):
        load_digits_split(n_train=10, n_val=10, n_test=10, seed=0)


def test_scikit_learn_is_imported_lazily():
    """No module-level import of sklearn where ``import ratelab`` and the catalog reach."""
    for path in (ROOT / "bilevel" / "hypercleaning.py", ROOT / "experiments" / "pbgd.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.startswith("sklearn") for n in names), path


def _arrays(n_tr=12, n_val=6, n_te=5, d=3, classes=4):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n_tr, d)), rng.integers(0, classes, n_tr), rng.normal(size=(n_val, d)),
            rng.integers(0, classes, n_val), rng.normal(size=(n_te, d)), rng.integers(0, classes, n_te))


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: {0: a[0][:, :2]}, "X_tr must have the 2 columns|X_val must have the 2 columns"),
    (lambda a: {2: a[2][:, :2]}, "X_val must have the 3 columns"),
    (lambda a: {1: a[1][:-1]}, r"b_tr must have shape \(12,\)"),
    (lambda a: {3: a[3].astype(float)}, "b_val must hold integer class labels"),
    (lambda a: {5: a[5] - 5}, "b_test must hold labels >= 0"),
    (lambda a: {4: np.where(np.eye(5, 3) > 0, np.nan, a[4])}, "X_test must be finite, got 3 non-finite"),
    (lambda a: {0: a[0][0]}, r"X_tr must be a non-empty \[n, d\] matrix"),
])
def test_builder_rejects_bad_arrays(change, match):
    a = list(_arrays())
    for i, v in change(a).items():
        a[i] = v
    with pytest.raises(RatelabError, match=match):
        hypercleaning(*a, corrupted=np.zeros(12, bool))


def test_builder_rejects_bad_options():
    a = _arrays()
    with pytest.raises(RatelabError, match="b_tr must hold labels in 0..2"):
        hypercleaning(*a, corrupted=np.zeros(12, bool), classes=3)
    with pytest.raises(RatelabError, match="classes must be an integer >= 2"):
        hypercleaning(*a, corrupted=np.zeros(12, bool), classes=1)
    with pytest.raises(RatelabError, match=r"corrupted must be a boolean \[n_tr\]"):
        hypercleaning(*a, corrupted=np.zeros(11, bool))
    with pytest.raises(RatelabError, match="hidden"):
        hypercleaning(*a, corrupted=np.zeros(12, bool), hidden=-1)
    with pytest.raises(RatelabError, match="reg"):
        hypercleaning(*a, corrupted=np.zeros(12, bool), reg=-1.0)
    with pytest.raises(RatelabError, match="rate"):
        corrupt_labels(a[1], 1.5, classes=4, seed=0)
    with pytest.raises(RatelabError, match="sizes must sum to at most the 12"):
        stratified_split(a[1], (10, 3), seed=0)
    assert hypercleaning(*a, corrupted=np.zeros(12, bool)).classes == 4  # one more than the largest label


def test_builder_rebuilds_the_generated_problem():
    """(Outside x64 the float64 features stay float64 NumPy arrays in both, see bilevel.precision.)"""
    p = make_hypercleaning(jax.random.key(2), n_train=30, n_val=10, n_test=12, features=5, classes=3,
                           corruption=0.4, hidden=4)
    q = hypercleaning(p.X_tr, p.b_tr, p.X_val, p.b_val, p.X_test, p.b_test, corrupted=p.corrupted, classes=3,
                      hidden=4)
    assert p.X_tr.dtype == np.float64
    la, ta = jax.tree_util.tree_flatten(p)
    lb, tb = jax.tree_util.tree_flatten(q)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_label_set_selection_equals_the_problem_built_with_that_set():
    """``_over_label_sets``: the value c (concrete, or traced under vmap as in a sweep) runs the solver on label set
    c, i.e. on the problem built with those labels."""
    from experiments.pbgd import _over_label_sets

    a = _arrays(n_tr=16, n_val=8, n_te=8)
    sets = [corrupt_labels(a[1], 0.5, classes=4, seed=s) for s in (0, 1)]
    problems = [hypercleaning(a[0], b, *a[2:], corrupted=m, classes=4) for b, m in sets]
    P = (problems[0], np.stack([b for b, _ in sets]).astype(np.int32), np.stack([m for _, m in sets]),
         np.stack([a[3], a[3]]).astype(np.int32))
    solver = erm(0.3)
    make = _over_label_sets(lambda _: solver, 2)

    def losses(s, prob, key):
        state = s.init(prob, key)
        out = []
        for _ in range(3):
            state, m = s.step(state, prob, None)
            out.append(m["train_loss"])
        return jax.numpy.stack(out)

    @jax.jit
    def go(key):
        direct = [losses(solver, p, key) for p in problems]
        concrete = [losses(make(c), P, key) for c in (0, 1)]
        traced = jax.vmap(lambda v: losses(make(v), P, key))(jax.numpy.arange(2.0))
        return direct, concrete, traced

    direct, concrete, traced = go(jax.random.key(0))
    for c in (0, 1):
        np.testing.assert_allclose(concrete[c], direct[c], rtol=1e-6)
        np.testing.assert_allclose(traced[c], direct[c], rtol=1e-5)
    assert not np.allclose(direct[0], direct[1])


def test_erm_step_is_a_gradient_step_that_lowers_the_training_loss():
    p = hypercleaning(*_arrays(), corrupted=np.zeros(12, bool))
    solver = erm(0.1)

    @jax.jit
    def go(key):
        s0 = solver.init(p, key)
        s1, m = solver.step(s0, p, None)
        return s0, s1, m, jax.grad(p.train_loss)(s0[0]), p.train_loss(s1[0])

    s0, s1, m, g, after = go(jax.random.key(0))
    for k in ("W", "b"):
        np.testing.assert_allclose(s1[0][k], s0[0][k] - 0.1 * g[k], rtol=1e-6, atol=1e-7)
    assert float(after) < float(m["train_loss"])
    assert float(m["f1_corrupted"]) == 0.0  # x = 0 flags nothing
