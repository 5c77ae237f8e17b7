"""Forgetting in sequential SFT then DPO, and the joint methods ALRIGHT and MAXRIGHT, on a softmax policy over K
responses with d < K features.

Paper: H. Fernando, H. Shen, P. Ram, Y. Zhou, H. Samulowitz, N. Baracaldo, T. Chen, "Mitigating Forgetting in LLM
Supervised Fine-Tuning and Preference Learning" (later "Understanding Forgetting in LLM Supervised Fine-Tuning and
Preference Learning - A Convex Optimization Perspective"), arXiv:2410.15483 (2024); code heshandevaka/XRIGHT.

Objectives (convex in theta, as in the paper's analysis): the policy pi_theta = softmax(Phi theta), Phi ``[K, d]``;
* SFT: f_SFT(theta) = -sum_y q(y) log pi_theta(y) (the SFT data's response distribution q);
* DPO: f_DPO(theta) = E_{(i, j)} [sigma(r_i - r_j) softplus(-beta ((log pi_theta(i) - log pi_ref(i)) -
  (log pi_theta(j) - log pi_ref(j))))] over ordered pairs i != j with Bradley-Terry labels, pi_ref = pi at the SFT
  optimum (the paper's reference for SFT-then-DPO); the normaliser cancels, so it is logistic in theta;
* the trade-off f_mix = lambda f_DPO + (1 - lambda) f_SFT, gap G_mix(theta) = f_mix(theta) - min f_mix.

Methods, restated from the paper and its code (``xright/trainer/sft_dpo_{alright,maxright}_trainer.py``):
* sequential: T/2 SFT steps, then T/2 DPO steps (each stage with its own step schedule: two training runs);
* ALRIGHT: at every step draw the DPO objective with probability lambda, else SFT, and take a step on it;
* MAXRIGHT: at every step take a step on the objective with the larger weighted gap, argmax of
  [(1 - lambda)(f_SFT - f_SFT*), lambda (f_DPO - f_DPO*)] (the code evaluates the gaps on stale minibatch losses;
  here exactly).
Steps: optax Adam with a cosine-decayed rate, one optimiser state for both objectives as in the paper's trainers
(its analysis assumes SGD with alpha_k ~ 1/sqrt(k)), on exact gradients of the chosen objective (the LLM runs use
minibatch gradients: *the only randomness here is ALRIGHT's coin*).

Symbols -> arguments: Phi (``phi``), q (``q``), r (``r``), beta (``beta``), lambda (``lam``), T (``steps``), alpha
(``step_size``, float or schedule).

Derived here (tested): every exact reference is a Newton solve of a convex problem; sequential training ends at the
DPO optimum, so its SFT gap tends to G_SFT(theta_DPO*) > 0 whenever the two optima differ (forgetting that more
steps do not remove); MAXRIGHT's target min_theta max_i w_i G_i(theta) is attained on the Pareto front where the
two weighted gaps are equal, found by bisection over the weighted-sum parameter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alignment.bandits import newton_minimize
from ratelab.errors import RatelabError
from ratelab.schedules import as_schedule
from ratelab.validate import check_in_range, check_positive, check_positive_int


class Problem(NamedTuple):
    """Features ``phi [K, d]``, SFT distribution ``q [K]``, rewards ``r [K]``, reference log-policy ``log_ref [K]``,
    KL coefficient ``beta``."""

    phi: jax.Array
    q: jax.Array
    r: jax.Array
    log_ref: jax.Array
    beta: Any


def instances(seed: int, n: int, n_responses: int, dim: int, offset_scale: float = 5.0) -> dict[str, np.ndarray]:
    """``n`` random toys (NumPy): Phi ~ N(0, 1), q = softmax(2 N(0, 1)), r = c + N(0, 1) with an offset c ~ U(-c0,
    c0) (Bradley-Terry labels, hence DPO, are offset invariant), theta_0 ~ N(0, 1)."""
    check_positive_int("n_responses", n_responses)
    check_positive_int("dim", dim)
    if not 1 <= dim < n_responses:
        raise RatelabError(f"dim must satisfy 1 <= dim < n_responses ({n_responses}) so that the objectives "
                           f"conflict, got {dim}")
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((n, n_responses))
    q = np.exp(logits - logits.max(-1, keepdims=True))
    return {"phi": rng.standard_normal((n, n_responses, dim)), "q": q / q.sum(-1, keepdims=True),
            "r": rng.standard_normal((n, n_responses)) + rng.uniform(-offset_scale, offset_scale, (n, 1)),
            "theta0": rng.standard_normal((n, dim))}


def sft_loss(theta: jax.Array, p: Problem) -> jax.Array:
    return -jnp.sum(p.q * jax.nn.log_softmax(p.phi @ theta))


def dpo_loss(theta: jax.Array, p: Problem) -> jax.Array:
    k = p.q.shape[0]
    h = p.beta * (p.phi @ theta - p.log_ref)  # beta log(pi / pi_ref) up to a constant that cancels in differences
    dh, dr = h[:, None] - h[None, :], p.r[:, None] - p.r[None, :]
    off = 1.0 - jnp.eye(k, dtype=h.dtype)
    return jnp.sum(off * jax.nn.sigmoid(dr) * jax.nn.softplus(-dh)) / (k * (k - 1))


def mix_loss(theta: jax.Array, p: Problem, lam: Any) -> jax.Array:
    return lam * dpo_loss(theta, p) + (1 - lam) * sft_loss(theta, p)


def make_problem(phi: jax.Array, q: jax.Array, r: jax.Array, beta: Any) -> tuple[Problem, jax.Array]:
    """The toy with pi_ref = pi at the SFT optimum, and that optimum."""
    p = Problem(phi, q, r, jnp.zeros_like(q), beta)
    theta_sft = newton_minimize(lambda t: sft_loss(t, p), jnp.zeros(phi.shape[1], phi.dtype), 30)
    return p._replace(log_ref=jax.nn.log_softmax(phi @ theta_sft)), theta_sft


class References(NamedTuple):
    """Exact optima: f_SFT*, f_DPO*, min f_mix at lambda, theta_DPO*, and MAXRIGHT's min-max value."""

    sft: jax.Array
    dpo: jax.Array
    mix: jax.Array
    theta_dpo: jax.Array
    minmax: jax.Array


def references(p: Problem, theta_sft: jax.Array, lam: Any, bisections: int = 30) -> References:
    """Every exact reference of one toy (Newton solves; the min-max value by bisection over the weighted-sum
    parameter mu, where lambda G_DPO(theta_mu) - (1 - lambda) G_SFT(theta_mu) changes sign)."""
    x0 = jnp.zeros_like(theta_sft)
    theta_dpo = newton_minimize(lambda t: dpo_loss(t, p), x0, 30)
    f_sft, f_dpo = sft_loss(theta_sft, p), dpo_loss(theta_dpo, p)
    theta_mix = newton_minimize(lambda t: mix_loss(t, p, lam), x0, 30)

    def weighted(mu):
        t = newton_minimize(lambda th: mix_loss(th, p, mu), x0, 30)
        return lam * (dpo_loss(t, p) - f_dpo), (1 - lam) * (sft_loss(t, p) - f_sft)

    def bisect(bounds, _):
        lo, hi = bounds
        mid = (lo + hi) / 2
        a, b = weighted(mid)
        return jnp.where(a > b, jnp.stack([mid, hi]), jnp.stack([lo, mid])), None

    (lo, hi), _ = jax.lax.scan(bisect, jnp.array([0.0, 1.0], x0.dtype), None, length=bisections)
    a, b = weighted((lo + hi) / 2)
    return References(f_sft, f_dpo, mix_loss(theta_mix, p, lam), theta_dpo, jnp.maximum(a, b))


def gaps(theta: jax.Array, p: Problem, ref: References, lam: Any) -> dict[str, jax.Array]:
    g_sft, g_dpo = sft_loss(theta, p) - ref.sft, dpo_loss(theta, p) - ref.dpo
    return {"sft": g_sft, "dpo": g_dpo, "mix": mix_loss(theta, p, lam) - ref.mix,
            "max": jnp.maximum((1 - lam) * g_sft, lam * g_dpo) - ref.minmax}


def _run(theta0: jax.Array, choose, p: Problem, steps: int, step_size: Any, xs: jax.Array, log_every: int):
    """Adam (optax, one optimiser state shared by both objectives, as in the paper's trainers) for ``steps`` steps;
    ``choose(theta, x) -> 1.0 (DPO) or 0.0 (SFT)`` picks each step's objective; returns the iterates every
    ``log_every`` steps."""
    opt = optax.adam(as_schedule(step_size))
    grad_sft, grad_dpo = jax.grad(sft_loss), jax.grad(dpo_loss)

    def one(carry, x):
        theta, st = carry
        c = choose(theta, x)
        g = c * grad_dpo(theta, p) + (1 - c) * grad_sft(theta, p)
        upd, st = opt.update(g, st, theta)
        return (optax.apply_updates(theta, upd), st), None

    def block(carry, xb):
        carry, _ = jax.lax.scan(one, carry, xb)
        return carry, carry[0]

    carry = (theta0, opt.init(theta0))
    _, thetas = jax.lax.scan(block, carry, xs.reshape(steps // log_every, log_every))
    return thetas


def forgetting_study(phi: jax.Array, q: jax.Array, r: jax.Array, theta0: jax.Array, coins: jax.Array, beta: Any,
                     lam: Any, step_size: float, steps: int, log_every: int) -> dict[str, jax.Array]:
    """One toy: sequential (T/2 SFT then T/2 DPO steps), ALRIGHT (``coins [T]`` uniforms: DPO when coin < lambda)
    and MAXRIGHT for T steps each, Adam with a cosine-decayed rate from ``step_size`` (each sequential stage with
    its own schedule). Returns each method's gaps every
    ``log_every`` steps and the closed-form forgetting G_SFT(theta_DPO*)."""
    check_positive_int("steps", steps)
    check_positive_int("log_every", log_every)
    if steps % (2 * log_every):
        raise RatelabError(f"steps must be a multiple of 2 * log_every ({2 * log_every}), got {steps}")
    check_in_range("lam", lam, 0.0, 1.0, closed="neither")
    check_positive("step_size", step_size)
    p, theta_sft = make_problem(phi, q, r, beta)
    ref = references(p, theta_sft, lam)
    half = steps // 2
    sched = optax.cosine_decay_schedule(step_size, steps)
    stage = optax.cosine_decay_schedule(step_size, half)
    stage1 = _run(theta0, lambda t, x: 0.0, p, half, stage, jnp.zeros(half), log_every)
    stage2 = _run(stage1[-1], lambda t, x: 1.0, p, half, stage, jnp.zeros(half), log_every)
    sequential = jnp.concatenate([stage1, stage2])
    alright = _run(theta0, lambda t, x: (x < lam).astype(t.dtype), p, steps, sched, coins, log_every)

    def maxright_choice(t, x):
        g = gaps(t, p, ref, lam)
        return (lam * g["dpo"] > (1 - lam) * g["sft"]).astype(t.dtype)

    maxright = _run(theta0, maxright_choice, p, steps, sched, jnp.zeros(steps), log_every)
    out = {}
    for name, path in (("seq", sequential), ("alright", alright), ("maxright", maxright)):
        for k, v in jax.vmap(lambda t: gaps(t, p, ref, lam))(path).items():
            out[f"{name}_{k}"] = v
    out["forgetting_closed_form"] = gaps(ref.theta_dpo, p, ref, lam)["sft"] * jnp.ones(steps // log_every)
    return out
