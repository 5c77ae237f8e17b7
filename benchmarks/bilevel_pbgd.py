"""V-PBGD in ratelab vs a plain NumPy reference loop of the same algorithm (float64 in both).

1. The toy gamma sweep: the paper's toy (Shen, Xiao & Chen, arXiv:2302.05185) for ``--gammas`` penalty values x
   ``--seeds`` random initialisations; ratelab vmaps over gamma and seeds (``sweep``), NumPy vectorises over
   (gamma, seed) with a Python loop over steps.
2. Data hyper-cleaning with the linear model (full batch, T = 1 warm-started inner step, fixed gamma): ratelab's
   autodiff V-PBGD vs hand-written NumPy gradients.

Both implementations start from the same points; the script checks that they end at the same iterates, then prints
the wall times (compile time separately) and the ratios.  Usage: ``python benchmarks/bilevel_pbgd.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from bilevel.bilevel_problems import make_toy
from bilevel.hypercleaning import make_hypercleaning
from bilevel.pbgd import v_pbgd
from ratelab.runner import as_keys, run, sweep


def toy_numpy(x0: np.ndarray, y0: np.ndarray, gammas: np.ndarray, steps: int, alpha0: float, beta: float):
    """V-PBGD on the toy, arrays [gammas, seeds]; z is the warm-started inner iterate (T = 1)."""
    x, y, z = x0.copy(), y0.copy(), y0.copy()
    g = gammas[:, None]
    a = alpha0 / g
    for _ in range(steps):
        t = x + z
        z = z - beta * (2 * t + x * np.sin(2 * t))
        e = np.exp(2 - 4 * x)
        s = x + y
        fx = 4 * e * np.cos(4 * y + 2) / (1 + e) ** 2 + (16 * x - 8) / ((4 * x - 2) ** 2 + 1)
        fy = -4 * np.sin(4 * y + 2) / (1 + e)
        gx_y = 2 * s + np.sin(s) ** 2 + x * np.sin(2 * s)
        gy_y = 2 * s + x * np.sin(2 * s)
        tz = x + z
        gx_z = 2 * tz + np.sin(tz) ** 2 + x * np.sin(2 * tz)
        x_new = np.clip(x - a * (fx + g * (gx_y - gx_z)), 0.0, 3.0)
        y = y - a * (fy + g * gy_y)
        x = x_new
    return x, y


def bench_toy(n_gamma: int, seeds: int, steps: int) -> None:
    toy, gammas = make_toy(), np.logspace(0, 2, n_gamma)
    alpha0, beta = 0.1, 0.1

    def make(g):
        return v_pbgd(x_optimizer=alpha0 / g, y_optimizer=alpha0 / g, gamma=g, inner_steps=1, inner_lr=beta,
                      project_x=toy.project_x)

    t0 = time.perf_counter()
    tr = sweep(make, gammas, toy, 0, steps=steps, seeds=seeds, log_every=steps, x64=True)
    wall = time.perf_counter() - t0
    with jax.enable_x64(True):
        toy64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), toy)
        init_keys = jax.vmap(jax.random.split)(as_keys(0, seeds))[:, 0]
        x0, y0 = (np.asarray(v) for v in jax.vmap(toy64.initial)(init_keys))
    x0 = np.broadcast_to(np.clip(x0, 0, 3), (n_gamma, seeds))
    y0 = np.broadcast_to(y0, (n_gamma, seeds))
    t0 = time.perf_counter()
    x_np, y_np = toy_numpy(x0, y0, gammas, steps, alpha0, beta)
    t_np = time.perf_counter() - t0
    err = max(np.abs(x_np - tr.final_state.x).max(), np.abs(y_np - tr.final_state.y).max())
    run_s = tr.timings["run_s"]
    print(f"toy gamma sweep ({n_gamma} gammas x {seeds} seeds x {steps} steps): max |ratelab - numpy| = {err:.2e}")
    print(f"  ratelab run {run_s:.3f} s (+ compile {tr.timings['compile_s']:.2f} s, wall {wall:.2f} s); "
          f"numpy {t_np:.3f} s; speed-up numpy/ratelab: run {t_np / run_s:.1f}x, incl. compile {t_np / wall:.2f}x")


def clean_numpy(p, x, W, b, steps: int, alpha: float, beta: float, gamma: float):
    """V-PBGD on hyper-cleaning (linear model) with hand-written gradients."""
    Xtr, btr, Xv, bv = (np.asarray(v, dtype=np.float64) for v in (p.X_tr, p.b_tr, p.X_val, p.b_val))
    btr, bv = btr.astype(int), bv.astype(int)
    n, nv, C = Xtr.shape[0], Xv.shape[0], W.shape[1]
    Ytr, Yv = np.eye(C)[btr], np.eye(C)[bv]

    def probs(X, W, b):
        z = X @ W + b
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def ce(P, labels):
        return -np.log(P[np.arange(P.shape[0]), labels])

    zW, zb = W.copy(), b.copy()
    for _ in range(steps):
        s = 1 / (1 + np.exp(-x))
        Pz = probs(Xtr, zW, zb)
        Gz = s[:, None] * (Pz - Ytr) / n
        zW, zb = zW - beta * Xtr.T @ Gz, zb - beta * Gz.sum(0)
        Pz = probs(Xtr, zW, zb)
        Py = probs(Xtr, W, b)
        Pv = probs(Xv, W, b)
        gx = gamma * s * (1 - s) * (ce(Py, btr) - ce(Pz, btr)) / n
        Gy = gamma * s[:, None] * (Py - Ytr) / n
        Gv = (Pv - Yv) / nv
        W = W - alpha * (Xv.T @ Gv + Xtr.T @ Gy)
        b = b - alpha * (Gv.sum(0) + Gy.sum(0))
        x = x - alpha * gx
    return x, W, b


def bench_clean(n_train: int, steps: int) -> None:
    p = make_hypercleaning(jax.random.key(0), n_train=n_train, n_val=n_train, n_test=1000)
    alpha, beta, gamma = 0.1, 0.01, 0.2
    solver = v_pbgd(x_optimizer=alpha, y_optimizer=alpha, gamma=gamma, inner_steps=1, inner_lr=beta)
    t0 = time.perf_counter()
    tr = run(solver, p, 0, steps=steps, seeds=1, log_every=steps, x64=True)
    wall = time.perf_counter() - t0
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v, p)
        key = jax.vmap(jax.random.split)(as_keys(0, 1))[0, 0]
        x0, y0 = p64.initial(key)
    t0 = time.perf_counter()
    x_np, W_np, _ = clean_numpy(p, np.asarray(x0), np.asarray(y0["W"]), np.asarray(y0["b"]), steps, alpha, beta,
                                gamma)
    t_np = time.perf_counter() - t0
    err = max(np.abs(x_np - tr.final_state.x[0]).max(), np.abs(W_np - tr.final_state.y["W"][0]).max())
    run_s = tr.timings["run_s"]
    print(f"hyper-cleaning, linear ({n_train} train samples x {steps} steps): max |ratelab - numpy| = {err:.2e}")
    print(f"  ratelab run {run_s:.3f} s (+ compile {tr.timings['compile_s']:.2f} s, wall {wall:.2f} s); "
          f"numpy {t_np:.3f} s; speed-up numpy/ratelab: run {t_np / run_s:.1f}x, incl. compile {t_np / wall:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; numpy {np.__version__}")
    if args.quick:
        bench_toy(8, 64, 2000)
        bench_clean(500, 500)
    else:
        bench_toy(16, 256, 5000)
        bench_clean(1000, 1000)


if __name__ == "__main__":
    main()
