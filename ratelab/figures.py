"""Figures: log-log curves, mean over seeds with shaded bands, fitted and claimed slopes as reference lines.

Diverged seeds are never drawn as data: they are left out and counted in the panel.
"""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import asdict
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ratelab.claims import Claim, Verdict, overall_status
from ratelab.errors import RatelabError
from ratelab.io import atomic_write
from ratelab.rates import samples_to_reach, transform
from ratelab.registry import Experiment, Panel
from ratelab.report import claimed_text
from ratelab.runner import Trace

_Z95 = 1.959963984540054
_HUGE = 1e100  # plotted values beyond this (an overflowing reference, a diverging control) are left out


def _plottable(y: Any) -> np.ndarray:
    """``y`` as floats with non-finite and astronomically large values masked (NaN), so axes stay drawable."""
    y = np.asarray(y, dtype=float)
    return np.where(np.isfinite(y) & (np.abs(y) < _HUGE), y, np.nan)


def _slice(values: np.ndarray, diverged: np.ndarray, index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    for i in index:
        values, diverged = values[i], diverged[i]
    return values, diverged


def _on_panel(claim: Claim, panel: Panel) -> bool:
    return (claim.kind != "sample_complexity" and claim.metric == panel.metric and claim.transform == panel.transform
            and tuple(claim.index) == tuple(panel.index) and claim.samples_per_step == panel.samples_per_step)


def _band(ax, x: np.ndarray, per_seed: np.ndarray, label: str, color: Any, *, log: bool = True) -> np.ndarray:
    """Mean over seeds, its 95% confidence band and (on log axes) the 10-90% spread of the seeds."""
    mean = per_seed.mean(axis=0)
    floor = np.finfo(float).tiny if log else -np.inf
    if per_seed.shape[0] > 1:
        if log:
            lo_q, hi_q = np.percentile(per_seed, [10, 90], axis=0)
            ax.fill_between(x, np.maximum(lo_q, floor), hi_q, color=color, alpha=0.12, lw=0, label="10-90% of seeds")
        se = per_seed.std(axis=0, ddof=1) / np.sqrt(per_seed.shape[0])
        low = mean - _Z95 * se
        if log:  # a normal interval reaching below 0 says nothing on log axes: cut it at the seeds' 10% quantile
            low = np.where(low > 0, low, np.maximum(lo_q, floor))
        ax.fill_between(x, low, mean + _Z95 * se, color=color, alpha=0.35, lw=0, label="95% CI of mean")
    ax.plot(x, mean, color=color, lw=1.6, label=label)
    return mean


def _verdict_lines(ax, v: Verdict) -> None:
    """Fitted and claimed slopes over the fit window (log-log axes)."""
    if v.fit is None:
        return
    c = v.claim
    lo, hi = v.fit.window
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, v.fit.constant * xs ** v.fit.exponent, color="tab:red", lw=1.2,
            label=f"fit slope {v.measured:.3f} [{v.ci[0]:.3f}, {v.ci[1]:.3f}]")
    anchor = np.sqrt(lo * hi)
    y_anchor = v.fit.constant * anchor ** v.fit.exponent
    ax.plot(xs, y_anchor * (xs / anchor) ** c.expected, color="k", ls=":", lw=1.5,
            label=f"claimed slope {c.expected:.3g}  ({v.status})")


def _constant_panel(ax, v: Verdict, panel: Panel, cfg: dict, trace: Trace) -> None:
    """``x^-p * E value`` against x: it flattens to the constant; measured C with its interval against claimed C."""
    c = v.claim
    values, diverged = _slice(trace[c.metric], trace.diverged, c.index)
    x = trace.steps * c.samples_per_step
    scale = x ** (-float(c.exponent))
    ok = ~diverged
    mean = None
    if ok.any():
        mean = _band(ax, x, transform(values[ok], c.transform) * scale, f"mean over {int(ok.sum())} seeds",
                     "tab:blue", log=False)
    if panel.reference is not None:
        ax.plot(x, _plottable(panel.reference(cfg, trace.steps) * scale), color="0.3", ls="--", lw=1.0,
                label=panel.reference_label)
    lo, hi = c.band()
    ax.axhspan(lo, hi, color="k", alpha=0.08, lw=0, label=f"claimed C = {c.expected:.4g} +-{100 * c.tolerance:g}%")
    ax.axhline(c.expected, color="k", ls="--", lw=1.2)
    if v.fit is not None:
        w0, w1 = v.fit.window
        ax.fill_between([w0, w1], v.ci[0], v.ci[1], color="tab:red", alpha=0.3, lw=0)
        ax.plot([w0, w1], [v.measured] * 2, color="tab:red", lw=1.4,
                label=f"measured C = {v.measured:.4g} [{v.ci[0]:.4g}, {v.ci[1]:.4g}]  ({v.status})")
    if mean is not None:
        ax.set_ylim(0, 1.6 * max(np.nanmax(mean[x >= x[-1] / 100]), hi))
    ax.set_xscale("log")
    ax.set_xlabel(panel.xlabel)
    p = f"{-c.exponent:g}"
    ax.set_ylabel(f"x^{p} * {c.metric}" if c.exponent != -1 else f"k * {panel.ylabel}")
    ax.set_title(f"{c.id}: the constant", fontsize=10)


def _curve_panel(ax, panel: Panel, cfg: dict, trace: Trace, verdicts: list[Verdict]) -> None:
    values, diverged = _slice(trace[panel.metric], trace.diverged, panel.index)
    x = trace.steps * panel.samples_per_step
    ok = ~diverged
    if ok.any():
        per_seed = transform(values[ok], panel.transform)
        _band(ax, x, per_seed, f"mean over {int(ok.sum())} seeds", "tab:blue", log=panel.yscale == "log")
    if panel.reference is not None:
        ax.plot(x, _plottable(panel.reference(cfg, trace.steps)), color="0.3", ls="--", lw=1.0,
                label=panel.reference_label)
    for v in verdicts:
        if _on_panel(v.claim, panel) and v.claim.kind == "exponent":
            _verdict_lines(ax, v)
        elif _on_panel(v.claim, panel) and v.claim.kind == "value":
            _value_lines(ax, v)
        if _on_panel(v.claim, panel):
            _control_curves(ax, v)
    if diverged.any():
        ax.text(0.02, 0.02, f"{int(diverged.sum())} of {diverged.size} seeds diverged (not drawn)",
                transform=ax.transAxes, color="tab:red", fontsize=9)
    ax.set_xscale(panel.xscale)
    ax.set_yscale(panel.yscale)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel + ("" if panel.transform == "none" else f" ({panel.transform.replace('_', ' ')})"))
    if panel.label:
        ax.set_title(panel.label, fontsize=10)


_CONTROL_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:olive")


def _control_curves(ax, v: Verdict) -> None:
    """Each control's mean curve (the claim judged on it), dashed, with the control's verdict in the label."""
    drawn: set[int] = set()
    for i, cv in enumerate(v.controls):
        if cv.trace is None or cv.claim.kind == "sample_complexity":
            continue
        values, diverged = _slice(cv.trace[cv.claim.metric], cv.trace.diverged, cv.claim.index)
        ok = ~diverged
        key = id(cv.trace) ^ hash(cv.claim.metric)
        if not ok.any() or key in drawn:
            continue
        drawn.add(key)
        mean = transform(values[ok], cv.claim.transform).mean(axis=0)
        ax.plot(cv.trace.steps * cv.claim.samples_per_step, _plottable(mean), color=_CONTROL_COLORS[i % 4],
                ls="--", lw=1.3,
                label=f"control {cv.claim.id.split('/', 1)[-1]}: {cv.status} "
                      f"({cv.measured:.3g} [{cv.ci[0]:.3g}, {cv.ci[1]:.3g}])")


def _complexity_panel(ax, v: Verdict, trace: Trace) -> None:
    c = v.claim
    values, diverged = _slice(trace[c.metric], trace.diverged, c.index)
    eps = np.sort(np.asarray(c.eps, dtype=float))
    ok = ~diverged
    n = samples_to_reach(trace.steps * c.samples_per_step, transform(values[ok], c.transform), eps)
    finite = np.isfinite(n).all(axis=0)
    if finite.any():
        _band(ax, eps[finite], n[:, finite], "mean samples to reach eps", "tab:green")
    _verdict_lines(ax, v)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target eps")
    ax.set_ylabel(f"samples until {c.metric} <= eps")
    ax.set_title(c.id, fontsize=10)


def _drawable_scales(ax) -> None:
    """A log axis with no positive finite data to show (every seed diverged) falls back to linear, with a note."""
    for name, minpos in (("x", ax.dataLim.minposx), ("y", ax.dataLim.minposy)):
        if getattr(ax, f"get_{name}scale")() == "log" and not np.isfinite(minpos):
            getattr(ax, f"set_{name}scale")("linear")
            ax.text(0.5, 0.5, "no finite positive values to draw", transform=ax.transAxes, ha="center",
                    color="tab:red")


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure atomically to ``path`` (PNG) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _value_lines(ax, v: Verdict) -> None:
    """A level claim: the claimed bound(s) and the measured level with its interval, over the window."""
    if v.fit is None:
        return
    c = v.claim
    w0, w1 = v.fit.window
    label = f"{c.id}: {v.measured:.3g} [{v.ci[0]:.3g}, {v.ci[1]:.3g}]"
    if w0 == w1:
        # a percentile interval can miss its estimate by rounding (values near 1e-14): never a negative bar
        yerr = [[max(v.measured - v.ci[0], 0.0)], [max(v.ci[1] - v.measured, 0.0)]]
        ax.errorbar([w1], [v.measured], yerr=yerr, color="tab:red",
                    marker="o", ms=4, capsize=3, label=label)
    else:
        ax.plot([w0, w1], [v.measured] * 2, color="tab:red", lw=1.4, label=label)
    lo, hi = c.band()
    bounds = {"eq": (lo, hi), "le": (hi,), "ge": (lo,)}[c.relation]
    claimed = f"claimed {claimed_text(asdict(c))}  ({v.status})"
    for i, bound in enumerate(bounds):
        ax.axhline(bound, color="k", ls=":", lw=1.2, label=claimed if i == 0 else None)


def draw(panels: tuple[Panel, ...] | list[Panel], cfg: dict, trace: Trace, verdicts: list[Verdict],
         title: str) -> Any:
    """The figure of ``trace``: one axes per panel, then one per constant claim on a panel and one per
    sample-complexity claim. Returns the matplotlib Figure (open)."""
    complexity = [v for v in verdicts if v.claim.kind == "sample_complexity"]
    constants = [(v, p) for v in verdicts for p in panels if v.claim.kind == "constant" and _on_panel(v.claim, p)]
    n = len(panels) + len(constants) + len(complexity)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 5.0), squeeze=False)
    axes_iter = iter(axes[0])
    for panel in panels:
        _curve_panel(next(axes_iter), panel, cfg, trace, verdicts)
    for v, panel in constants:
        _constant_panel(next(axes_iter), v, panel, cfg, trace)
    for v in complexity:
        _complexity_panel(next(axes_iter), v, trace)
    for ax in axes[0]:
        _drawable_scales(ax)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7.5, loc="best")
    fig.suptitle(title, fontsize=10)
    _fixed_margins(fig, n, title.count("\n") + 1)
    return fig


def _fixed_margins(fig, n_axes: int, title_lines: int) -> None:
    """Margins in inches for one row of 6.5 x 5 in panels: what ``tight_layout`` finds for these panels (tick labels,
    axis labels, a suptitle of ``title_lines`` lines), without the extra full draw it costs (a third of a figure's
    time)."""
    width, height = fig.get_size_inches()
    left, right, gap, bottom = 1.2, 0.15, 1.3, 0.55
    top = 0.35 + 0.17 * title_lines
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / ((width - left - right - gap * (n_axes - 1)) / n_axes))


def title_text(exp: Experiment, status: str, overrides: dict[str, Any] | None = None) -> str:
    """The figure's title: paper, figure and status, the experiment's title, and the ``--set`` overrides if any."""
    width = int(80 * (len(exp.panels) + 1))
    text = f"{exp.paper.short}, {exp.figure}: {status}\n{textwrap.fill(exp.title, width=width)}"
    if overrides:
        text += "\n" + textwrap.fill("overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items()), width=width)
    return text


def plot_experiment(exp: Experiment, cfg: dict, trace: Trace, verdicts: list[Verdict],
                    path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> None:
    """Draw the experiment's figure and write it atomically to ``path`` (PNG); the title shows ``overrides``."""
    status = overall_status(v.status for v in verdicts)
    save_figure(draw(exp.panels, cfg, trace, verdicts, title_text(exp, status, overrides)), path)


def plot_trace(trace: Trace, metrics: str | list[str] | None = None, verdicts: Any = (), *, xlabel: str = "k",
               title: str = "", yscale: str = "log", xscale: str = "log") -> Any:
    """The figure of a Trace, as the CLI draws an experiment's: one panel per metric (default: the verdicts'
    metrics, else every metric), each verdict's fitted and claimed lines on its panel, constant and
    sample-complexity claims on panels of their own. Returns the matplotlib Figure."""
    verdicts = [verdicts] if isinstance(verdicts, Verdict) else list(verdicts)
    panels: list[Panel] = []
    for v in verdicts:
        c = v.claim
        if c.kind in ("exponent", "value", "constant"):
            p = Panel(metric=c.metric, ylabel=c.metric, transform=c.transform, xlabel=xlabel, index=tuple(c.index),
                      samples_per_step=c.samples_per_step, label=c.id, xscale=xscale, yscale=yscale)
            if p not in panels:
                panels.append(p)
    names = [metrics] if isinstance(metrics, str) else list(metrics or ([] if verdicts else trace.metrics))
    for m in names:
        trace[m]  # a clear error for an unknown metric
        if not any(p.metric == m for p in panels):
            panels.append(Panel(metric=m, ylabel=m, xlabel=xlabel, label=m, xscale=xscale, yscale=yscale))
    if not panels and not verdicts:
        raise RatelabError("metrics must name at least one metric of the trace")
    if not title and verdicts:
        title = ", ".join(f"{v.claim.id}: {v.status}" for v in verdicts)
    return draw(panels, {}, trace, verdicts, title)
