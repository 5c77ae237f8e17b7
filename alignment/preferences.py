"""Preference collapse of KL-regularised RLHF and preference-matching (PM) RLHF on a K-armed bandit and on a small
prompt-response table.

Paper: J. Xiao, Z. Li, X. Xie, E. Getzen, C. Fang, Q. Long, W. J. Su, "On the Algorithmic Bias of Aligning Large
Language Models with RLHF: Preference Collapse and Matching Regularization", arXiv:2405.16455 (2024).

* Standard RLHF: max_pi E_{y ~ pi}[r(y)] - beta KL(pi || pi_ref), whose optimum is pi_ref exp(r / beta) / Z. The
  preference distribution of the Bradley-Terry / Plackett-Luce reward is P(y) = exp(r(y)) / sum exp(r); the RLHF
  optimum differs from it unless pi_ref is uniform and beta = 1. As beta shrinks the optimum concentrates on
  argmax r: responses preferred by a minority get vanishing mass (*preference collapse*).
* PM RLHF: max_pi E_{y ~ pi}[r(y) + R(pi(y))] with the PM regulariser R(pi) = -log pi, the solution of the ODE
  that the preference-matching property requires (the paper's family is -log pi + C_1 + C_2 / pi; we take
  C_1 = C_2 = 0). Its optimum is exactly P = softmax(r).
* Conditional PM RLHF (*reconstructed*: the paper's conditional variant restricts matching to responses that the
  reference model deems meaningful; we take the meaningful set S_x = {y : pi_ref(y|x) >= tau} and the PM objective
  over policies supported on S_x, whose optimum is softmax(r(x, .)) restricted to S_x, prompt by prompt).

Symbols -> arguments: r(y) or r(x, y) (``r``), pi_ref (``log_pi_ref``, log-probabilities), beta (``beta``), the
policy (``logits``: pi = softmax(logits), per prompt on the last axis), tau (``threshold``). Solver (ours): Adam
(optax) on the logits with exact gradients of the bandit objective and an exponentially decaying learning rate; the
paper trains LLMs with PPO, which on a bandit with exact expectations reduces to gradient ascent on the objective.

Offsets: every objective here changes by a constant under r -> r + c (c may depend on the prompt), so the optima and
the preference distribution are offset invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import logsumexp

from alignment.bandits import kl_regularized_optimum, preference_distribution
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_in_range, check_positive, check_positive_int


def _xlogx(pi: jax.Array) -> jax.Array:
    return jnp.where(pi > 0, pi * jnp.log(jnp.where(pi > 0, pi, 1.0)), 0.0)


def rlhf_objective(pi: jax.Array, r: jax.Array, log_pi_ref: jax.Array, beta: Any) -> jax.Array:
    """E_pi r - beta KL(pi || pi_ref) of probabilities ``pi`` (summed over prompts when [X, K])."""
    return jnp.sum(pi * (r + beta * log_pi_ref) - beta * _xlogx(pi))


def pm_objective(pi: jax.Array, r: jax.Array, coef: Any = 1.0) -> jax.Array:
    """E_pi [r + coef R(pi)] with the PM regulariser R(pi) = -log pi (``coef = 0``: plain reward maximisation)."""
    return jnp.sum(pi * r - coef * _xlogx(pi))


def meaningful_mask(log_pi_ref: jax.Array, threshold: Any) -> jax.Array:
    """S_x = {y : pi_ref(y|x) >= tau} (reconstructed conditional-PM support), always keeping argmax pi_ref."""
    keep = jnp.exp(log_pi_ref) >= threshold
    return keep | (jnp.arange(log_pi_ref.shape[-1]) == jnp.argmax(log_pi_ref, axis=-1, keepdims=True))


def conditional_target(r: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(r(x, .)) restricted to S_x: the conditional preference distribution P(y | x, y in S_x)."""
    return jax.nn.softmax(jnp.where(mask, r, -jnp.inf), axis=-1)


def masked_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Logits of a policy supported on S_x: -inf off it (softmax gives exactly 0 there)."""
    return jnp.where(mask, logits, -jnp.inf)


def mirror_ascent(objective: Callable[[jax.Array], jax.Array], logits0: jax.Array, steps: int,
                  step_size: Any) -> jax.Array:
    """Mirror ascent on the simplex (exponentiated gradient; natural policy gradient for softmax policies, Cen et al.
    2021): logits <- logits + eta d objective / d pi at pi = softmax(logits), applied with ``optax.sgd``.

    ``objective`` is a function of the probabilities ``pi`` (last axis). On E_pi r - beta KL(pi || pi_ref) the
    update is logits <- (1 - eta beta) logits + eta (r + beta log pi_ref) + const, a contraction by 1 - eta beta
    towards the closed form; on the PM objective (beta = 1, pi_ref uniform) it contracts towards r.
    ``step_size`` is a float or an optax schedule (k -> eta_k).
    """
    check_positive_int("steps", steps)
    check_positive("step_size", step_size)
    ascent = jax.grad(objective)
    opt = optax.sgd(as_schedule(step_size))

    def body(carry, _):
        z, state = carry
        updates, state = opt.update(-ascent(jax.nn.softmax(z, axis=-1)), state, z)
        return (optax.apply_updates(z, updates), state), None

    (z, _), _ = jax.lax.scan(body, (logits0, opt.init(logits0)), None, length=steps)
    return z


def preference_instances(seed: int, n: int, n_responses: int, offset_scale: float = 5.0,
                         ref_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bandit instances ``[n, K]``: rewards r = c + z (z ~ N(0, I_K), an offset c ~ U(-offset_scale,
    offset_scale) per instance) and reference log-policies log softmax(ref_scale * N(0, I_K)) (NumPy, float64:
    drawn outside the compiled study so that it holds no random-number generation)."""
    check_positive_int("n", n)
    check_positive_int("n_responses", n_responses)
    if n_responses < 3:
        raise RatelabError(f"n_responses must be >= 3 (a majority and at least two minority responses), got "
                           f"{n_responses}")
    check_positive("offset_scale", offset_scale)
    check_positive("ref_scale", ref_scale)
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n, n_responses)) + rng.uniform(-offset_scale, offset_scale, (n, 1))
    logits = ref_scale * rng.standard_normal((n, n_responses))
    return r, logits - logsumexp(logits, axis=-1, keepdims=True)


def minority_mass(p: jax.Array, r: jax.Array) -> jax.Array:
    """Mass on every response but the reward maximiser (the responses preferred by a minority)."""
    best = jnp.arange(r.shape[-1]) == jnp.argmax(r, axis=-1, keepdims=True)
    return jnp.sum(jnp.where(best, 0.0, p), axis=-1)  # summed, not 1 - p_max: exact for tiny masses


def reward_gap(r: jax.Array) -> jax.Array:
    """Delta = r_(1) - r_(2), the gap between the best and the second-best reward."""
    top = jax.lax.top_k(r, 2)[0]
    return top[..., 0] - top[..., 1]


def collapse_study(r: jax.Array, log_ref: jax.Array, u_grid: jax.Array, steps: int,
                   step_scale: float) -> dict[str, jax.Array]:
    """One bandit instance (``r``, ``log_ref``: [K]): RLHF at beta = u Delta for every u of ``u_grid`` (Delta the
    instance's top reward gap), PM RLHF, and PM without its regulariser, each solved by :func:`mirror_ascent` from
    uniform logits (step ``step_scale / beta`` for RLHF, ``step_scale`` for PM, so that each contracts by
    1 - step_scale per step).

    Returns ``[len(u_grid)]`` curves (PM's do not depend on beta and are broadcast): the worst-case distance of the
    solved RLHF policy to the closed form and to the preference distribution, the minority mass of each solved policy
    over the preference distribution's minority mass, and PM's distance to softmax(r) with and without its
    regulariser.
    """
    pref = preference_distribution(r)
    betas = u_grid * reward_gap(r)
    z0 = jnp.zeros_like(r)
    solve = lambda obj, eta: jax.nn.softmax(mirror_ascent(obj, z0, steps, eta))  # noqa: E731
    rlhf = jax.vmap(lambda b: solve(lambda p: rlhf_objective(p, r, log_ref, b), step_scale / b))(betas)
    closed = jax.vmap(lambda b: kl_regularized_optimum(r, log_ref, b))(betas)
    pm = solve(lambda p: pm_objective(p, r), step_scale)
    pm_noreg = solve(lambda p: pm_objective(p, r, 0.0), step_scale)
    m_pref = minority_mass(pref, r)
    ones = jnp.ones_like(u_grid)
    return {
        "rlhf_vs_closed_form": jnp.max(jnp.abs(rlhf - closed), axis=-1),
        "rlhf_vs_preference": jnp.max(jnp.abs(rlhf - pref), axis=-1),
        "rlhf_minority_ratio": minority_mass(rlhf, r) / m_pref,
        "closed_minority_ratio": minority_mass(closed, r) / m_pref,
        "pm_minority_ratio": ones * minority_mass(pm, r) / m_pref,
        "pm_vs_preference": ones * jnp.max(jnp.abs(pm - pref)),
        "pm_noreg_vs_preference": ones * jnp.max(jnp.abs(pm_noreg - pref)),
    }


def table_instances(seed: int, n: int, n_prompts: int, n_responses: int, offset_scale: float = 5.0,
                    ref_scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` prompt-response tables ``[n, X, K]``: r(x, y) = c(x) + z(x, y) (a prompt-dependent offset) and
    reference policies pi_ref(. | x) = softmax(ref_scale * N(0, I_K)) (see :func:`preference_instances`)."""
    check_positive_int("n_prompts", n_prompts)
    r, log_ref = preference_instances(seed, n * n_prompts, n_responses, offset_scale, ref_scale)
    return r.reshape(n, n_prompts, n_responses), log_ref.reshape(n, n_prompts, n_responses)


def conditional_study(r: jax.Array, log_ref: jax.Array, threshold: float, steps: int,
                      step_scale: float) -> dict[str, jax.Array]:
    """Conditional PM RLHF on one table (``[X, K]``; jointly over all prompts: the objective is their sum) and PM
    without the condition, both by :func:`mirror_ascent`: the worst-case distance, over prompts and responses, of
    each to the conditional preference distribution P(y | x, y in S_x)."""
    check_in_range("threshold", threshold, 0.0, 1.0, closed="neither")
    mask = meaningful_mask(log_ref, threshold)
    target = conditional_target(r, mask)
    z0 = jnp.zeros_like(r)
    cond = mirror_ascent(lambda p: pm_objective(p, r), masked_logits(z0, mask), steps, step_scale)
    plain = mirror_ascent(lambda p: pm_objective(p, r), z0, steps, step_scale)
    return {"conditional_vs_target": jnp.max(jnp.abs(jax.nn.softmax(cond, axis=-1) - target)),
            "unconditional_vs_target": jnp.max(jnp.abs(jax.nn.softmax(plain, axis=-1) - target))}
