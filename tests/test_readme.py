"""The README stays true: its Python example runs and its claims table lists every registered claim."""

import re
from pathlib import Path

from experiments.registry import experiments
from experiments.report import md_cell

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_python_example_runs_and_measures_the_rate(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    exec(compile(code, "README.md", "exec"), {})
    slope = float(re.search(r"slope (-?[\d.]+)", capsys.readouterr().out).group(1))
    assert abs(slope + 1.0) < 0.1


def test_claims_table_lists_every_registered_claim():
    table = README.split("<!-- claims:start -->")[1].split("<!-- claims:end -->")[0]
    for exp in experiments():
        for c in exp.claims(exp.config("quick")):
            cell = md_cell(c.statement)
            assert any(f"`{exp.id}`" in row and cell in row for row in table.splitlines()), (exp.id, c.id)


def test_commands_open_the_readme():
    first_two = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)[:2]
    assert first_two[0].endswith("ratelab verify --quick") and "python3 -m venv" in first_two[0]
    assert first_two[1].endswith("python -m pytest") and '".[test]"' in first_two[1]
