"""``ratelab verify --full`` end to end, serial against ``--jobs 2``, into ``benchmarks/RESULTS.md``.

Each run is cold (an empty persistent compilation cache, a new output folder) and is timed from outside (wall, and
the user and system CPU time of the process and its workers). A run leaves a record in ``benchmarks/verify_full.json``
(machine, date, commit, times, verdict counts, the ten longest experiments and a digest of every verdict and trace
array but the wall-clock ones); the section of RESULTS.md between its markers is rewritten from the records, and says
whether the two runs' results are identical (equal digests). Run from the repository root::

    python benchmarks/verify_full.py                  # --jobs 1 then --jobs 2 (hours on 2 cores), then the section
    python benchmarks/verify_full.py --jobs 2         # one run; the other's record is kept
    python benchmarks/verify_full.py --render         # only rewrite the section from the records
    python benchmarks/verify_full.py --adopt 2 LOG OUT  # record a run made by hand: LOG from ``/usr/bin/time -v``

A run by hand is ``RATELAB_CACHE_DIR=$(mktemp -d) /usr/bin/time -v ratelab verify --full --jobs N --no-progress
--out OUT > LOG 2>&1``: the same command this script runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECORDS = HERE / "verify_full.json"
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- verify-full:start -->", "<!-- verify-full:end -->"
WALL_ARRAYS = ("block_wall_s",)  # trace arrays that hold wall-clock times, not results
WALL_PREFIXES = ("metric/time_",)  # metrics that are measured run time x steps (pbgd's accuracy-vs-time axes)


def digest(out: Path) -> str:
    """sha256 over every experiment's verdicts (times stripped) and trace arrays (wall-clock ones left out)."""
    h = hashlib.sha256()
    for exp in sorted(p for p in out.iterdir() if (p / "result.json").exists()):
        res = json.loads((exp / "result.json").read_text())
        h.update(exp.name.encode())
        h.update(json.dumps(res["verdicts"], sort_keys=True).encode())
        with np.load(exp / "trace.npz") as tr:
            for name in sorted(n for n in tr.files if n not in WALL_ARRAYS and not n.startswith(WALL_PREFIXES)):
                h.update(name.encode())
                h.update(np.ascontiguousarray(tr[name]).tobytes())
    return h.hexdigest()


def summarise(out: Path) -> dict:
    """Verdict counts over claims and each experiment's wall time, from a finished run's folder."""
    report = json.loads((out / "report.json").read_text())
    counts: dict[str, int] = {}
    for c in report["claims"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    walls = {e["id"]: round(float(e["timings"].get("wall_s", 0.0)), 1) for e in report["experiments"]}
    return {"claims": len(report["claims"]), "experiments": len(report["experiments"]), "verdicts": counts,
            "walls": walls, "digest": digest(out), "date": report["generated"]}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _jax_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jax")
    except PackageNotFoundError:
        return "?"


def _machine() -> dict:
    return {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "jax": _jax_version(),
            "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                         if ln.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"}


def run(jobs: int, work: Path) -> dict:
    """One cold ``verify --full --jobs jobs`` in a subprocess; its record."""
    out = work / f"full_jobs{jobs}"
    cache = Path(tempfile.mkdtemp(prefix="ratelab-cache-", dir=work))
    env = {**os.environ, "RATELAB_CACHE_DIR": str(cache)}
    exe = Path(sys.executable).with_name("ratelab")  # the console script beside this Python (pip install -e .)
    cmd = [str(exe) if exe.exists() else "ratelab", "verify", "--full", "--jobs", str(jobs), "--no-progress",
           "--out", str(out)]
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    (work / f"full_jobs{jobs}.log").write_text(proc.stdout + proc.stderr)
    return {"jobs": jobs, "wall_s": round(wall, 1), "user_s": round(after.children_user - before.children_user, 1),
            "sys_s": round(after.children_system - before.children_system, 1), "exit": proc.returncode,
            "command": " ".join(["ratelab", *cmd[1:-1], "OUT"]), **summarise(out)}


def adopt(jobs: int, log: Path, out: Path) -> dict:
    """The record of a run made by hand, its times read from ``/usr/bin/time -v``'s lines in ``log``."""
    text = log.read_text()

    def field(name: str) -> str:
        m = re.search(rf"{re.escape(name)}: (.+)", text)
        if not m:
            raise SystemExit(f"{log}: no '{name}' line (was the run wrapped in /usr/bin/time -v?)")
        return m.group(1).strip()

    parts = [float(x) for x in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"jobs": jobs, "wall_s": round(wall, 1), "user_s": float(field("User time (seconds)")),
            "sys_s": float(field("System time (seconds)")), "exit": int(field("Exit status")),
            "command": f"ratelab verify --full --jobs {jobs} --no-progress --out OUT (by hand)", **summarise(out)}


def render(records: dict) -> str:
    lines = [START, "## `ratelab verify --full`: serial against `--jobs 2` (`benchmarks/verify_full.py`)", ""]
    rows = [records[k] for k in sorted(records)]
    if not rows:
        return "\n".join([*lines, "No run recorded yet.", END])
    lines += ["Cold runs (empty compilation cache, new output folder), one after the other on a quiet machine. "
              "CPU = user + system time of the process and its workers.", "",
              "| jobs | wall | CPU | CPU / wall | claims | verdicts | exit | machine | date | commit |",
              "|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for r in rows:
        cpu = r["user_s"] + r["sys_s"]
        verdicts = ", ".join(f"{v} {k}" for k, v in sorted(r["verdicts"].items()))
        lines.append(f"| {r['jobs']} | {r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s) | {cpu:.0f} s | "
                     f"{cpu / r['wall_s']:.2f} | {r['claims']} of {r['experiments']} experiments | {verdicts} | "
                     f"{r['exit']} | {r['machine']['cores']} cores, {r['machine']['cpu']} | {r['date']} | "
                     f"{r['commit']} |")
    for r in rows:
        if r.get("note"):
            lines += ["", f"Conditions of the `--jobs {r['jobs']}` run: {r['note']}"]
    def code(r: dict) -> str:
        return f"{r['commit']} with jax {r['machine'].get('jax', '?')}"

    comparable = len({code(r) for r in rows}) == 1
    if len(rows) >= 2 and not comparable:
        lines += ["", "The runs measured different code (" + ", ".join(f"`--jobs {r['jobs']}`: {code(r)}"
                                                                       for r in rows)
                  + "), so their times and results are not compared."]
    elif len(rows) >= 2:
        a, b = rows[0], rows[1]
        same = a["digest"] == b["digest"]
        lines += ["", f"Speed-up of `--jobs {b['jobs']}` over `--jobs {a['jobs']}`: "
                  f"{a['wall_s'] / b['wall_s']:.2f}x in wall time. Results "
                  + ("identical: every verdict and every trace array (wall-clock times aside) hash the same "
                     f"(sha256 {a['digest'][:16]}...)." if same else
                     f"DIFFER: digests {a['digest'][:16]}... and {b['digest'][:16]}...")]
    # the serial run's walls when the runs measured the same code, else the newest run's
    ref = min(rows, key=lambda r: r["jobs"]) if comparable else max(rows, key=lambda r: r["date"])
    top = sorted(ref["walls"].items(), key=lambda kv: -kv[1])[:10]
    total = sum(ref["walls"].values())
    lines += ["", f"The ten longest experiments of the `--jobs {ref['jobs']}` run (wall s, of {total:.0f} s "
              "summed over all experiments): " + ", ".join(f"{k} {v:.0f}" for k, v in top) + ".",
              "", "Commands: " + "; ".join(f"`{r['command']}`" for r in rows) + ".", END]
    return "\n".join(lines)


def write_section(records: dict) -> None:
    text = RESULTS.read_text()
    section = render(records)
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, nargs="*", default=[1, 2], help="the --jobs values to run (default: 1 2)")
    p.add_argument("--render", action="store_true", help="only rewrite the RESULTS.md section from the records")
    p.add_argument("--adopt", nargs=3, metavar=("JOBS", "LOG", "OUT"), help="record a finished run made by hand")
    p.add_argument("--commit", default=None, help="the commit the runs measured (default: this checkout's HEAD)")
    p.add_argument("--work", type=Path, default=None, help="folder for the runs' outputs (default: a temporary one)")
    p.add_argument("--note", default="", help="what else ran on the machine during the run(s), kept in the record")
    args = p.parse_args(argv)
    records = {int(k): v for k, v in json.loads(RECORDS.read_text()).items()} if RECORDS.exists() else {}
    stamp = {"commit": args.commit or _git("rev-parse", "--short", "HEAD"), "machine": _machine(),
             **({"note": args.note} if args.note else {})}
    if args.adopt:
        jobs = int(args.adopt[0])
        records[jobs] = {**stamp, **adopt(jobs, Path(args.adopt[1]), Path(args.adopt[2]))}
    elif not args.render:
        work = args.work or Path(tempfile.mkdtemp(prefix="ratelab-full-"))
        work.mkdir(parents=True, exist_ok=True)
        for jobs in args.jobs:
            print(f"verify --full --jobs {jobs} (cold) in {work} ...", flush=True)
            records[jobs] = {**stamp, **run(jobs, work)}
            print(f"  {records[jobs]['wall_s']:.0f} s wall, exit {records[jobs]['exit']}", flush=True)
            RECORDS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    RECORDS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    if 1 in records:  # the serial run's walls: the --full schedule's estimates on a fresh clone
        from _common import write_walls

        serial = records[1]
        write_walls("full", serial["walls"], "benchmarks/verify_full.py (its --jobs 1 record)",
                    {"date": serial["date"], "commit": serial["commit"], "machine": f"{serial['machine']['cpu']}, "
                     f"{serial['machine']['cores']} cores", "persistent_cache": "off (cold)"})
    write_section(records)
    print(render(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
