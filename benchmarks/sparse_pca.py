"""Riemannian ADMM on sparse PCA: ratelab (jit + vmap over seeds + lax.scan) against a plain NumPy loop of the
same algorithm (one seed and one iteration at a time), on the same data and the same random starts.

    /work/venv/bin/python benchmarks/sparse_pca.py [--n 100 --p 5 --m 50 --steps 2000 --seeds 8]

Prints both timings, their ratio and the largest difference between the final objectives (float64).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from ratelab.runner import run
from riemannian.admm import radmm, theory_parameters
from riemannian.sparse_problems import make_sparse_pca


def numpy_radmm(C: np.ndarray, mu: float, x0: np.ndarray, steps: int, eta: float, rho: float, gamma: float
                ) -> float:
    """The same iteration as ``riemannian.admm.radmm`` (B = I, QR retraction) in NumPy; returns F(x_K)."""

    def soft(w, t):
        return np.sign(w) * np.maximum(np.abs(w) - t * mu, 0.0)

    def qf(a):
        q, r = np.linalg.qr(a)
        s = np.sign(np.diag(r))
        s[s == 0] = 1.0
        return q * s

    x = x0.copy()
    y = x.copy()
    lam = (y - soft(y, gamma)) / gamma
    for _ in range(steps):
        g = -2.0 * C @ x + lam + rho * (x - y)
        xtg = x.T @ g
        rg = g - x @ (0.5 * (xtg + xtg.T))
        x = qf(x - eta * rg)
        w = x + lam / rho
        z = soft(w, gamma + 1.0 / rho)
        y = (z + rho * gamma * w) / (1.0 + rho * gamma)
        lam = lam + rho * (x - y)
    return float(-np.sum(x * (C @ x)) + mu * np.abs(x).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--p", type=int, default=5)
    parser.add_argument("--m", type=int, default=50)
    parser.add_argument("--mu", type=float, default=0.5)
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()

    with jax.enable_x64(True):
        problem = make_sparse_pca(jax.random.key(1), m=args.m, n=args.n, p=args.p, mu=args.mu)
        par = theory_parameters(args.eps)
        solver = radmm(**par, random_init=True)
        keys = jax.random.split(jax.random.key(0), args.seeds)
        # the starts run() uses: init_key = split(keys[s])[0]
        starts = [np.asarray(problem.manifold.random_point(jax.random.split(k)[0])) for k in keys]

    t0 = time.perf_counter()
    trace = run(solver, problem, keys, steps=args.steps, seeds=args.seeds, log_every=args.steps, x64=True)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = run(solver, problem, keys, steps=args.steps, seeds=args.seeds, log_every=args.steps, x64=True)
    warm = time.perf_counter() - t0

    C = np.asarray(problem.C)
    t0 = time.perf_counter()
    ref = [numpy_radmm(C, args.mu, x0, args.steps, par["step_size"], par["rho"], par["gamma"]) for x0 in starts]
    t_np = time.perf_counter() - t0

    diff = float(np.max(np.abs(trace["objective"][:, -1] - np.asarray(ref))))
    print(f"R-ADMM sparse PCA: n={args.n} p={args.p} m={args.m} mu={args.mu} eps={args.eps}, "
          f"{args.seeds} seeds x {args.steps} steps (float64)")
    print(f"  ratelab run (cold, incl. compile): {cold:8.3f} s")
    print(f"  ratelab run (warm):                {warm:8.3f} s")
    print(f"  NumPy reference loop:              {t_np:8.3f} s")
    print(f"  speed-up NumPy / ratelab warm: {t_np / warm:6.1f}x   cold: {t_np / cold:6.2f}x")
    print(f"  max |F_ratelab - F_numpy| over seeds: {diff:.2e}")


if __name__ == "__main__":
    main()
