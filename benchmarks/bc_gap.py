"""The BC gap-vs-N study (experiment ``il-bc-n``) in ratelab against a plain NumPy loop of the same experiment.

The experiment: Reset-Cliff with |S| states, |A| actions, horizon H and the lower-bound initial distribution of each
N (Rajaraman et al. 2020); for each seed and each N, draw N expert trajectories, fit count-based BC (uniform on
unseen (h, s)) and evaluate J(pi_E) - J(pi_BC) exactly by backward induction. Two ways:

(a) NumPy: for each seed and N a fresh ``np.random.default_rng``; trajectories vectorised over the N rows with one
    Python iteration per step h (inverse-CDF draws of the expert's action and the next state), BC counts by
    ``np.add.at``, backward induction by a loop over h - the way a reference script would write it;
(b) ratelab: ``rl_theory.imitation.bc_gap_study`` under one ``jit``: ``vmap`` over seeds and the sum_j N_j
    trajectories of all N (static), drawn by ``lax.scan`` over H, counted per N. Execution and compile time are
    reported apart.

Both estimate the same mean gap; each is checked against the closed form (``bc_gap_reset_cliff``) within 4 standard
errors (exit status 1 otherwise). ratelab runs in float64 like NumPy. The ratio printed is NumPy time / ratelab
execution time. With static N, ratelab draws the same number of trajectories as NumPy (a traced N would draw a
max-N buffer per N instead, about 3x as many on this grid). Run from the repository root::

    python benchmarks/bc_gap.py            # 256 seeds, N = 64..2048, |S| = 10, H = 8 (about a minute on 2 cores)
    python benchmarks/bc_gap.py --quick    # 64 seeds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from rl_theory.imitation import bc_gap_reset_cliff, bc_gap_study, stack_mdps
from rl_theory.tabular import lower_bound_rho, reset_cliff, reset_cliff_expert


def numpy_study(S: int, A: int, H: int, ns: np.ndarray, seeds: int) -> np.ndarray:
    """[seeds, len(ns)] exact BC gaps, plain NumPy."""
    out = np.empty((seeds, ns.size))
    for i in range(seeds):
        for j, n in enumerate(ns):
            with jax.enable_x64(True):  # float64 rho, as the NumPy loop uses
                mdp = reset_cliff(S, A, H, lower_bound_rho(S, int(n)))
                P, r, rho, pi_e = (np.asarray(x) for x in (mdp.P, mdp.r, mdp.rho, reset_cliff_expert(mdp)))
            rng = np.random.default_rng([i, j])
            cdf_rho, cdf_p, cdf_pi = np.cumsum(rho), np.cumsum(P, axis=-1), np.cumsum(pi_e, axis=-1)
            s = np.minimum((rng.random(n)[:, None] * cdf_rho[-1] >= cdf_rho).sum(-1), S - 1)
            counts = np.zeros((H, S, A))
            for h in range(H):
                c = cdf_pi[h, s]
                a = np.minimum((rng.random(n)[:, None] * c[:, -1:] >= c).sum(-1), A - 1)
                np.add.at(counts[h], (s, a), 1.0)
                c = cdf_p[s, a]
                s = np.minimum((rng.random(n)[:, None] * c[:, -1:] >= c).sum(-1), S - 1)
            tot = counts.sum(-1, keepdims=True)
            pi = np.where(tot > 0, counts / np.maximum(tot, 1), 1.0 / A)
            v_e, v = np.zeros(S), np.zeros(S)
            for h in reversed(range(H)):
                v_e = np.sum(pi_e[h] * (r + P @ v_e), axis=-1)
                v = np.sum(pi[h] * (r + P @ v), axis=-1)
            out[i, j] = rho @ v_e - rho @ v
    return out


def ratelab_study(S: int, A: int, H: int, ns: np.ndarray, seeds: int) -> tuple[np.ndarray, float, float]:
    with jax.enable_x64(True):
        mdps = stack_mdps([reset_cliff(S, A, H, lower_bound_rho(S, int(n))) for n in ns])
        pi_e = reset_cliff_expert(reset_cliff(S, A, H))
        keys = jax.random.split(jax.random.key(0), seeds)
        t0 = time.perf_counter()
        ns_static = tuple(int(n) for n in ns)  # static N: only sum_j N_j trajectories are drawn, not N_max per N
        exe = jax.jit(bc_gap_study, static_argnums=(2, 4)).lower(mdps, pi_e, ns_static, keys, int(ns[-1])).compile()
        t1 = time.perf_counter()
        gaps = np.asarray(jax.block_until_ready(exe(mdps, pi_e, keys)))
        t2 = time.perf_counter()
    return gaps, t1 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 seeds instead of 256")
    args = parser.parse_args()
    S, A, H = 10, 4, 8
    ns = 2 ** np.arange(6, 12)
    seeds = 64 if args.quick else 256
    print(f"BC gap vs N on Reset-Cliff: |S|={S}, |A|={A}, H={H}, N={ns.tolist()}, {seeds} seeds; "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}")

    t0 = time.perf_counter()
    g_np = numpy_study(S, A, H, ns, seeds)
    t_np = time.perf_counter() - t0
    g_rl, compile_s, run_s = ratelab_study(S, A, H, ns, seeds)

    closed = np.array([bc_gap_reset_cliff(lower_bound_rho(S, int(n)), A, H, int(n)) for n in ns])
    ok = True
    print(f"{'N':>6} {'closed form':>12} {'NumPy mean':>12} {'ratelab mean':>13}")
    for j, n in enumerate(ns):
        row = [closed[j]]
        for g in (g_np[:, j], g_rl[:, j]):
            se = g.std(ddof=1) / np.sqrt(g.size)
            ok &= abs(g.mean() - closed[j]) < 4 * se
            row.append(g.mean())
        print(f"{n:>6} {row[0]:>12.5f} {row[1]:>12.5f} {row[2]:>13.5f}")
    print(f"NumPy loop:        {t_np:8.3f} s")
    print(f"ratelab execution: {run_s:8.3f} s   (compile {compile_s:.3f} s)")
    print(f"ratio NumPy / ratelab execution: {t_np / run_s:.1f}x   (incl. compile: {t_np / (run_s + compile_s):.1f}x)")
    if not ok:
        print("a mean is more than 4 standard errors from the closed form", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
