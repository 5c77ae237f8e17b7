"""The public API: ``import ratelab as rl`` names everything, loads lazily, documents itself, renders in notebooks."""

import pydoc
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import nbformat
import pytest

import ratelab as rl

matplotlib.use("Agg")
ROOT = Path(__file__).parents[1]


def test_every_public_name_resolves_and_is_listed_with_a_one_line_doc():
    listed = dict(re.findall(r"^    (\w+) +(\S.*)$", rl.__doc__, flags=re.M))
    assert set(rl.__all__) <= set(listed), set(rl.__all__) - set(listed)
    for name in rl.__all__:
        assert getattr(rl, name).__doc__, name
    text = pydoc.render_doc(rl, renderer=pydoc.plaintext)
    assert all(name in text for name in rl.__all__)


def test_import_is_lazy():
    code = "import sys, ratelab; print(sorted(m for m in ('jax', 'matplotlib', 'optax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rl.nope  # noqa: B018


def _own_run():
    def step(state, A, noise):
        x = state - 0.1 * (A @ state + noise)
        return x, {"sq_norm": x @ x}

    solver = rl.Solver(init=lambda A, key: jnp.ones(2), step=step,
                       sample=lambda A, key, n: jax.random.normal(key, (n, 2)))
    return rl.run(solver, jnp.eye(2), jax.random.key(0), steps=200, seeds=8, log_every=10)


def test_trace_and_verdict_render_as_html_and_plot():
    trace = _own_run()
    html = trace._repr_html_()
    assert "<table>" in html and "sq_norm" in html and "8 seeds" in html
    claim = rl.Claim(id="floor", statement="the stationary floor", metric="sq_norm", kind="value", relation="le",
                     expected=1.0, tolerance=0.5, window=(100, 200))
    verdict = rl.check(claim, trace)
    assert verdict.trace is trace
    assert "floor" in verdict._repr_html_() and verdict.status in verdict._repr_html_()
    fig = verdict.plot()
    assert fig.axes[0].get_ylabel().startswith("sq_norm")
    assert len(trace.plot().axes) == 1
    with pytest.raises(rl.RatelabError, match="metric must be one of"):
        trace.plot("nope")


def test_the_own_claim_notebook_is_under_20_lines_of_user_code():
    nb = nbformat.read(ROOT / "notebooks" / "your_own_claim.ipynb", as_version=4)
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            n += sum(1 for line in cell.source.splitlines() if line.strip() and not line.strip().startswith("#"))
            if "verdict.plot()" in cell.source:
                break
    assert n < 20


def test_no_harness_import_from_the_old_paths():
    old = re.compile(r"experiments\.(runner|rates|claims|registry|harness|figures|report|io|provenance|cli|sharding"
                     r"|scale|catalog)\b")
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".ipynb", ".md", ".toml")
             and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert not [str(p) for p in files if old.search(p.read_text())]
