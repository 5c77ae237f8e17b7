"""Forgetting in sequential SFT then DPO, and the joint methods ALRIGHT / MAXRIGHT (Fernando et al. 2024), on a
softmax policy over K responses with d < K features (so the two objectives cannot both be optimal).

Every seed draws its own toy (features, SFT distribution, rewards with an offset, start): ``alignment.forgetting``.
The Pareto references are exact (Newton solves of convex problems). One compiled program runs the three methods on
every seed; the x axis is the training step (the sequential run switches from SFT to DPO at T/2).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from alignment.forgetting import forgetting_study, instances
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, call, trace_from_arrays
from ratelab.validate import check_in_range, check_positive, check_positive_int

FERNANDO = Paper(
    key="fernando2024forgetting",
    authors="Heshan Fernando, Han Shen, Parikshit Ram, Yi Zhou, Horst Samulowitz, Nathalie Baracaldo, Tianyi Chen",
    title="Mitigating Forgetting in LLM Supervised Fine-Tuning and Preference Learning",
    venue="arXiv:2410.15483",
    year=2024,
    url="https://arxiv.org/abs/2410.15483",
)

SOURCE = ("Fernando et al. (2024): sequential SFT-then-DPO has a non-diminishing trade-off gap (Sec. 3); ALRIGHT and "
          "MAXRIGHT converge to the lambda trade-off (Sec. 4)")


def _validate(cfg: dict[str, Any]) -> None:
    for k in ("n_responses", "dim", "train_steps", "log_interval"):
        check_positive_int(k, cfg[k])
    if not 1 <= cfg["dim"] < cfg["n_responses"]:
        raise RatelabError(f"dim must satisfy 1 <= dim < n_responses ({cfg['n_responses']}), got {cfg['dim']}")
    if cfg["train_steps"] % (2 * cfg["log_interval"]):
        raise RatelabError(f"train_steps must be a multiple of 2 * log_interval, got {cfg['train_steps']}")
    check_in_range("lam", cfg["lam"], 0.0, 1.0, closed="neither")
    check_positive("beta", cfg["beta"])
    check_positive("learning_rate", cfg["learning_rate"])


def _study(phi, q, r, theta0, coins, beta, lam, learning_rate, steps, log_interval):
    return jax.vmap(lambda a, b, c, d, e: forgetting_study(a, b, c, d, e, beta, lam, learning_rate, steps,
                                                           log_interval))(phi, q, r, theta0, coins)


def _execute(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    del key
    ins = instances(cfg["seed"], cfg["seeds"], cfg["n_responses"], cfg["dim"])
    coins = np.random.default_rng(cfg["seed"] + 1).uniform(size=(cfg["seeds"], cfg["train_steps"]))
    with jax.enable_x64(True):
        out, timings = call(_study, ins["phi"], ins["q"], ins["r"], ins["theta0"], coins, cfg["beta"],
                                   cfg["lam"], cfg["learning_rate"], cfg["train_steps"], cfg["log_interval"],
                                   static_argnums=(8, 9))
    metrics = dict(out)
    metrics["seq_forgetting_ratio"] = out["seq_sft"] / out["forgetting_closed_form"]
    metrics["alright_forgetting_ratio"] = out["alright_sft"] / out["forgetting_closed_form"]
    x = cfg["log_interval"] * np.arange(1, cfg["train_steps"] // cfg["log_interval"] + 1)
    return trace_from_arrays(x, metrics, timings=timings)


def _claims(cfg: dict[str, Any]) -> list[Claim]:
    t = float(cfg["train_steps"])
    last = (t, t)
    return [
        Claim(id="sequential-forgets", statement="sequential SFT then DPO ends with the SFT gap of the DPO optimum, "
              "G_SFT(theta_T) / G_SFT(theta_DPO*) = 1 +- 0.05: forgetting that more DPO steps do not remove "
              "(closed form derived here)", metric="seq_forgetting_ratio", kind="value", expected=1.0, tolerance=0.05,
              window=last, source=SOURCE,
              controls=(Control("alright", "joint training (ALRIGHT, lambda = 0.5) in place of the sequential "
                                "schedule: it keeps the SFT gap small, far below G_SFT(theta_DPO*)",
                                claim={"metric": "alright_forgetting_ratio"}),)),
        Claim(id="alright-pareto", statement=f"ALRIGHT reaches the lambda = {cfg['lam']:g} point of the Pareto front: "
              "G_mix(theta_T) = f_mix(theta_T) - min f_mix <= 1e-3 (front computed exactly)", metric="alright_mix",
              kind="value", relation="le", expected=0.0, tolerance=1e-3, window=last, source=SOURCE,
              controls=(Control("sequential", "the sequential run judged by the same trade-off gap: it ends at the "
                                "DPO optimum, G_mix stays Omega(1)", claim={"metric": "seq_mix"}),)),
        Claim(id="maxright-pareto", statement="MAXRIGHT reaches the min-max point of the Pareto front: "
              "max_i w_i G_i(theta_T) - min_theta max_i w_i G_i <= 1e-3 (exact, by bisection on the front)",
              metric="maxright_max", kind="value", relation="le", expected=0.0, tolerance=1e-3, window=last,
              source=SOURCE,
              controls=(Control("sequential", "the sequential run judged by the same min-max gap: it stays far from "
                                "the balanced point", claim={"metric": "seq_max"}),)),
    ]


def _figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label, color in (("seq", "sequential (SFT, then DPO)", "tab:red"), ("alright", "ALRIGHT", "tab:blue"),
                               ("maxright", "MAXRIGHT", "tab:green")):
        x, y = (np.maximum(trace[f"{name}_{k}"].mean(0), 1e-9) for k in ("sft", "dpo"))
        ax.plot(x, y, color=color, label=label, lw=1)
        ax.plot(x[-1], y[-1], "o", color=color)
    ax.set(xscale="log", yscale="log", xlabel=r"SFT gap $f_{SFT} - f_{SFT}^*$ (mean)",
           ylabel=r"DPO gap $f_{DPO} - f_{DPO}^*$ (mean, floored at 1e-9)")
    ax.set_title(f"mean over {cfg['seeds']} toys (K = {cfg['n_responses']}, d = {cfg['dim']}), lambda = "
                 f"{cfg['lam']:g}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_COMMON = {"seed": 0, "x64": True, "log_every": 1, "n_responses": 6, "dim": 3, "beta": 0.5, "lam": 0.5,
           "learning_rate": 0.05, "log_interval": 40}

FORGETTING = register(Experiment(
    id="forgetting-sft-dpo",
    paper=FERNANDO,
    figure="Sec. 3-4: sequential vs joint (ALRIGHT, MAXRIGHT) SFT and DPO on a convex toy",
    title="Sequential SFT then DPO forgets; ALRIGHT and MAXRIGHT reach the exact Pareto front",
    configs={
        "quick": {**_COMMON, "seeds": 32, "train_steps": 4000, "steps": 100},
        "full": {**_COMMON, "seeds": 256, "train_steps": 20000, "steps": 500, "log_interval": 40},
    },
    execute=_execute,
    claims=_claims,
    panels=(
        Panel(metric="seq_forgetting_ratio", ylabel=r"sequential: $G_{SFT} / G_{SFT}(\theta_{DPO}^*)$",
              yscale="linear"),
        Panel(metric="alright_mix", ylabel=r"ALRIGHT: trade-off gap $G_{mix}$"),
    ),
    validate=_validate,
    extra_figures={"gap_plane": _figure},
    notes="beta = 0.5, lambda = 0.5 (the paper's runs use beta = 0.1 on Pythia/Llama with lambda in {0.25, 0.5, "
          "0.75}); Adam with a cosine rate from 0.05, K = 6, d = 3 are ours.",
    tags=("alignment",),
))
