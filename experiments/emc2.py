"""EMC^2 (Yau et al. 2024): MCMC negative sampling reaches stationarity of the global contrastive loss at O(1/sqrt(T))
with batch size 1, where in-batch negatives and uncorrected uniform negatives stop at a bias floor.

One experiment, ``emc2``, one jitted program: seeds x 3 samplers (EMC^2, always-accept, in-batch) x horizons T, each
lane running ``optim_theory.contrastive.run`` with the constant step gamma_T = c / sqrt(T) for max(T) steps (the
lanes of shorter horizons run on; their metric uses their first T steps only), and ||grad L(W_t)||^2 measured
exactly (closed-form gradient over all 2n anchors and 2n - 2 negatives each) every ``eval_every`` steps.

Instance (synthetic, settings marked by origin): n points x_i ~ N(0, I_p / p) with two fixed views
x_i + noise * eps (the paper's finite-augmentation setting, the code's ``--finite_aug --n_aug 2``), linear encoder
W in R^{k x p} with normalised output, beta = 1/tau = 5 (the code's SGD experiment, ``--beta 5 --optimizer sgd``),
in-batch baseline at batch 4 (that experiment's ``--pos_batch_size 4``), EMC^2 at batch 1 (the paper's claim:
convergence for every batch size), plain SGD (the theorem's update). Chosen here: n = 32, p = 8, k = 4, noise 0.3,
c = 1, the horizons, W_0 with N(0, 1/p) entries (the same W_0 for the three samplers of a seed).

Pre-registered (written with their bands before any run):

* ``stationarity-rate`` (the paper's theorem, reconstructed form: constant step gamma = c / sqrt(T) over a horizon
  T, E ||grad L(theta_tau)||^2 with tau uniform on {0, ..., T - 1} is O(1/sqrt(T)) for any batch size): the mean
  over t < T (grid of every ``eval_every``-th step, including t = 0) of ||grad L(W_t)||^2, EMC^2 at batch 1, against
  T: exponent <= -0.5 + 0.15 (``le``; the 0.15 allows the log T factor of the biased-SA template: d ln ln T /
  d ln T = 1 / ln T <= 0.15 for T >= 800). Controls: the same claim judged on (a) in-batch negatives at batch 4
  (the batch's own InfoNCE gradient: biased, its iterates settle where grad L != 0, so the mean plateaus) and (b)
  always-accept (acceptance forced to 1: uniform negatives, E g != grad L); both must FAIL.
* ``mh-stationary`` (derived here): the MH kernel of one EMC^2 step (uniform proposal over the N = 2n - 2
  negatives, acceptance min{1, exp(beta (phi' - phi))}) is reversible with respect to pi_r = softmax(beta phi(r, .))
  at every fixed theta, so its stationary vector is pi_r. Measured at each seed's final EMC^2 iterate, for every
  anchor r: the stationary vector of the 62 x 62 kernel (``scipy.linalg.lstsq`` on [P^T - I; 1^T] pi = [0; 1], float64)
  against the softmax: max |pi_P - pi_r| <= 1e-12 (worst seed and anchor). Control: the always-accept kernel
  (stationary vector uniform), which must FAIL.

Measured (quick, 8 seeds, horizons 1024..8192): stationarity-rate -0.301 [-0.373, -0.217] INCONCLUSIVE (controls:
in-batch -0.358 [-0.398, -0.318] INCONCLUSIVE, always-accept -0.071 [-0.157, 0.031] FAIL); mh-stationary 3.4e-15
PASS (always-accept kernel 0.320 FAIL). (Earlier quick runs of the same model and settings: -0.342 [-0.389, -0.298]
with a permutation-drawn batch, -0.301 [-0.365, -0.225] with XLA's default fusion: float32 rounding moves the MH
decisions, hence the sample paths.) In the quick
run in-batch's mean over t < T is still in its transient (its last-iterate ||grad L||^2 is flat, 0.047, 0.048,
0.046, 0.042), so that control cannot decide there; it FAILs on the full run.
Full (32 seeds, horizons 1024..32768, 78 s on the shared 2-core machine):
stationarity-rate -0.291 [-0.312, -0.272] FAIL (in-batch -0.206 [-0.237, -0.172] FAIL, always-accept -0.176
[-0.219, -0.136] FAIL); mh-stationary 4.6e-15 PASS (always-accept kernel 0.328 FAIL). The rate claim is a known
failure on this instance (analysis in its ``known_failure``). Mean over seeds of the metric (full): EMC^2 0.260,
0.205, 0.165, 0.134, 0.112, 0.095; in-batch 0.167, 0.121, 0.100, 0.086, 0.081, 0.081 (its last iterate's
||grad L||^2 flat at 0.050-0.058 for every T: the bias floor); always-accept 0.348, 0.299, 0.262, 0.254, 0.223, 0.178.
Cost: the quick run is far above the 6 s budget (see the report of the branch: compile of the vmapped step and
about 10 microseconds per lane-step on the shared machine).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from optim_theory import contrastive as ct
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, call, trace_from_arrays

EMC2_PAPER = Paper(
    key="yau2024emc2",
    authors="Chung-Yiu Yau, Hoi-To Wai, Parameswaran Raman, Soumajyoti Sarkar and Mingyi Hong",
    title="EMC^2: Efficient MCMC Negative Sampling for Contrastive Learning with Global Convergence",
    venue="ICML 2024, arXiv:2404.10575",
    year=2024,
    url="https://arxiv.org/abs/2404.10575",
)

SRC_RATE = ("EMC^2 Sec. 4, main theorem (O(1/sqrt(T)) stationarity of the global contrastive loss for any batch "
            "size; reconstructed form with the constant step c/sqrt(T) of Karimi et al. 2019's template)")
SRC_DERIVED = "derived here (module docstring)"
ARMS = ("mh", "uniform", "in_batch")
# XLA's CPU fusion emitters off: on the quick config the program compiles in 2.4 s instead of 10.1 s and runs in
# 2.4 s instead of 2.0 s (measured once on the shared 2-core machine, load about 5). Float32 rounding differs from
# the default options, which changes the sample paths (MH decisions), not their distribution.
COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
RATE_FAILURE = (
    "Measured, not the pre-registered -0.5: full (32 seeds, T = 1024..32768) -0.291 [-0.312, -0.272] FAIL, quick "
    "(8 seeds, T = 1024..8192) -0.301 [-0.373, -0.217] INCONCLUSIVE. The local slope between consecutive horizons "
    "flattens with T (-0.34, -0.32, -0.30, -0.26, -0.24 on the full means 0.260 ... 0.095), so it is not a log T "
    "factor on top of T^-1/2 (that would steepen towards -0.5). sqrt(T) x metric grows from 8.3 to 17.1: at these "
    "horizons the mean is the optimisation transient of a slow non-convex descent, about (L(theta_0) - "
    "L(theta_T)) / (c sqrt(T)) with L still decreasing over the flow times c sqrt(T) = 32..181, which the "
    "theorem's O(1/sqrt(T)) bounds from above (its constant is not pinned down) but which a slope fit at finite "
    "T reads as a shallower exponent. Checked after the fact on two seeds (32768 steps): L(theta_0) = -2.36, "
    "-1.79; after 32768 steps at step 1/sqrt(32768), 1/sqrt(8192), 1/32: L = -2.74, -2.72, -2.76 (seed 0, "
    "not monotone in the flow time: the larger steps' noise mixes in, so this reading is a heuristic, not "
    "shown); ||W|| grows from 2 to 4.1, 5.7, 9.5 (the normalised encoder is scale invariant: ||grad L||^2 and "
    "the effective step scale like 1/||W||^2). EMC^2 still separates from the baselines: its last-iterate "
    "||grad L||^2 keeps falling (0.094 -> 0.039) while in-batch's stays at its bias floor 0.05-0.058; the controls "
    "FAIL (in-batch -0.206, always-accept -0.176 on full). Not tried after seeing the data: a larger c, longer "
    "horizons, another instance.")


def _horizons(cfg: dict[str, Any]) -> list[int]:
    return [int(v) for v in str(cfg["horizons"]).split(",")]


def _validate(cfg: dict[str, Any]) -> None:
    hs = _horizons(cfg)
    m = int(cfg["eval_every"])
    if m < 1:
        raise RatelabError(f"eval_every must be an integer >= 1, got {cfg['eval_every']!r}")
    if len(hs) < 3 or sorted(hs) != hs or any(h % m for h in hs):
        raise RatelabError(f"horizons must be >= 3 increasing multiples of eval_every={m}, got {cfg['horizons']!r}")
    if int(cfg["steps"]) != hs[-1]:
        raise RatelabError(f"steps must equal the largest horizon {hs[-1]}, got {cfg['steps']!r}")
    for name in ("n", "p", "k", "batch_size", "in_batch_size", "seeds"):
        if int(cfg[name]) < 1:
            raise RatelabError(f"{name} must be an integer >= 1, got {cfg[name]!r}")
    if not 2 <= cfg["in_batch_size"] <= cfg["n"] or cfg["batch_size"] > cfg["n"]:
        raise RatelabError(f"in_batch_size must lie in [2, n] and batch_size in [1, n], got "
                           f"{cfg['in_batch_size']!r}, {cfg['batch_size']!r}")
    for name in ("beta", "noise", "lr_scale"):
        if not cfg[name] > 0:
            raise RatelabError(f"{name} must be > 0, got {cfg[name]!r}")


def _study(key, views, beta, lrs, arms, seeds, p, k, steps, eval_every, batch_size, in_batch_size):
    """gn2 [seeds, arms, horizons, steps / eval_every] and the final W [seeds, arms, horizons, k, p]."""
    problem = ct.ContrastiveProblem(views, beta)
    k_w, k_run = jax.random.split(key)
    w0 = (jax.random.normal(k_w, (seeds, k, p), jnp.float32) / np.sqrt(p)).astype(views.dtype)
    run_keys = jax.random.split(k_run, seeds)

    def lane(kk, w, arm, lr):
        gn2, state = ct.run(problem, kk, w, steps=steps, eval_every=eval_every, learning_rate=lr, sampler=arm,
                            batch_size=batch_size, in_batch_size=in_batch_size)
        return gn2, state.params

    over_h = jax.vmap(lane, in_axes=(None, None, None, 0))
    over_arm = jax.vmap(over_h, in_axes=(None, None, 0, None))
    return jax.vmap(over_arm, in_axes=(0, 0, None, None))(run_keys, w0, arms, lrs)


def _kernel_errors(w: np.ndarray, views: np.ndarray, beta: float) -> np.ndarray:
    """[2]: max over anchors of |stationary vector - softmax| for the MH kernel and the always-accept kernel."""
    pi = ct.softmax_targets(w, views, beta)
    n2 = pi.shape[0]
    v = np.asarray(views, float).reshape(n2, -1) @ w.T
    f = v / np.linalg.norm(v, axis=1, keepdims=True)
    out = np.zeros(2)
    for r in range(n2):
        negs = np.flatnonzero(np.arange(n2) // 2 != r // 2)
        scores = beta * f[negs] @ f[r]
        target = pi[r, negs]
        for j, accept_all in enumerate((False, True)):
            P = ct.mh_kernel(scores, accept_all=accept_all)
            a = np.vstack([P.T - np.eye(negs.size), np.ones((1, negs.size))])
            b = np.zeros(negs.size + 1)
            b[-1] = 1.0
            stat = scipy.linalg.lstsq(a, b)[0]
            out[j] = max(out[j], float(np.max(np.abs(stat - target))))
    return out


def _execute(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    hs = _horizons(cfg)
    problem = ct.random_problem(int(cfg["seed"]), int(cfg["n"]), int(cfg["p"]), float(cfg["noise"]),
                                float(cfg["beta"]))
    views = np.asarray(problem.views, np.float64 if cfg["x64"] else np.float32)
    lrs = np.asarray([cfg["lr_scale"] / np.sqrt(h) for h in hs], views.dtype)
    arms = np.arange(len(ARMS), dtype=np.int32)
    with jax.enable_x64(bool(cfg["x64"])):
        (gn2, w), timings = call(_study, key, views, views.dtype.type(cfg["beta"]), lrs, arms, int(cfg["seeds"]),
                                 int(cfg["p"]), int(cfg["k"]), max(hs), int(cfg["eval_every"]),
                                 int(cfg["batch_size"]), int(cfg["in_batch_size"]), static_argnums=tuple(range(5, 12)),
                                 desc="emc2", compiler_options=COMPILE_OPTIONS)
    m = int(cfg["eval_every"])
    gn2 = np.asarray(gn2, float)
    # mean over t < T of ||grad L(W_t)||^2 for lane T: its first T / m grid points
    means = np.stack([gn2[:, :, j, : h // m].mean(axis=-1) for j, h in enumerate(hs)], axis=-1)  # [seeds, arms, H]
    kerr = np.stack([_kernel_errors(np.asarray(w[s, 0, -1], float), np.asarray(problem.views), float(cfg["beta"]))
                     for s in range(int(cfg["seeds"]))])  # [seeds, 2]
    const = np.ones((int(cfg["seeds"]), len(hs)))
    metrics = {f"gn2_{a}": means[:, i] for i, a in enumerate(ARMS)}
    metrics |= {f"gn2_last_{a}": np.stack([gn2[:, i, j, h // m - 1] for j, h in enumerate(hs)], axis=-1)
                for i, a in enumerate(ARMS)}
    metrics |= {"kernel_err_mh": const * kerr[:, :1], "kernel_err_accept_all": const * kerr[:, 1:]}
    return trace_from_arrays(np.asarray(hs, float), metrics, timings=timings)


def _claims(cfg: dict[str, Any]) -> list[Claim]:
    hs = _horizons(cfg)
    full = (float(hs[0]), float(hs[-1]))
    in_batch = Control("in-batch", f"in-batch (SimCLR-style) negatives at batch {cfg['in_batch_size']}: the batch's "
                       "own InfoNCE gradient is biased for the global loss, its mean ||grad L||^2 plateaus",
                       claim={"metric": "gn2_in_batch"})
    accept_all = Control("always-accept", "acceptance forced to 1 (uniform negatives, no MH correction): E g is "
                         "the uniform average, not the softmax one, so the mean ||grad L||^2 plateaus",
                         claim={"metric": "gn2_uniform"})
    return [
        Claim(id="stationarity-rate", statement=f"paper (theorem, reconstructed form): EMC^2 at batch "
              f"{cfg['batch_size']} with step {cfg['lr_scale']:g}/sqrt(T): the mean over t < T of "
              "||grad L_global(theta_t)||^2 decays like O(T^-1/2) (exponent <= -0.5 + 0.15, the 0.15 allowing a "
              "log T factor)", metric="gn2_mh", expected=-0.5, tolerance=0.15, relation="le", window=full,
              source=SRC_RATE, controls=(in_batch, accept_all), known_failure=RATE_FAILURE),
        Claim(id="mh-stationary", statement="derived here: the EMC^2 MH kernel (uniform proposal, acceptance "
              "min{1, exp(beta (phi' - phi))}) at fixed theta has the softmax over the negatives as its stationary "
              "vector: max over seeds and anchors of |pi_P - softmax| <= 1e-12 (float64, at the final iterate)",
              metric="kernel_err_mh", kind="value", relation="le", expected=0.0, tolerance=1e-12, window=full,
              statistic="max", source=SRC_DERIVED,
              controls=(Control("always-accept-kernel", "the always-accept kernel: its stationary vector is "
                                "uniform, not the softmax", claim={"metric": "kernel_err_accept_all"}),)),
    ]


_COMMON = {"seed": 0, "x64": False, "log_every": 1, "n": 32, "p": 8, "k": 4, "noise": 0.3, "beta": 5.0,
           "lr_scale": 1.0, "batch_size": 1, "in_batch_size": 4, "eval_every": 32}

EMC2_EXP = register(Experiment(
    id="emc2",
    paper=EMC2_PAPER,
    figure="Sec. 4 (global convergence theorem); Sec. 5's baselines (SimCLR in-batch negatives)",
    title="EMC^2 (MH negatives, batch 1) vs in-batch and always-accept negatives: mean ||grad L_global||^2 over "
          "a horizon T against T; the MH kernel's stationary vector is the softmax",
    configs={
        # seeds: 8 leave the known failure INCONCLUSIVE where full FAILs ("about 18 seeds would decide"); 20 seeds
        # were tried once: still INCONCLUSIVE, -0.314 [-0.371, -0.260], "about 54 would decide", at 10 s; kept at 8
        "quick": {**_COMMON, "seeds": 8, "steps": 8192, "horizons": "1024,2048,4096,8192"},
        "full": {**_COMMON, "seeds": 32, "steps": 32768, "horizons": "1024,2048,4096,8192,16384,32768"},
    },
    execute=_execute,
    claims=_claims,
    panels=(Panel(metric="gn2_mh", ylabel="mean_{t<T} ||grad L(theta_t)||^2", xlabel="horizon T",
                  label="EMC^2 (batch 1)"),
            Panel(metric="gn2_in_batch", ylabel="mean_{t<T} ||grad L(theta_t)||^2", xlabel="horizon T",
                  label="in-batch (batch 4)"),
            Panel(metric="gn2_uniform", ylabel="mean_{t<T} ||grad L(theta_t)||^2", xlabel="horizon T",
                  label="always-accept"),
            Panel(metric="kernel_err_mh", ylabel="max |pi_P - softmax|", xlabel="(constant)",
                  label="MH stationary vector")),
    validate=_validate,
    notes="The paper's experiments pre-train ResNets on STL-10 / ImageNet-100; this is a synthetic instance where "
          "the global loss and its gradient are exact. 'full' has more seeds and horizons up to 32768.",
    tags=("contrastive", "mcmc", "optimization"),
))
