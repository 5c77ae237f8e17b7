"""V-PBGD data hyper-cleaning at the paper's size: the authors' loop (PyTorch, ported to NumPy) against ratelab.

Instance (the authors' ``V-PBGD/data-hyper-cleaning/data_hyper_clean.py``, linear model): 5000 training, 5000
validation and 10000 test samples of 784 features, 10 classes, half the training labels corrupted; a linear model
784 -> 10; x in R^5000 the per-sample weight logits (sigmoid(x_i) weights sample i); T = 1 inner step of size 0.01
on omega, steps 0.1 for x and y, gamma ramping linearly from 0 to 0.2 over the first 3/4 of the run, float32. MNIST
cannot be downloaded here, so the data are synthetic with MNIST's shapes: a 10-class Gaussian mixture in 784
dimensions (``bilevel.hypercleaning.make_hypercleaning``, class means 0.05 N(0, I) apart). The authors run K = 40000
outer steps; the cost per step does not depend on K, so the benchmark runs ``--steps`` (default 300) of them.

(a) The authors' loop in NumPy (written here from reading it; gradients in closed form where they call autograd):
    per step one inner SGD step on omega (a copy of the network) for the sigmoid(x)-weighted training loss, then
    the penalised loss f(y) + gamma (g(x, y) - g(x, omega)) (scaled by min(1, 1/gamma)) and one SGD step on x and
    on y; every 10 steps the test accuracy and the F1 score of the detected clean samples.
(b) ratelab: ``bilevel.pbgd.v_pbgd`` with the same schedules (``linear_ramp``, ``penalty_scaled``) on the same
    data, started from the same parameters, metrics logged every 10 steps (``log_every = 10``).

Same answer: after the run, the NumPy loop's and ratelab's x and W agree to 1e-3 (relative, float32) and their
test accuracies to 0.5 %; exit status 1 otherwise. (The authors' corruption draws a label in 0..9 that may equal
the clean one, ``random.randint(0, 9)``; here a corrupted label is always another class.)

FLOPs per step (the algorithm's): three products of the 5000 x 784 training matrix with a 784 x 10 matrix forward
(omega's inner step, y, and omega again for the value v) and two backward (omega, y), one forward and one backward
on the validation set: 2 * 10 * 784 * (5 * 5000 + 2 * 5000); the test evaluation every 10 steps adds 2 * 10 * 784 *
10000 / 10.

Run from the repository root::

    python benchmarks/pbgd_hyperclean.py               # 300 steps, R = 2
    python benchmarks/pbgd_hyperclean.py --quick       # 50 steps, R = 2
"""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
from _common import finish, matmul_peak, parse_args, ratios

import ratelab as rl
from bilevel.hypercleaning import make_hypercleaning
from bilevel.pbgd import linear_ramp, penalty_scaled, v_pbgd

N_TR, N_VAL, N_TEST, FEATURES, CLASSES = 5000, 5000, 10000, 784, 10
LRX, LRY, LR_INNER, GAMMA_MAX = 0.1, 0.1, 0.01, 0.2
SEPARATION = 0.05  # class means 0.05 N(0, I_784) apart: about 2 noise standard deviations, not separable at once


def softmax_ce(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cross-entropy and the softmax probabilities."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(labels.size), labels]), p


def authors_loop(data: dict, W: np.ndarray, b: np.ndarray, steps: int, ramp: int) -> dict:
    """The authors' V-PBGD loop for the linear model (float32 NumPy); sizes from the data."""
    Xtr, ytr, Xval, yval, Xte, yte, clean = (data[k] for k in ("Xtr", "ytr", "Xval", "yval", "Xte", "yte", "clean"))
    n_tr, n_val, classes = Xtr.shape[0], Xval.shape[0], W.shape[1]
    oh_tr = np.eye(classes, dtype=np.float32)[ytr]
    oh_val = np.eye(classes, dtype=np.float32)[yval]
    x = np.zeros(n_tr, np.float32)
    Wi, bi = W.copy(), b.copy()
    gam, step_gam = 0.0, GAMMA_MAX / ramp
    log = []
    for k in range(steps):
        sigx = 1.0 / (1.0 + np.exp(-x))
        # inner step on omega: mean(sigmoid(x) * CE(omega(tr)))
        _, p = softmax_ce(Xtr @ Wi + bi, ytr)
        d = sigx[:, None] * (p - oh_tr) / n_tr
        Wi, bi = Wi - LR_INNER * (Xtr.T @ d), bi - LR_INNER * d.sum(axis=0)
        # penalised loss at (x, y): fy + gam * (g(x, y) - g(x, omega))
        ce_val, p_val = softmax_ce(Xval @ W + b, yval)
        ce_tr, p_tr = softmax_ce(Xtr @ W + b, ytr)
        ce_in, _ = softmax_ce(Xtr @ Wi + bi, ytr)
        lr_decay = min(1 / (gam + 1e-8), 1)
        d_val = (p_val - oh_val) / n_val
        d_tr = gam * sigx[:, None] * (p_tr - oh_tr) / n_tr
        gW = lr_decay * (Xval.T @ d_val + Xtr.T @ d_tr)
        gb = lr_decay * (d_val.sum(axis=0) + d_tr.sum(axis=0))
        gx = lr_decay * gam * sigx * (1 - sigx) * (ce_tr - ce_in) / n_tr
        x, W, b = x - LRX * gx, W - LRY * gW, b - LRY * gb
        gam = min(GAMMA_MAX, gam + step_gam)
        if k % 10 == 0:
            acc = float(np.mean((Xte @ W + b).argmax(axis=1) == yte))
            flagged_clean = x >= 0
            prec = (flagged_clean * clean).mean() / (flagged_clean.sum() / n_tr + 1e-8)
            rec = (flagged_clean * clean).mean() / clean.mean()
            log.append((k, acc, 2 * prec * rec / (prec + rec + 1e-8)))
    return {"x": x, "W": W, "b": b, "acc": float(np.mean((Xte @ W + b).argmax(axis=1) == yte)), "log": log}


def main() -> int:
    args = parse_args(__doc__, "50 steps", "2", size=("--steps", "outer steps (default 300, quick 50)"))
    steps = args.steps or (50 if args.quick else 300)
    reps = args.reps or 2
    ramp = max(1, 3 * steps // 4)
    print(f"V-PBGD hyper-cleaning, linear model: {N_TR} / {N_VAL} / {N_TEST} samples, {FEATURES} features, "
          f"{CLASSES} classes, {steps} steps, R = {reps} (synthetic data with MNIST's shapes)")
    peak = matmul_peak("float32")
    problem = make_hypercleaning(jax.random.key(0), n_train=N_TR, n_val=N_VAL, n_test=N_TEST, features=FEATURES,
                                 classes=CLASSES, corruption=0.5, separation=SEPARATION, dtype=jnp.float32)
    data = {"Xtr": np.asarray(problem.X_tr), "ytr": np.asarray(problem.b_tr), "Xval": np.asarray(problem.X_val),
            "yval": np.asarray(problem.b_val), "Xte": np.asarray(problem.X_test), "yte": np.asarray(problem.b_test),
            "clean": ~np.asarray(problem.corrupted)}
    y0 = problem.init_params(jax.random.key(1))
    gamma = linear_ramp(GAMMA_MAX, ramp)
    base = v_pbgd(x_optimizer=penalty_scaled(LRX, gamma), y_optimizer=penalty_scaled(LRY, gamma), gamma=gamma,
                  inner_steps=1, inner_lr=LR_INNER)

    def init(prob, key):  # the same initial model for both; ratelab's seeds differ by their model initialisation
        state = base.init(prob, key)
        return state._replace(y=y0, z=y0) if same_start else state

    solver = base._replace(init=init)
    same_start = True
    one = rl.run(solver, problem, 0, steps=steps, seeds=1, log_every=10)
    one_b = rl.run(solver, problem, 1, steps=steps, seeds=1, log_every=10)
    t0 = time.perf_counter()
    ref = authors_loop(data, np.asarray(y0["W"]), np.asarray(y0["b"]), steps, ramp)
    t_np = time.perf_counter() - t0
    same_start = False
    solver_r = base._replace(init=lambda p, k: base.init(p, k))
    many = rl.run(solver_r, problem, 0, steps=steps, seeds=reps, log_every=10)
    x_rl = np.asarray(one.final_state.x)[0]
    W_rl = np.asarray(one.final_state.y["W"])[0]
    dx = float(np.abs(x_rl - ref["x"]).max() / max(np.abs(ref["x"]).max(), 1e-12))
    dW = float(np.abs(W_rl - ref["W"]).max() / np.abs(ref["W"]).max())
    acc_rl = float(one["test_acc"][0, -1])
    print(f"final test accuracy: NumPy {ref['acc']:.4f}, ratelab {acc_rl:.4f}; F1 (NumPy, last log) "
          f"{ref['log'][-1][2]:.4f}, ratelab {float(one['f1_clean'][0, -1]):.4f}; max relative difference x {dx:.1e}, "
          f"W {dW:.1e}")
    ok = dx <= 1e-3 and dW <= 1e-3 and abs(acc_rl - ref["acc"]) <= 0.005
    flops = 2.0 * CLASSES * FEATURES * (5 * N_TR + 2 * N_VAL) + 2.0 * CLASSES * FEATURES * N_TEST / 10
    rl_one = {"compile_s": one.timings["compile_s"], "run_s": min(one.timings["run_s"], one_b.timings["run_s"])}
    rl_many = {"compile_s": many.timings["compile_s"], "run_s": many.timings["run_s"]}
    res = {**ratios("V-PBGD hyper-cleaning (linear)", t_np, rl_one, rl_many, reps, steps, flops, peak),
           "rel_diff_x": dx, "rel_diff_W": dW, "acc_numpy": ref["acc"], "acc_ratelab": acc_rl}
    return finish(args, "pbgd_hyperclean", {"linear": res}, ok, "the NumPy loop and ratelab disagree")


if __name__ == "__main__":
    sys.exit(main())
