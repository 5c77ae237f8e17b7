"""GD on one attention layer, Softmax and Gaussian kernels (experiment ``attention-kernels``, the heaviest of the
optim_theory experiments at its full size: 134 s of the ``verify --full`` run) in ratelab against a NumPy loop.

The computation (``optim_theory.attention``, Song et al. 2024, reconstructed): N = 2 sequences of n = 4 tokens,
embedding dimension D, f(W) = sum_i |S(X_i W^Q, X_i W^K) X_i W^V - Y_i|^2 / sum_i |Y_i|^2, plain GD on (W^Q, W^K, W^V)
with the step 0.5 / L_V(init) (L_V = 2 sigma_max(A)^2 / |Y|^2, A = [S_i X_i] stacked), the experiment's data and
N(0, 1/D) inits (``make_data`` / ``embed``, seed 0).

(a) NumPy: the authors' code is not public; a plain NumPy loop of the same algorithm, one init at a time, with the
    gradient written out by hand (backpropagation through the kernel: softmax Jacobian, or the Gaussian's
    d exp(-|q - k|^2 / 2)), float64;
(b) ratelab: ``optim_theory.attention.gradient_descent`` (``jax.value_and_grad`` in one ``lax.scan``), vmapped over
    inits under one ``jit``, float64. Execution and compile time are reported apart.

The hand-written gradient must equal ``jax.grad`` at the first init to 1e-12 (relative; measured about 1e-15). The
two loss curves must agree to 1e-8 (relative) over the first 10 steps of every init (exit status 1 otherwise; a
wrong gradient or step shows at 1e-2 after one step). Beyond that they need not: the step 0.5 / L_V bounds the
curvature in W^V only, the loss spikes in the (W^Q, W^K) directions, and rounding differences of 1e-16 grow past
1e-9 within 25 to 300 steps (measured). How often the two implementations agree on success (final loss < 1e-6) is
printed. FLOPs per step are counted from the algorithm: the forward matmuls N (6 n D^2 + 4 n^2 D) times 3 (forward
plus a backward pass of twice its cost). Run from the repository root::

    python benchmarks/attention_kernels.py            # D = 16, 6000 steps (the full config), R = 64 inits
    python benchmarks/attention_kernels.py --quick    # 1000 steps (the quick config), R = 16
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from _common import finish, matmul_peak, parse_args, ratios

from optim_theory import attention as att

N_SEQ, N_TOK, STEP_FACTOR, EPS = 2, 4, 0.5, 1e-6
EXACT, EXACT_TOL = 10, 1e-8  # the two loss curves must agree to EXACT_TOL over the first EXACT steps (docstring)


def _kernel(q: np.ndarray, k: np.ndarray, kernel: str) -> np.ndarray:
    if kernel == "softmax":
        a = q @ k.T
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    d2 = (q**2).sum(-1)[:, None] - 2.0 * q @ k.T + (k**2).sum(-1)[None, :]
    return np.exp(-0.5 * d2)


def numpy_grad(w: tuple[np.ndarray, ...], X: np.ndarray, Y: np.ndarray, kernel: str, z: float
               ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """f and its gradients in (W^Q, W^K, W^V), by hand: backpropagation through T_i = S(X_i W^Q, X_i W^K) X_i W^V."""
    wq, wk, wv = w
    gq, gk, gv = np.zeros_like(wq), np.zeros_like(wk), np.zeros_like(wv)
    f = 0.0
    for x, y in zip(X, Y, strict=True):
        q, k = x @ wq, x @ wk
        s = _kernel(q, k, kernel)
        sx = s @ x
        r = sx @ wv - y
        f += float((r**2).sum()) / z
        dt = 2.0 * r / z
        gv += sx.T @ dt
        ds = dt @ (x @ wv).T
        if kernel == "softmax":
            da = s * (ds - (ds * s).sum(axis=-1, keepdims=True))
            dq, dk = da @ k, da.T @ q
        else:
            de = ds * s  # d f / d(-|q_a - k_b|^2 / 2)
            dq = de @ k - de.sum(axis=1)[:, None] * q
            dk = de.T @ q - de.sum(axis=0)[:, None] * k
        gq += x.T @ dq
        gk += x.T @ dk
    return f, gq, gk, gv


def numpy_gd(w: tuple[np.ndarray, ...], X: np.ndarray, Y: np.ndarray, kernel: str, steps: int) -> np.ndarray:
    """The loss before each of ``steps`` GD steps from ``w = (W^Q, W^K, W^V)`` and after the last ``[steps + 1]``,
    step 0.5 / L_V(init)."""
    w = tuple(a.copy() for a in w)
    z = float((Y**2).sum())
    A = np.concatenate([_kernel(x @ w[0], x @ w[1], kernel) @ x for x in X])
    lr = STEP_FACTOR / (2.0 * np.linalg.norm(A, 2) ** 2 / z)
    curve = np.empty(steps + 1)
    for t in range(steps):
        curve[t], *g = numpy_grad(w, X, Y, kernel, z)
        w = tuple(a - lr * b for a, b in zip(w, g, strict=True))
    curve[steps] = numpy_grad(w, X, Y, kernel, z)[0]
    return curve


def grad_gap(W: att.Params, X: np.ndarray, Y: np.ndarray, kernel: str) -> float:
    """Largest relative difference between :func:`numpy_grad` and ``jax.grad`` of ``optim_theory.attention.loss``
    at the first init."""
    w = tuple(a[0] for a in W)
    with jax.enable_x64(True):
        g = jax.grad(att.loss)(att.Params(*(jnp.asarray(a) for a in w)), jnp.asarray(X), jnp.asarray(Y), kernel)
    mine = numpy_grad(w, X, Y, kernel, float((Y**2).sum()))[1:]
    return max(float(np.abs(np.asarray(a) - b).max() / np.abs(b).max()) for a, b in zip(g, mine, strict=True))


def ratelab_gd(W: att.Params, X: np.ndarray, Y: np.ndarray, M: np.ndarray, kernel: str, steps: int
               ) -> tuple[np.ndarray, float, float]:
    """Loss curves ``[inits, steps + 1]`` of ``optim_theory.attention.gradient_descent``, vmapped over inits;
    compile and run seconds."""
    with jax.enable_x64(True):
        def study(w, x, y, m):
            def run(p):
                lr = STEP_FACTOR / att.value_curvature(p, x, y, kernel)
                return att.gradient_descent(p, x, y, m, kernel=kernel, steps=steps, learning_rate=lr)[1]
            return jax.vmap(run)(w)

        args = (att.Params(*(jnp.asarray(a) for a in W)), jnp.asarray(X), jnp.asarray(Y), jnp.asarray(M))
        t0 = time.perf_counter()
        exe = jax.jit(study).lower(*args).compile()
        t1 = time.perf_counter()
        out = np.asarray(jax.block_until_ready(exe(*args)))
        t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def main() -> int:
    args = parse_args(__doc__, "1000 steps (the quick config) and R = 16", "64 (16 with --quick)",
                      size=("--dim", "the embedding dimension D (default 16 = 2 N n, the experiment's largest)"))
    steps, reps, d = (1000 if args.quick else 6000), args.reps or (16 if args.quick else 64), args.dim or 16
    X0, Y0, W0 = att.make_data(0, N_SEQ, N_TOK, d, reps)
    X, Y, W, M = att.embed(X0, Y0, W0, d, d)
    flops = 3.0 * N_SEQ * (6 * N_TOK * d**2 + 4 * N_TOK**2 * d)
    peak = matmul_peak("float64")
    print(f"one attention layer, N = {N_SEQ} sequences of n = {N_TOK} tokens, D = {d}, {steps} GD steps, "
          f"R = {reps} inits, float64")
    results, ok, worst = {}, True, 0.0
    for kernel in att.KERNELS:
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            c_np = np.stack([numpy_gd(tuple(w[i] for w in W), X, Y, kernel, steps) for i in range(reps)])
        np_rep = (time.perf_counter() - t0) / reps
        c_one, c1, r1 = ratelab_gd(att.Params(*(w[:1] for w in W)), X, Y, M, kernel, steps)
        c_rl, cm, rm = ratelab_gd(W, X, Y, M, kernel, steps)
        with np.errstate(over="ignore", invalid="ignore"):
            head = np.abs(c_np[:, :EXACT + 1] - c_rl[:, :EXACT + 1]) / np.abs(c_rl[:, :EXACT + 1])
        worst = max(worst, float(np.nanmax(head)))
        gap = grad_gap(W, X, Y, kernel)
        same_head = bool(np.nanmax(head) <= EXACT_TOL) and not np.isnan(head).any() and gap <= 1e-12
        fin_np, fin_rl = c_np[:, -1], c_rl[:, -1]
        success = np.sum((fin_np < EPS) == (fin_rl < EPS))
        ok &= same_head and bool(np.abs(c_one[0] - c_rl[0])[: EXACT + 1].max() <= 1e-12)
        print(f"\n{kernel}: gradient by hand vs jax.grad: {gap:.1e}; loss curves NumPy vs ratelab, first {EXACT} "
              f"steps: largest relative difference {np.nanmax(head):.1e}; final loss < {EPS:g} in both or neither: "
              f"{success} of {reps} inits; finite in both: {int(np.sum(np.isfinite(fin_np) & np.isfinite(fin_rl)))}")
        results[kernel] = ratios(f"attention GD, {kernel} kernel", np_rep, {"compile_s": c1, "run_s": r1},
                                 {"compile_s": cm, "run_s": rm}, reps, steps, flops, peak)
        results[kernel]["same_answer"] = same_head
        results[kernel]["same_text"] = (f"grad vs jax.grad {gap:.1e}, curves over {EXACT} steps {np.nanmax(head):.1e}, "
                                        f"success agrees on {success}/{reps}")
    return finish(args, "attention_kernels", results, ok,
                  f"NumPy and ratelab loss curves differ over the first {EXACT} steps (largest relative "
                  f"difference {worst:.2e})")


if __name__ == "__main__":
    sys.exit(main())
