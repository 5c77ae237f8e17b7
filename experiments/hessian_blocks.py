"""Block heterogeneity and Adam vs GD (Zhang et al. 2024, "Why Transformers Need Adam: A Hessian Perspective",
arXiv:2402.16788), with Adam-mini (Zhang et al. 2024, "Adam-mini: Use Fewer Learning Rates To Gain More",
arXiv:2406.16793) on the same instances.

Experiment ``hessian-blocks``: deterministic full-batch minimisation of f(x) = x^T H x / 2 on the paper's quadratic
case study (Sec. 3, simplified heterogeneous vs homogeneous spectra; :mod:`optim_theory.hessian_blocks`). Three
Hessian blocks of dimension ``block_dim``; ``block_dim`` eigenvalues drawn uniformly from each of the ranges
[1, 2], [99, 100], [4998, 5000] (divided by 5000: largest eigenvalue 1, so one step grid serves every method); block b
holds ``n_own`` values of range b and an equal share of every range for the rest. The x axis is the heterogeneity
fraction q = n_own / block_dim (0: homogeneous, every block spans the whole spectrum; 1: heterogeneous, block b holds
range b only); the global spectrum is the same at every level (a permutation of the same eigenvalues), so the global
condition number (about 5000) does not change with q. The JS distance between the block spectra
(:func:`optim_theory.hessian_blocks.js_heterogeneity`, the paper's measure on histograms) is logged per level. Each
block is rotated by its own random orthogonal matrix; x0 = Q c with c ~ N(0, I) attached to the eigenvalues (the same
(eigenvalue, coordinate) pairs at every level), so gradient descent's loss curve is the same at every level
(rotation invariance; the ``gd-invariant`` claim checks it on the runs).

Metric: iterations to f(x_t) <= eps f(x0) (capped at ``steps``; a divergent run counts as the cap). Arms, each
tuned by the same rule (the fewest iterations over one geometric grid ``lr_grid`` from ``lr_min`` to ``lr_max``, per
instance, the smallest step on ties; the chosen steps are in the trace as ``lr_*``): GD (optax.sgd with heavy-ball
momentum ``momentum`` = 0.9, matched to Adam's beta1), Adam
(optax.adam, betas (0.9, 0.999), eps 1e-8), blockwise GD (step c / L_b in block b, L_b the block's largest
eigenvalue, c tuned: reconstructed, the paper's "one learning rate per block" remedy), Adam-mini with one second
moment per Hessian block, Adam-mini on a wrong partition (coordinate i in block i mod 3: every block cuts across all
Hessian blocks), and Adam on a dense random rotation of the same H (``mix``: same spectrum, no block structure).

Pre-registered (claims and bands written before the first run of this instance, commit df76097):

* ``homogeneous-comparable`` (paper, Sec. 3): at q = 0, |log2(iters GD / iters Adam)| <= 1.5. Control: the same at
  q = 1, where the paper says GD falls behind.
* ``ratio-grows`` (paper, Sec. 3): log2(GD / Adam) at q = 1 minus at q = 0 >= 1. Control: Adam on the dense rotation
  of the same H (no block structure, same spectrum): the growth must vanish.
* ``gd-invariant`` (derived here: GD is rotation-equivariant and the global spectrum and eigen-coordinates are fixed
  across levels): max over seeds and levels of |log2(iters GD(q) / iters GD(0))| <= 0.01. Control: the same on Adam's
  counts (Adam is not rotation-equivariant).
* ``blockwise-closes-gap`` (paper, Sec. 3-4: one learning rate per block would rescue GD): at q = 1,
  log2(iters blockwise GD / iters Adam) <= 0.5. Control: one global step (plain GD) in its place.
* ``mini-matches-adam`` (Adam-mini, Sec. 2: one v per Hessian block loses nothing): at q = 1,
  log2(iters Adam-mini / iters Adam) <= 0.5 (no more than 2^0.5 slower). Control: Adam-mini on the wrong partition.
* ``mini-state-size`` (Adam-mini, Algorithm 1): Adam-mini's second-moment state has exactly n_blocks = 3 entries
  (counted from the optax state). Control: optax.adam's state (#parameters entries).

Measured, first registration (GD arms without momentum; quick = 6 seeds, 128 seeds as a sensitivity run;
log2 ratios, mean [95 % interval]): homogeneous-comparable 1.79 [1.61, 1.97] at 128 seeds, FAIL (tuned GD 3.5x
slower than Adam already at q = 0, and as far behind Adam on the dense rotation: Adam's momentum, not the blocks);
ratio-grows 1.46 [1.36, 1.56] PASS. That comparison was not matched: Adam has momentum beta1 = 0.9, the GD arms had
none, and the paper's SGD has momentum (the standard here: matched momentum when comparing optimizers). The GD arms
now use heavy-ball momentum 0.9 (``momentum``); nothing else changed (instance, grid, bands, eps). Measured with it
(quick, 64 seeds: 6 left ratio-grows INCONCLUSIVE, "about 58 seeds would decide"):

* GD needs the same count at every level on every seed: gd-invariant 0 [0, 0] PASS; control (Adam's counts) 2.44 FAIL
  as it must.
* ratio-grows 1.37 [1.23, 1.51] PASS (the growth is log2 Adam(q = 0) - log2 Adam(q = 1), GD being invariant: Adam gets
  2.6x faster as the blocks separate); control (Adam on the dense rotation) -0.03 [-0.16, 0.09] FAIL as it must.
* blockwise-closes-gap -2.83 [-2.85, -2.81] PASS (blockwise GD with momentum needs a few iterations at q = 1: each
  block's condition number is at most 2); control (one global step, i.e. GD with momentum) 0.56 [0.42, 0.69],
  INCONCLUSIVE against <= 0.5 (reported as a control of undecided power).
* mini-matches-adam -1.30 [-1.58, -1.07] PASS (Adam-mini beats Adam at q = 1: one v per block is the exact per-block
  scale, per-coordinate v inside a rotated block is not); control (wrong partition) 1.41 [1.24, 1.57] FAIL as it must.
* mini-state-size 3 PASS; control (Adam's state) 27 FAIL.

WEAK on this instance (registered with its analysis as a known failure): homogeneous-comparable. With matched
momentum it holds, log2 GD / Adam at q = 0 = -0.81 [-0.90, -0.72] (GD with momentum 1.75x faster than Adam), inside
|.| <= 1.5; but its control, the same at q = 1, is 0.56 [0.42, 0.69] and inside the band too: Adam is only 1.5x ahead
of GD with momentum on the heterogeneous blocks of this 27-dimensional toy, so the pre-registered band cannot tell
homogeneous from heterogeneous. ratio-grows carries the heterogeneity effect here; the homogeneous case is decided on
the next instance.

Experiment ``hessian-blocks-scale``: the same claim where its control can fail. Three blocks of dimension 9 with the
same spectrum geomspace(1, cond, 9), cond = 100; block b scaled by 10^(h b / 2), the whole H divided by its largest
eigenvalue (:func:`optim_theory.hessian_blocks.block_spectra`); h in {0, 1, 2} (h = 0: homogeneous, identical
blocks; h = 2: block scales 1e-2, 1e-1, 1, global condition number 1e4). Per seed one block rotation, one dense
rotation and one x0 serve every level, so a level differs from h = 0 only by a scalar per block. Arms GD with
momentum 0.9, Adam, Adam on the dense rotation; grid, eps, momentum and tuning rule as hessian-blocks.
Derived before the run: Adam's update m / sqrt(v) does not change when a block's gradient is multiplied by a scalar,
so its trajectory and count are the same at every h (eps = 1e-8 aside); GD's one step is capped by the largest
curvature, so the small-scale blocks converge 10^h times slower per step and its count grows (heavy ball with a
fixed beta = 0.9 and a relative-loss target: a rise of a few units in log2 at h = 2, not a sharp number). Claims
(pre-registered with the commit that adds them, before the first run):

* ``homogeneous-comparable`` (paper, Sec. 3): at h = 0, |log2(iters GD / iters Adam)| <= 1.5, the band of the
  range instance. Control: the same at h = 2, which the derivation puts outside the band.
* ``adam-scale-invariant`` (derived): max over seeds and levels of |log2(iters Adam(h) / iters Adam(0))| <= 0.1.
  Control: the same on GD's counts.
* ``ratio-grows`` (paper, Sec. 3): log2 ratio(h = 2) - log2 ratio(h = 0) >= 1. Control: Adam on the dense
  rotation (no coordinate-aligned blocks to rescale).

Quick: 32 seeds (the full config: 128), cap 4000 iterations (no run reached it).

Measured, the pre-registered quick run (``ratelab run hessian-blocks-scale --quick``, 3 s; mean [95 % interval]):
homogeneous-comparable -0.063 [-0.103, -0.025] PASS, but WEAK: its control at h = 2 is 1.05 [0.82, 1.28], inside
the band (median counts GD 75 -> 142, Adam 76 -> 72); adam-scale-invariant 0.35 FAIL (control 2.65 FAIL);
ratio-grows 1.12 [0.88, 1.34] INCONCLUSIVE (control -0.41 [-0.56, -0.26] FAIL; 128 seeds as a sensitivity run:
1.007 [0.907, 1.117], on the bound). The derivation was half right: Adam's iterates are the same at every h (3e-5
apart over 120 steps at one step size, the same relative loss in every block), but the target is the relative total
loss, which weighs the blocks by their scales, so Adam's count moves a little and GD need not converge the
small-scale blocks far (they carry 1 % and 10 % of f(x0) at h = 2). Each is registered with this analysis as a
known failure; no instance was changed after the run. The homogeneous case thus stays undecided on both instances:
with matched momentum, tuned GD and Adam are within 2^1.5 of each other on homogeneous and on these heterogeneous
blocks alike.

Cost: 64 seeds x 4 levels x 6 arms x 14 steps of the grid x 4000 iterations, one vmapped program (compile about 2 s;
the run about 12 s on a quiet 2-core machine, 37 s beside other work); every control reuses the run.

Not included: issue 15's "Adam-mini matches Adam on a small transformer from bilevel.transformer" claim: a cost probe
(Adam and Adam-mini, 200 steps on the ``tiny`` model, one jitted program, not a claim run) compiled in 34 s on this
loaded 2-core machine, far beyond the 6 s budget of this study.

The full config is the quick instance with 128 seeds (the sensitivity run above; a first full config with
block_dim 30, eps 1e-5 and 20000 steps was registered with df76097 but never run: about 3 TFLOP, beyond this
machine).

Settings from the papers: the eigenvalue ranges and the three blocks (as we read Sec. 3; reconstructed, see
:mod:`optim_theory.hessian_blocks`), Adam's betas (0.9, 0.999) and eps 1e-8, Adam-mini's update rule. Reconstructed:
block_dim, the intermediate levels, eps, the step grid, the cap, the blockwise step rule c / L_b.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optim_theory import hessian_blocks as hb
from optim_theory.adam_mini import adam_mini, second_moment_size
from ratelab.claims import Claim, Control
from ratelab.errors import RatelabError
from ratelab.registry import Experiment, Panel, Paper, register
from ratelab.runner import Trace, call, trace_from_arrays
from ratelab.validate import check_positive, check_positive_int

HESSIAN = Paper(
    key="zhang2024whyadam",
    authors="Y. Zhang, C. Chen, T. Ding, Z. Li, R. Sun and Z.-Q. Luo",
    title="Why Transformers Need Adam: A Hessian Perspective",
    venue="arXiv:2402.16788",
    year=2024,
    url="https://arxiv.org/abs/2402.16788",
)
SRC = "Zhang et al. (2024, arXiv:2402.16788), Sec. 3: quadratic case study, heterogeneous vs homogeneous blocks"
SRC_FIX = "Zhang et al. (2024, arXiv:2402.16788), Sec. 3-4: one learning rate per block would rescue GD"
SRC_MINI = "Zhang et al. (2024, arXiv:2406.16793), Adam-mini, Algorithm 1 and Sec. 2: one v per Hessian block"
SRC_DERIVED = "derived here: GD is rotation-equivariant; the global spectrum and eigen-coordinates are fixed over q"

METHODS = ("gd", "adam", "gd-blockwise", "adam-mini", "adam-mini-wrong", "adam-dense")


def levels(cfg: dict[str, Any]) -> np.ndarray:
    """The heterogeneity fractions q = n_own / block_dim of the config."""
    return np.asarray(cfg["n_own"], dtype=float) / cfg["block_dim"]


def level(spec: np.ndarray, q: np.ndarray, qd: np.ndarray, c: np.ndarray) -> dict[str, Any]:
    """One level's instance from its ``[B, m]`` block spectra, block rotation ``q``, dense rotation ``qd`` and
    eigen-coordinates ``c``: H = Q diag(spec) Q^T, x0 = Q c, the same for the dense rotation, per-coordinate 1 / L_b,
    the spectra and their JS distance."""
    m = spec.shape[1]
    return {"H": (q * spec.ravel()) @ q.T, "x0": q @ c, "Hd": (qd * spec.ravel()) @ qd.T, "xd": qd @ c,
            "inv_lb": np.repeat(1.0 / spec.max(axis=1), m), "spectra": spec, "js": hb.js_heterogeneity(spec)}


def stack_levels(rows: list[list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    """``[seeds][levels]`` of :func:`level` dicts stacked to arrays ``[seeds, levels, ...]`` per key."""
    return {k: np.stack([np.stack([lv[k] for lv in row]) for row in rows]) for k in rows[0][0]}


def problems(cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """The instances, NumPy-seeded from ``cfg["seed"]``: block H and x0 ``[seeds, levels, d(, d)]``, their dense
    rotations, per-coordinate 1 / L_b, the block spectra ``[seeds, levels, B, m]`` and the JS distance per level."""
    rng = np.random.default_rng(cfg["seed"])
    B, m = len(cfg["ranges"]), cfg["block_dim"]
    rows = []
    for _ in range(cfg["seeds"]):
        groups = hb.range_spectra(cfg["ranges"], m, rng)
        c = rng.standard_normal(B * m)  # eigen-coordinates, attached to groups.ravel()
        row = []
        for n_own in cfg["n_own"]:
            spec, src = hb.assign_blocks(groups, int(n_own))
            q = hb.block_rotation(B, m, rng)
            row.append(level(spec, q, hb.block_rotation(B, m, rng, mix=True), c[src]))
        rows.append(row)
    return stack_levels(rows)


def matvec(H: jax.Array, x: jax.Array) -> jax.Array:
    """H x for a dense ``H`` [d, d] or a block-diagonal one given by its blocks [B, m, m] (d = B m): the same
    product at a third of the flops for three blocks."""
    if H.ndim == 2:
        return H @ x
    return jnp.einsum("bij,bj->bi", H, x.reshape(H.shape[0], -1)).reshape(x.shape)


def diagonal_blocks(H: np.ndarray, n_blocks: int) -> np.ndarray:
    """The diagonal blocks [..., B, m, m] of block-diagonal matrices [..., d, d] (checked: nothing off them)."""
    m = H.shape[-1] // n_blocks
    blocks = np.stack([H[..., b * m:(b + 1) * m, b * m:(b + 1) * m] for b in range(n_blocks)], axis=-3)
    off = H.copy()
    for b in range(n_blocks):
        off[..., b * m:(b + 1) * m, b * m:(b + 1) * m] = 0.0
    if np.any(off):
        raise RatelabError("H must be block diagonal with n_blocks equal blocks")
    return blocks


def iterations(opt: optax.GradientTransformation, H: jax.Array, x0: jax.Array, eps: float, steps: int) -> jax.Array:
    """First t with f(x_t) <= eps f(x0) (``steps`` if never), f = x^T H x / 2, gradient H x (one product a step;
    ``H`` dense or its diagonal blocks, see :func:`matvec`)."""
    f0 = 0.5 * x0 @ matvec(H, x0)

    def body(carry, t):
        x, s, hit = carry
        g = matvec(H, x)
        hit = jnp.where((hit == steps) & (0.5 * x @ g <= eps * f0), t, hit)
        u, s = opt.update(g, s, x)
        return (x + u, s, hit), None

    (_, _, hit), _ = jax.lax.scan(body, (x0, opt.init(x0), jnp.asarray(steps)), jnp.arange(steps))
    return hit


def loss_curve(opt: optax.GradientTransformation, H: jax.Array, x0: jax.Array, steps: int) -> jax.Array:
    """f(x_t) / f(x0) for t = 0 .. steps - 1 (the notebook's curves)."""
    f0 = 0.5 * x0 @ H @ x0

    def body(carry, _):
        x, s = carry
        g = H @ x
        u, s = opt.update(g, s, x)
        return (x + u, s), 0.5 * x @ g / f0

    return jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)[1]


def optimizer(name: str, lr: Any, inv_lb: Any, n_blocks: int, block_dim: int,
              momentum: float = 0.0) -> optax.GradientTransformation:
    """The arm ``name`` of :data:`METHODS` at step ``lr`` (``adam-dense`` is optax.adam, run on the dense H); the GD
    arms use heavy-ball ``momentum`` (optax.sgd's trace; 0: plain GD)."""
    right, wrong = np.repeat(np.arange(n_blocks), block_dim), np.arange(n_blocks * block_dim) % n_blocks
    mom = momentum or None
    if name in ("adam", "adam-dense"):
        return optax.adam(lr)
    if name == "gd":
        return optax.sgd(lr, momentum=mom)
    if name == "gd-blockwise":
        return optax.chain(optax.stateless(lambda u, p: u * inv_lb), optax.sgd(lr, momentum=mom))
    if name == "adam-mini":
        return adam_mini(lr, right, n_blocks)
    if name == "adam-mini-wrong":
        return adam_mini(lr, wrong, n_blocks)
    raise RatelabError(f"method must be one of {', '.join(METHODS)}, got {name!r}")


def _grid(cfg: dict[str, Any]) -> np.ndarray:
    return np.geomspace(cfg["lr_min"], cfg["lr_max"], cfg["n_lr"])


def tuned_iterations(cfg: dict[str, Any], p: dict[str, np.ndarray], methods: tuple[str, ...], n_blocks: int,
                     desc: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Every arm of ``methods`` on every instance of ``p`` and step of the grid, one vmapped float64 program.
    Returns the tuned counts ``[seeds, levels]`` per arm (the fewest iterations over the grid, the smallest step on
    ties), the chosen steps (``lr_<arm>``) and the program's timings."""
    m, grid = cfg["block_dim"], _grid(cfg)
    with jax.enable_x64(True):
        def study(H, x0, Hd, xd, inv_lb, grid):
            out = {}
            for name in methods:
                def one(H, x, il, lr, name=name):
                    return iterations(optimizer(name, lr, il, n_blocks, m, cfg["momentum"]), H, x, cfg["eps"],
                                      cfg["steps"])
                over = jax.vmap(jax.vmap(jax.vmap(one, (None, None, None, 0)), (0, 0, 0, None)), (0, 0, 0, None))
                hs, xs = (Hd, xd) if name == "adam-dense" else (H, x0)
                out[name] = over(hs, xs, inv_lb, grid)  # [seeds, levels, lr]
            return out

        # the block-diagonal H by its blocks (a third of the flops); the dense rotations as they are
        out, timings = call(study, diagonal_blocks(p["H"], n_blocks), p["x0"], p["Hd"], p["xd"], p["inv_lb"], grid,
                            desc=desc)
    best = {k: np.min(v, axis=-1).astype(float) for k, v in out.items()}
    lr = {f"lr_{k}": grid[np.argmin(v, axis=-1)] for k, v in out.items()}
    return best, lr, timings


def ratio_metrics(best: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """The log2 count ratios both instances judge: GD / Adam (block and dense H), their growth from the first
    level, each arm's |log2| change from the first level, the fraction of arms at the cap."""
    out = {"log2_gd_over_adam": np.log2(best["gd"] / best["adam"]),
           "log2_gd_over_adam_dense": np.log2(best["gd"] / best["adam-dense"]),
           "abs_log2_gd_vs_homog": np.abs(np.log2(best["gd"] / best["gd"][:, :1])),
           "abs_log2_adam_vs_homog": np.abs(np.log2(best["adam"] / best["adam"][:, :1])),
           "capped_fraction": np.mean(np.stack([v >= steps for v in best.values()]), axis=0)}
    for name in ("", "_dense"):
        g = out[f"log2_gd_over_adam{name}"]
        out[f"log2_ratio_growth{name}"] = g - g[:, :1]
    return out


def _execute(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    del key  # the instances are NumPy-seeded from cfg["seed"]
    p = problems(cfg)
    B, m = len(cfg["ranges"]), cfg["block_dim"]
    best, lr, timings = tuned_iterations(cfg, p, METHODS, B, "hessian-blocks")
    with jax.enable_x64(True):  # shapes only: no eager programs
        probe = jax.ShapeDtypeStruct((B * m,), jnp.float64)
        size_mini, size_adam = (second_moment_size(jax.eval_shape(optimizer(k, 1e-3, 1.0, B, m).init, probe))
                                for k in ("adam-mini", "adam"))
    S, L = best["gd"].shape
    metrics = {
        **{f"iters_{k}": v for k, v in best.items()}, **lr, **ratio_metrics(best, cfg["steps"]),
        "log2_blockwise_over_adam": np.log2(best["gd-blockwise"] / best["adam"]),
        "log2_mini_over_adam": np.log2(best["adam-mini"] / best["adam"]),
        "log2_wrong_over_adam": np.log2(best["adam-mini-wrong"] / best["adam"]),
        "js_distance": p["js"],
        "nu_size_mini": np.full((S, L), float(size_mini)), "nu_size_adam": np.full((S, L), float(size_adam)),
    }
    return trace_from_arrays(levels(cfg), metrics, timings=timings)


_HOMOGENEOUS_WEAK = (
    "WEAK on this instance (pre-registered with df76097, then its control could not fail): with momentum matched to "
    "Adam's beta1 the claim holds (GD 1.75x faster than Adam at q = 0, log2 -0.81 [-0.90, -0.72] at 64 seeds) but its "
    "control, the same at q = 1, lands inside the band too (0.56 [0.42, 0.69]): Adam is only 1.5x ahead of GD with "
    "momentum on these 27-dimensional heterogeneous blocks, so the band cannot tell the two apart. "
    "hessian-blocks-scale's homogeneous-comparable, pre-registered as the decidable test (block scales spread "
    "100x), came out WEAK too")


def _claims(cfg: dict[str, Any]) -> list[Claim]:
    B = len(cfg["ranges"])
    return [
        Claim(id="homogeneous-comparable", statement="homogeneous blocks (q = 0, every block spans the whole "
              "spectrum): tuned GD and tuned Adam need comparable iterations to eps: |log2(iters GD / iters Adam)| "
              "<= 1.5", metric="log2_gd_over_adam", kind="value", expected=0.0, tolerance=1.5, window=(0.0, 0.0),
              source=SRC, known_failure=_HOMOGENEOUS_WEAK,
              controls=(Control("heterogeneous", "the same ratio at q = 1 (block b holds range b only, same global "
                                "spectrum), where the paper says GD falls behind", claim={"window": (1.0, 1.0)}),)),
        Claim(id="ratio-grows", statement="the GD/Adam iteration ratio grows with block heterogeneity at a fixed "
              "global spectrum: log2 ratio(q = 1) - log2 ratio(q = 0) >= 1 (at least doubles)",
              metric="log2_ratio_growth", kind="value", relation="ge", expected=1.5, tolerance=0.5,
              window=(1.0, 1.0), source=SRC,
              controls=(Control("dense-rotation", "Adam on one dense random rotation of each level's H (same "
                                "spectrum, no block structure in the coordinates): a coordinate-wise preconditioner "
                                "sees no heterogeneity, so Adam's advantage over GD must not grow",
                                claim={"metric": "log2_ratio_growth_dense"}),)),
        Claim(id="gd-invariant", statement="derived here: GD's tuned iteration count does not depend on the "
              "heterogeneity q (same global spectrum and eigen-coordinates, GD rotation-equivariant): max over seeds "
              "and levels of |log2(iters GD(q) / iters GD(0))| <= 0.01", metric="abs_log2_gd_vs_homog",
              kind="value", relation="le", expected=0.0, tolerance=0.01, window=(0.0, 1.0), statistic="max",
              source=SRC_DERIVED,
              controls=(Control("adam-counts", "the same on Adam's counts: Adam is not rotation-equivariant, its "
                                "diagonal preconditioner sees the blocks", claim={"metric": "abs_log2_adam_vs_homog"}),
                        )),
        Claim(id="blockwise-closes-gap", statement="with one step per block (c / L_b, c tuned), GD closes the gap at "
              "q = 1: log2(iters blockwise GD / iters Adam) <= 0.5", metric="log2_blockwise_over_adam",
              kind="value", relation="le", expected=0.0, tolerance=0.5, window=(1.0, 1.0), source=SRC_FIX,
              controls=(Control("single-step", "one global step for all blocks (plain GD) in place of blockwise GD",
                                claim={"metric": "log2_gd_over_adam"}),)),
        Claim(id="mini-matches-adam", statement="Adam-mini with one second moment per Hessian block is no slower "
              "than Adam at q = 1 beyond a factor 2^0.5: log2(iters Adam-mini / iters Adam) <= 0.5",
              metric="log2_mini_over_adam", kind="value", relation="le", expected=0.0, tolerance=0.5,
              window=(1.0, 1.0), source=SRC_MINI,
              controls=(Control("wrong-partition", "Adam-mini on blocks i mod 3, each cutting across all Hessian "
                                "blocks (one second moment averages gradients of all three ranges)",
                                claim={"metric": "log2_wrong_over_adam"}),)),
        Claim(id="mini-state-size", statement=f"Adam-mini's second-moment state has n_blocks = {B} entries (counted "
              "from the optax state, band +-0.5: an exact integer), not #parameters", metric="nu_size_mini",
              kind="value", expected=float(B), tolerance=0.5, statistic="max", source=SRC_MINI,
              controls=(Control("adam-state", "optax.adam's state in its place (#parameters entries)",
                                claim={"metric": "nu_size_adam"}),)),
    ]


def panels(xlabel: str) -> tuple[Panel, ...]:
    """Both instances' figure: GD's and Adam's tuned counts, their log2 ratio and the JS distance, against the
    level ``xlabel``."""
    return (
        Panel(metric="iters_gd", ylabel="iterations to eps (GD)", xlabel=xlabel, xscale="linear"),
        Panel(metric="iters_adam", ylabel="iterations to eps (Adam)", xlabel=xlabel, xscale="linear"),
        Panel(metric="log2_gd_over_adam", ylabel="log2 iters GD / Adam", xlabel=xlabel, xscale="linear",
              yscale="linear"),
        Panel(metric="js_distance", ylabel="JS distance of block spectra", xlabel=xlabel, xscale="linear",
              yscale="linear"),
    )


def _validate_grid(cfg: dict[str, Any]) -> None:
    """The settings both instances share: sizes, eps, the step grid."""
    for k in ("block_dim", "seeds", "steps", "n_lr"):
        check_positive_int(k, cfg[k])
    for k in ("eps", "lr_min", "lr_max"):
        check_positive(k, cfg[k])
    if cfg["lr_max"] <= cfg["lr_min"]:
        raise RatelabError(f"lr_max must exceed lr_min, got {cfg['lr_max']} <= {cfg['lr_min']}")


def _validate(cfg: dict[str, Any]) -> None:
    _validate_grid(cfg)
    n_own = list(cfg["n_own"])
    if not n_own or n_own[0] != 0 or n_own[-1] != cfg["block_dim"] or n_own != sorted(set(n_own)):
        raise RatelabError(f"n_own must increase strictly from 0 to block_dim = {cfg['block_dim']}, got {n_own}")
    groups = hb.range_spectra(cfg["ranges"], cfg["block_dim"], np.random.default_rng(0))
    for n in n_own:
        hb.assign_blocks(groups, int(n))


# momentum: the GD arms' heavy-ball coefficient, matched to Adam's beta1 = 0.9 (the paper's SGD has momentum)
_C = {"seed": 0, "x64": True, "ranges": hb.PAPER_RANGES, "lr_min": 1e-3, "lr_max": 1.9, "momentum": 0.9}

EXPERIMENT = register(Experiment(
    id="hessian-blocks",
    paper=HESSIAN,
    figure="iterations to eps vs block heterogeneity at a fixed global spectrum: GD, Adam, blockwise GD, Adam-mini",
    title="Block-heterogeneous quadratics (the paper's case study): tuned GD vs Adam vs Adam-mini, full batch",
    configs={
        # seeds: 6 left ratio-grows INCONCLUSIVE ("about 58 seeds would decide"); raised once to 64, nothing else.
        # steps is only the cap of the iteration count: with a cap of 4000 the tuned counts were <= 433 (every arm
        # and seed, capped_fraction 0), so the quick cap is 1000 (the same trace; a quarter of the run)
        "quick": {**_C, "block_dim": 9, "n_own": (0, 3, 6, 9), "seeds": 64, "eps": 1e-4, "steps": 1000,
                  "n_lr": 14, "log_every": 1},
        "full": {**_C, "block_dim": 9, "n_own": (0, 3, 6, 9), "seeds": 128, "eps": 1e-4, "steps": 4000,
                 "n_lr": 14, "log_every": 1},
    },
    execute=_execute,
    claims=_claims,
    panels=panels("heterogeneity q"),
    validate=_validate,
    tags=("optimizer", "adam"),
))

SCALE_METHODS = ("gd", "adam", "adam-dense")
SRC_SCALE = "derived here: Adam's update is invariant to a scalar scale of each block's gradient"


def scale_problems(cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """The block-scale instances (:func:`optim_theory.hessian_blocks.block_spectra`), NumPy-seeded: per seed one
    block rotation, one dense rotation and one x0 (eigen-coordinates c ~ N(0, I)), shared by every spread h, so a
    level differs from the first only by a scalar per block. Keys as :func:`problems`."""
    rng = np.random.default_rng(cfg["seed"])
    B, m = cfg["n_blocks"], cfg["block_dim"]
    rows = []
    for _ in range(cfg["seeds"]):
        c = rng.standard_normal(B * m)
        q, qd = hb.block_rotation(B, m, rng), hb.block_rotation(B, m, rng, mix=True)
        rows.append([level(hb.block_spectra(B, m, float(h), cfg["cond"]), q, qd, c) for h in cfg["spread"]])
    return stack_levels(rows)


def _execute_scale(cfg: dict[str, Any], key: jax.Array, **_: Any) -> Trace:
    del key  # the instances are NumPy-seeded from cfg["seed"]
    p = scale_problems(cfg)
    best, lr, timings = tuned_iterations(cfg, p, SCALE_METHODS, cfg["n_blocks"], "hessian-blocks-scale")
    metrics = {**{f"iters_{k}": v for k, v in best.items()}, **lr, **ratio_metrics(best, cfg["steps"]),
               "js_distance": p["js"]}
    return trace_from_arrays(np.asarray(cfg["spread"], dtype=float), metrics, timings=timings)


_SCALE_HOMOGENEOUS_WEAK = (
    "WEAK as measured (the pre-registered quick run, 32 seeds): the claim holds, log2 GD / Adam at h = 0 = -0.063 "
    "[-0.103, -0.025], but its control lands inside the band too, 1.05 [0.82, 1.28] at h = 2: GD's median count "
    "rises only from 75 to 142 (Adam's 76 to 72). The derivation overrated the rise: the target is the relative "
    "total loss, and at h = 2 the small-scale blocks carry 1 % and 10 % of f(x0), so GD need not converge them far")
_SCALE_INVARIANT_FAIL = (
    "FAIL as measured (0.35 at 32 seeds; control, GD's counts, 2.65 FAIL): the derivation is right about the "
    "iterates and wrong about the count. At a fixed step Adam's iterates at h = 0 and h = 2 agree to 3e-5 over 120 "
    "steps and every block's relative loss is the same, but the stopping rule weighs the blocks by their scales "
    "(f = sum_b s_b f_b), so the first t with f <= eps f(x0) moves with h (78 vs 74 on seed 0) and the tuned step "
    "can move with it")
_SCALE_GROWTH_OPEN = (
    "INCONCLUSIVE as measured: 1.12 [0.88, 1.34] at 32 seeds; a 128-seed sensitivity run gave 1.007 [0.907, 1.117], "
    "on the bound (the harness: about 27200 seeds would decide). The growth is about one doubling, where the "
    "derivation expected more, for the reason given under homogeneous-comparable")


def _claims_scale(cfg: dict[str, Any]) -> list[Claim]:
    top = float(cfg["spread"][-1])
    return [
        Claim(id="homogeneous-comparable", statement="homogeneous blocks (h = 0: every block has the same spectrum): "
              "tuned GD with momentum and tuned Adam need comparable iterations to eps: |log2(iters GD / iters "
              "Adam)| <= 1.5", metric="log2_gd_over_adam", kind="value", expected=0.0, tolerance=1.5,
              window=(0.0, 0.0), source=SRC, known_failure=_SCALE_HOMOGENEOUS_WEAK,
              controls=(Control("scale-spread", f"the same ratio at h = {top:g} (block scales spread 10^{top:g}): "
                                "GD's one step is set by the largest block and its count grows with the global "
                                "condition number, Adam's does not (derived), so the ratio must leave the band",
                                claim={"window": (top, top)}),)),
        Claim(id="adam-scale-invariant", statement="derived here: Adam's tuned count does not depend on the block "
              "scales (m / sqrt(v) is unchanged when a block's gradient is scaled; eps = 1e-8 aside): max over seeds "
              "and levels of |log2(iters Adam(h) / iters Adam(0))| <= 0.1", metric="abs_log2_adam_vs_homog",
              kind="value", relation="le", expected=0.0, tolerance=0.1, window=(0.0, top), statistic="max",
              source=SRC_SCALE, known_failure=_SCALE_INVARIANT_FAIL,
              controls=(Control("gd-counts", "the same on GD's counts: one global step, set by the largest "
                                "curvature, slows the small-scale blocks", claim={"metric": "abs_log2_gd_vs_homog"}),
                        )),
        Claim(id="ratio-grows", statement=f"the GD/Adam iteration ratio grows with the block scale spread: log2 "
              f"ratio(h = {top:g}) - log2 ratio(h = 0) >= 1 (at least doubles)", metric="log2_ratio_growth",
              kind="value", relation="ge", expected=1.5, tolerance=0.5, window=(top, top), source=SRC,
              known_failure=_SCALE_GROWTH_OPEN,
              controls=(Control("dense-rotation", "Adam on one dense random rotation of each level's H (same "
                                "spectrum, no block structure in the coordinates): a coordinate-wise preconditioner "
                                "cannot undo the block scales there, so its advantage over GD must not grow",
                                claim={"metric": "log2_ratio_growth_dense"}),)),
    ]


def _validate_scale(cfg: dict[str, Any]) -> None:
    check_positive_int("n_blocks", cfg["n_blocks"])
    _validate_grid(cfg)
    spread = list(cfg["spread"])
    if len(spread) < 2 or spread[0] != 0 or spread != sorted(set(spread)):
        raise RatelabError(f"spread must increase strictly from 0 (homogeneous), at least two levels, got {spread}")
    hb.block_spectra(cfg["n_blocks"], cfg["block_dim"], float(spread[-1]), cfg["cond"])  # its own checks


# Pre-registered (claims, bands and configs written before the first run of this instance). cond: each block's
# condition number, so the global one at h = 2 is 1e4, the order of the range instance's 5000; every other setting
# is hessian-blocks' (the grid, eps, momentum, block sizes).
_S = {"seed": 0, "x64": True, "n_blocks": 3, "block_dim": 9, "cond": 100.0, "spread": (0.0, 1.0, 2.0),
      "lr_min": 1e-3, "lr_max": 1.9, "n_lr": 14, "momentum": 0.9, "eps": 1e-4, "steps": 4000, "log_every": 1}

EXPERIMENT_SCALE = register(Experiment(
    id="hessian-blocks-scale",
    paper=HESSIAN,
    figure="iterations to eps vs the spread of block scales: tuned GD with momentum vs Adam (block and dense H)",
    title="Quadratics with equal block spectra scaled apart: tuned GD vs Adam, the homogeneous case decided",
    configs={"quick": {**_S, "seeds": 32}, "full": {**_S, "seeds": 128}},
    execute=_execute_scale,
    claims=_claims_scale,
    panels=panels("scale spread h"),
    validate=_validate_scale,
    tags=("optimizer", "adam"),
))
