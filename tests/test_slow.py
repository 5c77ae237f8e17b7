"""The papers' own settings (``--full``): every claim must hold there too. Run with ``pytest -m slow``."""

import json

import pytest

from experiments.cli import main
from experiments.registry import experiments


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", [e.id for e in experiments()])
def test_full_configuration_passes(exp_id, tmp_path):
    code = main(["run", exp_id, "--full", "--out", str(tmp_path), "--no-progress"])
    result = json.loads((tmp_path / exp_id / "result.json").read_text())
    assert code == 0, [v["reason"] for v in result["verdicts"]]
    assert result["divergence"]["diverged_seeds"] == 0
