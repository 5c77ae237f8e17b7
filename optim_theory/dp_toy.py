"""The diagonal-quadratic toy shared by the ``disk-quadratic`` and ``doppler-quadratic`` experiments: its standard
settings, their checks and the reduction of per-coordinate statistics to per-curvature curves.

Every curvature eta h of a geometric grid gets ``replicates`` coordinates; per-sample gradients H (x - a_j) of B fresh
samples a_j ~ N(0, tau^2 I), clip C = 1 and noise multiplier 0.2 with B = 4, so sigma C / B = 0.05 and |H x| stays
near 0.1 C: the clip never acts and the closed forms (derived here) are exact. Quick: eta h from 0.03 to 1 (4 points,
4 replicates, 64 seeds x 2000 steps, the first 500 dropped: 15 relaxation times 1/(eta h) of the flattest
direction); full:
from 0.01 to 1 (7 points, 8 replicates, 512 seeds x 20000 steps, 5000 dropped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optim_theory.dp_problems import NoisyQuadratic, make_quadratic
from ratelab.errors import RatelabError

TOY = {"seed": 0, "x64": True, "step": 1.0, "eh_max": 1.0, "tau": 0.05, "batch": 4, "noise_multiplier": 0.2,
       "clip_norm": 1.0}
QUICK = {"seeds": 64, "steps": 2000, "log_every": 2000, "burn_in": 500, "eh_min": 0.03, "n_curv": 4,
         "replicates": 4}
FULL = {"seeds": 512, "steps": 20_000, "log_every": 20_000, "burn_in": 5000, "eh_min": 0.01, "n_curv": 7,
        "replicates": 8}


def curvatures(cfg: dict[str, Any]) -> np.ndarray:
    """The grid of eta h (its end points exactly ``eh_min`` and ``eh_max``: claims take single-point windows)."""
    return np.geomspace(cfg["eh_min"], cfg["eh_max"], cfg["n_curv"])


def quadratic(cfg: dict[str, Any]) -> NoisyQuadratic:
    return make_quadratic(curvatures(cfg), step=cfg["step"], replicates=cfg["replicates"], tau=cfg["tau"],
                          batch=cfg["batch"])


def per_curvature(values: np.ndarray, n_curv: int, how: str) -> np.ndarray:
    """``[..., d]`` -> ``[..., n_curv]``: the sum (``"sum"``) or the max (``"max"``) over each curvature's
    replicates."""
    v = np.asarray(values).reshape(*np.shape(values)[:-1], n_curv, -1)
    return v.sum(-1) if how == "sum" else v.max(-1)


def arms_first(values: np.ndarray) -> np.ndarray:
    """A study's ``[seeds, arms, ...]`` output as ``[arms, seeds, ...]`` (the layout of a Trace's metrics)."""
    return np.moveaxis(np.asarray(values), 1, 0)


def ratio_to_dpsgd(arm_values: np.ndarray, dpsgd_values: np.ndarray, n_curv: int) -> np.ndarray:
    """``[arms, seeds, n_curv]``: each arm's per-curvature sum over DPSGD's on the same seed."""
    return per_curvature(arms_first(arm_values), n_curv, "sum") / per_curvature(dpsgd_values, n_curv, "sum")[None]


def at(x: float) -> tuple[float, float]:
    """A claim window holding the single curvature ``x``."""
    return (x, x)


def validate(cfg: dict[str, Any], eh_limit: float) -> None:
    """The grid inside (0, ``eh_limit``], at least two points, a burn-in shorter than the run, a valid problem."""
    if not 0 < cfg["eh_min"] < cfg["eh_max"] <= eh_limit:
        raise RatelabError(f"eh_min and eh_max must satisfy 0 < eh_min < eh_max <= {eh_limit:g}, got "
                           f"{cfg['eh_min']}, {cfg['eh_max']}")
    if cfg["n_curv"] < 2:
        raise RatelabError(f"n_curv must be >= 2, got {cfg['n_curv']}")
    if not 0 <= cfg["burn_in"] < cfg["steps"]:
        raise RatelabError(f"burn_in must lie in [0, steps), got {cfg['burn_in']} (steps {cfg['steps']})")
    quadratic(cfg)
