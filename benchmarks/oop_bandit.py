"""The DPO / RMB-PO / RMB-PO+ study (experiment ``oop-bandit``, the heaviest of the alignment experiments) in ratelab
against a plain NumPy / SciPy loop of the same computation.

The computation: the authors' linear bandit (theta* = (1, 2), K = 4, flipped policy features, beta = 0.3, 0.5 N new
prompts); for each seed and each N, the Bradley-Terry fit of the reward, DPO, RMB-PO and RMB-PO+ (each from the
moment projection, then the reverse objective), all solved to optimality, and their suboptimality on a quadrature.

(a) NumPy / SciPy: one ``scipy.optimize.minimize`` (BFGS, analytic gradients) per problem, a Python loop over seeds
    and N, the way a reference script would write it;
(b) ratelab: ``alignment.dpo.oop_study`` under one ``jit``, ``vmap`` over seeds and N (damped Newton, masks on
    max-N buffers). Execution and compile time are reported apart.

Each RMB-PO problem starts from the moment projection and from the population maximiser, the better local maximum
kept (the objective is not concave). Both implementations solve the same problems with local methods: at N >= 40
their suboptimalities must agree to 1e-4 (exit status 1 otherwise); at the smallest N the empirical RMB-PO objective
can have several local maxima, where the two solvers may stop in different ones (counted and printed). ratelab runs
in float64 like NumPy. Run from the repository root::

    python benchmarks/oop_bandit.py            # 32 seeds, N = 20..320
    python benchmarks/oop_bandit.py --quick    # 8 seeds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from alignment.dpo import PAPER_THETA, Data, features, oop_study, population_limits, quadrature, sample_data

BETA, PRIOR, RATIO, K = 0.3, 0.1, 0.5, 4


def _logistic(d: np.ndarray) -> np.ndarray:
    def f(t):
        z = d @ t
        return np.logaddexp(0, -z).sum() + 0.5 * PRIOR * t @ t, -(d.T @ (1 / (1 + np.exp(z)))) + PRIOR * t

    return minimize(f, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-11}).x


def _policy(psi: np.ndarray, r: np.ndarray, start: np.ndarray) -> np.ndarray:
    """RMB-PO's reverse objective by BFGS from the moment projection and from ``start``, the better kept (mean over
    prompts), as ``alignment.dpo.rmb_po``."""
    target = np.exp(log_softmax(r / BETA, -1))
    n = psi.shape[0]

    def forward(w):
        lp = log_softmax(psi @ w, -1)
        return -(target * lp).sum() / n, -np.einsum("sa,sad->d", target - np.exp(lp), psi) / n

    def reverse(w):
        lp = log_softmax(psi @ w, -1)
        p = np.exp(lp)
        u = r - BETA * lp
        value = (p * (u - BETA * np.log(K))).sum() / n
        gz = p * (u - (p * u).sum(-1, keepdims=True))
        return -value, -np.einsum("sa,sad->d", gz, psi) / n

    w0 = minimize(forward, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-11}).x
    runs = [minimize(reverse, x, jac=True, method="BFGS", options={"gtol": 1e-11}) for x in (w0, start)]
    return min(runs, key=lambda res: res.fun).x


def numpy_study(data: Data, ns: np.ndarray, quad, w_start: np.ndarray) -> np.ndarray:
    """[seeds, len(ns), 3] suboptimalities of DPO, RMB-PO, RMB-PO+."""
    psi_q, r_q = features(quad.s, K, True, np), features(quad.s, K, False, np) @ np.asarray(PAPER_THETA)
    j_star = quad.weights @ r_q.max(-1)
    value = lambda w: quad.weights @ (np.exp(log_softmax(psi_q @ w, -1)) * r_q).sum(-1)  # noqa: E731
    out = np.empty((data.states.shape[0], ns.size, 3))
    for i in range(data.states.shape[0]):
        s, new = data.states[i], data.new_states[i]
        phi, psi = features(s, K, False, np), features(s, K, True, np)
        rows = np.arange(s.size)
        dphi = phi[rows, data.winner[i]] - phi[rows, data.loser[i]]
        dpsi = psi[rows, data.winner[i]] - psi[rows, data.loser[i]]
        for j, n in enumerate(ns):
            m = int(round(RATIO * n))
            theta = _logistic(dphi[:n])
            w_dpo = _logistic(dpsi[:n]) / BETA
            w_po = _policy(psi[:n], phi[:n] @ theta, w_start)
            ps = np.concatenate([psi[:n], features(new[:m], K, True, np)])
            ph = np.concatenate([phi[:n], features(new[:m], K, False, np)])
            w_plus = _policy(ps, ph @ theta, w_start)
            out[i, j] = [j_star - value(w) for w in (w_dpo, w_po, w_plus)]
    return out


def ratelab_study(data: Data, ns: np.ndarray, quad) -> tuple[np.ndarray, float, float]:
    with jax.enable_x64(True):
        lim = population_limits(PAPER_THETA, BETA, K, True, quad)
        args = (Data(*(jnp.asarray(x) for x in data)), jnp.asarray(ns, float))

        def study(d, n):
            return jax.vmap(lambda *x: oop_study(Data(*x), n, RATIO, jnp.asarray(PAPER_THETA), BETA, PRIOR,
                                                 jnp.asarray(lim.w_dpo), jnp.asarray(lim.w_po), jnp.asarray(quad.s),
                                                 jnp.asarray(quad.weights), 1.0, K))(*d)

        t0 = time.perf_counter()
        exe = jax.jit(study).lower(*args).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(exe(*args))
        t2 = time.perf_counter()
    sub = np.stack([np.asarray(out[f"subopt_{m}"]) for m in ("dpo", "po", "plus")], -1)
    return sub, t1 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 seeds instead of 32")
    args = parser.parse_args()
    seeds = 8 if args.quick else 32
    ns = np.array([20, 40, 80, 160, 320])
    quad = quadrature(128)
    data = sample_data(0, seeds, int(ns[-1]), int(RATIO * ns[-1]), K)
    print(f"DPO / RMB-PO / RMB-PO+ vs N on the authors' linear bandit: N={ns.tolist()}, {seeds} seeds; "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}")
    w_start = population_limits(PAPER_THETA, BETA, K, True, quad).w_po
    t0 = time.perf_counter()
    s_np = numpy_study(data, ns, quad, w_start)
    t_np = time.perf_counter() - t0
    s_rl, compile_s, run_s = ratelab_study(data, ns, quad)
    diff = np.abs(s_np - s_rl)[:, 1:].max()
    n_off = int((np.abs(s_np - s_rl)[:, 0] > 1e-4).sum())
    print(f"{'N':>6} {'DPO':>9} {'RMB-PO':>9} {'RMB-PO+':>9}   (mean suboptimality, ratelab)")
    for j, n in enumerate(ns):
        print(f"{n:>6} " + " ".join(f"{v:>9.5f}" for v in s_rl[:, j].mean(0)))
    print(f"largest |NumPy - ratelab| suboptimality at N >= {ns[1]}: {diff:.2e}; at N = {ns[0]}: {n_off} of "
          f"{3 * seeds} problems in different local maxima")
    print(f"NumPy / SciPy loop: {t_np:8.3f} s")
    print(f"ratelab execution:  {run_s:8.3f} s   (compile {compile_s:.3f} s)")
    print(f"ratio NumPy / ratelab execution: {t_np / run_s:.1f}x   (incl. compile: {t_np / (run_s + compile_s):.1f}x)")
    if diff > 1e-4:
        print("the two implementations disagree by more than 1e-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
