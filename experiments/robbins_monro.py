"""Robbins-Monro on Chung's scalar problem: the 1/k rate with its exact constant, and the slow k^(-2 a lambda) rate.

Chung (1954) shows for x_{k+1} = x_k - a_k (lambda (x_k - x*) + sigma xi_k), a_k = a / (k + k0):
  * 2 a lambda > 1:  E (x_k - x*)^2 ~ C / k with C = a^2 sigma^2 / (2 a lambda - 1);
  * 2 a lambda < 1:  E (x_k - x*)^2 decays only like k^(-2 a lambda).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, run
from ratelab.schedules import harmonic
from rl_theory.sa import chung_constant, chung_exponent, exact_second_moment, make_scalar_sa, robbins_monro

CHUNG = Paper(
    key="chung1954",
    authors="K. L. Chung",
    title="On a Stochastic Approximation Method",
    venue="Annals of Mathematical Statistics 25(3)",
    year=1954,
    url="https://doi.org/10.1214/aoms/1177728716",
)


SOURCE = "Chung (1954): order of E(x_n - theta)^2 for a_n = a/n; limit variance as in Sacks (1958)"


def _build(cfg: dict[str, Any]):
    problem = make_scalar_sa(lam=cfg["lam"], sigma=cfg["sigma"], x0=cfg["x0"])
    return problem, robbins_monro(harmonic(cfg["a"], cfg["k0"]))


def _execute(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    problem, solver = _build(cfg)
    return run(solver, problem, key, steps=cfg["steps"], seeds=cfg["seeds"], log_every=cfg["log_every"],
               x64=cfg["x64"], **run_kw)


def _exact(cfg: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    problem, _ = _build(cfg)
    return exact_second_moment(problem, harmonic(cfg["a"], cfg["k0"]), int(steps[-1]))[np.asarray(steps) - 1]


def _regime(fast: bool):
    def validate(cfg: dict[str, Any]) -> None:
        _build(cfg)
        r = 2 * cfg["a"] * cfg["lam"]
        if fast and r <= 1:
            raise RatelabError(f"a and lam must satisfy 2*a*lam > 1 for this experiment, got {r:g}")
        if not fast and r >= 1:
            raise RatelabError(f"a and lam must satisfy 2*a*lam < 1 for this experiment, got {r:g}")

    return validate


def _slow_steps(cfg: dict[str, Any]) -> Control:
    a = 0.25 / cfg["lam"]
    return Control("slow-steps", f"a = {a:g}, so 2 a lambda = 1/2 < 1: Chung's slow case, E(x_k - x*)^2 decays like "
                   "k^(-1/2), and k E(x_k - x*)^2 grows without limit (1000 seeds decide it)",
                   overrides={"a": a, "seeds": 1000})


def _claims_fast(cfg: dict[str, Any]) -> list[Claim]:
    K = cfg["steps"]
    C = chung_constant(cfg["a"], cfg["lam"], cfg["sigma"])
    control = (_slow_steps(cfg),)
    return [
        Claim(id="rate", statement="E(x_k - x*)^2 = Theta(1/k) when 2 a lambda > 1", metric="sq_dist_to_opt",
              expected=-1.0, tolerance=0.05, window=(K / 100, K), source=SOURCE, controls=control),
        Claim(id="constant", statement="k E(x_k - x*)^2 -> a^2 sigma^2 / (2 a lambda - 1)", metric="sq_dist_to_opt",
              kind="constant", exponent=-1.0, expected=C, tolerance=0.05, window=(K / 10, K),
              source=SOURCE, controls=control),
    ]


def _claims_slow(cfg: dict[str, Any]) -> list[Claim]:
    K = cfg["steps"]
    a = 1.0 / cfg["lam"]
    return [
        Claim(id="rate", statement="E(x_k - x*)^2 = Theta(k^(-2 a lambda)) when 2 a lambda < 1",
              metric="sq_dist_to_opt", expected=chung_exponent(cfg["a"], cfg["lam"]), tolerance=0.05,
              window=(K / 100, K), source=SOURCE,
              controls=(Control("fast-steps", f"a = {a:g}, so 2 a lambda = 2 > 1: the rate saturates at 1/k instead "
                                "of k^(-2 a lambda)", overrides={"a": a}),)),
    ]


_COMMON = {"seed": 0, "x64": False, "lam": 1.0, "sigma": 1.0, "x0": 1.0, "k0": 10.0}
_PANEL = Panel(metric="sq_dist_to_opt", ylabel=r"$\mathbb{E}\,(x_k - x^*)^2$", reference=_exact,
               reference_label="exact second moment")

def _experiment(exp_id: str, *, fast: bool, a: float, quick_seeds: int, title: str) -> Experiment:
    case = "2a*lambda > 1" if fast else "2a*lambda < 1"
    return register(Experiment(
        id=exp_id,
        paper=CHUNG,
        figure=f"rate of E(x_k - x*)^2, case {case}",
        title=title,
        configs={
            "quick": {**_COMMON, "a": a, "seeds": quick_seeds, "steps": 50_000, "log_every": 50},
            "full": {**_COMMON, "a": a, "seeds": 10_000, "steps": 500_000, "log_every": 500},
        },
        execute=_execute,
        claims=_claims_fast if fast else _claims_slow,
        panels=(_PANEL,),
        validate=_regime(fast=fast),
        tags=("stochastic-approximation",),
    ))


RM_FAST = _experiment(
    "rm-fast", fast=True, a=1.0, quick_seeds=6000,
    title="Robbins-Monro, a/(k+k0) steps, 2a*lambda = 2: E x_k^2 ~ C/k with C = a^2 sigma^2/(2a lambda - 1)")
RM_SLOW = _experiment(
    "rm-slow", fast=False, a=0.25, quick_seeds=1000,
    title="Robbins-Monro, a/(k+k0) steps, 2a*lambda = 1/2: E x_k^2 decays only like k^(-2a lambda)")
