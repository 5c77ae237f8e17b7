"""AiPOD and its projection-efficient variants (Xiao, Shen, Yin, Chen; AISTATS 2023; arXiv:2211.07096).

The paper's claims (from the abstracts; the O~ bounds are upper bounds, so each is checked with relation "ge" on the
fitted exponent q of N(eps) ~ eps^q, i.e. "no steeper than claimed", tolerance 0.25 for the logarithmic factors):

* AiPOD reaches an eps-stationary point, (1/K) sum_k ||P_X ∇F(x_k)||^2 <= eps, with O~(eps^-2) samples.
* E-AiPOD with an O(T) lower-level batch: O~(eps^-2 / T) upper-level, O~(eps^-1.5 / T^(3/4)) lower-level projections.
* E-AiPOD with an O(1) batch: O~(eps^-1.5) upper-level and lower-level projections.
* The iterates stay feasible (both levels' equality constraints) to 1e-6 in float64 (an invariant of the projections).
* The federated application (consensus constraints in both levels, heterogeneous clients): AiPOD and E-AiPOD reach
  eps-stationarity with O~(eps^-2) samples; communication rounds are the projections.

Two-sided claims derived here (what is observed on these instances, and why the bounds are tight on them). The
instances are strongly convex quadratics with additive Gaussian oracle noise, and the steps are alpha/sqrt(k+1).
The dynamics are linear, every noise is zero-mean and independent of the iterate, so E x_k follows the noise-free
recursion (its transient decays like exp(-2 mu alpha sqrt k), mu the smallest eigenvalue of the expected oracle's
Jacobian on null(B), :func:`bilevel.aipod.mean_oracle_curvature`) and the covariance obeys
e_{k+1} = (1 - 2 mu alpha_k) e_k + alpha_k^2 sigma^2, whose solution is e_k = (alpha sigma^2 / 2 mu) k^(-1/2)
(1 + 1/(4 mu alpha sqrt k) + ...). Hence E||P_X ∇F(x_k)||^2 = Theta(k^(-1/2)) for every variant, the local slope
being -1/2 - 1/(8 mu alpha sqrt k): over the window k in [K/20, K] the correction is below 0.02 (mu alpha = 0.31 on
the quadratic, 0.51 on the federated instance). With the exact projection counts (k for AiPOD, k/T for the T-lazy
upper level, floor(k^(3/4)) for the O(1)-batch upper level, S sum_j p_j ~ (4/3) S k^(3/4) for the random lower
level) the stationarity decays like n^(-1/2), n^(-2/3), n^(-2/3) in the number n of projections: exactly the
exponents that make the abstract's eps^-2, eps^-1.5 and eps^-1.5 tight. The running-mean complexities of the
paper's claims approach these exponents only slowly (the transient's sum S_0 adds S_0 / K to the running mean),
which is why they measure about -1.8 against -2: a pre-asymptotic effect, not a faster method.

Negative controls (each a change the theory says breaks the claims): ``step_power = 0`` (no decay of the step:
constant-step SGD settles at a noise floor Theta(alpha sigma^2) far above every eps, and the last iterate stops
decaying); ``constraint_term = 0`` (the oracle without the -H' A^+' ∇_y f term, as in the authors' synthetic
script: its mean vanishes at x~ != x*, where ||P_X ∇F(x~)||^2 is a floor computed in closed form by
:func:`bilevel.aipod.mean_oracle_limit`); E-AiPOD's lazily unprojected iterates for the feasibility claims (only a
projection restores feasibility, and the noise has components normal to the constraint sets).

All three variants of one problem run as one compiled program (a sweep over a table of traced variant
parameters, :func:`bilevel.aipod.aipod_variant`), and so do the controls (other rows of the same table): the three
quadratic experiments and their controls share one compilation. The projection experiments re-express each run's
running-mean stationarity against its cumulative number of projections (upper: deterministic counts; lower: the
expected count S sum_k p_k), interpolated in log-log onto a common grid of projection counts.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.aipod import (
    aipod_variant,
    expected_lower_projections,
    mean_oracle_limit,
    quarter_decay,
    samples_per_step,
    stationarity,
    upper_projection_counts,
)
from bilevel.eq_problems import make_federated_bilevel, make_quadratic_bilevel
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.rates import running_mean
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, sweep, trace_from_arrays
from ratelab.schedules import power_decay
from ratelab.validate import check_in_range, is_traced

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
DERIVED = ("derived here (module docstring): linear dynamics with independent zero-mean noise and steps "
           "alpha/sqrt(k+1) give E||P_X grad F(x_k)||^2 = Theta(k^-1/2) on a strongly convex quadratic")
METHODS = ("AiPOD", "E-AiPOD, O(T) batch", "E-AiPOD, O(1) batch")
TOL = 0.25  # log factors of the O~ bounds; chosen before any run
RATE_TOL = 0.05  # the derived exponents are exact; the next-order correction is below 0.02 over the window

_PROBLEM_KEYS = ("problem_seed", "dim_x", "dim_y", "upper_constraints", "lower_constraints", "lower_cond",
                 "upper_cond", "coupling", "sigma", "hess_sigma", "x0_scale")
# Step-decay powers and constraint-term weights every variant table holds, so that the main runs and the controls
# (other rows of the same table) share one compiled program.
_STEP_POWERS = (0.5, 0.0)
_CONSTRAINT_TERMS = (1.0, 0.0)


def _problem(cfg: dict[str, Any]):
    # Built in float64 when the run is: the projectors must be exact to the run's precision.
    with jax.enable_x64(bool(cfg["x64"])):
        return make_quadratic_bilevel(jax.random.key(cfg["problem_seed"]),
                                      **{k: cfg[k] for k in _PROBLEM_KEYS[1:]})


def _method_rows(cfg: dict[str, Any], n_methods: int) -> list[tuple[float, ...]]:
    """(projection interval, rate, power, lower-prob scale, lower-prob decay power, lower batch) of each method."""
    T, s = cfg["interval"], cfg["lower_prob_scale"]
    rate = cfg.get("projection_rate", 1.0)
    rows = [(1, 1.0, 1.0, 1.0, 0.0, 1), (T, 1.0, 1.0, s, 0.25, T), (1, rate, 0.75, s, 0.25, 1)]
    return rows[:n_methods]


def _table(cfg: dict[str, Any], n_methods: int) -> tuple[tuple[float, ...], ...]:
    """Every (method, step power, constraint weight) row: the method's parameters, then the two schedule ones."""
    powers = sorted({*_STEP_POWERS, float(cfg["step_power"])})
    weights = sorted({*_CONSTRAINT_TERMS, float(cfg["constraint_term"])})
    return tuple((*m, p, w) for m, p, w in itertools.product(_method_rows(cfg, n_methods), powers, weights))


def _rows(cfg: dict[str, Any], n_methods: int) -> list[int]:
    """The table rows of this config's methods (its step power and constraint weight)."""
    table = _table(cfg, n_methods)
    want = (float(cfg["step_power"]), float(cfg["constraint_term"]))
    return [i for i, row in enumerate(table) if row[-2:] == want]


_MAKERS: dict[tuple, Any] = {}


def _maker(cfg: dict[str, Any], n_methods: int):
    """``make(row index) -> Solver`` over the variant table, one object per static setting (so the compiled program
    is reused across the configs that differ only in their rows: the main run and its controls)."""
    table = _table(cfg, n_methods)
    ident = (table, cfg["alpha"], cfg["beta"], cfg["lower_steps"], cfg["neumann_steps"])
    if ident in _MAKERS:
        return _MAKERS[ident]
    arr = np.asarray(table, dtype=float)

    def make(v: Any):
        if is_traced(v):
            row = jnp.asarray(arr)[jnp.asarray(v).astype(jnp.int32)]
            interval, rate, power, ps, pp, batch, sp, w = (row[i] for i in range(8))
        else:
            interval, rate, power, ps, pp, batch, sp, w = table[int(v)]
            interval, batch = int(interval), int(batch)
        return aipod_variant(power_decay(cfg["alpha"], 1.0, sp), power_decay(cfg["beta"], 1.0, sp),
                             projection_interval=interval, projection_rate=rate, projection_power=power,
                             lower_prob=power_decay(ps, 1.0, pp), lower_batch=batch, lower_steps=cfg["lower_steps"],
                             neumann_steps=cfg["neumann_steps"], constraint_term=w)

    _MAKERS[ident] = make
    return make


_RUNS: dict[tuple, Trace] = {}


def _runs(cfg: dict[str, Any], key: jax.Array, problem: Any, n_methods: int, **run_kw: Any) -> Trace:
    """The methods' runs of one config as one sweep (metrics ``[method, seeds, n]``), computed once per process
    (the three quadratic experiments share them)."""
    run_kw = {k: v for k, v in run_kw.items() if k in ("chunks", "progress")}
    ident = (n_methods, tuple(sorted((k, v) for k, v in cfg.items() if not k.startswith(("eps", "proj_eps",
                                                                                          "low_eps")))),
             str(jax.random.key_data(key)))
    if ident not in _RUNS:
        _RUNS[ident] = sweep(_maker(cfg, n_methods), _rows(cfg, n_methods), problem, key, steps=cfg["steps"],
                             seeds=cfg["seeds"], log_every=cfg["log_every"], aggregate="mean", x64=cfg["x64"],
                             **run_kw)
    return _RUNS[ident]


def _samples(cfg: dict[str, Any], i: int) -> int:
    return samples_per_step(lower_steps=cfg["lower_steps"], lower_batch=cfg["interval"] if i == 1 else 1,
                            neumann_steps=cfg["neumann_steps"])


def _eps(cfg: dict[str, Any], prefix: str = "") -> tuple[float, ...]:
    return tuple(float(e) for e in np.geomspace(cfg[prefix + "eps_hi"], cfg[prefix + "eps_lo"], cfg["n_eps"]))


def _check_eps(cfg: dict[str, Any], prefixes: tuple[str, ...]) -> None:
    for prefix in prefixes:
        if prefix + "eps_hi" in cfg and not 0 < cfg[prefix + "eps_lo"] < cfg[prefix + "eps_hi"]:
            raise RatelabError(f"{prefix}eps_lo and {prefix}eps_hi must satisfy 0 < eps_lo < eps_hi, got "
                               f"{cfg[prefix + 'eps_lo']} and {cfg[prefix + 'eps_hi']}")
    if cfg["n_eps"] < 3:
        raise RatelabError(f"n_eps must be >= 3, got {cfg['n_eps']}")
    check_in_range("step_power", cfg["step_power"], 0.0, 1.0, closed="right")
    check_in_range("constraint_term", cfg["constraint_term"], 0.0, 1.0)


def _validate(cfg: dict[str, Any]) -> None:
    _check_eps(cfg, ("", "proj_", "low_"))
    check_in_range("projection_rate", cfg["projection_rate"], 0.0, 1.0, closed="right")
    _problem(cfg)
    for i in _rows(cfg, 3):
        _maker(cfg, 3)(i)


# --- controls --------------------------------------------------------------------------------------------------
def _no_decay(cfg: dict[str, Any]) -> Control:
    return Control("no-decay", f"constant steps alpha = {cfg['alpha']:g}, beta = {cfg['beta']:g} (no decay): "
                   "constant-step SGD settles at a noise floor Theta(alpha sigma^2) far above every eps, so the "
                   "targets are not reached and the stationarity stops decaying", overrides={"step_power": 0.0})


def _biased_oracle(cfg: dict[str, Any]) -> Control:
    with jax.enable_x64(True):
        problem = _problem({**cfg, "x64": True})
        x_t = mean_oracle_limit(problem, neumann_steps=cfg["neumann_steps"], constraint_term=0.0)
        floor = float(stationarity(problem, jnp.asarray(x_t)))
    return Control("biased-oracle", "the implicit gradient without its -H' A^+' grad_y f term (as in the authors' "
                   f"synthetic script): the mean oracle vanishes at x~ != x*, where ||P_X grad F(x~)||^2 = "
                   f"{floor:.4g} (closed form) is a floor the stationarity cannot go below",
                   overrides={"constraint_term": 0.0})


def _lazy(index: int, what: str) -> Control:
    return Control("lazy-iterates", f"{what}'s iterates between its lazy projections (unprojected SGD steps; the same "
                   "run): the oracle noise has components normal to the constraint sets, so only projected iterates "
                   "are feasible", claim={"metric": "max_violation_any", "index": (index,)})


# --- 1. AiPOD on the quadratic: sample complexity, the exact rate of each variant, feasibility -------------------
def _exec_quadratic(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    return _runs(cfg, key, _problem(cfg), 3, **run_kw)


def _rate_claims(cfg: dict[str, Any], names: tuple[str, ...], controls: tuple[Control, ...]) -> list[Claim]:
    K = cfg["steps"]
    return [Claim(id=f"rate-{name}", statement=f"{METHODS[i]}: E||P_X grad F(x_k)||^2 = Theta(k^-1/2) on this "
                  "instance (derived here: alpha/sqrt(k+1) steps on a strongly convex quadratic with oracle noise)",
                  metric="grad_norm_sq", expected=-0.5, tolerance=RATE_TOL, window=(K / 20, K), index=(i,),
                  source=DERIVED, controls=controls) for i, name in enumerate(names)]


def _claims_quadratic(cfg: dict[str, Any]) -> list[Claim]:
    no_decay, biased = _no_decay(cfg), _biased_oracle(cfg)
    return [
        Claim(id="sample-complexity", statement="AiPOD reaches (1/K) sum ||P_X grad F(x_k)||^2 <= eps with "
              "O~(eps^-2) samples", metric="grad_norm_sq", kind="sample_complexity", expected=-2.0, relation="ge",
              tolerance=TOL, transform="running_mean", eps=_eps(cfg), samples_per_step=_samples(cfg, 0), index=(0,),
              source=SOURCE, controls=(biased, no_decay)),
        *_rate_claims(cfg, ("aipod", "e-aipod-tbatch", "e-aipod-batch1"), (biased, no_decay)),
        Claim(id="feasibility", statement="every projected iterate satisfies B x = e and A y + H x = c to 1e-6 "
              "(float64)", metric="max_violation", kind="value", expected=0.0, relation="le", tolerance=1e-6,
              statistic="max", index=(0,),
              source="Xiao et al. (2023), Algorithm 1: both updates are projections onto the constraint sets",
              controls=(_lazy(1, METHODS[1]),)),
    ]


def _panels_quadratic(spp: int) -> tuple[Panel, ...]:
    return (
        Panel(metric="grad_norm_sq", ylabel=r"$\|P_X \nabla F(x_k)\|^2$", transform="running_mean", index=(0,),
              samples_per_step=spp, xlabel="stochastic samples", label="AiPOD: stationarity vs samples"),
        *(Panel(metric="grad_norm_sq", ylabel=r"$\|P_X \nabla F(x_k)\|^2$ (last iterate)", index=(i,),
                label=f"{m}: last iterate") for i, m in enumerate(METHODS)),
        Panel(metric="y_gap", ylabel=r"$\|y_{k+1} - y^*(x_k)\|^2$", index=(0,), label="lower-level tracking"),
        Panel(metric="max_violation", ylabel="max constraint violation (running max)", index=(0,),
              label="feasibility (float64)"),
    )


_QUICK = {
    "seed": 0, "seeds": 64, "steps": 10_000, "log_every": 50, "x64": True, "problem_seed": 0,
    "dim_x": 8, "dim_y": 8, "upper_constraints": 2, "lower_constraints": 2, "lower_cond": 2.0, "upper_cond": 2.0,
    "coupling": 0.5, "sigma": 1.0, "hess_sigma": 0.1, "x0_scale": 3.0,
    "alpha": 0.5, "beta": 1.0, "step_power": 0.5, "constraint_term": 1.0, "lower_steps": 1, "neumann_steps": 8,
    "interval": 4, "lower_prob_scale": 1.0, "projection_rate": 1.0,
    "n_eps": 6, "eps_hi": 0.2, "eps_lo": 0.07, "proj_eps_hi": 0.3, "proj_eps_lo": 0.11,
    "low_eps_hi": 0.2, "low_eps_lo": 0.07,
}
# Full: the same problem family, 4x the horizon (eps targets scaled with the O(1/sqrt(K)) level) and 128 seeds: the
# cold full run of a7d264f at 64 seeds left upper-projections-batch1-rate INCONCLUSIVE, -0.637 [-0.660, -0.616]
# against -2/3 +- 0.05, "about 73 seeds would decide"; the seeds were raised to decide it, the band left as it was.
# At 128 seeds: -0.649 [-0.665, -0.633] PASS (every other full claim of the three experiments still PASSes, 107 s).
# The authors' synthetic script (github.com/hanshen95/AiPOD, toy example: dim 100, 90 lower and 80 upper
# constraints, S = 5, T = 2, sigma = 0.1) uses a nonconvex upper objective without a closed form; it is not
# reproduced here.
_FULL = {
    **_QUICK, "seeds": 128, "steps": 40_000, "log_every": 100, "eps_hi": 0.15, "eps_lo": 0.035,
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


def _counts(cfg: dict[str, Any], i: int, level: str, steps: np.ndarray) -> np.ndarray:
    S = cfg["lower_steps"]
    if level == "upper":
        if i == 0:
            return steps.astype(float)
        if i == 1:
            return upper_projection_counts(steps, interval=cfg["interval"])
        return upper_projection_counts(steps, rate=cfg["projection_rate"], power=0.75)
    if i == 0:
        return S * steps.astype(float)
    return expected_lower_projections(steps, quarter_decay(cfg["lower_prob_scale"]), S)


def _exec_projections(level: str):
    def execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
        tr = _runs(cfg, key, _problem(cfg), 3, **run_kw)
        xs = [_counts(cfg, i, level, tr.steps) for i in range(3)]
        lo = max(x[x > 0].min() for x in xs)
        hi = min(x.max() for x in xs)
        grid = np.unique(np.round(np.geomspace(lo, hi, 200)))
        out = {}
        for name, curves in (("grad_norm_sq_avg", running_mean(tr["grad_norm_sq"])), ("grad_norm_sq",
                                                                                       tr["grad_norm_sq"])):
            out[name] = np.stack([_loglog_interp(grid, x[x > 0], c[:, x > 0]) for x, c in zip(xs, curves,
                                                                                             strict=True)])
        return trace_from_arrays(grid, out, timings=tr.timings)

    return execute


def _claims_projections(level: str):
    def claims(cfg: dict[str, Any]) -> list[Claim]:
        prefix = "proj_" if level == "upper" else "low_"
        eps, K, control = _eps(cfg, prefix), cfg["steps"], (_no_decay(cfg),)
        # the derived exponent in n: -1/2 / (d log n / d log k) with n the projection count (None: n = k/T, whose
        # exponent -1/2 is the iteration one, aipod-quadratic's rate-e-aipod-tbatch)
        if level == "upper":
            spec = [(1, -2.0, None, "O~(eps^-2 / T) upper-level projections (O(T) lower-level batch)", "k/T"),
                    (2, -1.5, -2 / 3, "O~(eps^-1.5) upper-level projections (O(1) batch)", "floor(k^(3/4))")]
        else:
            spec = [(1, -1.5, -2 / 3, "O~(eps^-1.5 / T^(3/4)) lower-level projections (O(T) lower-level batch)",
                     "S sum_j p_j ~ (4/3) S k^(3/4)"),
                    (2, -1.5, -2 / 3, "O~(eps^-1.5) lower-level projections (O(1) batch)",
                     "S sum_j p_j ~ (4/3) S k^(3/4)")]
        out = []
        for i, q, rate, text, count in spec:
            name = f"{level}-projections-{'tbatch' if i == 1 else 'batch1'}"
            out.append(Claim(id=name, statement=f"{METHODS[i]} reaches eps-stationarity with {text}",
                             metric="grad_norm_sq_avg", kind="sample_complexity", expected=q, relation="ge",
                             tolerance=TOL, eps=eps, index=(i,), source=SOURCE, controls=control))
            if rate is None:  # n = k/T: the exponent is the one in iterations, claimed by aipod-quadratic
                continue
            window = tuple(float(v) for v in _counts(cfg, i, level, np.array([K // 20, K])))
            out.append(Claim(id=f"{name}-rate", statement=f"{METHODS[i]}: E||P_X grad F||^2 ~ n^({rate:.3g}) in the "
                             f"number n = {count} of {level}-level projections, which makes the eps^{q:g} bound "
                             "tight here (derived here: Theta(k^-1/2) in iterations)", metric="grad_norm_sq",
                             expected=rate, tolerance=RATE_TOL, window=window, index=(i,), source=DERIVED,
                             controls=control))
        return out

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


def _fed_validate(cfg: dict[str, Any]) -> None:
    _check_eps(cfg, ("",))
    _fed_problem(cfg)
    for i in _rows(cfg, 2):
        _maker(cfg, 2)(i)


def _fed_execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    return _runs(cfg, key, _fed_problem(cfg), 2, **run_kw)


def _fed_claims(cfg: dict[str, Any]) -> list[Claim]:
    eps, control = _eps(cfg), (_no_decay(cfg),)
    out = [Claim(id=f"sample-complexity-{'aipod' if i == 0 else 'e-aipod'}",
                 statement=f"federated: {_FED_METHODS[i]} reaches eps-stationarity with O~(eps^-2) samples",
                 metric="grad_norm_sq", kind="sample_complexity", expected=-2.0, relation="ge", tolerance=TOL,
                 transform="running_mean", eps=eps, index=(i,), samples_per_step=_samples(cfg, i), source=SOURCE,
                 controls=control)
           for i in range(2)]
    out += _rate_claims(cfg, ("aipod", "e-aipod"), control)
    out.append(Claim(id="consensus", statement="AiPOD's projected iterates satisfy both consensus constraints to "
                     "1e-6 (float64)", metric="max_violation", kind="value", expected=0.0, relation="le",
                     tolerance=1e-6, statistic="max", index=(0,),
                     source="Xiao et al. (2023): projection onto X and Y(x)", controls=(_lazy(1, METHODS[1]),)))
    return out


_FED_QUICK = {
    "seed": 0, "seeds": 64, "steps": 10_000, "log_every": 50, "x64": True, "problem_seed": 0,
    "clients": 4, "dim_x": 2, "dim_y": 2, "heterogeneity": 1.0, "samples_per_client": 20, "sigma": 0.5,
    "hess_sigma": 0.05, "alpha": 20.0, "beta": 1.0, "step_power": 0.5, "constraint_term": 1.0, "lower_steps": 1,
    "neumann_steps": 8, "interval": 4, "lower_prob_scale": 1.0, "n_eps": 6, "eps_hi": 0.012, "eps_lo": 0.004,
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

