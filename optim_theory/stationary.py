"""Stationary second moments of linear stochastic recursions, for the closed forms of the filtered DP optimizers.

A recursion z_{t+1} = A z_t + B n_t driven by white noise n_t (variance ``noise_var`` per step) has, when A is
stable, the stationary covariance P solving the discrete Lyapunov equation P = A P A^T + noise_var B B^T; scipy
solves it. SGD on h x^2 / 2 with step eta and white gradient noise is the scalar case A = 1 - eta h, B = -eta.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from ratelab.errors import RatelabError


def stationary_covariance(A: np.ndarray, B: np.ndarray, noise_var: float = 1.0) -> np.ndarray:
    """P = A P A^T + noise_var B B^T for z_{t+1} = A z_t + B n_t; ``inf`` everywhere when A is not stable."""
    A = np.atleast_2d(np.asarray(A, dtype=float))
    B = np.asarray(B, dtype=float).reshape(A.shape[0], -1)
    if A.shape[0] != A.shape[1]:
        raise RatelabError(f"A must be square, got shape {A.shape}")
    if np.max(np.abs(np.linalg.eigvals(A))) >= 1.0:
        return np.full(A.shape, np.inf)
    return linalg.solve_discrete_lyapunov(A, noise_var * B @ B.T)


def sgd_floor(step: float, curvature: float, noise_var: float) -> float:
    """E x^2 at stationarity of x_{t+1} = x_t - step (h x_t + n_t): step^2 s^2 / (1 - (1 - step h)^2) (DPSGD's floor
    per direction at equal noise; ``inf`` outside 0 < step h < 2)."""
    rho = 1.0 - step * curvature
    return float(step**2 * noise_var / (1.0 - rho**2)) if abs(rho) < 1 else float("inf")
