"""What every benchmark here shares: the machine's dense matmul peak measured in the same run, timing, the machine
and versions, and one JSON record per benchmark that ``benchmarks/run_all.py`` turns into ``RESULTS.md``.

Each benchmark times a NumPy port of the authors' published loop and ratelab on the same instance, then prints:

* per repetition: NumPy seconds, ratelab seconds for one seed (execution; compile apart; cold = compile + run),
  and their ratios;
* for R repetitions: NumPy seconds (R sequential runs) against ratelab's R seeds in one vmapped call, and ratelab's
  cost per seed with R seeds against one seed;
* the attained FLOP/s (FLOPs counted from the algorithm, not from a profiler) against this machine's dense matmul
  peak (the best of NumPy's BLAS and XLA on a square matmul, same dtype, timed here), and the cost per step in
  microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best_time(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The smallest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype: str = "float64", n: int = 1024) -> dict[str, float]:
    """Dense ``n x n`` matmul FLOP/s of NumPy (BLAS) and of XLA (jit), best of a few calls; ``peak`` = the larger."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    flops = 2.0 * n**3
    t_np = best_time(lambda: a @ b, 5)
    with jax.enable_x64(dtype == "float64"):
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        mm = jax.jit(jnp.matmul)
        jax.block_until_ready(mm(ja, jb))
        t_xla = best_time(lambda: jax.block_until_ready(mm(ja, jb)), 5)
    return {"numpy": flops / t_np, "xla": flops / t_xla, "peak": max(flops / t_np, flops / t_xla), "n": n,
            "dtype": dtype}


def machine() -> dict[str, Any]:
    """CPU model, core count, load average and the package versions."""
    import jax

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__}
    try:
        import jaxlib

        versions["jaxlib"] = jaxlib.__version__
    except ImportError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load": os.getloadavg(), "platform": platform.platform(),
            "backend": jax.default_backend(), "versions": versions}


def write_walls(mode: str, walls: dict[str, float], source: str, measured: dict[str, Any]) -> None:
    """Replace ``mode``'s entry of ``experiments/walls.json``, the serial wall seconds per experiment that ``verify
    --jobs N`` orders its tasks by where the results folder holds no record (a fresh clone), atomically; the other
    modes' entries are kept. ``source``: the command that measured them; ``measured``: date, machine, versions."""
    from ratelab.harness import WALLS_FILE
    from ratelab.io import atomic_write_json

    try:
        data = json.loads(WALLS_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data["about"] = ("serial wall seconds per experiment, per mode; verify --jobs orders its tasks longest first by "
                     "them where the results folder has no record")
    data.setdefault("walls", {})[mode] = walls
    data.setdefault("measured", {})[mode] = {"by": source, **measured}
    atomic_write_json(WALLS_FILE, data)


def time_seeds(fn: Callable, make_args: Callable[[int, Any], tuple], reps: int,
               static_argnums: tuple[int, ...] = ()) -> dict[int, dict[str, Any]]:
    """ratelab's side of a benchmark, for R = 1 and R = ``reps`` seeds: ``jit(fn)`` compiled ahead of time on
    ``make_args(R, keys)`` (timed: ``compile_s``), then run on the R keys split from key 0 and from key 1 (the same
    program, other seeds); ``run_s`` is the faster run (execution alone), ``out`` the last run's output."""
    import jax

    timed = {}
    for seeds in (1, reps):
        args = make_args(seeds, jax.random.split(jax.random.key(0), seeds))
        t0 = time.perf_counter()
        exe = jax.jit(fn, static_argnums=static_argnums).lower(*args).compile()
        compile_s = time.perf_counter() - t0
        runs = []
        for k in (0, 1):
            args = make_args(seeds, jax.random.split(jax.random.key(k), seeds))
            dynamic = [a for i, a in enumerate(args) if i not in static_argnums]
            t0 = time.perf_counter()
            out = jax.block_until_ready(exe(*dynamic))
            runs.append(time.perf_counter() - t0)
        timed[seeds] = {"compile_s": compile_s, "run_s": min(runs), "out": out}
    return timed


def roof_line(flops_per_step: float, steps: int, seeds: int, run_s: float, peak: float) -> str:
    """Attained FLOP/s of a run and its fraction of the peak, with the cost per step and seed."""
    rate = flops_per_step * steps * seeds / run_s
    return (f"{rate / 1e9:8.2f} GFLOP/s = {100 * rate / peak:5.1f} % of the measured peak; "
            f"{1e6 * run_s / (steps * seeds):9.1f} us per step and seed")


def parse_args(doc: str, quick: str, reps: str, *, size: tuple[str, str] | None = None) -> argparse.Namespace:
    """The options every benchmark takes: ``--quick`` (``quick`` says what it is), ``--reps`` (``reps``: the
    default R), ``--json PATH`` for ``run_all.py``, and optionally one size option ``size = (flag, help)``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    if size is not None:
        ap.add_argument(size[0], type=int, help=size[1])
    ap.add_argument("--reps", type=int, help=f"R, the repetitions (ratelab's seeds, vmapped); default {reps}")
    ap.add_argument("--json", help="write the numbers to this file (for run_all.py)")
    return ap.parse_args()


def finish(args: argparse.Namespace, benchmark: str, results: dict[str, Any], ok: bool, failure: str) -> int:
    """Write the record (with ``--json``) and return the exit status: 1 with ``failure`` on stderr when not ``ok``."""
    result = {"benchmark": benchmark, "results": results, "ok": bool(ok), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    if not ok:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 0 if ok else 1


def ratios(name: str, np_rep: float, rl_one: dict[str, float], rl_many: dict[str, float], reps: int, steps: int,
           flops_per_step: float, peak: dict[str, float], np_flops_per_step: float | None = None) -> dict[str, Any]:
    """The comparison lines every benchmark prints, and their numbers.

    ``np_rep``: NumPy seconds per repetition; ``rl_one`` / ``rl_many``: ratelab ``compile_s`` and ``run_s`` with one
    seed and with ``reps`` seeds (vmapped); ``flops_per_step``: the algorithm's FLOPs per step and seed.
    """
    one, many = rl_one["run_s"], rl_many["run_s"]
    out = {
        "name": name, "reps": reps, "steps": steps,
        "numpy_per_rep_s": np_rep, "ratelab_one_run_s": one, "ratelab_one_compile_s": rl_one["compile_s"],
        "ratelab_many_run_s": many, "ratelab_many_compile_s": rl_many["compile_s"],
        "ratio_per_rep": np_rep / one, "ratio_per_rep_cold": np_rep / (one + rl_one["compile_s"]),
        "ratio_reps": reps * np_rep / many, "ratio_reps_cold": reps * np_rep / (many + rl_many["compile_s"]),
        "per_seed_many_over_one": (many / reps) / one,
        "flops_per_step": flops_per_step, "peak_flops": peak["peak"],
        "roof_one": flops_per_step * steps / one / peak["peak"],
        "roof_many": flops_per_step * steps * reps / many / peak["peak"],
        "numpy_roof": (np_flops_per_step or flops_per_step) * steps / np_rep / peak["peak"],
        "us_per_step_one": 1e6 * one / steps, "us_per_step_many": 1e6 * many / (steps * reps),
        "us_per_step_numpy": 1e6 * np_rep / steps,
    }
    print(f"\n{name}: {steps} steps per repetition, R = {reps}")
    print(f"  peak (dense {peak['n']}^2 {peak['dtype']} matmul): NumPy {peak['numpy'] / 1e9:.1f}, "
          f"XLA {peak['xla'] / 1e9:.1f} GFLOP/s")
    print(f"  NumPy port, one repetition         : {np_rep:9.3f} s   "
          + roof_line(np_flops_per_step or flops_per_step, steps, 1, np_rep, peak["peak"]))
    print(f"  ratelab, 1 seed  (compile {rl_one['compile_s']:6.2f} s): {one:9.3f} s   "
          + roof_line(flops_per_step, steps, 1, one, peak["peak"]))
    print(f"  ratelab, {reps} seeds (compile {rl_many['compile_s']:6.2f} s): {many:9.3f} s   "
          + roof_line(flops_per_step, steps, reps, many, peak["peak"]))
    print(f"  per repetition : NumPy / ratelab = {out['ratio_per_rep']:.1f}x (cold, compile included: "
          f"{out['ratio_per_rep_cold']:.2f}x)")
    print(f"  R repetitions  : NumPy / ratelab = {out['ratio_reps']:.1f}x (cold: {out['ratio_reps_cold']:.2f}x); "
          f"ratelab per seed with R seeds / with 1 seed = {out['per_seed_many_over_one']:.2f}")
    return out
