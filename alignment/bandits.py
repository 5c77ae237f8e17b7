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


def newton_minimize(loss: Callable[[jax.Array], jax.Array], x0: jax.Array, iters: int = 50,
                    damping: float = 1e-12) -> jax.Array:
    """Damped Newton with backtracking on a smooth function of a few parameters (``x0`` is 1-D).

    Each step solves (H + mu I) d = -g with mu the damping plus max(0, -lambda_min(H)) (so d is a descent direction
    where H is indefinite) and halves the step until the loss does not increase (12 halvings at most). Used as the
    exact reference solver (the paper's optimum of a convex or locally convex problem), not as a method under test.
    """
    check_positive_int("iters", iters)
    if jnp.ndim(x0) != 1:
        raise RatelabError(f"x0 must be a 1-D parameter vector, got shape {jnp.shape(x0)}")
    grad, hess = jax.grad(loss), jax.hessian(loss)
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)

    def step(x, _):
        g, h = grad(x), hess(x)
        lam = jnp.linalg.eigvalsh(h)[0]
        d = -jnp.linalg.solve(h + (damping + jnp.maximum(0.0, -lam) * 1.01) * eye, g)
        f0 = loss(x)

        def halve(carry):
            t, _ = carry
            return t / 2, loss(x + t / 2 * d)

        t, f = jax.lax.while_loop(lambda c: (c[1] > f0) & (c[0] > 2.0**-12), halve, (1.0, loss(x + d)))
        return jnp.where(f <= f0, x + t * d, x), None

    x, _ = jax.lax.scan(step, x0, None, length=iters)
    return x
