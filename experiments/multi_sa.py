"""Shen & Chen (NeurIPS 2022): single-timescale SA with multiple coupled sequences.

* ``msa-linear3``: three coupled linear strongly monotone sequences, steps c/(k + k0) on all: every
  E||z_m - z_m*||^2 = O(1/k) (Theorem 1), checked against the exact second-moment recursion.
* ``msa-nonlinear``: two coupled nonlinear strongly monotone sequences, same steps and claim.
* ``msa-timescales``: two coupled linear sequences run on the same noise: single timescale (both steps
  Theta(1/k): both errors O(1/k)) and two timescales (fast step Theta(k^-a), a < 1: the fast sequence only
  reaches k^-a), the comparison the paper draws with two-timescale analyses.
* ``msa-nonconvex``: a stochastic bilevel problem with a nonconvex upper level as three sequences (x, y, w);
  constant steps Theta(1/sqrt K) for each horizon K: (1/K) sum_k E||grad F(x_k)||^2 = O(K^-1/2) (Theorem 2).

Negative controls run inside the same compiled sweep (common random numbers), as extra curves that the controls
judge: steps c/(k + k0)^(2/3) on every sequence (SA with steps a_k >> 1/k has error Theta(a_k), so O(1/k) must
fail), two-timescale steps for the fast sequence, single-timescale steps for the two-timescale claim, and steps
Theta(1/K) instead of Theta(1/sqrt K) for Theorem 2 (sum_k a_k = Theta(1) then: x barely moves).

Seeds. The quick configs use 1000 seeds (2000 for the three sequences of ``msa-linear3``) for the O(1/k) claims: at
200 seeds their 95 % intervals (half-width about 0.045 around the exact finite-window slope -0.995 of the recursion)
straddled the +-0.05 band and the harness asked for 250 to 530 seeds; at 1000, msa-linear3's rate_y2 still straddled
it ([-0.992, -0.950], about 1100 seeds asked), hence 2000 there.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.rates import running_mean
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, sweep, sweep_row, trace_from_arrays
from rl_theory.multi_sa import (
    asymptotic_constants,
    exact_block_second_moment,
    jacobian_at_root,
    make_bilevel_nonconvex,
    make_coupled_linear,
    make_coupled_nonlinear,
    multi_sa,
    timescale_steps,
)

SHEN_CHEN = Paper(
    key="shen2022stsa",
    authors="H. Shen and T. Chen",
    title="A Single-Timescale Analysis For Stochastic Approximation With Multiple Coupled Sequences",
    venue="NeurIPS 2022 (arXiv:2206.10414)",
    year=2022,
    url="https://arxiv.org/abs/2206.10414",
)
THM1 = "Shen & Chen (2022), Theorem 1: strongly monotone increments, Theta(1/k) steps, O(1/K) for every sequence"
THM2 = "Shen & Chen (2022), Theorem 2: nonconvex main sequence, Theta(1/sqrt K) steps, O(K^-1/2) stationarity"
TTSA = ("two-timescale SA with fast step Theta(k^-a): fast-sequence error Theta(k^-a) (the step-limited rate the "
        "paper's single-timescale analysis improves on; Konda & Tsitsiklis 2004)")


def _chung_check(problem: Any, scales: tuple[float, ...]) -> None:
    margin = float(np.linalg.eigvals(np.repeat(scales, problem.dims)[:, None] * jacobian_at_root(problem)).real.min())
    if margin <= 0.5:
        raise RatelabError(f"c must be large enough for the 1/k regime: min Re eig(c J) = {margin:.3g} must "
                           f"exceed 1/2")


SLOW_POWER = 2 / 3  # the step decay of the slow-steps controls: a_k = c / (k + k0)^(2/3)


def slow_steps(metric: str) -> Control:
    """The control that judges the same claim on the run with steps c/(k + k0)^(2/3) on every sequence."""
    return Control("slow-steps", "steps c/(k + k0)^(2/3) on every sequence instead of c/(k + k0): SA with steps "
                   "a_k >> 1/k has error Theta(a_k) (the noise floor a_k sigma^2 / 2 mu), so the error decays only "
                   "like k^(-2/3)", claim={"metric": metric})


def _rate_claims(cfg: dict[str, Any], names: tuple[str, ...], prefix: str = "", source: str = THM1,
                 controls: dict[str, Control] | None = None) -> list[Claim]:
    K = cfg["steps"]
    controls = controls or {}
    return [Claim(id=f"rate_{n}", statement=f"E||{n}_k - {n}*||^2 = O(1/k) with single-timescale steps c/(k + k0)",
                  metric=f"{prefix}sq_dist_{n}", expected=-1.0, tolerance=0.05, window=(K / 100, K), source=source,
                  controls=(controls.get(n, slow_steps(f"slow_sq_dist_{n}")),))
            for n in names]


def power_sweep(cfg: dict[str, Any], problem: Any, powers: dict[str, tuple[float, ...]], key: jax.Array,
                run_kw: dict[str, Any]) -> Trace:
    """One compiled sweep over step-decay settings: steps c/(k + k0)^powers[name][m] for sequence m; metrics of
    setting ``name`` are renamed ``<name>_<metric>`` (the empty name keeps the metric's own name). All settings
    share the seeds' noise (common random numbers)."""
    names = list(powers)
    table = np.asarray([powers[n] for n in names], dtype=float)
    c, k0, m = cfg["c"], cfg["k0"], table.shape[1]

    def make(i):
        return multi_sa(timescale_steps((c,) * m, sweep_row(table, i), k0))

    tr = sweep(make, np.arange(len(names), dtype=float), problem, key, steps=cfg["steps"], seeds=cfg["seeds"],
               log_every=cfg["log_every"], x64=cfg["x64"], chunks=run_kw.get("chunks", 1),
               progress=run_kw.get("progress"))
    metrics = {(f"{n}_{k}" if n else k): v[j] for j, n in enumerate(names) for k, v in tr.metrics.items()}
    return trace_from_arrays(tr.steps, metrics, timings=tr.timings)


def _panels(names: tuple[str, ...], reference, prefix: str = "", label: str = "") -> tuple[Panel, ...]:
    return tuple(Panel(metric=f"{prefix}sq_dist_{n}", ylabel=rf"$E\,\|{n}_k - {n}^*\|^2$",
                       reference=(lambda cfg, steps, i=i: reference(cfg, steps)[:, i]) if reference else None,
                       reference_label="exact second moment" if label == "" else label,
                       label=f"{prefix.rstrip('_') or 'single'}-timescale: {n}")
                 for i, n in enumerate(names))


# ------------------------------------------------------------------------------------------ linear, three sequences


def _linear3(cfg: dict[str, Any]):
    problem = make_coupled_linear(jax.random.key(cfg["problem_seed"]), dims=(cfg["dim"],) * 3,
                                  coupling=cfg["coupling"], sigma=cfg["sigma"])
    steps = timescale_steps((cfg["c"],) * 3, (1.0,) * 3, cfg["k0"])
    return problem, steps


@functools.lru_cache(maxsize=8)
def _exact_cached(builder, items: tuple, which: str, steps: int) -> np.ndarray:
    problem, sched = builder(dict(items))
    sched = sched[which] if isinstance(sched, dict) else sched
    return exact_block_second_moment(problem, sched, steps)


def _exact(builder, cfg: dict[str, Any], steps: np.ndarray, which: str = "") -> np.ndarray:
    """The exact per-sequence second moments at the logged steps (computed once per config)."""
    idx = np.asarray(steps).astype(int)
    return _exact_cached(builder, tuple(sorted(cfg.items())), which, int(idx[-1]))[idx - 1]


def _linear3_exact(cfg: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    return _exact(_linear3, cfg, steps)


def _linear3_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    """The claim's run (steps c/(k + k0)) and its control's (c/(k + k0)^(2/3)) in one sweep."""
    problem, _ = _linear3(cfg)
    return power_sweep(cfg, problem, {"": (1.0,) * 3, "slow": (SLOW_POWER,) * 3}, key, run_kw)


def _linear3_validate(cfg: dict[str, Any]) -> None:
    problem, _ = _linear3(cfg)
    _chung_check(problem, (cfg["c"],) * 3)


_LIN = {"seed": 0, "x64": False, "problem_seed": 0, "dim": 2, "coupling": 0.5, "sigma": 1.0, "c": 1.5, "k0": 10.0}
_NAMES3 = ("x", "y1", "y2")
MSA_LINEAR3 = register(Experiment(
    id="msa-linear3",
    paper=SHEN_CHEN,
    figure="Theorem 1, three coupled linear sequences",
    title="Three coupled linear strongly monotone sequences, steps c/(k+k0) on all: E||z_m - z_m*||^2 = O(1/k) each",
    configs={"quick": {**_LIN, "seeds": 2000, "steps": 20_000, "log_every": 100},
             "full": {**_LIN, "dim": 3, "seeds": 1000, "steps": 200_000, "log_every": 200}},
    execute=_linear3_run,
    claims=lambda cfg: _rate_claims(cfg, _NAMES3),
    panels=_panels(_NAMES3, _linear3_exact),
    validate=_linear3_validate,
    tags=("stochastic-approximation", "multi-sequence"),
))


# ------------------------------------------------------------------------------------------------------- nonlinear


def _nonlinear(cfg: dict[str, Any]):
    problem = make_coupled_nonlinear(jax.random.key(cfg["problem_seed"]), dim=cfg["dim"], coupling=cfg["coupling"],
                                     sigma=cfg["sigma"])
    return problem, timescale_steps((cfg["c"],) * 2, (1.0,) * 2, cfg["k0"])


def _nonlinear_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    """The claim's run (steps c/(k + k0)) and its control's (c/(k + k0)^(2/3)) in one sweep."""
    problem, _ = _nonlinear(cfg)
    return power_sweep(cfg, problem, {"": (1.0,) * 2, "slow": (SLOW_POWER,) * 2}, key, run_kw)


def _nonlinear_reference(cfg: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    problem, _ = _nonlinear(cfg)
    return asymptotic_constants(problem, (cfg["c"],) * 2)[None, :] / np.asarray(steps, dtype=float)[:, None]


def _nonlinear_validate(cfg: dict[str, Any]) -> None:
    problem, _ = _nonlinear(cfg)
    _chung_check(problem, (cfg["c"],) * 2)


_NL = {"seed": 0, "x64": False, "problem_seed": 0, "dim": 3, "coupling": 0.4, "sigma": 1.0, "c": 1.5, "k0": 10.0}
MSA_NONLINEAR = register(Experiment(
    id="msa-nonlinear",
    paper=SHEN_CHEN,
    figure="Theorem 1, two coupled nonlinear sequences",
    title="Two coupled nonlinear strongly monotone sequences (sin / tanh couplings), steps c/(k+k0): O(1/k) each",
    configs={"quick": {**_NL, "seeds": 1000, "steps": 20_000, "log_every": 100},
             "full": {**_NL, "dim": 5, "seeds": 1000, "steps": 200_000, "log_every": 200}},
    execute=_nonlinear_run,
    claims=lambda cfg: _rate_claims(cfg, ("x", "y")),
    panels=_panels(("x", "y"), _nonlinear_reference, label="C/k, C from the linearisation at z*"),
    validate=_nonlinear_validate,
    tags=("stochastic-approximation", "multi-sequence"),
))


# ----------------------------------------------------------------------------------- single vs two timescales


def _two(cfg: dict[str, Any]):
    problem = make_coupled_linear(jax.random.key(cfg["problem_seed"]), dims=(cfg["dim"],) * 2,
                                  coupling=cfg["coupling"], sigma=cfg["sigma"])
    single = timescale_steps((cfg["c"],) * 2, (1.0, 1.0), cfg["k0"])
    two = timescale_steps((cfg["c"],) * 2, (1.0, cfg["fast_power"]), cfg["k0"])
    return problem, {"single": single, "two": two}


def _two_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    """One compiled sweep, same noise for all: single timescale (1, 1), two timescales (1, fast_power) and the
    slow-steps control (2/3, 2/3)."""
    problem, _ = _two(cfg)
    return power_sweep(cfg, problem, {"single": (1.0, 1.0), "two": (1.0, cfg["fast_power"]),
                                      "slow": (SLOW_POWER,) * 2}, key, run_kw)


def _two_exact(cfg: dict[str, Any], steps: np.ndarray, which: str) -> np.ndarray:
    return _exact(_two, cfg, steps, which)


def _two_validate(cfg: dict[str, Any]) -> None:
    if not 0.5 < cfg["fast_power"] < 1:
        raise RatelabError(f"fast_power must lie in (0.5, 1), got {cfg['fast_power']}")
    problem, _ = _two(cfg)
    _chung_check(problem, (cfg["c"],) * 2)


def _two_claims(cfg: dict[str, Any]) -> list[Claim]:
    K, a = cfg["steps"], cfg["fast_power"]
    two = Control("two-timescale", f"two timescales: y's step c/(k + k0)^{a:g} (x keeps c/(k + k0)): the fast "
                  f"sequence's error is Theta(its step), k^-{a:g}, so O(1/k) must fail for y",
                  claim={"metric": "two_sq_dist_y1"})
    single = Control("single-timescale", "y's step c/(k + k0) instead of c/(k + k0)^a (the single-timescale run): "
                     "y's error is then O(1/k), not k^-a", claim={"metric": "single_sq_dist_y1"})
    return [*_rate_claims(cfg, ("x", "y1"), prefix="single_", controls={"y1": two}),
            Claim(id="two_timescale_fast", statement=f"two timescales (fast step c/(k+k0)^{a:g}): the fast sequence's "
                  f"E||y_k - y*||^2 decays only like k^-{a:g}", metric="two_sq_dist_y1", expected=-a,
                  tolerance=0.05, window=(K / 100, K), source=TTSA, controls=(single,))]


_TT = {**_LIN, "dim": 3, "fast_power": 2 / 3}
MSA_TIMESCALES = register(Experiment(
    id="msa-timescales",
    paper=SHEN_CHEN,
    figure="single- vs two-timescale steps (Sec. 1 comparison), two coupled linear sequences",
    title="Two coupled linear sequences: single timescale (both 1/k) gives O(1/k) on both; two timescales "
          "(fast k^-2/3) leave the fast sequence at k^-2/3",
    configs={"quick": {**_TT, "seeds": 1000, "steps": 20_000, "log_every": 100},
             "full": {**_TT, "seeds": 1000, "steps": 200_000, "log_every": 200}},
    execute=_two_run,
    claims=_two_claims,
    panels=(*_panels(("x", "y1"), lambda cfg, s: _two_exact(cfg, s, "single"), prefix="single_"),
            *_panels(("x", "y1"), lambda cfg, s: _two_exact(cfg, s, "two"), prefix="two_")),
    validate=_two_validate,
    tags=("stochastic-approximation", "multi-sequence"),
))


# -------------------------------------------------------------------------------------- nonconvex bilevel, horizons


def horizons(cfg: dict[str, Any]) -> np.ndarray:
    """K = log_every * 2^j up to ``steps`` (each K is a multiple of log_every, so its running mean is exact)."""
    n = int(np.floor(np.log2(cfg["steps"] / cfg["log_every"]))) + 1
    return cfg["log_every"] * 2 ** np.arange(n)


def _nonconvex(cfg: dict[str, Any]):
    return make_bilevel_nonconvex(jax.random.key(cfg["problem_seed"]), dim=cfg["dim"], rho=cfg["rho"],
                                  sigma=cfg["sigma"])


CONTROL_STEP_POWER = 1.0  # the control's steps (c_x, c, c) / K: sum_k a_k = Theta(1) over the horizon


def _nonconvex_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    """One vmapped sweep over horizons K and two step rules: constant steps (c_x, c, c)/sqrt(K) (the claim) and
    (c_x, c, c)/K (its control), K_max steps each; the average over the first K steps of run K is the exact running
    mean of the block means at K (``aggregate="mean"``). The control's metrics are ``small_<metric>``."""
    problem = _nonconvex(cfg)
    Ks = horizons(cfg)
    cx, c = cfg["c_x"], cfg["c"]
    table = np.array([(K, p) for p in (0.5, CONTROL_STEP_POWER) for K in Ks], dtype=float)

    def make(i):
        K, p = sweep_row(table, i)
        scale = K ** -p
        return multi_sa((cx * scale, c * scale, c * scale))

    tr = sweep(make, np.arange(len(table), dtype=float), problem, key, steps=int(Ks[-1]), seeds=cfg["seeds"],
               log_every=cfg["log_every"], aggregate="mean", x64=cfg["x64"], chunks=run_kw.get("chunks", 1),
               progress=run_kw.get("progress"))
    idx = Ks // cfg["log_every"] - 1
    out = {}
    for name in ("grad_norm_sq", "sq_dist_y", "sq_dist_w"):
        rm = running_mean(tr[name])  # [2 nK, seeds, n_log]
        for prefix, off in (("", 0), ("small_", Ks.size)):
            out[f"{prefix}avg_{name}"] = np.stack([rm[off + j, :, idx[j]] for j in range(Ks.size)], axis=-1)
    return trace_from_arrays(Ks, out, timings=tr.timings)


def _nonconvex_validate(cfg: dict[str, Any]) -> None:
    if horizons(cfg).size < 3:
        raise RatelabError(f"steps must be at least 4 * log_every for three horizons, got steps={cfg['steps']}, "
                           f"log_every={cfg['log_every']}")
    _nonconvex(cfg)


_NC = {"seed": 0, "x64": False, "problem_seed": 0, "dim": 4, "rho": 0.1, "sigma": 0.2, "c_x": 0.5, "c": 1.0}
MSA_NONCONVEX = register(Experiment(
    id="msa-nonconvex",
    paper=SHEN_CHEN,
    figure="Theorem 2, bilevel problem with a nonconvex upper level",
    title="Bilevel SA (x, y, w) with nonconvex F, constant steps Theta(1/sqrt K): "
          "(1/K) sum E||grad F(x_k)||^2 = O(K^-1/2) against the horizon K",
    configs={"quick": {**_NC, "seeds": 50, "steps": 8000, "log_every": 250},
             "full": {**_NC, "seeds": 200, "steps": 64_000, "log_every": 250}},
    execute=_nonconvex_run,
    claims=lambda cfg: [Claim(
        id="stationarity", statement="(1/K) sum_k E||grad F(x_k)||^2 = O(K^-1/2) with steps Theta(1/sqrt K)",
        metric="avg_grad_norm_sq", expected=-0.5, tolerance=0.05, relation="le", source=THM2,
        controls=(Control("steps-over-K", "steps (c_x, c, c)/K instead of /sqrt(K): sum_k alpha_k = c_x for every "
                          "horizon, so the descent term (F(x_0) - F*)/(alpha K) of Theorem 2 stays Theta(1) and the "
                          "average gradient norm does not decay", claim={"metric": "small_avg_grad_norm_sq"}),))],
    panels=(Panel(metric="avg_grad_norm_sq", ylabel=r"$\frac{1}{K}\sum_k E\|\nabla F(x_k)\|^2$", xlabel="horizon K"),
            Panel(metric="avg_sq_dist_y", ylabel=r"$\frac{1}{K}\sum_k E\|y_k - y^*(x_k)\|^2$", xlabel="horizon K"),
            Panel(metric="avg_sq_dist_w", ylabel=r"$\frac{1}{K}\sum_k E\|w_k - w^*(x_k)\|^2$", xlabel="horizon K")),
    validate=_nonconvex_validate,
    notes="rho = 0.1 < 1/4 keeps F nonconvex (the log(1 + t^2) loss has curvature down to -1/4 and ||H^-1 B|| = 1).",
    tags=("stochastic-approximation", "multi-sequence", "bilevel"),
))
