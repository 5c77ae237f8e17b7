"""AiPOD on the equality-constrained quadratic bilevel problem: ratelab against a plain NumPy reference loop.

The experiment is ``aipod-quadratic`` (quick configuration by default): AiPOD (Xiao et al., AISTATS 2023) with
alpha_k = alpha / sqrt(k + 1), beta_k = beta / sqrt(k + 1), S lower-level projected SGD steps, an N-term projected
Neumann series with one (diagonal-noise) Hessian sample per term, projections onto {B x = e} and {A y + H x = c}.

(a) NumPy reference loop, the way reference scripts are written: for each seed a fresh ``np.random.default_rng``,
    then one Python iteration per outer step, S lower steps and N Neumann terms as Python loops, float64.
(b) ratelab: ``ratelab.runner.run(aipod(...), problem, key, ...)`` (``jit(vmap(lax.scan))``), float64; its
    execution time (``run_s``) and ahead-of-time compile time (``compile_s``) are reported apart, plus a warm call.

Both estimate the same quantity, the mean over seeds of the running average of ||P_X ∇F(x_k)||^2 at the last step
(different random streams, so they agree within Monte Carlo error); the script checks agreement within 5 standard
errors and exits with status 1 otherwise.

Run from the repository root::

    python benchmarks/aipod.py               # 16 seeds x 2,000 steps; NumPy on all seeds; about a minute
    python benchmarks/aipod.py --seeds 64 --steps 5000 --numpy-seeds 8   # NumPy timed on 8 seeds, extrapolated
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from bilevel.aipod import aipod, sqrt_decay
from experiments.aipod import AIPOD_QUADRATIC, _problem
from ratelab.runner import run


def numpy_aipod(p: dict[str, np.ndarray], *, steps: int, seed: int, alpha: float, beta: float, S: int,
                N: int) -> float:
    """One seed of AiPOD in plain NumPy; returns (1/K) sum_k ||P_X ∇F(x_k)||^2 (x_k after each outer step)."""
    rng = np.random.default_rng(seed)
    dx, dy = p["fx"].size, p["fy"].size
    sigma, hs, eta = float(p["sigma"]), float(p["hess_sigma"]), 1.0 / float(p["lower_smoothness"])
    HtApt = p["H"].T @ p["Ap"].T
    x = p["PB"] @ p["x0"] + p["Bp"] @ p["e"]
    y = p["PA"] @ p["y0"] + p["Ap"] @ (p["c"] - p["H"] @ x)
    total = 0.0
    for k in range(steps):
        a, b = alpha / np.sqrt(k + 1.0), beta / np.sqrt(k + 1.0)
        for _ in range(S):
            g = p["Q"] @ y - p["P"] @ x + p["q"] + sigma * rng.standard_normal(dy)
            y = p["PA"] @ (y - b * g) + p["Ap"] @ (p["c"] - p["H"] @ x)
        gx = p["Fxx"] @ x + p["Fxy"] @ y + p["fx"] + sigma * rng.standard_normal(dx)
        gy = p["Fxy"].T @ x + p["Fyy"] @ y + p["fy"] + sigma * rng.standard_normal(dy)
        u = p["PA"] @ gy
        acc = u.copy()
        for _ in range(N - 1):
            u = p["PA"] @ (u - eta * (p["Q"] @ u + hs * rng.standard_normal(dy) * u))
            acc += u
        w = eta * acc
        jac_w = -p["P"].T @ w + hs * rng.standard_normal(dx) * np.sqrt(w @ w)
        h = gx - HtApt @ gy - jac_w + HtApt @ (p["Q"] @ w + hs * rng.standard_normal(dy) * w)
        x = p["PB"] @ (x - a * h) + p["Bp"] @ p["e"]
        grad = p["PB"] @ (p["hessF"] @ x + p["gradF0"])
        total += grad @ grad
    return total / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--numpy-seeds", type=int, default=None, help="seeds timed in NumPy (extrapolated linearly)")
    args = ap.parse_args(argv)
    cfg = AIPOD_QUADRATIC.config("quick")
    S, N, alpha, beta = cfg["lower_steps"], cfg["neumann_steps"], cfg["alpha"], cfg["beta"]
    problem = _problem(cfg)
    print(f"AiPOD, dim_x = {cfg['dim_x']}, dim_y = {cfg['dim_y']}, S = {S}, N = {N}; {args.seeds} seeds x "
          f"{args.steps} steps, float64; {os.cpu_count()} CPUs, jax {jax.__version__}")

    solver = aipod(sqrt_decay(alpha), sqrt_decay(beta), lower_steps=S, neumann_steps=N)
    t0 = time.perf_counter()
    kw = dict(steps=args.steps, seeds=args.seeds, log_every=args.steps, aggregate="mean", x64=True)
    cold = run(solver, problem, 0, **kw)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = run(solver, problem, 1, **kw)
    warm_s = time.perf_counter() - t0
    rl_est = warm["grad_norm_sq"][:, 0]

    n_np = args.numpy_seeds or args.seeds
    p = {k: np.asarray(v, dtype=float) for k, v in vars(problem).items()}
    t0 = time.perf_counter()
    np_est = np.array([numpy_aipod(p, steps=args.steps, seed=s, alpha=alpha, beta=beta, S=S, N=N)
                       for s in range(n_np)])
    np_s = (time.perf_counter() - t0) * args.seeds / n_np

    print(f"(a) NumPy loop     : {np_s:8.2f} s" + (f"  (timed on {n_np} seeds, extrapolated)" if n_np < args.seeds
                                                     else ""))
    print(f"(b) ratelab run_s  : {warm.timings['run_s']:8.3f} s   compile_s (cold call): "
          f"{cold.timings['compile_s']:.2f} s")
    print(f"    ratelab calls  : cold {cold_s:.2f} s, warm {warm_s:.2f} s")
    print(f"ratio NumPy / ratelab execution: {np_s / warm.timings['run_s']:.1f}x;  NumPy / ratelab cold call: "
          f"{np_s / cold_s:.1f}x;  NumPy / ratelab warm call: {np_s / warm_s:.1f}x")
    se = np.sqrt(rl_est.var(ddof=1) / rl_est.size + np_est.var(ddof=1) / np_est.size)
    diff = abs(rl_est.mean() - np_est.mean())
    print(f"(1/K) sum ||P_X grad F||^2: ratelab {rl_est.mean():.4g}, NumPy {np_est.mean():.4g} "
          f"(difference {diff / se:.2f} standard errors)")
    if diff > 5 * se:
        print("ratelab and NumPy disagree by more than 5 standard errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
