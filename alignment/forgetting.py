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


def toy(*, phi: Any, q: Any, r: Any, theta0: Any) -> dict[str, np.ndarray]:
    """One toy of :func:`forgetting_study` from the user's own arrays (the fields of one :func:`instances` draw, as
    float64 NumPy): features phi ``[K, d]`` with d < K whose columns are independent modulo constants (the centred
    phi has full column rank, so f_SFT is strictly convex and Newton's references are unique; its smallest singular
    value is in the error), the SFT distribution q ``[K]`` (nonnegative, summing to 1), rewards r ``[K]``, the start
    theta0 ``[d]``. Every check runs before any computation."""
    out = {}
    for name, v, want in (("phi", phi, 2), ("q", q, 1), ("r", r, 1), ("theta0", theta0, 1)):
        try:
            arr = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            raise RatelabError(f"{name} must be an array of real numbers, got {type(v).__name__}") from None
        if arr.ndim != want or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise RatelabError(f"{name} must be a finite non-empty {want}-D array, got shape {arr.shape}")
        out[name] = arr
    K, d = out["phi"].shape
    if not 1 <= d < K:
        raise RatelabError(f"phi must be [K, d] with 1 <= d < K so that the objectives conflict, got {(K, d)}")
    for name in ("q", "r"):
        if out[name].shape != (K,):
            raise RatelabError(f"{name} must have shape ({K},) (one entry per response, phi's rows), got "
                               f"{out[name].shape}")
    if out["theta0"].shape != (d,):
        raise RatelabError(f"theta0 must have shape ({d},) (phi's columns), got {out['theta0'].shape}")
    if out["q"].min() < 0 or abs(out["q"].sum() - 1.0) > 1e-9:
        raise RatelabError(f"q must be a distribution (nonnegative, summing to 1); min {out['q'].min():.3g}, sum "
                           f"{out['q'].sum():.12g}")
    centred = out["phi"] - out["phi"].mean(axis=0)
    sv = float(np.linalg.svd(centred, compute_uv=False).min())
    if sv <= 1e-10 * max(1.0, float(np.abs(out["phi"]).max())):
        raise RatelabError(f"phi's columns must be independent modulo constants (f_SFT strictly convex): the centred "
                           f"phi's smallest singular value is {sv:.3g}")
    return out


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


def make_problem(phi: jax.Array, q: jax.Array, r: jax.Array, beta: Any) -> tuple[Problem, jax.Array, jax.Array]:
    """The toy with pi_ref = pi at the SFT optimum, that optimum and the DPO optimum.

    One vmapped Newton solve gives both: f_SFT does not involve pi_ref, and f_DPO depends on theta only through
    beta Phi (theta - theta_SFT) (log pi_ref = Phi theta_SFT - const, and constants cancel in the pair differences),
    so theta_DPO* = theta_SFT + the DPO optimum for a reference with log pi_ref = 0."""
    p0 = Problem(phi, q, r, jnp.zeros_like(q), beta)
    x0 = jnp.zeros(phi.shape[1], phi.dtype)
    theta_sft, theta_dpo0 = jax.vmap(lambda mu: newton_minimize(lambda t: mix_loss(t, p0, mu), x0, 25))(
        jnp.array([0.0, 1.0], phi.dtype))
    return p0._replace(log_ref=jax.nn.log_softmax(phi @ theta_sft)), theta_sft, theta_sft + theta_dpo0


class References(NamedTuple):
    """Exact optima: f_SFT*, f_DPO*, min f_mix at lambda, theta_DPO*, and MAXRIGHT's min-max value."""

    sft: jax.Array
    dpo: jax.Array
    mix: jax.Array
    theta_dpo: jax.Array
    minmax: jax.Array


def references(p: Problem, theta_sft: jax.Array, theta_dpo: jax.Array, lam: Any, bisections: int = 30) -> References:
    """Every exact reference of one toy: min f_mix at lambda, and the min-max value by bisection over the
    weighted-sum parameter mu, where lambda G_DPO(theta_mu) - (1 - lambda) G_SFT(theta_mu) changes sign (each
    bisection step solves the mu and lambda trade-offs with one vmapped Newton)."""
    f_sft, f_dpo = sft_loss(theta_sft, p), dpo_loss(theta_dpo, p)
    x0 = jnp.zeros_like(theta_sft)

    def bisect(carry, _):
        lo, hi, _ = carry
        mid = (lo + hi) / 2
        t_mid, t_lam = jax.vmap(lambda mu: newton_minimize(lambda th: mix_loss(th, p, mu), x0, 25))(
            jnp.stack([mid, lam]))
        a, b = lam * (dpo_loss(t_mid, p) - f_dpo), (1 - lam) * (sft_loss(t_mid, p) - f_sft)
        lo, hi = jnp.where(a > b, mid, lo), jnp.where(a > b, hi, mid)
        return (lo, hi, jnp.stack([jnp.maximum(a, b), mix_loss(t_lam, p, lam)])), None

    zero = jnp.zeros((), x0.dtype)
    (_, _, (minmax, mix)), _ = jax.lax.scan(bisect, (zero, zero + 1, jnp.zeros(2, x0.dtype)), None,
                                            length=bisections)
    return References(f_sft, f_dpo, mix, theta_dpo, minmax)


def gaps(theta: jax.Array, p: Problem, ref: References, lam: Any) -> dict[str, jax.Array]:
    g_sft, g_dpo = sft_loss(theta, p) - ref.sft, dpo_loss(theta, p) - ref.dpo
    return {"sft": g_sft, "dpo": g_dpo, "mix": mix_loss(theta, p, lam) - ref.mix,
            "max": jnp.maximum((1 - lam) * g_sft, lam * g_dpo) - ref.minmax}


SEQUENTIAL, ALRIGHT, MAXRIGHT = 0, 1, 2


def _train(theta0: jax.Array, method: jax.Array, p: Problem, ref: References, lam: Any, coins: jax.Array,
           step_size: Any, steps: int, log_every: int) -> jax.Array:
    """One run of ``method`` (SEQUENTIAL, ALRIGHT or MAXRIGHT; may be traced, so the three vmap) with Adam (optax;
    one optimiser state for both objectives, as in the paper's trainers) and a cosine-decayed rate. The sequential
    run is two training runs: SFT for T/2 steps, then DPO for T/2 with a fresh optimiser state and schedule.
    Returns the iterates every ``log_every`` steps."""
    half = steps // 2
    opt = optax.scale_by_adam()
    if callable(step_size):  # the user's schedule, restarted for the sequential run's second stage
        whole = stage = step_size
    else:
        whole, stage = optax.cosine_decay_schedule(step_size, steps), optax.cosine_decay_schedule(step_size, half)
    grad_sft, grad_dpo = jax.grad(sft_loss), jax.grad(dpo_loss)
    seq = method == SEQUENTIAL

    def one(carry, xs):
        theta, st = carry
        k, coin = xs
        st = jax.tree_util.tree_map(lambda a, b: jnp.where(seq & (k == half), a, b), opt.init(theta), st)
        g = gaps(theta, p, ref, lam)
        choice = jnp.where(seq, k >= half, jnp.where(method == ALRIGHT, coin < lam,
                                                     lam * g["dpo"] > (1 - lam) * g["sft"]))
        c = choice.astype(theta.dtype)
        upd, st = opt.update(c * grad_dpo(theta, p) + (1 - c) * grad_sft(theta, p), st, theta)
        lr = jnp.where(seq, stage(k % half), whole(k))
        return (theta - lr * upd, st), None

    def block(carry, xb):
        carry, _ = jax.lax.scan(one, carry, xb)
        return carry, carry[0]

    xs = (jnp.arange(steps).reshape(-1, log_every), coins.reshape(-1, log_every))
    _, thetas = jax.lax.scan(block, (theta0, opt.init(theta0)), xs)
    return thetas


def forgetting_study(phi: jax.Array, q: jax.Array, r: jax.Array, theta0: jax.Array, coins: jax.Array, beta: Any,
                     lam: Any, step_size: Any, steps: int, log_every: int) -> dict[str, jax.Array]:
    """One toy: sequential (T/2 SFT then T/2 DPO steps), ALRIGHT (``coins [T]`` uniforms: DPO when coin < lambda)
    and MAXRIGHT for T steps each, Adam with a cosine-decayed rate from ``step_size`` (each sequential stage with
    its own schedule), or with ``step_size``'s own rate when it is an optax schedule (restarted at k = 0 for the
    sequential run's DPO stage). Returns each method's gaps every
    ``log_every`` steps and the closed-form forgetting G_SFT(theta_DPO*)."""
    check_positive_int("steps", steps)
    check_positive_int("log_every", log_every)
    if steps % (2 * log_every):
        raise RatelabError(f"steps must be a multiple of 2 * log_every ({2 * log_every}), got {steps}")
    check_in_range("lam", lam, 0.0, 1.0, closed="neither")
    check_positive("step_size", step_size)
    p, theta_sft, theta_dpo = make_problem(phi, q, r, beta)
    ref = references(p, theta_sft, theta_dpo, lam)
    methods = jnp.array([SEQUENTIAL, ALRIGHT, MAXRIGHT])
    paths = jax.vmap(lambda m: _train(theta0, m, p, ref, lam, coins, step_size, steps, log_every))(methods)
    out = {}
    for i, name in enumerate(("seq", "alright", "maxright")):
        for k, v in jax.vmap(lambda t: gaps(t, p, ref, lam))(paths[i]).items():
            out[f"{name}_{k}"] = v
    out["forgetting_closed_form"] = gaps(ref.theta_dpo, p, ref, lam)["sft"] * jnp.ones(steps // log_every)
    return out
