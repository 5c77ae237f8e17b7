"""DiSK: the DP optimizer with a simplified Kalman filter on the privatized gradient, as optax transformations.

Zhang, Bu, Balle, Hong, Razaviyayn & Mirrokni, "DiSK: Differentially Private Optimizer with Simplified Kalman
Filter for Noise Reduction", ICLR 2025, arXiv:2410.03883; public code: ``research/disk_optimizer`` of the Opacus
repository (``KFoptimizer.py``, ``ReadMe.md``). The algorithm, restated (paper's symbols -> arguments here):

    d_t = x_t - x_{t-1}  (d_0 = 0)                                   x_t: params; d_t kept in the filter state
    c = (1 - kappa) / (kappa gamma)                                  kappa: ``kappa`` (gain), gamma: ``gamma``
    g~_{t+1/2} = (1/B) sum_{xi in B_t} clip_C(c grad f(x_t + gamma d_t; xi) + (1 - c) grad f(x_t; xi)) + w_t
                                       w_t ~ N(0, sigma^2 C^2 / B^2 I); C: ``clip_norm``, sigma: ``noise_multiplier``
    g_t = (1 - kappa) g_{t-1} + kappa g~_{t+1/2}    (g_0 = g~_{1/2}, as the code initialises its filter state)
    x_{t+1} = Opt(x_t, g_t)                                          Opt: ``base`` (optax.sgd, optax.adam, ...)

It is the Kalman filter of the gradient with the prediction g_t^- = g_{t-1} + H_t d_t, the Hessian-vector product
taken as the finite difference (grad f(x_t + gamma d_t) - grad f(x_t)) / gamma, and the constant gain kappa; both
gradients use the same batch and the clip acts once on the per-sample combination, so a step has sensitivity C and
DiSK's privacy is DPSGD's at the same sigma, q, T.

As optax transformations (the caller evaluates the per-sample gradients at x_t and at the predicted point
:func:`disk_lookahead` returns, and passes the pair as ``updates``)::

    opt = disk(optax.sgd(lr), kappa=0.7, gamma=0.5, clip_norm=C, noise_multiplier=sigma, key=key)
    #   = optax.chain(disk_combine(kappa, gamma), dp_aggregate(C, sigma, key), disk_filter(kappa), optax.sgd(lr))
    x_pred = disk_lookahead(state, x, gamma)
    updates, state = opt.update((per_sample_grads(x), per_sample_grads(x_pred)), state, x)

What was checked in the official code (read with the search tools, not copied):

* Noise scaling: when gamma != (1 - kappa)/kappa, ``KF_DPOptimizer`` divides the noise multiplier by
  sqrt(c^2 + (1 - c)^2) before adding noise (its accountant then records the rescaled multiplier). The clip acts on
  the combination, so the sensitivity is C and noise sigma C is exactly what the accountant's sigma certifies: the
  rescale is not needed for privacy. It adds noise when 0 < c < 1 (the defaults kappa = 0.7, gamma = 0.5: c = 6/7,
  1.151x the noise) and removes noise when c > 1 (e.g. kappa = 0.5, gamma = 0.7, the values of an example command
  in a README of the authors' standalone code: c = 1.43, 0.67x the noise, so a run calibrated to a target epsilon
  through the Opacus engine would spend more than that target). Here the noise multiplier from dp-accounting is
  used unchanged; :func:`official_noise_factor` gives the code's factor.
* Filter convention: the first commit of the code (b4c075de) updates ``lerp_(grad, weight=kappa)``, i.e. the
  paper's g_t = (1 - kappa) g_{t-1} + kappa g~; since f23e5c47 (a copyright/licence commit) it is
  ``weight=1 - kappa`` with c unchanged, which the ReadMe does not follow. The paper's form is used here: under the
  later one kappa = 1 would freeze the filter at its first observation instead of giving DPSGD.
* gamma = (1 - kappa)/kappa makes c = 1: the code then evaluates only the gradient at the predicted point; the
  same follows here from the formula (1 * g_pred + 0 * g_now).

Closed forms on a quadratic (derived here, not in the paper): with grad f(x) = H x and the clip inactive,
grad f(x_t) - grad f(x_{t-1}) = H d_t exactly, so the filtered error e_t = g_t - grad f(x_t) obeys

    e_t = (1 - kappa) e_{t-1} + kappa n_t,     n_t = (1/B) sum clip_C(grad f(x_t; xi)) + w_t - grad f(x_t)

(the error of the privatized gradient DPSGD would use at x_t, same batch and noise) whatever ``base`` is: the
prediction removes the filter's lag exactly. Per direction of curvature h, with Var n_t = s^2, SGD step eta,
rho = 1 - eta h and beta = 1 - kappa: Var e = kappa s^2 / (2 - kappa), and the stationary floor is

    E x^2 = eta^2 [kappa s^2 / (2 - kappa)] (1 + rho beta) / ((1 - rho^2)(1 - rho beta)),

against DPSGD's eta^2 s^2 / (1 - rho^2): the ratio kappa/(2 - kappa) (1 + rho beta)/(1 - rho beta) tends to 1 as
eta h -> 0 (no gain in flat directions, where the iterate already averages over 1/(eta h) >> 1/kappa steps), is
kappa/(2 - kappa) at eta h = 1 and (kappa/(2 - kappa))^2 as eta h -> 2.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optim_theory.dp import dp_aggregate
from optim_theory.stationary import stationary_covariance
from ratelab.errors import RatelabError
from ratelab.validate import check_in_range, check_positive


def _check_gain(kappa: Any, gamma: Any) -> None:
    check_in_range("kappa", kappa, 0.0, 1.0, closed="right")
    check_positive("gamma", gamma)


def combine_weight(kappa: Any, gamma: Any, predict: Any = 1.0) -> Any:
    """c = predict (1 - kappa) / (kappa gamma): the weight of the gradient at the predicted point (0 at kappa = 1;
    ``predict = 0`` drops the prediction term, leaving an EMA of the privatized gradient)."""
    return predict * (1.0 - kappa) / (kappa * gamma)


def official_noise_factor(kappa: float, gamma: float) -> float:
    """The factor the official code multiplies the noise std by: 1 / sqrt(c^2 + (1 - c)^2) when gamma != (1 -
    kappa)/kappa (within 1e-3), else 1. Not used by :func:`disk` (see the module docstring)."""
    _check_gain(kappa, gamma)
    if abs(gamma - (1 - kappa) / kappa) < 1e-3:
        return 1.0
    c = combine_weight(kappa, gamma)
    return float(1.0 / np.sqrt(c**2 + (1 - c) ** 2))


def disk_combine(kappa: Any, gamma: Any, *, predict: Any = 1.0) -> optax.GradientTransformation:
    """``updates = (g_now, g_pred)``, per-sample gradients at x_t and at x_t + gamma d_t (same batch) ->
    c g_pred + (1 - c) g_now per sample, c = :func:`combine_weight`. Stateless; put it before :func:`dp_aggregate`
    so that the clip acts on the combination."""
    _check_gain(kappa, gamma)
    check_in_range("predict", predict, 0.0, 1.0)
    c = combine_weight(kappa, gamma, predict)

    def update_fn(updates, state, params=None):
        del params
        if not (isinstance(updates, tuple) and len(updates) == 2):
            raise RatelabError("updates must be the pair (per-sample grads at x_t, per-sample grads at x_t + gamma "
                               "d_t)")
        g_now, g_pred = updates
        return jax.tree.map(lambda a, b: c * b + (1.0 - c) * a, g_now, g_pred), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


class DiskFilterState(NamedTuple):
    """g_{t-1} (``filtered``), x_{t-1} (``prev_params``: x_t - prev_params = d_t) and the step count."""

    filtered: Any
    prev_params: Any
    count: jax.Array


def disk_filter(kappa: Any) -> optax.GradientTransformation:
    """The constant-gain filter g_t = (1 - kappa) g_{t-1} + kappa u_t on the privatized gradient u_t (g_0 = u_0);
    records x_t for the next step's d_{t+1} (so ``update`` needs ``params``). kappa = 1 returns u_t unchanged."""
    check_in_range("kappa", kappa, 0.0, 1.0, closed="right")

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return DiskFilterState(filtered=zeros, prev_params=params, count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise RatelabError("disk_filter needs params (x_t) in update, to form d_{t+1} = x_{t+1} - x_t")
        first = state.count == 0
        filtered = jax.tree.map(lambda g, u: jnp.where(first, u, (1.0 - kappa) * g + kappa * u), state.filtered,
                                updates)
        return filtered, DiskFilterState(filtered=filtered, prev_params=params,
                                         count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def disk_lookahead(opt_state: Any, params: Any, gamma: Any) -> Any:
    """The predicted point x_t + gamma d_t, d_t = x_t - x_{t-1} read from the :func:`disk_filter` state inside
    ``opt_state`` (d_0 = 0: the first step evaluates both gradients at x_0)."""
    prev = optax.tree_utils.tree_get(opt_state, "prev_params")
    if prev is None:
        raise RatelabError("opt_state holds no disk_filter state (no 'prev_params' field)")
    return jax.tree.map(lambda x, p: x + gamma * (x - p), params, prev)


def disk(base: optax.GradientTransformation, *, kappa: Any = 0.7, gamma: Any = 0.5, clip_norm: Any,
         noise_multiplier: Any, key: jax.Array, expected_batch_size: float | None = None,
         predict: Any = 1.0) -> optax.GradientTransformation:
    """DiSK on top of ``base`` (``optax.sgd(lr)``: DiSK-SGD; ``optax.adam(lr)``: DiSK-Adam). Defaults kappa = 0.7,
    gamma = 0.5 are the official code's. ``update`` takes ``(g_now, g_pred)`` per-sample gradients (leading batch
    axis) at ``params`` and at :func:`disk_lookahead`; ``expected_batch_size`` as in :func:`dp_aggregate`."""
    return optax.chain(disk_combine(kappa, gamma, predict=predict),
                       dp_aggregate(clip_norm, noise_multiplier, key, expected_batch_size=expected_batch_size),
                       disk_filter(kappa), base)


# ------------------------------------------------------------------------------------- closed forms (derived here)


def gradient_error_variance(kappa: float, noise_var: float) -> float:
    """Var e_t = kappa s^2 / (2 - kappa): the stationary variance of the filtered error on a quadratic (derived
    here), at every curvature; DPSGD's is s^2 (kappa = 1)."""
    return float(kappa * noise_var / (2.0 - kappa))


def state_space(kappa: float, step: float, curvature: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of z_t = (x_t, e_{t-1}) for DiSK-SGD on h x^2 / 2: z_{t+1} = A z_t + B n_t (derived here)."""
    rho, beta = 1.0 - step * curvature, 1.0 - kappa
    return np.array([[rho, -step * beta], [0.0, beta]]), np.array([-step * kappa, kappa])


def floor(kappa: float, step: float, curvature: float, noise_var: float) -> float:
    """Stationary E x^2 of DiSK-SGD in a direction of curvature h with white noise variance s^2 (derived here;
    ``inf`` outside 0 < step h < 2)."""
    rho, beta = 1.0 - step * curvature, 1.0 - kappa
    if abs(rho) >= 1:
        return float("inf")
    return float(step**2 * gradient_error_variance(kappa, noise_var) * (1 + rho * beta)
                 / ((1 - rho**2) * (1 - rho * beta)))


def floor_ratio(kappa: float, step_curvature: float) -> float:
    """DiSK's floor over DPSGD's at equal noise and step: kappa/(2 - kappa) (1 + rho beta)/(1 - rho beta) with
    rho = 1 - eta h, beta = 1 - kappa (derived here)."""
    rho, beta = 1.0 - step_curvature, 1.0 - kappa
    return float(kappa / (2.0 - kappa) * (1 + rho * beta) / (1 - rho * beta))


def floor_lyapunov(kappa: float, step: float, curvature: float, noise_var: float) -> float:
    """The same floor from scipy's discrete Lyapunov solver on :func:`state_space` (a cross-check of
    :func:`floor`)."""
    A, B = state_space(kappa, step, curvature)
    return float(stationary_covariance(A, B, noise_var)[0, 0])
