"""DOPPLER: a low-pass (IIR) filter with bias correction on the privatized gradient, as an optax transformation.

Zhang, Bu, Hong & Razaviyayn, "DOPPLER: Differentially Private Optimizers with Low-pass Filter for Privacy Noise
Reduction", NeurIPS 2024, arXiv:2408.13460. The algorithm, restated (paper's symbols -> arguments here):

    g_t = (1/B) sum_{xi in B_t} clip_C(grad f(x_t; xi)) + w_t,   w_t ~ N(0, sigma^2 C^2 / B^2 I)   (DPSGD's)
    m_t = - sum_{tau=1}^{n_a} a_tau m_{t-tau} + sum_{tau=0}^{n_b} b_tau g_{t-tau}     a = (1, a_1, .., a_{n_a}),
    c_t = - sum_{tau=1}^{n_a} a_tau c_{t-tau} + sum_{tau=0}^{min(t, n_b)} b_tau       b = (b_0, .., b_{n_b})
    x_{t+1} = Opt(x_t, m_t / c_t)                (m, c, g = 0 before t = 0; Opt: ``base``, e.g. optax.sgd)

``a`` follows scipy.signal's convention (a[0] = 1, so ``scipy.signal.butter`` output plugs in), as does the public
``LPSGD`` code (whose defaults are the second-order Butterworth a = (1, -1.98342955, 0.98549544),
b = (0.00016332, 0.00032665, 0.00016332), :data:`CODE_DEFAULT`). c_t is the filter's response to a unit step
started at t = 0: dividing by it removes the start-up bias and normalises the filter to unit DC gain (c_t ->
sum b / sum a). The public code's ``c`` argument (an Adam-like second moment) is not reproduced: chain
``optax.adam`` as ``base`` instead. The first-order filter a = (1, -beta), b = (1 - beta) is momentum's EMA
(:func:`ema`), which the paper reads as the simplest low-pass filter.

Closed forms on a quadratic (derived here): in a direction of curvature h with step eta and white privatized-gradient
noise of variance s^2, the loop x_{t+1} = x_t - eta H(q) [h x_t + n_t] (H the normalised filter) is linear, so the
stationary floor E x^2 and the error of the filtered gradient E (m_t/c_t - h x_t)^2 solve a discrete Lyapunov
equation (:func:`closed_loop`). The filter alone cuts white noise by its power gain G = sum_k h_k^2
(:func:`white_noise_gain`); on the loop the error ratio to DPSGD's s^2 tends to G as eta h -> 0, where the gradient
h x_t is most autocorrelated (lag-one autocorrelation 1 - eta h under DPSGD), and rises with eta h as the filter's
lag adds error. The floor ratio tends to 1 as eta h -> 0 whatever the (unit-DC-gain) filter: the iterate already
averages the noise over 1/(eta h) steps.
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
from ratelab.validate import check_in_range, is_traced

CODE_DEFAULT = ((1.0, -1.98342955, 0.98549544), (0.00016332, 0.00032665, 0.00016332))
ALL_PASS = ((1.0,), (1.0,))


def ema(beta: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The first-order low-pass filter m_t = beta m_{t-1} + (1 - beta) g_t: (a, b) = ((1, -beta), (1 - beta,))."""
    check_in_range("beta", beta, 0.0, 1.0, closed="left")
    return (1.0, -float(beta)), (1.0 - float(beta),)


def _coefficients(a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.ndim != 1 or b.ndim != 1 or a.size < 1 or b.size < 1:
        raise RatelabError(f"a and b must be non-empty 1-D coefficient vectors, got shapes {a.shape} and {b.shape}")
    if not is_traced(a):
        a_np = np.asarray(a, dtype=float)
        if a_np[0] != 1.0:
            raise RatelabError(f"a[0] must be 1 (scipy.signal's convention), got {a_np[0]!r}")
        if not np.all(np.isfinite(a_np)):
            raise RatelabError(f"a must be finite, got {a_np.tolist()}")
    if not is_traced(b) and not np.all(np.isfinite(np.asarray(b, dtype=float))):
        raise RatelabError(f"b must be finite, got {np.asarray(b).tolist()}")
    return a, b


class LowPassState(NamedTuple):
    """Past inputs g_{t-1..t-n_b} and outputs m_{t-1..t-n_a} (each leaf stacked on a leading axis), the bias
    correction's past values c_{t-1..t-n_a}, and the step count."""

    inputs: Any
    outputs: Any
    norms: jax.Array
    count: jax.Array


def lowpass_filter(a: Any, b: Any, *, bias_correction: Any = True) -> optax.GradientTransformation:
    """DOPPLER's filter on the privatized gradient: returns m_t / c_t (m_t when ``bias_correction`` is false / 0).

    ``a = (1, a_1, ..., a_{n_a})``, ``b = (b_0, ..., b_{n_b})`` (scipy.signal's lfilter convention); the
    coefficients may be traced (a vmap over filters of equal orders). The all-pass filter ``a = (1,), b = (1,)``
    returns g_t unchanged.
    """
    a, b = _coefficients(a, b)
    na, nb = a.size - 1, b.size - 1

    def init_fn(params):
        def stack(n):
            return jax.tree.map(lambda p: jnp.zeros((n, *jnp.shape(p)), jnp.result_type(p)), params)

        dtype = jnp.result_type(*jax.tree.leaves(params), float)
        return LowPassState(stack(nb), stack(na), jnp.zeros((na,), dtype), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params

        def fir(g, past):  # sum_{tau=0}^{nb} b_tau g_{t-tau}
            return b[0] * g + jnp.tensordot(b[1:], past, axes=1) if nb else b[0] * g

        def iir(past):  # sum_{tau=1}^{na} a_tau m_{t-tau}
            return jnp.tensordot(a[1:], past, axes=1)

        m = jax.tree.map(lambda g, pi, po: fir(g, pi) - iir(po) if na else fir(g, pi), updates, state.inputs,
                         state.outputs)
        started = (jnp.arange(nb + 1) <= state.count).astype(state.norms.dtype)  # the unit step u_{t-tau} = 1
        c = jnp.sum(b.astype(state.norms.dtype) * started) - (iir(state.norms) if na else 0.0)
        scale = jnp.where(bias_correction, c, jnp.ones_like(c))
        out = jax.tree.map(lambda v: v / scale, m)

        def push(new, past):
            return jnp.concatenate([new[None], past[:-1]], axis=0) if past.shape[0] else past

        state = LowPassState(jax.tree.map(push, updates, state.inputs), jax.tree.map(push, m, state.outputs),
                             push(c, state.norms), optax.safe_increment(state.count))
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)


def doppler(base: optax.GradientTransformation, *, a: Any, b: Any, clip_norm: Any, noise_multiplier: Any,
            key: jax.Array, expected_batch_size: float | None = None,
            bias_correction: Any = True) -> optax.GradientTransformation:
    """DOPPLER on top of ``base`` (LP-DPSGD with ``optax.sgd``, LP-DPAdam with ``optax.adam``): the privatized
    mean (:func:`dp_aggregate`), the low-pass filter, then ``base``. ``update`` takes per-sample gradients at x_t."""
    return optax.chain(dp_aggregate(clip_norm, noise_multiplier, key, expected_batch_size=expected_batch_size),
                       lowpass_filter(a, b, bias_correction=bias_correction), base)


# ------------------------------------------------------------------------------------- closed forms (derived here)


def _normalised(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    dc = b.sum() / a.sum()
    if not np.isfinite(dc) or dc == 0:
        raise RatelabError(f"the filter must have a finite non-zero DC gain sum(b)/sum(a), got {dc!r}")
    return a, b / dc


def _filter_rows(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return a.size - 1, b.size - 1


def white_noise_gain(a: Any, b: Any) -> float:
    """G = sum_k h_k^2 of the unit-DC-gain filter: its output variance for unit white noise (scipy's Lyapunov
    solver on the direct-form state (u_{t-1..t-n_b}, m_{t-1..t-n_a}); ``inf`` if unstable)."""
    a, b = _normalised(a, b)
    na, nb = _filter_rows(a, b)
    n = nb + na
    if n == 0:
        return float(b[0] ** 2)
    r = np.concatenate([b[1:], -a[1:]])  # m_t = r . s_t + b_0 u_t
    A, B = np.zeros((n, n)), np.zeros(n)
    if nb:
        B[0] = 1.0
        A[1:nb, 0:nb - 1] = np.eye(nb - 1)
    if na:
        A[nb] = r
        B[nb] = b[0]
        A[nb + 1:, nb:n - 1] = np.eye(na - 1)
    P = stationary_covariance(A, B)
    return float(r @ P @ r + b[0] ** 2)


def closed_loop(a: Any, b: Any, step: float, curvature: float, noise_var: float) -> tuple[float, float]:
    """(E x^2, E (m_t/c_t - h x_t)^2) at stationarity of x_{t+1} = x_t - step m_t/c_t with the filter fed
    h x_t + n_t, Var n_t = ``noise_var`` (derived here; c_t at its limit). State (x_t, x_{t-1..t-n_b},
    n_{t-1..t-n_b}, m_{t-1..t-n_a}); ``(inf, inf)`` when the loop is unstable."""
    a, b = _normalised(a, b)
    na, nb = _filter_rows(a, b)
    h, n = float(curvature), 1 + 2 * nb + na
    xs, ns, ms = 1, 1 + nb, 1 + 2 * nb  # offsets of the delayed x's, n's and m's
    r = np.zeros(n)  # m_t = r . z_t + b_0 n_t
    r[0] = b[0] * h
    r[xs:xs + nb] = b[1:] * h
    r[ns:ns + nb] = b[1:]
    r[ms:ms + na] = -a[1:]
    A, B = np.zeros((n, n)), np.zeros(n)
    A[0] = -step * r
    A[0, 0] += 1.0
    B[0] = -step * b[0]
    if nb:
        A[xs, 0] = 1.0
        A[xs + 1:xs + nb, xs:xs + nb - 1] = np.eye(nb - 1)
        B[ns] = 1.0
        A[ns + 1:ns + nb, ns:ns + nb - 1] = np.eye(nb - 1)
    if na:
        A[ms] = r
        B[ms] = b[0]
        A[ms + 1:ms + na, ms:ms + na - 1] = np.eye(na - 1)
    P = stationary_covariance(A, B, noise_var)
    if not np.all(np.isfinite(P)):
        return float("inf"), float("inf")
    e = r.copy()
    e[0] -= h
    return float(P[0, 0]), float(e @ P @ e + b[0] ** 2 * noise_var)
