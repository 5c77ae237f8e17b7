"""RL and stochastic-approximation theory: solvers and problem generators (leaf package: jax, optax, ratelab)."""

from rl_theory.sa import (
    LinearSA,
    RMState,
    chung_constant,
    chung_exponent,
    exact_second_moment,
    linear_sa,
    make_linear_sa,
    make_scalar_sa,
    robbins_monro,
)

__all__ = [
    "LinearSA",
    "RMState",
    "chung_constant",
    "chung_exponent",
    "exact_second_moment",
    "linear_sa",
    "make_linear_sa",
    "make_scalar_sa",
    "robbins_monro",
]
