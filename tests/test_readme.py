"""The README stays true: every Python snippet runs (in order, in one namespace) and does what the text says, every
`ratelab` command of its bash snippets runs (the 7B plans under ``-m slow``), and the claims table lists every
registered claim."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ratelab.registry import experiments
from ratelab.report import md_cell

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
COMMANDS = [line.split("#")[0].strip() for block in BASH[2:] for line in block.splitlines()
            if line.startswith("ratelab ")]


def test_python_snippets_run_and_do_what_the_text_says(capsys, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for i, code in enumerate(PYTHON):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    out = capsys.readouterr().out
    slope = float(re.search(r"slope (-?[\d.]+)", out).group(1))
    assert abs(slope + 1.0) < 0.1
    assert ns["verdict"].passed and not ns["control"].passed, (ns["verdict"].reason, ns["control"].reason)
    assert ns["figure"].axes, "verdict.plot() drew nothing"
    assert ns["report"].passed and (tmp_path / "results" / "REPORT.md").exists()
    assert {r["experiment"] for r in ns["report"].rows} == {"rm-fast", "rm-slow"}


def _run_command(command: str) -> str:
    args = command.split()[1:]
    proc = subprocess.run([sys.executable, "-m", "ratelab.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=3000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if "--model 7b" not in c])
def test_bash_commands_run(command):
    out = _run_command(command)
    if "--plan" not in command:
        auc = float(re.search(r"AUC of x.*?([\d.]+)$", out, flags=re.M).group(1))
        assert f"{auc:.3f}" in README, f"README quotes another AUC than the measured {auc:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if "--model 7b" in c])
def test_bash_7b_plans_run(command):
    assert "peak" in _run_command(command)


def test_claims_table_lists_every_registered_claim():
    table = README.split("<!-- claims:start -->")[1].split("<!-- claims:end -->")[0]
    for exp in experiments():
        for c in exp.claims(exp.config("quick")):
            cell = md_cell(c.statement)
            assert any(f"`{exp.id}`" in row and cell in row for row in table.splitlines()), (exp.id, c.id)


def test_commands_open_the_readme():
    assert BASH[0].endswith("ratelab verify --quick") and "python3 -m venv" in BASH[0]
    assert BASH[1].endswith("python -m pytest") and '".[test]"' in BASH[1]
    assert COMMANDS, "the README shows no ratelab command"


def test_the_claim_count_in_the_opening_paragraph_is_the_registrys():
    exps = experiments()
    n_claims = sum(len(e.claims(e.config("quick"))) for e in exps)
    papers = len({e.paper.key for e in exps})
    text = " ".join(README.split())
    assert f"{n_claims} claims of {len(exps)} experiments from {papers} papers" in text
