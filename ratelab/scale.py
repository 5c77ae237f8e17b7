"""V-PBGD bilevel data selection on a sharded device mesh: the memory/FLOP plan and the measured run.

The solver is ``bilevel.pbgd.v_pbgd`` as it is; scale is only a matter of where arrays live. The problem
(``bilevel.data_selection``) is a pytree, the state is placed by the path rules of ``ratelab.sharding``, and
one step is ``jax.jit(solver.step, in_shardings=(state, problem, batch), out_shardings=(state, replicated))``.

* :func:`plan` allocates nothing: the problem, state and batch are ``jax.ShapeDtypeStruct``s with shardings
  (``jax.eval_shape`` of the solver's ``init``), the step is lowered and compiled, and the compiled memory and
  cost analyses give per-device bytes; per-device bytes of each part of the state come from the shard shapes.
  FLOPs per step are counted on the step's jaxpr (every ``dot_general``, scan bodies times their length, remat
  recomputation included); XLA's ``cost_analysis()`` is reported too but counts a loop body once.
* :func:`measure` builds the same step on real arrays, runs ``steps`` steps in one ``lax.scan`` under jit, and
  reads per-device bytes from ``addressable_shards``.
* :func:`main` is the ``ratelab scale`` command.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from bilevel.data_selection import DataSelection, make_data_selection
from bilevel.pbgd import v_pbgd
from bilevel.transformer import CONFIGS, TransformerConfig, get_config
from ratelab.errors import RatelabError
from ratelab.schedules import harmonic
from ratelab.sharding import (
    ActivationSharding,
    abstract,
    addressable_bytes,
    fmt_mesh,
    global_bytes,
    logical_axes,
    make_mesh,
    parse_mesh,
    place,
    shard_bytes,
    shardings_for,
)
from ratelab.solver import Solver
from ratelab.validate import check_choice, check_positive, check_positive_int

STATE_PARTS = ("x", "y", "z", "x_opt", "y_opt")


@dataclass(frozen=True)
class ScaleConfig:
    """One bilevel data-selection run: model, mesh, data sizes and V-PBGD's hyperparameters.

    ``batch`` is the global minibatch of training sequences (default: ``per_device_batch`` per batch shard),
    ``n_train`` the number of training sequences (default 8 x batch). x moves by SGD with step
    ``x_lr k0 / (k + k0)``; y by Adam(``y_lr``) (or SGD with ``optimizer="sgd"``); z by ``inner_steps`` gradient
    steps of size ``inner_lr``.
    """

    model: str = "tiny"
    mesh: tuple[tuple[str, int], ...] = (("data", 1),)
    batch: int | None = None
    per_device_batch: int | None = None
    n_train: int | None = None
    n_trusted: int | None = None
    corrupt_frac: float = 0.25
    noise: float = 0.1
    optimizer: str = "adam"
    x_lr: float = 10.0
    x_k0: float = 20.0
    y_lr: float = 1e-2
    gamma: float = 1.0
    inner_steps: int = 5
    inner_lr: float = 0.5
    seed: int = 0
    model_overrides: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def mesh_axes(self) -> dict[str, int]:
        return dict(self.mesh)

    @property
    def n_devices(self) -> int:
        return math.prod(self.mesh_axes.values())

    @property
    def batch_shards(self) -> int:
        m = self.mesh_axes
        return m.get("data", 1) * m.get("fsdp", 1)

    @property
    def cfg(self) -> TransformerConfig:
        return get_config(self.model, **dict(self.model_overrides))

    @property
    def global_batch(self) -> int:
        if self.batch is not None:
            return self.batch
        if self.per_device_batch is not None:
            return self.per_device_batch * self.batch_shards
        return 32 if self.model in ("tiny", "small") else self.batch_shards

    @property
    def trusted_size(self) -> int:
        return self.n_trusted or self.global_batch

    @property
    def train_size(self) -> int:
        return self.n_train or 8 * self.global_batch


def scale_config(model: str = "tiny", mesh: str | dict[str, int] = "data=1", **kw: Any) -> ScaleConfig:
    """A checked :class:`ScaleConfig` (``mesh`` as ``"fsdp=2,tensor=4"`` or a dict)."""
    check_choice("model", model, tuple(CONFIGS))
    axes = parse_mesh(mesh) if isinstance(mesh, str) else dict(mesh)
    sc = ScaleConfig(model=model, mesh=tuple(axes.items()), **kw)
    check_choice("optimizer", sc.optimizer, ("adam", "sgd"))
    for name in ("x_lr", "x_k0", "y_lr", "inner_lr"):
        check_positive(name, getattr(sc, name))
    check_positive_int("inner_steps", sc.inner_steps)
    check_positive_int("batch", sc.global_batch)
    if sc.global_batch % sc.batch_shards:
        given = "" if sc.batch is not None else ", the default for this model"
        fit = sc.batch_shards * max(1, sc.global_batch // sc.batch_shards)
        raise RatelabError(f"batch (--batch) must be a multiple of the batch shards data x fsdp = {sc.batch_shards}, "
                           f"got {sc.global_batch}{given}; e.g. --batch {fit}")
    sc.cfg  # noqa: B018  (validates the model overrides)
    return sc


def make_solver(sc: ScaleConfig) -> Solver:
    """V-PBGD with the run's hyperparameters (``bilevel.pbgd.v_pbgd``, unchanged)."""
    x_opt = harmonic(sc.x_lr * sc.x_k0, sc.x_k0)
    y_opt = optax.adam(sc.y_lr) if sc.optimizer == "adam" else sc.y_lr
    return v_pbgd(x_optimizer=x_opt, y_optimizer=y_opt, gamma=sc.gamma, inner_steps=sc.inner_steps,
                  inner_lr=sc.inner_lr)


def make_problem(sc: ScaleConfig) -> DataSelection:
    """The synthetic SEAL problem with real token arrays (every process builds the same ones from the seed)."""
    return make_data_selection(sc.seed, sc.cfg, n_train=sc.train_size, n_trusted=sc.trusted_size,
                               corrupt_frac=sc.corrupt_frac, noise=sc.noise, batch_size=sc.global_batch)


def abstract_problem(sc: ScaleConfig) -> DataSelection:
    """The problem as shapes only (no token is generated): for planning models of any size."""
    t = sc.cfg.seq_len + 1
    sds = jax.ShapeDtypeStruct
    return DataSelection(train=sds((sc.train_size, t), jnp.int32), trusted=sds((sc.trusted_size, t), jnp.int32),
                         corrupt=sds((sc.train_size,), jnp.bool_), cfg=sc.cfg, batch_size=sc.global_batch,
                         trusted_batch=sc.trusted_size)


@dataclass
class Setup:
    """Mesh, solver, problem (sharded), shardings and the jitted step of one configuration."""

    sc: ScaleConfig
    mesh: Any
    solver: Solver
    problem: Any
    state_shape: Any
    batch_shape: Any
    state_sh: Any
    problem_sh: Any
    batch_sh: Any
    fallbacks: list[str]
    step: Any

    def steps_fn(self, donate: bool = False) -> Any:
        """``jit`` of ``n`` steps in one ``lax.scan`` over a stack of batches (leading axis unsharded)."""
        stacked = jax.tree_util.tree_map(
            lambda s: NamedSharding(s.mesh, PartitionSpec(None, *s.spec)), self.batch_sh)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        solver = self.solver

        def run(state: Any, problem: Any, batches: Any) -> tuple[Any, Any]:
            return jax.lax.scan(lambda s, b: solver.step(s, problem, b), state, batches)

        return jax.jit(run, in_shardings=(self.state_sh, self.problem_sh, stacked),
                       out_shardings=(self.state_sh, replicated), donate_argnums=(0,) if donate else (),
                       keep_unused=True)


def setup(sc: ScaleConfig, problem: DataSelection | None = None, devices: Any = None,
          donate: bool = False) -> Setup:
    """Mesh, shardings by path and the jitted step; ``problem=None`` plans on shapes only."""
    mesh = make_mesh(sc.mesh_axes, devices)
    solver = make_solver(sc)
    base = abstract_problem(sc) if problem is None else problem
    base = base.with_constraint(ActivationSharding(mesh))
    key = jax.random.key(sc.seed)
    state_shape = jax.eval_shape(solver.init, base, key)
    batch_shape = jax.eval_shape(lambda p, k: p.sample_batch(k), base, key)
    st, pr, ba = (shardings_for(state_shape, mesh), shardings_for(base, mesh), shardings_for(batch_shape, mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    step = jax.jit(solver.step, in_shardings=(st.shardings, pr.shardings, ba.shardings),
                   out_shardings=(st.shardings, replicated), donate_argnums=(0,) if donate else (), keep_unused=True)
    return Setup(sc, mesh, solver, base, state_shape, batch_shape, st.shardings, pr.shardings, ba.shardings,
                 st.fallbacks + pr.fallbacks + ba.fallbacks, step)


HOST_INIT_BYTES = 2**28


@functools.lru_cache(maxsize=4)
def initial_state_host(sc: ScaleConfig) -> Any:
    """The solver's initial state as host NumPy arrays, computed on one device (the mesh plays no part, so every
    mesh and every process starts from the same numbers)."""
    sc = replace(sc, mesh=(("data", 1),), batch=sc.global_batch, per_device_batch=None, n_train=sc.train_size,
                 n_trusted=sc.trusted_size)
    solver, problem = make_solver(sc), _local(make_problem(sc))
    return jax.tree_util.tree_map(np.asarray, jax.jit(solver.init)(problem, jax.random.key(sc.seed)))


def init_state(s: Setup, problem: DataSelection) -> Any:
    """The solver's initial state in its sharding. Small states (< 256 MiB) are computed once on one device and
    placed (:func:`initial_state_host`); large ones are created directly in their sharding with
    ``jit(init, out_shardings=...)``, so no device ever holds the whole state."""
    if global_bytes(s.state_shape) < HOST_INIT_BYTES:
        return place(initial_state_host(s.sc), s.state_sh)

    def init(problem: DataSelection, key_data: jax.Array) -> Any:
        return s.solver.init(problem, jax.random.wrap_key_data(key_data))

    key_data = jax.random.key_data(jax.random.key(s.sc.seed))
    replicated = NamedSharding(s.mesh, PartitionSpec())
    return jax.jit(init, in_shardings=(s.problem_sh, replicated), out_shardings=s.state_sh)(
        problem, place(key_data, replicated))


def sample_batches(s: Setup, problem: DataSelection, steps: int) -> Any:
    """``steps`` minibatches (host arrays, leading axis ``steps``) from the host-built ``problem`` with the key
    ``seed + 1``: every process draws the same ones."""
    return sample_batches_host(s.solver, problem, s.sc, steps)


def _local(problem: DataSelection) -> DataSelection:
    """The problem on this process's first device, without activation hook: for sampling minibatches locally."""
    dev = jax.local_devices()[0]
    return DataSelection(*(jax.device_put(np.asarray(a), dev) for a in (problem.train, problem.trusted,
                                                                          problem.corrupt)),
                         cfg=problem.cfg, batch_size=problem.batch_size, trusted_batch=problem.trusted_batch)


# ----------------------------------------------------------------------------------------------------------------
# FLOPs


def _dot_flops(eqn: Any) -> float:
    (lc, _), (lb, _) = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    contracted = math.prod(lhs[d] for d in lc)
    return 2.0 * contracted * math.prod(eqn.outvars[0].aval.shape)


def jaxpr_flops(jaxpr: Any) -> tuple[float, int]:
    """Matmul FLOPs of a (closed) jaxpr: every ``dot_general``, scan bodies times ``length``, the larger branch of
    a ``cond``; returns (flops, number of while loops whose trip count is unknown and were counted once)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total, unknown = 0.0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
            continue
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
        subs += [b for v in eqn.params.values() if isinstance(v, tuple) for b in v
                 if hasattr(b, "eqns") or hasattr(b, "jaxpr")]
        if not subs:
            continue
        counted = [jaxpr_flops(sj) for sj in subs]
        if name == "cond":
            total += max(c[0] for c in counted)
        elif name == "scan":
            total += eqn.params["length"] * sum(c[0] for c in counted)
        else:
            total += sum(c[0] for c in counted)
            unknown += name == "while"
        unknown += sum(c[1] for c in counted)
    return total, unknown


def model_flops(sc: ScaleConfig) -> float:
    """Model FLOPs of one V-PBGD step (Kaplan et al.'s 6 N per token for a forward + backward, 2 N forward):
    ``inner_steps`` gradients of g in y, one forward + backward of f (trusted batch) and of g(x, y), one forward of
    g(x, z) (z is held fixed, so only its losses are needed)."""
    cfg = sc.cfg
    per_token = cfg.flops_per_token()
    t = cfg.seq_len
    grads = (sc.inner_steps + 1) * sc.global_batch + sc.trusted_size
    return per_token * t * grads + per_token / 3 * t * sc.global_batch


# ----------------------------------------------------------------------------------------------------------------
# plan and measurement


def _part_bytes(tree: Any, shardings: Any) -> dict[str, int]:
    return {p: shard_bytes(getattr(tree, p), getattr(shardings, p)) for p in STATE_PARTS}


def plan(sc: ScaleConfig, devices: Any = None, *, keep: bool = False) -> Any:
    """Per-device bytes and FLOPs of one step, from abstract shapes only (nothing is allocated).

    With ``keep=True`` returns ``(plan, setup, compiled)``: the compiled step runs on real arrays of the planned
    shapes and shardings, which is how the tests hold the plan against measured bytes."""
    t0 = time.perf_counter()
    s = setup(sc, None, devices, donate=True)  # the new state may reuse the old one's buffers, as in training
    args = (abstract(s.state_shape, s.state_sh), abstract(s.problem, s.problem_sh),
            abstract(s.batch_shape, s.batch_sh))
    lowered = s.step.lower(*args)
    t_lower = time.perf_counter() - t0
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0 - t_lower
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else (cost or {})
    flops, unknown_loops = jaxpr_flops(jax.make_jaxpr(s.solver.step)(s.state_shape, s.problem, s.batch_shape))
    parts = _part_bytes(s.state_shape, s.state_sh)
    out = {
        "model": sc.model, "mesh": fmt_mesh(sc.mesh_axes), "devices": sc.n_devices, "n_params": sc.cfg.n_params(),
        "batch": sc.global_batch, "seq_len": sc.cfg.seq_len, "tokens_per_step": sc.global_batch * sc.cfg.seq_len,
        "state_bytes_per_device": parts,
        "params_bytes_per_device": parts["y"],
        "opt_state_bytes_per_device": parts["x_opt"] + parts["y_opt"],
        "problem_bytes_per_device": shard_bytes(s.problem, s.problem_sh),
        "batch_bytes_per_device": shard_bytes(s.batch_shape, s.batch_sh),
        "state_bytes_global": {p: global_bytes(getattr(s.state_shape, p)) for p in STATE_PARTS},
        "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
        "peak_bytes_per_device": int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                     - mem.alias_size_in_bytes + mem.temp_size_in_bytes),
        "flops_per_step": flops, "flops_per_step_per_device": flops / sc.n_devices,
        "model_flops_per_step": model_flops(sc), "xla_cost_flops_per_device": float(cost.get("flops", float("nan"))),
        "loops_of_unknown_length": unknown_loops,
        "metric_names": sorted(jax.eval_shape(s.solver.step, s.state_shape, s.problem, s.batch_shape)[1]),
        "fallbacks": s.fallbacks, "lower_s": t_lower, "compile_s": t_compile,
        "logical_axes": {k: list(v) for k, v in logical_axes(s.mesh).items() if v},
    }
    return (out, s, compiled) if keep else out


def measure(sc: ScaleConfig, steps: int = 10, devices: Any = None, repeat: int = 1) -> dict[str, Any]:
    """Run ``steps`` V-PBGD steps on real arrays; per-device bytes from ``addressable_shards``, tokens per second
    (the best of ``repeat`` timed calls after a compile), the final metrics and the AUC of the learned weights."""
    host = make_problem(sc)
    s = setup(sc, host, devices)
    batches = sample_batches(s, host, steps)
    problem = place(s.problem, s.problem_sh)
    state = init_state(s, problem)
    stacked = jax.tree_util.tree_map(lambda sh: NamedSharding(sh.mesh, PartitionSpec(None, *sh.spec)), s.batch_sh)
    batches = place(batches, stacked)
    run = s.steps_fn()
    t0 = time.perf_counter()
    compiled = run.lower(state, problem, batches).compile()
    compile_s = time.perf_counter() - t0
    me = jax.local_devices()[0] if devices is None else list(devices)[0]
    per_dev = {p: addressable_bytes(getattr(state, p)) for p in STATE_PARTS}
    local = {p: per_dev[p].get(me.id, 0) for p in STATE_PARTS}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        new_state, metrics = compiled(state, problem, batches)
        jax.block_until_ready((new_state, metrics))
        times.append(time.perf_counter() - t0)
    mem = compiled.memory_analysis()
    args_measured = sum(addressable_bytes(t).get(me.id, 0) for t in (state, problem, batches))
    last = {k: float(np.asarray(v)[-1]) for k, v in metrics.items()}
    tokens = steps * sc.global_batch * sc.cfg.seq_len
    return {
        "model": sc.model, "mesh": fmt_mesh(sc.mesh_axes), "devices": sc.n_devices, "steps": steps,
        "state_bytes_per_device": local, "params_bytes_per_device": local["y"],
        "opt_state_bytes_per_device": local["x_opt"] + local["y_opt"],
        "state_bytes_global": {p: global_bytes(getattr(state, p)) for p in STATE_PARTS},
        "state_bytes_by_device": {p: {str(k): v for k, v in per_dev[p].items()} for p in STATE_PARTS},
        "argument_bytes_measured": int(args_measured), "argument_bytes_compiled_run": int(mem.argument_size_in_bytes),
        "compile_s": compile_s, "run_s": min(times), "tokens_per_s": tokens / min(times),
        "final": last, "weight_auc": last.get("weight_auc", float("nan")),
        "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()},
        "fallbacks": s.fallbacks, "state": new_state,
    }


def one_step(sc: ScaleConfig, sharded: bool = True, devices: Any = None, planned: Any = None) -> Any:
    """The state after one V-PBGD step from the common initial state, sharded on ``sc.mesh`` or (``sharded=False``)
    on one device with a plain ``jax.jit(solver.step)``; returned as host NumPy arrays (gathered across processes).
    ``planned=(setup, compiled)`` from :func:`plan` runs the step compiled on abstract shapes."""
    problem = make_problem(sc)
    if not sharded:
        solver = make_solver(sc)
        state = initial_state_host(sc)
        batch = jax.tree_util.tree_map(lambda a: a[0], sample_batches_host(solver, problem, sc))
        new, _ = jax.jit(solver.step)(state, problem, batch)
        return jax.tree_util.tree_map(np.asarray, new)
    if planned is None:
        s = setup(sc, problem, devices)
        step = s.step
    else:
        s, step = planned
    batch = place(jax.tree_util.tree_map(lambda a: a[0], sample_batches(s, problem, 1)), s.batch_sh)
    problem = place(problem.with_constraint(ActivationSharding(s.mesh)), s.problem_sh)
    state = init_state(s, problem)
    new, _ = step(state, problem, batch)
    return new


def sample_batches_host(solver: Solver, problem: DataSelection, sc: ScaleConfig, steps: int = 1) -> Any:
    return jax.tree_util.tree_map(np.asarray, solver.sample(_local(problem), jax.random.key(sc.seed + 1), steps))


def to_host(tree: Any) -> Any:
    """NumPy copies of (possibly multi-process) global arrays."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


# ----------------------------------------------------------------------------------------------------------------
# the command


def ensure_cpu_devices(n: int) -> None:
    """Ask for ``n`` CPU devices when the backend has not started yet (``jax_num_cpu_devices``)."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized() and "xla_force_host_platform_device_count" not in \
            os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_num_cpu_devices", max(n, 1))


def _gib(b: float) -> str:
    return f"{b / 2**30:.3f} GiB" if b >= 2**26 else f"{b / 2**20:.3f} MiB" if b >= 2**16 else f"{b:.0f} B"


def format_plan(p: dict[str, Any]) -> str:
    parts = p["state_bytes_per_device"]
    rows = [
        ("model / mesh", f"{p['model']} ({p['n_params']:.3e} params) on {p['mesh']} ({p['devices']} devices)"),
        ("batch", f"{p['batch']} sequences x {p['seq_len']} tokens"),
        ("parameters y", _gib(parts["y"])), ("inner copy z", _gib(parts["z"])),
        ("optimizer state", _gib(p["opt_state_bytes_per_device"])), ("data weights x", _gib(parts["x"])),
        ("data + batch", _gib(p["problem_bytes_per_device"] + p["batch_bytes_per_device"])),
        ("compiled arguments", _gib(p["argument_bytes"])), ("compiled temporaries", _gib(p["temp_bytes"])),
        ("peak (args + out - alias + temp)", _gib(p["peak_bytes_per_device"])),
        ("FLOPs / step / device (jaxpr)", f"{p['flops_per_step_per_device']:.4e}"),
        ("model FLOPs / step (6N/token)", f"{p['model_flops_per_step']:.4e}"),
        ("XLA cost_analysis FLOPs / device", f"{p['xla_cost_flops_per_device']:.4e} (loop bodies counted once)"),
        ("lower / compile", f"{p['lower_s']:.1f} s / {p['compile_s']:.1f} s"),
    ]
    if p["fallbacks"]:
        rows.append(("not split", "; ".join(p["fallbacks"][:4]) + (" ..." if len(p["fallbacks"]) > 4 else "")))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def format_measure(m: dict[str, Any]) -> str:
    rows = [
        ("model / mesh", f"{m['model']} on {m['mesh']} ({m['devices']} devices), {m['steps']} steps"),
        ("parameters y / device", _gib(m["params_bytes_per_device"])),
        ("optimizer state / device", _gib(m["opt_state_bytes_per_device"])),
        ("compile / run", f"{m['compile_s']:.2f} s / {m['run_s']:.3f} s"),
        ("tokens / s", f"{m['tokens_per_s']:.1f}"),
        ("upper loss (trusted)", f"{m['final'].get('upper_loss', float('nan')):.4f}"),
        ("AUC of x (clean vs corrupted)", f"{m['weight_auc']:.4f}"),
    ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def run_command(model: str, mesh: str, *, plan_only: bool, steps: int, batch: int | None = None,
                json_path: str | None = None, log: Any = None) -> int:
    """``ratelab scale``: the plan (``plan_only``) or a measured run of ``steps`` steps; prints a table."""
    axes = parse_mesh(mesh)
    sc = scale_config(model, axes, batch=batch)
    if json_path:  # the output is checked before the compile, not after it
        folder = os.path.dirname(os.path.abspath(json_path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise RatelabError(f"--json must name a file in a writable folder, got {json_path!r} "
                               f"({err.strerror or err})") from None
    ensure_cpu_devices(sc.n_devices)
    if plan_only:
        out = plan(sc)
        print(format_plan(out))
    else:
        p = plan(sc)
        limit = _device_memory_limit()
        if limit is not None and p["peak_bytes_per_device"] > 0.8 * limit:
            raise RatelabError(f"--model {model} on --mesh {mesh} needs {_gib(p['peak_bytes_per_device'])} per "
                               f"device, more than 80 % of the {_gib(limit)} available; use --plan, a smaller model "
                               "or more devices")
        out = measure(sc, steps=steps)
        out.pop("state")
        out["plan"] = {k: p[k] for k in ("params_bytes_per_device", "opt_state_bytes_per_device",
                                         "peak_bytes_per_device", "flops_per_step_per_device")}
        print(format_measure(out))
    if json_path:
        from ratelab.io import atomic_write_text

        atomic_write_text(json_path, json.dumps({k: v for k, v in out.items() if k != "metrics"}, indent=1,
                                                default=str))
    return 0


def _device_memory_limit() -> int | None:
    dev = jax.devices()[0]
    stats = getattr(dev, "memory_stats", lambda: None)()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    if dev.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(len(jax.devices()), 1)
        except (ValueError, OSError):
            return None
    return None
