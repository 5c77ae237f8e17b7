"""DiSK (Zhang, Bu, Balle, Hong, Razaviyayn & Mirrokni, "DiSK: Differentially Private Optimizer with Simplified
Kalman Filter for Noise Reduction", arXiv:2410.03883; code in the Opacus repository, ``research/disk_optimizer``):
the filtered-error identity and the noise floor per curvature on a diagonal quadratic, utility at fixed
(epsilon, delta) on logistic regression. The algorithm and what was checked in the official code are in
:mod:`optim_theory.disk`.

Experiments
-----------
* ``disk-quadratic``: DiSK-SGD (kappa = 0.7, gamma = 0.5: the official code's defaults) on f = x^T H x / 2 with
  eta h spread from ``eh_min`` to ``eh_max`` (``replicates`` coordinates each), per-sample gradients
  H (x - a_j) of B fresh samples a_j ~ N(0, tau^2 I), clip C, noise multiplier sigma, beside DPSGD on the same
  samples and noise. sigma / B is small enough that the clip never acts (|H x| stays near 0.1 C), so the dynamics
  are linear and the closed forms of :mod:`optim_theory.disk` (derived here) are exact. Claims: the filtered-error
  identity e_t = (1 - kappa) e_{t-1} + kappa n_t (to float64 rounding); kappa = 1 reproduces DPSGD; the
  stationary floor at the flattest and the steepest direction against its Lyapunov value; and the paper's "lower
  noise floor than DPSGD" at both ends: it holds at eta h = 1 (ratio kappa/(2 - kappa) = 0.54) and fails at eta h =
  0.03 (0.98: the iterate already averages over 1/(eta h) = 33 steps, longer than the filter's 1/kappa, so the
  filter has nothing left to remove; the ratio tends to 1 as eta h -> 0).
* ``disk-logistic``: l2-regularised logistic regression (n = 500, d = 8, feature scales spread 10x, so Hessian
  eigenvalues spread about 100x), Poisson batches (q = 0.1), T = 400 steps of SGD with step 1/L for every arm,
  clip C = 1, noise multiplier from dp-accounting for each target epsilon at delta = 1e-5 (RDP accountant).
  Arms: DiSK, the same filter without the prediction term (an EMA with the same kappa: matched momentum), DiSK at
  kappa = 1, and DPSGD; the metric is the excess risk L(w_T) - L(w*) (w* by Newton), per seed of the data and
  the noise. Claim (the paper's utility claim, with a 10 % margin fixed before running): DiSK's excess risk is at
  most 0.9 of DPSGD's, and of the EMA's. Measured: 0.93 and 0.91 at epsilon = 2 and 8 with 64 seeds (undecided),
  0.9275 [0.9072, 0.9472] (FAIL) and 0.9056 [0.8798, 0.9305] (undecided) with the quick config's 128 seeds,
  0.957 / 0.932 / 0.915 / 0.902 at epsilon = 1 / 2 / 4 / 8 with 512 seeds (``--full``: FAIL, epsilon = 8 undecided),
  and 0.95-0.98 of the EMA's (FAIL). The analysis is the quadratic's: the gain lives in the directions with
  eta h near 1 (kappa/(2 - kappa) = 0.54 there); with step 1/L and a 100x spread of Hessian eigenvalues most
  directions have eta h << 1, where the filter cannot lower the floor, so the excess risk drops by 4-10 %.

Negative controls come from arms of the same run (no reruns): the no-prediction arm breaks the identity (its
residual is (1 - kappa)|H d_t| / s); kappa = 1 - 1e-6 breaks the equality with DPSGD; a clip that acts
(C = ``clip_control``, below the per-sample gradient norms) breaks the linear theory behind the Lyapunov values;
kappa = 1 (DPSGD) has no gain; without the prediction term DiSK is the EMA (ratio 1).

Settings from the paper / code: kappa = 0.7, gamma = 0.5, the algorithm, Poisson subsampling with per-sample
clipping of the combined gradient, delta = 1e-5 and epsilon in {1, 2, 4, 8} (``--full``; ``--quick`` uses 2 and 8).
Reconstructed (toy choices): the quadratic's spectrum, tau, B, C, sigma on the quadratic, the logistic instance, the
step 1/L, T and q.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optim_theory import disk as disk_theory
from optim_theory import dp_toy as toy
from optim_theory.dp import noise_multiplier_for
from optim_theory.dp_problems import Logistic, logistic_solution, make_logistic
from optim_theory.dp_studies import DiskArms, disk_quadratic_seed, logistic_seed
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, as_keys, call, trace_from_arrays
from ratelab.validate import check_in_range, check_positive

DISK = Paper(
    key="zhang2024disk",
    authors="X. Zhang, Z. Bu, B. Balle, M. Hong, M. Razaviyayn and V. Mirrokni",
    title="DiSK: Differentially Private Optimizer with Simplified Kalman Filter for Noise Reduction",
    venue="arXiv:2410.03883",
    year=2024,
    url="https://arxiv.org/abs/2410.03883",
)

SRC_ALG = "Zhang et al. (DiSK), Algorithm 1 and the official code (Opacus research/disk_optimizer, KFoptimizer.py)"
SRC_DERIVED = ("derived here (optim_theory.disk): on a quadratic grad f(x_t) - grad f(x_{t-1}) = H d_t exactly, "
               "so the prediction cancels the filter's lag")
SRC_GAIN = ("Zhang et al. (DiSK), abstract and Sec. 4: the filter denoises the privatized gradient, improving on "
            "DPSGD at the same privacy")

# ---------------------------------------------------------------------------------------------- disk-quadratic

ARMS = ("disk", "kappa=1", "kappa=1-1e-6", "no-prediction", "clip-active")


def _arms(cfg: dict[str, Any]) -> DiskArms:
    k, c = cfg["kappa"], cfg["clip_norm"]
    return DiskArms(kappa=jnp.asarray([k, 1.0, 1.0 - 1e-6, k, k]), predict=jnp.asarray([1.0, 1.0, 1.0, 0.0, 1.0]),
                    clip_norm=jnp.asarray([c, c, c, c, cfg["clip_control"]]))


def _exact_floor(cfg: dict[str, Any], problem: Any, kappa: float, clip_norm: float) -> np.ndarray:
    """``[d]`` DiSK's Lyapunov floor per coordinate at this arm's gain and noise (derived here)."""
    noise = np.asarray(problem.noise_var(clip_norm, cfg["noise_multiplier"]))
    return np.array([disk_theory.floor(kappa, cfg["step"], h, s) for h, s in zip(np.asarray(problem.h), noise,
                                                                                strict=True)])


def _execute_quadratic(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    with jax.enable_x64(bool(cfg["x64"])):
        problem, arms = toy.quadratic(cfg), _arms(cfg)

        def study(keys):
            return jax.vmap(lambda k: disk_quadratic_seed(
                problem, arms, k, step=cfg["step"], gamma=cfg["gamma"], noise_multiplier=cfg["noise_multiplier"],
                clip_norm=cfg["clip_norm"], steps=cfg["steps"], burn_in=cfg["burn_in"]))(keys)

        out, timings = call(study, as_keys(key, cfg["seeds"]), desc="disk-quadratic")
        exact = np.stack([_exact_floor(cfg, problem, float(k), float(c)) for k, c in zip(arms.kappa, arms.clip_norm,
                                                                                         strict=True)])
    n = cfg["n_curv"]
    metrics = {
        "floor_over_exact": (toy.per_curvature(toy.arms_first(out["mean_x2"]), n, "sum")
                             / toy.per_curvature(exact, n, "sum")[:, None]),
        "ratio_to_dpsgd": toy.ratio_to_dpsgd(out["mean_x2"], out["mean_x2_dpsgd"], n),
        "identity_residual": toy.per_curvature(toy.arms_first(out["max_residual"]), n, "max"),
        "dpsgd_gap": toy.per_curvature(toy.arms_first(out["max_gap"]), n, "max"),
    }
    return trace_from_arrays(toy.curvatures(cfg), metrics, timings=timings)


def _claims_quadratic(cfg: dict[str, Any]) -> list[Claim]:
    lo, hi, k = cfg["eh_min"], cfg["eh_max"], cfg["kappa"]
    r_lo, r_hi = disk_theory.floor_ratio(k, lo), disk_theory.floor_ratio(k, hi)
    no_pred = Control("no-prediction", "predict = 0 (c = 0): the filter becomes an EMA of the privatized gradient, "
                      "which lags the moving gradient: e_t = (1 - kappa) e_{t-1} + kappa n_t - (1 - kappa) H d_t, a "
                      "residual of the order of the noise", claim={"index": (3,)})
    near = Control("kappa-1e-6", "kappa = 1 - 1e-6: the filter keeps 1e-6 of the past estimate and the prediction "
                   "term has weight 2e-6, so the iterates leave DPSGD's by about 1e-6 of their size",
                   claim={"index": (2,)})
    clip = Control("clip-active", f"clip C = {cfg['clip_control']:g}, below the per-sample gradient norms (about "
                   "tau |h|): the clip rescales every per-sample gradient, the dynamics are no longer linear, and the "
                   "Lyapunov value of the unclipped noise no longer applies", claim={"index": (4,)})
    off = Control("kappa-1", "kappa = 1: DiSK is DPSGD (c = 0, g_t = g~), so the floor ratio is 1",
                  claim={"index": (1,)})
    floor_stmt = ("DiSK-SGD's stationary floor E x^2 at eta h = {x:g} equals the Lyapunov value eta^2 [kappa s^2 / "
                  "(2 - kappa)] (1 + rho beta) / ((1 - rho^2)(1 - rho beta)), rho = 1 - eta h, beta = 1 - kappa "
                  "(derived here): measured / exact = 1")
    gain_stmt = ("DiSK lowers the DP noise floor below DPSGD's (equal noise and step): at eta h = {x:g}, "
                 "E x^2(DiSK) / E x^2(DPSGD) <= 0.9 (derived here: {r:.3g})")
    return [
        Claim(id="identity", statement="quadratic, clip inactive: DiSK's filtered error e_t = g_t - grad f(x_t) obeys "
              "e_t = (1 - kappa) e_{t-1} + kappa n_t exactly, n_t the error of DPSGD's privatized gradient at x_t "
              "(same batch and noise), for any base optimizer (derived here): max residual / noise std <= 1e-9",
              metric="identity_residual", kind="value", relation="le", expected=0.0, tolerance=1e-9,
              window=(lo, hi), statistic="max", index=(0,), source=SRC_DERIVED, controls=(no_pred,)),
        Claim(id="kappa1-is-dpsgd", statement="kappa = 1 is DPSGD: max_t |x_t - x_t(DPSGD)| <= 1e-12 on the same "
              "samples and noise (XLA may fuse the two programs differently; op by op the bits agree: "
              "tests/test_disk.py)",
              metric="dpsgd_gap", kind="value", relation="le", expected=0.0, tolerance=1e-12, window=(lo, hi),
              statistic="max", index=(1,), source=SRC_ALG, controls=(near,)),
        Claim(id="floor-flat", statement=floor_stmt.format(x=lo), metric="floor_over_exact", kind="value",
              expected=1.0, tolerance=0.05, window=toy.at(lo), index=(0,), source=SRC_DERIVED, controls=(clip,)),
        Claim(id="floor-steep", statement=floor_stmt.format(x=hi), metric="floor_over_exact", kind="value",
              expected=1.0, tolerance=0.05, window=toy.at(hi), index=(0,), source=SRC_DERIVED, controls=(clip,)),
        Claim(id="gain-steep", statement=gain_stmt.format(x=hi, r=r_hi), metric="ratio_to_dpsgd", kind="value",
              relation="le", expected=0.0, tolerance=0.9, window=toy.at(hi), index=(0,), source=SRC_GAIN,
              controls=(off,)),
        Claim(id="gain-flat", statement=gain_stmt.format(x=lo, r=r_lo), metric="ratio_to_dpsgd", kind="value",
              relation="le", expected=0.0, tolerance=0.9, window=toy.at(lo), index=(0,), source=SRC_GAIN,
              controls=(off,),
              known_failure=f"the filter has unit gain at zero frequency: where eta h is small the iterate already "
              f"averages the noise over 1/(eta h) steps, longer than the filter's memory, so the floor ratio tends to "
              f"1 (derived value {r_lo:.3f} here, matched by the gain-steep and floor claims); the paper's gain holds "
              f"only where eta h is near 1"),
    ]


def _validate_quadratic(cfg: dict[str, Any]) -> None:
    check_in_range("kappa", cfg["kappa"], 0.0, 1.0, closed="neither")
    check_positive("gamma", cfg["gamma"])
    check_positive("noise_multiplier", cfg["noise_multiplier"])
    check_positive("clip_control", cfg["clip_control"])
    if cfg["clip_control"] >= cfg["clip_norm"]:
        raise RatelabError(f"clip_control must be below clip_norm ({cfg['clip_norm']}), got {cfg['clip_control']}")
    toy.validate(cfg, 1.9)  # inside SGD's stable range 0 < eta h < 2


def _ratio_reference(cfg: dict[str, Any], x: Any) -> np.ndarray:
    return np.array([disk_theory.floor_ratio(cfg["kappa"], e) for e in np.asarray(x)])


_Q = {**toy.TOY, "kappa": 0.7, "gamma": 0.5, "clip_control": 0.05}

QUADRATIC = register(Experiment(
    id="disk-quadratic",
    paper=DISK,
    figure="filtered-error identity and noise floor per curvature (derived here), DiSK vs DPSGD at equal noise",
    title="DiSK-SGD on a diagonal quadratic: exact filtered-error recursion, floors against their Lyapunov values",
    configs={
        "quick": {**_Q, **toy.QUICK},
        "full": {**_Q, **toy.FULL},
    },
    execute=_execute_quadratic,
    claims=_claims_quadratic,
    panels=(
        Panel(metric="floor_over_exact", index=(0,), ylabel="floor / Lyapunov value", xlabel=r"$\eta h$",
              yscale="linear"),
        Panel(metric="ratio_to_dpsgd", index=(0,), ylabel=r"$E x^2$(DiSK) / $E x^2$(DPSGD)", xlabel=r"$\eta h$",
              yscale="linear", reference=_ratio_reference, reference_label="derived ratio"),
        Panel(metric="identity_residual", index=(0,), ylabel="max residual / noise std", xlabel=r"$\eta h$"),
    ),
    validate=_validate_quadratic,
    tags=("differential-privacy", "optimizer"),
))


# ---------------------------------------------------------------------------------------------- disk-logistic

LOGISTIC_ARMS = ("disk", "no-prediction (EMA)", "kappa=1")


def _epsilons(cfg: dict[str, Any]) -> np.ndarray:
    try:
        eps = np.array(sorted(float(e) for e in str(cfg["epsilons"]).split(",")))
    except ValueError:
        raise RatelabError(f"epsilons must be comma-separated numbers, got {cfg['epsilons']!r}") from None
    if eps.size == 0 or np.any(eps <= 0) or np.unique(eps).size != eps.size:
        raise RatelabError(f"epsilons must be distinct positive numbers, got {cfg['epsilons']!r}")
    return eps


def noise_multipliers(cfg: dict[str, Any]) -> np.ndarray:
    """The noise multiplier for each target epsilon at the config's delta, q and T (dp-accounting)."""
    return np.array([noise_multiplier_for(e, cfg["delta"], sampling_rate=cfg["sampling_rate"], steps=cfg["steps"],
                                          accountant=cfg["accountant"]) for e in _epsilons(cfg)])


def _instances(cfg: dict[str, Any], key: jax.Array) -> list[Any]:
    """One logistic instance per seed (NumPy, seeded from the seed's key) with (w*, L(w*), L)."""
    seeds = np.asarray(jax.random.key_data(as_keys(key, cfg["seeds"])))[:, -1]
    problems = [make_logistic(int(s), n=cfg["n"], d=cfg["d"], spread=cfg["spread"], lam=cfg["lam"],
                              signal=cfg["signal"]) for s in seeds]
    return [(p, *logistic_solution(p)) for p in problems]


def _execute_logistic(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    sigmas = noise_multipliers(cfg)
    instances = _instances(cfg, key)
    k, c = cfg["kappa"], cfg["clip_norm"]
    with jax.enable_x64(bool(cfg["x64"])):
        dtype = jnp.result_type(float)
        data = Logistic(*(jnp.asarray(np.stack([p[i] for p, *_ in instances]), dtype) for i in (0, 1)),
                        jnp.full(len(instances), cfg["lam"], dtype))
        best = jnp.asarray([b for _, _, b, _ in instances], dtype)
        steps = jnp.asarray([1.0 / L for *_, L in instances], dtype)
        arms = DiskArms(kappa=jnp.asarray([k, k, 1.0]), predict=jnp.asarray([1.0, 0.0, 1.0]),
                        clip_norm=jnp.full(3, c))

        def study(data, best, steps, keys):
            return jax.vmap(lambda p, b, s, key: logistic_seed(
                p, arms, jnp.asarray(sigmas, dtype), key, step=s, best=b, gamma=cfg["gamma"],
                sampling_rate=cfg["sampling_rate"], steps=cfg["steps"]))(data, best, steps, keys)

        run_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(as_keys(key, cfg["seeds"]))
        out, timings = call(study, data, best, steps, run_keys, desc="disk-logistic")
    excess = np.moveaxis(out["excess"], -1, 0)  # [arms, seeds, eps]
    metrics = {"excess": excess, "ratio_to_dpsgd": excess / out["excess_dpsgd"][None],
               "ratio_to_ema": excess / excess[1][None]}
    return trace_from_arrays(_epsilons(cfg), metrics, timings=timings)


def _claims_logistic(cfg: dict[str, Any]) -> list[Claim]:
    off = Control("kappa-1", "kappa = 1: DiSK is DPSGD, ratio 1", claim={"index": (2,)})
    no_pred = Control("no-prediction", "predict = 0: DiSK without its prediction term is the EMA itself, ratio 1",
                      claim={"index": (1,)})
    claims = []
    for e in _epsilons(cfg):
        budget = f"(epsilon, delta) = ({e:g}, {cfg['delta']:g}), T = {cfg['steps']}, q = {cfg['sampling_rate']:g}"
        claims += [
            Claim(id=f"utility-eps{e:g}", statement=f"at {budget}, step 1/L for both: DiSK-SGD's excess risk "
                  "L(w_T) - L(w*) is at most 0.9 of DPSGD's", metric="ratio_to_dpsgd", kind="value", relation="le",
                  expected=0.0, tolerance=0.9, window=toy.at(e), index=(0,), source=SRC_GAIN, controls=(off,),
                  known_failure="the features' 10x spread gives the Hessian a 100x spread: with step 1/L most "
                  "directions have eta h << 1, where the filter cannot lower the floor (see disk-quadratic's "
                  "gain-flat); measured 0.90-0.96 of DPSGD's excess risk over eps = 1..8 with 512 seeds"),
            Claim(id=f"momentum-eps{e:g}", statement=f"at {budget}: DiSK's excess risk is at most 0.9 of the EMA's "
                  "(the same filter without the prediction term: matched momentum)", metric="ratio_to_ema",
                  kind="value", relation="le", expected=0.0, tolerance=0.9, window=toy.at(e), index=(0,),
                  source=SRC_GAIN, controls=(no_pred,),
                  known_failure="most of DiSK's 4-10 % gain on this instance is the averaging that an EMA with the "
                  "same kappa already does: 0.95-0.98 of the EMA's excess risk with 512 seeds"),
        ]
    return claims


def _validate_logistic(cfg: dict[str, Any]) -> None:
    _epsilons(cfg)
    check_in_range("kappa", cfg["kappa"], 0.0, 1.0, closed="neither")
    check_positive("gamma", cfg["gamma"])
    check_positive("clip_norm", cfg["clip_norm"])
    check_in_range("delta", cfg["delta"], 0.0, 1.0, closed="neither")
    check_in_range("sampling_rate", cfg["sampling_rate"], 0.0, 1.0, closed="right")
    if cfg["accountant"] not in ("rdp", "pld"):
        raise RatelabError(f"accountant must be 'rdp' or 'pld', got {cfg['accountant']!r}")
    make_logistic(0, n=cfg["n"], d=cfg["d"], spread=cfg["spread"], lam=cfg["lam"], signal=cfg["signal"])


_L = {"seed": 0, "x64": False, "n": 500, "d": 8, "spread": 10.0, "lam": 1e-3, "signal": 2.0, "sampling_rate": 0.1,
      "delta": 1e-5, "kappa": 0.7, "gamma": 0.5, "clip_norm": 1.0, "accountant": "rdp"}

LOGISTIC = register(Experiment(
    id="disk-logistic",
    paper=DISK,
    figure="utility at a fixed (epsilon, delta): excess risk of DiSK vs DPSGD and the EMA, logistic regression",
    title="DiSK-SGD vs DPSGD on logistic regression with clipping, noise from dp-accounting per target epsilon",
    configs={
        # 128 seeds: at 64 the epsilon = 2 claim was undecided (about 85 seeds would decide, the harness said), while
        # the full config's 512 seeds FAIL it; a known failure's quick verdict must be the full one's
        "quick": {**_L, "seeds": 128, "steps": 400, "log_every": 400, "epsilons": "2,8"},
        "full": {**_L, "seeds": 512, "steps": 400, "log_every": 400, "epsilons": "1,2,4,8"},
    },
    execute=_execute_logistic,
    claims=_claims_logistic,
    panels=(
        Panel(metric="ratio_to_dpsgd", index=(0,), ylabel="excess risk, DiSK / DPSGD", xlabel=r"$\epsilon$",
              yscale="linear"),
        Panel(metric="ratio_to_ema", index=(0,), ylabel="excess risk, DiSK / EMA", xlabel=r"$\epsilon$",
              yscale="linear"),
        Panel(metric="excess", index=(0,), ylabel=r"$L(w_T) - L(w^*)$ (DiSK)", xlabel=r"$\epsilon$"),
    ),
    validate=_validate_logistic,
    tags=("differential-privacy", "optimizer"),
))
