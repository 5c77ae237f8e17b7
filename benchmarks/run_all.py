"""Run every benchmark and regenerate ``benchmarks/RESULTS.md`` (machine, date, versions, every ratio and roof).

Each benchmark runs in its own process. The authors'-loop benchmarks (``rfedsvrg_kpca``, ``radmm_spca``,
``pbgd_hyperclean``, ``bc_reset_cliff``, ``mbtail_reset_cliff``), ``a3c_speedup`` (a loop written from the paper:
no public code) and ``attention_kernels`` write JSON records that become the summary tables; every benchmark's
full printout is kept below them, with the command that produced it. The ``verify --full`` section at the end is
rendered from ``benchmarks/verify_full.json``, the records of ``benchmarks/verify_full.py`` (hours of runs, not
repeated here).

Threads: ``--threads 1`` (the default) pins NumPy's BLAS and XLA to one thread each (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``), which keeps ratios meaningful on a loaded machine (a multi-threaded BLAS spinning
against other jobs ran the RADMM loop 20x slower); the matmul peak is then one core's. ``--threads 0`` leaves the
libraries' defaults.

Run from the repository root::

    python benchmarks/run_all.py                  # everything (tens of minutes on 2 cores)
    python benchmarks/run_all.py --quick          # each benchmark's --quick size where it has one
    python benchmarks/run_all.py --only rfedsvrg_kpca radmm_spca --out /tmp/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (arguments, quick arguments, has a JSON record)
BENCHMARKS = {
    "rfedsvrg_kpca": ([], ["--quick"], True),
    "radmm_spca": ([], ["--quick"], True),
    "pbgd_hyperclean": ([], ["--quick"], True),
    "bc_reset_cliff": ([], ["--quick"], True),
    "mbtail_reset_cliff": ([], ["--quick"], True),
    "a3c_speedup": ([], ["--quick"], True),
    "sa_throughput": (["--quick"], ["--quick", "--dims", ""], False),
    "aipod": ([], ["--seeds", "4", "--steps", "500"], False),
    "bc_gap": (["--quick"], ["--quick"], False),
    "scale": ([], ["--devices", "1,2"], False),
    "bilevel_side_by_side": ([], ["--steps", "1000"], False),
    "bilevel_saba_contraction": ([], [], False),
    "oop_bandit": ([], ["--quick"], False),
    "dp_filters": ([], ["--quick"], False),
    "attention_kernels": ([], ["--quick"], True),
}


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            f"intra_op_parallelism_threads={threads}").strip()
    return env


def _fmt(x: float, unit: str = "") -> str:
    return f"{x:.3g}{unit}"


def _summary(records: list[dict]) -> list[str]:
    lines = ["| benchmark | R | NumPy per rep (s) | ratelab 1 seed (s) | compile (s) | per rep | per rep, cold | "
             "R reps | R reps, cold | per seed R vs 1 | roof, 1 seed | roof, R seeds | us/step (NumPy, 1, R) | "
             "same answer |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for rec in records:
        for r in rec["results"].values():
            same = {k: v for k, v in r.items() if k in ("max_abs_diff", "rel_objective_diff", "rel_diff_x",
                                                         "rel_diff_W", "final_dist")}
            same_text = r.get("same_text") or ", ".join(f"{k} {v:.1e}" for k, v in same.items()) or (
                "means within 4 SE of closed form")
            lines.append(
                f"| {r['name']} | {r['reps']} | {_fmt(r['numpy_per_rep_s'])} | {_fmt(r['ratelab_one_run_s'])} | "
                f"{_fmt(r['ratelab_one_compile_s'])} | {r['ratio_per_rep']:.1f}x | {r['ratio_per_rep_cold']:.2f}x | "
                f"{r['ratio_reps']:.1f}x | {r['ratio_reps_cold']:.2f}x | {r['per_seed_many_over_one']:.2f} | "
                f"{100 * r['roof_one']:.1f} % | {100 * r['roof_many']:.1f} % | "
                f"{r['us_per_step_numpy']:.3g}, {r['us_per_step_one']:.3g}, {r['us_per_step_many']:.3g} | "
                f"{'yes' if rec['ok'] else 'NO'}: {same_text} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME")
    ap.add_argument("--skip", nargs="+", default=[], choices=sorted(BENCHMARKS), metavar="NAME")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / XLA threads (0: the libraries' defaults)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    env = _env(args.threads)
    records, outputs, failed = [], [], []
    load_before = os.getloadavg()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            full, quick, has_json = BENCHMARKS[name]
            argv = [*(quick if args.quick else full)]
            if has_json:
                argv += ["--json", str(Path(tmp) / f"{name}.json")]
            cmd = [sys.executable, str(HERE / f"{name}.py"), *argv]
            shown = " ".join(["python", f"benchmarks/{name}.py", *[a for a in argv if not a.startswith(tmp)]])
            shown = shown.replace(" --json", "")
            print(f"== {shown}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
            if proc.returncode:
                failed.append(name)
            outputs.append((shown, wall, proc.returncode, proc.stdout, proc.stderr))
            if has_json and (Path(tmp) / f"{name}.json").exists():
                records.append(json.loads((Path(tmp) / f"{name}.json").read_text()))
    import jax
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = f"{args.threads} (BLAS and XLA pinned)" if args.threads else "library defaults"
    md = ["# Benchmark results", "",
          f"Generated by `python benchmarks/run_all.py{' --quick' if args.quick else ''}"
          f"{'' if args.threads == 1 else f' --threads {args.threads}'}` on {time.strftime('%Y-%m-%d %H:%M %Z')}: "
          f"{cpu}, {os.cpu_count()} cores, threads {threads}; load average {load_before[0]:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after ({time.perf_counter() - t_all:.0f} s in all). Python "
          f"{platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, {platform.platform()}.", "",
          "Absolute times depend on the load of the machine; ratios come from the same run of each script.", "",
          "## The authors' loops against ratelab", "",
          "Per repetition: the NumPy port of the authors' published loop (one repetition) against ratelab with one "
          "seed (execution; `cold` adds ratelab's compile time). R reps: R sequential NumPy repetitions against "
          "ratelab's R seeds in one vmapped call. Per seed R vs 1: ratelab's time per seed with R seeds over its "
          "time with one seed (below 1: vmapping pays). Roof: FLOP/s counted from the algorithm over the dense "
          "matmul peak measured in the same run. Commands and full output below.", "",
          *_summary(records), ""]
    if failed:
        md += [f"**Failed (exit status != 0): {', '.join(failed)}.**", ""]
    md += ["## Full output", ""]
    for shown, wall, code, out, err in outputs:
        md += [f"### `{shown}`", "", f"exit status {code}, {wall:.0f} s", "", "```", out.strip(), "```", ""]
        if code:
            md += ["stderr (tail):", "", "```", err.strip()[-2000:], "```", ""]
    import verify_full

    records = json.loads(verify_full.RECORDS.read_text()) if verify_full.RECORDS.exists() else {}
    md += [verify_full.render({int(k): v for k, v in records.items()}), ""]
    Path(args.out).write_text("\n".join(md) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
