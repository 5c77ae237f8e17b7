"""Imports every paper module of ``experiments/`` so that its experiments register themselves.

A paper module is any module of this package that is not part of the harness (:data:`HARNESS`); adding a paper is
adding its module, with no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

HARNESS = frozenset({"catalog", "claims", "cli", "figures", "harness", "io", "provenance", "rates", "registry",
                     "report", "runner", "scale", "sharding"})

PAPER_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                             if m.name not in HARNESS and not m.name.startswith("_")))

for _name in PAPER_MODULES:
    importlib.import_module(f"experiments.{_name}")
