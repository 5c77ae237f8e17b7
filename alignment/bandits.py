"""Shared pieces of the alignment toys: Bradley-Terry / Plackett-Luce preferences, the KL-regularised optimum of a
softmax policy on a bandit, and two small exact solvers (optax minimisation under ``lax.scan``, damped Newton for the
few-parameter problems whose exact optimum is the reference of a claim).

Conventions: a policy over K responses is a vector of logits (``log pi`` up to a constant); rewards ``r[..., K]``;
every function is pure, jit-able and batch-free (``vmap`` it).

Facts used across the package (standard; restated so that the tests can check them):

* Bradley-Terry: P(y_i > y_j) = sigma(r_i - r_j); Plackett-Luce: the probability that y is ranked first among all K
  is softmax(r)_y, the *preference distribution* of Xiao et al. (2024). Both depend on r only through differences:
  an offset r + c (even a prompt-dependent c(x)) changes neither.
* The KL-regularised objective E_pi r - beta KL(pi || pi_ref) is maximised by pi_beta = pi_ref exp(r / beta) / Z,
  with value beta log sum_y pi_ref(y) exp(r_y / beta) (Rafailov et al. 2023, eq. 4; Xiao et al. 2024, Sec. 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_positive, check_positive_int


def preference_distribution(r: jax.Array) -> jax.Array:
    """softmax(r): the Plackett-Luce probability that each response is ranked first (Xiao et al. 2024)."""
    return jax.nn.softmax(r, axis=-1)


def bt_probability(r_i: jax.Array, r_j: jax.Array) -> jax.Array:
    """Bradley-Terry P(y_i preferred to y_j) = sigma(r_i - r_j)."""
    return jax.nn.sigmoid(r_i - r_j)


def kl_regularized_optimum(r: jax.Array, log_pi_ref: jax.Array, beta: Any) -> jax.Array:
    """The maximiser pi_ref exp(r / beta) / Z of E_pi r - beta KL(pi || pi_ref) over all distributions."""
    return jax.nn.softmax(log_pi_ref + r / beta, axis=-1)


def kl_regularized_value(r: jax.Array, log_pi_ref: jax.Array, beta: Any) -> jax.Array:
    """max_pi E_pi r - beta KL(pi || pi_ref) = beta log sum_y pi_ref(y) exp(r_y / beta)."""
    return beta * jax.scipy.special.logsumexp(log_pi_ref + r / beta, axis=-1)


def kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(p || q) from normalised log-probabilities (last axis)."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def minimize(loss: Callable[[Any], jax.Array], params: Any, optimizer: optax.GradientTransformation,
             steps: int) -> tuple[Any, jax.Array]:
    """``steps`` optax updates on ``loss`` under ``lax.scan``: ``(final params, loss before each step)``."""
    check_positive_int("steps", steps)
    grad = jax.value_and_grad(loss)

    def body(carry, _):
        p, state = carry
        value, g = grad(p)
        updates, state = optimizer.update(g, state, p)
        return (optax.apply_updates(p, updates), state), value

    (params, _), values = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
    return params, values


def adam(learning_rate: Any) -> optax.GradientTransformation:
    """optax Adam with a float or schedule learning rate (the solver of the bandit policies)."""
    if not callable(learning_rate):
        check_positive("learning_rate", learning_rate)
    return optax.adam(as_schedule(learning_rate))


def small_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """Solve a x = b for a small symmetric positive definite ``a`` (``[d, d]``, d <= 16) by Gaussian elimination
    unrolled over d: the same arithmetic as ``jnp.linalg.solve`` without its LAPACK custom call, which dominates the
    compile time of these tiny vmapped problems."""
    return _eliminate(a, b)[0]


def _eliminate(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gauss-Jordan without pivoting: (solution, smallest pivot); for symmetric ``a`` every pivot is positive
    exactly when ``a`` is positive definite."""
    d = a.shape[-1]
    if d > 16:
        raise RatelabError(f"small_solve is for d <= 16 unknowns, got {d}")
    m = jnp.concatenate([a, b[:, None]], axis=1)
    pivot = jnp.inf
    for i in range(d):
        pivot = jnp.minimum(pivot, m[i, i])
        row = m[i] / m[i, i]
        m = m - m[:, i : i + 1] * row[None, :]
        m = m.at[i].set(row)
    return m[:, d], pivot


def newton_minimize(loss: Callable[[jax.Array], jax.Array], x0: jax.Array, iters: int = 30,
                    damping: float = 1e-12, halvings: int = 6) -> jax.Array:
    """Damped Newton on a smooth function of a few parameters (``x0`` is 1-D), a fixed number of iterations.

    Each step solves (H + damping I) d = -g when that matrix is positive definite (all elimination pivots > 0: a
    Newton step), else with the shift max(0, -Gershgorin lower bound of lambda_min(H)) that makes it so (a descent
    direction where H is indefinite), and takes the best of the
    steps t d, t = 1, 1/2, ..., 2^-halvings, evaluated at once (no sequential line search, so that it vmaps without
    while-loops), or stays put when none decreases the loss. Used as the exact reference solver of convex or
    locally convex problems (where H is positive definite and the step is Newton's), not as a method under test.
    """
    check_positive_int("iters", iters)
    if jnp.ndim(x0) != 1:
        raise RatelabError(f"x0 must be a 1-D parameter vector, got shape {jnp.shape(x0)}")
    grad, hess = jax.grad(loss), jax.hessian(loss)
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)
    ts = 2.0 ** -jnp.arange(halvings + 1, dtype=x0.dtype)

    def step(x, _):
        g, h = grad(x), hess(x)
        newton, pivot = _eliminate(h + damping * eye, -g)
        lower = jnp.min(jnp.diag(h) - (jnp.sum(jnp.abs(h), axis=1) - jnp.abs(jnp.diag(h))))
        shifted = small_solve(h + (jnp.maximum(0.0, -lower) * 1.01 + 2 * damping) * eye, -g)
        d = jnp.where(pivot > 0, newton, shifted)
        candidates = x + ts[:, None] * d
        values = jax.vmap(loss)(candidates)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        best = jnp.argmin(values)
        return jnp.where(values[best] <= loss(x), candidates[best], x), None

    x, _ = jax.lax.scan(step, x0, None, length=iters)
    return x
