"""The verification report: one row per claim, as a console table, ``REPORT.md`` and ``report.json``."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from experiments.io import atomic_write_json, atomic_write_text
from experiments.provenance import versions


def rows(results: list[dict]) -> list[dict[str, Any]]:
    """Flatten results into one row per claim."""
    out = []
    for r in results:
        for v in r["verdicts"]:
            c = v["claim"]
            out.append({
                "experiment": r["id"], "paper": r["paper"]["short"], "figure": r["figure"], "claim": c["id"],
                "statement": c["statement"], "claimed": claimed_text(c), "measured": v["measured"], "ci": v["ci"],
                "status": v["status"], "reason": v["reason"], "diverged_seeds": v["diverged_seeds"],
                "figure_path": f"{r['id']}/figure.png", "mode": r["mode"],
            })
    return out


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` (as in ``||grad||``) escaped so it does not split the row."""
    return text.replace("|", "\\|")


def claimed_text(c: dict) -> str:
    if c["kind"] == "constant":
        return f"C = {c['expected']:.4g} +-{100 * c['tolerance']:g}%"
    sym = {"eq": "=", "le": "<=", "ge": ">="}[c["relation"]]
    if c["kind"] == "value":
        what = "worst case" if c.get("statistic") == "max" else "value"
        if c["relation"] == "le":
            return f"{what} <= {c['expected'] + c['tolerance']:.4g}"
        if c["relation"] == "ge":
            return f"{what} >= {c['expected'] - c['tolerance']:.4g}"
        return f"{what} = {c['expected']:.4g} +-{c['tolerance']:g}"
    what = "slope" if c["kind"] == "exponent" else "N(eps) slope"
    return f"{what} {sym} {c['expected']:.4g} +-{c['tolerance']:g}"


def number_text(x: float | None) -> str:
    """A number as ``%.4g``; ``n/a`` for a missing value (NaN in memory, ``null`` in JSON)."""
    return "n/a" if x is None or x != x else f"{x:.4g}"


def measured_text(row: dict) -> str:
    lo, hi = row["ci"]
    return f"{number_text(row['measured'])} [{number_text(lo)}, {number_text(hi)}]"


def console_table(table: list[dict]) -> str:
    head = ("experiment", "claim", "claimed", "measured [95% CI]", "verdict")
    body = [(r["experiment"], r["claim"], r["claimed"], measured_text(r), r["status"]) for r in table]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def markdown(table: list[dict], *, link_root: str = "") -> str:
    lines = ["| experiment | paper | claim | claimed | measured [95% CI] | verdict | figure |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        fig = f"[figure]({link_root}{r['figure_path']})"
        lines.append(f"| `{r['experiment']}` | {md_cell(r['paper'] + ', ' + r['figure'])} | {md_cell(r['statement'])} "
                     f"| {r['claimed']} | {measured_text(r)} | **{r['status']}** | {fig} |")
    return "\n".join(lines)


def write_report(out: str | Path, results: list[dict], mode: str) -> tuple[Path, Path]:
    out = Path(out)
    table = rows(results)
    n_fail = sum(r["status"] == "FAIL" for r in table)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    v = versions()
    md = [f"# ratelab verification report ({mode})", "",
          f"{len(table)} claims, {len(table) - n_fail} PASS, {n_fail} FAIL. Generated {stamp} with jax {v['jax']} on "
          f"{v['backend']}.", "", markdown(table), ""]
    failures = [r for r in table if r["status"] == "FAIL"]
    if failures:
        md += ["## Failures", ""] + [f"- `{r['experiment']}` / {r['claim']}: {r['reason']}" for r in failures] + [""]
    md += ["## Experiments", ""]
    for r in results:
        t = r["timings"]
        div = r["divergence"]
        md.append(f"- `{r['id']}`: {r['paper']['citation']} {r['title']}. {r['config']['seeds']} seeds x "
                  f"{r['config']['steps']} steps, wall {t['wall_s']:.1f}s (compile {t['compile_s']:.1f}s), "
                  f"diverged seeds {div['diverged_seeds']}/{div['of']}"
                  f"{', reused' if r.get('reused') else ''}.")
    md_path = atomic_write_text(out / "REPORT.md", "\n".join(md) + "\n")
    json_path = atomic_write_json(out / "report.json", {"mode": mode, "generated": stamp, "versions": v,
                                                         "claims": table, "experiments": results})
    return md_path, json_path
