"""ratelab: theory papers as running, checkable numbers.

``import ratelab as rl`` is the whole public API; names load on first use, so the import itself is instant.

Solvers and schedules
    Solver              a solver: ``init(problem, key)``, ``step(state, problem, xi)``, ``sample(problem, key, n)``
    split_keys          the default ``Solver.sample``: one PRNG key per step
    harmonic            the Robbins-Monro step ``a / (k + k0)``
    power_decay         the step ``scale / (k + offset) ** power``
    as_schedule         a float or an optax schedule, as a schedule

Running
    run                 ``jit(vmap(lax.scan))`` of a solver over seeds: a Trace
    sweep               ``run`` vmapped over a hyperparameter, with common random numbers
    sweep_row           row i of a sweep's settings table: floats when i is concrete, traced entries inside
    Trace               what a run produced: steps, metrics ``[*sweep, seeds, n]``, divergence, timings
    trace_from_arrays   a Trace from curves over any x (a penalty, a dataset size, a dimension)
    call                compile and run one jitted function, timed, with a progress line
    enable_cache        JAX's persistent compilation cache in a per-user folder (see ratelab.cache)

Rates and claims
    fit_power_law       exponent and prefactor of ``E y ~ C x^p``, bootstrap interval over seeds
    fit_constant        the constant C for a known exponent
    fit_level           the level of a metric over a window (mean or worst case)
    fit_sample_complexity  the exponent of the samples N(eps) needed to reach eps
    samples_to_reach    per seed, the first x at which a curve reaches each eps
    running_mean        ``(1/K) sum_k`` of per-step values
    running_min         ``min_k`` of per-step values
    Claim               one checkable statement about one metric
    check               judge a Claim on a Trace: a Verdict
    Verdict             the outcome: PASS or FAIL, the measurement, its interval and why

Experiments
    Paper               a paper's citation
    Panel               one axes of an experiment's figure
    Experiment          a paper's figure made runnable: configs, execute, claims, panels
    register            add an Experiment to the registry
    experiments         every registered Experiment (imports the ``experiments`` package)
    get                 one registered Experiment by id
    run_experiment      run (or reuse) one Experiment and write its folder
    verify              run experiments, judge every claim, write REPORT.md, report.json and index.html
    plot_trace          the figure of a Trace, with a Verdict's fitted and claimed lines

Errors
    RatelabError        bad input: the message names the argument and what is allowed

Modules
    ratelab.scale, ratelab.sharding (V-PBGD on a device mesh), ratelab.validate (input checks),
    ratelab.mdp (discounted-MDP linear algebra), ratelab.cache (the persistent compilation cache),
    ratelab.cli (the ``ratelab`` command).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Solver": "solver", "split_keys": "solver",
    "harmonic": "schedules", "power_decay": "schedules", "as_schedule": "schedules",
    "run": "runner", "sweep": "runner", "sweep_row": "runner", "Trace": "runner", "trace_from_arrays": "runner",
    "call": "runner",
    "enable_cache": "cache",
    "fit_power_law": "rates", "fit_constant": "rates", "fit_level": "rates", "fit_sample_complexity": "rates",
    "samples_to_reach": "rates", "running_mean": "rates", "running_min": "rates",
    "Claim": "claims", "check": "claims", "Verdict": "claims",
    "Paper": "registry", "Panel": "registry", "Experiment": "registry", "register": "registry",
    "experiments": "registry", "get": "registry",
    "run_experiment": "harness", "verify": "harness",
    "plot_trace": "figures",
    "RatelabError": "errors",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"ratelab.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ratelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
