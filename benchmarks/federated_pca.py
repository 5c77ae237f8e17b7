"""RFedSVRG on federated PCA: ratelab (jit(vmap(scan)), clients vmapped) against a plain NumPy loop of Algorithm 1.

The experiment: federated PCA on the Grassmann manifold Gr(d, r), f_i(X) = -1/2 tr(X^T A_i X), n clients with
heterogeneous covariances (``make_federated_pca``, heterogeneity h = 1), k clients per round, tau local steps,
step eta, QR retraction, its inverse Y (X^T Y)^{-1} - X and transport by projection (Li & Ma 2022, Algorithm 1,
Option 1), ``--seeds`` independent runs of ``--rounds`` rounds, logging the subspace distance every round.

(a) NumPy, float64: for each seed, a Python loop over rounds, over the k sampled clients and over the tau local
    steps, as the authors' reference scripts do;
(b) ratelab: ``ratelab.runner.run(rfedsvrg(...), problem, key, x64=True)``; execution (``run_s``) and
    compile (``compile_s``) times are reported apart.

Both must reach x*: the script checks that every seed of both ends within 1e-8 of x* (exit status 1 otherwise)
and prints the ratio of the NumPy time to ratelab's execution time (and to its cold time, compile included).

Run from the repository root::

    python benchmarks/federated_pca.py            # d = 50, r = 5, 20 clients, 5/round, tau = 10, 100 rounds, 8 seeds
    python benchmarks/federated_pca.py --quick    # smaller: d = 20, r = 3, 10 clients, 40 rounds, 4 seeds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from ratelab.runner import run
from riemannian.fed_problems import make_federated_pca
from riemannian.federated import rfedsvrg


def qf(a: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(a)
    s = np.sign(np.diag(r))
    s[s == 0] = 1.0
    return q * s


def numpy_rfedsvrg(A: np.ndarray, x0: np.ndarray, x_star: np.ndarray, *, eta: float, tau: int, k: int,
                   rounds: int, seed: int) -> np.ndarray:
    """Algorithm 1 on Gr(d, r) in plain NumPy: returns the subspace distance after each round."""
    rng = np.random.default_rng(seed)
    n = A.shape[0]

    def proj(x, u):
        return u - x @ (x.T @ u)

    def grad(x, i):
        return proj(x, -A[i] @ x)

    def inv_retr(x, y):
        return np.linalg.solve(y.T @ x, y.T).T - x

    x = x0.copy()
    out = np.empty(rounds)
    for t in range(rounds):
        g = sum(grad(x, i) for i in range(n)) / n
        vs = []
        for i in rng.permutation(n)[:k]:
            corr = grad(x, i) - g
            z = x
            for _ in range(tau):
                z = qf(z - eta * (grad(z, i) - proj(z, corr)))
            vs.append(inv_retr(x, z))
        x = qf(x + sum(vs) / k)
        out[t] = np.linalg.norm(x - x_star @ (x_star.T @ x))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    d, r, n, k, tau = (20, 3, 10, 4, 5) if args.quick else (50, 5, 20, 5, 10)
    seeds = args.seeds or (4 if args.quick else 8)
    rounds = args.rounds or (40 if args.quick else 100)
    eta = 0.5
    print(f"RFedSVRG, federated PCA on Gr({d}, {r}): {n} clients, {k} per round, tau = {tau}, eta = {eta}, "
          f"{rounds} rounds x {seeds} seeds; {os.cpu_count()} CPUs")
    with jax.enable_x64(True):
        problem = make_federated_pca(jax.random.key(0), n_clients=n, dim=d, rank=r, heterogeneity=1.0)
    A, x0, xs = (np.asarray(problem.A), np.asarray(problem.x0), np.asarray(problem.x_star))

    t0 = time.perf_counter()
    ref = np.stack([numpy_rfedsvrg(A, x0, xs, eta=eta, tau=tau, k=k, rounds=rounds, seed=s) for s in range(seeds)])
    t_np = time.perf_counter() - t0

    solver = rfedsvrg(eta, local_steps=tau, clients_per_round=k)
    t0 = time.perf_counter()
    tr = run(solver, problem, 0, steps=rounds, seeds=seeds, x64=True)
    cold = time.perf_counter() - t0
    tr2 = run(solver, problem, 1, steps=rounds, seeds=seeds, x64=True)
    run_s = min(tr.timings["run_s"], tr2.timings["run_s"])

    print(f"(a) NumPy loop          : {t_np:8.3f} s   final distance (max over seeds) {ref[:, -1].max():.2e}")
    final = tr["dist_to_opt"][:, -1].max()
    print(f"(b) ratelab, execution  : {run_s:8.3f} s   final distance (max over seeds) {final:.2e}")
    print(f"    ratelab, compile    : {tr.timings['compile_s']:8.3f} s   (cold run() call: {cold:.3f} s)")
    print(f"ratio NumPy / ratelab execution: {t_np / run_s:.1f}x;  NumPy / ratelab cold call: {t_np / cold:.2f}x")
    ok = ref[:, -1].max() < 1e-8 and tr["dist_to_opt"][:, -1].max() < 1e-8
    if not ok:
        print("FAILED: a method did not reach x* within 1e-8", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
