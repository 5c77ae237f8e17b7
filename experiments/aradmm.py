"""ARADMM (Deng, Jin, Hu, Wang, arXiv:2510.18617): adaptive Riemannian ADMM without smoothing on sparse PCA.

Sparse PCA min_{X in St(n, p)} -1/2 tr(X^T H X) + mu ||X||_1 (H = A^T A, ManPG's data) in the convention of
``radmm-spca-*`` (:func:`riemannian.sparse_problems.make_sparse_pca`, the same quick instance). The algorithm and its
parameters are reconstructed (:mod:`riemannian.aradmm`, every reconstruction marked [R] there).

Measured curve: the exact KKT residual of the UNSMOOTHED problem, ||P_x(grad f + lambda~)|| + ||X - Y|| +
dist(lambda~, partial h(Y)) at (X_{k+1}, Y_{k+1}), lambda~ = lambda_k + rho_k (X_{k+1} - Y_{k+1}) (the last term is 0
by the y-update's optimality; with smoothing it is taken at prox_{gamma h}(Y)); claims use its running minimum, the
quantity the paper's "eps-KKT point within K iterations" bounds.

Why k^(-1/3) (derived here): the dual steps beta_k ||c_k|| of the rule [R] are summable, so lambda_k converges to some
lambda_inf that is generically not the KKT multiplier lambda*, while lambda~ -> lambda*; the constraint violation
||X - Y|| = ||lambda~ - lambda_k|| / rho_k then decays like ||lambda* - lambda_inf|| / (rho_0 k^(1/3)), and the
gradient term faster (the x-step tracks the penalised problem). So the running-min residual ~ C k^(-1/3) and the
iterations to a level eps ~ (C / eps)^3: the paper's O(eps^-3) bound attained with equality on this instance.

Variants (config ``variant``; all four run in one compiled sweep, the three controls read the shared result):
``aradmm``; ``smoothed``: ARADMM with RADMM's Moreau smoothing gamma = ``control_eps`` in the y-update; ``radmm``:
RADMM itself with the theorem's parameters for eps = ``control_eps`` (gamma = eps, rho = 1 / eps, eta = eps; as a
point of ARADMM's parameter space, :func:`riemannian.aradmm.radmm_parameters`, equal to
:func:`riemannian.admm.radmm` step by step); ``constant-penalty``: ARADMM with rho_k = rho_0.

Measured (quick, 4 seeds): exponent -0.352 [-0.378, -0.335] (PASS; controls radmm -5e-6, smoothed -0.200: FAIL);
N(eps) exponent -2.75 [-2.84, -2.62] (PASS; constant-penalty never reaches the levels: FAIL). RADMM (eps = 0.05)
is lower until k ~ 1e4 (it converges linearly to its floor 0.036); ARADMM passes below it only at the end (0.031 at
k = 20000): "exact" is asymptotic, at the k^(-1/3) pace. Full (20 seeds, St(100, 5), mu = 0.5, 1e5 steps; 592 s
on a loaded 2-core machine): -0.350 [-0.353, -0.348] (controls radmm -7e-17, smoothed -0.212: FAIL); N(eps)
exponent -2.76 [-2.78, -2.74] (constant-penalty: FAIL); ARADMM 0.117 at k = 1e5 against RADMM's floor 0.231. Both
slopes sit 0.017 below -1/3: lambda_k still drifts toward lambda* (by O(1 / log k), the rule's tail).

Pre-registered (claims, bands, windows and instance written and committed, in cad6739, before the registered
instance, data seed 1, was run; a development run on another instance, data seed 5, had shown a fitted slope of
-0.335 over [2000, 20000] and RADMM's floor at about 0.036 by k = 1000 before the claims were written):

* ``kkt-decay`` (derived): the fitted exponent of the running-min KKT residual against k over the last decade of
  the run [steps / 10, steps] equals -1/3 +- 0.05. Controls: ``radmm`` and ``smoothed`` (the smoothing floor
  gamma ||lambda~|| returns, FAIL: RADMM sits on it, exponent ~ 0; smoothed ARADMM approaches it from above within
  the window, exponent about -0.2).
* ``complexity`` (the paper's O(eps^-3)): iterations N(eps) until the running-min residual, relative to its value at
  k_ref = steps / 100, first reaches eps in {2^-1/2, 2^-1, 2^-3/2, 2^-2}; fitted N ~ eps^q, claim q >= -3
  (tolerance 0.3). Control ``constant-penalty`` (rho_k = rho_0: the violation stalls at
  ||lambda* - lambda_inf|| / rho_0, the levels are never reached, FAIL).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, sweep, trace_from_arrays
from ratelab.validate import check_choice, check_in_range, check_nonnegative, check_positive, check_positive_int
from riemannian.aradmm import aradmm, radmm_parameters, step_constants
from riemannian.data import swept_index, take
from riemannian.sparse_problems import make_sparse_pca

ARADMM_PAPER = Paper(
    key="deng2025aradmm",
    authors="Kangkang Deng, Jiachen Jin, Jiang Hu, Hongxia Wang",
    title="Adaptive Riemannian ADMM for Nonsmooth Optimization: Optimal Complexity without Smoothing",
    venue="arXiv:2510.18617 (NeurIPS 2025)",
    year=2025,
    url="https://arxiv.org/abs/2510.18617",
)

SOURCE = ("Deng, Jin, Hu, Wang (arXiv:2510.18617): ARADMM finds an eps-approximate KKT point within O(eps^-3) "
          "iterations, without smoothing h")
VARIANTS = ("aradmm", "smoothed", "radmm", "constant-penalty")
LEVELS = tuple(float(2.0 ** (-j / 2)) for j in range(1, 5))


def _problem(cfg: dict[str, Any]):
    with jax.enable_x64(cfg["x64"]):
        return make_sparse_pca(jax.random.key(cfg["data_seed"]), m=cfg["m"], n=cfg["n"], p=cfg["p"], mu=cfg["mu"])


def _parameters(cfg: dict[str, Any], problem: Any) -> dict[str, np.ndarray]:
    """Columns of aradmm's swept arguments, one row per variant (VARIANTS order)."""
    base = {"rho0": cfg["rho0"], "penalty_power": cfg["penalty_power"], "beta0": cfg["rho0"], "adaptive_dual": 1.0,
            "gamma": 0.0, "c_eta": cfg["c_eta"]}
    rows = [base, {**base, "gamma": cfg["control_eps"]}, radmm_parameters(problem, cfg["control_eps"]),
            {**base, "penalty_power": 0.0}]
    return {name: np.array([r[name] for r in rows], dtype=float) for name in base}


_MEMO: dict[str, dict[str, Trace]] = {}


def _memo_key(cfg: dict[str, Any], key: jax.Array) -> str:
    shared = {k: v for k, v in cfg.items() if k != "variant"}
    return json.dumps([shared, np.asarray(jax.random.key_data(key)).tolist()], sort_keys=True, default=str)


def _runs(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> dict[str, Trace]:
    problem = _problem(cfg)
    table = _parameters(cfg, problem)
    lipschitz = step_constants(problem)

    def make(v):
        i = swept_index(v)
        return aradmm(**{name: take(col, i) for name, col in table.items()}, random_init=True,
                      lipschitz=lipschitz)

    tr = sweep(make, np.arange(len(VARIANTS)), problem, key, steps=cfg["steps"], seeds=cfg["seeds"],
               log_every=cfg["log_every"], x64=cfg["x64"], **run_kw)
    k = tr.steps
    i_ref = int(np.searchsorted(k, cfg["steps"] / 100))
    out = {}
    for j, name in enumerate(VARIANTS):
        kkt = tr["kkt_residual"][j]
        best = np.minimum.accumulate(kkt, axis=-1)
        metrics = {"kkt_residual": kkt, "relative_kkt": best / best[:, i_ref:i_ref + 1],
                   "constraint_violation": tr["kkt_feas"][j], "kkt_grad": tr["kkt_grad"][j],
                   "kkt_subgrad": tr["kkt_subgrad"][j], "objective": tr["objective"][j],
                   "feasibility": tr["feasibility"][j], "multiplier_norm": tr["multiplier_norm"][j]}
        out[name] = trace_from_arrays(k, metrics, timings=tr.timings)
    return out


def _execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    memo = _memo_key(cfg, key)
    if memo not in _MEMO:
        if len(_MEMO) > 8:
            _MEMO.clear()
        _MEMO[memo] = _runs(cfg, key, **run_kw)
    return _MEMO[memo][cfg["variant"]]


def _validate(cfg: dict[str, Any]) -> None:
    for name in ("m", "n", "p", "seeds", "steps", "log_every"):
        check_positive_int(name, cfg[name])
    if cfg["p"] > cfg["n"]:
        raise RatelabError(f"p must satisfy p <= n, got n={cfg['n']}, p={cfg['p']}")
    if cfg["steps"] < 100 * cfg["log_every"]:
        raise RatelabError(f"steps must be >= 100 log_every (k_ref = steps / 100 is a logged step), got "
                           f"steps={cfg['steps']}, log_every={cfg['log_every']}")
    check_nonnegative("mu", cfg["mu"])
    check_positive("rho0", cfg["rho0"])
    check_nonnegative("penalty_power", cfg["penalty_power"])
    check_in_range("c_eta", cfg["c_eta"], 0.0, 2.0, closed="neither")
    check_in_range("control_eps", cfg["control_eps"], 0.0, 1.0, closed="right")
    check_choice("variant", cfg["variant"], VARIANTS)


def _claims(cfg: dict[str, Any]) -> list[Claim]:
    eps = cfg["control_eps"]
    radmm_ctl = Control("radmm", f"RADMM itself (gamma = rho^-1 = eta = {eps:g}, the theorem's parameters for eps = "
                        f"{eps:g}): it converges to a KKT point of the SMOOTHED problem, where the exact residual "
                        "stops at gamma ||lambda~||, so the running minimum goes flat (exponent ~ 0)",
                        overrides={"variant": "radmm"})
    smooth_ctl = Control("smoothed", f"ARADMM with RADMM's Moreau smoothing gamma = {eps:g} in the y-update: the "
                         "same floor gamma ||lambda~|| returns", overrides={"variant": "smoothed"})
    const_ctl = Control("constant-penalty", f"rho_k = rho_0 = {cfg['rho0']:g} (no growth): the summable dual steps "
                        "leave lambda_inf != lambda*, the violation stalls at ||lambda* - lambda_inf|| / rho_0 and "
                        "the relative levels are never reached", overrides={"variant": "constant-penalty"})
    steps = cfg["steps"]
    return [
        Claim(id="kkt-decay", statement="ARADMM's exact KKT residual (running min) keeps falling like k^(-1/3) over "
              f"[{steps // 10}, {steps}], where RADMM stops at its smoothing floor (derived here: the constraint "
              "violation ||lambda* - lambda_inf|| / rho_k with rho_k ~ k^(1/3))",
              metric="kkt_residual", expected=-1.0 / 3.0, tolerance=0.05, window=(steps / 10, steps),
              transform="running_min", source="derived here from ARADMM's reconstructed parameters; the paper's "
              "O(eps^-3) is the matching upper bound", controls=(radmm_ctl, smooth_ctl)),
        Claim(id="complexity", statement="iterations N(eps) to an eps-KKT point (levels relative to the running-min "
              f"residual at k = {steps // 100}) grow at most like eps^-3", metric="relative_kkt",
              kind="sample_complexity", expected=-3.0, tolerance=0.3, relation="ge", eps=LEVELS, source=SOURCE,
              controls=(const_ctl,)),
    ]


_BASE = {"seed": 0, "data_seed": 1, "x64": True, "m": 20, "n": 30, "p": 2, "mu": 0.1, "rho0": 1.0,
         "penalty_power": 1.0 / 3.0, "c_eta": 0.5, "control_eps": 0.05, "variant": "aradmm"}

ARADMM_SPCA = register(Experiment(
    id="aradmm-spca",
    paper=ARADMM_PAPER,
    figure="iteration complexity theorem (O(eps^-3) to an eps-KKT point), on the paper's sparse PCA problem",
    title="ARADMM on sparse PCA: the exact KKT residual keeps falling like k^(-1/3) (RADMM's smoothing stops it)",
    configs={
        "quick": {**_BASE, "seeds": 4, "steps": 20_000, "log_every": 20},
        # full: the paper's sparse-PCA sizes were not available to us; RADMM's full instance (radmm-spca-complexity)
        "full": {**_BASE, "m": 50, "n": 100, "p": 5, "mu": 0.5, "seeds": 20, "steps": 100_000, "log_every": 50},
    },
    execute=_execute,
    claims=_claims,
    panels=(Panel(metric="kkt_residual", ylabel="exact KKT residual (running min)", transform="running_min"),
            Panel(metric="relative_kkt", ylabel="residual / residual at steps/100")),
    validate=_validate,
    tags=("riemannian", "admm"),
))

