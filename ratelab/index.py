"""A small index of the registered experiments (ids, titles, claims, controls) for ``ratelab list`` and id checks,
cached on disk keyed by the source hash (:func:`ratelab.provenance.code_version`), so that answering them imports
neither JAX nor a single paper module while the code is unchanged.

Where: ``index-<code version>.json`` next to the compilation cache (``$RATELAB_CACHE_DIR/..``, else
``$XDG_CACHE_HOME/ratelab``, else ``~/.cache/ratelab``). A missing, unreadable or foreign file is rebuilt.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ratelab.provenance import code_version

INDEX_VERSION = 1


def index_dir() -> Path:
    if os.environ.get("RATELAB_CACHE_DIR"):
        return Path(os.environ["RATELAB_CACHE_DIR"]).expanduser().parent
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ratelab"


def build() -> list[dict[str, Any]]:
    """The index, from the registry (imports every paper module)."""
    from ratelab.registry import experiments
    from ratelab.report import claimed_text

    out = []
    for exp in experiments():
        claims = []
        for c in exp.claims_in("quick", exp.config("quick")):
            declared = "; ".join(f"{k.id}: {k.change}" for k in c.controls) or f"none: {c.no_control or '(not given)'}"
            claims.append({"id": c.id, "statement": c.statement, "claimed": claimed_text(asdict(c)),
                           "declared_control": declared})
        out.append({"id": exp.id, "paper_short": exp.paper.short, "paper_url": exp.paper.url or "",
                    "figure": exp.figure, "title": exp.title, "claims": claims})
    return out


def _valid(data: Any, key: str) -> bool:
    return (isinstance(data, dict) and data.get("version") == INDEX_VERSION and data.get("code_version") == key
            and isinstance(data.get("experiments"), list)
            and all(isinstance(e, dict) and isinstance(e.get("claims"), list) for e in data["experiments"]))


def load(cached: bool | None = None) -> list[dict[str, Any]]:
    """The index: read from the cache while the code is unchanged, else built and (best effort) written.

    ``cached`` None: the cache is skipped where the registry is already loaded (in-process use, tests, notebooks,
    may register experiments of their own)."""
    if cached is None:
        cached = "ratelab.registry" not in sys.modules
    if not cached:
        return build()
    key = code_version()
    path = index_dir() / f"index-{key}.json"
    try:
        data = json.loads(path.read_text())
        if _valid(data, key):
            return data["experiments"]
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    exps = build()
    save(exps)
    return exps


def save(exps: list[dict[str, Any]]) -> Path | None:
    """Write the index for the current code (best effort: a read-only cache folder means a rebuild next time)."""
    key = code_version()
    path = index_dir() / f"index-{key}.json"
    try:
        from ratelab.io import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, {"version": INDEX_VERSION, "code_version": key, "experiments": exps})
    except OSError:
        return None


def known_ids() -> list[str]:
    return [e["id"] for e in load()]
