"""Optimisation on manifolds (Riemannian ADMM, RFedSVRG, Zo-RASA). Leaf package: jax, optax, ratelab.

Solvers arrive with the riemannian issue; this package is importable so that the layout is fixed from the start.
"""
