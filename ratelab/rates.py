"""Fitting rates to measured curves, with bootstrap confidence intervals over seeds.

All fits work on per-seed curves ``values[seeds, n]``: the estimate is computed on the mean curve over seeds
(the Monte Carlo estimate of the expectation that a theorem bounds), and the interval comes from resampling
seeds with replacement. A 1-D ``values`` is one curve: its interval is the OLS t-interval instead.

* :func:`fit_power_law` -- ``E value(x) ~ C x^p``: exponent p and prefactor C over a window of x.
* :func:`fit_constant` -- C in ``E value(x) ~ C x^p`` for a known p (e.g. Chung's constant for p = -1).
* :func:`fit_level` -- the level E value averaged over a window of x (a floor, a violation, a ratio).
* :func:`samples_to_reach` / :func:`fit_sample_complexity` -- samples N(eps) needed to reach eps, and the
  exponent q in ``N(eps) ~ eps^q``.
* :func:`running_mean` / :func:`running_min` -- turn per-block values into (1/K) sum_k and min_k curves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from ratelab.errors import RatelabError
from ratelab.validate import check_choice, check_in_range, check_positive_int

TRANSFORMS = ("none", "running_mean", "running_min")
STATISTICS = ("mean", "max", "wilson")


@dataclass(frozen=True)
class Fit:
    """A fitted power law ``y ~ constant * x ** exponent`` with intervals at level ``level``."""

    exponent: float
    exponent_ci: tuple[float, float]
    constant: float
    constant_ci: tuple[float, float]
    window: tuple[float, float]
    n_points: int
    n_seeds: int
    level: float

    def as_dict(self) -> dict:
        return asdict(self)


def running_mean(values: np.ndarray) -> np.ndarray:
    """``out[..., k] = mean(values[..., :k + 1])`` (exact averages when blocks have equal length)."""
    values = np.asarray(values, dtype=float)
    return np.cumsum(values, axis=-1) / np.arange(1, values.shape[-1] + 1)


def running_min(values: np.ndarray) -> np.ndarray:
    """``out[..., k] = min(values[..., :k + 1])``."""
    return np.minimum.accumulate(np.asarray(values, dtype=float), axis=-1)


def transform(values: np.ndarray, name: str) -> np.ndarray:
    """Apply one of :data:`TRANSFORMS` along the last axis."""
    if name == "none":
        return np.asarray(values, dtype=float)
    if name == "running_mean":
        return running_mean(values)
    if name == "running_min":
        return running_min(values)
    raise RatelabError(f"transform must be one of {', '.join(map(repr, TRANSFORMS))}, got {name!r}")


def _as_curves(x: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    v = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise RatelabError(f"x must be 1-D, got shape {x.shape}")
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != x.shape[0]:
        raise RatelabError(f"values must have shape [seeds, {x.shape[0]}] or [{x.shape[0]}], got {np.shape(values)}")
    return x, v


def _window_points(x: np.ndarray, window: tuple[float, float] | None, max_points: int) -> np.ndarray:
    """Indices of x inside the window, thinned to about ``max_points`` log-uniformly spaced ones."""
    pos = np.flatnonzero(x > 0)
    if pos.size == 0:
        raise RatelabError("x must contain positive values for a log-log fit")
    lo, hi = (x[pos].min(), x[pos].max()) if window is None else window
    if not (0 < lo < hi):
        raise RatelabError(f"window must satisfy 0 < low < high, got {window}")
    inside = pos[(x[pos] >= lo) & (x[pos] <= hi)]
    if inside.size < 3:
        raise RatelabError(f"window {window} holds {inside.size} points of x; at least 3 are needed")
    order = inside[np.argsort(x[inside])]
    targets = np.geomspace(x[order[0]], x[order[-1]], max_points)
    picks = np.unique(np.clip(np.searchsorted(x[order], targets), 0, order.size - 1))
    return order[picks]


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of ly (..., n) on lx (n,)."""
    xc = lx - lx.mean()
    slope = (ly - ly.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)
    return slope, ly.mean(axis=-1) - slope * lx.mean()


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [alpha, 100 - alpha])
    return float(lo), float(hi)


def _bootstrap_means(v: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` mean curves of seeds resampled with replacement."""
    rng = np.random.default_rng(seed)
    seeds = v.shape[0]
    idx = rng.integers(0, seeds, size=(n_boot, seeds))
    # Mean of resampled rows via counts: [n_boot, seeds] @ [seeds, n]. The counts are exact integers, one bincount
    # per resample (a tenth of the time of np.add.at on 6000 seeds, and the very same numbers).
    counts = np.empty((n_boot, seeds))
    for b, row in enumerate(idx):
        counts[b] = np.bincount(row, minlength=seeds)
    return counts @ v / seeds


def fit_power_law(x: np.ndarray, values: np.ndarray, *, window: tuple[float, float] | None = None,
                  level: float = 0.95, n_boot: int = 2000, seed: int = 0, max_points: int = 64) -> Fit:
    """Fit ``mean_seeds(values) ~ C x^p`` on log-log axes over ``window`` (x-range; default: all x > 0).

    Args:
      x: ``[n]`` abscissae (iterations, samples, eps).
      values: ``[seeds, n]`` per-seed values (already transformed: last iterate, running mean or min).
      window: ``(low, high)`` range of x used for the fit.
      level: confidence level of the intervals.
      n_boot: bootstrap resamples of the seeds.
      max_points: the window is thinned to this many log-uniform points so the tail does not dominate.
    """
    check_in_range("level", level, 0.0, 1.0, closed="neither")
    check_positive_int("n_boot", n_boot)
    x, v = _as_curves(x, values)
    idx = _window_points(x, window, max_points)
    lx = np.log(x[idx])
    mean = v[:, idx].mean(axis=0)
    if np.any(~np.isfinite(mean)) or np.any(mean <= 0):
        raise RatelabError("values must be finite and have a positive mean over seeds inside the window")
    slope, icpt = _ols(lx, np.log(mean))
    if v.shape[0] >= 2:
        boot = _bootstrap_means(v[:, idx], n_boot, seed)
        boot = np.log(np.maximum(boot, np.finfo(float).tiny))
        bs, bi = _ols(lx, boot)
        s_ci, c_ci = _percentile_ci(bs, level), _percentile_ci(np.exp(bi), level)
    else:
        n = lx.size
        resid = np.log(mean) - (icpt + slope * lx)
        se = np.sqrt(resid @ resid / max(n - 2, 1) / ((lx - lx.mean()) @ (lx - lx.mean())))
        t = stats.t.ppf(0.5 + level / 2, max(n - 2, 1))
        s_ci = (float(slope - t * se), float(slope + t * se))
        c_ci = (float(np.exp(icpt)), float(np.exp(icpt)))
    return Fit(float(slope), s_ci, float(np.exp(icpt)), c_ci, (float(x[idx].min()), float(x[idx].max())),
               int(idx.size), int(v.shape[0]), float(level))


def fit_constant(x: np.ndarray, values: np.ndarray, exponent: float, *, window: tuple[float, float] | None = None,
                 level: float = 0.95, n_boot: int = 2000, seed: int = 0, max_points: int = 64) -> Fit:
    """C in ``E value(x) ~ C x^exponent``: the log-uniform average of ``mean_seeds(values) * x^-exponent`` over the
    window, with a bootstrap interval over seeds. The returned ``exponent`` is the one given (interval of width 0)."""
    check_in_range("level", level, 0.0, 1.0, closed="neither")
    x, v = _as_curves(x, values)
    idx = _window_points(x, window, max_points)
    scale = x[idx] ** (-float(exponent))
    est = float((v[:, idx].mean(axis=0) * scale).mean())
    if v.shape[0] >= 2:
        boot = (_bootstrap_means(v[:, idx], n_boot, seed) * scale).mean(axis=1)
        ci = _percentile_ci(boot, level)
    else:
        ci = (est, est)
    return Fit(float(exponent), (float(exponent), float(exponent)), est, ci,
               (float(x[idx].min()), float(x[idx].max())), int(idx.size), int(v.shape[0]), float(level))


def fit_level(x: np.ndarray, values: np.ndarray, *, window: tuple[float, float] | None = None,
              level: float = 0.95, n_boot: int = 2000, seed: int = 0, statistic: str = "mean") -> Fit:
    """The level of ``values`` over the x inside ``window`` (default: the last x only).

    ``statistic="mean"``: the mean over seeds of each seed's average over the window, with a bootstrap interval over
    seeds (a t-interval over the window's points for one curve). ``statistic="max"``: the worst case, the largest
    value of any seed anywhere in the window (an interval of width 0): for invariants such as feasibility.
    ``statistic="wilson"``: each seed's values are success indicators (0 or 1) and the level is the fraction of
    successes over seeds and window points, with the Wilson score interval (:func:`wilson_interval`).
    Returned as ``constant`` / ``constant_ci`` of a :class:`Fit` with exponent 0."""
    check_in_range("level", level, 0.0, 1.0, closed="neither")
    check_positive_int("n_boot", n_boot)
    check_choice("statistic", statistic, STATISTICS)
    x, v = _as_curves(x, values)
    if window is None:
        idx = np.array([x.size - 1])
    else:
        lo, hi = window
        idx = np.flatnonzero((x >= lo) & (x <= hi))
        if idx.size == 0:
            raise RatelabError(f"window {window} holds no point of x (range [{x.min():g}, {x.max():g}])")
    if not np.all(np.isfinite(v[:, idx])):
        raise RatelabError("values must be finite inside the window")
    if statistic == "max":
        worst = float(v[:, idx].max())
        return Fit(0.0, (0.0, 0.0), worst, (worst, worst), (float(x[idx].min()), float(x[idx].max())),
                   int(idx.size), int(v.shape[0]), float(level))
    if statistic == "wilson":
        hits = v[:, idx]
        if not np.all((hits == 0) | (hits == 1)):
            raise RatelabError("statistic 'wilson' needs success indicators: values must be 0 or 1 in the window")
        k, n = int(hits.sum()), int(hits.size)
        return Fit(0.0, (0.0, 0.0), k / n, wilson_interval(k, n, level), (float(x[idx].min()), float(x[idx].max())),
                   int(idx.size), int(v.shape[0]), float(level))
    per_seed = v[:, idx].mean(axis=1)
    est = float(per_seed.mean())
    if per_seed.size >= 2:
        ci = _percentile_ci(_bootstrap_means(per_seed[:, None], n_boot, seed)[:, 0], level)
    elif idx.size >= 2:
        pts = v[0, idx]
        half = stats.t.ppf(0.5 + level / 2, idx.size - 1) * pts.std(ddof=1) / np.sqrt(idx.size)
        ci = (est - float(half), est + float(half))
    else:
        ci = (est, est)
    return Fit(0.0, (0.0, 0.0), est, (float(ci[0]), float(ci[1])), (float(x[idx].min()), float(x[idx].max())),
               int(idx.size), int(v.shape[0]), float(level))


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n),
    p = successes / trials, z the normal quantile at (1 + level) / 2 (Wilson 1927). It stays inside [0, 1] and is not
    degenerate at 0 or n successes, unlike the normal (Wald) or a bootstrap interval."""
    check_positive_int("trials", trials)
    if not 0 <= successes <= trials:
        raise RatelabError(f"successes must be in [0, {trials}], got {successes}")
    check_in_range("level", level, 0.0, 1.0, closed="neither")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p, n = successes / trials, trials
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - half) / (1 + z * z / n))), float(min(1.0, (centre + half) / (1 + z * z / n)))


def samples_to_reach(samples: np.ndarray, values: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``[seeds, len(eps)]``: the first ``samples[i]`` with ``values[s, i] <= eps[j]`` (``inf`` if never)."""
    samples, v = _as_curves(samples, values)
    eps = np.atleast_1d(np.asarray(eps, dtype=float))
    hit = v[:, None, :] <= eps[None, :, None]
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), samples[first], np.inf)


def fit_sample_complexity(samples: np.ndarray, values: np.ndarray, eps: np.ndarray, *, level: float = 0.95,
                          n_boot: int = 2000, seed: int = 0) -> Fit:
    """Exponent q in ``E N(eps) ~ C eps^q``, N(eps) the samples a seed needs until ``values <= eps``.

    ``values`` should be monotone per seed (a running minimum or a running average of a stationarity measure).
    Every eps must be reached by every seed; otherwise the error names the eps that were not.
    """
    eps = np.sort(np.atleast_1d(np.asarray(eps, dtype=float)))[::-1]
    if eps.size < 3 or np.any(eps <= 0):
        raise RatelabError(f"eps must hold at least 3 positive values, got {eps.tolist()}")
    n = samples_to_reach(samples, values, eps)
    missed = eps[~np.isfinite(n).all(axis=0)]
    if missed.size:
        raise RatelabError(f"eps {missed.tolist()} not reached by every seed within the run; use larger eps or more "
                           f"steps")
    return fit_power_law(eps, n, level=level, n_boot=n_boot, seed=seed, max_points=eps.size)
