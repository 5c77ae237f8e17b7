"""A3C-TD(0) on the paper's synthetic MDP: a plain NumPy loop of Algorithm 1 against ratelab, in the common format.

Shen, Zhang, Hong and Chen (arXiv:2012.15511) publish no code, so (a) is a NumPy loop of the algorithm written
here from the paper (Algorithm 1, eqs. (6)-(9)), one Python iteration per step as an author would write it.

The instance: the paper's synthetic MDP (|S| = 100, |A| = 5, d = 10, gamma = 0.9, tabular softmax policy), A3C-TD(0)
with alpha_k = 30 / (1 + k)^0.6, beta_k = 1 / (1 + k)^0.4, critic radius 20, round-robin delays (tau_k = N - 1).
One repetition is one seed of the speedup study (experiment ``a3c-speedup``): N in {1, 2, 4, 8, 16} workers,
``--steps`` iterations each, the exact J(theta_k) logged every 200 iterations (one 100 x 100 solve).

(a) NumPy, float64: for each N a Python loop over iterations (a ring buffer of the last N parameter versions, one
    Markov chain per worker, inverse-CDF sampling with ``np.searchsorted``); J by ``np.linalg.solve``.
(b) ratelab, float64: ``ratelab.runner.sweep`` over the five N (``experiments.a3c``'s ``make``, every N padded to 16
    chains), one seed and R seeds vmapped. It logs more than (a) at each logged step (grad J and the critic's gap as
    well as J: the same 100 x 100 LU, plus a transposed solve for d_theta and a d x d solve), so the comparison is
    conservative for ratelab.

Same answer: the two use different random streams, so for every N the mean over the R repetitions of the final J
must agree within 4 standard errors (plus 0.02); exit status 1 otherwise. Then the total samples until the running
mean of J reaches the experiment's target are printed for both, per worker.

FLOPs per step (the algorithm's): the step itself (softmax over |A|, two feature products of length d, the updates)
is about 8 d + 12 |A|; each logged step adds the exact J, 2/3 |S|^3 + 2 |S|^2 |A| (amortised over ``log_every``).
The loop is overhead-bound (the roof is far), so the cost per step in microseconds is the number to read.

Run from the repository root::

    python benchmarks/a3c_speedup.py             # 10,000 steps, R = 8 (about a minute on 2 cores)
    python benchmarks/a3c_speedup.py --quick     # 4,000 steps, R = 8 (with R = 4 the 4-SE check has 3 degrees
                                                 # of freedom per side and failed at N = 16 on seeds 0-3)
"""

from __future__ import annotations

import os
import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import numpy as np
from _common import finish, matmul_peak, parse_args, ratios

from experiments.a3c import _QUICK, WORKERS, _make, _mdp, target_reward
from ratelab.rates import running_mean
from ratelab.runner import sweep


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


def ratelab_study(cfg: dict, mdp, seeds: int, key: int):
    """The five paper rows (N, step scale 1, sigma1 = 0.6) as one vmapped sweep (J: ``[5, seeds, n]``)."""
    table = tuple((n, 1.0, 0.6) for n in WORKERS)
    make = _make(cfg["c1"], cfg["c2"], max(WORKERS), cfg["radius"], table)
    return sweep(make, np.arange(len(table), dtype=float), mdp, jax.random.key(key), steps=cfg["steps"],
                 seeds=seeds, log_every=cfg["log_every"], x64=True)


def main() -> int:
    args = parse_args(__doc__, "4,000 steps, R = 8", "8", size=("--steps", "iterations per run"))
    reps = args.reps or 8
    steps = args.steps or (4_000 if args.quick else 10_000)
    cfg = {**_QUICK, "steps": steps, "seeds": reps}
    print(f"A3C-TD(0) speedup study: |S| = 100, |A| = 5, d = 10; N in {WORKERS}, {steps} steps, J logged every "
          f"{cfg['log_every']}; R = {reps}; {os.cpu_count()} CPUs")
    peak = matmul_peak("float64")
    with jax.enable_x64(True):
        mdp = _mdp({**cfg, "x64": True})
        target = target_reward(cfg)
        t0 = time.perf_counter()
        J_np = np.stack([np.stack([numpy_run(mdp, cfg, n, s) for s in range(reps)]) for n in WORKERS])
        t_np = (time.perf_counter() - t0) / reps
        timed = {}
        for seeds in (1, reps):
            tr = ratelab_study(cfg, mdp, seeds, 0)
            again = ratelab_study(cfg, mdp, seeds, 1).timings  # the same program, other seeds: execution alone
            timed[seeds] = {"compile_s": tr.timings["compile_s"], "run_s": min(tr.timings["run_s"], again["run_s"]),
                            "trace": tr}
    J_rl = timed[reps]["trace"]["J"]
    steps_logged = timed[reps]["trace"].steps
    print(f"\n{'N':>3} {'final J numpy':>14} {'final J ratelab':>16} {'samples/worker numpy':>21} "
          f"{'samples/worker ratelab':>23}")
    ok, worst = True, 0.0
    for j, n in enumerate(WORKERS):
        a, b = J_np[j, :, -1], J_rl[j, :, -1]
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) if a.size > 1 else 0.0
        agree = abs(a.mean() - b.mean()) <= 4 * se + 0.02
        ok &= bool(agree)
        worst = max(worst, abs(a.mean() - b.mean()))
        hit = [running_mean(J) >= target for J in (J_np[j], J_rl[j])]
        tot = [np.where(h.any(-1), steps_logged[np.argmax(h, -1)], np.inf).mean() / n for h in hit]
        print(f"{n:>3} {a.mean():>14.4f} {b.mean():>16.4f} {tot[0]:>21.1f} {tot[1]:>23.1f}"
              f"{'' if agree else '  DISAGREE'}")
    S, A, d = 100, 5, 10
    flops = 8 * d + 12 * A + (2 / 3 * S**3 + 2 * S**2 * A) / cfg["log_every"]
    # one repetition = the five N one after another: steps counts every N's iterations
    res = ratios("A3C-TD(0), N in {1, ..., 16}", t_np, timed[1], timed[reps], reps, steps * len(WORKERS), flops,
                 peak)
    res["same_text"] = f"final J of every N within 4 SE + 0.02 (largest difference of means {worst:.3f})"
    return finish(args, "a3c_speedup", {"a3c": res}, ok, "the NumPy loop and ratelab disagree on the final J")


if __name__ == "__main__":
    sys.exit(main())
