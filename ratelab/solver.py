"""The solver protocol shared by every algorithm package.

A solver is three pure functions, in the spirit of ``optax.GradientTransformation``::

    solver = robbins_monro(step_size=harmonic(1.0, 10.0))
    state = solver.init(problem, key)
    xis = solver.sample(problem, key, n)              # the exogenous randomness of n steps, leading axis n
    state, metrics = solver.step(state, problem, xis[0])

``sample(problem, key, n)`` draws the exogenous randomness xi_k of ``n`` consecutive steps (oracle noise, a
minibatch index, a zeroth-order direction) in one bulk call, so that the runner's scan body holds no random-number
generation and no key splitting. The default returns ``n`` keys, one per step: a solver whose randomness depends on
its state (e.g. an MDP rollout under the current policy) simply draws inside ``step`` from the key it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

PRNGKey = jax.Array
State = Any
Problem = Any
Sample = Any
Metrics = dict[str, jax.Array]


def split_keys(problem: Problem, key: PRNGKey, n: int) -> PRNGKey:
    """Default ``Solver.sample``: one key per step, ``jax.random.split(key, n)``."""
    del problem
    return jax.random.split(key, n)


class Solver(NamedTuple):
    """``init(problem, key) -> state``; ``step(state, problem, xi) -> (state, metrics)``;
    ``sample(problem, key, n) -> xis`` (every leaf with a leading axis of length ``n``, one slice per step).

    ``step`` must keep the state's pytree structure, shapes and dtypes, and return a dict of scalar metrics.
    All three are pure and jit-able, and never branch in Python on traced hyperparameters.
    """

    init: Callable[[Problem, PRNGKey], State]
    step: Callable[[State, Problem, Sample], tuple[State, Metrics]]
    sample: Callable[[Problem, PRNGKey, int], Sample] = split_keys
