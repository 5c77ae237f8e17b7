"""Throughput of ratelab's runner against plain NumPy loops on the Robbins-Monro experiment ``rm-fast``.

The experiment: x_{k+1} = x_k - a_k (A x_k - b + sigma xi_k), xi_k ~ N(0, I), a_k = a / (k + k0) with k counted from
0, on Chung's scalar problem (A = [[lam]], b = 0, x0 = 1; a = 1, k0 = 10, lam = 1, sigma = 1), 256 seeds x 20,000
steps, logging ||x_k - x*||^2 every 50 steps (the ``log_every`` of the registered experiment). It is run three ways:

(a)  a per-seed Python/NumPy loop, the way papers' reference scripts repeat an experiment: for each seed a fresh
     ``np.random.default_rng(seed)``, then one Python iteration per step on d-dimensional arrays
     (``x = x - a_k * (A @ x - b + sigma * rng.standard_normal(d))``);
(a') the same loop with Python floats for the scalar case (noise drawn once per seed), a kinder baseline;
(b)  NumPy vectorised over seeds: ``X`` of shape [seeds, d], one Python loop over steps, noise
     ``rng.standard_normal((seeds, d))`` per step;
(c)  ratelab: ``ratelab.runner.run(robbins_monro(harmonic(1, 10)), problem, key, ...)``, i.e.
     ``jit(vmap(lax.scan))``; its execution time (``trace.timings["run_s"]``) and its ahead-of-time compile time
     (``trace.timings["compile_s"]``) are reported apart, for each of ``--repeat`` calls.

NumPy runs in float64 (as reference scripts do), ratelab in its default float32. All methods must agree on the
statistic they estimate: the mean over seeds of ||x_K - x*||^2 at the last step is checked against the exact second
moment (``rl_theory.sa.exact_second_moment``), within 4 standard errors; the script exits with status 1 otherwise.

A second section times (b) and (c) against the dimension d (random symmetric A with spectrum in [0.6, 2.0], so
2 a lam_min > 1) on fewer steps, to show where ratelab's advantage over vectorised NumPy is largest.

Run from the repository root::

    python benchmarks/sa_throughput.py            # full: (a) on all 256 seeds; about a minute on 2 cores
    python benchmarks/sa_throughput.py --quick    # (a) timed on 16 seeds, extrapolated linearly; about 40 s
    python benchmarks/sa_throughput.py --dims ''  # skip the crossover section

ratelab compiles once per solver object and input shapes (later ``run()`` calls with the same solver reuse the
executable); the main column is execution only, and compile time and whole cold / warm ``run()`` calls are printed
apart (a cold call is dominated by compilation at this size).

Nothing is pinned: NumPy/BLAS and XLA use the threads they choose; the CPU count is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import jax
import numpy as np

from ratelab.runner import run
from ratelab.schedules import harmonic
from rl_theory.sa import LinearSA, exact_second_moment, make_linear_sa, make_scalar_sa, robbins_monro

# The rm-fast experiment (experiments/robbins_monro.py).
A_STEP, K0, LAM, SIGMA, X0, LOG_EVERY = 1.0, 10.0, 1.0, 1.0, 1.0, 50
QUICK_A_SEEDS = 16
SPECTRUM = (0.6, 2.0)
N_SE = 4.0


@dataclass
class Timed:
    """A method's wall time and its final per-seed squared distances ||x_K - x*||^2."""

    seconds: float
    final: np.ndarray
    logged: np.ndarray
    note: str = ""


def as_numpy(problem: LinearSA) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """The problem's arrays in float64, as a reference script would hold them."""
    return (np.asarray(problem.A, np.float64), np.asarray(problem.b, np.float64), float(problem.sigma),
            np.asarray(problem.x0, np.float64), np.asarray(problem.x_star, np.float64))


def per_seed_loop(problem: LinearSA, steps: int, seeds: int, log_every: int) -> Timed:
    """(a): one Python loop per seed and per step, on d-dimensional NumPy arrays."""
    A, b, sigma, x0, x_star = as_numpy(problem)
    d = b.shape[0]
    n_log = steps // log_every
    logged = np.empty((seeds, n_log))
    t0 = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = x0.copy()
        k = 0
        for j in range(n_log):
            for _ in range(log_every):
                a_k = A_STEP / (k + K0)
                x = x - a_k * (A @ x - b + sigma * rng.standard_normal(d))
                k += 1
            err = x - x_star
            logged[seed, j] = err @ err
    return Timed(time.perf_counter() - t0, logged[:, -1], logged)


def per_seed_scalar_loop(lam: float, x_star: float, x0: float, sigma: float, steps: int, seeds: int,
                         log_every: int) -> Timed:
    """(a'): the scalar case with Python floats; each seed's noise is drawn in one call (same stream as (a))."""
    n_log = steps // log_every
    logged = np.empty((seeds, n_log))
    b = lam * x_star
    t0 = time.perf_counter()
    for seed in range(seeds):
        noise = np.random.default_rng(seed).standard_normal(steps).tolist()
        x = x0
        k = 0
        for j in range(n_log):
            for _ in range(log_every):
                x = x - A_STEP / (k + K0) * (lam * x - b + sigma * noise[k])
                k += 1
            logged[seed, j] = (x - x_star) ** 2
    return Timed(time.perf_counter() - t0, logged[:, -1], logged)


def vectorised_loop(problem: LinearSA, steps: int, seeds: int, log_every: int, seed: int = 0) -> Timed:
    """(b): all seeds at once as X of shape [seeds, d]; one Python loop over steps."""
    A, b, sigma, x0, x_star = as_numpy(problem)
    d = b.shape[0]
    n_log = steps // log_every
    logged = np.empty((seeds, n_log))
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    X = np.tile(x0, (seeds, 1))
    k = 0
    for j in range(n_log):
        for _ in range(log_every):
            a_k = A_STEP / (k + K0)
            X = X - a_k * (X @ A.T - b + sigma * rng.standard_normal((seeds, d)))
            k += 1
        err = X - x_star
        logged[:, j] = np.einsum("sd,sd->s", err, err)
    return Timed(time.perf_counter() - t0, logged[:, -1], logged)


_SOLVER = robbins_monro(harmonic(A_STEP, K0))


def ratelab_run(problem: LinearSA, steps: int, seeds: int, log_every: int, key: int = 0) -> tuple[dict, Timed]:
    """(c): ``ratelab.runner.run``; returns its timings (plus the call's wall time) and the final values.

    One solver object serves every call, as in a notebook: the first call compiles, later ones reuse the code.
    """
    solver = _SOLVER
    t0 = time.perf_counter()
    trace = run(solver, problem, key, steps=steps, seeds=seeds, log_every=log_every)
    wall = time.perf_counter() - t0
    sq = np.asarray(trace["sq_dist_to_opt"], np.float64)
    timings = {**trace.timings, "wall_s": wall}
    return timings, Timed(timings["run_s"], sq[:, -1], sq)


def check(name: str, final: np.ndarray, exact: float) -> tuple[bool, float, str]:
    """Is the seed mean of ||x_K - x*||^2 within N_SE standard errors of the exact second moment? (ok, z, line)"""
    mean = float(final.mean())
    se = float(final.std(ddof=1) / np.sqrt(final.size))
    z = (mean - exact) / se
    ok = bool(np.isfinite(z) and abs(z) <= N_SE)
    return ok, z, (f"  {name:<44} {mean:.4e} +- {se:.1e} (n={final.size:>3})  z = {z:+5.2f}  "
                   f"{'ok' if ok else 'FAIL'}")


def describe_trend(dims: list[int], r: np.ndarray) -> str:
    """'falls from d = 1 to d = 2, grows from d = 2 to d = 64, ...': the runs of equal sign of the ratio's steps."""
    parts, i = [], 0
    signs = np.sign(np.diff(r))
    while i < len(signs):
        j = i
        while j + 1 < len(signs) and signs[j + 1] == signs[i]:
            j += 1
        word = {1.0: "grows", -1.0: "falls"}.get(float(signs[i]), "stays")
        parts.append(f"{word} from d = {dims[i]} to d = {dims[j + 1]}")
        i = j + 1
    return ", ".join(parts)


def fmt_ratio(t: float, ref: float) -> str:
    return f"{t / ref:8.1f}x" if ref > 0 else "      n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="steps per seed, main table (default 20000)")
    parser.add_argument("--seeds", type=int, default=256, help="seeds (default 256)")
    parser.add_argument("--a-seeds", type=int, default=None,
                        help="time (a) and (a') on this many seeds and extrapolate linearly (default: all seeds)")
    parser.add_argument("--quick", action="store_true",
                        help=f"shorthand for --a-seeds {QUICK_A_SEEDS}")
    parser.add_argument("--dims", type=str, default="1,2,4,16,64,256",
                        help="comma-separated dimensions for the crossover section (default 1,2,4,16,64,256; "
                             "'' skips it)")
    parser.add_argument("--cross-steps", type=int, default=2_000,
                        help="steps per seed in the crossover section (default 2000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time (b) and (c) this many times and keep the fastest (default 3)")
    args = parser.parse_args(argv)

    for name in ("steps", "seeds", "cross_steps", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps % LOG_EVERY or args.cross_steps % LOG_EVERY:
        parser.error(f"--steps and --cross-steps must be multiples of log_every = {LOG_EVERY}")
    a_seeds = args.a_seeds if args.a_seeds is not None else (QUICK_A_SEEDS if args.quick else args.seeds)
    if not 1 <= a_seeds <= args.seeds:
        parser.error(f"--a-seeds must be in [1, --seeds = {args.seeds}], got {a_seeds}")
    try:
        dims = [int(d) for d in args.dims.split(",") if d.strip()]
    except ValueError:
        parser.error(f"--dims must be comma-separated integers, got {args.dims!r}")
    if any(d < 1 for d in dims):
        parser.error("--dims must be positive")

    t_script = time.perf_counter()
    steps, seeds = args.steps, args.seeds
    print("ratelab SA throughput: Robbins-Monro, a_k = a/(k+k0), a=1, k0=10, lam=1, sigma=1, x0=1 (rm-fast)")
    print(f"  {seeds} seeds x {steps} steps, ||x - x*||^2 logged every {LOG_EVERY} steps")
    print(f"  machine: {platform.machine()}, os.cpu_count() = {os.cpu_count()} (no thread pinning); "
          f"python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__} "
          f"on {jax.default_backend()}")
    print("  dtypes: NumPy float64 (as reference scripts), ratelab float32 (its default)")
    print()

    problem = make_scalar_sa(lam=LAM, sigma=SIGMA, x0=X0)
    exact = float(exact_second_moment(problem, harmonic(A_STEP, K0), steps)[-1])

    # (a) and (a'): per-seed loops, possibly on a subset of seeds and extrapolated.
    scale = seeds / a_seeds
    extra = "" if a_seeds == seeds else f" [EXTRAPOLATED x{scale:g} from {a_seeds} seeds]"
    res_a = per_seed_loop(problem, steps, a_seeds, LOG_EVERY)
    res_a.seconds *= scale
    res_a.note = extra
    _, _, _, x0_np, xs_np = as_numpy(problem)
    res_a1 = per_seed_scalar_loop(LAM, float(xs_np[0]), float(x0_np[0]), SIGMA, steps, a_seeds, LOG_EVERY)
    res_a1.seconds *= scale
    res_a1.note = extra
    same_stream = float(np.max(np.abs(res_a.logged - res_a1.logged) / np.maximum(res_a.logged, 1e-300)))

    # (b): vectorised over seeds; fastest of --repeat.
    res_b = min((vectorised_loop(problem, steps, seeds, LOG_EVERY) for _ in range(args.repeat)),
                key=lambda r: r.seconds)

    # (c): ratelab, --repeat calls (at least 2) with one solver: the first compiles (compile_s), later ones reuse it.
    # The speed-up column divides by the fastest execution, as (b) is its fastest of --repeat.
    calls = [ratelab_run(problem, steps, seeds, LOG_EVERY) for _ in range(max(args.repeat, 2))]
    t1, res_c = calls[0]
    c_run = min(t["run_s"] for t, _ in calls)

    rows = [
        (f"(a)  per-seed NumPy loop, d-dim arrays{res_a.note}", res_a.seconds),
        (f"(a') per-seed loop, Python floats (scalar){res_a1.note}", res_a1.seconds),
        (f"(b)  NumPy vectorised over seeds (best of {args.repeat})", res_b.seconds),
        (f"(c)  ratelab run_s, execution (best of {len(calls)} calls)", c_run),
    ] + [(f"       call {i + 1}: run_s", t["run_s"]) for i, (t, _) in enumerate(calls)]
    w = max(len(name) for name, _ in rows)
    print(f"{'method':<{w}} {'time (s)':>9} {'ratelab speed-up':>17}")
    print(f"{'':<{w}} {'':>9} {'(time / run_s)':>17}")
    for name, t in rows:
        print(f"{name:<{w}} {t:9.3f} {fmt_ratio(t, c_run):>17}")
    print()
    print("compile time, apart (once per solver and shapes; later run() calls reuse it; not included above):")
    print("  (c)  ratelab compile_s per call: " + ", ".join(f"{t['compile_s']:.3f}" for t, _ in calls) + " s")
    warm = min(t["wall_s"] for t, _ in calls[1:])
    for what, wall in (("cold (compiles)", t1["wall_s"]), ("warm (reuses)", warm)):
        print(f"  (c)  ratelab whole run() call, {what}, wall (compile + run + checks + transfer): {wall:.3f} s "
              f"-> vs (a) {res_a.seconds / wall:.1f}x, vs (a') {res_a1.seconds / wall:.2f}x, "
              f"vs (b) {res_b.seconds / wall:.2f}x")
    print()

    print(f"sanity check: mean over seeds of ||x_K - x*||^2 at K = {steps}, exact E = {exact:.4e} "
          f"(each within {N_SE:g} standard errors)")
    results = [
        check(f"(a)  per-seed NumPy loop ({a_seeds} seeds)", res_a.final, exact),
        check(f"(a') per-seed Python floats ({a_seeds} seeds)", res_a1.final, exact),
        check("(b)  NumPy vectorised", res_b.final, exact),
        check("(c)  ratelab (float32)", res_c.final, exact),
    ]
    for *_, line in results:
        print(line)
    print(f"  (a) and (a') use the same random stream: max relative difference of the logged values {same_stream:.1e}")
    all_ok = all(ok for ok, *_ in results)
    print()

    # Crossover in the dimension: (b) against (c).
    if dims:
        cs = args.cross_steps
        print(f"crossover in d: (b) vs (c), {seeds} seeds x {cs} steps, best of {args.repeat}; random symmetric A "
              f"(make_linear_sa) with spectrum evenly spread in [{SPECTRUM[0]}, {SPECTRUM[1]}] (d = 1: lam = "
              f"{SPECTRUM[0]}), 2 a lam_min = {2 * A_STEP * SPECTRUM[0]:g} > 1")
        print(f"{'d':>5} {'(b) numpy s':>12} {'(c) run_s':>10} {'(c) compile_s':>14} {'ratio b/c':>10} "
              f"{'b/(c run+compile)':>18}   check (z vs exact: b, c)")
        ratios = []
        for d in dims:
            prob = make_linear_sa(jax.random.key(0), dim=d, lam_min=SPECTRUM[0], lam_max=SPECTRUM[1])
            ex = float(exact_second_moment(prob, harmonic(A_STEP, K0), cs)[-1])
            rb = min((vectorised_loop(prob, cs, seeds, LOG_EVERY) for _ in range(args.repeat)),
                     key=lambda r: r.seconds)
            cc = [ratelab_run(prob, cs, seeds, LOG_EVERY) for _ in range(args.repeat)]
            tc, rc = min(cc, key=lambda c: c[0]["run_s"])
            comp = cc[0][0]["compile_s"]
            ok_b, zb, _ = check("b", rb.final, ex)
            ok_c, zc, _ = check("c", rc.final, ex)
            all_ok &= ok_b and ok_c
            ratio = rb.seconds / tc["run_s"]
            ratios.append(ratio)
            print(f"{d:>5} {rb.seconds:12.3f} {tc['run_s']:10.3f} {comp:14.3f} {ratio:9.2f}x "
                  f"{rb.seconds / (tc['run_s'] + comp):17.2f}x   {zb:+5.2f}, {zc:+5.2f} "
                  f"{'ok' if ok_b and ok_c else 'FAIL'}")
        r = np.asarray(ratios)
        best = int(np.argmax(r))
        print(f"  ratelab's advantage (b/c, execution only) is largest at d = {dims[best]} ({r[best]:.2f}x), "
              f"smallest at d = {dims[int(np.argmin(r))]} ({r.min():.2f}x).")
        if len(dims) > 1:
            print(f"  shape: the ratio {describe_trend(dims, r)}.")
        slower = [d for d, x in zip(dims, r, strict=True) if x < 1]
        if not slower:
            print("  crossover: none; ratelab's execution is faster than vectorised NumPy (b) at every d tested.")
        else:
            from_i = next((i for i in range(len(dims)) if np.all(r[i:] >= 1)), None)
            tail = (f"ratelab is faster from d = {dims[from_i]} on" if from_i is not None
                    else f"(b) is still faster at the largest d = {dims[-1]}")
            print(f"  crossover: vectorised NumPy (b) is FASTER than ratelab's execution at d = "
                  f"{', '.join(map(str, slower))}; {tail}.")
        print()

    print("verdict:")
    va = res_a.seconds / c_run
    print(f"  ratelab vs (a) per-seed loop: {va:.0f}x{' (extrapolated)' if res_a.note else ''} "
          f"(target >= 50x: {'met' if va >= 50 else 'NOT met'})")
    vb = res_b.seconds / c_run
    print(f"  ratelab vs (b) vectorised NumPy, d=1: {vb:.2f}x (target: not slower: {'met' if vb >= 1 else 'NOT met'}; "
          f"counting compile: {res_b.seconds / (c_run + t1['compile_s']):.2f}x)")
    print(f"  statistics agree: {'yes' if all_ok else 'NO'}")
    print(f"script wall time: {time.perf_counter() - t_script:.1f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
