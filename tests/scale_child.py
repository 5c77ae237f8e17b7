"""Subprocess of ``tests/test_scale.py``: needs its own JAX start with several (forced) host devices.

    python tests/scale_child.py check OUT.json                 # 8 devices: equality, bytes, plan, recovery
    python tests/scale_child.py reference OUT.npz              # one unsharded step on one device
    python tests/scale_child.py worker PID PORT OUT.npz        # one process of a 2-process run (4 devices each)

Every mode writes its result to OUT and prints nothing the test relies on.
"""

from __future__ import annotations

import json
import os
import sys
import time

MODE = sys.argv[1]
N_LOCAL = {"check": 8, "small": 8, "reference": 1, "worker": 4}[MODE]
# Compile-time flags only (LLVM effort): the sharded and the unsharded step are compiled alike.
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={N_LOCAL} --xla_backend_optimization_level=0 "
                           "--xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

MESHES = ("data=8", "fsdp=8", "fsdp=2,tensor=4")
MP_MESH = "fsdp=4,tensor=2"
STEPS = 60


def max_abs_diff(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)), initial=0.0))
               for u, v in zip(la, lb, strict=True))


def _bytes(p: dict, state) -> dict:
    from ratelab.sharding import addressable_bytes, global_bytes

    return {name: {"global": global_bytes(getattr(state, name)),
                   "per_device": list(addressable_bytes(getattr(state, name)).values()),
                   "planned": p["state_bytes_per_device"][name]} for name in ("x", "y", "z", "x_opt", "y_opt")}


def _plan_vs_measured(model: str, mesh: str, **kw) -> dict:
    """Plan on abstract shapes, run the compiled step on real arrays, measure what the devices hold."""
    from ratelab.scale import init_state, make_problem, plan, sample_batches, scale_config
    from ratelab.sharding import ActivationSharding, addressable_bytes, place

    p, s, compiled = plan(scale_config(model, mesh, **kw), keep=True)
    host = make_problem(s.sc)
    batch = place(jax.tree_util.tree_map(lambda a: a[0], sample_batches(s, host, 1)), s.batch_sh)
    problem = place(host.with_constraint(ActivationSharding(s.mesh)), s.problem_sh)
    state = init_state(s, problem)
    dev = jax.devices()[0].id
    measured_args = sum(addressable_bytes(t)[dev] for t in (state, problem, batch))
    new, _ = compiled(state, problem, batch)
    return {"bytes": _bytes(p, new), "argument_bytes": p["argument_bytes"], "argument_bytes_measured": measured_args,
            "flops": p["flops_per_step"], "model_flops": p["model_flops_per_step"],
            "xla_cost_flops_per_device": p["xla_cost_flops_per_device"], "temp_bytes": p["temp_bytes"],
            "compile_s": p["compile_s"]}


def check(out: str) -> None:
    """Default (CI) checks: SGD step sharded == unsharded on every mesh; Adam state bytes under FSDP against the
    plan; the reweighting run on tiny."""
    from ratelab.scale import measure, one_step, plan, scale_config, to_host

    t0 = time.perf_counter()
    result: dict = {"devices": jax.device_count(), "equal": {}, "bytes": {}, "seconds": {}}
    ref = one_step(scale_config("tiny", "data=1", optimizer="sgd"), sharded=False)
    np.savez(out + ".ref.npz", *jax.tree_util.tree_leaves(ref))
    for mesh in MESHES:
        p, s, compiled = plan(scale_config("tiny", mesh, optimizer="sgd"), keep=True)
        result["equal"][mesh] = max_abs_diff(ref, to_host(one_step(s.sc, planned=(s, compiled))))
    result["seconds"]["equal"] = time.perf_counter() - t0
    result["memory"] = _plan_vs_measured("tiny", "fsdp=8")
    result["seconds"]["memory"] = time.perf_counter() - t0 - result["seconds"]["equal"]
    t1 = time.perf_counter()
    m = measure(scale_config("tiny", "data=8"), steps=STEPS)
    result["recovery"] = {"weight_auc": m["weight_auc"], "auc_curve": m["metrics"]["weight_auc"],
                          "upper_loss": m["metrics"]["upper_loss"], "steps": STEPS}
    result["seconds"]["recovery"] = time.perf_counter() - t1
    with open(out, "w") as fh:
        json.dump(result, fh)


def small(out: str) -> None:
    """The plan against measured figures on ``small`` (FSDP x tensor parallel)."""
    with open(out, "w") as fh:
        json.dump(_plan_vs_measured("small", "fsdp=2,tensor=4"), fh)


def reference(out: str) -> None:
    from ratelab.scale import one_step, scale_config

    state = one_step(scale_config("tiny", "data=1", optimizer="sgd"), sharded=False)
    np.savez(out, *jax.tree_util.tree_leaves(state))


def worker(pid: int, port: int, out: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    from ratelab.scale import one_step, scale_config, to_host

    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    state = to_host(one_step(scale_config("tiny", MP_MESH, optimizer="sgd")))
    if pid == 0:
        np.savez(out, *jax.tree_util.tree_leaves(state))
    jax.distributed.shutdown()


if __name__ == "__main__":
    if MODE == "check":
        check(sys.argv[2])
    elif MODE == "small":
        small(sys.argv[2])
    elif MODE == "reference":
        reference(sys.argv[2])
    else:
        worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
