"""Bilevel solvers side by side on one finite-sum quadratic (benchmark_bilevel form): time and oracle calls to 1e-2
and 1e-4 relative suboptimality (h(x) - h*)/(h(x0) - h*).

Methods: V-PBGD (constant gamma; ramped gamma with the authors' min(1, 1/gamma) step scaling), G-PBGD, AID (warm
lower level, warm-started linear system), SOBA, SABA, F2SA. Tuning rule (the same for all): a grid over (outer step,
inner step) = {0.01, 0.03, 0.1, 0.3, 1} x {0.1, 0.3, 1}, one vmapped sweep per method over the grid, pick the pair
with the smallest final relative suboptimality (diverged runs excluded); the chosen pair is rerun alone with one
chunk per logged block so that Trace.block_wall_s is that run's post-compile wall time. Oracle calls count
per-sample gradient / Hessian-vector evaluations: logged by SOBA/SABA/F2SA (``oracle_calls``), counted per step here
for the others (V-PBGD: (T + 2) inner-sample gradients + 1 outer-sample gradient per sample of the minibatches; G-PBGD:
2 inner (gradient + HVP) + 1 outer; AID: T + N + 2 inner + 1 outer).

    PYTHONPATH=$PWD python benchmarks/bilevel_side_by_side.py [--steps 3000] [--log-every 50]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bilevel.finite_sum import make_finite_sum_quadratic  # noqa: E402
from bilevel.implicit import implicit_gradient  # noqa: E402
from bilevel.pbgd import g_pbgd, linear_ramp, penalty_scaled, v_pbgd  # noqa: E402
from bilevel.stochastic import f2sa, saba, soba  # noqa: E402
from ratelab.runner import run, sweep  # noqa: E402

GRID = np.array(list(itertools.product([0.01, 0.03, 0.1, 0.3, 1.0], [0.1, 0.3, 1.0])))
T_INNER, N_NEUMANN, GAMMA, RAMP = 5, 10, 10.0, 1000


def methods(steps: int):
    """name -> (make(value) with value = (outer, inner), per-step oracle calls or None when logged)."""
    ramp = linear_ramp(GAMMA, min(RAMP, steps), 1.0)
    return {
        "V-PBGD (gamma=10)": (lambda v: v_pbgd(x_optimizer=v[0] / GAMMA, y_optimizer=v[0] / GAMMA, gamma=GAMMA,
                                               inner_steps=T_INNER, inner_lr=v[1]), (T_INNER + 2, 1)),
        "V-PBGD (ramp 1->10)": (lambda v: v_pbgd(x_optimizer=penalty_scaled(v[0], ramp),
                                                 y_optimizer=penalty_scaled(v[0], ramp), gamma=ramp,
                                                 inner_steps=T_INNER, inner_lr=v[1]), (T_INNER + 2, 1)),
        "G-PBGD (gamma=10)": (lambda v: g_pbgd(x_optimizer=v[0] / GAMMA, y_optimizer=v[1] / GAMMA, gamma=GAMMA),
                              (2, 1)),
        "AID (warm v)": (lambda v: implicit_gradient(x_optimizer=v[0], inner_steps=T_INNER, inner_lr=v[1],
                                                     neumann_steps=N_NEUMANN, linear_warm_start=True),
                         (T_INNER + N_NEUMANN + 2, 1)),
        "SOBA": (lambda v: soba(inner_lr=v[1], outer_lr=v[0]), None),
        "SABA": (lambda v: saba(inner_lr=v[1], outer_lr=v[0]), None),
        "F2SA (lam=10)": (lambda v: f2sa(x_lr=v[0] / GAMMA, y_lr=v[1] / GAMMA, z_lr=v[1], multiplier=GAMMA,
                                         inner_steps=T_INNER), None),
    }


def first_hit(curve: np.ndarray, axis: np.ndarray, tol: float) -> float:
    hit = np.nonzero(curve <= tol)[0]
    return float(axis[hit[0]]) if hit.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    prob = make_finite_sum_quadratic(args.seed, n_inner=256, n_outer=256, dim_inner=20, dim_outer=10,
                                     inner_batch=16, outer_batch=16)
    bi, bo = prob.inner_batch, prob.outer_batch
    rows = []
    for name, (make, per_step) in methods(args.steps).items():
        pick = lambda i, make=make: make(jnp.asarray(GRID)[jnp.asarray(i).astype(jnp.int32)])  # noqa: E731
        tr = sweep(pick, np.arange(len(GRID), dtype=float), prob, jax.random.key(1), steps=args.steps,
                   log_every=args.log_every)
        final = np.asarray(tr.metrics["rel_subopt"])[:, 0, -1]
        final = np.where(tr.diverged[:, 0] | ~np.isfinite(final), np.inf, final)
        best = int(np.argmin(final))
        lr = GRID[best]
        one = run(pick(float(best)), prob, jax.random.key(1), steps=args.steps, log_every=args.log_every,
                  chunks=args.steps // args.log_every)
        rel = np.asarray(one.metrics["rel_subopt"])[0]
        if per_step is None:
            calls = np.asarray(one.metrics["oracle_calls"])[0]
        else:
            calls = one.steps * (per_step[0] * bi + per_step[1] * bo)
        wall = one.block_wall_s
        rows.append((name, lr, float(rel[-1]), first_hit(rel, wall, 1e-2), first_hit(rel, calls, 1e-2),
                     first_hit(rel, wall, 1e-4), first_hit(rel, calls, 1e-4)))
    print(f"instance: finite-sum quadratic n_inner=n_outer=256, p=20, d=10, batches {bi}/{bo}, mu_inner=0.1; "
          f"{args.steps} steps; grid (outer, inner) = {GRID[:, 0].tolist()[::3]} x {GRID[:3, 1].tolist()}")
    print("| method | chosen (outer, inner) | final rel. subopt | time to 1e-2 (s) | calls to 1e-2 | "
          "time to 1e-4 (s) | calls to 1e-4 |")
    print("|---|---|---|---|---|---|---|")
    for name, lr, fin, t2, c2, t4, c4 in rows:
        print(f"| {name} | ({lr[0]:g}, {lr[1]:g}) | {fin:.2e} | {t2:.3g} | {c2:.3g} | {t4:.3g} | {c4:.3g} |")


if __name__ == "__main__":
    main()
