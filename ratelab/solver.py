"""The solver protocol shared by every algorithm package.

A solver is a pair of pure functions, in the spirit of ``optax.GradientTransformation``::

    solver = robbins_monro(step_size=harmonic(1.0, 10.0))
    state = solver.init(problem, key)
    state, metrics = solver.step(state, problem, solver.sample(problem, key))

``sample`` maps a PRNG key to the step's exogenous randomness xi_k (oracle noise, a minibatch index, a
zeroth-order direction). Keeping it apart from ``step`` is what lets the runner draw the noise of many
steps in one bulk call instead of one small random-number kernel per step; the default ``sample`` returns
the key itself, so a solver whose randomness depends on its state (e.g. an MDP rollout under the current
policy) simply draws inside ``step`` from the key it is handed.
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


def key_as_sample(problem: Problem, key: PRNGKey) -> PRNGKey:
    """Default ``Solver.sample``: hand the step its own key."""
    del problem
    return key


class Solver(NamedTuple):
    """``init(problem, key) -> state``; ``step(state, problem, xi) -> (state, metrics)``;
    ``sample(problem, key) -> xi``.

    ``step`` must keep the state's pytree structure, shapes and dtypes, and return a dict of scalar metrics.
    All three are pure and jit-able, and never branch in Python on traced hyperparameters.
    """

    init: Callable[[Problem, PRNGKey], State]
    step: Callable[[State, Problem, Sample], tuple[State, Metrics]]
    sample: Callable[[Problem, PRNGKey], Sample] = key_as_sample
