"""Claims from papers and the verdicts the harness gives them on measured traces.

A :class:`Claim` names a metric of a run and what a paper says about it:

* ``kind="exponent"``: E metric(k) ~ k^expected (``relation`` "eq"; "le" for an O(k^expected) upper bound, which
  holds when the whole interval lies at or below expected + tolerance; "ge" for a lower bound).
* ``kind="constant"``: E metric(k) ~ expected * k^exponent with a known exponent; ``tolerance`` is relative.
* ``kind="sample_complexity"``: samples N(eps) to reach eps scale like eps^expected.
* ``kind="value"``: the level of a metric, E metric averaged over the x in ``window`` (default: the last logged
  point), against ``expected`` with an absolute ``tolerance``: a floor, a feasibility violation (``relation="le"``),
  a ratio of two methods' errors that an experiment logs as its own metric. ``statistic="max"`` judges the worst
  seed and point instead of the mean (invariants: feasibility, staying on a manifold).

Verdict rule (``eq``): PASS when the measured confidence interval meets [expected - tol, expected + tol] and is at
most ``max_ci_width`` wide (a noisy measurement that cannot tell is a FAIL, not a PASS). One-sided claims (``le``,
``ge``) PASS when the whole interval lies past the bound, whatever its width. A run in which any seed diverged fails
every claim on it, with the count in the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ratelab.errors import RatelabError
from ratelab.rates import (
    STATISTICS,
    TRANSFORMS,
    Fit,
    fit_constant,
    fit_level,
    fit_power_law,
    fit_sample_complexity,
    transform,
)
from ratelab.runner import Trace
from ratelab.validate import check_choice, check_positive

KINDS = ("exponent", "constant", "sample_complexity", "value")
RELATIONS = ("eq", "le", "ge")


@dataclass(frozen=True)
class Claim:
    """One checkable statement of a paper about one metric of a run."""

    id: str
    statement: str
    metric: str
    expected: float
    tolerance: float
    kind: str = "exponent"
    relation: str = "eq"
    window: tuple[float, float] | None = None
    transform: str = "none"
    exponent: float | None = None
    eps: tuple[float, ...] | None = None
    samples_per_step: float = 1.0
    max_ci_width: float | None = None
    index: tuple[int, ...] = ()
    statistic: str = "mean"
    source: str = ""

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_choice("relation", self.relation, RELATIONS)
        check_choice("transform", self.transform, TRANSFORMS)
        check_choice("statistic", self.statistic, STATISTICS)
        if self.statistic != "mean" and self.kind != "value":
            raise RatelabError(f"claim {self.id!r}: statistic {self.statistic!r} applies to kind 'value' only")
        check_positive("tolerance", self.tolerance)
        check_positive("samples_per_step", self.samples_per_step)
        if self.kind == "constant" and self.exponent is None:
            raise RatelabError(f"claim {self.id!r}: kind 'constant' needs exponent (the known power of k)")
        if self.kind == "sample_complexity" and not self.eps:
            raise RatelabError(f"claim {self.id!r}: kind 'sample_complexity' needs eps (the targets)")

    @property
    def width_limit(self) -> float:
        """Widest interval that still counts as a measurement (default: twice the band's width, 4 x tolerance)."""
        if self.max_ci_width is not None:
            return self.max_ci_width
        return 4 * self.tolerance * (abs(self.expected) if self.kind == "constant" else 1.0)

    def band(self) -> tuple[float, float]:
        """The values the claim allows: expected +- tolerance (relative for constants)."""
        tol = self.tolerance * abs(self.expected) if self.kind == "constant" else self.tolerance
        return self.expected - tol, self.expected + tol


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one claim on one trace."""

    claim: Claim
    passed: bool
    measured: float
    ci: tuple[float, float]
    reason: str
    fit: Fit | None
    diverged: int = 0
    trace: Trace | None = field(default=None, repr=False, compare=False)

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def plot(self, trace: Trace | None = None, **kw: Any) -> Any:
        """The claim's panel as the CLI draws it: the measured curve with its bands and the fitted and claimed lines
        (or levels). ``trace`` defaults to the one the verdict was checked on."""
        from ratelab.figures import plot_trace

        trace = trace if trace is not None else self.trace
        if trace is None:
            raise RatelabError("trace must be given: this verdict does not hold the trace it was checked on")
        return plot_trace(trace, verdicts=[self], **kw)

    def _repr_html_(self) -> str:
        from ratelab.report import verdicts_html

        return verdicts_html([self])

    def as_dict(self) -> dict:
        claim = asdict(self.claim)
        return {"claim": claim, "status": self.status, "passed": self.passed, "measured": self.measured,
                "ci": list(self.ci), "reason": self.reason, "diverged_seeds": self.diverged,
                "fit": None if self.fit is None else self.fit.as_dict()}


def _select(claim: Claim, trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = trace[claim.metric]
    diverged = trace.diverged
    for i in claim.index:
        values, diverged = values[i], diverged[i]
    if values.ndim != 2:
        raise RatelabError(f"claim {claim.id!r}: index must select a [seeds, n] slice of {claim.metric!r}, "
                           f"got shape {values.shape}")
    return values, diverged, trace.steps * claim.samples_per_step


def check(claim: Claim, trace: Trace, *, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Judge ``claim`` on ``trace``: fit on the seeds that stayed finite, fail if any diverged."""
    values, diverged, x = _select(claim, trace)
    n_div = int(diverged.sum())
    ok = ~diverged
    if ok.sum() == 0:
        first = float(trace.diverged_at.min())
        return Verdict(claim, False, float("nan"), (float("nan"), float("nan")),
                       f"all {diverged.size} seeds diverged (first at x={first:g})", None, n_div, trace)
    v = transform(values[ok], claim.transform)
    try:
        if claim.kind == "exponent":
            fit = fit_power_law(x, v, window=claim.window, n_boot=n_boot, seed=seed)
            measured, ci = fit.exponent, fit.exponent_ci
        elif claim.kind == "constant":
            fit = fit_constant(x, v, claim.exponent, window=claim.window, n_boot=n_boot, seed=seed)
            measured, ci = fit.constant, fit.constant_ci
        elif claim.kind == "value":
            fit = fit_level(x, v, window=claim.window, n_boot=n_boot, seed=seed, statistic=claim.statistic)
            measured, ci = fit.constant, fit.constant_ci
        else:
            fit = fit_sample_complexity(x, v, np.asarray(claim.eps), n_boot=n_boot, seed=seed)
            measured, ci = fit.exponent, fit.exponent_ci
    except RatelabError as err:
        return Verdict(claim, False, float("nan"), (float("nan"), float("nan")), f"no fit: {err}", None, n_div,
                       trace)

    lo, hi = claim.band()
    width = ci[1] - ci[0]
    if claim.relation == "eq":
        agrees = ci[1] >= lo and ci[0] <= hi
    elif claim.relation == "le":
        agrees = ci[1] <= hi
    else:
        agrees = ci[0] >= lo
    # A one-sided claim passes only when its whole interval is past the bound, which a wider interval makes harder:
    # the width limit guards two-sided claims, where a wide interval could meet the band by chance.
    conclusive = width <= claim.width_limit or claim.relation != "eq"
    passed = agrees and conclusive and n_div == 0
    interval = f"[{ci[0]:.4g}, {ci[1]:.4g}]"
    if n_div:
        reason = f"{n_div}/{diverged.size} seeds diverged (first at x={float(trace.diverged_at[diverged].min()):g})"
    elif not conclusive:
        reason = f"inconclusive: interval {interval} wider than {claim.width_limit:.3g}"
    elif agrees:
        reason = f"interval {interval} within claimed band [{lo:.4g}, {hi:.4g}]"
    else:
        reason = f"interval {interval} outside claimed band [{lo:.4g}, {hi:.4g}]"
    return Verdict(claim, bool(passed), float(measured), (float(ci[0]), float(ci[1])), reason, fit, n_div, trace)
