"""The measurements behind the DiSK and DOPPLER experiments: one seed's run of several optimizer arms (vmapped) beside
DPSGD on the same batches and the same DP noise, reduced to per-coordinate statistics inside the scan.

* :func:`disk_quadratic_seed` / :func:`doppler_quadratic_seed`: SGD-based arms on a :class:`NoisyQuadratic`; per
  coordinate the stationary second moments (mean over t >= ``burn_in``) of the iterate and of the error of the
  gradient the base optimizer receives, the largest |x_arm - x_DPSGD| over the run, and for DiSK the largest residual
  of the filtered-error recursion e_t = (1 - kappa) e_{t-1} + kappa n_t (in units of the noise std).
* :func:`logistic_seed`: DiSK / EMA / DPSGD arms at several noise multipliers on one logistic-regression instance
  with Poisson subsampling; the excess risk L(w_T) - L(w*) of each.

Every arm's optax chain is built from its (traced) hyperparameters inside the vmap, with the same noise key, so arms
and DPSGD draw identical noise (common random numbers). vmap these over seeds and jit at the call site.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optim_theory.disk import disk, disk_lookahead
from optim_theory.doppler import doppler
from optim_theory.dp import dp_aggregate, dp_optimizer, poisson_mask
from optim_theory.dp_problems import Logistic, NoisyQuadratic


class DiskArms(NamedTuple):
    """``[A]`` each: the gain, the prediction switch (1 = DiSK, 0 = no prediction term) and the clip norm."""

    kappa: jax.Array
    predict: jax.Array
    clip_norm: jax.Array


class FilterArms(NamedTuple):
    """``[A, n_a + 1]`` / ``[A, n_b + 1]`` filter coefficients (equal orders, zero-padded) and ``[A]`` bias-correction
    switches (1 on, 0 off)."""

    a: jax.Array
    b: jax.Array
    bias_correction: jax.Array


def _scan_stats(step: Callable, carry: Any, key: jax.Array, steps: int, burn_in: int) -> dict[str, jax.Array]:
    """Run ``step(carry, key_t, t) -> (carry, stats)`` for ``steps`` steps; a stat named ``mean_*`` is averaged over
    t >= ``burn_in``, ``max_*`` is the maximum over all t."""

    def body(state, inp):
        carry, acc = state
        t, k = inp
        carry, stats = step(carry, k, t)
        weight = (t >= burn_in).astype(jnp.result_type(float)) / (steps - burn_in)
        acc = {name: (acc[name] + weight * v if name.startswith("mean_") else jnp.maximum(acc[name], v))
               for name, v in stats.items()}
        return (carry, acc), None

    shapes = jax.eval_shape(lambda c, k: step(c, k, jnp.int32(0))[1], carry, key)
    acc = {name: jnp.zeros(s.shape, s.dtype) for name, s in shapes.items()}
    keys = jax.random.split(key, steps)
    (_, acc), _ = jax.lax.scan(body, (carry, acc), (jnp.arange(steps), keys))
    return acc


def disk_quadratic_seed(problem: NoisyQuadratic, arms: DiskArms, key: jax.Array, *, step: float, gamma: float,
                        noise_multiplier: float, clip_norm: float, steps: int, burn_in: int) -> dict[str, jax.Array]:
    """One seed of DiSK-SGD arms and DPSGD (clip ``clip_norm``) from x_0 = 0 on the same samples and DP noise.

    Returns ``mean_x2`` ``[A, d]``, ``mean_x2_dpsgd`` ``[d]``, ``max_residual`` ``[A, d]`` (|e_t - (1 - kappa)
    e_{t-1} - kappa n_t| / s over t >= 1, with n_t the error of the privatized gradient at x_t that DPSGD's
    aggregate would return on the same batch and noise, replayed from the pre-step state) and ``max_gap`` ``[A, d]``.
    """
    noise_key, sample_key = jax.random.split(key)
    x0 = jnp.zeros_like(problem.h)

    def arm_opt(arm):
        return disk(optax.sgd(step), kappa=arm.kappa, gamma=gamma, clip_norm=arm.clip_norm,
                    noise_multiplier=noise_multiplier, key=noise_key, predict=arm.predict)

    dpsgd = dp_optimizer(optax.sgd(step), clip_norm=clip_norm, noise_multiplier=noise_multiplier, key=noise_key)

    def arm_step(arm, x, state, e_prev, samples, t):
        opt = arm_opt(arm)
        g_now = problem.per_sample_grads(x, samples)
        g_pred = problem.per_sample_grads(disk_lookahead(state, x, gamma), samples)
        n = _dpsgd_mean(arm.clip_norm, noise_multiplier, noise_key, g_now, state[1]) - problem.grad(x)
        updates, state = opt.update((g_now, g_pred), state, x)
        e = state[2].filtered - problem.grad(x)
        scale = jnp.sqrt(problem.noise_var(arm.clip_norm, noise_multiplier))
        residual = jnp.where(t > 0, jnp.abs(e - (1 - arm.kappa) * e_prev - arm.kappa * n) / scale, 0.0)
        return optax.apply_updates(x, updates), state, e, residual

    def one(carry, k, t):
        xs, states, es, x_dp, s_dp = carry
        samples = problem.sample(k)
        xs, states, es, residual = jax.vmap(arm_step, in_axes=(0, 0, 0, 0, None, None))(arms, xs, states, es,
                                                                                        samples, t)
        u, s_dp = dpsgd.update(problem.per_sample_grads(x_dp, samples), s_dp, x_dp)
        x_dp = optax.apply_updates(x_dp, u)
        stats = {"mean_x2": xs**2, "mean_x2_dpsgd": x_dp**2, "max_residual": residual,
                 "max_gap": jnp.abs(xs - x_dp)}
        return (xs, states, es, x_dp, s_dp), stats

    n_arms = arms.kappa.shape[0]
    xs = jnp.broadcast_to(x0, (n_arms, *x0.shape))
    states = jax.vmap(lambda arm, x: arm_opt(arm).init(x))(arms, xs)
    carry = (xs, states, jnp.zeros_like(xs), x0, dpsgd.init(x0))
    return _scan_stats(one, carry, sample_key, steps, burn_in)


def _dpsgd_mean(clip_norm: Any, noise_multiplier: Any, key: jax.Array, per_sample: Any, aggregate_state: Any) -> Any:
    """The privatized mean DPSGD's aggregate returns for ``per_sample`` from ``aggregate_state`` (the state holds the
    noise key, so this replays the very noise the arm's own aggregate draws this step)."""
    return dp_aggregate(clip_norm, noise_multiplier, key).update(per_sample, aggregate_state)[0]


def doppler_quadratic_seed(problem: NoisyQuadratic, arms: FilterArms, key: jax.Array, *, step: float,
                           noise_multiplier: float, clip_norm: float, steps: int,
                           burn_in: int) -> dict[str, jax.Array]:
    """One seed of DOPPLER-SGD arms (one filter each) and DPSGD from x_0 = 0 on the same samples and DP noise.

    Returns ``mean_x2`` ``[A, d]`` / ``mean_x2_dpsgd`` ``[d]`` (iterates), ``mean_err2`` ``[A, d]`` /
    ``mean_err2_dpsgd`` ``[d]`` (the filtered gradient m_t / c_t, read as -update / step, minus grad f(x_t); for
    DPSGD the privatized gradient minus grad f(x_t)) and ``max_gap`` ``[A, d]`` (|x_arm - x_DPSGD|).
    """
    noise_key, sample_key = jax.random.split(key)
    x0 = jnp.zeros_like(problem.h)

    def arm_opt(arm):
        return doppler(optax.sgd(step), a=arm.a, b=arm.b, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                       key=noise_key, bias_correction=arm.bias_correction)

    dpsgd = dp_optimizer(optax.sgd(step), clip_norm=clip_norm, noise_multiplier=noise_multiplier, key=noise_key)

    def arm_step(arm, x, state, samples):
        updates, state = arm_opt(arm).update(problem.per_sample_grads(x, samples), state, x)
        return optax.apply_updates(x, updates), state, (-updates / step - problem.grad(x)) ** 2

    def one(carry, k, t):
        xs, states, x_dp, s_dp = carry
        samples = problem.sample(k)
        x_old = x_dp
        xs, states, err2 = jax.vmap(arm_step, in_axes=(0, 0, 0, None))(arms, xs, states, samples)
        u, s_dp = dpsgd.update(problem.per_sample_grads(x_dp, samples), s_dp, x_dp)
        x_dp = optax.apply_updates(x_dp, u)
        stats = {"mean_x2": xs**2, "mean_x2_dpsgd": x_dp**2, "mean_err2": err2,
                 "mean_err2_dpsgd": (-u / step - problem.grad(x_old)) ** 2, "max_gap": jnp.abs(xs - x_dp)}
        return (xs, states, x_dp, s_dp), stats

    n_arms = arms.a.shape[0]
    xs = jnp.broadcast_to(x0, (n_arms, *x0.shape))
    states = jax.vmap(lambda arm, x: arm_opt(arm).init(x))(arms, xs)
    return _scan_stats(one, (xs, states, x0, dpsgd.init(x0)), sample_key, steps, burn_in)


def logistic_seed(problem: Logistic, arms: DiskArms, noise_multipliers: jax.Array, key: jax.Array, *,
                  step: Any, best: Any, gamma: float, sampling_rate: float, steps: int) -> dict[str, jax.Array]:
    """One seed on one logistic instance: DiSK-SGD arms and DPSGD at each noise multiplier (``[E]``), Poisson
    batches (rate q, mean normalised by q n), w_0 = 0, the same masks and noise for every arm.

    Returns ``excess`` ``[E, A]`` and ``excess_dpsgd`` ``[E]``: L(w_T) - ``best`` (L(w*), from
    :func:`optim_theory.dp_problems.logistic_solution`).
    """
    n, d = problem.X.shape
    expected = sampling_rate * n
    noise_key, mask_key = jax.random.split(key)
    n_sig, n_arms = noise_multipliers.shape[0], arms.kappa.shape[0]
    # one flat axis of (noise multiplier, arm) pairs: a single vmap inside the scan compiles faster than two
    flat = DiskArms(*(jnp.tile(v, n_sig) for v in arms))
    sigmas = jnp.repeat(noise_multipliers, n_arms)

    def arm_opt(arm, sigma):
        return disk(optax.sgd(step), kappa=arm.kappa, gamma=gamma, clip_norm=arm.clip_norm, noise_multiplier=sigma,
                    key=noise_key, expected_batch_size=expected, predict=arm.predict)

    def dpsgd(sigma):
        return dp_optimizer(optax.sgd(step), clip_norm=arms.clip_norm[0], noise_multiplier=sigma, key=noise_key,
                            expected_batch_size=expected)

    def arm_step(arm, sigma, w, state, mask):
        g_now = problem.per_sample_grads(w) * mask[:, None]
        g_pred = problem.per_sample_grads(disk_lookahead(state, w, gamma)) * mask[:, None]
        updates, state = arm_opt(arm, sigma).update((g_now, g_pred), state, w)
        return optax.apply_updates(w, updates), state

    def dpsgd_step(sigma, w, state, mask):
        u, state = dpsgd(sigma).update(problem.per_sample_grads(w) * mask[:, None], state, w)
        return optax.apply_updates(w, u), state

    def body(carry, k):
        ws, states, w_dp, s_dp = carry
        mask = poisson_mask(k, n, sampling_rate)
        ws, states = jax.vmap(arm_step, in_axes=(0, 0, 0, 0, None))(flat, sigmas, ws, states, mask)
        w_dp, s_dp = jax.vmap(dpsgd_step, in_axes=(0, 0, 0, None))(noise_multipliers, w_dp, s_dp, mask)
        return (ws, states, w_dp, s_dp), None

    w0 = jnp.zeros(d, problem.X.dtype)
    ws = jnp.broadcast_to(w0, (n_sig * n_arms, d))
    w_dp = jnp.broadcast_to(w0, (n_sig, d))
    carry = (ws, jax.vmap(lambda arm, sig, w: arm_opt(arm, sig).init(w))(flat, sigmas, ws), w_dp,
             jax.vmap(lambda sig, w: dpsgd(sig).init(w))(noise_multipliers, w_dp))
    (ws, _, w_dp, _), _ = jax.lax.scan(body, carry, jax.random.split(mask_key, steps))
    excess = (jax.vmap(problem.loss)(ws) - best).reshape(n_sig, n_arms)
    excess_dpsgd = jax.vmap(problem.loss)(w_dp) - best
    return {"excess": excess, "excess_dpsgd": excess_dpsgd}
