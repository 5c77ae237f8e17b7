"""Preference collapse of KL-regularised RLHF and preference-matching RLHF (Xiao et al. 2024) on K-armed bandits and
a prompt-response table.

Every instance draws rewards r = c + z (z ~ N(0, I_K), an offset c ~ U(-5, 5): all claims are offset invariant) and
a random reference policy softmax(N(0, I)), so the reward maximiser is not the reference's mode by construction.
RLHF is solved at beta = u Delta for u on a grid, Delta = r_(1) - r_(2) the instance's own top gap (the collapse is
governed by Delta / beta: the minority mass decays like exp(-Delta / beta)), PM RLHF once. One compiled program
(``vmap`` over instances, the u grid inside) measures every curve; the x axis of the trace is u.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alignment.preferences import collapse_study, conditional_study, preference_instances, table_instances
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, call, trace_from_arrays
from ratelab.validate import check_in_range, check_positive, check_positive_int

XIAO = Paper(
    key="xiao2024pm",
    authors="Jiancong Xiao, Ziniu Li, Xingyu Xie, Emily Getzen, Cong Fang, Qi Long, Weijie J. Su",
    title="On the Algorithmic Bias of Aligning Large Language Models with RLHF: Preference Collapse and Matching "
          "Regularization",
    venue="arXiv:2405.16455",
    year=2024,
    url="https://arxiv.org/abs/2405.16455",
)

SOURCE = ("Xiao et al. (2024), Sec. 2 (RLHF optimum pi_ref exp(r/beta)/Z, preference collapse) and Sec. 3 (PM "
          "regulariser R(pi) = -log pi from the preference-matching ODE; PM RLHF's optimum is softmax(r))")


def _u_grid(cfg: dict[str, Any]) -> np.ndarray:
    return np.geomspace(cfg["u_min"], cfg["u_max"], cfg["n_u"])


def _validate(cfg: dict[str, Any]) -> None:
    for k in ("n_responses", "n_prompts", "n_u", "solver_steps"):
        check_positive_int(k, cfg[k])
    if cfg["n_responses"] < 3:
        raise RatelabError(f"n_responses must be >= 3, got {cfg['n_responses']}")
    if cfg["n_u"] < 2:
        raise RatelabError(f"n_u must be >= 2, got {cfg['n_u']}")
    check_positive("u_min", cfg["u_min"])
    if not cfg["u_min"] < cfg["u_max"]:
        raise RatelabError(f"u_max must exceed u_min ({cfg['u_min']}), got {cfg['u_max']}")
    check_in_range("step_scale", cfg["step_scale"], 0.0, 1.0, closed="right")
    check_in_range("threshold", cfg["threshold"], 0.0, 1.0, closed="neither")
    check_positive("offset_scale", cfg["offset_scale"])


def _study(r: jax.Array, log_ref: jax.Array, table_r: jax.Array, table_log_ref: jax.Array, u: jax.Array,
           threshold: float, steps: int, step_scale: float) -> dict[str, jax.Array]:
    bandit = jax.vmap(lambda a, b: collapse_study(a, b, u, steps, step_scale))(r, log_ref)
    table = jax.vmap(lambda a, b: conditional_study(a, b, threshold, steps, step_scale))(table_r, table_log_ref)
    ones = jnp.ones_like(u)
    return {**bandit, **{k: v[:, None] * ones for k, v in table.items()}}


def _execute(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    del key  # the instances come from NumPy generators seeded by cfg["seed"]
    u = _u_grid(cfg)
    r, log_ref = preference_instances(cfg["seed"], cfg["seeds"], cfg["n_responses"], cfg["offset_scale"])
    table_r, table_ref = table_instances(cfg["seed"] + 1, cfg["seeds"], cfg["n_prompts"], cfg["n_responses"],
                                         cfg["offset_scale"])
    with jax.enable_x64(True):
        out, timings = call(_study, r, log_ref, table_r, table_ref, jnp.asarray(u), cfg["threshold"],
                            cfg["solver_steps"], cfg["step_scale"], static_argnums=(6,), desc="RLHF / PM on bandits")
    return trace_from_arrays(u, out, timings=timings)


def _claims(cfg: dict[str, Any]) -> list[Claim]:
    u = _u_grid(cfg)
    every_u = (float(u[0]), float(u[-1]))
    return [
        Claim(id="rlhf-optimum", statement="the solved KL-regularised RLHF policy is pi_ref exp(r/beta)/Z: worst "
              "|pi - closed form| over instances, responses and beta <= 1e-6", metric="rlhf_vs_closed_form",
              kind="value", relation="le", expected=0.0, tolerance=1e-6, window=every_u, statistic="max",
              source=SOURCE,
              controls=(Control("vs-preference", "judge the same RLHF policies against the preference distribution "
                                "softmax(r) instead: KL-regularised RLHF does not match preferences (its algorithmic "
                                "bias), so the worst distance is far above 1e-6",
                                claim={"metric": "rlhf_vs_preference"}),)),
        Claim(id="collapse", statement=f"preference collapse: at beta = {u[0]:g} Delta the RLHF optimum keeps less "
              "than 1% of the preference distribution's mass on the minority-preferred responses (all but argmax "
              "r; Delta = r_(1) - r_(2))", metric="rlhf_minority_ratio", kind="value", relation="le",
              expected=0.0, tolerance=0.01, window=(float(u[0]), float(u[0])), source=SOURCE,
              controls=(Control("pm", "the PM regulariser -log pi in place of beta KL: PM RLHF's optimum is the "
                                "preference distribution at every beta, so the minority keeps all of its mass "
                                "(ratio 1)", claim={"metric": "pm_minority_ratio"}),)),
        Claim(id="pm-matches", statement="PM RLHF (regulariser -log pi) reaches the preference distribution: worst "
              "|pi_PM - softmax(r)| <= 1e-6", metric="pm_vs_preference", kind="value", relation="le",
              expected=0.0, tolerance=1e-6, window=every_u, statistic="max", source=SOURCE,
              controls=(Control("no-regulariser", "PM without its -log pi regulariser is plain reward maximisation: "
                                "the policy collapses onto argmax r and stays far from softmax(r)",
                                claim={"metric": "pm_noreg_vs_preference"}),)),
        Claim(id="conditional-pm", statement="conditional PM RLHF on a prompt-response table (reconstructed: PM over "
              "the meaningful responses pi_ref(y|x) >= tau) matches P(y | x, y meaningful) at every prompt: worst "
              "error <= 1e-6", metric="conditional_vs_target", kind="value", relation="le", expected=0.0,
              tolerance=1e-6, window=every_u, statistic="max",
              source="Xiao et al. (2024), Sec. 4 (conditional PM RLHF); the meaningful-set rule is reconstructed",
              controls=(Control("unconditional", "PM without the condition matches softmax(r(x, .)) over all "
                                "responses and so puts mass on the meaningless ones",
                                claim={"metric": "unconditional_vs_target"}),)),
    ]


def _figure(cfg: dict[str, Any], trace: Trace, verdicts: list) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    u = trace.steps
    for name, label, style in (("rlhf_minority_ratio", "RLHF (solved)", "o-"),
                               ("closed_minority_ratio", "RLHF closed form", "k--"),
                               ("pm_minority_ratio", "PM RLHF (solved)", "s-")):
        v = trace[name]
        ax.plot(u, np.exp(np.log(v).mean(0)), style, label=label)
    ax.axhline(0.01, color="0.5", lw=0.8, ls=":", label="1% of the preference mass")
    ax.set(xscale="log", yscale="log", xlabel=r"$\beta / \Delta$",
           ylabel="minority mass / preference minority mass")
    ax.set_title(f"preference collapse, K = {cfg['n_responses']}, {cfg['seeds']} instances", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_COMMON = {"seed": 0, "x64": True, "log_every": 1, "n_prompts": 4, "u_min": 0.05, "u_max": 2.0,
           "offset_scale": 5.0, "threshold": 0.1, "solver_steps": 60, "step_scale": 0.5}

PM_BANDIT = register(Experiment(
    id="pm-collapse",
    paper=XIAO,
    figure="Sec. 2-4: preference collapse of KL-RLHF, PM RLHF and its conditional variant (bandit / table toys)",
    title="KL-regularised RLHF collapses onto argmax r as beta shrinks; PM RLHF matches softmax(r)",
    configs={
        # steps = number of beta values on the x axis (the harness requires the key; nothing iterates over it)
        "quick": {**_COMMON, "n_responses": 6, "n_u": 6, "seeds": 64, "steps": 6},
        "full": {**_COMMON, "n_responses": 10, "n_u": 12, "seeds": 1000, "steps": 12},
    },
    execute=_execute,
    claims=_claims,
    panels=(
        Panel(metric="rlhf_minority_ratio", ylabel="RLHF minority mass / preference minority mass",
              xlabel=r"$\beta / \Delta$"),
        Panel(metric="rlhf_vs_closed_form", ylabel=r"$\max |\pi - \pi_{ref} e^{r/\beta}/Z|$",
              xlabel=r"$\beta / \Delta$"),
    ),
    validate=_validate,
    extra_figures={"collapse": _figure},
    notes="Solver: mirror ascent on the simplex (exponentiated gradient / NPG, optax.sgd on the mirror gradient), "
          "contracting by 1 - step_scale per step; the paper trains LLMs with PPO. The paper has no bandit "
          "settings: K, the reward law and the beta grid are ours.",
    tags=("alignment",),
))
