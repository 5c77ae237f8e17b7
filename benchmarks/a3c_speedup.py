"""The A3C-TD(0) speedup study (experiment ``a3c-speedup``) in ratelab against a plain NumPy loop of the same algorithm.

The study: the paper's synthetic MDP (|S| = 100, |A| = 5, d = 10, gamma = 0.9, tabular softmax policy), A3C-TD(0)
with alpha_k = 30 / (1 + k)^0.6, beta_k = 1 / (1 + k)^0.4, critic radius 20, round-robin delays (tau_k = N - 1),
for N in {1, 2, 4, 8, 16} workers and ``--seeds`` seeds, ``--steps`` iterations each, the exact J(theta_k) logged
every ``--log-every`` iterations (one 100 x 100 linear solve), then the samples per worker until the running mean
of J reaches the experiment's target.

(a) NumPy: for each N and seed a Python loop over iterations with NumPy arrays (a ring buffer of the last N
    parameter versions, one Markov chain per worker, inverse-CDF sampling with ``np.searchsorted``), float64;
(b) ratelab: ``experiments.a3c.worker_sweep``, i.e. ``jit(vmap(vmap(lax.scan)))`` over N and seeds, float32;
    execution and compile time reported apart.

Both must agree on what they estimate: the mean over seeds of the final J for every N within 4 standard errors
(plus 0.02 for float32 / sampling-path differences); the script exits with status 1 otherwise.

Run from the repository root::

    python benchmarks/a3c_speedup.py                         # 2 seeds x 10,000 steps; about a minute on 2 cores
    python benchmarks/a3c_speedup.py --steps 40000 --seeds 4   # the quick config (the NumPy loop takes minutes)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from experiments.a3c import _QUICK, WORKERS, _mdp, samples_to_target, target_reward, worker_sweep
from ratelab.rates import running_mean


def numpy_run(mdp, cfg: dict, n_workers: int, seed: int) -> np.ndarray:
    """One seed of A3C-TD(0) with N workers in plain NumPy; returns J(theta_k) at every logged k."""
    rng = np.random.default_rng(seed)
    P_cdf = np.asarray(mdp.P_cdf, float)
    R = np.asarray(mdp.R, float)
    P = np.asarray(mdp.P, float)
    phi = np.asarray(mdp.phi, float)
    eta = np.asarray(mdp.eta, float)
    eta_cdf = np.cumsum(eta)
    gamma = float(mdp.gamma)
    S, A = P.shape[:2]
    r_sa = np.einsum("sat,sat->sa", P, R)
    c1, c2, radius = cfg["c1"], cfg["c2"], cfg["radius"]
    theta = np.zeros((S, A))
    omega = np.zeros(phi.shape[1])
    B = n_workers
    ring_theta = np.zeros((B, S, A))
    ring_omega = np.zeros((B, phi.shape[1]))
    chains = np.searchsorted(eta_cdf, rng.random(n_workers), side="right")
    out = []
    for k in range(cfg["steps"]):
        w = k % n_workers
        tau = min(k, n_workers - 1)
        th_r, om_r = ring_theta[(k - tau) % B], ring_omega[(k - tau) % B]
        s = chains[w]
        logits = th_r[s] - th_r[s].max()
        pi = np.exp(logits) / np.exp(logits).sum()
        u = rng.random(4)
        a = min(np.searchsorted(np.cumsum(pi), u[0], side="right"), A - 1)
        s2 = min(np.searchsorted(P_cdf[s, a], u[1], side="right"), S - 1)
        delta = R[s, a, s2] + gamma * phi[s2] @ om_r - phi[s] @ om_r
        omega = omega + c2 / (1 + k) ** 0.4 * delta * phi[s]
        norm = np.linalg.norm(omega)
        if norm > radius:
            omega *= radius / norm
        theta[s] += c1 / (1 + k) ** 0.6 * delta * (np.eye(A)[a] - pi)
        chains[w] = s2 if u[2] < gamma else min(np.searchsorted(eta_cdf, u[3], side="right"), S - 1)
        ring_theta[(k + 1) % B], ring_omega[(k + 1) % B] = theta, omega
        if (k + 1) % cfg["log_every"] == 0:
            e = np.exp(theta - theta.max(axis=1, keepdims=True))
            pol = e / e.sum(axis=1, keepdims=True)
            P_pi = np.einsum("sa,sat->st", pol, P)
            V = np.linalg.solve(np.eye(S) - gamma * P_pi, (pol * r_sa).sum(axis=1))
            out.append(eta @ V)
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=_QUICK["log_every"])
    args = ap.parse_args(argv)
    cfg = {**_QUICK, "steps": args.steps, "seeds": args.seeds, "log_every": args.log_every}
    print(f"A3C-TD(0) speedup study: N in {WORKERS}, {cfg['seeds']} seeds x {cfg['steps']} steps, J logged every "
          f"{cfg['log_every']}; {os.cpu_count()} CPUs")
    mdp = _mdp(cfg)
    target = target_reward(cfg)

    t0 = time.perf_counter()
    J_np = np.stack([np.stack([numpy_run(mdp, cfg, n, s) for s in range(cfg["seeds"])]) for n in WORKERS])
    t_np = time.perf_counter() - t0

    t0 = time.perf_counter()
    tr = worker_sweep(cfg, jax.random.key(cfg["seed"]))
    t_rl = time.perf_counter() - t0
    run_s, compile_s = tr.timings["run_s"], tr.timings["compile_s"]

    steps = tr.steps
    hit_np = running_mean(J_np) >= target
    total_np = np.where(hit_np.any(-1), steps[np.argmax(hit_np, -1)], np.inf)
    total_rl = samples_to_target(tr, target)
    print(f"\n{'N':>3} {'final J numpy':>14} {'final J ratelab':>16} {'samples/worker numpy':>21} "
          f"{'samples/worker ratelab':>23}")
    ok = True
    for j, n in enumerate(WORKERS):
        a, b = J_np[j, :, -1], tr["J"][j, :, -1]
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 else 0.0
        agree = abs(a.mean() - b.mean()) <= 4 * se + 0.02
        ok &= bool(agree)
        print(f"{n:>3} {a.mean():>14.4f} {b.mean():>16.4f} {np.mean(total_np[j]) / n:>21.1f} "
              f"{np.mean(total_rl[j]) / n:>23.1f}{'' if agree else '  DISAGREE'}")
    print(f"\nNumPy loop (float64):        {t_np:8.2f} s")
    print(f"ratelab sweep (float32):     {run_s:8.2f} s execution + {compile_s:.2f} s compile "
          f"(whole call {t_rl:.2f} s)")
    print(f"ratio NumPy / ratelab:       {t_np / run_s:8.1f}x (execution), {t_np / t_rl:.1f}x (whole call)")
    if not ok:
        print("the two implementations disagree on the final J", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
