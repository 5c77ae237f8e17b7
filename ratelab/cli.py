"""The ``ratelab`` command line: ``list``, ``run``, ``verify``, ``report`` and ``scale``.

Exit status: 0 when every judged claim passes, 1 when one fails, 2 on a usage or input error (one line on
stderr naming the argument and what is allowed; no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ratelab import xla_flags
from ratelab.budget import MAX_AUTO_JOBS
from ratelab.errors import RatelabError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"ratelab: error: {message} (see 'ratelab {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"ratelab: error: {message} (see 'ratelab --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must look like KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _add_run_options(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small configuration (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the paper's settings")
    p.set_defaults(mode="quick")
    p.add_argument("--seeds", type=_positive_int, help="number of independent runs (overrides the config)")
    p.add_argument("--steps", type=_positive_int, help="iterations per run (overrides the config)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value (e.g. --set a=2.0)")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--force", action="store_true", help="rerun even if config and code are unchanged")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="hide progress bars")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=True,
                   help="do not read or write the persistent compilation cache (see ratelab.cache)")
    p.add_argument("--module", dest="modules", action="append", default=[], metavar="PATH",
                   help="import this Python file first: it registers experiments of one's own (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ratelab", description="Theory papers as running, checkable numbers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_list = sub.add_parser("list", help="list experiments and their claims")
    p_list.add_argument("--markdown", action="store_true", help="print the README table of papers and claims")
    p_list.add_argument("--results", default="results", help="folder whose report.json gives current verdicts")
    p_run = sub.add_parser("run", help="run one experiment and judge its claims")
    p_run.add_argument("id", help="experiment id (see 'ratelab list')")
    _add_run_options(p_run)
    p_ver = sub.add_parser("verify", help="run experiments, judge each claim, write REPORT.md, report.json, index.html")
    p_ver.add_argument("--only", nargs="+", metavar="ID", help="only these experiments")
    p_ver.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="run experiments in N worker processes (default: this machine's cores, at most "
                       f"{MAX_AUTO_JOBS}; 1 runs them in this process; the report equals a serial run's)")
    p_ver.add_argument("--scheduler", metavar="ADDRESS",
                       help="send the experiments to a running dask distributed cluster (e.g. tcp://host:8786; "
                            "needs pip install ratelab[cluster]); the workers, which need this same ratelab "
                            "checkout but no shared filesystem, return the files and this machine writes them "
                            "under --out; the report equals a serial run's")
    _add_run_options(p_ver)
    p_rep = sub.add_parser("report", help="write index.html for an existing results folder")
    p_rep.add_argument("folder", help="a results folder (with report.json or ID/result.json files)")
    p_scale = sub.add_parser("scale", help="bilevel data selection on a sharded mesh: memory/FLOP plan or a run")
    p_scale.add_argument("--model", default="tiny", help="tiny, small, 1b or 7b (default: tiny)")
    p_scale.add_argument("--mesh", default="data=1", help="AXIS=SIZE,... with AXIS in data, fsdp, tensor")
    p_scale.add_argument("--plan", action="store_true", help="compile on abstract shapes only; allocate nothing")
    p_scale.add_argument("--steps", type=_positive_int, default=10, help="steps of the measured run (default 10)")
    p_scale.add_argument("--batch", type=_positive_int, help="global batch of training sequences")
    p_scale.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = dict(args.settings)
    for name in ("seeds", "steps"):
        value = getattr(args, name)
        if value is None:
            continue
        if name in out and str(out[name]) != str(value):
            raise RatelabError(f"--set {name}={out[name]} and --{name} {value} disagree; give one of them")
        out[name] = value
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_ROW_KEYS = ("experiment", "claim", "status", "measured", "ci")


def _warn_ignored(path: Path, err: Exception) -> None:
    _log(f"ratelab: warning: ignoring {path} (not a ratelab result: {err}); its verdicts shown as not run")


def _report_rows(report: Path) -> dict[tuple[str, str], dict]:
    """(experiment, claim) -> row of ``report.json``; an unreadable or foreign file counts as absent (one warning)."""
    if not report.exists():
        return {}
    try:
        data = json.loads(report.read_text())
        claims = data.get("claims", []) if isinstance(data, dict) else None
        if not isinstance(claims, list):
            raise ValueError("no list of claims")
        out = {}
        for row in claims:
            if not isinstance(row, dict) or not all(k in row for k in _ROW_KEYS):
                raise ValueError(f"a claim row lacks one of {', '.join(_ROW_KEYS)}")
            lo_hi = row["ci"]
            if not (isinstance(lo_hi, list) and len(lo_hi) == 2):
                raise ValueError("a claim row's ci is not [lo, hi]")
            out[(str(row["experiment"]), str(row["claim"]))] = row
        return out
    except (OSError, ValueError, UnicodeDecodeError) as err:
        _warn_ignored(report, err)
        return {}


def _current_verdicts(results: Path, ids: list[str]) -> dict[tuple[str, str], dict]:
    """The newest verdict of every claim: each experiment's own ``ID/result.json`` (written by the last ``run`` or
    ``verify`` into that folder, with the band of the config that ran), else its row in ``report.json``."""
    from ratelab.report import rows

    current = _report_rows(results / "report.json")
    for exp_id in ids:
        path = results / exp_id / "result.json"
        if not path.exists():
            continue
        try:
            result = json.loads(path.read_text())
            if not isinstance(result, dict) or result.get("id") != exp_id:
                raise ValueError(f"not the result of {exp_id}")
            fresh = {(exp_id, row["claim"]): row for row in rows([result])}
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            _warn_ignored(path, err)
            continue
        current = {k: v for k, v in current.items() if k[0] != exp_id} | fresh
    return current


def _cmd_list(args: argparse.Namespace) -> int:
    from ratelab.index import load as load_index
    from ratelab.report import md_cell, measured_text

    with _uninterrupted_imports():
        index = load_index()
    current = _current_verdicts(Path(args.results), [e["id"] for e in index])
    lines = []
    if args.markdown:
        lines += ["| experiment | paper | regenerates | claim | claimed | verdict (quick) | negative control (quick) |",
                  "|---|---|---|---|---|---|---|"]
    for exp in index:
        if not args.markdown:
            lines.append(f"{exp['id']:<12} {exp['paper_short']}, {exp['figure']}")
            lines.append(f"{'':<12} {exp['title']}")
        for c in exp["claims"]:
            row = current.get((exp["id"], c["id"]))
            claimed = c["claimed"] if row is None else row.get("claimed", c["claimed"])
            verdict = "not run" if row is None else f"{row['status']}: {measured_text(row)}" + (
                f" ({row['mode']})" if row.get("mode", "quick") != "quick" else "")
            control = c["declared_control"] if row is None else row.get("control", "not run")
            if args.markdown:
                paper = f"[{exp['paper_short']}]({exp['paper_url']})" if exp["paper_url"] else exp["paper_short"]
                lines.append(f"| `{exp['id']}` | {paper} | {md_cell(exp['figure'])} | {md_cell(c['statement'])} | "
                             f"{claimed} | {verdict} | {md_cell(control)} |")
            else:
                lines.append(f"{'':<12}   - {c['id']}: {c['statement']}; {claimed} ({verdict}); "
                             f"control: {control}")
    print("\n".join(lines))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace, ids: list[str] | None) -> int:
    if ids and not args.modules:  # an unknown id answered from the index, before importing JAX
        from ratelab.index import known_ids

        with _uninterrupted_imports():  # a stale index is rebuilt from the registry, which imports jax
            known = known_ids()
        for i in ids:
            if i not in known:
                raise RatelabError(f"unknown experiment {i!r}; known: {', '.join(sorted(known)) or '(none)'}")
    with _uninterrupted_imports():
        import matplotlib

        matplotlib.use("Agg")  # the command line draws to files only
        from ratelab.cache import disable, enable

        enable() if args.cache else disable()  # persistent compilation cache: ~/.cache/ratelab/jax
        import ratelab.catalog  # noqa: F401  (every paper module: scipy, optax, the solvers)
        from ratelab.harness import plan, prepare_out, run_experiment, verify
        from ratelab.modules import load_module
        from ratelab.registry import get
        from ratelab.report import all_passed, console_table, rows

    overrides = _overrides(args)
    if args.command == "verify":
        report = verify(ids, args.mode, out=args.out, overrides=overrides, force=args.force, progress=args.progress,
                        log=_log, jobs=args.jobs or (1 if args.scheduler else None), modules=args.modules,
                        scheduler=args.scheduler)
        print(console_table(report.rows))
        print(f"\nreport: {report.markdown_path}, page: {report.markdown_path.parent / 'index.html'}")
        return EXIT_OK if report.passed else EXIT_FAIL
    for path in args.modules:
        load_module(path)
    (exp,) = [get(i) for i in ids]
    planned = plan(exp, args.mode, overrides)  # every input error before any compute
    prepare_out(args.out)
    result = run_experiment(exp, args.mode, out=args.out, overrides=overrides, force=args.force,
                            progress=args.progress, log=_log, planned=planned)
    table = rows([result])
    print(console_table(table))
    print(f"\nfigure: {Path(args.out) / exp.id / 'figure.png'}")
    return EXIT_OK if all_passed(table) else EXIT_FAIL


_INTERRUPTED = "ratelab: interrupted; finished experiments are saved, a rerun resumes the rest"
_SIGNALS: list[int] = []  # the interrupting signals received, first first
_SAID: list[bool] = []
_STDERR: Any = None  # the real stderr, once an interrupt has silenced the libraries' unwinding noise
GRACE_S = 10.0  # after an interrupt, the seconds allowed for a clean unwind before the process leaves anyway


def _signal_exit_code(signum: int) -> int:
    return 128 + signum  # 130 for SIGINT, 143 for SIGTERM


def _leave(code: int) -> None:
    """Exit now with ``code``: no interpreter teardown racing XLA's threads (which segfaulted), no handler left
    that could swallow the exit. Files are written atomically, so nothing half-written is left in place."""
    for stream in (sys.stdout, sys.stderr, _STDERR):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


_DEFER: list[bool] = []  # non-empty while the heavy imports run: an interrupt then waits for their end


@contextlib.contextmanager
def _uninterrupted_imports() -> Iterator[None]:
    """Let the imports of jax, scipy and the paper modules finish before an interrupt acts: a KeyboardInterrupt
    raised inside a C extension's initialisation can abort the process (SIGABRT) instead of unwinding it."""
    _DEFER.append(True)
    try:
        yield
    finally:
        _DEFER.clear()
    if _SIGNALS:
        raise KeyboardInterrupt


def _say_interrupted() -> None:
    """The one line an interrupt prints (once, however the process leaves)."""
    if not _SAID:
        _SAID.append(True)
        print(_INTERRUPTED, file=_STDERR or sys.stderr, flush=True)


def _leave_interrupted(code: int) -> None:
    _say_interrupted()
    _leave(code)


def _on_signal(signum: int, frame: Any) -> None:
    first = not _SIGNALS
    _SIGNALS.append(signum)
    if not first:  # a second Ctrl-C: leave at once
        _leave_interrupted(_signal_exit_code(_SIGNALS[0]))
    # the unwind is ours to report: what libraries print while the interrupt tears through them (a logged traceback
    # of an import it broke) goes nowhere; the one line that says what happened goes to the real stderr
    global _STDERR
    _STDERR = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process's life)
    # an exception raised here can land in a callback that swallows it (jax's GC hook): the watchdog then ends the
    # process after GRACE_S, so an interrupt never turns into a normal exit
    timer = threading.Timer(GRACE_S, _leave_interrupted, args=(_signal_exit_code(signum),))
    timer.daemon = True
    timer.start()
    if not _DEFER:
        raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)  # also where the shell started us with SIGINT ignored (a background job)


def main(argv: list[str] | None = None) -> int:
    """The ``ratelab`` script. Run as the script (``argv`` None) it handles SIGINT and SIGTERM: exit 130 or 143,
    every time; called with ``argv`` (tests, notebooks), Python's own handling is left as it is."""
    if argv is not None:
        return _main(argv)
    _install_signal_handlers()
    try:
        code = _main(None)
    except BaseException:
        # an interrupt landing inside an import comes back as another exception (numpy re-raises it as an
        # ImportError): the signal decides the exit code, not what it was wrapped in
        if not _SIGNALS:
            raise
        code = EXIT_FAIL
    if _SIGNALS:
        _leave_interrupted(_signal_exit_code(_SIGNALS[0]))
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    xla_flags.apply()  # compiler flags that cut compile time (ratelab.xla_flags), before jax starts its backend
    if getattr(args, "cache", False):
        from ratelab.cache import quiet_loader_log

        quiet_loader_log()  # no ERROR lines from XLA:CPU's loader on every cache hit (ratelab.cache)
    try:
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "run":
            return _cmd_run(args, [args.id])
        if args.command == "report":
            from ratelab.html import write_page

            print(write_page(args.folder))
            return EXIT_OK
        if args.command == "scale":
            from ratelab.scale import run_command

            return run_command(args.model, args.mesh, plan_only=args.plan, steps=args.steps, batch=args.batch,
                               json_path=args.json_path)
        return _cmd_run(args, args.only)
    except RatelabError as err:
        print(f"ratelab: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a full disk, a folder removed under the run: one line, nothing half-written (atomic)
        where = err.filename or getattr(args, "out", None) or getattr(args, "json_path", None) or "."
        print(f"ratelab: error: could not write {where} ({err.strerror or err}); finished files are whole, "
              "a rerun resumes", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        _say_interrupted()
        return _signal_exit_code(_SIGNALS[0] if _SIGNALS else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
