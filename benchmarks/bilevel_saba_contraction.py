"""SABA's linear convergence on the strongly convex finite-sum quadratic, with its controls (Dagreou et al. 2022,
arXiv:2201.13409, Theorem 3). Per-step contraction factor exp(slope of log rel. suboptimality), fitted per seed over
a window registered before looking (SABA: steps 100..1000; controls: 1000..2000), mean over 10 seeds with a
percentile-bootstrap 95 % interval. Controls: SABA with its memory frozen at the initial pass (``refresh=False``) and
SOBA (no variance reduction), same steps, must plateau (contraction ~ 1).

    PYTHONPATH=$PWD python benchmarks/bilevel_saba_contraction.py

The registered claim is ``ratelab run saba-linear`` (experiments/bilevel_peers.py): the same instance, judged against
the full-batch framework map's rho(M)^2 on a window derived from M's spectrum (steps 197..1136), not this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bilevel.finite_sum import make_finite_sum_quadratic  # noqa: E402
from bilevel.stochastic import saba, soba  # noqa: E402
from ratelab.runner import run  # noqa: E402


def contraction(steps: np.ndarray, rel: np.ndarray, lo: int, hi: int, rng: np.random.Generator):
    w = (steps >= lo) & (steps <= hi)
    per_seed = np.exp([np.polyfit(steps[w], np.log(np.maximum(r[w], 1e-300)), 1)[0] for r in rel])
    boots = per_seed[rng.integers(0, len(per_seed), (2000, len(per_seed)))].mean(1)
    return per_seed.mean(), np.percentile(boots, [2.5, 97.5])


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    p = make_finite_sum_quadratic(0, n_inner=64, n_outer=64, dim_inner=10, dim_outer=5, inner_batch=4,
                                  outer_batch=4)
    rng = np.random.default_rng(0)
    runs = {"SABA": (saba(inner_lr=0.3, outer_lr=0.1), (100, 1000)),
            "SABA, memory frozen (control)": (saba(inner_lr=0.3, outer_lr=0.1, refresh=False), (1000, 2000)),
            "SOBA, no variance reduction (control)": (soba(inner_lr=0.3, outer_lr=0.1), (1000, 2000))}
    for name, (solver, (lo, hi)) in runs.items():
        tr = run(solver, p, jax.random.key(0), steps=2000, seeds=10, log_every=50)
        rel = np.asarray(tr.metrics["rel_subopt"])
        m, ci = contraction(tr.steps, rel, lo, hi, rng)
        print(f"{name}: contraction per step {m:.5f} [{ci[0]:.5f}, {ci[1]:.5f}] over steps {lo}..{hi}; "
              f"median final rel. subopt {np.median(rel[:, -1]):.2e}")


if __name__ == "__main__":
    main()
