"""DiSK-SGD on logistic regression (the ``disk-logistic`` study, the heaviest DP experiment) in ratelab vs a NumPy loop
of the same algorithm (float64 in both).

ratelab runs ``optim_theory.dp_studies.logistic_seed``: seeds x noise levels x arms (DiSK, the EMA without the
prediction term, kappa = 1) plus DPSGD, one ``jit(vmap(lax.scan))``; NumPy vectorises over (seed, noise level, arm)
with a Python loop over steps (per-sample gradients at x_t and at x_t + gamma d_t, the combination, the per-sample
clip, the Gaussian noise, the filter, SGD). With the noise off and the same Poisson masks the two must end at the same
iterates (checked); the timings are then taken with the noise on. Usage: ``python benchmarks/dp_filters.py
[--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from optim_theory.dp import poisson_mask
from optim_theory.dp_problems import Logistic, logistic_solution, make_logistic
from optim_theory.dp_studies import DiskArms, logistic_seed

KAPPA, GAMMA, CLIP, Q, ARMS_KAPPA, ARMS_PREDICT = 0.7, 0.5, 1.0, 0.1, (0.7, 0.7, 1.0), (1.0, 0.0, 1.0)


def numpy_disk(X, y, lam, masks, sigmas, steps_size, rng):
    """Final iterates ``[S, E, A, d]`` of DiSK-SGD and ``[S, E, d]`` of DPSGD; ``masks`` ``[S, T, n]``."""
    S, n, d = X.shape
    E, A = len(sigmas), len(ARMS_KAPPA)
    kappa = np.asarray(ARMS_KAPPA)[None, None, :, None]
    c = np.asarray(ARMS_PREDICT) * (1 - np.asarray(ARMS_KAPPA)) / (np.asarray(ARMS_KAPPA) * GAMMA)
    c = c[None, None, :, None, None]
    sig = np.asarray(sigmas)[None, :, None, None]
    eta = steps_size[:, None, None, None]
    Xb, yb = X[:, None, None], y[:, None, None]

    def per_sample(w):  # w [S, E, A, d] -> [S, E, A, n, d]
        z = np.einsum("snd,sead->sean", X, w)
        return (-yb * special.expit(-yb * z))[..., None] * Xb + lam * w[..., None, :]

    def privatize(g, mask, noise_std, shape):
        g = g * mask
        norms = np.linalg.norm(g, axis=-1, keepdims=True)
        clipped = (g * np.minimum(1.0, CLIP / np.where(norms > 0, norms, 1.0))).sum(-2)
        return (clipped + noise_std * CLIP * rng.standard_normal(shape)) / (Q * n)

    w = np.zeros((S, E, A, d))
    w_prev, filt = w.copy(), np.zeros_like(w)
    w_dp = np.zeros((S, E, 1, d))
    for t in range(masks.shape[1]):
        mask = masks[:, t][:, None, None, :, None]
        comb = c * per_sample(w + GAMMA * (w - w_prev)) + (1 - c) * per_sample(w)
        obs = privatize(comb, mask, sig, w.shape)
        filt = obs if t == 0 else (1 - kappa) * filt + kappa * obs
        w_prev, w = w, w - eta * filt
        w_dp = w_dp - eta * privatize(per_sample(w_dp), mask, sig, w_dp.shape)
    return w, w_dp[:, :, 0]


def bench(seeds: int, n: int, d: int, steps: int, sigmas: tuple[float, ...]) -> None:
    instances = [make_logistic(s, n=n, d=d) for s in range(seeds)]
    sols = [logistic_solution(p) for p in instances]
    with jax.enable_x64(True):
        data = Logistic(jnp.asarray(np.stack([p.X for p in instances])),
                        jnp.asarray(np.stack([p.y for p in instances])), jnp.full(seeds, 1e-3))
        best = jnp.asarray([b for _, b, _ in sols])
        eta = jnp.asarray([1.0 / L for *_, L in sols])
        arms = DiskArms(jnp.asarray(ARMS_KAPPA), jnp.asarray(ARMS_PREDICT), jnp.full(3, CLIP))
        keys = jax.random.split(jax.random.key(0), seeds)

        def study(sig):
            return jax.jit(jax.vmap(lambda p, b, s, k: logistic_seed(
                p, arms, jnp.asarray(sig), k, step=s, best=b, gamma=GAMMA, sampling_rate=Q, steps=steps)))

        mask_keys = jax.vmap(lambda k: jax.random.split(jax.random.split(k)[1], steps))(keys)
        masks = np.asarray(jax.vmap(jax.vmap(lambda k: poisson_mask(k, n, Q)))(mask_keys))
        # equality: noise off, same masks
        out = study((0.0,) * len(sigmas))(data, best, eta, keys)
        w_np, w_dp = numpy_disk(np.asarray(data.X), np.asarray(data.y), 1e-3, masks, (0.0,) * len(sigmas),
                                np.asarray(eta), np.random.default_rng(0))
        loss = jax.vmap(jax.vmap(jax.vmap(Logistic.loss, in_axes=(None, 0)), in_axes=(None, 0)))
        ref = np.asarray(loss(data, jnp.asarray(w_np))) - np.asarray(best)[:, None, None]
        err = np.abs(ref - np.asarray(out["excess"])).max()
        # timing: noise on
        t0 = time.perf_counter()
        f = study(sigmas).lower(data, best, eta, keys).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(f(data, best, eta, keys))
        run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    numpy_disk(np.asarray(data.X), np.asarray(data.y), 1e-3, masks, sigmas, np.asarray(eta), np.random.default_rng(1))
    t_np = time.perf_counter() - t0
    print(f"DiSK logistic study ({seeds} seeds x {len(sigmas)} noise levels x 3 arms + DPSGD, n = {n}, d = {d}, "
          f"{steps} steps): max |excess risk ratelab - numpy| (noise off) = {err:.2e}")
    print(f"  ratelab run {run_s:.3f} s (+ compile {compile_s:.2f} s); numpy {t_np:.3f} s; speed-up numpy/ratelab: "
          f"run {t_np / run_s:.1f}x, incl. compile {t_np / (run_s + compile_s):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; numpy {np.__version__}")
    if args.quick:
        bench(16, 500, 8, 200, (4.44, 1.51))
    else:
        bench(64, 500, 8, 400, (4.44, 1.51))  # the disk-logistic quick configuration's sizes


if __name__ == "__main__":
    main()
