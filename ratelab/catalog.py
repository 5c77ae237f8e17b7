"""Imports every paper module of the ``experiments`` package so that its experiments register themselves.

Every module of ``experiments/`` is a paper module (the harness lives in ``ratelab``); adding a paper is adding its
module, with no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

import experiments

PAPER_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_")))

for _name in PAPER_MODULES:
    importlib.import_module(f"experiments.{_name}")
