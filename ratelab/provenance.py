"""What a result depends on: the config hash, the code version and the package versions."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ratelab", "bilevel", "rl_theory", "riemannian", "alignment", "optim_theory", "experiments")


def config_hash(exp_id: str, mode: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"id": exp_id, "mode": mode, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """Hash of every source file of the ratelab packages: a result is reused only while this is unchanged."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("ratelab", "jax", "jaxlib", "optax", "numpy", "scipy", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import jax

        out["backend"] = jax.default_backend()
        out["devices"] = str([d.device_kind for d in jax.devices()])
    except Exception as err:  # pragma: no cover - reported, never fatal
        out["backend"] = f"unavailable: {err}"
    return out
