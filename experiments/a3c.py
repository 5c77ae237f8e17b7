"""Shen, Zhang, Hong & Chen (arXiv:2012.15511): A3C-TD(0), its K^(-2/5) stationarity rate and linear speedup.

Both experiments come from one vmapped sweep over the number of workers N in {1, 2, 4, 8, 16} on the paper's
synthetic MDP (Section 5.1), all N sharing the same seeds (common random numbers); the sweep is computed once per
configuration and shared by the two experiments.

* ``a3c-stationarity`` (Corollary 1 / Theorem 4): the running average (1/K) sum_k ||grad J(theta_k)||^2 (exact
  gradients, averaged over logged iterates) decays at least like K^(-2/5) before the approximation floor
  O(eps_app), for one worker and for 16.
* ``a3c-speedup`` (Section 1 eq. (1), Figure 1): the samples each worker needs until the running average of J
  reaches a target fall like 1/N (exponent -1 against N).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from ratelab.claims import Claim
from ratelab.errors import RatelabError
from ratelab.rates import running_mean
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, sweep, trace_from_arrays
from rl_theory.a3c import a3c_td0, paper_steps
from rl_theory.linear_mdp import LinearMDP, make_linear_mdp

A3C_PAPER = Paper(
    key="shen2020a3c",
    authors="H. Shen, K. Zhang, M. Hong and T. Chen",
    title="Asynchronous Advantage Actor Critic: Non-asymptotic Analysis and Linear Speedup",
    venue="arXiv:2012.15511 (IEEE Trans. Signal Processing 2023)",
    year=2020,
    url="https://arxiv.org/abs/2012.15511",
)
COR1 = ("Shen et al. (2020), Corollary 1 / Theorem 4: sigma1 = 3/5, sigma2 = 2/5, K0 = O(K^1/5): "
        "(1/K) sum_k E||grad J(theta_k)||^2 = O(K^-2/5) + O(eps_app)")
SPEEDUP = ("Shen et al. (2020), eq. (1) and Sec. 4.1: O(eps^-2.5 / N) samples per worker, linear speedup "
           "(Figure 1: samples to a target running reward)")

WORKERS = (1, 2, 4, 8, 16)


def _mdp(cfg: dict[str, Any]) -> LinearMDP:
    return make_linear_mdp(jax.random.key(cfg["problem_seed"]), n_states=cfg["n_states"],
                           n_actions=cfg["n_actions"], feature_dim=cfg["feature_dim"], gamma=cfg["gamma"])


@functools.lru_cache(maxsize=4)
def _make(c1: float, c2: float, delay: str, max_workers: int, radius: float):
    """One ``make`` per setting, so that both experiments reuse the runner's compiled code."""
    alpha, beta = paper_steps(c1, c2)
    return lambda n: a3c_td0(alpha, beta, num_workers=n, max_workers=max_workers, delay=delay, radius=radius)


@functools.lru_cache(maxsize=2)
def _sweep_cached(items: tuple, key_data: bytes, chunks: int) -> Trace:
    cfg = dict(items)
    make = _make(cfg["c1"], cfg["c2"], cfg["delay"], max(WORKERS), cfg["radius"])
    key = jax.random.wrap_key_data(np.frombuffer(key_data, dtype=np.uint32).copy())
    return sweep(make, np.asarray(WORKERS, dtype=float), _mdp(cfg), key, steps=cfg["steps"], seeds=cfg["seeds"],
                 log_every=cfg["log_every"], x64=cfg["x64"], chunks=chunks)


_SWEEP_KEYS = ("seed", "seeds", "steps", "log_every", "x64", "problem_seed", "n_states", "n_actions", "feature_dim",
               "gamma", "c1", "c2", "delay", "radius")


def worker_sweep(cfg: dict[str, Any], key: jax.Array, chunks: int = 1) -> Trace:
    """The sweep over N in :data:`WORKERS`: metrics ``[len(WORKERS), seeds, steps // log_every]``."""
    items = tuple((k, cfg[k]) for k in _SWEEP_KEYS)
    return _sweep_cached(items, np.asarray(jax.random.key_data(key)).tobytes(), chunks)


@functools.lru_cache(maxsize=4)
def _reference_levels(items: tuple) -> tuple[float, float]:
    mdp = _mdp(dict(items))
    return float(mdp.J(jnp.zeros(mdp.theta_dim, mdp.phi.dtype))), mdp.optimal_J()


def target_reward(cfg: dict[str, Any]) -> float:
    """J(theta_0) + target_fraction * (J* - J(theta_0)), J* = max_pi J by value iteration."""
    j0, j_star = _reference_levels(tuple((k, cfg[k]) for k in ("problem_seed", "n_states", "n_actions",
                                                                "feature_dim", "gamma")))
    return j0 + cfg["target_fraction"] * (j_star - j0)


def _validate(cfg: dict[str, Any]) -> None:
    if cfg["delay"] not in ("round_robin", "random", "zero"):
        raise RatelabError(f"delay must be one of 'round_robin', 'random', 'zero', got {cfg['delay']!r}")
    if not 0 < cfg["target_fraction"] < 1:
        raise RatelabError(f"target_fraction must lie in (0, 1), got {cfg['target_fraction']}")
    paper_steps(cfg["c1"], cfg["c2"])
    _mdp(cfg)


# ---------------------------------------------------------------------------------------------- stationarity


def _stationarity_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    return worker_sweep(cfg, key, run_kw.get("chunks", 1))


def _stationarity_claims(cfg: dict[str, Any]) -> list[Claim]:
    K = cfg["steps"]
    return [Claim(id=f"stationarity_N{n}", statement=f"N = {n}: (1/K) sum_k E||grad J(theta_k)||^2 = O(K^-2/5) "
                  "before the eps_app floor", metric="grad_norm_sq", expected=-0.4, tolerance=0.05, relation="le",
                  transform="running_mean", window=(K / 10, K), index=(WORKERS.index(n),), source=COR1)
            for n in (1, max(WORKERS))]


_BASE = {"seed": 0, "x64": False, "problem_seed": 0, "n_states": 100, "n_actions": 5, "feature_dim": 10,
         "gamma": 0.9, "c1": 30.0, "c2": 1.0, "delay": "round_robin", "radius": 20.0, "target_fraction": 0.4}
_QUICK = {**_BASE, "seeds": 4, "steps": 40_000, "log_every": 200}
_FULL = {**_BASE, "seeds": 10, "steps": 400_000, "log_every": 400, "target_fraction": 0.6}

A3C_STATIONARITY = register(Experiment(
    id="a3c-stationarity",
    paper=A3C_PAPER,
    figure="Corollary 1, synthetic MDP (|S| = 100, |A| = 5, d = 10)",
    title="A3C-TD(0), alpha_k = c1/(1+k)^0.6, beta_k = c2/(1+k)^0.4, round-robin delays tau_k = N - 1: "
          "running average of ||grad J||^2 decays at least like K^-2/5 for N = 1 and N = 16",
    configs={"quick": _QUICK, "full": _FULL},
    execute=_stationarity_run,
    claims=_stationarity_claims,
    panels=(Panel(metric="grad_norm_sq", ylabel=r"$\frac{1}{K}\sum_k \|\nabla J(\theta_k)\|^2$",
                  transform="running_mean", index=(0,), label="N = 1", xlabel="iteration K"),
            Panel(metric="grad_norm_sq", ylabel=r"$\frac{1}{K}\sum_k \|\nabla J(\theta_k)\|^2$",
                  transform="running_mean", index=(len(WORKERS) - 1,), label=f"N = {max(WORKERS)}",
                  xlabel="iteration K"),
            Panel(metric="J", ylabel=r"$J(\theta_k)$", index=(len(WORKERS) - 1,), label=f"J, N = {max(WORKERS)}",
                  xlabel="iteration K", yscale="linear"),
            Panel(metric="critic_gap_sq", ylabel=r"$\|\omega_k - \omega^*_{\theta_k}\|^2$", index=(len(WORKERS) - 1,),
                  label=f"critic, N = {max(WORKERS)}", xlabel="iteration K", yscale="linear")),
    validate=_validate,
    notes="Relation 'le': Corollary 1 is an upper bound; once ||grad J||^2 itself decays the average falls faster "
          "than K^-2/5. Window (K/10, K): after the critic's transient, before the eps_app floor (J is still rising).",
    tags=("reinforcement-learning", "actor-critic", "asynchronous"),
))


# --------------------------------------------------------------------------------------------------- speedup


def samples_to_target(trace: Trace, target: float) -> np.ndarray:
    """``[len(WORKERS), seeds]`` total samples k at the first logged k where the running mean of J reaches
    ``target`` (inf where it never does)."""
    rj = running_mean(trace["J"])
    hit = rj >= target
    return np.where(hit.any(axis=-1), trace.steps[np.argmax(hit, axis=-1)], np.inf)


def _speedup_run(cfg: dict[str, Any], key: jax.Array, **run_kw: Any) -> Trace:
    tr = worker_sweep(cfg, key, run_kw.get("chunks", 1))
    total = samples_to_target(tr, target_reward(cfg))
    per_worker = total / np.asarray(WORKERS, dtype=float)[:, None]
    curves = {"steps": tr.steps, "running_J": running_mean(tr["J"]).mean(axis=1)}
    return trace_from_arrays(np.asarray(WORKERS, dtype=float), {"samples_per_worker": per_worker.T,
                                                               "total_samples": total.T},
                             final_state=curves, timings=tr.timings)


def _reward_figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    curves = trace.final_state
    if curves is not None:
        for j, n in enumerate(WORKERS):
            ax.plot(curves["steps"], curves["running_J"][j], label=f"N = {n}")
    ax.axhline(target_reward(cfg), color="k", ls=":", label="target")
    ax.set_xscale("log")
    ax.set_xlabel("total samples (= iterations k)")
    ax.set_ylabel("running average of J(theta_k)")
    ax.set_title(f"A3C-TD(0): running reward vs total samples (mean of {cfg['seeds']} seeds)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _speedup_figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    n = np.asarray(WORKERS, dtype=float)
    per_worker = trace["samples_per_worker"]
    ok = np.isfinite(per_worker).all(axis=1)
    if ok.any():
        mean = per_worker[ok].mean(axis=0)
        ax.plot(n, mean[0] / mean, "o-", label=f"measured (mean of {int(ok.sum())} seeds)")
    ax.plot(n, n, "k--", label="ideal linear speedup")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("number of workers N")
    ax.set_ylabel("speedup = samples(N = 1) / samples per worker(N)")
    status = " ".join(f"{v.claim.id}: {v.status}" for v in verdicts)
    ax.set_title(f"A3C-TD(0) speedup ({status})", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


A3C_SPEEDUP = register(Experiment(
    id="a3c-speedup",
    paper=A3C_PAPER,
    figure="Figure 1 (speedup), synthetic MDP (|S| = 100, |A| = 5, d = 10)",
    title="A3C-TD(0) with N in {1, 2, 4, 8, 16} workers (round-robin delays): samples per worker to reach a target "
          "running reward fall like 1/N",
    configs={"quick": _QUICK, "full": _FULL},
    execute=_speedup_run,
    claims=lambda cfg: [Claim(id="linear_speedup", statement="samples per worker to a target running reward ~ 1/N",
                              metric="samples_per_worker", expected=-1.0, tolerance=0.1, source=SPEEDUP)],
    panels=(Panel(metric="samples_per_worker", ylabel="samples per worker to target", xlabel="number of workers N"),
            Panel(metric="total_samples", ylabel="total samples to target", xlabel="number of workers N")),
    validate=_validate,
    extra_figures={"reward": _reward_figure, "speedup": _speedup_figure},
    tags=("reinforcement-learning", "actor-critic", "asynchronous"),
))
