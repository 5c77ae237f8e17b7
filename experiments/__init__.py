"""The ratelab harness: runner, rate fitting, claims, registry, results, figures, report and the CLI."""

from experiments.runner import Trace, run, sweep, trace_from_arrays

__all__ = ["Trace", "run", "sweep", "trace_from_arrays"]
