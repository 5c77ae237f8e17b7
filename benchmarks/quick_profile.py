"""Where ``ratelab verify --quick`` spends its time, per experiment and per phase, and how many programs XLA builds.

Runs the registered experiments through the harness (``ratelab.harness.run_experiment``, ``force=True``) with
timers around its phases and listeners on jax's compile events, and prints one row per experiment:

* ``plan``: config, ``validate`` and the claims (some validate or claims functions compute with jax eagerly);
* ``exec``: the main run (``Experiment.execute``), of which ``aot`` is the runner's / ``rl.call``'s compile;
* ``ctrl``: the negative controls' runs; ``check``: the verdicts (bootstrap fits); ``fig``: figures (panel
  references included); ``save``: traces and result.json;
* ``progs``: programs XLA compiled (or loaded from the persistent cache) during the experiment, ``xla_s`` their
  compile time, ``trace_s`` / ``lower_s`` jax's tracing and lowering, ``eager``: programs from eager jax calls
  (one op or one un-jitted function at a time, outside any ahead-of-time ``Lowered.compile``), ``hits``:
  persistent-cache hits. ``--programs`` lists them as ``phase:[aot ]name``.

Run from the repository root (the persistent cache is off unless ``--cache DIR`` is given)::

    python benchmarks/quick_profile.py                       # every experiment, quick configs
    python benchmarks/quick_profile.py --only rm-fast a3c-speedup --cache /tmp/jax-cache
    python benchmarks/quick_profile.py --programs            # also list each experiment's programs by name
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

from ratelab import xla_flags  # noqa: E402

xla_flags.apply()  # the compiler flags the CLI runs with (RATELAB_XLA_DEFAULTS=0 profiles XLA's defaults)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import jax  # noqa: E402
from jax._src import monitoring  # noqa: E402

T_JAX = time.perf_counter()

from _common import write_walls  # noqa: E402  (benchmarks/ is the script's folder)

from ratelab import harness  # noqa: E402
from ratelab.registry import experiments, get  # noqa: E402

T_IMPORT = time.perf_counter()

PHASES = ("plan", "exec", "ctrl", "check", "fig", "save")


class Recorder:
    """Per experiment: seconds per phase and jax's compile events, attributed to the phase they happened in."""

    def __init__(self):
        self.exp = "(imports)"
        self.phase = "plan"
        self.secs = collections.defaultdict(float)
        self.xla = collections.defaultdict(float)
        self.programs: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.aot = False
        monitoring.register_event_duration_secs_listener(self.on_duration)
        monitoring.register_event_listener(self.on_event)

    def on_duration(self, event: str, duration: float, **kw) -> None:
        if event.endswith("backend_compile_duration"):
            self.xla[(self.exp, "xla_s")] += duration
            self.xla[(self.exp, "progs")] += 1
            self.xla[(self.exp, f"progs_{self.phase}")] += 1
            name = kw.get("fun_name", "?")
            self.programs[self.exp][f"{self.phase}:{'aot ' if self.aot else ''}{name}"] += 1
            if not self.aot:
                self.xla[(self.exp, "eager")] += 1
        elif event.endswith("jaxpr_trace_duration"):
            self.xla[(self.exp, "trace_s")] += duration
        elif event.endswith("jaxpr_to_mlir_module_duration"):
            self.xla[(self.exp, "lower_s")] += duration

    def on_event(self, event: str, **kw) -> None:
        if event.endswith("cache_hits"):
            self.xla[(self.exp, "hits")] += 1

    def watch_aot(self) -> None:
        """Mark compiles inside ``Lowered.compile`` (the runner's and ``rl.call``'s ahead-of-time programs)."""
        from jax._src import stages

        inner = stages.Lowered.compile

        def compile_(lowered, *args, **kw):
            self.aot = True
            try:
                return inner(lowered, *args, **kw)
            finally:
                self.aot = False

        stages.Lowered.compile = compile_

    def wrap(self, module, name: str, phase: str) -> None:
        inner = getattr(module, name)

        def timed(*args, **kw):
            outer, self.phase = self.phase, phase
            t0 = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                self.secs[(self.exp, phase)] += time.perf_counter() - t0
                self.phase = outer

        setattr(module, name, timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="ID")
    ap.add_argument("--mode", default="quick", choices=("quick", "full"))
    ap.add_argument("--cache", metavar="DIR", help="persistent compilation cache folder (default: off)")
    ap.add_argument("--out", help="results folder (default: a temporary one)")
    ap.add_argument("--programs", action="store_true", help="list each experiment's compiled programs")
    ap.add_argument("--json", help="also write the table to this JSON file")
    ap.add_argument("--walls", action="store_true",
                    help="record each experiment's total as this mode's entry of experiments/walls.json (the verify "
                         "schedule's estimate on a fresh clone; run without --cache and without --only)")
    args = ap.parse_args()
    if args.cache:
        from ratelab.cache import enable

        enable(args.cache)
    else:
        jax.config.update("jax_enable_compilation_cache", False)
    rec = Recorder()
    rec.watch_aot()
    for name, phase in (("plan", "plan"), ("run_controls", "ctrl"), ("check", "check"),
                        ("plot_experiment", "fig"), ("save_figure", "fig"), ("save_trace", "save"),
                        ("atomic_write_json", "save")):
        rec.wrap(harness, name, phase)
    exps = [get(i) for i in args.only] if args.only else experiments()
    out = Path(args.out or tempfile.mkdtemp(prefix="ratelab-profile-"))
    rows = []
    t_all = time.perf_counter()
    for exp in exps:
        rec.exp, rec.phase = exp.id, "exec"
        t0 = time.perf_counter()
        result = harness.run_experiment(exp, args.mode, out=out, force=True)
        total = time.perf_counter() - t0
        t = result["timings"]
        s = {p: rec.secs[(exp.id, p)] for p in PHASES}
        s["exec"] = t["wall_s"]
        x = {k: rec.xla[(exp.id, k)] for k in ("progs", "eager", "xla_s", "trace_s", "lower_s", "hits")}
        rows.append({"id": exp.id, "total": total, **s, "aot": t.get("compile_s", 0.0), "run": t.get("run_s", 0.0),
                     **x, "programs": dict(rec.programs[exp.id])})
    wall = time.perf_counter() - t_all
    head = (f"{'experiment':26} {'total':>6} {'plan':>5} {'exec':>5} {'aot':>5} {'run':>5} {'ctrl':>5} {'check':>5} "
            f"{'fig':>5} {'save':>5} | {'progs':>5} {'eager':>5} {'xla_s':>6} {'trace_s':>7} {'lower_s':>7} "
            f"{'hits':>4}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['id']:26} {r['total']:6.2f} {r['plan']:5.2f} {r['exec']:5.2f} {r['aot']:5.2f} {r['run']:5.2f} "
              f"{r['ctrl']:5.2f} {r['check']:5.2f} {r['fig']:5.2f} {r['save']:5.2f} | {int(r['progs']):5d} "
              f"{int(r['eager']):5d} {r['xla_s']:6.2f} {r['trace_s']:7.2f} {r['lower_s']:7.2f} {int(r['hits']):4d}")
    tot = {k: sum(r[k] for r in rows) for k in ("total", *PHASES, "aot", "run", "progs", "eager", "xla_s", "trace_s",
                                               "lower_s", "hits")}
    print("-" * len(head))
    print(f"{'sum':26} {tot['total']:6.1f} {tot['plan']:5.1f} {tot['exec']:5.1f} {tot['aot']:5.1f} {tot['run']:5.1f} "
          f"{tot['ctrl']:5.1f} {tot['check']:5.1f} {tot['fig']:5.1f} {tot['save']:5.1f} | {int(tot['progs']):5d} "
          f"{int(tot['eager']):5d} {tot['xla_s']:6.1f} {tot['trace_s']:7.1f} {tot['lower_s']:7.1f} "
          f"{int(tot['hits']):4d}")
    print(f"\nimports: jax {T_JAX - T_START:.2f} s, ratelab + experiments {T_IMPORT - T_JAX:.2f} s; "
          f"experiments {wall:.1f} s; process so far {time.perf_counter() - T_START:.1f} s; "
          f"persistent cache {'on: ' + args.cache if args.cache else 'off'}")
    if args.programs:
        for r in rows:
            progs = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(r["programs"].items()))
            print(f"\n{r['id']} ({int(r['progs'])} programs): {progs}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "wall": wall, "imports": T_IMPORT - T_START}, indent=1))
    if args.walls:
        write_walls(args.mode, {r["id"]: round(r["total"], 2) for r in rows}, "benchmarks/quick_profile.py --walls",
                    {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} cores", "jax": jax.__version__,
                     "persistent_cache": "on" if args.cache else "off (cold)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
