"""Throughput of sharded V-PBGD data selection from 1 to 8 devices at a fixed per-device batch (weak scaling).

For each device count n the same run (``ratelab.scale.measure``: ``--steps`` V-PBGD steps in one jitted
``lax.scan``, the data-parallel mesh ``data=n`` over the first n devices, ``--per-device-batch`` training sequences
per device) is compiled once and timed ``--repeat`` times; the best time gives tokens per second (training
sequences x sequence length per step; the trusted minibatch is not counted) and

    scaling efficiency(n) = tokens_per_s(n) / (n * tokens_per_s(1)).

On a GPU machine the model FLOPs utilisation is printed too: the step's model FLOPs (6 N per token for each
gradient, 2 N per token for the forward of g(x, z); ``ratelab.scale.model_flops``) per second, divided by n
times the device's peak dense bf16/fp32 FLOP rate from :data:`PEAK_FLOPS`.

Run from the repository root::

    python benchmarks/scale.py                                     # CPU: 8 forced host devices, model small
    python benchmarks/scale.py --model tiny --steps 20             # quicker
    python benchmarks/scale.py --model 1b --per-device-batch 1 --steps 3 --devices 1,2,4,8   # on 8 GPUs

On CPU the forced host devices share the machine's cores, so efficiency falls as n exceeds the core count: the
figures measure the sharding machinery's overhead, not hardware scaling. No NumPy reference loop is timed here: a
NumPy transformer with hand-written backpropagation would be a second implementation, which this benchmark exists
to avoid.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

if "--help" not in sys.argv and "-h" not in sys.argv and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"  # used only when the backend is CPU

import jax  # noqa: E402

from ratelab.scale import measure, model_flops, scale_config  # noqa: E402

# Peak dense FLOP/s per device (bf16 tensor cores unless noted), from the vendors' data sheets.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "V100": 125e12}


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return peak
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--devices", default="1,2,4,8", help="device counts, comma separated")
    ap.add_argument("--per-device-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.devices.split(",")]
    devs = jax.devices()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__}, {len(devs)} {devs[0].platform} "
          f"devices ({getattr(devs[0], 'device_kind', '?')})")
    print(f"# model {args.model}, per-device batch {args.per_device_batch}, {args.steps} steps per timed call, "
          f"best of {args.repeat}")
    peak = peak_flops(devs[0]) if devs[0].platform == "gpu" else None
    print(f"{'devices':>7} {'tokens/s':>12} {'efficiency':>10} {'compile s':>9} {'run s':>8} {'MFU':>7} "
          f"{'AUC':>6}")
    base = None
    for n in counts:
        if n > len(devs):
            print(f"{n:>7} skipped: only {len(devs)} devices")
            continue
        sc = scale_config(args.model, {"data": n}, per_device_batch=args.per_device_batch)
        m = measure(sc, steps=args.steps, devices=devs[:n], repeat=args.repeat)
        tps = m["tokens_per_s"]
        base = base if base is not None else tps / n
        mfu = (model_flops(sc) * args.steps / m["run_s"]) / (n * peak) if peak else None
        print(f"{n:>7} {tps:>12.1f} {tps / (n * base):>10.3f} {m['compile_s']:>9.2f} {m['run_s']:>8.3f} "
              f"{'n/a' if mfu is None else f'{mfu:.3f}':>7} {m['weight_auc']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
