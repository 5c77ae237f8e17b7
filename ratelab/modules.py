"""Users' own experiment modules: ``ratelab run ID --module PATH`` (and ``verify --module PATH``) import a Python
file that defines and registers experiments, exactly as a module of ``experiments/`` does.

The file is imported under a name derived from its resolved path, so ``getattr(fn, "__module__")`` finds it and
:func:`ratelab.provenance.user_sources` hashes it (and the user modules it imports) into the result's code version:
editing one's own solver and rerunning recomputes instead of reusing the old numbers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from ratelab.errors import RatelabError

_LOADED: dict[Path, list[str]] = {}  # resolved path -> the ids it registered


def module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"ratelab_user_{stem}_{digest}"


def load_module(path: str | os.PathLike) -> list[str]:
    """Import the experiment module at ``path`` (again, if it was imported before: its experiments are replaced)
    and return the ids it registered. Errors name the file and what went wrong, before any compute."""
    from ratelab import registry

    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file() or resolved.suffix != ".py":
        raise RatelabError(f"module must be an existing Python file (*.py), got {str(path)!r}")
    for exp_id in _LOADED.pop(resolved, []):
        registry.unregister(exp_id)
    registry.experiments()  # the paper modules first: a user module may not take one of their ids
    before = set(registry._REGISTRY)
    name = module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except RatelabError as err:
        sys.modules.pop(name, None)
        raise RatelabError(f"module {str(path)!r}: {err}") from None
    except Exception as err:  # a user's file: report it in one line, not a traceback from inside the harness
        sys.modules.pop(name, None)
        raise RatelabError(f"module {str(path)!r} raised {type(err).__name__} on import: {err}") from None
    ids = [i for i in registry._REGISTRY if i not in before]
    if not ids:
        raise RatelabError(f"module {str(path)!r} registered no experiment (call ratelab.register(Experiment(...)))")
    _LOADED[resolved] = ids
    return ids
