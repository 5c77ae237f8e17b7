"""Claims from papers, their negative controls, and the verdicts the harness gives them on measured traces.

A :class:`Claim` names a metric of a run and what a paper (or a derivation here) says about it:

* ``kind="exponent"``: E metric(k) ~ k^expected (``relation`` "eq"; "le" for an O(k^expected) upper bound, "ge"
  for a lower bound).
* ``kind="constant"``: E metric(k) ~ expected * k^exponent with a known exponent; ``tolerance`` is relative.
* ``kind="sample_complexity"``: samples N(eps) to reach eps scale like eps^expected.
* ``kind="value"``: the level of a metric, E metric averaged over the x in ``window`` (default: the last logged
  point), against ``expected`` with an absolute ``tolerance``: a floor, a feasibility violation (``relation="le"``),
  a ratio of two methods' errors that an experiment logs as its own metric. ``statistic="max"`` judges the worst
  seed and point instead of the mean (invariants: feasibility, staying on a manifold).

Verdict rule (an equivalence test on the 95 % interval of the measured quantity against the claimed band):

* ``eq``: PASS when the whole interval lies inside [expected - tol, expected + tol], FAIL when it lies wholly
  outside, INCONCLUSIVE when it straddles an edge;
* ``le`` (``ge``): PASS when the interval lies at or below expected + tol (at or above expected - tol), FAIL when it
  lies wholly past the bound, INCONCLUSIVE when it straddles it.

An INCONCLUSIVE verdict carries ``seeds_needed``: the seeds at which an interval of the same shape, shrinking like
1/sqrt(seeds), would clear the edge it straddles. A run in which any seed diverged FAILs every claim on it, with the
count in the reason.

Negative controls: a claim declares :class:`Control` s, each the same experiment with one deliberate change that the
theory says breaks the claim (config ``overrides`` that rerun it, and/or ``claim`` field changes that judge another
curve of the same run). A control must FAIL; a claim whose control PASSes has no power and is reported WEAK.
A claim for which no control can exist says why in ``no_control``.

Known failures: a claim that does not hold on its instance (a paper's statement contradicted by an honest
measurement, an effect too small to decide) keeps its FAIL or INCONCLUSIVE verdict, and says why in
``known_failure`` (the analysis, with its numbers). ``ratelab verify`` then still reports it as not passing but does
not count it against the exit status, like a strict xfail: a known failure that starts to PASS is flagged. A known
failure covers a claim that does not pass cleanly: FAIL, INCONCLUSIVE, or a PASS whose control passes too (WEAK). A
failure of one configuration only (the paper's full size, say) is ``known_failure={"full": "..."}``: the harness keeps
the text for the mode it runs (:meth:`Claim.in_mode`) and judges the other modes as ordinary claims.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
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
MODES = ("quick", "full")  # the configurations every experiment has
RELATIONS = ("eq", "le", "ge")
STATUSES = ("PASS", "FAIL", "INCONCLUSIVE")
CLAIM_FIELDS_A_CONTROL_MAY_CHANGE = ("metric", "index", "transform", "samples_per_step", "window", "eps")


@dataclass(frozen=True)
class Control:
    """A negative control of a claim: one deliberate change that the theory says breaks it.

    Attributes:
      id: short name, unique among the claim's controls (letters, digits, ``.``, ``_``, ``-``: it names files).
      change: one sentence: what is changed and why the theory says the claim must then fail.
      overrides: config changes; the experiment is rerun with them (on the same mode's config). Empty: the main
        run's trace is reused.
      claim: changes to the claim's own fields (:data:`CLAIM_FIELDS_A_CONTROL_MAY_CHANGE`), e.g.
        ``{"metric": "dist_fedavg"}`` to judge R-FedAvg's curve of the same run against RFedSVRG's claim.
    """

    id: str
    change: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    claim: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.change:
            raise RatelabError(f"control {self.id!r} needs a one-sentence change")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.id or ""):
            raise RatelabError(f"control id must be letters, digits, '.', '_' or '-' (it names files), got {self.id!r}")
        bad = sorted(set(self.claim) - set(CLAIM_FIELDS_A_CONTROL_MAY_CHANGE))
        if bad:
            raise RatelabError(f"control {self.id!r}: claim may change only "
                               f"{', '.join(CLAIM_FIELDS_A_CONTROL_MAY_CHANGE)}, got {', '.join(bad)}")
        if not self.overrides and not self.claim:
            raise RatelabError(f"control {self.id!r} changes nothing: give overrides or claim changes")

    def applied_to(self, claim: Claim) -> Claim:
        """The claim as the control judges it: same statement and band, the control's field changes applied."""
        return replace(claim, id=f"{claim.id}/{self.id}", controls=(), **dict(self.claim))


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
    index: tuple[int, ...] = ()
    statistic: str = "mean"
    source: str = ""
    controls: tuple[Control, ...] = ()
    no_control: str = ""
    known_failure: str | Mapping[str, str] = ""

    def __post_init__(self):
        if isinstance(self.known_failure, Mapping):
            bad = sorted(set(self.known_failure) - set(MODES))
            if bad or not all(isinstance(v, str) and v for v in self.known_failure.values()):
                raise RatelabError(f"claim {self.id!r}: known_failure must be a text or a mapping from modes "
                                   f"({', '.join(MODES)}) to texts, got keys {sorted(self.known_failure)}")
        elif not isinstance(self.known_failure, str):
            raise RatelabError(f"claim {self.id!r}: known_failure must be a text or a mapping from modes to texts, "
                               f"got {type(self.known_failure).__name__}")
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
        if not isinstance(self.controls, tuple) or not all(isinstance(c, Control) for c in self.controls):
            raise RatelabError(f"claim {self.id!r}: controls must be a tuple of Control")
        ids = [c.id for c in self.controls]
        if len(set(ids)) != len(ids):
            raise RatelabError(f"claim {self.id!r}: control ids must be unique, got {ids}")
        if self.controls and self.no_control:
            raise RatelabError(f"claim {self.id!r}: give controls or no_control, not both")

    def in_mode(self, mode: str) -> Claim:
        """The claim as judged in ``mode``: a per-mode ``known_failure`` replaced by that mode's text ("" if none)."""
        if isinstance(self.known_failure, Mapping):
            return replace(self, known_failure=self.known_failure.get(mode, ""))
        return self

    def band(self) -> tuple[float, float]:
        """The values the claim allows: expected +- tolerance (relative for constants)."""
        tol = self.tolerance * abs(self.expected) if self.kind == "constant" else self.tolerance
        return self.expected - tol, self.expected + tol


def overall_status(statuses: Any) -> str:
    """Several verdicts' status as one: FAIL if any failed, else INCONCLUSIVE if any is, else PASS."""
    statuses = set(statuses)
    return "FAIL" if "FAIL" in statuses else "INCONCLUSIVE" if "INCONCLUSIVE" in statuses else "PASS"


POWERS = ("controlled", "WEAK", "inconclusive", "not run", "no control", "none declared")


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one claim on one trace (and, when they ran, its controls on theirs).

    ``status`` is PASS, FAIL or INCONCLUSIVE (see the module docstring); ``seeds_needed`` estimates the seeds that
    would decide an INCONCLUSIVE one. ``controls`` holds the controls' own verdicts; :attr:`power` sums them up.
    """

    claim: Claim
    status: str
    measured: float
    ci: tuple[float, float]
    reason: str
    fit: Fit | None
    diverged: int = 0
    seeds_needed: int | None = None
    controls: tuple[Verdict, ...] = ()
    trace: Trace | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    @property
    def power(self) -> str:
        """``controlled`` (every control FAILs, as the theory says it must), ``WEAK`` (a control PASSes: the claim
        cannot tell), ``inconclusive`` (a control is undecided), ``not run``, ``no control`` (the claim says why none
        can exist) or ``none declared``."""
        if not self.claim.controls:
            return "no control" if self.claim.no_control else "none declared"
        if len(self.controls) < len(self.claim.controls):
            return "not run"
        statuses = {v.status for v in self.controls}
        if "PASS" in statuses:
            return "WEAK"
        return "controlled" if statuses == {"FAIL"} else "inconclusive"

    def plot(self, trace: Trace | None = None, **kw: Any) -> Any:
        """The claim's panel as the CLI draws it: the measured curve with its bands and the fitted and claimed lines
        (or levels), and the controls' curves. ``trace`` defaults to the one the verdict was checked on."""
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
        claim["controls"] = [{"id": c.id, "change": c.change, "overrides": dict(c.overrides), "claim": dict(c.claim)}
                             for c in self.claim.controls]
        return {"claim": claim, "status": self.status, "passed": self.passed, "measured": self.measured,
                "ci": list(self.ci), "reason": self.reason, "diverged_seeds": self.diverged,
                "seeds_needed": self.seeds_needed, "power": self.power,
                "controls": [{"id": c.claim.id.split("/", 1)[-1], "status": c.status, "measured": c.measured,
                              "ci": list(c.ci), "reason": c.reason, "diverged_seeds": c.diverged}
                             for c in self.controls],
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


def _decide(claim: Claim, ci: tuple[float, float], measured: float, seeds: int) -> tuple[str, int | None]:
    """The status of an interval against the claim's band, and the seeds that would decide an undecided one."""
    lo, hi = claim.band()
    c_lo, c_hi = ci
    if claim.relation == "eq":
        if lo <= c_lo and c_hi <= hi:
            return "PASS", None
        if c_hi < lo or c_lo > hi:
            return "FAIL", None
        # shrink the interval about the estimate until it clears the nearest edge it crosses
        if lo <= measured <= hi:
            need = [(measured - c_lo) / (measured - lo) if c_lo < lo else 0.0,
                    (c_hi - measured) / (hi - measured) if c_hi > hi else 0.0]
            factor = max(need) if all(np.isfinite(need)) else math.inf
        elif measured > hi:
            factor = (measured - c_lo) / (measured - hi)
        else:
            factor = (c_hi - measured) / (lo - measured)
    elif claim.relation == "le":
        if c_hi <= hi:
            return "PASS", None
        if c_lo > hi:
            return "FAIL", None
        factor = (c_hi - measured) / (hi - measured) if measured < hi else (measured - c_lo) / (measured - hi) \
            if measured > hi else math.inf
    else:
        if c_lo >= lo:
            return "PASS", None
        if c_hi < lo:
            return "FAIL", None
        factor = (measured - c_lo) / (measured - lo) if measured > lo else (c_hi - measured) / (lo - measured) \
            if measured < lo else math.inf
    if not np.isfinite(factor) or seeds < 2:
        return "INCONCLUSIVE", None
    return "INCONCLUSIVE", int(math.ceil(seeds * factor**2 * 1.05))


def check(claim: Claim, trace: Trace, *, controls: Mapping[str, Trace] | None = None, n_boot: int = 2000,
          seed: int = 0) -> Verdict:
    """Judge ``claim`` on ``trace``: fit on the seeds that stayed finite, FAIL if any diverged.

    ``controls`` maps a control's id to the trace it ran on (the main trace for a control that only changes the
    claim's fields); each given control is judged too and recorded in ``Verdict.controls``. The controls never
    change the main verdict.
    """
    verdict = _check_one(claim, trace, n_boot=n_boot, seed=seed)
    if controls:
        unknown = sorted(set(controls) - {c.id for c in claim.controls})
        if unknown:
            raise RatelabError(f"claim {claim.id!r} has no control {', '.join(map(repr, unknown))}; declared: "
                               f"{', '.join(repr(c.id) for c in claim.controls) or '(none)'}")
        judged = tuple(_check_one(c.applied_to(claim), controls[c.id], n_boot=n_boot, seed=seed)
                       for c in claim.controls if c.id in controls)
        verdict = replace(verdict, controls=judged)
    return verdict


def _check_one(claim: Claim, trace: Trace, *, n_boot: int, seed: int) -> Verdict:
    values, diverged, x = _select(claim, trace)
    n_div = int(diverged.sum())
    ok = ~diverged
    if ok.sum() == 0:
        first = float(trace.diverged_at.min())
        return Verdict(claim, "FAIL", float("nan"), (float("nan"), float("nan")),
                       f"all {diverged.size} seeds diverged (first at x={first:g})", None, n_div, trace=trace)
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
        return Verdict(claim, "FAIL", float("nan"), (float("nan"), float("nan")), f"no fit: {err}", None, n_div,
                       trace=trace)

    lo, hi = claim.band()
    status, seeds_needed = _decide(claim, ci, measured, int(ok.sum()))
    interval = f"[{ci[0]:.4g}, {ci[1]:.4g}]"
    band = {"eq": f"band [{lo:.4g}, {hi:.4g}]", "le": f"bound <= {hi:.4g}", "ge": f"bound >= {lo:.4g}"}[claim.relation]
    if n_div:
        status, seeds_needed = "FAIL", None
        at = trace.diverged_at
        for i in claim.index:
            at = at[i]
        reason = f"{n_div}/{diverged.size} seeds diverged (first at x={float(at[diverged].min()):g})"
    elif status == "PASS":
        reason = f"interval {interval} inside claimed {band}"
    elif status == "FAIL":
        reason = f"interval {interval} outside claimed {band}"
    else:
        more = f"; about {seeds_needed} seeds would decide" if seeds_needed else ""
        reason = f"inconclusive: interval {interval} straddles the claimed {band}{more}"
    return Verdict(claim, status, float(measured), (float(ci[0]), float(ci[1])), reason, fit, n_div, seeds_needed,
                   trace=trace)
