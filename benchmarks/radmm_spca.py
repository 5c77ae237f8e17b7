"""RADMM on sparse PCA over the RADMM repository's grid: the authors' loop (MATLAB, ported to NumPy) against ratelab.

Instance (the repository's ``sPCA/compare_manpg_subg.m``): H = A S A^T with A an orthonormal n x n matrix and S =
diag(|N(0, 1)|); f(X) = -1/2 tr(X^T H X), h(X) = mu ||X||_1 on St(n, p); X_0 = orth(randn(n, p)), Lambda_0 = 0,
Z_0 = X_0; eta = 1e-2, gamma = 1e-8, rho = 100, at most N = 1000 iterations, stopped when |F(X_k) - F(X_{k-1})|
<= 1e-8. Grid: n in {300, 500}, p in {50, 100}, mu = 0.01 (the value of the repository's mu = 0.01 variant of the
script; its default is mu = 1).

(a) The authors' RADMM loop in NumPy (written here from reading the MATLAB): one Riemannian gradient step on the
    augmented Lagrangian (polar retraction via the SVD of the p x p Gram matrix), the soft-threshold Y, the
    Moreau-envelope Z, the multiplier step, then the records the script keeps every iteration: F(X) and the stopping
    test, the Lagrangian, the Moreau-envelope Lagrangian, three distances and the projected subgradient norm.
(b) ratelab: ``riemannian.admm.radmm(eta, rho, gamma, retraction="polar")`` on ``sparse_pca(H, mu)``
    (f = -1/2 tr(X^T H X), B = I: the authors' convention), started like the authors (lambda_0 = 0, y_0 = x_0),
    for as many iterations as (a) ran, float64; its metrics every iteration. R seeds (vmapped) start from random points.

Same answer: max |X_numpy - X_ratelab| <= 1e-6 and the objectives equal to 1e-9 (relative) at the end; exit status
1 otherwise.

FLOPs per iteration (the algorithm's): H X (2 n^2 p), the projection and the polar retraction (8 n p^2), the p x p
SVD (about 22 p^3); the O(n p) elementwise work is left out.

Run from the repository root::

    python benchmarks/radmm_spca.py            # the four grid points, R = 4
    python benchmarks/radmm_spca.py --quick    # n = 300, p = 50 only, 200 iterations at most, R = 4
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
from riemannian.admm import radmm
from riemannian.sparse_problems import sparse_pca

ETA, GAMMA, RHO, MU = 1e-2, 1e-8, 100.0, 0.01


def orth(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the range of ``a`` (MATLAB's orth, by SVD)."""
    u, _, _ = np.linalg.svd(a, full_matrices=False)
    return u


def authors_radmm(H: np.ndarray, X: np.ndarray, mu: float, max_iter: int) -> tuple[np.ndarray, list[float]]:
    """The RADMM section of ``compare_manpg_subg.m``: returns the last X and F(X) per iteration."""
    def proj(X, Y):
        return Y - X @ (X.T @ Y + Y.T @ X) / 2

    def retr(X, Y):
        u, s, vt = np.linalg.svd((X + Y).T @ (X + Y))
        return (X + Y) @ (u @ np.diag(np.sqrt(1.0 / s)) @ vt)

    def wthresh(x, t):
        return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)

    def f(X):
        return -0.5 * np.trace(X.T @ H @ X)

    def g(Y):
        return mu * np.abs(Y).sum()

    def F(X):
        return f(X) + g(X)

    def g_gamma(Z, gamma):
        w = wthresh(Z, gamma)
        return mu * (g(w) + 1 / (2 * gamma) * np.linalg.norm(w - Z) ** 2)

    def lag(X, Y, Lam):
        return f(X) + mu * g(Y) + np.trace(Lam.T @ (X - Y)) + RHO / 2 * np.linalg.norm(X - Y) ** 2

    def lag_m(X, Z, Lam):
        return f(X) + mu * g_gamma(Z, GAMMA) + np.trace(Lam.T @ (X - Z)) + RHO / 2 * np.linalg.norm(X - Z) ** 2

    Y = Z = X.copy()
    Lam = np.zeros_like(X)
    fvals = [F(X)]
    records = []
    for _ in range(2, max_iter + 1):
        gx = -H @ X + Lam + RHO * (X - Z)
        X = retr(X, -ETA * proj(X, gx))
        Y = wthresh(X + Lam / RHO, mu * (1 + RHO * GAMMA) / RHO)
        Z = (Y / GAMMA + Lam + RHO * X) / (1 / GAMMA + RHO)
        Lam = Lam + RHO * (X - Z)
        fvals.append(F(X))
        if abs(fvals[-1] - fvals[-2]) <= 1e-8:
            break
        records.append((lag(X, Y, Lam), lag_m(X, Z, Lam), np.linalg.norm(X - Y), np.linalg.norm(X - Z),
                        np.linalg.norm(Z - Y), np.linalg.norm(proj(X, -H @ X + mu * np.sign(X)))))
    return X, fvals


def ratelab_solver(random_init: bool):
    """RADMM started as the authors start it: lambda_0 = 0, y_0 = x_0."""
    base = radmm(ETA, RHO, GAMMA, retraction="polar", random_init=random_init)

    def init(problem, key):
        state = base.init(problem, key)
        return state._replace(y=state.x, lam=jnp.zeros_like(state.x))

    return base._replace(init=init)


def main() -> int:
    args = parse_args(__doc__, "n = 300, p = 50 only, at most 200 iterations", "4")
    grid = [(300, 50)] if args.quick else [(300, 50), (300, 100), (500, 50), (500, 100)]
    max_iter = 200 if args.quick else 1000
    reps = args.reps or 4
    peak = matmul_peak("float64")
    results, ok = {}, True
    for n, p in grid:
        rng = np.random.default_rng(n + p)
        A = orth(rng.standard_normal((n, n)))
        H = A @ np.diag(np.abs(rng.standard_normal(n))) @ A.T
        X0 = orth(rng.standard_normal((n, p)))
        t0 = time.perf_counter()
        X_np, fvals = authors_radmm(H, X0, MU, max_iter)
        t_np = time.perf_counter() - t0
        iters = len(fvals) - 1
        with jax.enable_x64(True):
            problem = sparse_pca(H, mu=MU, p=p, x0=X0)
            one = rl.run(ratelab_solver(False), problem, 0, steps=iters, seeds=1, x64=True)
            one_b = rl.run(ratelab_solver(False), problem, 1, steps=iters, seeds=1, x64=True)
            many = rl.run(ratelab_solver(True), problem, 0, steps=iters, seeds=reps, x64=True)
        X_rl = np.asarray(one.final_state.x)[0]
        diff = float(np.abs(X_np - X_rl).max())
        f_rl = float(one["objective"][0, -1])
        rel = abs(f_rl - fvals[-1]) / abs(fvals[-1])
        print(f"\nn = {n}, p = {p}, mu = {MU}: the authors' loop stopped after {iters} iterations at F = "
              f"{fvals[-1]:.10f}; ratelab F = {f_rl:.10f} (relative difference {rel:.1e}), max |X_numpy - "
              f"X_ratelab| = {diff:.1e}")
        ok &= diff <= 1e-6 and rel <= 1e-9
        flops = 2.0 * n * n * p + 8.0 * n * p * p + 22.0 * p**3
        rl_one = {"compile_s": one.timings["compile_s"], "run_s": min(one.timings["run_s"], one_b.timings["run_s"])}
        rl_many = {"compile_s": many.timings["compile_s"], "run_s": many.timings["run_s"]}
        results[f"n{n}_p{p}"] = {**ratios(f"RADMM sPCA n = {n}, p = {p}", t_np, rl_one, rl_many, reps, iters, flops,
                                          peak, np_flops_per_step=flops + 8.0 * n * n * p),
                                 "max_abs_diff": diff, "rel_objective_diff": rel, "iterations": iters}
    return finish(args, "radmm_spca", results, ok, "the NumPy loop and ratelab reached different points")


if __name__ == "__main__":
    sys.exit(main())
