"""One attention layer trained by gradient descent: the Softmax kernel against the Gaussian kernel.

Song, Han, Zhang, Ding & Hong, "Unraveling the Gradient Descent Dynamics of Transformers", NeurIPS 2024,
arXiv:2411.07538. Only the abstract and secondary summaries of the paper were readable here, so the model is
*reconstructed* from them: a single head with query, key and value matrices, a regression loss, and the two
kernels the paper compares (paper's symbols -> arguments):

    X_i in R^{n x D}           ``X[i]``: sequence i, n tokens of embedding dimension D        (i = 1..N)
    Q_i = X_i W^Q, K_i = X_i W^K                ``params.wq``, ``params.wk`` (D x D)
    Softmax kernel:  S_i[a, b] = exp(q_a . k_b) / sum_b' exp(q_a . k_b')           :func:`softmax_kernel`
    Gaussian kernel: S_i[a, b] = exp(-|q_a - k_b|^2 / 2)  (unnormalised)             :func:`gaussian_kernel`
    T_i = S_i X_i W^V                                    ``params.wv`` (D x D), :func:`attention`
    f(W) = sum_i |T_i - Y_i|_F^2 / sum_i |Y_i|_F^2       ``Y[i]``; normalised so f(0) = 1, :func:`loss`

The paper's condition for global convergence is a large embedding dimension: with D >= N n the stacked matrix
[S_1 X_1; ...; S_N X_N] (N n x D) has full row rank for generic data, so W^V alone interpolates any Y and the
global optimum is f = 0 (:func:`value_only_optimum` is the closed form of min over W^V for fixed W^Q, W^K).

Derived here (dimension counts, not in the paper): the softmax output depends on (W^Q W^K^T, W^V), at most 2 D^2
numbers; the Gaussian one on (W^Q W^Q^T, W^Q W^K^T, W^K W^K^T, W^V) modulo the joint rotation W -> W R, at most
2.5 D^2 + D/2. A random Y (N n D numbers) is fitted with probability 0 when the count is below N n D.

Dimensions are vmapped by zero padding to ``d_max``: :func:`embed` puts the D-dimensional problem in the top-left
corner, and GD on the masked parameters is exactly GD on the D-dimensional problem (tested).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_positive_int

KERNELS = ("softmax", "gaussian")


class Params(NamedTuple):
    wq: jax.Array
    wk: jax.Array
    wv: jax.Array


def softmax_kernel(q: jax.Array, k: jax.Array) -> jax.Array:
    """``[n, n]`` row-stochastic attention softmax_b(q_a . k_b)."""
    return jax.nn.softmax(q @ k.T, axis=-1)


def gaussian_kernel(q: jax.Array, k: jax.Array) -> jax.Array:
    """``[n, n]`` unnormalised Gaussian attention exp(-|q_a - k_b|^2 / 2)."""
    d2 = jnp.sum(q**2, -1)[:, None] - 2.0 * q @ k.T + jnp.sum(k**2, -1)[None, :]
    return jnp.exp(-0.5 * d2)


def kernel_fn(kernel: str):
    check_choice("kernel", kernel, KERNELS)
    return softmax_kernel if kernel == "softmax" else gaussian_kernel


def attention(params: Params, x: jax.Array, kernel: str) -> jax.Array:
    """``[n, D]`` the layer's output S(X W^Q, X W^K) X W^V for one sequence ``x`` ``[n, D]``."""
    s = kernel_fn(kernel)(x @ params.wq, x @ params.wk)
    return s @ x @ params.wv


def loss(params: Params, X: jax.Array, Y: jax.Array, kernel: str) -> jax.Array:
    """sum_i |T_i - Y_i|^2 / sum_i |Y_i|^2 over the N sequences ``X`` ``[N, n, D]``, ``Y`` ``[N, n, D]``."""
    out = jax.vmap(lambda x: attention(params, x, kernel))(X)
    return jnp.sum((out - Y) ** 2) / jnp.sum(Y**2)


def stacked_inputs(params: Params, X: jax.Array, kernel: str) -> jax.Array:
    """``[N n, D]`` the matrix A = [S_1 X_1; ...; S_N X_N] that W^V multiplies (jitted; ``kernel`` static)."""
    return _stacked(params, X, kernel)


@partial(jax.jit, static_argnums=2)
def _stacked(params: Params, X: jax.Array, kernel: str) -> jax.Array:
    f = kernel_fn(kernel)
    return jnp.concatenate(list(jax.vmap(lambda x: f(x @ params.wq, x @ params.wk) @ x)(X)))


def value_only_optimum(params: Params, X: np.ndarray, Y: np.ndarray, kernel: str) -> float:
    """min over W^V of :func:`loss` with W^Q, W^K fixed: the least-squares residual |(I - P) Y|^2 / |Y|^2, P the
    projection on the column space of A = :func:`stacked_inputs` (0 when A has full row rank, D >= N n)."""
    A = np.asarray(stacked_inputs(params, jnp.asarray(X), kernel))
    B = np.concatenate(list(np.asarray(Y)))
    W, *_ = np.linalg.lstsq(A, B, rcond=None)
    return float(np.sum((A @ W - B) ** 2) / np.sum(B**2))


def value_curvature(params: Params, X: jax.Array, Y: jax.Array, kernel: str) -> jax.Array:
    """The Lipschitz constant of grad_{W^V} f at ``params``: 2 sigma_max(A)^2 / |Y|^2, A = [S_i X_i] stacked (f is
    quadratic in W^V, so GD on W^V alone with step below 1 / this converges)."""
    f = kernel_fn(kernel)
    A = jnp.concatenate(list(jax.vmap(lambda x: f(x @ params.wq, x @ params.wk) @ x)(X)))
    return 2.0 * jnp.linalg.norm(A, 2) ** 2 / jnp.sum(Y**2)


def embed(X: np.ndarray, Y: np.ndarray, W: Params, d: int, d_max: int) -> tuple[np.ndarray, np.ndarray, Params,
                                                                                  np.ndarray]:
    """The D = ``d`` problem taken from the leading columns of width-``d_max`` data, zero-padded to ``d_max``:
    (X ``[N, n, d_max]`` scaled 1/sqrt(d), Y, init W scaled 1/sqrt(d), mask ``[d_max, d_max]``)."""
    if not 1 <= d <= d_max:
        raise RatelabError(f"d must be in [1, {d_max}], got {d}")
    cols = (np.arange(d_max) < d).astype(float)
    mask = np.outer(cols, cols)
    return (X * cols / np.sqrt(d), Y * cols, Params(*(np.asarray(w) * mask / np.sqrt(d) for w in W)), mask)


def gradient_descent(params: Params, X: jax.Array, Y: jax.Array, mask: jax.Array, *, kernel: str, steps: int,
                     learning_rate: Any, train: tuple[str, ...] = ("wq", "wk", "wv")) -> tuple[Params, jax.Array]:
    """``steps`` of GD (``optax.sgd(learning_rate)``: a float or an optax schedule) on the parameters in ``train``,
    gradients multiplied by ``mask``; returns the final parameters and the loss before each step and after the
    last (``[steps + 1]``)."""
    check_positive_int("steps", steps)
    bad = set(train) - set(Params._fields)
    if bad or not train:
        raise RatelabError(f"train must name some of {Params._fields}, got {train}")
    opt = optax.sgd(learning_rate)
    keep = Params(*(jnp.asarray(mask) if name in train else jnp.zeros_like(mask) for name in Params._fields))
    value_and_grad = jax.value_and_grad(loss)

    def body(carry, _):
        p, state = carry
        f, g = value_and_grad(p, X, Y, kernel)
        g = jax.tree.map(jnp.multiply, g, keep)
        updates, state = opt.update(g, state, p)
        return (optax.apply_updates(p, updates), state), f

    (p, _), fs = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    return p, jnp.append(fs, loss(p, X, Y, kernel))


def make_data(seed: int, n_seq: int, n_tok: int, d_max: int, inits: int) -> tuple[np.ndarray, np.ndarray, Params]:
    """Data X, Y ~ N(0, 1) ``[N, n, d_max]`` and ``inits`` initialisations ~ N(0, 1) ``[inits, d_max, d_max]``
    each (NumPy, so the problem does not depend on jax's x64 mode)."""
    for name, v in (("n_seq", n_seq), ("n_tok", n_tok), ("d_max", d_max), ("inits", inits)):
        check_positive_int(name, v)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_seq, n_tok, d_max))
    Y = rng.standard_normal((n_seq, n_tok, d_max))
    W = Params(*(rng.standard_normal((inits, d_max, d_max)) for _ in range(3)))
    return X, Y, W


def stack_dims(X: np.ndarray, Y: np.ndarray, W: Params, dims: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """The problems of every D in ``dims`` embedded in width ``d_max`` and stacked: (X ``[dims, N, n, d_max]``, Y,
    Params of ``[dims, inits, d_max, d_max]``, masks ``[dims, d_max, d_max]``)."""
    d_max = X.shape[-1]
    parts = [embed(X, Y, W, d, d_max) for d in dims]
    return (np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]),
            Params(*(np.stack([p[2][j] for p in parts]) for j in range(3))), np.stack([p[3] for p in parts]))


def kernels_study(Xs: jax.Array, Ys: jax.Array, Ws: Params, Ms: jax.Array, *, steps: int,
                  learning_rate: Any) -> jax.Array:
    """Final loss ``[kernel, dim, init]`` of GD on (W^Q, W^K, W^V) from each init at each D (the arrays of
    :func:`stack_dims`; pure, to be jitted once: vmapped over D and the inits, both kernels in one program)."""

    def one(kernel):
        def per_dim(x, y, w, m):
            return jax.vmap(lambda p: gradient_descent(p, x, y, m, kernel=kernel, steps=steps,
                                                       learning_rate=learning_rate)[1][-1])(w)
        return jax.vmap(per_dim)(Xs, Ys, Ws, Ms)

    return jnp.stack([one(k) for k in KERNELS])


def query_only_instance(seed: int, d: int, n_tok: int, inits: int) -> dict[str, np.ndarray]:
    """The registered instance for the Softmax local-solution check: one sequence X ``[1, n, d]`` ~ N(0, 1/d), W^K =
    I, W^V ~ N(0, 1/d) fixed, a teacher W^Q* ~ N(0, 4/d) whose output is the target Y (so the global optimum is 0,
    at W^Q*), and ``inits`` starting points W^Q ~ N(0, 4/d) (NumPy)."""
    for name, v in (("d", d), ("n_tok", n_tok), ("inits", inits)):
        check_positive_int(name, v)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((1, n_tok, d)) / np.sqrt(d)
    wv = rng.standard_normal((d, d)) / np.sqrt(d)
    teacher = rng.standard_normal((d, d)) * 2 / np.sqrt(d)
    starts = rng.standard_normal((inits, d, d)) * 2 / np.sqrt(d)
    Y = np.asarray(jax.jit(jax.vmap(lambda x: attention(Params(teacher, np.eye(d), wv), x, "softmax")))(X))
    return {"X": X, "Y": Y, "wv": wv, "teacher": teacher, "starts": starts}


def query_only_loss(wq: jax.Array, X: jax.Array, Y: jax.Array, wv: jax.Array, kernel: str = "softmax") -> jax.Array:
    """:func:`loss` as a function of W^Q alone, with W^K = I and W^V = ``wv`` fixed."""
    return loss(Params(wq, jnp.eye(wq.shape[0], dtype=wq.dtype), wv), X, Y, kernel)


def newton_polish(wq: jax.Array, X: jax.Array, Y: jax.Array, wv: jax.Array, iters: int) -> jax.Array:
    """``iters`` pure Newton steps on :func:`query_only_loss` (quadratic convergence to a nondegenerate stationary
    point nearby, whatever its index)."""
    d = wq.shape[0]
    g = jax.grad(query_only_loss)
    h = jax.hessian(query_only_loss)

    def body(w, _):
        step = jnp.linalg.solve(h(w, X, Y, wv).reshape(d * d, d * d), g(w, X, Y, wv).reshape(-1))
        return w - step.reshape(d, d), None

    return jax.lax.scan(body, wq, None, length=iters)[0]
