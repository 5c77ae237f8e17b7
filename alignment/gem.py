"""GEM: entropy-regularised distribution matching for supervised fine-tuning, beside cross entropy, on categorical
(softmax-logit) models.

Paper: Z. Li, C. Chen, T. Xu, Z. Qin, J. Xiao, Z.-Q. Luo, R. Sun, "Preserving Diversity in Supervised Fine-Tuning of
Large Language Models" (first version titled "Entropic Distribution Matching in Supervised Fine-tuning of LLMs"),
arXiv:2408.16673 (ICLR 2025); public code github.com/liziniu/GEM. The paper's statement (abstract): a game between
the model f and an auxiliary distribution q whose solution is reverse-KL minimisation towards the data with an
entropy regulariser, which keeps the fine-tuned model's output diverse.

The loss, restated from the public code's ``gem_loss`` (token level; z = the logits of one context, y = the label,
p = softmax(z), the auxiliary q = softmax(z / beta), both q and the weights w held fixed under differentiation):

    l_GEM(z, y) = - sum_k q_k w_k (log p_y - log p_k),     w_k = 1                         (h = "linear")
                                                           w_k = sigmoid(0.01 (z_k - z_y))  (h = "logsigmoid")

With h = "linear" it is -log p_y + sum_k q_k log p_k, and its logit gradient is q - e_y (the code's Triton
backward kernel states this: "q(y|x) if y != label else q(y|x) - 1"); cross entropy's is p - e_y. So at beta = 1
(q = p) GEM's gradient is cross entropy's and training follows the same path (the code's help: "a value close to
1.0 makes GEM behave more like CE"); beta -> 0 concentrates q on the arg-max token. beta must lie in (0, 1].
The general gradient (:func:`gem_logit_grad`) is sum_k q_k w_k (e_k - e_y).

Symbols -> arguments: z (``logits``, last axis K), y (``labels``, ints), beta (``beta``), h (``h``), the data
distribution p_data over K tokens (``target``: population probabilities, or the empirical frequencies of N samples,
:func:`empirical_weights`).

Derived here (tested): on a tabular softmax model (free logits) the population gradient of GEM (h linear) is
softmax(z / beta) - p_data, so its stationary point has q = p_data, i.e. the model p* ∝ p_data^beta
(:func:`fixed_point`) -- the minimiser of KL(f || p_data) - (1 / beta - 1) H(f), the abstract's "reverse KL with
an entropy regulariser" with weight gamma = 1/beta - 1 (the mapping is derived here from the code's gradient, not
read from the paper). It is not p_data unless beta = 1 or p_data is uniform. Gradient descent on GEM in z is
gradient descent on cross entropy in w = z / beta with step size lr / beta, and the model reads p = softmax(beta w):
on N samples a token never seen keeps mass of order t^-beta after t steps against cross entropy's t^-1 (both reach
0 in the limit). For h = "logsigmoid" the stationary point has no closed form (:func:`fixed_point_root`, a root of
the population gradient by ``scipy.optimize.root``).

Reconstructed: the tabular model, the choice of plain optax optimizers (the paper fine-tunes LLMs with AdamW and a
cosine schedule), and reading the logsigmoid weight's 0.01 scale from the code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import root as np_root
from scipy.special import softmax as np_softmax

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_in_range, check_positive_int, is_traced

H_CHOICES = ("linear", "logsigmoid")
LOGSIGMOID_SCALE = 0.01  # the public code's sigmoid(0.01 * (z_k - z_y)) weight
OPTIMIZERS = ("sgd", "adam")


def check_gem(beta: Any, h: Any = "linear") -> None:
    """beta in (0, 1] (1 is cross entropy's gradient; tracers pass) and h one of :data:`H_CHOICES` (or, inside
    a vmap over arms, a traced boolean: true selects logsigmoid)."""
    check_in_range("beta", beta, 0.0, 1.0, closed="right")
    if isinstance(h, str) or not is_traced(h):
        check_choice("h", h, H_CHOICES)


def _weights(logits: jax.Array, labels: jax.Array, h: Any) -> jax.Array:
    if isinstance(h, str) and h == "linear":
        return jnp.ones_like(logits)
    z_y = jnp.take_along_axis(logits, labels[..., None], axis=-1)
    w = jax.nn.sigmoid(LOGSIGMOID_SCALE * (logits - z_y))
    return w if isinstance(h, str) else jnp.where(h, w, jnp.ones_like(logits))


def cross_entropy_tokens(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-token -log softmax(z)_y, shape ``labels.shape``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def gem_tokens(logits: jax.Array, labels: jax.Array, beta: Any, h: Any = "linear") -> jax.Array:
    """Per-token GEM loss -sum_k sg(q_k w_k) (log p_y - log p_k), q = softmax(z / beta), shape ``labels.shape``."""
    check_gem(beta, h)
    logp = jax.nn.log_softmax(logits, axis=-1)
    q = jax.lax.stop_gradient(jax.nn.softmax(logits / beta, axis=-1))
    w = jax.lax.stop_gradient(_weights(logits, labels, h))
    logp_y = jnp.take_along_axis(logp, labels[..., None], axis=-1)
    return -jnp.sum(q * w * (logp_y - logp), axis=-1)


def _mean(per_token: jax.Array, token_weights: jax.Array | None) -> jax.Array:
    if token_weights is None:
        return jnp.mean(per_token)
    return jnp.sum(token_weights * per_token)


def cross_entropy(logits: jax.Array, labels: jax.Array, token_weights: jax.Array | None = None) -> jax.Array:
    """Mean cross entropy over tokens (or the ``token_weights``-weighted sum)."""
    return _mean(cross_entropy_tokens(logits, labels), token_weights)


def gem_loss(logits: jax.Array, labels: jax.Array, beta: Any, h: Any = "linear",
             token_weights: jax.Array | None = None) -> jax.Array:
    """Mean GEM loss over tokens (or the ``token_weights``-weighted sum); its value is not CE's at beta = 1, its
    gradient is (h = "linear")."""
    return _mean(gem_tokens(logits, labels, beta, h), token_weights)


def gem_logit_grad(logits: jax.Array, label: jax.Array, beta: Any, h: Any = "linear") -> jax.Array:
    """The paper's / code's per-token logit gradient sum_k q_k w_k (e_k - e_y) (= q - e_y for h linear)."""
    check_gem(beta, h)
    q = jax.nn.softmax(logits / beta, axis=-1)
    qw = q * _weights(logits, label, h)
    return qw - jnp.sum(qw, axis=-1, keepdims=True) * jax.nn.one_hot(label, logits.shape[-1], dtype=logits.dtype)


def sft_loss(logits: jax.Array, target: jax.Array, beta: Any, gem: Any, h: Any = "linear") -> jax.Array:
    """sum_y target_y l(z, y) with l GEM (``gem`` true) or cross entropy (false): the population loss for
    ``target = p_data``, the mean over N samples for ``target`` = their frequencies. ``gem``, ``beta`` and ``h``
    may be traced (vmap over arms); the non-selected loss gets a zero cotangent, so the gradient is the selected
    one's."""
    check_gem(beta, h)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.sum(target * logp)
    if isinstance(h, str) and h == "linear":  # sum_y t_y l(z, y) = -(sum q)(sum_y t_y log p_y) + (sum t)(sum q log p)
        q = jax.lax.stop_gradient(jax.nn.softmax(logits / beta, axis=-1))
        g = jnp.sum(q) * ce + jnp.sum(target) * jnp.sum(q * logp)
    else:  # the [label y, token k] table of the weights w_yk (no gathers: every label's row is the same logits)
        q = jax.lax.stop_gradient(jax.nn.softmax(logits / beta, axis=-1))
        w = jax.nn.sigmoid(LOGSIGMOID_SCALE * (logits[None, :] - logits[:, None]))
        w = jax.lax.stop_gradient(w if isinstance(h, str) else jnp.where(h, w, 1.0))
        g = -jnp.sum(target[:, None] * q[None, :] * w * (logp[:, None] - logp[None, :]))
    return jnp.where(gem, g, ce)


def empirical_weights(labels: np.ndarray, K: int) -> np.ndarray:
    """Token frequencies of samples ``labels`` (ints in [0, K)): the mean over the samples as weights."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() >= K:
        raise RatelabError(f"labels must be a non-empty 1-D array of ints in [0, {K}), got {labels!r}")
    return np.bincount(labels, minlength=K) / labels.size


def make_optimizer(name: str, learning_rate: Any) -> optax.GradientTransformation:
    """``optax.sgd`` or ``optax.adam`` with ``learning_rate`` a float > 0 or an optax schedule."""
    check_choice("optimizer", name, OPTIMIZERS)
    if not callable(learning_rate):
        check_in_range("learning_rate", learning_rate, 0.0, np.inf, closed="neither")
    return optax.sgd(learning_rate) if name == "sgd" else optax.adam(learning_rate)


def train(logits0: jax.Array, target: jax.Array, tx: optax.GradientTransformation, steps: int, *, beta: Any = 1.0,
          gem: Any = True, h: Any = "linear", log_every: int = 1) -> tuple[jax.Array, jax.Array]:
    """``steps`` optimizer steps on :func:`sft_loss` from ``logits0`` (pure; ``lax.scan``; vmap it over seeds and
    arms, jit it outside). Returns (final logits [K], model probabilities softmax(z) after every ``log_every``-th
    step [steps // log_every, K])."""
    steps, log_every = check_positive_int("steps", steps), check_positive_int("log_every", log_every)
    if steps % log_every:
        raise RatelabError(f"steps ({steps}) must be a multiple of log_every ({log_every})")
    check_gem(beta, h)
    grad = jax.grad(sft_loss)

    def step(carry, _):
        z, s = carry
        u, s = tx.update(grad(z, target, beta, gem, h), s, z)
        return (optax.apply_updates(z, u), s), None

    def block(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=log_every)
        return carry, jax.nn.softmax(carry[0])

    (z, _), probs = jax.lax.scan(block, (logits0, tx.init(logits0)), None, length=steps // log_every)
    return z, probs


# ------------------------------------------------------------------------------------------ NumPy references


def _check_target(p: Any) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or p.size < 2 or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise RatelabError(f"p_data must be a probability vector over K >= 2 tokens, got {p!r}")
    return p


def fixed_point(p_data: Any, beta: float) -> np.ndarray:
    """GEM's (h linear) population stationary point on a softmax model: p* ∝ p_data^beta (derived here)."""
    p = _check_target(p_data)
    check_gem(beta)
    with np.errstate(divide="ignore"):
        return np_softmax(beta * np.log(p))


def population_grad(z: np.ndarray, p_data: np.ndarray, beta: float, h: str = "linear") -> np.ndarray:
    """E_{y ~ p_data} of the per-token gradient sum_k q_k w_k (e_k - e_y) (NumPy)."""
    q = np_softmax(z / beta)
    K = z.size
    w = np.ones((K, K)) if h == "linear" else 1.0 / (1.0 + np.exp(-LOGSIGMOID_SCALE * (z[None, :] - z[:, None])))
    qw = q[None, :] * w  # [y, k]
    return p_data @ qw - p_data * qw.sum(1)


def fixed_point_root(p_data: Any, beta: float, h: str = "linear", tol: float = 1e-13, start: str = "tempered",
                     residual: float = 1e-10) -> np.ndarray:
    """The population stationary point by ``scipy.optimize.root`` on the gradient (z_0 = 0 fixes the shift
    invariance), from the linear solution beta log p_data (``start="tempered"``) or the uniform model
    (``"uniform"``); the model's probabilities softmax(z*). Accepted when max |gradient| <= ``residual``."""
    p = _check_target(p_data)
    check_gem(beta, h)
    check_choice("start", start, ("tempered", "uniform"))
    if np.any(p <= 0):
        raise RatelabError("fixed_point_root needs p_data > 0 everywhere (else the logits run to -inf)")

    def f(x):
        return population_grad(np.concatenate([[0.0], x]), p, beta, h)[1:]

    z0 = beta * np.log(p) if start == "tempered" else np.zeros(p.size)
    sol = np_root(f, z0[1:] - z0[0], method="hybr", tol=tol)
    worst = float(np.abs(f(sol.x)).max())
    if not worst <= residual:
        raise RatelabError(f"fixed_point_root did not converge (max |gradient| {worst:.3g}): {sol.message}")
    return np_softmax(np.concatenate([[0.0], sol.x]))


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats (0 log 0 = 0)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=axis)
