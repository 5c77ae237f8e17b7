"""The toy problems of the filtered DP optimizers: a diagonal quadratic with a spread of curvatures and streaming
per-sample noise, and l2-regularised logistic regression on a synthetic data set.

* :class:`NoisyQuadratic`: f(x; a) = (x - a)^T H (x - a) / 2 with H = diag(h) and a ~ N(0, tau^2 I) drawn afresh for
  each of the B samples of a step, so grad f(x) = H x, the per-sample gradients are H (x - a_j), and the privatized
  mean (clip inactive) has per-coordinate noise variance h_i^2 tau^2 / B + sigma^2 C^2 / B^2 exactly
  (:meth:`NoisyQuadratic.noise_var`).
* :class:`Logistic`: (1/n) sum_i log(1 + exp(-y_i <a_i, w>)) + lam |w|^2 / 2 with labels y in {-1, 1} drawn from the
  logistic model of a planted w*, features with a spread of scales (an ill-conditioned Hessian), the
  regulariser inside each per-sample loss (so the clip bounds the whole per-sample gradient); the exact minimiser by
  Newton's method in NumPy/SciPy (:func:`logistic_solution`), outside the compiled runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg, special

from ratelab.errors import RatelabError
from ratelab.validate import check_nonnegative, check_positive, check_positive_int


class NoisyQuadratic(NamedTuple):
    h: jax.Array  # [d] curvatures
    tau: Any  # per-sample spread
    batch: int  # B (a static size)

    def grad(self, x: jax.Array) -> jax.Array:
        return self.h * x

    def per_sample_grads(self, x: jax.Array, a: jax.Array) -> jax.Array:
        """``[B, d]``: H (x - a_j) for the step's samples ``a`` ``[B, d]``."""
        return self.h * (x - a)

    def sample(self, key: jax.Array) -> jax.Array:
        """The step's B samples a_j ~ N(0, tau^2 I), drawn in float32 and cast (the same draws with x64 on or off)."""
        a = jax.random.normal(key, (self.batch, self.h.shape[0]), jnp.float32)
        return self.tau * a.astype(self.h.dtype)

    def noise_var(self, clip_norm: Any, noise_multiplier: Any) -> jax.Array:
        """``[d]``: variance of the privatized mean's error per coordinate when the clip is inactive."""
        return self.h**2 * self.tau**2 / self.batch + (noise_multiplier * clip_norm / self.batch) ** 2


def make_quadratic(step_curvatures: Any, *, step: float, replicates: int = 1, tau: float = 1.0,
                   batch: int = 4) -> NoisyQuadratic:
    """Curvatures h = ``step_curvatures`` / ``step``, each repeated ``replicates`` times (coordinate i has
    eta h = step_curvatures[i // replicates])."""
    eh = np.asarray(step_curvatures, dtype=float)
    if eh.ndim != 1 or eh.size == 0 or not np.all((eh > 0) & (eh < 2)):
        raise RatelabError(f"step_curvatures must be a non-empty 1-D array inside (0, 2) (SGD's stable range), got "
                           f"{eh.tolist()}")
    check_positive("step", step)
    check_positive_int("replicates", replicates)
    check_nonnegative("tau", tau)
    check_positive_int("batch", batch)
    return NoisyQuadratic(jnp.asarray(np.repeat(eh / step, replicates)), tau, batch)


class Logistic(NamedTuple):
    X: Any  # [n, d] features
    y: Any  # [n] labels in {-1, 1}
    lam: Any

    def per_sample_loss(self, w: jax.Array, a: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.logaddexp(0.0, -y * (a @ w)) + 0.5 * self.lam * w @ w

    def per_sample_grads(self, w: jax.Array) -> jax.Array:
        """``[n, d]``: -y_i sigmoid(-y_i <a_i, w>) a_i + lam w, every sample's gradient at w (the closed form of
        ``jax.grad(per_sample_loss)``, which compiles faster inside the scans; tests check they agree)."""
        return (-self.y * jax.nn.sigmoid(-self.y * (self.X @ w)))[:, None] * self.X + self.lam * w

    def loss(self, w: jax.Array) -> jax.Array:
        return jnp.mean(jnp.logaddexp(0.0, -self.y * (self.X @ w))) + 0.5 * self.lam * w @ w


def logistic_solution(problem: Logistic, iterations: int = 30) -> tuple[np.ndarray, float, float]:
    """(w*, L(w*), L) for a concrete instance, in float64 NumPy/SciPy: Newton's method from 0 (the loss is
    lam-strongly convex; 30 steps reach machine precision) and L = lambda_max(X^T X) / (4 n) + lam, the smoothness
    bound that sets the step 1/L."""
    X, y, lam = (np.asarray(v, dtype=float) for v in problem)
    n, d = X.shape
    w = np.zeros(d)
    for _ in range(iterations):
        z = X @ w
        g = X.T @ (-y * special.expit(-y * z)) / n + lam * w
        p = special.expit(z)
        H = (X * (p * (1 - p))[:, None]).T @ X / n + lam * np.eye(d)
        w = w - linalg.solve(H, g, assume_a="pos")
    best = float(np.mean(np.logaddexp(0.0, -y * (X @ w))) + 0.5 * lam * w @ w)
    return w, best, float(linalg.eigvalsh(X.T @ X)[-1] / (4 * n) + lam)


def logistic(X: Any, y: Any, *, lam: float) -> Logistic:
    """:class:`Logistic` from the user's own data: features X ``[n, d]`` (finite), labels y ``[n]`` in {-1, +1},
    ridge weight lam > 0 (the loss is then lam-strongly convex, so w* is unique). Kept as float64 NumPy arrays (as
    :func:`make_logistic`). Every check runs before any computation."""
    X_ = np.asarray(X, dtype=float)
    if X_.ndim != 2 or X_.size == 0:
        raise RatelabError(f"X must be a non-empty [n, d] matrix, got shape {X_.shape}")
    if not np.all(np.isfinite(X_)):
        raise RatelabError(f"X must be finite, got {int(np.sum(~np.isfinite(X_)))} non-finite entries")
    y_ = np.asarray(y, dtype=float)
    if y_.shape != (X_.shape[0],):
        raise RatelabError(f"y must have shape ({X_.shape[0]},) (one label per row of X), got {y_.shape}")
    bad = ~((y_ == 1.0) | (y_ == -1.0))
    if np.any(bad):
        raise RatelabError(f"y must hold labels -1 and +1 only, got {y_[bad][:3].tolist()}")
    check_positive("lam", lam)
    return Logistic(X_, y_, float(lam))


def make_logistic(seed: int, *, n: int, d: int, spread: float = 10.0, lam: float = 1e-3,
                  signal: float = 2.0) -> Logistic:
    """n samples in d dimensions (NumPy, float64, from ``seed``): feature j ~ N(0, s_j^2) with s geometric from 1
    to 1/``spread`` and rescaled so that E |a|^2 = 1; w* a uniform direction scaled to |w*| = ``signal`` / rms(s)
    (margins of spread about ``signal``); y = +1 with probability sigmoid(<a, w*>)."""
    check_positive_int("n", n)
    check_positive_int("d", d)
    check_positive("spread", spread)
    check_positive("lam", lam)
    check_positive("signal", signal)
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 1.0 / spread, d)
    scales = scales / np.sqrt(np.sum(scales**2))
    X = rng.standard_normal((n, d)) * scales
    w_star = rng.standard_normal(d)
    w_star = w_star / np.linalg.norm(w_star) * signal / np.sqrt(np.mean(scales**2))
    y = np.where(rng.random(n) < special.expit(X @ w_star), 1.0, -1.0)
    return Logistic(X, y, float(lam))
