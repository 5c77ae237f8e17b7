"""What a result depends on: the config hash, the code version and the package versions."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import sys
import sysconfig
import types
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


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} | {sys.prefix, sys.base_prefix}
    return tuple(str(Path(r).resolve()) for r in roots if r)


def _own_root() -> Path:
    return Path(__file__).resolve().parent.parent


def user_sources(objects: Any) -> list[Path]:
    """The source files of the user modules behind ``objects`` (functions, classes, modules): the module defining
    each, and, recursively, every module whose objects it names, leaving out the installed packages (the standard
    library, site-packages) and the ratelab packages, which :func:`code_version` hashes already."""
    installed, own = _installed_roots(), _own_root()
    seen: dict[str, Path] = {}

    def visit(module: types.ModuleType | None) -> None:
        path = getattr(module, "__file__", None)
        if module is None or not path or module.__name__ in seen or not path.endswith(".py"):
            return
        resolved = Path(path).resolve()
        text = str(resolved)
        if text.startswith(installed) or any(resolved.is_relative_to(own / p) for p in PACKAGES):
            return
        seen[module.__name__] = resolved
        for value in vars(module).values():
            visit(value if isinstance(value, types.ModuleType)
                  else sys.modules.get(getattr(value, "__module__", None) or ""))

    for obj in objects:
        visit(obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", None) or ""))
    return sorted(seen.values())


def experiment_code_version(objects: Any) -> str:
    """:func:`code_version` joined with the hash of the user modules behind ``objects`` (an experiment's execute,
    claims, validate and figures): editing one's own solver outside the ratelab packages changes it too."""
    extra = user_sources(objects)
    if not extra:
        return code_version()
    h = hashlib.sha256(code_version().encode())
    for path in extra:
        h.update(str(path).encode())
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
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
