"""ratelab core: the solver protocol, input checks, schedules and discounted-MDP linear algebra (``ratelab.mdp``)
that the algorithm packages share.

The algorithm packages (``bilevel``, ``rl_theory``, ``riemannian``) import only this, jax and optax; the harness
in ``experiments`` composes them.
"""

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule, harmonic, power_decay
from ratelab.solver import Solver, split_keys

__all__ = ["RatelabError", "Solver", "as_schedule", "harmonic", "power_decay", "split_keys"]
__version__ = "0.1.0"
