"""Riemannian ADMM (Li, Ma, Srivastava, arXiv:2211.02163): iteration complexity, feasibility, and sparse PCA /
orthogonal dictionary learning against the Riemannian subgradient method.

Experiments
-----------
* ``radmm-spca-complexity``: the complexity theorem. For each target eps (halving), RADMM runs with the theorem's
  parameters gamma = eps, rho = 1/eps, eta = eps and we count the iterations N(eps) until the stationarity
  measure ||P_x(grad f + A^T lambda)|| + ||A x - y|| first drops below eps. Claim: N(eps) = O(eps^-4), i.e. the
  fitted exponent of N against 1/eps is at most 4.
* ``radmm-spca-vs-subgrad``: sparse PCA (ManPG's data), RADMM against the Riemannian subgradient method with the
  same number of iterations (each iteration of both costs one gradient of f, one projection and one QR
  retraction; the measured run times are in ``result.json``). Claims: iterates stay on St(n, p) to 1e-6 (float64);
  RADMM's objective is not worse; RADMM's iterate is at least as sparse at the threshold eps.
* ``radmm-ssc``: sparse spectral clustering, min tr(U^T L U) + mu ||U U^T||_1 on St(n, k) with the quadratic map
  c(U) = U U^T inside h (step eta = eps / ||J_c||^2 = eps / 4): RADMM reaches an eps-stationary point and its
  U spans the planted cluster subspace as well as plain spectral clustering (mu = 0) while U U^T's smoothed
  companion prox(y) is sparse.
* ``radmm-odl``: orthogonal dictionary learning, min ||Y^T x||_1 on the sphere St(n, 1), Y = Q S with
  Bernoulli(0.3)-Gaussian S: RADMM recovers a column of Q (|<q_i, x>| close to 1).
"""

from __future__ import annotations

from typing import Any

import jax
import matplotlib.pyplot as plt
import numpy as np

from ratelab.claims import Claim
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, run, sweep, trace_from_arrays
from ratelab.schedules import power_decay
from ratelab.validate import check_in_range, check_nonnegative, check_positive, check_positive_int
from riemannian.admm import radmm, theory_parameters
from riemannian.baselines import riemannian_subgradient
from riemannian.sparse_problems import make_dictionary_learning, make_sparse_pca, make_sparse_spectral_clustering

RADMM_PAPER = Paper(
    key="li2022radmm",
    authors="Jiaxiang Li, Shiqian Ma, Tejes Srivastava",
    title="A Riemannian ADMM",
    venue="arXiv:2211.02163",
    year=2022,
    url="https://arxiv.org/abs/2211.02163",
)

SOURCE_COMPLEXITY = ("Li, Ma, Srivastava (arXiv:2211.02163): RADMM with gamma = O(eps), rho = O(1/eps), "
                     "eta = O(eps) finds an eps-stationary point in O(eps^-4) iterations")
SOURCE_NUMERICS = "Li, Ma, Srivastava (arXiv:2211.02163), Sec. 5: sparse PCA and dictionary learning experiments"


def _spca(cfg: dict[str, Any]):
    with jax.enable_x64(cfg["x64"]):
        return make_sparse_pca(jax.random.key(cfg["data_seed"]), m=cfg["m"], n=cfg["n"], p=cfg["p"], mu=cfg["mu"])


def _validate_spca(cfg: dict[str, Any]) -> None:
    for name in ("m", "n", "p"):
        check_positive_int(name, cfg[name])
    if cfg["p"] > cfg["n"]:
        raise RatelabError(f"p must satisfy p <= n, got n={cfg['n']}, p={cfg['p']}")
    check_nonnegative("mu", cfg["mu"])
    for name in ("c_gamma", "c_rho", "c_eta"):
        check_positive(name, cfg[name])


# ------------------------------------------------------------------------------------------------------------------
# 1. Iteration complexity: N(eps) against 1/eps
# ------------------------------------------------------------------------------------------------------------------


def _eps_grid(cfg: dict[str, Any]) -> np.ndarray:
    return cfg["eps_max"] * 0.5 ** np.arange(cfg["n_eps"])


def _execute_complexity(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    problem = _spca(cfg)
    eps = _eps_grid(cfg)

    def make(e):
        par = theory_parameters(e, c_gamma=cfg["c_gamma"], c_rho=cfg["c_rho"], c_eta=cfg["c_eta"])
        return radmm(**par, random_init=True)

    trace = sweep(make, eps, problem, key, steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"],
                  aggregate="min", x64=cfg["x64"], **run_kw)
    best = np.minimum.accumulate(trace["stationarity"], axis=-1)  # [n_eps, seeds, n_log], running minimum
    reached = best <= eps[:, None, None]
    first = np.argmax(reached, axis=-1)  # block index of the first block whose minimum is <= eps
    n_iter = np.where(reached.any(axis=-1), (first + 1) * cfg["log_every"], np.nan).astype(float)
    feas = np.max(trace["feasibility"], axis=-1)  # [n_eps, seeds]
    inv_eps = 1.0 / eps
    return trace_from_arrays(inv_eps[::-1], {"iterations_to_eps": n_iter.T[:, ::-1],
                                             "max_feasibility": feas.T[:, ::-1]},
                             timings=trace.timings)


def _validate_complexity(cfg: dict[str, Any]) -> None:
    _validate_spca(cfg)
    check_in_range("eps_max", cfg["eps_max"], 0.0, 1.0, closed="right")
    check_positive_int("n_eps", cfg["n_eps"])
    if cfg["n_eps"] < 3:
        raise RatelabError(f"n_eps must be >= 3 to fit an exponent, got {cfg['n_eps']}")


def _claims_complexity(cfg: dict[str, Any]) -> list[Claim]:
    return [
        Claim(id="complexity", statement="iterations to an eps-stationary point N(eps) = O(eps^-4)",
              metric="iterations_to_eps", expected=4.0, tolerance=0.25, relation="le", source=SOURCE_COMPLEXITY),
        Claim(id="feasibility", statement="every iterate lies on St(n, p): max_k ||X_k^T X_k - I||_F <= 1e-6",
              metric="max_feasibility", kind="value", expected=1e-6, tolerance=1e-12, relation="le", statistic="max",
              window=(1.0 / cfg["eps_max"], 2.0 ** (cfg["n_eps"] - 1) / cfg["eps_max"]), source=SOURCE_COMPLEXITY),
    ]


_SPCA = {"seed": 0, "data_seed": 1, "x64": True, "m": 20, "n": 30, "p": 2, "mu": 0.1,
         "c_gamma": 1.0, "c_rho": 1.0, "c_eta": 1.0}

RADMM_COMPLEXITY = register(Experiment(
    id="radmm-spca-complexity",
    paper=RADMM_PAPER,
    figure="iteration complexity theorem (O(eps^-4))",
    title="Riemannian ADMM on sparse PCA: iterations to an eps-stationary point against 1/eps (theorem: <= eps^-4)",
    configs={
        "quick": {**_SPCA, "seeds": 4, "steps": 3000, "log_every": 10, "eps_max": 0.1, "n_eps": 4},
        "full": {**_SPCA, "m": 50, "n": 100, "p": 5, "mu": 0.5, "seeds": 20, "steps": 40_000, "log_every": 10,
                 "eps_max": 0.1, "n_eps": 6},
    },
    execute=_execute_complexity,
    claims=_claims_complexity,
    panels=(Panel(metric="iterations_to_eps", ylabel=r"iterations $N(\epsilon)$ to $\epsilon$-stationarity",
                  xlabel=r"$1/\epsilon$"),),
    validate=_validate_complexity,
    tags=("riemannian", "admm"),
))


# ------------------------------------------------------------------------------------------------------------------
# 2. Sparse PCA: RADMM against the Riemannian subgradient method
# ------------------------------------------------------------------------------------------------------------------


def _execute_compare(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    problem = _spca(cfg)
    tol = cfg["eps"]
    par = theory_parameters(cfg["eps"], c_gamma=cfg["c_gamma"], c_rho=cfg["c_rho"], c_eta=cfg["c_eta"])
    common = {"steps": cfg["steps"], "seeds": cfg["seeds"], "log_every": cfg["log_every"], "x64": cfg["x64"]}
    ta = run(radmm(**par, random_init=True, sparsity_tol=tol), problem, key, **common, **run_kw)
    tb = run(riemannian_subgradient(power_decay(cfg["subgrad_eta0"], 1.0, 0.5), random_init=True, sparsity_tol=tol),
             problem, key, **common, **run_kw)  # same key: the same random x_0 per seed
    feas = np.maximum.accumulate(np.maximum(ta["feasibility"], tb["feasibility"]), axis=-1)
    metrics = {
        "objective_radmm": ta["objective"], "objective_subgrad": tb["objective"],
        "objective_gap": ta["objective"] - tb["objective"],
        "sparsity_radmm": ta["sparsity"], "sparsity_subgrad": tb["sparsity"],
        "sparsity_gap": ta["sparsity"] - tb["sparsity"],
        "stationarity_radmm": ta["stationarity"], "max_feasibility": feas,
    }
    timings = {"radmm_run_s": ta.timings.get("run_s", 0.0), "subgrad_run_s": tb.timings.get("run_s", 0.0),
               "compile_s": ta.timings.get("compile_s", 0.0) + tb.timings.get("compile_s", 0.0)}
    return trace_from_arrays(ta.steps, metrics, timings=timings)


def _validate_compare(cfg: dict[str, Any]) -> None:
    _validate_spca(cfg)
    check_in_range("eps", cfg["eps"], 0.0, 1.0, closed="right")
    check_positive("subgrad_eta0", cfg["subgrad_eta0"])


def _claims_compare(cfg: dict[str, Any]) -> list[Claim]:
    return [
        Claim(id="feasibility", statement="both methods' iterates stay on St(n, p): ||X^T X - I||_F <= 1e-6",
              metric="max_feasibility", kind="value", expected=1e-6, tolerance=1e-12, relation="le", statistic="max",
              source=SOURCE_NUMERICS),
        Claim(id="objective", statement="at equal iterations RADMM's F(X) is not above the subgradient method's",
              metric="objective_gap", kind="value", expected=0.0, tolerance=1e-3, relation="le",
              source=SOURCE_NUMERICS),
        Claim(id="sparsity", statement="RADMM's iterate is at least as sparse (fraction of |X_ij| < eps)",
              metric="sparsity_gap", kind="value", expected=0.0, tolerance=0.02, relation="ge",
              source=SOURCE_NUMERICS),
    ]


def _compare_figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    k = trace.steps
    for name, color in (("radmm", "C0"), ("subgrad", "C1")):
        label = "RADMM" if name == "radmm" else "Riemannian subgradient"
        axes[0].plot(k, trace[f"objective_{name}"].mean(axis=0), color=color, label=label)
        axes[1].plot(k, trace[f"sparsity_{name}"].mean(axis=0), color=color, label=label)
    axes[0].set(xscale="log", xlabel="iteration k", ylabel=r"$F(X_k)$ (mean over seeds)")
    axes[1].set(xscale="log", xlabel="iteration k", ylabel=rf"fraction of $|X_{{ij}}| < {cfg['eps']:g}$")
    stat = trace["stationarity_radmm"]
    for s_, curve in enumerate(stat):
        axes[2].plot(k, np.maximum(curve, 1e-17), color="C0", lw=0.7, alpha=0.6, label="seeds" if s_ == 0 else None)
    axes[2].plot(k, np.median(np.maximum(stat, 1e-17), axis=0), color="k", lw=1.5, label="median")
    axes[2].set(xscale="log", yscale="log", xlabel="iteration k",
                ylabel=r"RADMM $\|P_x(\nabla f + A^\top\lambda)\| + \|Ax - y\|$")
    for ax in axes:
        ax.legend()
    fig.suptitle(f"sparse PCA, n={cfg['n']}, p={cfg['p']}, mu={cfg['mu']}: RADMM vs Riemannian subgradient")
    fig.tight_layout()
    return fig


RADMM_COMPARE = register(Experiment(
    id="radmm-spca-vs-subgrad",
    paper=RADMM_PAPER,
    figure="Sec. 5, sparse PCA: objective and sparsity against the Riemannian subgradient method",
    title="Sparse PCA on St(n, p): RADMM vs Riemannian subgradient at equal iterations (objective, sparsity, "
          "feasibility)",
    configs={
        "quick": {**_SPCA, "seeds": 8, "steps": 2000, "log_every": 20, "eps": 0.02, "subgrad_eta0": 0.1},
        "full": {**_SPCA, "m": 50, "n": 100, "p": 5, "mu": 0.5, "seeds": 20, "steps": 20_000, "log_every": 100,
                 "eps": 0.01, "subgrad_eta0": 0.1},
    },
    execute=_execute_compare,
    claims=_claims_compare,
    panels=(Panel(metric="objective_gap", ylabel=r"$F(X^{\rm RADMM}_k) - F(X^{\rm subgrad}_k)$", yscale="symlog"),
            Panel(metric="max_feasibility", ylabel=r"$\max_{j \leq k} \|X_j^\top X_j - I\|_F$")),
    validate=_validate_compare,
    extra_figures={"objective_sparsity": _compare_figure},
    notes=("RADMM minimises the smoothed f + h_gamma: at its fixed point the entries of X off the support equal "
           "gamma * lambda_ij (|.| <= gamma mu), so F(X) pays mu * gamma * mu per such entry; the objective claim "
           "measures this smoothing bias together with basin differences between the two methods. Each RADMM "
           "iteration costs about 1.4x a subgradient iteration (run_s in result.json)."),
    tags=("riemannian", "admm"),
))


# ------------------------------------------------------------------------------------------------------------------
# 3. Orthogonal dictionary learning
# ------------------------------------------------------------------------------------------------------------------


def _execute_odl(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    with jax.enable_x64(cfg["x64"]):
        problem, q = make_dictionary_learning(jax.random.key(cfg["data_seed"]), n=cfg["n"], p=1,
                                              samples=cfg["samples"], theta=cfg["theta"], mu=1.0)
    par = theory_parameters(cfg["eps"], c_gamma=cfg["c_gamma"], c_rho=cfg["c_rho"], c_eta=cfg["c_eta"])
    trace = run(radmm(**par, random_init=True), problem, key, steps=cfg["steps"], seeds=cfg["seeds"],
                log_every=cfg["steps"], x64=cfg["x64"], **run_kw)
    x = np.asarray(trace.final_state.x)[..., 0]  # [seeds, n]
    recovery = np.max(np.abs(x @ np.asarray(q)), axis=-1)  # max_i |<q_i, x>|
    feas = np.asarray(trace["feasibility"])[:, -1]
    return trace_from_arrays([cfg["steps"]], {"recovery": recovery[:, None], "feasibility": feas[:, None]},
                             timings=trace.timings)


def _validate_odl(cfg: dict[str, Any]) -> None:
    check_positive_int("n", cfg["n"])
    check_positive_int("samples", cfg["samples"])
    check_in_range("theta", cfg["theta"], 0.0, 1.0, closed="right")
    check_in_range("eps", cfg["eps"], 0.0, 1.0, closed="right")


def _claims_odl(cfg: dict[str, Any]) -> list[Claim]:
    return [Claim(id="recovery", statement="RADMM recovers a dictionary column: max_i |<q_i, x>| >= 0.99 (+- 0.01)",
                  metric="recovery", kind="value", expected=0.99, tolerance=0.01, relation="ge",
                  source=SOURCE_NUMERICS)]


RADMM_ODL = register(Experiment(
    id="radmm-odl",
    paper=RADMM_PAPER,
    figure="Sec. 5, orthogonal dictionary learning",
    title="Orthogonal dictionary learning on the sphere: RADMM recovers a column of Q from Y = Q S",
    configs={
        "quick": {"seed": 0, "data_seed": 2, "x64": True, "seeds": 4, "steps": 2000, "log_every": 2000, "n": 10,
                  "samples": 1000, "theta": 0.3, "eps": 0.02, "c_gamma": 1.0, "c_rho": 1.0, "c_eta": 1.0},
        "full": {"seed": 0, "data_seed": 2, "x64": True, "seeds": 20, "steps": 10_000, "log_every": 10_000,
                 "n": 30, "samples": 5000, "theta": 0.3, "eps": 0.01, "c_gamma": 1.0, "c_rho": 1.0, "c_eta": 1.0},
    },
    execute=_execute_odl,
    claims=_claims_odl,
    panels=(Panel(metric="recovery", ylabel=r"$\max_i |\langle q_i, x_K\rangle|$", xscale="linear",
                  yscale="linear", xlabel="iterations K"),),
    validate=_validate_odl,
    tags=("riemannian", "admm"),
))


# ------------------------------------------------------------------------------------------------------------------
# 4. Sparse spectral clustering
# ------------------------------------------------------------------------------------------------------------------


def _execute_ssc(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    with jax.enable_x64(cfg["x64"]):
        problem, planted = make_sparse_spectral_clustering(
            jax.random.key(cfg["data_seed"]), k=cfg["k"], per_cluster=cfg["per_cluster"], dim=2,
            separation=cfg["separation"], width=1.0, mu=cfg["mu"])
    par = theory_parameters(cfg["eps"], c_gamma=cfg["c_gamma"], c_rho=cfg["c_rho"], c_eta=cfg["c_eta"])
    trace = run(radmm(**par, random_init=True), problem, key, steps=cfg["steps"], seeds=cfg["seeds"],
                log_every=cfg["log_every"], x64=cfg["x64"], **run_kw)
    k = cfg["k"]
    planted = np.asarray(planted)
    u = np.asarray(trace.final_state.x)  # [seeds, n, k]
    err = np.linalg.norm(u @ np.swapaxes(u, -1, -2) - planted, axis=(-2, -1)) / np.sqrt(k)
    v = np.linalg.eigh(np.asarray(problem.L))[1][:, :k]  # plain spectral clustering: the bottom-k eigenspace
    err_spectral = np.linalg.norm(v @ v.T - planted) / np.sqrt(k)
    n_log = trace.steps.size
    metrics = {"stationarity": trace["stationarity"], "feasibility": trace["feasibility"],
               "sparsity_z": trace["sparsity_z"], "objective": trace["objective"],
               "subspace_gap": np.repeat((err - err_spectral)[:, None], n_log, axis=1)}
    return trace_from_arrays(trace.steps, metrics, timings=trace.timings)


def _validate_ssc(cfg: dict[str, Any]) -> None:
    check_positive_int("k", cfg["k"])
    check_positive_int("per_cluster", cfg["per_cluster"])
    check_positive("separation", cfg["separation"])
    check_nonnegative("mu", cfg["mu"])
    check_in_range("eps", cfg["eps"], 0.0, 1.0, closed="right")
    for name in ("c_gamma", "c_rho", "c_eta"):
        check_positive(name, cfg[name])


def _claims_ssc(cfg: dict[str, Any]) -> list[Claim]:
    eps = cfg["eps"]
    return [
        Claim(id="stationarity", statement=f"RADMM reaches an eps-stationary point (eps = {eps:g}) within the run",
              metric="stationarity", kind="value", expected=eps, tolerance=eps / 10, relation="le",
              source=SOURCE_COMPLEXITY),
        Claim(id="clusters", statement="U spans the planted cluster subspace as well as plain spectral clustering: "
                                       "||UU^T - P||_F/sqrt(k) - (same for the bottom eigenvectors) <= 0",
              metric="subspace_gap", kind="value", expected=0.0, tolerance=0.01, relation="le",
              source=SOURCE_NUMERICS),
        Claim(id="feasibility", statement="the iterates stay on St(n, k): ||U^T U - I||_F <= 1e-6",
              metric="feasibility", kind="value", expected=1e-6, tolerance=1e-12, relation="le", statistic="max",
              source=SOURCE_NUMERICS),
    ]


def _ssc_figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    """Per-seed curves on log axes (a mean +- CI band is meaningless over values spanning many decades)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    k = trace.steps
    stat = np.minimum.accumulate(np.maximum(trace["stationarity"], 1e-17), axis=-1)
    for s_, curve in enumerate(stat):
        ax.plot(k, curve, color="C0", lw=0.8, alpha=0.7, label="seeds (running min)" if s_ == 0 else None)
    ax.plot(k, np.median(stat, axis=0), color="k", lw=1.5, label="median")
    ax.axhline(cfg["eps"], color="k", ls=":", label=rf"$\epsilon = {cfg['eps']:g}$")
    ax.set(xscale="log", yscale="log", xlabel="iteration k", ylabel="RADMM stationarity measure",
           title=f"sparse spectral clustering, k={cfg['k']}, n={cfg['k'] * cfg['per_cluster']}, mu={cfg['mu']:g}")
    ax.legend()
    fig.tight_layout()
    return fig


_SSC = {"seed": 0, "data_seed": 0, "x64": True, "separation": 5.0, "mu": 1e-3, "c_gamma": 1.0, "c_rho": 1.0,
        "c_eta": 0.25}

RADMM_SSC = register(Experiment(
    id="radmm-ssc",
    paper=RADMM_PAPER,
    figure="Sec. 5, sparse spectral clustering",
    title="Sparse spectral clustering on St(n, k): RADMM reaches eps-stationarity and recovers the planted clusters",
    configs={
        "quick": {**_SSC, "seeds": 4, "steps": 3000, "log_every": 30, "k": 3, "per_cluster": 20, "eps": 0.02},
        "full": {**_SSC, "seeds": 20, "steps": 20_000, "log_every": 100, "k": 5, "per_cluster": 40, "eps": 0.01},
    },
    execute=_execute_ssc,
    claims=_claims_ssc,
    panels=(Panel(metric="sparsity_z", ylabel=r"fraction of zeros of prox$_{\gamma h}(y) \approx UU^\top$",
                  yscale="linear"),),
    validate=_validate_ssc,
    extra_figures={"stationarity": _ssc_figure},
    tags=("riemannian", "admm"),
))
