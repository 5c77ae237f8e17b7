"""Run a solver on a problem: ``jit(vmap(lax.scan))`` over seeds (and optionally a hyperparameter).

The iteration is a scan over *blocks* of ``log_every`` steps. A block draws the exogenous samples of all its
steps in one bulk call (``solver.sample(problem, fold_in(run_key, b), log_every)``), scans the steps, and logs the
metrics of its last step (``aggregate="last"``) or their mean / min over the block (``"mean"``, ``"min"``: exact
running averages / minima from the logged values). Block b's key depends only on b, so a run split into chunks, or
resumed from a checkpoint, is bitwise identical to the same run done in one call; changing ``log_every`` changes
the noise blocks and hence the sample path (not its distribution).

Metrics cost only at logged steps: with ``aggregate="last"`` the steps inside a block discard their metrics, so XLA
removes those computations from the compiled scan; an expensive metric (a test accuracy, an objective over all the
data) is computed once per ``log_every`` steps. A deterministic solver's iterates are bitwise the same whatever
``log_every`` (with noise, ``log_every`` sets the noise blocks, see above). ``"mean"`` and ``"min"`` need every
step's value.

Programs: a run compiles one start program (the seeds' keys, their split, the initial states) and one program per
distinct chunk length (one when the blocks split evenly, see ``chunks``); both are cached per solver and shapes in
the process, and on disk across processes when the persistent compilation cache is on (:mod:`ratelab.cache`).
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import sys
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ratelab import progress as _progress
from ratelab.budget import check_run_memory
from ratelab.errors import RatelabError
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_positive_int, is_traced

AGGREGATES = ("last", "mean", "min")


@dataclass(frozen=True)
class Trace:
    """What a run produced, as NumPy arrays.

    Attributes:
      steps: ``[n_log]`` iteration count k after each logged block (``log_every, 2 log_every, ..., steps``).
      metrics: name -> ``[*sweep, seeds, n_log]`` values (last / mean / min over each block).
      diverged: ``[*sweep, seeds]`` True where any metric or state entry became NaN or inf.
      diverged_at: ``[*sweep, seeds]`` first logged k with a non-finite metric (``-1`` if none).
      final_state: the solver state after the last step, leaves ``[*sweep, seeds, ...]``.
      sweep_values: the hyperparameter values of a :func:`sweep` (``None`` for :func:`run`).
      block_wall_s: ``[n_log]`` cumulative post-compile wall time (s) after each logged block, results blocked on
        before the clock is read; exact per block with ``chunks = steps / log_every``, otherwise each chunk's time
        is spread evenly over its blocks (NaN for blocks restored from a checkpoint).
    """

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    diverged: np.ndarray
    diverged_at: np.ndarray
    final_state: Any
    log_every: int
    aggregate: str
    timings: dict[str, float] = field(default_factory=dict)
    sweep_values: np.ndarray | None = None
    block_wall_s: np.ndarray | None = None

    @property
    def seeds(self) -> int:
        return self.diverged.shape[-1]

    def __getitem__(self, metric: str) -> np.ndarray:
        if metric not in self.metrics:
            raise RatelabError(f"metric must be one of {', '.join(map(repr, self.metrics))}, got {metric!r}")
        return self.metrics[metric]

    def plot(self, metrics: str | list[str] | None = None, verdicts: Any = (), **kw: Any) -> Any:
        """The figure the CLI draws, for this trace: mean over seeds with its 95 % band and the seeds' spread, and
        each verdict's fitted and claimed lines (see :func:`ratelab.plot_trace`)."""
        from ratelab.figures import plot_trace

        return plot_trace(self, metrics, verdicts, **kw)

    def _repr_html_(self) -> str:
        from ratelab.report import trace_html

        return trace_html(self)


def _first_nonfinite(x: np.ndarray, metrics: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (``[*sweep, seeds]``): whether any metric became NaN or inf, and the first x where one did (-1)."""
    bad = np.zeros(next(iter(metrics.values())).shape, dtype=bool)
    for v in metrics.values():
        bad |= ~np.isfinite(v)
    any_bad = bad.any(axis=-1)
    return any_bad, np.where(any_bad, x[np.argmax(bad, axis=-1)], -1)


def trace_from_arrays(x: Any, metrics: dict[str, Any], *, final_state: Any = None,
                      timings: dict[str, float] | None = None, sweep_values: Any = None) -> Trace:
    """A :class:`Trace` from measured curves that did not come from :func:`run`.

    Use it when the x axis of a claim is not the iteration count: a penalty ``gamma``, a dataset size ``N``, a
    number of workers, a horizon ``H``. ``x`` is ``[n]`` (ascending); each metric is ``[*sweep, seeds, n]``. A seed
    is marked diverged when any of its metric values is NaN or inf; ``diverged_at`` is the first such x (-1 if none).
    """
    xs = np.asarray(x, dtype=float)
    if xs.ndim != 1 or xs.size == 0:
        raise RatelabError(f"x must be a non-empty 1-D array, got shape {xs.shape}")
    if not metrics:
        raise RatelabError("metrics must hold at least one metric")
    arrays = {k: np.asarray(v, dtype=float) for k, v in metrics.items()}
    shape = next(iter(arrays.values())).shape
    for k, v in arrays.items():
        if v.ndim < 2 or v.shape[-1] != xs.size or v.shape != shape:
            raise RatelabError(f"metric {k!r} must have shape [*sweep, seeds, {xs.size}] like the others, "
                               f"got {v.shape} (first metric: {shape})")
    diverged, first = _first_nonfinite(xs, arrays)
    return Trace(steps=xs, metrics=arrays, diverged=diverged, diverged_at=first, final_state=final_state,
                 log_every=1, aggregate="none", timings={"compile_s": 0.0, "run_s": 0.0, **(timings or {})},
                 sweep_values=None if sweep_values is None else np.asarray(sweep_values))


def call(f: Callable[..., Any], *args: Any, desc: str = "run", progress: bool | None = None,
         static_argnums: tuple[int, ...] = (), compiler_options: dict[str, Any] | None = None
         ) -> tuple[Any, dict[str, float]]:
    """Compile ``jax.jit(f)`` for ``args``, run it once and wait for it: ``(output as NumPy, timings)``.

    For experiments that call their own jitted study function instead of :func:`run`: the compile and the run are
    timed apart (``compile_s``, ``run_s``, as in a Trace) and shown as progress stages. The executable is kept per
    (``f``, static arguments, shapes and dtypes of the others), as :func:`run` keeps its own: a control that changes
    only traced values reuses the main run's program (``compile_s`` is 0 then). Static arguments must be hashable.
    ``compiler_options`` are XLA options for this program (``Lowered.compile``'s), part of the executable's key.
    """
    static = {i: args[i] for i in static_argnums}
    dynamic = tuple(a for i, a in enumerate(args) if i not in static)

    def build() -> Callable:
        def with_static(*dyn):
            it = iter(dyn)
            return f(*(static[i] if i in static else next(it) for i in range(len(args))))

        return with_static

    t0 = time.perf_counter()
    with _progress.stage(f"{desc}: compiling", progress):
        opts = tuple(sorted((compiler_options or {}).items()))
        exe, _ = _compiled(("call", f, tuple(sorted(static.items())), opts), build, dynamic, dict(opts) or None)
    t1 = time.perf_counter()
    with _progress.stage(f"{desc}: running", progress):
        out = jax.block_until_ready(exe(*dynamic))
    t2 = time.perf_counter()
    return jax.tree_util.tree_map(np.asarray, out), {"compile_s": t1 - t0, "run_s": t2 - t1}


def as_keys(key: Any, seeds: int) -> jax.Array:
    """``seeds`` independent keys: split from an int seed or a single key, or taken as given (shape ``[seeds]``)."""
    key = _key_input(key, seeds)
    return jax.random.split(key, seeds) if key.ndim == 0 else key


def _key_input(key: Any, seeds: int) -> jax.Array:
    """``key`` as one PRNG key (shape ``()``) or ``seeds`` keys, checked; an int seed becomes ``jax.random.key``."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    if not isinstance(key, jax.Array):
        raise RatelabError(f"key must be an int seed or a jax PRNG key, got {type(key).__name__}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise RatelabError(f"key must be an int seed or a jax PRNG key, got an array of {key.dtype} {key.shape}")
        key = jax.random.wrap_key_data(key)
    if key.ndim == 0:
        return key
    if key.shape != (seeds,):
        raise RatelabError(f"key must be one key or {seeds} keys (one per seed), got shape {key.shape}")
    return key


def _instantiate(make: Callable[[Any], Any], value: Any, problem: Any) -> tuple[Solver, Any]:
    out = make(value)
    if isinstance(out, Solver):
        return out, problem
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Solver):
        return out
    raise RatelabError(f"make must return a Solver or (Solver, problem), got {type(out).__name__}")


def _to_x64(tree: Any) -> Any:
    def cast(x):  # on the host: exact, and no eager XLA program per array shape
        if isinstance(x, (jax.Array, np.ndarray)) and jnp.issubdtype(x.dtype, jnp.floating):
            return x if x.dtype == np.float64 else jax.device_put(np.asarray(x, np.float64))
        return x

    return jax.tree_util.tree_map(cast, tree)


def _describe(tree: Any) -> str:
    return str(jax.tree_util.tree_map(lambda x: f"{x.dtype}{list(x.shape)}", tree))


def _check_protocol(make: Callable, value: Any, problem: Any, key: jax.Array) -> tuple[dict[str, Any], Any, Any]:
    """Trace init/sample/step abstractly (no compute) and explain the first thing that does not fit. Returns the
    metrics' shapes, and the shapes of one seed's state and one step's sample (for the memory estimate)."""
    solver, prob = _instantiate(make, value, problem)
    try:
        state = jax.eval_shape(solver.init, prob, key)
        xis = jax.eval_shape(lambda p, k: solver.sample(p, k, 2), prob, key)
        bad = [x.shape for x in jax.tree_util.tree_leaves(xis) if x.shape[:1] != (2,)]
        if bad:
            raise RatelabError(f"solver.sample(problem, key, n) must return leaves with a leading axis of length n; "
                               f"for n = 2 got shapes {bad}")
        xi = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), xis)
        new_state, metrics = jax.eval_shape(solver.step, state, prob, xi)
    except (TypeError, ValueError) as err:
        if isinstance(err, RatelabError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RatelabError(f"problem does not fit the solver (mismatched shapes?): {first}") from None
    if jax.tree_util.tree_structure(new_state) != jax.tree_util.tree_structure(state) or any(
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state), strict=False)
    ):
        raise RatelabError(
            f"solver.step must keep the state's structure, shapes and dtypes: init gives {_describe(state)}, "
            f"step returns {_describe(new_state)}"
        )
    if not isinstance(metrics, dict) or not metrics:
        raise RatelabError("solver.step must return (state, metrics) with metrics a non-empty dict of scalars")
    bad = {k: v.shape for k, v in metrics.items() if v.shape != ()}
    if bad:
        raise RatelabError(f"metrics must be scalars, got shapes {bad}")
    return metrics, state, xi


def _block_fn(make: Callable, log_every: int, aggregate: str, metric_spec: dict[str, Any]) -> Callable:
    """One seed, one block of ``log_every`` steps: returns (state, logged metrics)."""

    def block(value, problem, run_key, state, b):
        solver, prob = _instantiate(make, value, problem)
        xis = solver.sample(prob, jax.random.fold_in(run_key, b), log_every)
        if aggregate == "last":
            head = jax.tree_util.tree_map(lambda x: x[:-1], xis)
            last = jax.tree_util.tree_map(lambda x: x[-1], xis)
            state, _ = jax.lax.scan(lambda s, xi: (solver.step(s, prob, xi)[0], None), state, head)
            return solver.step(state, prob, last)
        fill = 0.0 if aggregate == "mean" else jnp.inf
        acc0 = {k: jnp.full((), fill, v.dtype) for k, v in metric_spec.items()}
        merge = jnp.add if aggregate == "mean" else jnp.minimum

        def body(carry, xi):
            s, acc = carry
            s, m = solver.step(s, prob, xi)
            return (s, {k: merge(acc[k], m[k]) for k in acc}), None

        (state, acc), _ = jax.lax.scan(body, (state, acc0), xis)
        if aggregate == "mean":
            acc = {k: v / log_every for k, v in acc.items()}
        return state, acc

    return block


def _chunk_fn(block: Callable, n_blocks: int, swept: bool) -> Callable:
    def one_seed(value, problem, run_key, state, start):
        return jax.lax.scan(lambda s, b: block(value, problem, run_key, s, b), state,
                            start + jnp.arange(n_blocks, dtype=jnp.uint32))

    over_seeds = jax.vmap(one_seed, in_axes=(None, None, 0, 0, None))
    if swept:
        over_seeds = jax.vmap(over_seeds, in_axes=(0, None, None, 0, None))
    return over_seeds


def _init_fn(make: Callable, swept: bool, seeds: int) -> Callable:
    """One program for the start of a run: the seeds' keys (split from one key, or as given), each seed's
    ``init_key, run_key = split(key)``, and the initial states. Returns (states, run keys, the seeds' key data)."""

    def one_seed(value, problem, init_key):
        solver, prob = _instantiate(make, value, problem)
        return solver.init(prob, init_key)

    f = jax.vmap(one_seed, in_axes=(None, None, 0))
    if swept:
        f = jax.vmap(f, in_axes=(0, None, None))

    def start(value, problem, key):
        seed_keys = jax.random.split(key, seeds) if key.ndim == 0 else key
        split = jax.vmap(jax.random.split)(seed_keys)
        return f(value, problem, split[:, 0]), split[:, 1], jax.random.key_data(seed_keys)

    return start


def _chunk_length(n_blocks: int, chunks: int) -> int:
    """Blocks per jitted call: ``ceil(n_blocks / c)`` for the first c in ``chunks .. 2 chunks`` that splits the blocks
    evenly (one compiled program serves every call), else for c = ``chunks`` (a shorter last call, a second program).
    """
    for c in range(chunks, min(2 * chunks, n_blocks) + 1):
        if n_blocks % math.ceil(n_blocks / c) == 0:
            return math.ceil(n_blocks / c)
    return math.ceil(n_blocks / chunks)


# True while the harness runs an experiment: the runner leaves its checkpoint for the harness to delete once
# result.json is written (a kill while plotting then loses nothing)
KEEP_CHECKPOINT: contextvars.ContextVar[bool] = contextvars.ContextVar("KEEP_CHECKPOINT", default=False)


def _data_digest(tree: Any) -> str:
    """sha256 of a pytree's array data (a problem): a checkpoint of another problem is never resumed."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        try:
            arr = np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(getattr(leaf, "dtype", np.float64),
                                                                           jax.dtypes.prng_key) else leaf)
        except TypeError:
            h.update(repr(leaf).encode())
            continue
        h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()[:16]


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def _part_path(path: Path, first_block: int) -> Path:
    return path.with_name(f"{path.name}.part-{first_block:09d}")


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint: its state file and every metric part."""
    path = Path(path)
    for part in path.parent.glob(f"{path.name}.part-*"):
        part.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _save_checkpoint(path: Path, fingerprint: str, next_block: int, state: Any, parts: list[int],
                     new_part: dict[str, np.ndarray]) -> None:
    """Append one chunk: its logged metrics go to a part file of their own (written once, never rewritten), then
    the state file (the commit record: fingerprint, next block, solver state, the parts' first blocks) replaces
    the previous one. A kill between the two leaves a part the state does not name, overwritten on resume."""
    from ratelab.io import atomic_savez

    atomic_savez(_part_path(path, parts[-1]), {"fingerprint": np.asarray(fingerprint),
                                               **{f"metric_{k}": v for k, v in new_part.items()}}, compress=False)
    arrays = {"fingerprint": np.asarray(fingerprint), "next_block": np.asarray(next_block),
              "parts": np.asarray(parts, np.int64)}
    for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arrays[f"state_{i}"] = np.asarray(leaf)
    atomic_savez(path, arrays, compress=False)


def _load_checkpoint(path: Path, fingerprint: str, state: Any) -> tuple[int, Any, dict[str, list], list[int]] | None:
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            leaves, treedef = jax.tree_util.tree_flatten(state)
            restored = []
            for i, leaf in enumerate(leaves):
                arr = z[f"state_{i}"]
                if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                    restored.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf)))
                else:
                    restored.append(jnp.asarray(arr, leaf.dtype))
            next_block, parts = int(z["next_block"]), [int(b) for b in z["parts"]]
        logged: dict[str, list] = {}
        for first in parts:
            with np.load(_part_path(path, first)) as part:
                if str(part["fingerprint"]) != fingerprint:
                    raise ValueError(f"part {first} belongs to another run")
                for k in part.files:
                    if k.startswith("metric_"):
                        logged.setdefault(k[len("metric_"):], []).append(part[k])
        done = {k: sum(v.shape[-1] for v in chunks) for k, chunks in logged.items()}
        if any(n != next_block for n in done.values()):
            raise ValueError(f"the parts hold {sorted(set(done.values()))} blocks, the state says {next_block}")
        return next_block, jax.tree_util.tree_unflatten(treedef, restored), logged, parts
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        print(f"ratelab: ignoring unreadable checkpoint {path} ({type(err).__name__}); starting afresh",
              file=sys.stderr, flush=True)
        return None


_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 32


def _signature(args: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x))), getattr(x, "weak_type", False))
                          for x in leaves)


def _compiled(identity: tuple, build: Callable[[], Callable], args: tuple,
              compiler_options: dict[str, Any] | None = None) -> tuple[Any, float]:
    """AOT-compile ``build()`` for ``args`` or reuse the executable of an earlier call (seconds spent compiling).

    ``identity`` holds the solver (or sweep ``make``) itself and every static setting: hyperparameters closed over
    by the solver are constants of the compiled code, so only the very same solver object may reuse it (as with
    ``jax.jit``, a sweep's ``make`` that reads a global which later changes would reuse stale code: close over it).
    """
    key = (*identity, bool(jax.config.jax_enable_x64), _signature(args))
    try:
        hash(key)
    except TypeError:  # an unhashable solver: compile afresh
        key = None
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key], 0.0
    t0 = time.perf_counter()
    exe = jax.jit(build()).lower(*args).compile(compiler_options)
    spent = time.perf_counter() - t0
    if key is not None:
        _CACHE[key] = exe
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return exe, spent


def _execute(make: Callable, values: Any, problem: Any, key: Any, *, steps: int, seeds: int, log_every: int,
             aggregate: str, chunks: int, progress: bool | None, checkpoint: str | os.PathLike | None,
             x64: bool, on_chunk: Callable[[int], None] | None, identity: Any) -> Trace:
    steps = check_positive_int("steps", steps)
    seeds = check_positive_int("seeds", seeds)
    log_every = check_positive_int("log_every", log_every)
    chunks = check_positive_int("chunks", chunks)
    check_choice("aggregate", aggregate, AGGREGATES)
    if steps % log_every:
        raise RatelabError(f"steps must be a multiple of log_every ({log_every}), got {steps}")
    n_blocks = steps // log_every
    if chunks > n_blocks:
        raise RatelabError(f"chunks must be at most steps / log_every = {n_blocks}, got {chunks}")

    with jax.enable_x64(bool(x64) or jax.config.jax_enable_x64):
        if x64:
            problem = _to_x64(problem)
        key = _key_input(key, seeds)
        swept = values is not None
        probe_value = None if not swept else values[0]
        metric_spec, state_spec, sample_spec = _check_protocol(make, probe_value, problem,
                                                               jax.ShapeDtypeStruct((), key.dtype))
        runs = (key.shape[0] if key.ndim else seeds) * (1 if values is None else len(values))
        check_run_memory(runs, n_blocks, log_every, state_spec, sample_spec, metric_spec)
        vals = None if not swept else np.asarray(values, jnp.result_type(float))

        timings = {"compile_s": 0.0, "run_s": 0.0}
        init, spent = _compiled(("init", identity, swept, seeds), lambda: _init_fn(make, swept, seeds),
                                (vals, problem, key))
        timings["compile_s"] += spent
        t0 = time.perf_counter()
        state, run_keys, seed_key_data = jax.block_until_ready(init(vals, problem, key))
        timings["run_s"] += time.perf_counter() - t0

        start_block, logged, parts = 0, {}, []
        ckpt = Path(checkpoint) if checkpoint is not None else None
        fingerprint = _fingerprint(steps, seeds, log_every, aggregate, chunks, bool(x64),
                                   np.asarray(seed_key_data).tobytes(),
                                   None if vals is None else np.asarray(vals).tobytes(),
                                   _describe(state), sorted(metric_spec), _data_digest(problem))
        if ckpt is not None and ckpt.exists():
            resumed = _load_checkpoint(ckpt, fingerprint, state)
            if resumed is not None:
                start_block, state, logged, parts = resumed
                print(f"resuming from {ckpt}: {start_block * log_every} of {steps} steps done", file=sys.stderr,
                      flush=True)

        block = _block_fn(make, log_every, aggregate, metric_spec)
        per_chunk = _chunk_length(n_blocks, chunks)
        compiled: dict[int, Any] = {}
        what = f"{seeds} seeds" if not swept else f"{len(values)} values x {seeds} seeds"
        show = progress if progress is not None else (None if chunks > 1 else False)  # None: on a terminal
        bar = _progress.bar(steps, desc=what, initial=start_block * log_every, progress=show)
        b = start_block
        block_dt = [np.full(start_block, np.nan)]
        while b < n_blocks:
            n = min(per_chunk, n_blocks - b)
            if n not in compiled:
                with _progress.stage(f"{what}: compiling", progress):
                    compiled[n], spent = _compiled(
                        ("chunk", identity, swept, n, log_every, aggregate), lambda n=n: _chunk_fn(block, n, swept),
                        (vals, problem, run_keys, state, np.uint32(b)))
                timings["compile_s"] += spent
            t0 = time.perf_counter()
            # one call for the whole run: no bar can move, so a stage line says it is running (on a terminal)
            with _progress.stage(f"{what}: running {steps} steps", progress if n == n_blocks - start_block else False):
                state, metrics = jax.block_until_ready(compiled[n](vals, problem, run_keys, state, np.uint32(b)))
            dt = time.perf_counter() - t0
            timings["run_s"] += dt
            block_dt.append(np.full(n, dt / n))
            for k, v in metrics.items():
                logged.setdefault(k, []).append(np.asarray(v))
            b += n
            bar.update(n * log_every)
            if ckpt is not None and b < n_blocks:
                parts.append(b - n)
                _save_checkpoint(ckpt, fingerprint, b, state, parts, {k: v[-1] for k, v in logged.items()})
            if on_chunk is not None:
                on_chunk(b)
        bar.close()
        if ckpt is not None and not KEEP_CHECKPOINT.get():
            remove_checkpoint(ckpt)  # the harness keeps it until the result that supersedes it is on disk

        metrics = {k: np.concatenate(v, axis=-1) for k, v in logged.items()}
        final_state = jax.tree_util.tree_map(np.asarray, state)

    steps_axis = log_every * np.arange(1, n_blocks + 1)
    metric_bad, metric_first = _first_nonfinite(steps_axis, metrics)
    state_bad = np.zeros(metric_bad.shape, dtype=bool)
    for leaf in jax.tree_util.tree_leaves(final_state):
        if np.issubdtype(leaf.dtype, np.floating) or np.issubdtype(leaf.dtype, np.complexfloating):
            state_bad |= ~np.isfinite(leaf).reshape(*metric_bad.shape, -1).all(axis=-1)
    diverged = metric_bad | state_bad
    first = np.where(metric_bad, metric_first, np.where(state_bad, steps, -1))
    return Trace(steps=steps_axis, metrics=metrics, diverged=diverged, diverged_at=first,
                 final_state=final_state, log_every=log_every, aggregate=aggregate, timings=timings,
                 sweep_values=None if values is None else np.asarray(values),
                 block_wall_s=np.cumsum(np.concatenate(block_dt)))


def run(solver: Solver, problem: Any, key: Any, *, steps: int, seeds: int = 1, log_every: int = 1,
        aggregate: str = "last", chunks: int = 1, progress: bool | None = None,
        checkpoint: str | os.PathLike | None = None, x64: bool = False,
        on_chunk: Callable[[int], None] | None = None) -> Trace:
    """Run ``solver`` on ``problem`` for ``steps`` iterations on each of ``seeds`` independent seeds.

    Args:
      solver: a :class:`ratelab.Solver`.
      problem: the problem pytree, shared by all seeds.
      key: an int seed, one PRNG key (split into ``seeds`` keys), or ``seeds`` keys (used as given: seed s
        of a run equals the one-seed run on ``keys[s:s+1]``).
      steps: iterations per seed; a multiple of ``log_every``.
      log_every: log one value per block of this many steps.
      aggregate: ``"last"`` (metric after the block's last step), ``"mean"`` or ``"min"`` over the block's steps.
      chunks: split the run into about this many jitted calls (progress bar, checkpoints): the first count from
        ``chunks`` to ``2 chunks`` that splits the blocks evenly, so that one program serves every call; the result
        is identical whatever the split.
      progress: show a tqdm bar (default: when ``chunks > 1`` and stderr is a terminal).
      checkpoint: a file to save the state to after every chunk and resume from if it exists and matches.
      x64: run in float64 (the problem's floating arrays are promoted).
      on_chunk: called with the number of blocks done after every chunk.
    """
    if not isinstance(solver, Solver):
        raise RatelabError(f"solver must be a ratelab.Solver, got {type(solver).__name__}")
    return _execute(lambda _: solver, None, problem, key, steps=steps, seeds=seeds, log_every=log_every,
                    aggregate=aggregate, chunks=chunks, progress=progress, checkpoint=checkpoint, x64=x64,
                    on_chunk=on_chunk, identity=solver)


def sweep_row(table: Any, i: Any) -> tuple:
    """Row ``i`` of a static settings table, for a ``make`` of :func:`sweep` that indexes one: Python floats for a
    concrete ``i`` (the sweep's up-front checks, computed without a jax program), traced entries inside the sweep."""
    arr = np.asarray(table, dtype=float)
    if is_traced(i):
        row = jnp.asarray(arr)[jnp.asarray(i).astype(jnp.int32)]
        return tuple(row[j] for j in range(arr.shape[1]))
    return tuple(float(v) for v in arr[int(i)])


def sweep(make: Callable[[Any], Any], values: Any, problem: Any, key: Any, *, steps: int, seeds: int = 1,
          log_every: int = 1, aggregate: str = "last", chunks: int = 1, progress: bool | None = None,
          checkpoint: str | os.PathLike | None = None, x64: bool = False) -> Trace:
    """:func:`run` vmapped over a hyperparameter: ``make(value)`` returns a Solver (or ``(Solver, problem)``).

    Every value is first passed concretely to ``make`` so that constructor checks reject bad values before any
    compute; the run then vmaps over the values (traced). All values share the same seeds (common random
    numbers), so differences between them are not seed noise. Metrics are ``[len(values), seeds, n_log]``.
    A hyperparameter that changes array shapes (a number of workers) must be expressed by the solver with a
    mask up to a static maximum.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise RatelabError(f"values must be a non-empty 1-D sequence of numbers, got shape {arr.shape}")
    for v in arr:
        _instantiate(make, float(v), problem)
    return _execute(make, arr, problem, key, steps=steps, seeds=seeds, log_every=log_every, aggregate=aggregate,
                    chunks=chunks, progress=progress, checkpoint=checkpoint, x64=x64, on_chunk=None, identity=make)
