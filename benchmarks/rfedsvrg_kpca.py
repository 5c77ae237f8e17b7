"""RFedSVRG and R-FedAvg on kPCA at Li & Ma's size: the authors' NumPy loop (ported) against ratelab.

Instance (the authors' ``plots_stiefel_synthetic_changing_tau.py``, tau = 10 row): St(d = 200, r = 5), n = 100
clients, client i holding A_i = Z_i Z_i^T with Z_i a 200 x 100 standard Gaussian sample (p = 100), k = 10 clients
per round, tau = 10 local steps, 300 rounds, eta = 1e-3 for RFedSVRG and 2e-4 for R-FedAvg, QR retraction (signs
fixed), its inverse by the upper-triangular solve, transport by projection, the tangent-space mean on the server.

(a) The authors' loop, ported to NumPy (``Stiefel_fedmanifold.py``: ``fedlin`` with mu = 0 is RFedSVRG,
    ``fedprox`` with mu = 0 is R-FedAvg; written here from reading it): per round the full gradient as a loop over
    the n clients, per sampled client a Python loop over the tau local steps (each also computing the proximal
    term's inverse retraction, multiplied by mu = 0, and a norm test), the tangent-space mean, then the authors'
    per-round records: f(x) and ||grad f(x)|| (two more loops over the n clients) and the principal angles to x*.
(b) ratelab: ``rl.run(rfedsvrg(...) / rfedavg(...), federated_pca(A, manifold="stiefel"), ...)`` in float64, one
    seed and R seeds (vmapped); its metrics every round (gap, ||grad f||^2, distance to x*, feasibility).

Same answer: the NumPy loop replays the clients ratelab sampled (seed 0), so both must produce the same iterates:
the script checks max |x_numpy - x_ratelab| <= 1e-8 after every method's last round, and that RFedSVRG ends with
a smaller optimality gap than R-FedAvg (exit status 1 otherwise). (With the authors' steps neither is at x* after
300 rounds: RFedSVRG's gap is about 0.03, R-FedAvg's about 7.5.)

FLOPs per round (the algorithm's, counted in products of a d x d client matrix with a d x r point, 2 d^2 r each; the
d x r^2 terms are left out): RFedSVRG 1 + k (1 + tau) (the server's full gradient as one product with the clients'
average, each client's gradient at x^t and its tau local gradients), R-FedAvg k tau. The authors' loop computes
3 n + k (1 + tau) and 2 n + k tau of them (the full gradient client by client, and its per-round records).

Run from the repository root::

    python benchmarks/rfedsvrg_kpca.py                 # 300 rounds, R = 8
    python benchmarks/rfedsvrg_kpca.py --quick         # 30 rounds, R = 4
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import numpy as np
import scipy.linalg
from _common import finish, matmul_peak, parse_args, ratios

import ratelab as rl
from riemannian.fed_problems import federated_pca
from riemannian.federated import rfedavg, rfedsvrg

D, R_RANK, N_CLIENTS, P_SAMPLES, K, TAU = 200, 5, 100, 100, 10, 10
ETA = {"rfedsvrg": 1e-3, "rfedavg": 2e-4}


class AuthorsKPCA:
    """The authors' kPCA problem and their two loops, in NumPy (Python loops where they loop)."""

    def __init__(self, A: np.ndarray, x_star: np.ndarray):
        self.A, self.n, self.x_star = A, A.shape[0], x_star
        self.r = x_star.shape[1]

    @staticmethod
    def proj(x, u):
        xtu = x.T @ u
        return u - x @ ((xtu + xtu.T) / 2)

    @staticmethod
    def retr(x, g):
        q, r = np.linalg.qr(x + g)
        return q @ np.diag(np.sign(np.sign(np.diag(r)) + 0.5))

    @staticmethod
    def solve_for_triu(a, h):
        p = a.shape[0]
        out = np.zeros((p, p))
        for pp in range(1, p + 1):
            b = h[0:pp, pp - 1].copy()
            b[-1] = b[-1] / 2
            b[0:pp - 1] = b[0:pp - 1] - out[0:pp - 1, 0:pp - 1].T @ a[pp - 1, 0:pp - 1].T
            out[0:pp, pp - 1] = np.linalg.solve(a[0:pp, 0:pp], b)
        return out

    def inv_retr(self, x, y):
        return y @ self.solve_for_triu(x.T @ y, 2 * np.eye(self.r)) - x

    def grad_fi(self, x, i):
        return -self.A[i] @ x

    def grad_f(self, x):
        g = np.zeros_like(x)
        for i in range(self.n):
            g += self.grad_fi(x, i)
        return g / self.n

    def f(self, x):
        return sum(-np.trace(x.T @ self.A[i] @ x) / 2 for i in range(self.n)) / self.n

    def tangent_space_mean(self, x, xs):
        g = np.zeros_like(x)
        for xj in xs:
            g += self.inv_retr(x, xj)
        return self.retr(x, g / len(xs))

    def run(self, kind: str, x0, batches, eta, tau, mu=0.0, eps=1e-8):
        x = x0.copy()
        fvals, norms, angles = [], [], []
        for batch in batches:
            if kind == "rfedsvrg":
                gt = self.proj(x, self.grad_f(x))
            xs = []
            for i in batch:
                xi = x.copy()
                if kind == "rfedsvrg":
                    gti = self.proj(x, self.grad_fi(x, i))
                for _ in range(tau):
                    grad = self.proj(xi, self.grad_fi(xi, i) + mu * self.inv_retr(xi, x))
                    if np.linalg.norm(grad) <= eps:
                        break
                    if kind == "rfedsvrg":
                        xi = self.retr(xi, -eta * (grad + self.proj(xi, -gti + gt)))
                    else:
                        xi = self.retr(xi, -eta * grad)
                xs.append(xi)
            x = self.tangent_space_mean(x, xs)
            fvals.append(self.f(x))
            angles.append(np.sum(scipy.linalg.subspace_angles(x, self.x_star)))
            norms.append(np.linalg.norm(self.proj(x, self.grad_f(x))))
        return x, np.array(fvals), np.array(norms), np.array(angles)


def client_batches(solver, problem, key, rounds: int) -> np.ndarray:
    """The clients ratelab's run samples for seed 0 (the runner's key schedule, ``log_every = 1``)."""
    run_key = jax.random.split(jax.random.split(key, 1)[0])[1]
    return np.stack([np.asarray(solver.sample(problem, jax.random.fold_in(run_key, b), 1)["clients"][0])
                     for b in range(rounds)])


def main() -> int:
    args = parse_args(__doc__, "30 rounds, R = 4", "8 (quick 4)", size=("--rounds", "rounds (default 300)"))
    rounds = args.rounds or (30 if args.quick else 300)
    reps = args.reps or (4 if args.quick else 8)
    print(f"kPCA on St({D}, {R_RANK}): n = {N_CLIENTS} clients, p = {P_SAMPLES}, k = {K}, tau = {TAU}, "
          f"{rounds} rounds; R = {reps}")
    peak = matmul_peak("float64")
    rng = np.random.default_rng(3432)
    Z = rng.standard_normal((N_CLIENTS, D, P_SAMPLES))
    A = Z @ np.swapaxes(Z, 1, 2)
    x0 = np.linalg.qr(rng.standard_normal((D, R_RANK)))[0]
    key = jax.random.key(0)
    mv = 2.0 * D * D * R_RANK  # one client matrix times a d x r point
    flops = {"rfedsvrg": mv * (1 + K * (1 + TAU)), "rfedavg": mv * K * TAU}
    np_flops = {"rfedsvrg": mv * (3 * N_CLIENTS + K * (1 + TAU)), "rfedavg": mv * (2 * N_CLIENTS + K * TAU)}
    results, ok = {}, True
    with jax.enable_x64(True):
        problem = federated_pca(A, manifold="stiefel", rank=R_RANK, x0=x0)
        authors = AuthorsKPCA(A, np.asarray(problem.x_star))
        for kind, make in (("rfedsvrg", rfedsvrg), ("rfedavg", rfedavg)):
            solver = make(ETA[kind], local_steps=TAU, clients_per_round=K)
            t0 = time.perf_counter()
            one = rl.run(solver, problem, key, steps=rounds, seeds=1, x64=True)
            cold_one = time.perf_counter() - t0
            one_b = rl.run(solver, problem, jax.random.key(1), steps=rounds, seeds=1, x64=True)
            many = rl.run(solver, problem, key, steps=rounds, seeds=reps, x64=True)
            batches = client_batches(solver, problem, key, rounds)
            t0 = time.perf_counter()
            x_np, fvals, norms, angles = authors.run(kind, x0, batches, ETA[kind], TAU)
            t_np = time.perf_counter() - t0
            x_rl = np.asarray(one.final_state.x)[0]
            diff = float(np.abs(x_np - x_rl).max())
            dist = float(one["dist_to_opt"][0, -1])
            print(f"\n{kind}: NumPy final f - f* = {fvals[-1] - float(problem.f_star):.3e}, ||grad f|| = "
                  f"{norms[-1]:.3e}, sum of principal angles {angles[-1]:.3e}; ratelab distance to x* {dist:.3e}, "
                  f"gap {float(one['gap'][0, -1]):.3e}; max |x_numpy - x_ratelab| = {diff:.2e} "
                  f"(cold ratelab call {cold_one:.2f} s)")
            ok &= diff <= 1e-8
            rl_one = {"compile_s": one.timings["compile_s"], "run_s": min(one.timings["run_s"], one_b.timings["run_s"])}
            rl_many = {"compile_s": many.timings["compile_s"],
                       "run_s": many.timings["run_s"]}
            results[kind] = {**ratios(f"{kind} kPCA", t_np, rl_one, rl_many, reps, rounds, flops[kind], peak,
                                      np_flops_per_step=np_flops[kind]),
                             "max_abs_diff": diff, "final_dist": dist, "final_gap": float(one["gap"][0, -1])}
        ok &= results["rfedsvrg"]["final_gap"] < results["rfedavg"]["final_gap"]  # SVRG ahead of FedAvg (the paper)
    return finish(args, "rfedsvrg_kpca", results, ok, "the NumPy loop and ratelab disagree, or RFedSVRG did not end "
                  "ahead of R-FedAvg")


if __name__ == "__main__":
    sys.exit(main())
