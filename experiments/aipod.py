"""AiPOD and its projection-efficient variants (Xiao, Shen, Yin, Chen; AISTATS 2023; arXiv:2211.07096).

Claims checked (from the abstracts; the O~ bounds are upper bounds, so each is checked with relation "ge" on the
fitted exponent q of N(eps) ~ eps^q, i.e. "no steeper than claimed", tolerance 0.25 for the logarithmic factors):

* AiPOD reaches an eps-stationary point, (1/K) sum_k ||P_X ∇F(x_k)||^2 <= eps, with O~(eps^-2) samples.
* E-AiPOD with an O(T) lower-level batch: O~(eps^-2 / T) upper-level, O~(eps^-1.5 / T^(3/4)) lower-level projections.
* E-AiPOD with an O(1) batch: O~(eps^-1.5) upper-level and lower-level projections.
* The iterates stay feasible (both levels' equality constraints) to 1e-6 in float64 (an invariant of the projections).
* The federated application (consensus constraints in both levels, heterogeneous clients): AiPOD and E-AiPOD reach
  eps-stationarity with O~(eps^-2) samples; communication rounds are the projections.

All three quadratic experiments share the three runs (AiPOD, E-AiPOD O(T) batch, E-AiPOD O(1) batch) of one config;
the projection experiments re-express each run's running-mean stationarity against its cumulative number of
projections (upper: deterministic counts; lower: the expected count S sum_k p_k), interpolated in log-log onto a
common grid of projection counts, and return it with ``trace_from_arrays``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bilevel.aipod import (
    aipod,
    e_aipod,
    e_aipod_small_batch,
    expected_lower_projections,
    quarter_decay,
    samples_per_step,
    sqrt_decay,
    upper_projection_counts,
)
from bilevel.eq_problems import make_federated_bilevel, make_quadratic_bilevel
from ratelab.claims import Claim
from ratelab.errors import RatelabError
from ratelab.rates import running_mean
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, run, trace_from_arrays

XIAO = Paper(
    key="xiao2023aipod",
    authors="Q. Xiao, H. Shen, W. Yin and T. Chen",
    title="Alternating Implicit Projected SGD and Its Efficient Variants for Equality-constrained Bilevel "
          "Optimization",
    venue="AISTATS 2023 (PMLR 206); arXiv:2211.07096",
    year=2023,
    url="https://arxiv.org/abs/2211.07096",
)

SOURCE = "Xiao et al. (2023), abstract (arXiv:2211.07096 and PMLR 206)"
METHODS = ("AiPOD", "E-AiPOD, O(T) batch", "E-AiPOD, O(1) batch")
TOL = 0.25  # log factors of the O~ bounds; chosen before any run

_PROBLEM_KEYS = ("problem_seed", "dim_x", "dim_y", "upper_constraints", "lower_constraints", "lower_cond",
                 "upper_cond", "coupling", "sigma", "hess_sigma", "x0_scale")


def _problem(cfg: dict[str, Any]):
    # Built in float64 when the run is: the projectors must be exact to the run's precision.
    with jax.enable_x64(bool(cfg["x64"])):
        return make_quadratic_bilevel(jax.random.key(cfg["problem_seed"]),
                                      **{k: cfg[k] for k in _PROBLEM_KEYS[1:]})


def _solvers(cfg: dict[str, Any]) -> dict[str, Any]:
    common = dict(lower_steps=cfg["lower_steps"], neumann_steps=cfg["neumann_steps"])
    a, b = sqrt_decay(cfg["alpha"]), sqrt_decay(cfg["beta"])
    p = quarter_decay(cfg["lower_prob_scale"])
    return {
        METHODS[0]: aipod(a, b, **common),
        METHODS[1]: e_aipod(a, b, projection_interval=cfg["interval"], lower_prob=p, **common),
        METHODS[2]: e_aipod_small_batch(a, b, lower_prob=p, projection_rate=cfg["projection_rate"], **common),
    }


def _samples(cfg: dict[str, Any], method: str) -> int:
    batch = cfg["interval"] if method == METHODS[1] else 1
    return samples_per_step(lower_steps=cfg["lower_steps"], lower_batch=batch, neumann_steps=cfg["neumann_steps"])


def _eps(cfg: dict[str, Any], prefix: str = "") -> tuple[float, ...]:
    return tuple(float(e) for e in np.geomspace(cfg[prefix + "eps_hi"], cfg[prefix + "eps_lo"], cfg["n_eps"]))


_RUNS: dict[tuple, Trace] = {}


def _runs(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> dict[str, Trace]:
    """The three runs of one config, computed once per process (the three quadratic experiments share them)."""
    run_kw = {k: v for k, v in run_kw.items() if k in ("chunks", "progress")}
    ident = tuple(sorted((k, v) for k, v in cfg.items() if not k.startswith(("eps", "proj_eps", "low_eps"))))
    problem, solvers = _problem(cfg), _solvers(cfg)
    out = {}
    for name, solver in solvers.items():
        memo = (name, ident, str(jax.random.key_data(key)))
        if memo not in _RUNS:
            _RUNS[memo] = run(solver, problem, key, steps=cfg["steps"], seeds=cfg["seeds"],
                              log_every=cfg["log_every"], aggregate="mean", x64=cfg["x64"], **run_kw)
        out[name] = _RUNS[memo]
    return out


def _validate(cfg: dict[str, Any]) -> None:
    for prefix in ("", "proj_", "low_"):
        if prefix + "eps_hi" in cfg and not 0 < cfg[prefix + "eps_lo"] < cfg[prefix + "eps_hi"]:
            raise RatelabError(f"{prefix}eps_lo and {prefix}eps_hi must satisfy 0 < eps_lo < eps_hi, got "
                               f"{cfg[prefix + 'eps_lo']} and {cfg[prefix + 'eps_hi']}")
    if cfg["n_eps"] < 3:
        raise RatelabError(f"n_eps must be >= 3, got {cfg['n_eps']}")
    _problem(cfg)
    _solvers(cfg)


# --- 1. AiPOD on the quadratic: sample complexity and feasibility ----------------------------------------------
def _exec_quadratic(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    return _runs(cfg, key, **run_kw)[METHODS[0]]


def _claims_quadratic(cfg: dict[str, Any]) -> list[Claim]:
    return [
        Claim(id="sample-complexity", statement="AiPOD reaches (1/K) sum ||P_X grad F(x_k)||^2 <= eps with "
              "O~(eps^-2) samples", metric="grad_norm_sq", kind="sample_complexity", expected=-2.0, relation="ge",
              tolerance=TOL, transform="running_mean", eps=_eps(cfg), samples_per_step=_samples(cfg, METHODS[0]),
              source=SOURCE),
        Claim(id="feasibility", statement="every projected iterate satisfies B x = e and A y + H x = c to 1e-6 "
              "(float64)", metric="max_violation", kind="value", expected=0.0, relation="le", tolerance=1e-6,
              statistic="max",
              source="Xiao et al. (2023), Algorithm 1: both updates are projections onto the constraint sets"),
    ]


def _panels_quadratic(spp: int) -> tuple[Panel, ...]:
    return (
        Panel(metric="grad_norm_sq", ylabel=r"$\|P_X \nabla F(x_k)\|^2$", transform="running_mean",
              samples_per_step=spp, xlabel="stochastic samples", label="AiPOD: stationarity vs samples"),
        Panel(metric="y_gap", ylabel=r"$\|y_{k+1} - y^*(x_k)\|^2$", label="lower-level tracking"),
        Panel(metric="max_violation", ylabel="max constraint violation (running max)",
              label="feasibility (float64)"),
    )


_QUICK = {
    "seed": 0, "seeds": 16, "steps": 10_000, "log_every": 50, "x64": True, "problem_seed": 0,
    "dim_x": 8, "dim_y": 8, "upper_constraints": 2, "lower_constraints": 2, "lower_cond": 2.0, "upper_cond": 2.0,
    "coupling": 0.5, "sigma": 1.0, "hess_sigma": 0.1, "x0_scale": 3.0,
    "alpha": 0.5, "beta": 1.0, "lower_steps": 1, "neumann_steps": 8,
    "interval": 4, "lower_prob_scale": 1.0, "projection_rate": 1.0,
    "n_eps": 6, "eps_hi": 0.2, "eps_lo": 0.07, "proj_eps_hi": 0.3, "proj_eps_lo": 0.11,
    "low_eps_hi": 0.2, "low_eps_lo": 0.07,
}
# Full: the same problem family, 4x the horizon and 4x the seeds (eps targets scaled with the O(1/sqrt(K)) level).
# The authors' synthetic script (github.com/hanshen95/AiPOD, toy example: dim 100, 90 lower and 80 upper
# constraints, S = 5, T = 2, sigma = 0.1) uses a nonconvex upper objective without a closed form; it is not
# reproduced here.
_FULL = {
    **_QUICK, "seeds": 64, "steps": 40_000, "log_every": 100, "eps_hi": 0.15, "eps_lo": 0.035,
    "proj_eps_hi": 0.3, "proj_eps_lo": 0.065, "low_eps_hi": 0.2, "low_eps_lo": 0.035,
}

AIPOD_QUADRATIC = register(Experiment(
    id="aipod-quadratic",
    paper=XIAO,
    figure="AiPOD sample complexity (abstract); synthetic equality-constrained bilevel problem",
    title="AiPOD on a random equality-constrained quadratic bilevel problem: O~(eps^-2) samples, feasible iterates",
    configs={"quick": dict(_QUICK), "full": dict(_FULL)},
    execute=_exec_quadratic,
    claims=_claims_quadratic,
    panels=_panels_quadratic(samples_per_step(lower_steps=1, neumann_steps=8)),
    validate=_validate,
    tags=("bilevel", "constrained"),
))


# --- 2./3. projection complexity of the two efficient variants -------------------------------------------------
def _loglog_interp(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Interpolate each row of y (against ascending x) at ``grid`` in log-log coordinates."""
    lx, lg = np.log(x), np.log(grid)
    return np.exp(np.stack([np.interp(lg, lx, np.log(row)) for row in y]))


def _counts(cfg: dict[str, Any], method: str, level: str, steps: np.ndarray) -> np.ndarray:
    S = cfg["lower_steps"]
    if level == "upper":
        if method == METHODS[0]:
            return steps.astype(float)
        if method == METHODS[1]:
            return upper_projection_counts(steps, interval=cfg["interval"])
        return upper_projection_counts(steps, rate=cfg["projection_rate"], power=0.75)
    if method == METHODS[0]:
        return S * steps.astype(float)
    return expected_lower_projections(steps, quarter_decay(cfg["lower_prob_scale"]), S)


def _exec_projections(level: str):
    def execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
        runs = _runs(cfg, key, **run_kw)
        curves, xs = [], []
        for m in METHODS:
            tr = runs[m]
            xs.append(_counts(cfg, m, level, tr.steps))
            curves.append(running_mean(tr["grad_norm_sq"]))
        lo = max(x[x > 0].min() for x in xs)
        hi = min(x.max() for x in xs)
        grid = np.unique(np.round(np.geomspace(lo, hi, 200)))
        vals = np.stack([_loglog_interp(grid, x[x > 0], c[:, x > 0]) for x, c in zip(xs, curves, strict=True)])
        timings = {k: sum(runs[m].timings.get(k, 0.0) for m in METHODS) for k in ("compile_s", "run_s")}
        return trace_from_arrays(grid, {"grad_norm_sq_avg": vals}, timings=timings)

    return execute


def _claims_projections(level: str):
    def claims(cfg: dict[str, Any]) -> list[Claim]:
        prefix = "proj_" if level == "upper" else "low_"
        eps = _eps(cfg, prefix)
        if level == "upper":
            spec = [(1, -2.0, "O~(eps^-2 / T) upper-level projections (O(T) lower-level batch)"),
                    (2, -1.5, "O~(eps^-1.5) upper-level projections (O(1) batch)")]
        else:
            spec = [(1, -1.5, "O~(eps^-1.5 / T^(3/4)) lower-level projections (O(T) lower-level batch)"),
                    (2, -1.5, "O~(eps^-1.5) lower-level projections (O(1) batch)")]
        return [Claim(id=f"{level}-projections-{'tbatch' if i == 1 else 'batch1'}",
                      statement=f"{METHODS[i]} reaches eps-stationarity with {text}", metric="grad_norm_sq_avg",
                      kind="sample_complexity", expected=q, relation="ge", tolerance=TOL, eps=eps, index=(i,),
                      source=SOURCE) for i, q, text in spec]

    return claims


def _panels_projections(level: str) -> tuple[Panel, ...]:
    return tuple(Panel(metric="grad_norm_sq_avg", ylabel=r"$\frac{1}{k}\sum_j \|P_X \nabla F(x_j)\|^2$",
                       index=(i,), xlabel=f"{level}-level projections", label=m) for i, m in enumerate(METHODS))


AIPOD_UPPER = register(Experiment(
    id="aipod-upper-projections",
    paper=XIAO,
    figure="Abstract: upper-level projection complexity of the two projection-efficient variants",
    title="Stationarity against upper-level projections: AiPOD, E-AiPOD (O(T) batch, T-lazy), E-AiPOD (O(1) batch)",
    configs={"quick": dict(_QUICK), "full": dict(_FULL)},
    execute=_exec_projections("upper"),
    claims=_claims_projections("upper"),
    panels=_panels_projections("upper"),
    validate=_validate,
    tags=("bilevel", "constrained", "projection-efficiency"),
))

AIPOD_LOWER = register(Experiment(
    id="aipod-lower-projections",
    paper=XIAO,
    figure="Abstract: lower-level projection complexity of the two projection-efficient variants",
    title="Stationarity against (expected) lower-level projections: AiPOD and both projection-efficient variants",
    configs={"quick": dict(_QUICK), "full": dict(_FULL)},
    execute=_exec_projections("lower"),
    claims=_claims_projections("lower"),
    panels=_panels_projections("lower"),
    validate=_validate,
    tags=("bilevel", "constrained", "projection-efficiency"),
))


# --- 4. federated bilevel application --------------------------------------------------------------------------
_FED_METHODS = METHODS[:2]


def _fed_problem(cfg: dict[str, Any]):
    with jax.enable_x64(bool(cfg["x64"])):
        return make_federated_bilevel(jax.random.key(cfg["problem_seed"]), clients=cfg["clients"],
                                      dim_x=cfg["dim_x"], dim_y=cfg["dim_y"], heterogeneity=cfg["heterogeneity"],
                                      samples_per_client=cfg["samples_per_client"], sigma=cfg["sigma"],
                                      hess_sigma=cfg["hess_sigma"])


def _fed_solvers(cfg: dict[str, Any]) -> dict[str, Any]:
    a, b = sqrt_decay(cfg["alpha"]), sqrt_decay(cfg["beta"])
    common = dict(lower_steps=cfg["lower_steps"], neumann_steps=cfg["neumann_steps"])
    return {METHODS[0]: aipod(a, b, **common),
            METHODS[1]: e_aipod(a, b, projection_interval=cfg["interval"],
                                lower_prob=quarter_decay(cfg["lower_prob_scale"]), **common)}


def _fed_validate(cfg: dict[str, Any]) -> None:
    if not 0 < cfg["eps_lo"] < cfg["eps_hi"]:
        raise RatelabError(f"eps_lo and eps_hi must satisfy 0 < eps_lo < eps_hi, got {cfg['eps_lo']} and "
                           f"{cfg['eps_hi']}")
    if cfg["n_eps"] < 3:
        raise RatelabError(f"n_eps must be >= 3, got {cfg['n_eps']}")
    _fed_problem(cfg)
    _fed_solvers(cfg)


def _fed_execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    run_kw = {k: v for k, v in run_kw.items() if k in ("chunks", "progress")}
    problem = _fed_problem(cfg)
    traces = [run(s, problem, key, steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"],
                  aggregate="mean", x64=cfg["x64"], **run_kw) for s in _fed_solvers(cfg).values()]
    names = ("grad_norm_sq", "max_violation", "y_gap", "upper_projections", "lower_projections", "dist_to_opt")
    metrics = {k: np.stack([t[k] for t in traces]) for k in names}
    timings = {k: sum(t.timings.get(k, 0.0) for t in traces) for k in ("compile_s", "run_s")}
    return trace_from_arrays(traces[0].steps, metrics, timings=timings)


def _fed_spp(cfg: dict[str, Any], i: int) -> int:
    return samples_per_step(lower_steps=cfg["lower_steps"], lower_batch=cfg["interval"] if i else 1,
                            neumann_steps=cfg["neumann_steps"])


def _fed_claims(cfg: dict[str, Any]) -> list[Claim]:
    eps = _eps(cfg)
    out = [Claim(id=f"sample-complexity-{'aipod' if i == 0 else 'e-aipod'}",
                 statement=f"federated: {_FED_METHODS[i]} reaches eps-stationarity with O~(eps^-2) samples",
                 metric="grad_norm_sq", kind="sample_complexity", expected=-2.0, relation="ge", tolerance=TOL,
                 transform="running_mean", eps=eps, index=(i,), samples_per_step=_fed_spp(cfg, i), source=SOURCE)
           for i in range(2)]
    out.append(Claim(id="consensus", statement="AiPOD's projected iterates satisfy both consensus constraints to "
                     "1e-6 (float64)", metric="max_violation", kind="value", expected=0.0, relation="le",
                     tolerance=1e-6, statistic="max", index=(0,),
                     source="Xiao et al. (2023): projection onto X and Y(x)"))
    return out


_FED_QUICK = {
    "seed": 0, "seeds": 16, "steps": 10_000, "log_every": 50, "x64": True, "problem_seed": 0,
    "clients": 4, "dim_x": 2, "dim_y": 2, "heterogeneity": 1.0, "samples_per_client": 20, "sigma": 0.5,
    "hess_sigma": 0.05, "alpha": 20.0, "beta": 1.0, "lower_steps": 1, "neumann_steps": 8, "interval": 4,
    "lower_prob_scale": 1.0, "n_eps": 6, "eps_hi": 0.012, "eps_lo": 0.004,
}
_FED_FULL = {**_FED_QUICK, "seeds": 64, "steps": 40_000, "log_every": 100, "eps_hi": 0.008, "eps_lo": 0.0022}

AIPOD_FEDERATED = register(Experiment(
    id="aipod-federated",
    paper=XIAO,
    figure="Federated bilevel application (federated representation learning), synthetic: consensus in both levels",
    title="Federated bilevel learning with heterogeneous clients: AiPOD and E-AiPOD (lazy averaging)",
    configs={"quick": dict(_FED_QUICK), "full": dict(_FED_FULL)},
    execute=_fed_execute,
    claims=_fed_claims,
    panels=tuple(Panel(metric="grad_norm_sq", ylabel=r"$\|P_X \nabla F(x_k)\|^2$", transform="running_mean",
                       index=(i,), samples_per_step=samples_per_step(lower_steps=1, lower_batch=4 if i else 1,
                                                                     neumann_steps=8),
                       xlabel="stochastic samples", label=m) for i, m in enumerate(_FED_METHODS))
    + (Panel(metric="upper_projections", ylabel="communication rounds (upper-level averagings)", index=(1,),
             label="E-AiPOD: rounds used"),),
    validate=_fed_validate,
    tags=("bilevel", "constrained", "federated"),
))
