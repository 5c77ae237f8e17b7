"""Behaviour cloning on Reset-Cliff as in the MB-TAIL code: the authors' loop (ported to NumPy) against ratelab.

Instance (the authors' ``tabular-ail`` repository: ``bc/main.py``, ``envs/CliffWalking``, ``utils/flags.py``,
``scripts/run_mbtail.sh``): |S| = 20 states (the last one the absorbing bad state), |A| = 5, H = 20, N = 100 expert
trajectories, the "NonUniform" initial distribution (1 / (N + 1) on states 0..|S|-3, the rest on state |S|-2);
the expert's action (drawn once, as the authors' env draws it) resets the state to the initial distribution and
earns 1, every other action falls into the bad state.

(a) The authors' loop in NumPy (written here from reading it): per repetition, N expert trajectories sampled step
    by step (``np.random.choice`` for the action and for the next state, as ``sample_one_trajetory`` and the env's
    ``step`` do), the tabular BC policy (counts per (s, a, h) in a Python loop over transitions, then a loop over
    (s, h); unseen (s, h) keep the random initial policy of ``TableBC``), and the exact values of the expert and of
    BC by backward induction (``policy_evaluation``); the gap is their difference.
(b) ratelab: ``rl_theory.imitation.bc_gap_study`` (trajectories by ``lax.scan`` over H inside ``vmap``, counts,
    exact gap) under one ``jit``, one seed and R seeds (vmapped), float64.

Same answer: both mean gaps over R repetitions lie within 4 standard errors of the closed form
``bc_gap_reset_cliff`` (the random policy on unseen states of (a) and the uniform one of (b) have the same
expected return); exit status 1 otherwise.

FLOPs per repetition (the algorithm's): sampling and counting are not floating-point work; the two backward
inductions cost 2 * 2 H |S|^2 |A| (an |S| x |A| x |S| contraction per step), so the benchmark reports the cost per
trajectory step instead (N H steps per repetition).

Run from the repository root::

    python benchmarks/bc_reset_cliff.py            # R = 64 repetitions
    python benchmarks/bc_reset_cliff.py --quick    # R = 16
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from _common import finish, matmul_peak, parse_args, ratios, time_seeds

from rl_theory.imitation import bc_gap_reset_cliff, bc_gap_study, stack_mdps
from rl_theory.tabular import reset_cliff, reset_cliff_expert

S, A, H, N = 20, 5, 20, 100


def authors_rho(ns: int, num_traj: int) -> np.ndarray:
    """``set_init_state_dis(..., dis_type="NonUniform")``."""
    rho = np.zeros(ns)
    rho[0: ns - 2] = 1.0 / (num_traj + 1.0)
    rho[ns - 2] = 1.0 - (ns - 2) / (num_traj + 1.0)
    return rho


def authors_env(rho: np.ndarray, opt: int) -> tuple[np.ndarray, np.ndarray]:
    """CliffWalking's transition matrix and rewards."""
    T = np.zeros((S, A, S))
    bad = np.zeros(S)
    bad[S - 1] = 1.0
    for s in range(S):
        T[s] = np.tile(bad, (A, 1))
        if s != S - 1:
            T[s, opt] = rho
    r = np.zeros((S, A))
    r[:-1, opt] = 1.0
    return T, r


def policy_evaluation(T, r, rho, policy):
    V = np.zeros((S, H + 1))
    for h in range(H - 1, -1, -1):
        Q = np.sum(T * V[:, h + 1].reshape(1, 1, S), axis=-1) + r
        V[:, h] = np.sum(Q * policy[:, :, h], axis=1)
    return float(np.sum(V[:, 0] * rho))


def authors_trajectories(T, rho, policy, n: int, rng: np.random.RandomState) -> list[list[tuple[int, int, int]]]:
    """``sample_dataset_per_traj``: ``n`` episodes of (s, a, h), drawn step by step with ``np.random.choice`` (the
    env's ``reset`` and ``step`` and ``sample_one_trajetory``); ``policy`` is [S, A, H]."""
    dataset = []
    for _ in range(n):
        traj, s = [], rng.choice(S, p=rho)
        for step in range(H):
            a = rng.choice(a=A, p=policy[s, :, step])
            traj.append((s, a, step))
            s = rng.choice(a=S, p=T[s, a, :])
        dataset.append(traj)
    return dataset


def authors_table_bc(dataset, rng: np.random.RandomState) -> np.ndarray:
    """``TableBC.estimate_from_trajectory_data``: counts per (s, a, h); unseen (s, h) keep the random initial
    policy."""
    tmp = rng.random_sample(size=[S, A, H])
    policy = tmp / np.sum(tmp, axis=1, keepdims=True)
    counts = np.zeros((S, A, H), dtype=np.float32)
    for traj in dataset:
        for s, a, step in traj:
            counts[s, a, step] += 1.0
    for s in range(S):
        for h in range(H):
            tot = np.sum(counts[s, :, h])
            if tot > 0:
                policy[s, :, h] = counts[s, :, h] / tot
    return policy


def authors_expert(opt: int) -> np.ndarray:
    """``CliffWalking.get_optimal_policy``: the rewarded action everywhere, [S, A, H]."""
    expert = np.zeros((S, A, H))
    expert[:, opt, :] = 1.0
    return expert


def authors_bc_once(T, r, rho, opt, rng: np.random.RandomState) -> float:
    """One repetition; ``rng`` is NumPy's legacy generator, whose methods the authors call through ``np.random``."""
    expert = authors_expert(opt)
    policy = authors_table_bc(authors_trajectories(T, rho, expert, N, rng), rng)
    return policy_evaluation(T, r, rho, expert) - policy_evaluation(T, r, rho, policy)


def main() -> int:
    args = parse_args(__doc__, "R = 16", "64 (quick 16)")
    reps = args.reps or (16 if args.quick else 64)
    print(f"BC on Reset-Cliff (the MB-TAIL code's CliffWalking): |S| = {S}, |A| = {A}, H = {H}, N = {N}, R = {reps}")
    peak = matmul_peak("float64")
    rng = np.random.RandomState(100)  # the authors' seed = 100
    opt = int(rng.randint(A))
    rho = authors_rho(S, N)
    T, r = authors_env(rho, opt)
    t0 = time.perf_counter()
    gaps_np = np.array([authors_bc_once(T, r, rho, opt, rng) for _ in range(reps)])
    t_np = (time.perf_counter() - t0) / reps
    with jax.enable_x64(True):
        mdp = reset_cliff(S, A, H, rho, expert_actions=np.full(S - 1, opt))
        mdps, pi_e, ns = stack_mdps([mdp]), reset_cliff_expert(mdp), jnp.asarray([N])
        timed = time_seeds(bc_gap_study, lambda seeds, keys: (mdps, pi_e, ns, keys, N), reps, (4,))
    closed = float(bc_gap_reset_cliff(rho, A, H, N))
    ok = True
    for name, g in (("NumPy", gaps_np), ("ratelab", np.asarray(timed[reps]["out"])[:, 0])):
        se = g.std(ddof=1) / np.sqrt(g.size)
        ok &= abs(g.mean() - closed) <= 4 * se + 1e-12
        print(f"{name:8} mean gap {g.mean():.4f} +- {se:.4f} (closed form {closed:.4f})")
    res = ratios("BC on Reset-Cliff (N = 100)", t_np, timed[1], timed[reps], reps, N * H,
                 4.0 * H * S * S * A / (N * H), peak)
    return finish(args, "bc_reset_cliff", {"bc": res}, ok, "a mean gap is more than 4 standard errors from the "
                  "closed form")


if __name__ == "__main__":
    sys.exit(main())
