"""Optimizer theory: optimizers as optax transformations, their toy problems and closed forms. Leaf package."""
