"""MB-TAIL on Reset-Cliff as in the MB-TAIL code: the authors' loop (ported to NumPy) against ratelab.

Instance and settings (the authors' ``tabular-ail`` repository: ``mbtail/main.py``, ``scripts/run_mbtail.sh``,
``utils/flags.py``): CliffWalking with |S| = 20 (the last state absorbing and bad), |A| = 5, H = 20, the
"NonUniform" initial distribution, N = 100 expert trajectories, T = 500 AIL iterations, an interaction budget K
(their grid is K = 100, 200, ..., 2000; one budget per run here, ``--budget``): floor(0.2 K) BC rollouts and
floor(0.8 K) RF-Express episodes.

(a) The authors' loop in NumPy (written here from reading it), one repetition = one pass of ``main``'s body at one
    budget: the env (its rewarded action drawn with ``np.random.randint``), the expert data, ``TableBC`` on the
    first half, the BC rollouts, ``UnknownTransitionFineGrainedEstimator`` (prefix strings in per-step sets),
    ``RFExpress.run`` (one episode at a time, then the W recursion over (h, s, a) in Python with a random tie-break
    per (s, h)), and ``TableNewAIL`` (occupancy in the model, multiplicative weights with the adaptive step, value
    iteration and its greedy-policy loop, the true occupancy of each policy, the evaluation every 100 iterations),
    then the value of the policy of the mixture occupancy. Its ``np.testing`` and ``assert`` checks are kept (they
    are in the loop); its logging is not.
(b) ratelab: ``rl_theory.mbtail_code.mb_tail_code``, the same algorithm in JAX (``lax.scan`` over episodes and
    iterations), under one ``jit``, float64, one seed and R seeds (vmapped).

Same answer, three exact checks on one repetition's data and one statistical check (exit status 1 if any fails):
the NumPy estimator's d_hat against ``prefix_estimator`` on the same trajectories, the final RF-Express W against
``rf_express_bonus`` on the same counts, and the NumPy AIL loop's gap against ``ail_multiplicative_weights`` from
the same model, estimate and initial reward (each within 1e-9); and the mean gaps over R repetitions within
4 combined standard errors + 0.05 (the RNG streams differ, so only the distributions can agree).

FLOPs (the algorithm's): an RF-Express episode's W recursion costs 2 H |S|^2 |A|; an AIL iteration three
H-step sweeps (model occupancy, value iteration, true occupancy), 6 H |S|^2 |A|. A "step" is one of the
floor(0.8 K) + T loop iterations; the rest (sampling, counting, string matching) is not floating-point work.

Run from the repository root::

    python benchmarks/mbtail_reset_cliff.py            # K = 1000, R = 8
    python benchmarks/mbtail_reset_cliff.py --quick    # K = 200, R = 4
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from _common import finish, matmul_peak, parse_args, ratios, time_seeds
from bc_reset_cliff import (
    A,
    H,
    N,
    S,
    authors_env,
    authors_expert,
    authors_rho,
    authors_table_bc,
    authors_trajectories,
    policy_evaluation,
)

from rl_theory.imitation import stack_mdps
from rl_theory.mbtail import rf_express_bonus
from rl_theory.mbtail_code import P_EPS, ail_multiplicative_weights, mb_tail_code, prefix_estimator
from rl_theory.tabular import reset_cliff, reset_cliff_expert, sample_trajectories

ITERS = 500
DELTA = 0.1


def occupancy_np(T, rho, policy):
    """``TabularEnv.calculate_occupancy_measure``, [S, A, H], with its checks."""
    d = np.zeros((S, A, H))
    assert np.allclose(np.sum(policy, axis=1), 1.0), "The policy is invalid"
    for h in range(H):
        cur = rho if h == 0 else np.sum(d[:, :, h - 1].reshape(S, A, 1) * T, axis=(0, 1))
        d[:, :, h] = cur.reshape(S, 1) * policy[:, :, h]
        assert np.isclose(np.sum(d[:, :, h]), 1.0), "The current state action distribution is invalid."
    return d


def prefix_sets(dataset):
    """The strings "s a * s a * ..." of every prefix in ``dataset``, per step (``construct_visited_set``)."""
    sets = {h: set() for h in range(H)}
    for traj in dataset:
        sub = ""
        for s, a, h in traj:
            sub += str(s) + str(a) + "*"
            sets[h].add(sub)
    return sets


def estimator_np(dataset, bc_dataset):
    """``UnknownTransitionFineGrainedEstimator``: uncovered steps of D2 plus covered steps of the BC rollouts."""
    half = len(dataset) // 2 if len(dataset) % 2 == 0 else len(dataset) // 2 + 1
    sets = prefix_sets(dataset[:half])
    out = []
    for data, inside in ((dataset[half:], False), (bc_dataset, True)):
        d = np.zeros((S, A, H))
        for traj in data:
            sub = ""
            for s, a, h in traj:
                sub += str(s) + str(a) + "*"
                if (sub in sets[h]) == inside:
                    d[s, a, h] += 1.0
        out.append(d / len(data))
    return out[0] + out[1]


def rf_express_np(T_true, rho, n_episodes, rng):
    """``RFExpress.run``: the model P (T / (C + 1e-8), uniform where C = 0), the empirical initial distribution,
    the counts and the last W."""
    C = np.zeros([S, A], dtype=np.int64)
    T = np.zeros([S, A, S], dtype=np.int64)
    pi = np.zeros([S, H], dtype=np.int32)
    W = np.zeros([S, A, H + 1])
    init_counter = np.zeros(S, dtype=np.int64)

    def beta_fn(num):
        return np.log(3 * S * A * H / DELTA) + S * np.log(8 * np.e * (num + 1.0))

    with np.errstate(divide="ignore", invalid="ignore"):
        P = T / C[:, :, None]
        P[np.where(C == 0)] = np.ones(S) / S
        for _ in range(n_episodes):
            state = rng.choice(S, p=rho)  # env.reset
            for t in range(H):
                action = pi[state, t]
                nxt = rng.choice(a=S, p=T_true[state, action, :])  # env.step
                C[state, action] += 1
                T[state, action, nxt] += 1
                if t == 0:
                    init_counter[state] += 1
                state = nxt
            P = T / (C[:, :, None] + P_EPS)
            P[np.where(C == 0)] = np.ones(S) / S
            np.testing.assert_allclose(np.sum(P, axis=-1), 1.0, rtol=1e-4, atol=1e-4)
            init = init_counter / float(np.sum(init_counter))
            np.testing.assert_allclose(np.sum(init, axis=-1), 1.0, rtol=1e-4, atol=1e-4)
            for h in reversed(range(H)):
                for state in range(S):
                    for action in range(A):
                        w1 = 15.0 * H**2 * beta_fn(C[state, action]) / C[state, action]
                        w2 = (1.0 + 1.0 / H) * np.dot(P[state, action], np.max(W[:, :, h + 1], axis=1))
                        W[state, action, h] = np.minimum(H, w1 + w2)
                        pi[state, h] = rng.choice(np.where(W[state, :, h] == W[state, :, h].max())[0])
    return P, init, T, W


def greedy_np(Q):
    """``_generate_greedy_policy``: one-hot of ``argmax`` over actions, [S, A, H]."""
    pol = np.zeros((S, A, H))
    best = np.argmax(Q, axis=1)
    for s in range(S):
        dis = np.zeros((A, H))
        for h in range(H):
            dis[best[s, h], h] = 1.0
        pol[s] = dis
    return pol


def policy_from_occ_np(occ):
    """``get_policy_from_occ``."""
    assert np.isclose(np.sum(occ, axis=(0, 1)), 1.0).all(), "The occupancy measure is not valid."
    dist = np.sum(occ, axis=1)
    pol = np.zeros((S, A, H))
    for s in range(S):
        for h in range(H):
            pol[s, :, h] = np.ones(A) / A if dist[s, h] < 1e-8 else occ[s, :, h] / dist[s, h]
    return pol


def ail_np(T_true, r, rho, P, init, est, reward):
    """``TableNewAIL`` run as ``main`` runs it: T iterations in the model (P, init), the mixture's value in the true
    MDP. ``reward`` is the initial reward [S, A, H]."""
    policy = np.full((S, A, H), 1.0 / A)
    grad_norm = 0.0
    total_occ = np.zeros((S, A, H))
    for t in range(ITERS):
        grad = occupancy_np(P, init, policy) - est  # train_reward_step: _multiplicative_weights
        grad_norm = np.sqrt(grad_norm**2 + float(np.sum(np.square(grad))))
        with np.errstate(divide="ignore"):
            step = np.clip(np.sqrt(np.divide(2.0 * H * S * A, grad_norm**2)), a_max=1e8, a_min=1e-8)
        reward = reward * np.exp(-1.0 * step * grad)
        reward /= np.sum(reward, axis=1, keepdims=True)
        V, Q = np.zeros((S, H + 1)), np.zeros((S, A, H))  # train_policy_step: _value_iteration
        for h in range(H - 1, -1, -1):
            q = np.sum(P * V[:, h + 1].reshape(1, 1, S), axis=-1) + reward[:, :, h]
            Q[:, :, h], V[:, h] = q, np.max(q, axis=1)
        policy = greedy_np(Q)
        total_occ += occupancy_np(T_true, rho, policy)
        if t % 100 == 0 and t > 0:
            mix = total_occ / float(t + 1)
            policy_evaluation(T_true, r, rho, policy_from_occ_np(mix))
            np.sum(np.abs(mix - est))
    return policy_evaluation(T_true, r, rho, policy_from_occ_np(total_occ / ITERS))


def authors_once(budget, rho, rng, keep=None):
    """One pass of ``main``'s body at ``budget`` interactions; returns the gap (and fills ``keep`` with the data
    of the exact checks)."""
    opt = int(rng.randint(A))  # CliffWalking.__init__, then its reset()
    rng.choice(S, p=rho)
    T_true, r = authors_env(rho, opt)
    expert = authors_expert(opt)
    expert_value = policy_evaluation(T_true, r, rho, expert)
    dataset = authors_trajectories(T_true, rho, expert, N, rng)
    bc_policy = authors_table_bc(dataset[: int(0.5 * N)], rng)
    policy_evaluation(T_true, r, rho, bc_policy)
    bc_dataset = authors_trajectories(T_true, rho, bc_policy, int(0.2 * budget), rng)
    est = estimator_np(dataset, bc_dataset)
    np.sum(np.abs(occupancy_np(T_true, rho, expert) - est))
    P, init, counts, W = rf_express_np(T_true, rho, int(0.8 * budget), rng)
    tmp = rng.uniform(low=0.0, high=1.0, size=(S, A, H))  # TableNewAIL.__init__
    reward = tmp / np.sum(tmp, axis=1, keepdims=True)
    gap = expert_value - ail_np(T_true, r, rho, P, init, est, reward)
    if keep is not None:
        keep.update(opt=opt, dataset=dataset, bc_dataset=bc_dataset, est=est, P=P, init=init, counts=counts, W=W,
                    reward=reward, gap=gap)
    return gap


def to_arrays(data):
    """[[(s, a, h)]] -> states, actions [n, H]."""
    arr = np.asarray(data, dtype=np.int32)
    return jnp.asarray(arr[..., 0]), jnp.asarray(arr[..., 1])


def exact_checks(keep, rho):
    """Max |NumPy - ratelab| of d_hat, of the final W and of the AIL gap, on one repetition's data."""
    mdp = reset_cliff(S, A, H, rho, expert_actions=np.full(S - 1, keep["opt"]))
    pi_e = reset_cliff_expert(mdp)
    es, ea = to_arrays(keep["dataset"])
    bs, ba = to_arrays(keep["bc_dataset"])
    d_hat = prefix_estimator(es, ea, bs, ba, jnp.ones(bs.shape[0], bool), S, A)
    n_sas = jnp.asarray(keep["counts"], jnp.float64)
    w = rf_express_bonus(n_sas, DELTA, P_EPS, horizon=H)
    gap = jax.jit(ail_multiplicative_weights, static_argnums=6)(
        mdp, pi_e, jnp.asarray(keep["P"]), jnp.asarray(keep["init"]), jnp.asarray(keep["est"]).transpose(2, 0, 1),
        jnp.asarray(keep["reward"]).transpose(2, 0, 1), ITERS)
    return {"d_hat": float(np.abs(np.asarray(d_hat).transpose(1, 2, 0) - keep["est"]).max()),
            "W": float(np.abs(np.asarray(w).transpose(1, 2, 0) - keep["W"][:, :, :H]).max()),
            "gap": abs(float(gap) - keep["gap"])}


def ratelab_study(mdps, pi_es, keys, budget):
    """R seeds of ``mb_tail_code`` at one budget (each seed its own instance and expert data), vmapped."""

    def one(mdp, pi_e, key):
        k_e, k_run = jax.random.split(key)
        es, ea = sample_trajectories(mdp, pi_e, k_e, N)
        return mb_tail_code(mdp, pi_e, es, ea, k_run, jnp.asarray(budget), budget, iterations=ITERS, delta=DELTA)

    return jax.vmap(one)(mdps, pi_es, keys)


def instances(seeds: int, rho):
    """``seeds`` Reset-Cliff instances, each with its rewarded action drawn at random as the authors' env draws it
    (so that neither RF-Express's first episode, which plays action 0, nor value iteration's ties to the lowest
    action line up with the expert by accident)."""
    opts = np.random.RandomState(7).randint(A, size=seeds)
    mdps = [reset_cliff(S, A, H, rho, expert_actions=np.full(S - 1, o)) for o in opts]
    return stack_mdps(mdps), jnp.stack([reset_cliff_expert(m) for m in mdps])


def main() -> int:
    args = parse_args(__doc__, "K = 200, R = 4", "8 (quick 4)", size=("--budget", "K, the interactions"))
    reps = args.reps or (4 if args.quick else 8)
    budget = args.budget or (200 if args.quick else 1000)
    print(f"MB-TAIL on Reset-Cliff (the MB-TAIL code): |S| = {S}, |A| = {A}, H = {H}, N = {N}, K = {budget}, "
          f"T = {ITERS}, R = {reps}")
    peak = matmul_peak("float64")
    rho = authors_rho(S, N)
    rng = np.random.RandomState(100)  # the authors' first seed
    keep: dict = {}
    t0 = time.perf_counter()
    gaps_np = np.array([authors_once(budget, rho, rng, keep if i == 0 else None) for i in range(reps)])
    t_np = (time.perf_counter() - t0) / reps
    with jax.enable_x64(True):
        exact = exact_checks(keep, rho)
        timed = time_seeds(ratelab_study, lambda seeds, keys: (*instances(seeds, rho), keys, budget), reps, (3,))
    g_rl = np.asarray(timed[reps]["out"])
    se = np.hypot(gaps_np.std(ddof=1) / np.sqrt(reps), g_rl.std(ddof=1) / np.sqrt(reps))
    diff = abs(gaps_np.mean() - g_rl.mean())
    same_stat = diff <= 4 * se + 0.05
    same_exact = all(v <= 1e-9 for v in exact.values())
    print(f"NumPy    mean gap {gaps_np.mean():.4f} +- {gaps_np.std(ddof=1) / np.sqrt(reps):.4f}")
    print(f"ratelab  mean gap {g_rl.mean():.4f} +- {g_rl.std(ddof=1) / np.sqrt(reps):.4f}; |difference| {diff:.4f}, "
          f"bound 4 SE + 0.05 = {4 * se + 0.05:.4f}: {'same' if same_stat else 'DIFFERENT'}")
    print("exact checks on repetition 0, max |NumPy - ratelab|: "
          + ", ".join(f"{k} {v:.1e}" for k, v in exact.items()))
    n_rf = int(0.8 * budget)
    steps = n_rf + ITERS
    flops = (2 * H * S * S * A * n_rf + 6 * H * S * S * A * ITERS) / steps
    res = ratios(f"MB-TAIL on Reset-Cliff (K = {budget})", t_np, timed[1], timed[reps], reps, steps, flops, peak)
    res["same_text"] = (f"gap {gaps_np.mean():.3f} vs {g_rl.mean():.3f} (4 SE + 0.05 = {4 * se + 0.05:.3f}); "
                        + ", ".join(f"{k} {v:.0e}" for k, v in exact.items()))
    return finish(args, "mbtail_reset_cliff", {"mbtail": res}, same_stat and same_exact,
                  "the mean gaps differ by more than 4 SE + 0.05, or an exact check exceeds 1e-9")


if __name__ == "__main__":
    sys.exit(main())
