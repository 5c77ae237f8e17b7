"""One attention layer, Softmax vs Gaussian kernel (Song, Han, Zhang, Ding & Hong, "Unraveling the Gradient Descent
Dynamics of Transformers", NeurIPS 2024, arXiv:2411.07538). The model, the symbols and what was reconstructed are
in :mod:`optim_theory.attention`; the instance, claims, bands and controls were registered before any run in
``docs/attention_prereg.md`` (with one amendment after a cost / step-size pilot on another seed).

Experiments
-----------
* ``attention-kernels``: N = 2 sequences of n = 4 tokens (Nn = 8), X, Y ~ N(0, 1) (X scaled 1/sqrt(D)), inits
  W ~ N(0, 1/D), plain GD on (W^Q, W^K, W^V) with step 0.5 / L_V(init) (L_V the exact Lipschitz constant of the
  W^V-gradient at the init), the same data and inits for both kernels; success = loss < 1e-6 after T steps, per
  init and embedding dimension D (vmapped: the D-problems are zero-padded to d_max = 16, exactly). Claims: at
  D = 2 Nn each kernel succeeds with probability >= 0.9 (Wilson interval), the paper's "global optimum when the
  embedding dimension is large"; at D = Nn/2 and 3Nn/4 the Gaussian kernel succeeds at least as often as Softmax
  (paired bootstrap on the per-init difference). Controls (derived dimension counts): at D = 2 the layer has at
  most 3 D^2 = 12 < Nn D = 16 free numbers, so a random Y is fitted with probability 0; at D = 3 Softmax's image has
  dimension <= 2 D^2 = 18 < 24, the Gaussian's <= 2.5 D^2 + D/2 = 24.
* ``attention-softmax-stuck``: the paper's "Softmax may lead to suboptimal local solutions", as a checked fact on
  a registered instance (Softmax, only W^Q trained, W^K = I, W^V fixed, D = 2, one sequence of 4 tokens, targets
  from a teacher W^Q*, so the global optimum is 0): GD from 256 inits, Newton polish of the converged point with the
  largest loss, then its gradient norm, its loss and its Hessian's eigenvalues. x = 0: that point; x = 1: its
  init; x = 2: the teacher (the controls).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optim_theory import attention as att
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, call, trace_from_arrays
from ratelab.validate import check_in_range, check_positive, check_positive_int

SONG = Paper(
    key="song2024unraveling",
    authors="B. Song, B. Han, S. Zhang, J. Ding and M. Hong",
    title="Unraveling the Gradient Descent Dynamics of Transformers",
    venue="NeurIPS 2024, arXiv:2411.07538",
    year=2024,
    url="https://arxiv.org/abs/2411.07538",
)

SRC_LARGE = ("Song et al., abstract and Sec. 4: with appropriate initialisation GD trains a single layer with either "
             "kernel to a global optimum, especially when the embedding dimension is large (D >= N n)")
SRC_KERNEL = "Song et al., abstract and Sec. 4: the Gaussian kernel exhibits a much more favourable behaviour"
SRC_COUNT = ("derived here: the output depends on at most 2 D^2 numbers (Softmax: W^Q W^K^T, W^V) or 2.5 D^2 + D/2 "
             "(Gaussian: W^Q W^Q^T, W^Q W^K^T, W^K W^K^T, W^V); below N n D a random Y is fitted with probability 0")
SRC_STUCK = "Song et al., abstract and Sec. 4: training with the Softmax kernel may lead to suboptimal local solutions"


def _dims(cfg: dict[str, Any]) -> tuple[int, ...]:
    try:
        dims = tuple(sorted(int(d) for d in str(cfg["dims"]).split(",")))
    except ValueError:
        raise RatelabError(f"dims must be comma-separated integers, got {cfg['dims']!r}") from None
    if not dims or dims[0] < 1 or len(set(dims)) != len(dims):
        raise RatelabError(f"dims must be distinct positive integers, got {cfg['dims']!r}")
    return dims


def _roles(cfg: dict[str, Any]) -> dict[str, int]:
    nn = cfg["n_seq"] * cfg["n_tok"]
    return {"large": 2 * nn, "below": 2, "small": nn // 2, "small2": 3 * nn // 4, "gap": 3}


def _validate(cfg: dict[str, Any]) -> None:
    dims = _dims(cfg)
    for name in ("n_seq", "n_tok", "seeds", "steps"):
        check_positive_int(name, cfg[name])
    check_in_range("step_factor", cfg["step_factor"], 0.0, 1.0, closed="right")
    check_positive("eps", cfg["eps"])
    missing = sorted(set(_roles(cfg).values()) - set(dims))
    if missing:
        raise RatelabError(f"dims must contain the claims' dimensions {sorted(set(_roles(cfg).values()))}; "
                           f"missing {missing}")


def _study(Xs, Ys, Ws, Ms, *, steps: int, step_factor: float):
    """``[kernel, dim, init]`` final losses, the step 0.5 / L_V(init) per run (pure; jitted once by rl.call)."""

    def one(kernel):
        def run(p, x, y, m):
            lr = step_factor / att.value_curvature(p, x, y, kernel)
            return att.gradient_descent(p, x, y, m, kernel=kernel, steps=steps, learning_rate=lr)[1][-1]

        return jax.vmap(lambda x, y, w, m: jax.vmap(lambda p: run(p, x, y, m))(w))(Xs, Ys, Ws, Ms)

    return jnp.stack([one(k) for k in att.KERNELS])


def _execute_kernels(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    dims = _dims(cfg)
    d_max = max(dims)
    X, Y, W = att.make_data(cfg["seed"], cfg["n_seq"], cfg["n_tok"], d_max, cfg["seeds"])
    Xs, Ys, Ws, Ms = att.stack_dims(X, Y, W, dims)
    with jax.enable_x64(True):
        def study(Xs, Ys, Ws, Ms):
            return _study(Xs, Ys, Ws, Ms, steps=cfg["steps"], step_factor=cfg["step_factor"])

        final, timings = call(study, *(jnp.asarray(a) for a in (Xs, Ys)), att.Params(*map(jnp.asarray, Ws)),
                              jnp.asarray(Ms), desc="attention-kernels")
    final = np.moveaxis(np.asarray(final), 1, 2)  # [kernel, init, dim]
    blew_up = ~np.isfinite(final)  # a GD run that overflowed did not reach the optimum: a failure of that init
    success = (final < cfg["eps"]).astype(float)
    diff = np.stack([success[1] - success[0], success[0] - success[1]])
    metrics = {"success": success, "final_loss": np.where(blew_up, 1e300, np.maximum(final, 1e-300)),
               "gauss_minus_softmax": diff, "blew_up": blew_up.astype(float)}
    return trace_from_arrays(np.asarray(dims, float), metrics, timings=timings)


def _at(d: int) -> tuple[float, float]:
    return (float(d), float(d))


def _claims_kernels(cfg: dict[str, Any]) -> list[Claim]:
    r, nn = _roles(cfg), cfg["n_seq"] * cfg["n_tok"]
    below = Control("below-count", f"D = {r['below']}: the layer has at most 3 D^2 = {3 * r['below'] ** 2} free "
                    f"numbers against Nn D = {nn * r['below']} targets, so GD fits a random Y with probability 0 "
                    "(derived)", claim={"window": _at(r["below"])})
    gap = Control("count-gap", f"the sign reversed (Softmax - Gaussian >= 0) at D = {r['gap']}, where Softmax's "
                  f"image has dimension <= 2 D^2 = {2 * r['gap'] ** 2} < Nn D = {nn * r['gap']} (it never fits) and "
                  f"the Gaussian's <= 2.5 D^2 + D/2 = {int(2.5 * r['gap'] ** 2 + r['gap'] / 2)} (derived): FAILs "
                  "when GD finds Gaussian fits there", claim={"index": (1,), "window": _at(r["gap"])})
    claims = []
    for i, k in enumerate(att.KERNELS):
        claims.append(Claim(
            id=f"large-D-{k}", statement=f"{k} kernel, D = 2 Nn = {r['large']} (above the paper's D >= Nn): GD from "
            f"N(0, 1/D) inits reaches the global optimum (loss < {cfg['eps']:g}) with probability >= 0.9 (Wilson "
            "95 % interval)", metric="success", kind="value", relation="ge", expected=1.0, tolerance=0.1,
            window=_at(r["large"]), index=(i,), statistic="wilson", source=SRC_LARGE, controls=(below,)))
    for d in (r["small"], r["small2"]):
        claims.append(Claim(
            id=f"gauss-ge-softmax-D{d}", statement=f"D = {d} (below Nn = {nn}): the Gaussian kernel reaches the "
            "global optimum at least as often as Softmax from the same inits: mean(success_gauss - success_softmax)"
            " >= 0 (paired bootstrap over inits)", metric="gauss_minus_softmax", kind="value", relation="ge",
            expected=0.5, tolerance=0.5, window=_at(d), index=(0,), source=SRC_KERNEL, controls=(gap,)))
    return claims


_K = {"seed": 0, "x64": True, "n_seq": 2, "n_tok": 4, "step_factor": 0.5, "eps": 1e-6}

KERNELS = register(Experiment(
    id="attention-kernels",
    paper=SONG,
    figure="success fraction of GD against the embedding dimension, Softmax vs Gaussian kernel (synthetic regression)",
    title="One attention layer: fraction of inits GD drives to the global optimum, per kernel and embedding dimension",
    configs={
        "quick": {**_K, "seeds": 40, "steps": 1000, "log_every": 1000, "dims": "2,3,4,6,16"},
        "full": {**_K, "seeds": 256, "steps": 6000, "log_every": 6000, "dims": "2,3,4,5,6,8,12,16"},
    },
    execute=_execute_kernels,
    claims=_claims_kernels,
    panels=(
        Panel(metric="success", index=(0,), ylabel="success fraction, Softmax", xlabel="embedding dimension D",
              yscale="linear"),
        Panel(metric="success", index=(1,), ylabel="success fraction, Gaussian", xlabel="embedding dimension D",
              yscale="linear"),
        Panel(metric="gauss_minus_softmax", index=(0,), ylabel="success: Gaussian - Softmax",
              xlabel="embedding dimension D", yscale="linear"),
    ),
    validate=_validate,
    tags=("transformer", "landscape"),
))
