"""The registry of experiments: what each regenerates, its configurations and its claims.

An experiment module (one per paper) defines an :class:`Experiment` and calls :func:`register`; importing
``ratelab.catalog`` imports every such module.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from ratelab.claims import MODES, Claim
from ratelab.errors import RatelabError
from ratelab.runner import Trace

RESERVED = ("seed", "seeds", "steps", "log_every", "x64")


@dataclass(frozen=True)
class Paper:
    key: str
    authors: str
    title: str
    venue: str
    year: int
    url: str = ""

    @property
    def short(self) -> str:
        first = self.authors.split(",")[0].split(" and ")[0].strip().split()[-1]
        etal = " et al." if ("," in self.authors or " and " in self.authors) else ""
        return f"{first}{etal} ({self.year})"

    def cite(self) -> str:
        return f"{self.authors}, \"{self.title}\", {self.venue}, {self.year}."


@dataclass(frozen=True)
class Panel:
    """One axes of the experiment's figure: a metric against iterations (or samples, gamma, N, ...), log-log by
    default (``xscale`` / ``yscale`` take any matplotlib scale name)."""

    metric: str
    ylabel: str
    transform: str = "none"
    xlabel: str = "iteration k"
    samples_per_step: float = 1.0
    index: tuple[int, ...] = ()
    label: str = ""
    reference: Callable[[dict, Any], Any] | None = None
    reference_label: str = "exact"
    xscale: str = "log"
    yscale: str = "log"


@dataclass(frozen=True)
class Experiment:
    """A figure or table of a paper, made runnable.

    Attributes:
      id: short unique name used on the command line.
      paper: the paper whose claims are checked.
      figure: what it regenerates (e.g. "Fig. 2", "Theorem 3.1").
      title: one line for listings and the figure title.
      configs: ``{"quick": {...}, "full": {...}}``, each with ``seed``, ``seeds``, ``steps``, ``log_every`` and the
        experiment's own parameters; ``--set`` may override any key, with the default's type.
      execute: ``(config, key) -> Trace``: builds the problem and solver from the config and runs them.
      claims: ``config -> [Claim]``: the claims, with expected values computed from the config.
      panels: the figure's axes.
      validate: ``config -> None``: raises :class:`RatelabError` on a bad config before any compute.
      extra_figures: ``name -> (config, trace, verdicts) -> matplotlib Figure`` for figures the panels cannot draw
        (a landscape with trajectories, accuracy against wall time); each is written to ``<name>.png``.
    """

    id: str
    paper: Paper
    figure: str
    title: str
    configs: dict[str, dict[str, Any]]
    execute: Callable[[dict, jax.Array], Trace]
    claims: Callable[[dict], list[Claim]]
    panels: tuple[Panel, ...]
    validate: Callable[[dict], None] | None = None
    extra_figures: dict[str, Callable[..., Any]] = field(default_factory=dict)
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def config(self, mode: str = "quick", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The configuration for ``mode`` with ``overrides`` applied (coerced to each default's type)."""
        if mode not in self.configs:
            raise RatelabError(f"mode must be one of {', '.join(map(repr, self.configs))}, got {mode!r}")
        cfg = dict(self.configs[mode])
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise RatelabError(f"unknown setting {key!r} for {self.id}; allowed: {', '.join(sorted(cfg))}")
            cfg[key] = coerce(key, value, cfg[key])
        return cfg

    def claims_in(self, mode: str, cfg: dict[str, Any]) -> list[Claim]:
        """The claims on ``cfg`` as judged in ``mode`` (each known failure resolved for the mode)."""
        return [c.in_mode(mode) for c in self.claims(cfg)]

    @property
    def package(self) -> str:
        """The solver family: the top-level package beside ``ratelab`` (``bilevel``, ``rl_theory``,
        ``riemannian``, ...) whose code the experiment's module imports; several joined by ``+``; ``other`` when
        it imports none (a solver written in the module itself)."""
        module = sys.modules.get(getattr(self.execute, "__module__", "") or "")
        names = [module.__name__] if module else []
        names += [v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None) or ""
                  for v in (vars(module).values() if module else ())]
        found = sorted({top for top in (n.partition(".")[0] for n in names if isinstance(n, str)) if _is_family(top)})
        return "+".join(found) or "other"


def _is_family(top: str) -> bool:
    """A first-party package of solvers: a package in the folder that holds ``ratelab`` (not the harness, the
    paper modules or the tests)."""
    if top in ("ratelab", "experiments", "tests", ""):
        return False
    module = sys.modules.get(top)
    path = getattr(module, "__file__", None)
    return bool(path and hasattr(module, "__path__") and Path(path).resolve().parent.parent == _ROOT)


_ROOT = Path(__file__).resolve().parent.parent


def coerce(key: str, value: Any, like: Any) -> Any:
    """Convert ``value`` (possibly a string from the command line) to the type of ``like``."""
    try:
        if isinstance(like, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(like, int):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(like, float):
            return float(value)
    except (TypeError, ValueError):
        kind = {"int": "an integer", "bool": "a boolean (true/false)"}.get(
            type(like).__name__, f"a {type(like).__name__}")
        raise RatelabError(f"{key} must be {kind}, got {value!r}") from None
    except OverflowError:
        raise RatelabError(f"{key} must be a finite integer, got {value!r}") from None
    return value


_REGISTRY: dict[str, Experiment] = {}
_REGISTERED_BY: dict[str, str] = {}


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (ids are unique; both a quick and a full configuration are required)."""
    if exp.id in _REGISTRY and _REGISTRY[exp.id] is not exp:
        raise RatelabError(f"experiment id {exp.id!r} is registered twice")
    for mode in MODES:
        if mode not in exp.configs:
            raise RatelabError(f"experiment {exp.id!r} lacks a {mode!r} configuration")
        missing = [k for k in ("seed", "seeds", "steps", "log_every") if k not in exp.configs[mode]]
        if missing:
            raise RatelabError(f"experiment {exp.id!r} {mode} configuration lacks {missing}")
    _REGISTRY[exp.id] = exp
    _REGISTERED_BY[exp.id] = sys._getframe(1).f_globals.get("__name__", "")
    return exp


def registered_by(exp_id: str) -> str:
    """The name of the module whose import registered ``exp_id`` (a fresh process can register it again by
    importing that module when it is a module of ``experiments`` or a user module loaded with ``--module``)."""
    return _REGISTERED_BY.get(exp_id, "")


def unregister(exp_id: str) -> None:
    """Remove an experiment from the registry (no error if absent)."""
    _REGISTRY.pop(exp_id, None)
    _REGISTERED_BY.pop(exp_id, None)


def experiments() -> list[Experiment]:
    """Every registered experiment, after importing each paper module of the ``experiments`` package."""
    import ratelab.catalog  # noqa: F401  (registers every paper module)

    return list(_REGISTRY.values())


def get(exp_id: str) -> Experiment:
    """The registered experiment ``exp_id`` (a clear error listing the known ids otherwise)."""
    known = {e.id: e for e in experiments()}
    if exp_id not in known:
        raise RatelabError(f"unknown experiment {exp_id!r}; known: {', '.join(sorted(known)) or '(none)'}")
    return known[exp_id]
