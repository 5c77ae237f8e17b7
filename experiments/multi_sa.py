"""Shen & Chen (NeurIPS 2022): single-timescale SA with multiple coupled sequences.

* ``msa-linear3``: three coupled linear strongly monotone sequences, steps c/(k + k0) on all: every
  E||z_m - z_m*||^2 = O(1/k) (Theorem 1), checked against the exact second-moment recursion.
* ``msa-nonlinear``: two coupled nonlinear strongly monotone sequences, same steps and claim.
* ``msa-timescales``: two coupled linear sequences run twice on the same noise: single timescale (both steps
  Theta(1/k): both errors O(1/k)) and two timescales (fast step Theta(k^-a), a < 1: the fast sequence only
  reaches k^-a), the comparison the paper draws with two-timescale analyses.
* ``msa-nonconvex``: a stochastic bilevel problem with a nonconvex upper level as three sequences (x, y, w);
  constant steps Theta(1/sqrt K) for each horizon K: (1/K) sum_k E||grad F(x_k)||^2 = O(K^-1/2) (Theorem 2).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.claims import Claim
from ratelab.errors import RatelabError
from ratelab.rates import running_mean
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, run, sweep, trace_from_arrays
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


def _rate_claims(cfg: dict[str, Any], names: tuple[str, ...], prefix: str = "", source: str = THM1) -> list[Claim]:
    K = cfg["steps"]
    return [Claim(id=f"rate_{n}", statement=f"E||{n}_k - {n}*||^2 = O(1/k) with single-timescale steps c/(k + k0)",
                  metric=f"{prefix}sq_dist_{n}", expected=-1.0, tolerance=0.05, window=(K / 100, K), source=source)
            for n in names]


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
    problem, sched = _linear3(cfg)
    return run(multi_sa(sched), problem, key, steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"],
               x64=cfg["x64"], **run_kw)


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
    configs={"quick": {**_LIN, "seeds": 200, "steps": 20_000, "log_every": 100},
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
    problem, sched = _nonlinear(cfg)
    return run(multi_sa(sched), problem, key, steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"],
               x64=cfg["x64"], **run_kw)


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
    configs={"quick": {**_NL, "seeds": 200, "steps": 20_000, "log_every": 100},
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
    """One compiled run for both: a sweep over the fast step's power p in (1, fast_power), same noise for both."""
    problem, _ = _two(cfg)
    c, k0 = cfg["c"], cfg["k0"]
    tr = sweep(lambda p: multi_sa(timescale_steps((c, c), (1.0, p), k0)), [1.0, cfg["fast_power"]], problem, key,
               steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"], x64=cfg["x64"],
               chunks=run_kw.get("chunks", 1), progress=run_kw.get("progress"))
    metrics = {f"{name}_{k}": v[j] for j, name in enumerate(("single", "two")) for k, v in tr.metrics.items()}
    return trace_from_arrays(tr.steps, metrics, timings=tr.timings)


def _two_exact(cfg: dict[str, Any], steps: np.ndarray, which: str) -> np.ndarray:
    return _exact(_two, cfg, steps, which)


def _two_validate(cfg: dict[str, Any]) -> None:
    if not 0.5 < cfg["fast_power"] < 1:
        raise RatelabError(f"fast_power must lie in (0.5, 1), got {cfg['fast_power']}")
    problem, _ = _two(cfg)
    _chung_check(problem, (cfg["c"],) * 2)


def _two_claims(cfg: dict[str, Any]) -> list[Claim]:
    K, a = cfg["steps"], cfg["fast_power"]
    return [*_rate_claims(cfg, ("x", "y1"), prefix="single_"),
            Claim(id="two_timescale_fast", statement=f"two timescales (fast step c/(k+k0)^{a:g}): the fast sequence's "
                  f"E||y_k - y*||^2 decays only like k^-{a:g}", metric="two_sq_dist_y1", expected=-a,
                  tolerance=0.05, window=(K / 100, K), source=TTSA)]


_TT = {**_LIN, "dim": 3, "fast_power": 2 / 3}
MSA_TIMESCALES = register(Experiment(
    id="msa-timescales",
    paper=SHEN_CHEN,
    figure="single- vs two-timescale steps (Sec. 1 comparison), two coupled linear sequences",
    title="Two coupled linear sequences: single timescale (both 1/k) gives O(1/k) on both; two timescales "
          "(fast k^-2/3) leave the fast sequence at k^-2/3",
    configs={"quick": {**_TT, "seeds": 200, "steps": 20_000, "log_every": 100},
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


def _nonconvex_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    """One vmapped sweep over horizons K: constant steps (c_x, c, c)/sqrt(K), K_max steps each; the average over
    the first K steps of run K is the exact running mean of the block means at K (``aggregate="mean"``)."""
    problem = _nonconvex(cfg)
    Ks = horizons(cfg)
    cx, c = cfg["c_x"], cfg["c"]
    tr = sweep(lambda K: multi_sa((cx / jnp.sqrt(K), c / jnp.sqrt(K), c / jnp.sqrt(K))), Ks.astype(float),
               problem, key, steps=int(Ks[-1]), seeds=cfg["seeds"], log_every=cfg["log_every"], aggregate="mean",
               x64=cfg["x64"], chunks=run_kw.get("chunks", 1), progress=run_kw.get("progress"))
    idx = Ks // cfg["log_every"] - 1
    out = {}
    for name in ("grad_norm_sq", "sq_dist_y", "sq_dist_w"):
        rm = running_mean(tr[name])  # [nK, seeds, n_log]
        out[f"avg_{name}"] = np.stack([rm[j, :, idx[j]] for j in range(Ks.size)], axis=-1)
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
        metric="avg_grad_norm_sq", expected=-0.5, tolerance=0.05, relation="le", source=THM2)],
    panels=(Panel(metric="avg_grad_norm_sq", ylabel=r"$\frac{1}{K}\sum_k E\|\nabla F(x_k)\|^2$", xlabel="horizon K"),
            Panel(metric="avg_sq_dist_y", ylabel=r"$\frac{1}{K}\sum_k E\|y_k - y^*(x_k)\|^2$", xlabel="horizon K"),
            Panel(metric="avg_sq_dist_w", ylabel=r"$\frac{1}{K}\sum_k E\|w_k - w^*(x_k)\|^2$", xlabel="horizon K")),
    validate=_nonconvex_validate,
    notes="rho = 0.1 < 1/4 keeps F nonconvex (the log(1 + t^2) loss has curvature down to -1/4 and ||H^-1 B|| = 1).",
    tags=("stochastic-approximation", "multi-sequence", "bilevel"),
))
