"""Zo-RASA (Li, Balasubramanian & Ma): sample complexity of zeroth-order Riemannian averaging SA.

Theorem (one sample per iteration, tau = c / sqrt(N)): E||grad f(x_R)||^2 = O(sqrt(d / N)) for x_R uniform over
the N iterates, i.e. N = O(d / eps^2) samples for eps-stationarity. Measured on a stochastic Rayleigh quotient on
the sphere (noisy function values only), with the step of the Gaussian-smoothing theory tau = c / sqrt(d N):

* ``zo-rasa-samples``: x = N (one run per horizon N, each with its own tau_N); y = the average of ||grad f(x_k)||^2
  over the run. Exponent -1/2 with retraction + projection transport and with Exp + parallel transport (the
  paper: the practical version keeps the rate); Zo-RSGD (no moving average) is drawn alongside.
* ``zo-rasa-dimension``: x = d (spheres S^{n-1} embedded in a common ambient space and vmapped), N fixed:
  exponent +1/2 in d.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab.claims import Claim
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, sweep, trace_from_arrays
from riemannian.zo_rasa import make_stochastic_rayleigh, zo_rasa

ZO_RASA = Paper(
    key="li2023zorasa",
    authors="Jiaxiang Li, Krishnakumar Balasubramanian and Shiqian Ma",
    title="Zeroth-order Riemannian Averaging Stochastic Approximation Algorithms",
    venue="arXiv:2309.14506",
    year=2023,
    url="https://arxiv.org/abs/2309.14506",
)

SOURCE = ("Li, Balasubramanian & Ma (2023): one sample per iteration, tau = O(1/sqrt(N)) gives "
          "E||grad f(x_R)||^2 = O(sqrt(d/N)), i.e. N = O(d/eps^2) samples")


def _ints(text: Any) -> list[int]:
    return [int(v) for v in str(text).split(",")]


def _avg_at(block_means: np.ndarray, block: int, horizons: list[int]) -> np.ndarray:
    """``[..., len(horizons)]``: the average over the first N steps, from per-block means of ``block`` steps."""
    csum = np.cumsum(block_means, axis=-1)
    return np.stack([csum[..., n // block - 1] / (n // block) for n in horizons], axis=-1)


def _tau(c: float, d: int, n: int) -> float:
    return c / np.sqrt(d * n)


# ---------------------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------------------


def _validate_samples(cfg: dict[str, Any]) -> None:
    hs = _ints(cfg["horizons"])
    if len(hs) < 3 or sorted(hs) != hs or any(h % cfg["log_every"] for h in hs) or hs[-1] != cfg["steps"]:
        raise RatelabError(f"horizons must be >= 3 increasing multiples of log_every ({cfg['log_every']}) ending at "
                           f"steps ({cfg['steps']}), got {cfg['horizons']!r}")
    zo_rasa(_tau(cfg["c"], cfg["n"] - 1, hs[0]), mu=cfg["mu"])


def _execute_samples(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    hs = _ints(cfg["horizons"])
    d = cfg["n"] - 1
    with jax.enable_x64(True):
        problem = make_stochastic_rayleigh(jax.random.key(cfg["problem_seed"]), n=cfg["n"], sigma=cfg["sigma"])
        taus = jnp.asarray([_tau(cfg["c"], d, n) for n in hs])
    H = len(hs)

    def make_retr(v):  # v < H: Zo-RASA; v >= H: Zo-RSGD (moving-average weight a tau = 1, i.e. no averaging)
        v = jnp.asarray(v).astype(jnp.int32)
        tau = taus[v % H]
        return zo_rasa(tau, mu=cfg["mu"], averaging=jnp.where(v < H, 1.0, 1.0 / tau))

    def make_exp(v):
        return zo_rasa(taus[jnp.asarray(v).astype(jnp.int32)], mu=cfg["mu"], retraction="exp", transport="parallel")

    kw = {"steps": cfg["steps"], "seeds": cfg["seeds"], "log_every": cfg["log_every"], "aggregate": "mean",
          "x64": True}
    tr = sweep(make_retr, np.arange(2 * H), problem, key, **kw)
    te = sweep(make_exp, np.arange(H), problem, key, **kw)
    block = cfg["log_every"]
    retr = _avg_at(tr["grad_norm_sq"], block, hs)  # [2H, seeds, H]
    ex = _avg_at(te["grad_norm_sq"], block, hs)
    diag = np.arange(H)
    metrics = {"grad_sq_rasa": retr[diag, :, diag].T, "grad_sq_rsgd": retr[H + diag, :, diag].T,
               "grad_sq_rasa_exp": ex[diag, :, diag].T}
    timings = {k: tr.timings[k] + te.timings[k] for k in ("compile_s", "run_s")}
    return trace_from_arrays(np.asarray(hs, float) * cfg["batch"], metrics, timings=timings)


def _claims_samples(cfg: dict[str, Any]) -> list[Claim]:
    return [
        Claim(id="rate-retraction", statement="Zo-RASA, retraction + projection transport, one sample/iteration: "
              "E||grad f(x_R)||^2 ~ N^(-1/2) in the number of samples N", metric="grad_sq_rasa", expected=-0.5,
              tolerance=0.1, source=SOURCE),
        Claim(id="rate-exp", statement="Zo-RASA, exponential map + parallel transport: the same N^(-1/2)",
              metric="grad_sq_rasa_exp", expected=-0.5, tolerance=0.1, source=SOURCE),
    ]


_SAMPLES_COMMON = {"seed": 0, "x64": True, "problem_seed": 0, "sigma": 1.0, "c": 2.0, "mu": 1e-4, "batch": 1}

ZO_RASA_SAMPLES = register(Experiment(
    id="zo-rasa-samples",
    paper=ZO_RASA,
    figure="sample complexity theorem (one sample per iteration); with and without averaging",
    title="Zo-RASA on a noisy Rayleigh quotient on S^(n-1): average of ||grad f||^2 over a run of N iterations "
          "(tau = c/sqrt(dN)) against N, retraction + projection vs Exp + parallel transport, and Zo-RSGD",
    configs={
        "quick": {**_SAMPLES_COMMON, "n": 10, "seeds": 8, "steps": 32000, "log_every": 2000,
                  "horizons": "2000,4000,8000,16000,32000"},
        "full": {**_SAMPLES_COMMON, "n": 20, "seeds": 32, "steps": 128000, "log_every": 4000,
                 "horizons": "4000,8000,16000,32000,64000,128000"},
    },
    execute=_execute_samples,
    claims=_claims_samples,
    panels=(Panel(metric="grad_sq_rasa", ylabel=r"$\frac{1}{N}\sum_k \|\mathrm{grad} f(x_k)\|^2$",
                  xlabel="samples N", label="Zo-RASA (retraction, projection transport)"),
            Panel(metric="grad_sq_rasa_exp", ylabel=r"$\frac{1}{N}\sum_k \|\mathrm{grad} f(x_k)\|^2$",
                  xlabel="samples N", label="Zo-RASA (Exp, parallel transport)"),
            Panel(metric="grad_sq_rsgd", ylabel=r"$\frac{1}{N}\sum_k \|\mathrm{grad} f(x_k)\|^2$",
                  xlabel="samples N", label="Zo-RSGD (no averaging)")),
    validate=_validate_samples,
    tags=("riemannian", "zeroth-order"),
))


# ---------------------------------------------------------------------------------------------------------------
# Dimension
# ---------------------------------------------------------------------------------------------------------------


def _validate_dimension(cfg: dict[str, Any]) -> None:
    ns = _ints(cfg["dims"])
    if len(ns) < 3 or sorted(ns) != ns or ns[0] < 3:
        raise RatelabError(f"dims must hold >= 3 increasing sphere sizes n >= 3, got {cfg['dims']!r}")
    if cfg["steps"] % cfg["log_every"]:
        raise RatelabError(f"steps must be a multiple of log_every ({cfg['log_every']}), got {cfg['steps']}")


def _execute_dimension(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    ns = _ints(cfg["dims"])
    N = cfg["steps"]
    with jax.enable_x64(True):
        problems = [make_stochastic_rayleigh(jax.random.key(cfg["problem_seed"]), n=n, sigma=cfg["sigma"],
                                             ambient=ns[-1]) for n in ns]
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *problems)
        taus = jnp.asarray([_tau(cfg["c"], n - 1, N) for n in ns])

    def make(v):
        v = jnp.asarray(v).astype(jnp.int32)
        return zo_rasa(taus[v], mu=cfg["mu"]), jax.tree_util.tree_map(lambda a: a[v], stacked)

    # Blocks of log_every steps bound the memory of the bulk noise draw; the mean of the equal-length block means is
    # the average over the whole run.
    tr = sweep(make, np.arange(len(ns)), problems[0], key, steps=N, seeds=cfg["seeds"], log_every=cfg["log_every"],
               aggregate="mean", x64=True)
    avg = tr["grad_norm_sq"].mean(axis=-1).T  # [seeds, dims]
    return trace_from_arrays(np.asarray(ns, float) - 1, {"grad_sq_avg": avg}, timings=tr.timings)


ZO_RASA_DIMENSION = register(Experiment(
    id="zo-rasa-dimension",
    paper=ZO_RASA,
    figure="dimension dependence of the sample complexity",
    title="Zo-RASA, N fixed, spheres of growing dimension d (tau = c/sqrt(dN)): E||grad f(x_R)||^2 grows like "
          "sqrt(d)",
    configs={
        "quick": {**_SAMPLES_COMMON, "dims": "16,32,64,128", "seeds": 4, "steps": 16000, "log_every": 2000},
        "full": {**_SAMPLES_COMMON, "dims": "16,32,64,128,256", "seeds": 16, "steps": 64000, "log_every": 2000},
    },
    execute=_execute_dimension,
    claims=lambda cfg: [Claim(id="dimension", statement="at fixed N, E||grad f(x_R)||^2 ~ d^(1/2) (N = O(d/eps^2))",
                              metric="grad_sq_avg", expected=0.5, tolerance=0.1, source=SOURCE)],
    panels=(Panel(metric="grad_sq_avg", ylabel=r"$\frac{1}{N}\sum_k \|\mathrm{grad} f(x_k)\|^2$",
                  xlabel="manifold dimension d"),),
    validate=_validate_dimension,
    tags=("riemannian", "zeroth-order"),
))
