"""The papers' own settings (``--full``): every claim must be as the registry expects there too. Run with
``pytest -m slow``.

A claim that does not hold on the full configuration says so on the claim itself (``known_failure``, for both modes
or as ``{"full": ...}``, with the analysis and its numbers), so ``ratelab run --full`` exits 0 on it and this test
needs no list of its own; a known failure that starts to pass cleanly makes the run exit 1 and the test fail, like a
strict xfail.
"""

import json

import pytest

from ratelab.cli import main
from ratelab.registry import experiments


@pytest.mark.slow
@pytest.mark.parametrize("exp_id", [e.id for e in experiments()])
def test_full_configuration_is_as_expected(exp_id, tmp_path):
    code = main(["run", exp_id, "--full", "--out", str(tmp_path), "--no-progress"])
    result = json.loads((tmp_path / exp_id / "result.json").read_text())
    assert code == 0, [(v["claim"]["id"], v["status"], v.get("power"), v["reason"]) for v in result["verdicts"]]
    assert result["divergence"]["diverged_seeds"] == 0
