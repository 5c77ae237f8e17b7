"""The user-matrix builders of the problem families whose generators had none.

For each: (i) the builder fed the generator's own arrays reproduces the generated problem exactly (every leaf
bitwise, the same static fields); (ii) bad input raises a RatelabError naming the argument (and, for a definiteness
failure, the smallest eigenvalue) from the builder itself, before any solver or JAX computation runs.
Built under x64, where the generators store the float64 arrays they drew (outside it they round to float32).
"""

import jax
import numpy as np
import pytest

from alignment import forgetting
from alignment.unlearning import Quadratics, instances, quadratics
from optim_theory.dp_problems import logistic, make_logistic
from ratelab import RatelabError
from riemannian.sparse_problems import (
    dictionary_learning,
    make_dictionary_learning,
    make_sparse_spectral_clustering,
    sparse_spectral_clustering,
)
from rl_theory.linear_mdp import linear_mdp, make_linear_mdp
from rl_theory.multi_sa import bilevel_sa, coupled_nonlinear, make_bilevel_nonconvex, make_coupled_nonlinear


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb  # same pytree structure and static fields
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("policy", ["tabular", "features"])
def test_linear_mdp_rebuilds_the_generated_mdp(policy):
    mdp = make_linear_mdp(jax.random.key(0), n_states=5, n_actions=2, feature_dim=3, gamma=0.8, policy=policy,
                          policy_dim=4, eta="random")
    X = None if policy == "tabular" else mdp.X
    _same(linear_mdp(mdp.P, mdp.R, mdp.phi, gamma=0.8, X=X, eta=mdp.eta), mdp)
    # a reward r(s, a) is broadcast over s' as the generator's default does
    r_sa = np.asarray(mdp.R)[:, :, 0]
    _same(linear_mdp(mdp.P, r_sa, mdp.phi, gamma=0.8, X=X, eta=mdp.eta), mdp)


def test_linear_mdp_rejects_bad_input():
    mdp = make_linear_mdp(jax.random.key(0), n_states=5, n_actions=2, feature_dim=3)
    P, R, phi = (np.asarray(v) for v in (mdp.P, mdp.R, mdp.phi))
    with pytest.raises(RatelabError, match="P must sum to 1"):
        linear_mdp(1.1 * P, R, phi, gamma=0.9)
    neg = P.copy()
    neg[0, 0, :2] += [0.5, -0.5 - neg[0, 0, 1]]
    with pytest.raises(RatelabError, match="P must be nonnegative.*smallest entry"):
        linear_mdp(neg, R, phi, gamma=0.9)
    with pytest.raises(RatelabError, match=r"R must have shape"):
        linear_mdp(P, R[:, :, :2], phi, gamma=0.9)
    with pytest.raises(RatelabError, match="phi must have full column rank.*smallest singular value"):
        linear_mdp(P, R, np.concatenate([phi, phi[:, :1]], axis=1), gamma=0.9)
    with pytest.raises(RatelabError, match="gamma"):
        linear_mdp(P, R, phi, gamma=1.0)
    with pytest.raises(RatelabError, match="eta must sum to 1"):
        linear_mdp(P, R, phi, gamma=0.9, eta=np.ones(5))


def test_sparse_spectral_clustering_rebuilds_the_generated_problem():
    problem, _ = make_sparse_spectral_clustering(jax.random.key(0), k=2, per_cluster=4, mu=0.01)
    _same(sparse_spectral_clustering(problem.L, k=2, mu=0.01, x0=problem.x0), problem)


def test_sparse_spectral_clustering_rejects_bad_input():
    L = np.eye(4)
    with pytest.raises(RatelabError, match="L must be positive semidefinite: its smallest eigenvalue is -1"):
        sparse_spectral_clustering(L - 2 * np.diag([1.0, 0, 0, 0]), k=2)
    with pytest.raises(RatelabError, match="L must hold symmetric"):
        sparse_spectral_clustering(L + np.triu(np.ones((4, 4)), 1), k=2)
    with pytest.raises(RatelabError, match="k must satisfy"):
        sparse_spectral_clustering(L, k=5)
    with pytest.raises(RatelabError, match="L must have shape"):
        sparse_spectral_clustering(np.ones((4, 3)), k=2)


def test_unlearning_quadratics_rebuild_the_generated_instance():
    ins = instances(0, 2, 3, 8, 5)
    for i in range(2):
        given = Quadratics(*(jax.numpy.asarray(ins[k][i]) for k in Quadratics._fields))
        _same(quadratics(**{k: ins[k][i] for k in Quadratics._fields}), given)


def test_unlearning_quadratics_reject_bad_input():
    ins = {k: v[0] for k, v in instances(0, 1, 3, 8, 5).items()}
    with pytest.raises(RatelabError, match="h_f must be positive definite.*smallest eigenvalue is -1"):
        quadratics(**{**ins, "h_f": np.diag([1.0, -1.0, 2.0])})
    with pytest.raises(RatelabError, match="h_r must be symmetric"):
        quadratics(**{**ins, "h_r": ins["h_r"] + np.triu(np.ones((3, 3)), 1)})
    with pytest.raises(RatelabError, match="c_f must be a finite vector of length 3"):
        quadratics(**{**ins, "c_f": np.ones(2)})
    with pytest.raises(RatelabError, match="k_r must be a finite scalar"):
        quadratics(**{**ins, "k_r": np.ones(2)})


def test_coupled_nonlinear_rebuilds_the_generated_problem():
    p = make_coupled_nonlinear(jax.random.key(1), dim=3, lam=(1.5, 1.0), coupling=0.4, sigma=0.7)
    built = coupled_nonlinear(lam=p.lam, Cx=p.Cx, Cy=p.Cy, x_star=p.z_star[0], y_star=p.z_star[1],
                              z0=np.stack(p.z0), sigma=0.7)
    _same(built, p)


def test_coupled_nonlinear_rejects_bad_input():
    p = make_coupled_nonlinear(jax.random.key(1), dim=3)
    kw = dict(lam=p.lam, Cx=p.Cx, Cy=p.Cy, x_star=p.z_star[0], y_star=p.z_star[1])
    with pytest.raises(RatelabError, match="strong monotonicity"):
        coupled_nonlinear(**{**kw, "Cx": 10 * np.eye(3)})
    with pytest.raises(RatelabError, match=r"Cy must have shape \(3, 3\)"):
        coupled_nonlinear(**{**kw, "Cy": np.eye(2)})
    with pytest.raises(RatelabError, match="lam must be"):
        coupled_nonlinear(**{**kw, "lam": [1.0]})


def test_bilevel_sa_rebuilds_the_generated_problem():
    p = make_bilevel_nonconvex(jax.random.key(2), dim=3, rho=0.2, sigma=0.3)
    _same(bilevel_sa(H=p.H, B=p.B, c=p.c, rho=0.2, x0=p.z0[0], sigma=0.3), p)


def test_bilevel_sa_rejects_bad_input():
    p = make_bilevel_nonconvex(jax.random.key(2), dim=3)
    kw = dict(H=p.H, B=p.B, c=p.c, rho=0.1, x0=p.z0[0])
    with pytest.raises(RatelabError, match="H must be positive definite.*smallest eigenvalue is -1"):
        bilevel_sa(**{**kw, "H": np.diag([1.0, -1.0, 2.0])})
    with pytest.raises(RatelabError, match="H must be symmetric"):
        bilevel_sa(**{**kw, "H": np.asarray(p.H) + np.triu(np.ones((3, 3)), 1)})
    with pytest.raises(RatelabError, match=r"B must have shape \(3, 2\)"):
        bilevel_sa(**{**kw, "x0": np.zeros(2)})


def test_logistic_rebuilds_the_generated_problem():
    prob = make_logistic(0, n=20, d=3, lam=1e-2)
    built = logistic(prob.X, prob.y, lam=prob.lam)
    for a, b in zip(built, prob, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert type(a) is type(b)


def test_logistic_rejects_bad_input():
    prob = make_logistic(0, n=20, d=3)
    with pytest.raises(RatelabError, match="y must hold labels -1 and \\+1"):
        logistic(prob.X, (prob.y + 1) / 2, lam=1e-3)
    with pytest.raises(RatelabError, match=r"y must have shape \(20,\)"):
        logistic(prob.X, prob.y[:5], lam=1e-3)
    with pytest.raises(RatelabError, match="lam must be"):
        logistic(prob.X, prob.y, lam=0.0)
    with pytest.raises(RatelabError, match="X must be finite"):
        logistic(np.where(prob.X > 1, np.inf, prob.X), prob.y, lam=1e-3)


def test_dictionary_learning_rebuilds_the_generated_problem():
    # N = 4 samples: B = Y^T / 2 and mu / 2 are exact, so Y = 2 B^T is the generator's own sample matrix
    problem, _ = make_dictionary_learning(jax.random.key(1), n=3, p=2, samples=4, theta=0.5, mu=0.5)
    Y = 2.0 * np.asarray(problem.B).T
    _same(dictionary_learning(Y, p=2, mu=0.5, x0=problem.x0), problem)


def test_dictionary_learning_rejects_bad_input():
    Y = np.ones((4, 10))
    with pytest.raises(RatelabError, match="Y must be an"):
        dictionary_learning(np.ones(4))
    with pytest.raises(RatelabError, match="Y must be finite"):
        dictionary_learning(np.where(np.eye(4, 10) > 0, np.nan, Y))
    with pytest.raises(RatelabError, match="p must satisfy"):
        dictionary_learning(Y, p=5)
    with pytest.raises(RatelabError, match="x0 must lie on the manifold"):
        dictionary_learning(Y, x0=np.ones((4, 1)))


def test_forgetting_toy_rebuilds_the_generated_toy():
    ins = forgetting.instances(3, 2, 5, 2)
    for i in range(2):
        built = forgetting.toy(**{k: ins[k][i] for k in ("phi", "q", "r", "theta0")})
        for k, v in built.items():
            np.testing.assert_array_equal(v, ins[k][i])
            assert v.dtype == ins[k][i].dtype


def test_forgetting_toy_rejects_bad_input():
    one = {k: v[0] for k, v in forgetting.instances(3, 1, 5, 2).items()}
    phi = one["phi"]
    with pytest.raises(RatelabError, match="centred phi's smallest singular value"):
        forgetting.toy(**{**one, "phi": np.stack([phi[:, 0], phi[:, 0] + 1.0], axis=1)})
    with pytest.raises(RatelabError, match="q must be a distribution"):
        forgetting.toy(**{**one, "q": 2 * one["q"]})
    with pytest.raises(RatelabError, match=r"r must have shape \(5,\)"):
        forgetting.toy(**{**one, "r": one["r"][:3]})
    with pytest.raises(RatelabError, match="1 <= d < K"):
        forgetting.toy(**{**one, "phi": np.ones((5, 5)), "theta0": np.ones(5)})
