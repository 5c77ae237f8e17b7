"""Penalty-based bilevel optimisation (PBGD / V-PBGD, AiPOD, PBRL). Leaf package: jax, optax, ratelab.

Solvers arrive with the bilevel issue; this package is importable so that the layout is fixed from the start.
"""
