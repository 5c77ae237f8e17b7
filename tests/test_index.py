"""``ratelab list`` and the unknown-id check answer from the cached index, without importing JAX."""

import json
import os
import subprocess
import sys
from pathlib import Path

from ratelab import index
from ratelab.registry import experiments

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys; from ratelab.cli import main; code = main({argv}); "
         "print('JAX' if 'jax' in sys.modules else 'NOJAX', code)")


def _probe(env: dict, argv: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    return out.stdout.strip().splitlines()


def test_list_and_an_unknown_id_do_not_import_jax(tmp_path, monkeypatch):
    monkeypatch.setenv("RATELAB_CACHE_DIR", str(tmp_path / "jax"))
    built = index.build()
    assert [e["id"] for e in built] == [e.id for e in experiments()]
    assert index.save(built) is not None
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RATELAB_CACHE_DIR": str(tmp_path / "jax")}
    listed = _probe(env, ["list", "--results", str(tmp_path)])
    assert listed[-1] == "NOJAX 0"
    assert all(any(line.startswith(e["id"]) for line in listed) for e in built)
    assert _probe(env, ["run", "no-such-id"])[-1] == "NOJAX 2"


def test_a_foreign_index_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RATELAB_CACHE_DIR", str(tmp_path / "jax"))
    path = index.index_dir() / f"index-{index.code_version()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[1, 2]")
    ids = [e["id"] for e in index.load(cached=True)]  # as the script does: the cache is consulted
    assert "rm-fast" in ids
    assert index._valid(json.loads(path.read_text()), index.code_version())
