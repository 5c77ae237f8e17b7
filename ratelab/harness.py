"""Run registered experiments: validate, compute (or reuse), judge the claims and write the results atomically.

Per experiment, under ``OUT/ID/``: ``trace.npz`` (steps, metrics, divergence), ``figure.png`` and ``result.json``
(config, hashes, versions, seed, timings, verdicts). ``result.json`` is written last: it is the commit record, so
a folder without it is an interrupted run, which the next run of the same config and code resumes from its own
``checkpoint-<config>-<code>.npz`` (deleted only after ``result.json`` is written).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ratelab.budget import MAX_AUTO_JOBS, check_memory, usable_cores
from ratelab.claims import Claim, Control, Verdict, check, overall_status
from ratelab.errors import RatelabError
from ratelab.figures import plot_experiment, save_figure
from ratelab.html import write_page
from ratelab.io import atomic_savez, atomic_write, atomic_write_json, sha256_file
from ratelab.lock import folder_lock
from ratelab.provenance import config_hash, experiment_code_version, versions
from ratelab.registry import Experiment, experiments, get, registered_by
from ratelab.report import Report, rows, write_report
from ratelab.runner import KEEP_CHECKPOINT, Trace, remove_checkpoint
from ratelab.validate import check_positive_int

UPDATES_PER_CHUNK = 2e8  # seed-steps per jitted call: a few seconds on one CPU core, so the bar moves


def prepare_out(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and prove it is writable, before any compute."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RatelabError(f"out must be a writable folder, got {str(path)!r} ({err.strerror or err})") from None
    return path


def _check_sizes(cfg: dict[str, Any]) -> None:
    for name in ("seeds", "steps", "log_every"):
        check_positive_int(name, cfg[name])
    if cfg["steps"] % cfg["log_every"]:
        raise RatelabError(f"steps must be a multiple of log_every ({cfg['log_every']}), got {cfg['steps']}")


def plan(exp: Experiment, mode: str, overrides: dict[str, Any] | None = None) -> tuple[dict, list[Claim]]:
    """Resolve and check the config and build the claims: every input error surfaces here, before compute (the
    controls' configs included)."""
    cfg = exp.config(mode, overrides)
    _check_sizes(cfg)
    if exp.validate is not None:
        exp.validate(cfg)
    claims = exp.claims_in(mode, cfg)
    n_metrics = len({p.metric for p in exp.panels} | {c.metric for c in claims})
    check_memory(exp.id, cfg, n_metrics)
    for claim in claims:
        for control in claim.controls:
            check_memory(exp.id, control_config(exp, mode, overrides, control), n_metrics)
    return cfg, claims


def control_config(exp: Experiment, mode: str, overrides: dict[str, Any] | None, control: Control) -> dict:
    """The config a control runs on: the mode's config, the user's overrides, then the control's own changes.

    The experiment's ``validate`` is not applied: it may reject exactly the regime a control moves into (a step
    size outside a theorem's condition); the sizes are checked."""
    try:
        cfg = exp.config(mode, {**(overrides or {}), **dict(control.overrides)})
    except RatelabError as err:
        raise RatelabError(f"{exp.id}: control {control.id!r}: {err}") from None
    _check_sizes(cfg)
    return cfg


def _chunks(cfg: dict[str, Any]) -> int:
    n_blocks = cfg["steps"] // cfg["log_every"]
    return max(1, min(n_blocks, math.ceil(cfg["steps"] * cfg["seeds"] / UPDATES_PER_CHUNK)))


def _run_tag(chash: str, code: str) -> str:
    """What names a run's checkpoints (its own and its controls'): the config hash and the code version."""
    return f"-{chash[:12]}-{code[:8]}"


def run_controls(exp: Experiment, mode: str, overrides: dict[str, Any] | None, claims: list[Claim], trace: Trace,
                 folder: Path, *, progress: bool | None = None, tag: str = "",
                 log: Callable[[str], None] = lambda msg: None) -> tuple[dict[str, dict[str, Trace]], dict[str, str]]:
    """Run every distinct control config once (a control without overrides reuses ``trace``) and save its trace.

    Returns claim id -> control id -> trace, and the files written (name -> file). ``tag`` (the main run's config
    and code hashes) names the controls' checkpoints, so a control of another config is never resumed."""
    runs: dict[str, tuple[Trace, str]] = {}
    files: dict[str, str] = {}
    per_claim: dict[str, dict[str, Trace]] = {}
    for claim in claims:
        traces: dict[str, Trace] = {}
        for control in claim.controls:
            if not control.overrides:
                traces[control.id] = trace
                continue
            key = json.dumps(dict(control.overrides), sort_keys=True, default=str)
            if key not in runs:
                cfg = control_config(exp, mode, overrides, control)
                log(f"{exp.id}: control {control.id}: {control.change}")
                name = f"control-{control.id}"
                while name in files:
                    name += "_"
                ctrace = exp.execute(cfg, jax.random.key(cfg["seed"]), chunks=_chunks(cfg), progress=progress,
                                     checkpoint=folder / f"checkpoint-{name}{tag}.npz")
                save_trace(folder / f"{name}.npz", ctrace)
                files[name] = f"{name}.npz"
                runs[key] = (ctrace, name)
            traces[control.id] = runs[key][0]
        per_claim[claim.id] = traces
    return per_claim, files


def status_of(verdicts: list[dict]) -> str:
    """An experiment's status from its verdicts' statuses: FAIL if any failed, else INCONCLUSIVE if any is, else
    PASS."""
    return overall_status(v["status"] for v in verdicts)


def save_trace(path: Path, trace: Trace) -> None:
    arrays = {"steps": trace.steps, "diverged": trace.diverged, "diverged_at": trace.diverged_at}
    arrays.update({f"metric/{k}": v for k, v in trace.metrics.items()})
    if trace.sweep_values is not None:
        arrays["sweep_values"] = trace.sweep_values
    if trace.block_wall_s is not None:
        arrays["block_wall_s"] = trace.block_wall_s
    atomic_savez(path, arrays)


def load_trace(path: str | os.PathLike) -> Trace:
    with np.load(path) as z:
        metrics = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("metric/")}
        steps = z["steps"]
        return Trace(steps=steps, metrics=metrics, diverged=z["diverged"], diverged_at=z["diverged_at"],
                     final_state=None, log_every=int(steps[0]), aggregate="unknown",
                     sweep_values=z["sweep_values"] if "sweep_values" in z.files else None,
                     block_wall_s=z["block_wall_s"] if "block_wall_s" in z.files else None)


def code_of(exp: Experiment) -> str:
    """The code version an experiment's result depends on: the ratelab packages and the user modules that define
    it (:func:`ratelab.provenance.experiment_code_version`)."""
    return experiment_code_version([exp.execute, exp.claims, exp.validate, *exp.extra_figures.values()])


def _cached(folder: Path, chash: str, code: str, log: Callable[[str], None] = lambda msg: None) -> dict | None:
    """The folder's result if it is the commit record of this config and code and every file it lists is on disk
    with the sha256 it recorded (a file replaced, truncated or left from another run makes the folder stale)."""
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(result, dict) or not isinstance(result.get("files"), dict) \
            or not isinstance(result.get("sha256"), dict):
        return None  # a foreign or older file: treated as absent, the run recomputes and replaces it
    if result.get("config_hash") != chash or result.get("code_version") != code:
        return None
    for name in result["files"].values():
        if sha256_file(folder / name) != result["sha256"].get(name):
            log(f"{folder.name}: {folder / name} is missing or not the file result.json recorded; recomputing")
            return None
    return result


def _reuse(exp_id: str, folder: Path, chash: str, code: str, log: Callable[[str], None]) -> dict | None:
    """The stored result under ``folder`` when its config and code are unchanged and its files are the recorded
    ones."""
    cached = _cached(folder, chash, code, log)
    if cached is None:
        return None
    log(f"{exp_id}: unchanged config and code, reusing {folder / 'result.json'} (--force reruns)")
    return {**cached, "reused": True}


def run_experiment(exp: Experiment, mode: str = "quick", *, out: str | os.PathLike = "results",
                   overrides: dict[str, Any] | None = None, force: bool = False, progress: bool | None = None,
                   log: Callable[[str], None] = lambda msg: None,
                   planned: tuple[dict, list[Claim]] | None = None) -> dict:
    """Run one experiment (or reuse its result) and return the content of its ``result.json``. ``planned``:
    what :func:`plan` returned for the same arguments, when the caller has already checked them (not planned
    twice)."""
    cfg, claims = planned if planned is not None else plan(exp, mode, overrides)
    folder = prepare_out(Path(out) / exp.id)
    with folder_lock(folder, log):  # one writer per folder; a waiter then reuses what the first one wrote
        return _run_locked(exp, mode, cfg, claims, folder, overrides, force, progress, log)


def _run_locked(exp: Experiment, mode: str, cfg: dict, claims: list[Claim], folder: Path,
                overrides: dict[str, Any] | None, force: bool, progress: bool | None,
                log: Callable[[str], None]) -> dict:
    chash = config_hash(exp.id, mode, cfg)
    code = code_of(exp)
    reused = None if force else _reuse(exp.id, folder, chash, code, log)
    if reused is not None:
        return reused

    log(f"{exp.id}: running {mode} ({cfg['seeds']} seeds x {cfg['steps']} steps)")
    t0 = time.perf_counter()
    # one checkpoint per config and code: another config (or a --quick run beside an interrupted --full one) never
    # resumes or deletes it; it is deleted only once the result.json that supersedes it is on disk
    tag = _run_tag(chash, code)
    ckpt = folder / f"checkpoint{tag}.npz"
    token = KEEP_CHECKPOINT.set(True)
    try:
        trace = exp.execute(cfg, jax.random.key(cfg["seed"]), chunks=_chunks(cfg), progress=progress,
                            checkpoint=ckpt)
    finally:
        KEEP_CHECKPOINT.reset(token)
    wall = time.perf_counter() - t0
    control_traces, control_files = run_controls(exp, mode, overrides, claims, trace, folder, progress=progress,
                                                 tag=tag, log=log)
    controls_s = time.perf_counter() - t0 - wall
    log(f"{exp.id}: judging {len(claims)} claim(s) and drawing the figure")
    verdicts: list[Verdict] = [check(c, trace, controls=control_traces[c.id]) for c in claims]

    save_trace(folder / "trace.npz", trace)
    plot_experiment(exp, cfg, trace, verdicts, folder / "figure.png", overrides=overrides)
    extra = {}
    for name, draw in exp.extra_figures.items():
        save_figure(draw(cfg, trace, verdicts), folder / f"{name}.png")
        extra[name] = f"{name}.png"
    diverged = int(trace.diverged.sum())
    result = {
        "id": exp.id,
        "paper": {"key": exp.paper.key, "short": exp.paper.short, "citation": exp.paper.cite(), "url": exp.paper.url},
        "figure": exp.figure,
        "title": exp.title,
        "package": exp.package,
        "mode": mode,
        "config": cfg,
        "config_hash": chash,
        "code_version": code,
        "versions": versions(),
        "seed": cfg["seed"],
        "timings": {"wall_s": wall, "controls_s": controls_s, **trace.timings},
        "divergence": {"diverged_seeds": diverged, "of": int(trace.diverged.size),
                       "first_k": float(trace.diverged_at[trace.diverged].min()) if diverged else None},
        "verdicts": [v.as_dict() for v in verdicts],
        "status": status_of([v.as_dict() for v in verdicts]),
        "files": {"trace": "trace.npz", "figure": "figure.png", **extra, **control_files},
    }
    result["sha256"] = {name: sha256_file(folder / name) for name in result["files"].values()}
    atomic_write_json(folder / "result.json", result)  # the commit record: written last, naming every file's hash
    remove_checkpoint(ckpt)
    log(f"{exp.id}: {result['status']} in {wall:.1f}s (compile {trace.timings.get('compile_s', 0.0):.1f}s)")
    return {**result, "reused": False}


def _worker_init(cache_dir: str | None, modules: tuple[str, ...] = ()) -> None:
    """A fresh worker process of ``verify(jobs=N)``: draw to files, share the parent's compilation cache, import
    the user's experiment modules."""
    import matplotlib

    matplotlib.use("Agg")
    from ratelab import cache
    from ratelab.modules import load_module

    cache.enable(cache_dir) if cache_dir else cache.disable()
    for path in modules:
        load_module(path)


_RUN_LOCK = threading.Lock()  # one experiment at a time per process: pyplot and jax's config are process-global
_INITIALISED: list[str | None] = []  # the cache setting this (dask) worker process was set up with


def _run_in_worker(exp_id: str, mode: str, out: str, overrides: dict[str, Any] | None, force: bool,
                   ship: bool = False, init: tuple[str | None] | None = None) -> dict:
    """Run one experiment in a worker process: one of ``verify(jobs=N)``'s pool (``ship=False``: it writes into
    ``out`` itself, a local folder it shares with the parent) or a dask worker (``ship=True``: it runs in a private
    temporary folder and returns the files' bytes under ``"shipped"``, for the client to write). ``init`` is
    ``_worker_init``'s argument where no pool initializer ran (dask); ``"default"`` means the worker's own
    :func:`ratelab.cache.default_dir`."""
    with _RUN_LOCK:
        if init is not None and _INITIALISED != list(init):
            (cache_dir,) = init
            if cache_dir == "default":
                from ratelab import cache

                cache_dir = str(cache.default_dir())
            _worker_init(cache_dir)
            _INITIALISED[:] = list(init)
        from ratelab import catalog  # noqa: F401  (a fresh process: the registered experiments)

        try:
            exp = get(exp_id)
        except RatelabError as err:
            raise RatelabError(f"{err}; verify with jobs > 1 or a scheduler runs each experiment in another "
                               "process, so it must be registered by a module of experiments/ or, with jobs > 1, "
                               "one given with modules= (--module); experiments registered in this session only "
                               "need jobs=1") from None
        if not ship:
            return run_experiment(exp, mode, out=out, overrides=overrides, force=force, progress=False)
        with tempfile.TemporaryDirectory(prefix="ratelab-worker-") as tmp:
            result = run_experiment(exp, mode, out=tmp, overrides=overrides, force=force, progress=False)
            folder = Path(tmp) / exp_id
            names = [*result["files"].values(), "result.json"]
            return {**result, "shipped": {name: (folder / name).read_bytes() for name in names}}


def _run_group_in_worker(exp_ids: list[str], mode: str, out: str, overrides: dict[str, Any] | None,
                         force: bool) -> list[dict]:
    """One task of ``verify(jobs=N)``: the experiments of one module, one after another in this worker."""
    return [_run_in_worker(i, mode, out, overrides, force) for i in exp_ids]


WALLS_FILE = Path(__file__).resolve().parent.parent / "experiments" / "walls.json"


def _recorded_wall(folder: Path) -> float:
    """The wall time ``folder/result.json`` recorded (nan where there is none)."""
    try:
        return float(json.loads((folder / "result.json").read_text())["timings"]["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan


def shipped_walls(mode: str) -> dict[str, float]:
    """Serial wall times per experiment measured for ``mode`` and shipped with the experiments
    (``experiments/walls.json``, written by ``python benchmarks/quick_profile.py --walls``): the schedule's
    estimate where ``out`` holds no result yet, as on a fresh clone. Empty where there is no such file."""
    try:
        return {k: float(v) for k, v in json.loads(WALLS_FILE.read_text())["walls"][mode].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def tasks(exps: list[Experiment], out: str | os.PathLike, mode: str = "quick") -> list[list[Experiment]]:
    """``verify(jobs=N)``'s tasks: the experiments registered by one module form one task (they share that
    module's in-process caches and compiled programs: a3c-stationarity and a3c-speedup read one sweep), the
    tasks ordered longest first (the greedy longest-first schedule: the pool hands the next task to the first
    free worker), registration order among equals. An experiment's cost is the wall time recorded under ``out``,
    else the one shipped for ``mode`` (:func:`shipped_walls`), else unknown: a task with an unknown cost goes
    first. Costs only order the tasks; they never change what runs."""
    shipped = shipped_walls(mode)
    groups: dict[str, list[Experiment]] = {}
    for e in exps:
        groups.setdefault(registered_by(e.id) or e.id, []).append(e)

    def wall(e: Experiment) -> float:
        recorded = _recorded_wall(Path(out) / e.id)
        return recorded if not math.isnan(recorded) else shipped.get(e.id, math.inf)

    cost = {key: sum(wall(e) for e in g) for key, g in groups.items()}
    return [groups[k] for k in sorted(groups, key=lambda k: -cost[k])]


def _split_reused(exps: list[Experiment], mode: str, out: str | os.PathLike, overrides: dict[str, Any] | None,
                  force: bool, log: Callable[[str], None]) -> tuple[dict[str, dict], list[Experiment]]:
    """The results this process can reuse without a worker (config and code unchanged), and the experiments left
    to run: a verify whose results are all current starts no worker process."""
    reused: dict[str, dict] = {}
    todo = []
    for exp in exps:
        cfg = exp.config(mode, overrides)
        hit = None if force else _reuse(exp.id, Path(out) / exp.id, config_hash(exp.id, mode, cfg), code_of(exp),
                                        log)
        if hit is not None:
            reused[exp.id] = hit
        else:
            todo.append(exp)
    return reused, todo


def _write_shipped(out: str | os.PathLike, result: dict) -> dict:
    """Write the files a dask worker returned into ``OUT/ID/``, each atomically and ``result.json`` last (the
    commit record, as in a local run); delete the local checkpoint it supersedes. Returns the result without
    the bytes."""
    result = dict(result)
    shipped: dict[str, bytes] = result.pop("shipped")
    folder = prepare_out(Path(out) / result["id"])
    code = code_of(get(result["id"]))
    if result.get("code_version") != code:  # a worker that joined after connect's check
        raise RatelabError(f"{result['id']}: a worker ran ratelab code {result.get('code_version')}, this client "
                           f"{code}: install this same checkout on every worker")
    for name in shipped:
        if Path(name).name != name or name.startswith("."):
            raise RatelabError(f"{result['id']}: a worker returned a file named {name!r}; allowed: plain names")
    with folder_lock(folder):
        for name in [n for n in shipped if n != "result.json"] + ["result.json"]:
            data = shipped[name]
            atomic_write(folder / name, lambda f, data=data: f.write(data))
        remove_checkpoint(folder / f"checkpoint{_run_tag(result['config_hash'], result['code_version'])}.npz")
    return result


def _gather(futures: dict[Future, list[str]], desc: str, progress: bool | None, log: Callable[[str], None],
            collect: Callable[[dict], dict] = lambda result: result) -> dict[str, dict]:
    """Wait for the futures (each answers for a list of experiments), in the order they finish, under one bar
    counting finished experiments; ``collect`` turns each worker's answer into the result (the dask path writes the
    shipped files there)."""
    from ratelab.progress import bar

    results: dict[str, dict] = {}
    with bar(sum(map(len, futures.values())), desc=desc, unit="exp", progress=progress) as b:
        for fut in as_completed(futures):
            answer = fut.result()
            for exp_id, raw in zip(futures[fut], answer if isinstance(answer, list) else [answer], strict=True):
                result = collect(raw)
                results[exp_id] = result
                how = "reused" if result.get("reused") else f"in {result['timings']['wall_s']:.1f}s"
                log(f"{result['id']}: {result['status']} {how}")
                b.update(1)
    return results


def _run_parallel(exps: list[Experiment], mode: str, out: str | os.PathLike, overrides: dict[str, Any] | None,
                  force: bool, jobs: int, progress: bool | None, log: Callable[[str], None],
                  modules: tuple[str, ...] = ()) -> list[dict]:
    """The experiments in ``jobs`` spawned worker processes, one :func:`tasks` entry at a time (one folder per
    experiment, so they never share a file); the results come back in registration order, and one bar counts the
    finished experiments. Results that are current are reused here first: only the others start workers."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from ratelab import cache

    results, todo = _split_reused(exps, mode, out, overrides, force, log)
    if todo:
        active = cache.active_dir()
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(str(active) if active else None, modules)) as pool:
            futures = {pool.submit(_run_group_in_worker, ids, mode, str(out), overrides, force): ids
                       for ids in ([e.id for e in g] for g in tasks(todo, out, mode))}
            results.update(_gather(futures, f"verify ({jobs} jobs)", progress, log))
    return [results[e.id] for e in exps]


def _run_on_cluster(exps: list[Experiment], mode: str, out: str | os.PathLike, overrides: dict[str, Any] | None,
                    force: bool, scheduler: str, progress: bool | None, log: Callable[[str], None]) -> list[dict]:
    """Each experiment as one task on a dask cluster (:mod:`ratelab.cluster`); results whose config and code are
    unchanged are reused here without a task, the others' files come back as bytes and are written here."""
    from ratelab import cache, cluster

    client = cluster.connect(scheduler, log=log)
    try:
        results, todo = _split_reused(exps, mode, out, overrides, force, log)
        if todo:
            init = ("default" if cache.active_dir() else None,)
            pool = client.get_executor(pure=False)  # pure=False: every verify call computes anew
            futures = {pool.submit(_run_in_worker, e.id, mode, str(out), overrides, force, True, init): [e.id]
                       for e in todo}
            log(f"verify: {len(todo)} experiment(s) sent to {scheduler}")
            results.update(_gather(futures, f"verify ({scheduler})", progress, log,
                                   collect=lambda result: _write_shipped(out, result)))
    finally:
        client.close()  # an unfinished task is released with its client: an interrupt stops the cluster's work
    return [results[e.id] for e in exps]


def auto_jobs(exps: list[Experiment]) -> int:
    """``verify(jobs=None)``: the cores this process may use (its CPU affinity), at most MAX_AUTO_JOBS, when every
    experiment can be imported by a fresh worker (from experiments/ or a user module); else 1. Compilation and
    plotting are single-threaded, so experiments in parallel processes fill the cores one process leaves idle."""
    importable = all(registered_by(e.id).startswith(("experiments.", "ratelab_user_")) for e in exps)
    return max(1, min(MAX_AUTO_JOBS, usable_cores())) if importable else 1


def verify(ids: list[str] | tuple[str, ...] | None = None, mode: str = "quick", *, out: str | os.PathLike = "results",
           overrides: dict[str, Any] | None = None, force: bool = False, progress: bool | None = None,
           log: Callable[[str], None] = lambda msg: None, jobs: int | None = 1,
           modules: tuple[str, ...] | list[str] = (), scheduler: str | None = None) -> Report:
    """Run experiments (every registered one by default), judge every claim and write ``REPORT.md`` and
    ``report.json`` under ``out``. Every config is checked before any compute; results whose config and code are
    unchanged are reused (``force=True`` reruns them). ``jobs > 1`` runs the experiments in that many worker
    processes (spawned: each compiles its own programs, sharing the persistent compilation cache); the report and
    every trace equal a serial run's bit for bit; ``jobs=None`` picks :func:`auto_jobs` (the command line's
    default). ``modules``: paths of the user's own experiment modules
    (:func:`ratelab.modules.load_module`), imported here and in every worker.

    ``scheduler`` (an address such as ``tcp://host:8786``) sends each experiment as one task to that running dask
    distributed cluster instead (``pip install ratelab[cluster]``; see :mod:`ratelab.cluster`): the workers return
    the files' bytes and this process writes them under ``out``, so no shared filesystem is needed; the report
    again equals a serial run's. Every worker must run this same ratelab code (checked before any compute)."""
    from ratelab.modules import load_module

    if jobs is not None:
        check_positive_int("jobs", jobs)
    if scheduler is not None:
        from ratelab import cluster

        cluster.check_address(scheduler)
        if jobs not in (None, 1):
            raise RatelabError(f"jobs and scheduler: give one of them (the cluster's workers are the jobs), got "
                               f"jobs={jobs} and scheduler={scheduler!r}")
        if modules:
            raise RatelabError("modules and scheduler: a cluster's workers import experiments/ only; put the "
                               f"module there on every worker, got modules={list(modules)}")
        cluster.require_distributed()
    modules = tuple(str(Path(m).expanduser().resolve()) for m in modules)
    for path in modules:
        load_module(path)
    exps = [get(i) for i in dict.fromkeys(ids)] if ids else experiments()
    plans = {exp.id: plan(exp, mode, overrides) for exp in exps}  # every input error before any compute
    jobs = auto_jobs(exps) if jobs is None else jobs
    prepare_out(out)
    if scheduler is not None:
        results = _run_on_cluster(exps, mode, out, overrides, force, scheduler, progress, log)
    elif jobs > 1 and len(exps) > 1:
        results = _run_parallel(exps, mode, out, overrides, force, min(jobs, len(exps)), progress, log, modules)
    else:
        results = [run_experiment(e, mode, out=out, overrides=overrides, force=force, progress=progress, log=log,
                                  planned=plans[e.id]) for e in exps]
    with folder_lock(out, log):  # two verifies into one folder: one report pair at a time
        md, js = write_report(out, results, mode)
        write_page(out)  # index.html, from the files just written
    return Report(mode, results, rows(results), md, js)
