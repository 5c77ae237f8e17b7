"""The verification report: one row per claim, as a console table, ``REPORT.md`` and ``report.json``."""

from __future__ import annotations

import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratelab.io import atomic_write_json, atomic_write_text, sha256_file
from ratelab.provenance import versions


def control_text(v: dict) -> str:
    """A claim's control outcome in a few words: each control's status, and WEAK when one of them passes."""
    power = v.get("power", "none declared")
    if power == "no control":
        return "none can exist: " + v["claim"]["no_control"]
    if power in ("not run", "none declared"):
        return power
    parts = ", ".join(f"{c['id']} {c['status']}" for c in v.get("controls", []))
    return {"controlled": f"fails as it must ({parts})", "WEAK": f"WEAK: {parts}",
            "inconclusive": f"inconclusive ({parts})"}[power]


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
                "seeds_needed": v.get("seeds_needed"), "power": v.get("power", "none declared"),
                "control": control_text(v), "controls": v.get("controls", []),
                "known_failure": c.get("known_failure", ""),
                "figure_path": f"{r['id']}/figure.png", "mode": r["mode"],
            })
    return out


def clean_pass(row: dict) -> bool:
    """A PASS whose controls do not pass too (a WEAK PASS is no evidence)."""
    return row["status"] == "PASS" and row["power"] != "WEAK"


def expected(row: dict) -> bool:
    """The row is as the registry expects: a clean PASS, or a known failure that still does not pass cleanly."""
    return clean_pass(row) != bool(row.get("known_failure"))


def summary(table: list[dict]) -> str:
    """One line: claims by verdict (known failures counted apart), then by control outcome."""
    n = len(table)
    by = {s: sum(r["status"] == s for r in table) for s in ("PASS", "FAIL", "INCONCLUSIVE")}
    known = {s: sum(r["status"] == s and bool(r.get("known_failure")) for r in table) for s in ("FAIL", "INCONCLUSIVE")}
    pw = {p: sum(r["power"] == p for r in table) for p in ("controlled", "WEAK", "inconclusive", "not run",
                                                           "no control", "none declared")}
    controls = (f"controls: {pw['controlled']} fail as they must, {pw['WEAK']} WEAK, {pw['inconclusive']} "
                f"inconclusive, {pw['no control']} cannot have one (reason stated)")
    for p in ("not run", "none declared"):
        if pw[p]:
            controls += f", {pw[p]} {p}"
    verdicts = f"{by['PASS']} PASS, " + ", ".join(
        f"{by[s]} {s}" + (f" ({known[s]} known, analysed)" if known[s] else "") for s in ("FAIL", "INCONCLUSIVE"))
    unexpected = sum(clean_pass(r) and bool(r.get("known_failure")) for r in table)
    if unexpected:
        verdicts += f", {unexpected} known failure(s) now PASS"
    return f"{n} claims: {verdicts}; {controls}"


def all_passed(table: list[dict]) -> bool:
    """Every claim is as expected: it PASSes and is not WEAK (a PASS whose control passes too is no evidence), or it
    is a known failure (analysed in its ``known_failure``) that still does not pass."""
    return all(expected(r) for r in table)


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
    head = ("experiment", "claim", "claimed", "measured [95% CI]", "verdict", "control", "reason")
    body = [(r["experiment"], r["claim"], r["claimed"], measured_text(r), _status_text(r), r["power"],
             _short(r["reason"])) for r in table]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    notes = [f"  {r['experiment']} / {r['claim']}: {r['status']}: {r['reason']}" for r in table
             if r["status"] != "PASS" and len(r["reason"]) > 60]
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body), *([""] + notes if notes else []),
                      "", summary(table)])


def _status_text(row: dict) -> str:
    if row.get("known_failure"):
        return "PASS (known failure!)" if clean_pass(row) else f"{row['status']} (known)"
    return row["status"]


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def markdown(table: list[dict], *, link_root: str = "") -> str:
    lines = ["| experiment | paper | claim | claimed | measured [95% CI] | verdict | control | figure |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        fig = f"[figure]({link_root}{r['figure_path']})"
        where = md_cell(r["paper"] + ", " + r["figure"])
        lines.append(f"| `{r['experiment']}` | {where} | {md_cell(r['statement'])} | {r['claimed']} "
                     f"| {measured_text(r)} | **{_status_text(r)}** | {md_cell(r['control'])} | {fig} |")
    return "\n".join(lines)


def write_report(out: str | Path, results: list[dict], mode: str) -> tuple[Path, Path]:
    out = Path(out)
    table = rows(results)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    v = versions()
    md = [f"# ratelab verification report ({mode})", "",
          f"{summary(table)}. Generated {stamp} with jax {v['jax']} on {v['backend']}.", "", markdown(table), ""]
    failures = [r for r in table if r["status"] != "PASS"]
    if failures:
        md += ["## Not passing", ""] + [
            f"- `{r['experiment']}` / {r['claim']}: {r['status']}, {r['reason']}"
            + (f". Known failure: {r['known_failure']}" if r.get("known_failure") else "") for r in failures] + [""]
    weak = [r for r in table if r["power"] in ("WEAK", "inconclusive")]
    if weak:
        md += ["## Controls that do not fail", ""] + [
            f"- `{r['experiment']}` / {r['claim']}: {r['power']}: " + "; ".join(
                f"{c['id']} {c['status']} ({c['reason']})" for c in r["controls"]) for r in weak] + [""]
    md += ["## Experiments", ""]
    for r in results:
        t = r["timings"]
        div = r["divergence"]
        md.append(f"- `{r['id']}`: {r['paper']['citation']} {r['title']}. {r['config']['seeds']} seeds x "
                  f"{r['config']['steps']} steps, wall {t['wall_s']:.1f}s (compile {t['compile_s']:.1f}s), "
                  f"diverged seeds {div['diverged_seeds']}/{div['of']}"
                  f"{', reused' if r.get('reused') else ''}.")
    # report.json is the pair's commit record: removed first, written last with REPORT.md's hash, so a kill in
    # between leaves no report.json (a REPORT.md without its record counts as absent: see report_pair_agrees)
    (out / "report.json").unlink(missing_ok=True)
    md_path = atomic_write_text(out / "REPORT.md", "\n".join(md) + "\n")
    json_path = atomic_write_json(out / "report.json", {"mode": mode, "generated": stamp, "versions": v,
                                                         "report_md_sha256": sha256_file(md_path),
                                                         "claims": table, "experiments": results})
    return md_path, json_path


def report_pair_agrees(folder: str | Path, data: dict) -> bool:
    """``REPORT.md`` is the one ``report.json`` (read as ``data``) was written with (its recorded sha256)."""
    recorded = data.get("report_md_sha256") if isinstance(data, dict) else None
    return recorded is not None and sha256_file(Path(folder) / "REPORT.md") == recorded


# ------------------------------------------------------------------------------------------ notebook display


def _html_table(head: list[str], body: list[list[Any]], caption: str = "") -> str:
    esc = lambda x: html.escape(str(x))  # noqa: E731
    cap = f"<caption style='text-align:left'>{esc(caption)}</caption>" if caption else ""
    th = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in head)
    rows_ = "".join("<tr>" + "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table>{cap}<thead><tr>{th}</tr></thead><tbody>{rows_}</tbody></table>"


def trace_html(trace: Any) -> str:
    """A Trace as an HTML table: one row per metric with its shape and the mean over seeds at the first and last x."""
    n_div = int(trace.diverged.sum())
    xs = trace.steps
    body = []
    for name, v in trace.metrics.items():
        ok = ~trace.diverged
        finite = v[ok] if ok.any() else v.reshape(-1, v.shape[-1])
        body.append([name, "x".join(map(str, v.shape)), number_text(float(finite[..., 0].mean())),
                     number_text(float(finite[..., -1].mean()))])
    t = trace.timings
    caption = (f"Trace: {trace.seeds} seeds, {xs.size} points x = {xs[0]:g} .. {xs[-1]:g}, "
               f"{n_div} diverged, compile {t.get('compile_s', 0.0):.2f} s, run {t.get('run_s', 0.0):.2f} s")
    return _html_table(["metric", "shape", f"mean at x = {xs[0]:g}", f"mean at x = {xs[-1]:g}"], body, caption)


def verdicts_html(verdicts: list[Any]) -> str:
    """Verdicts as an HTML table: claim, statement, claimed band, measured value with its interval, status, why."""
    body = []
    for v in verdicts:
        d = v.as_dict()
        body.append([v.claim.id, v.claim.statement, claimed_text(d["claim"]), measured_text(d), v.status, v.reason,
                     control_text(d)])
    return _html_table(["claim", "statement", "claimed", "measured [95% CI]", "verdict", "reason", "control"], body)


@dataclass(frozen=True)
class Report:
    """What :func:`ratelab.verify` wrote: every experiment's result, one row per claim, and the report files."""

    mode: str
    results: list[dict]
    rows: list[dict]
    markdown_path: Path
    json_path: Path

    @property
    def passed(self) -> bool:
        """Every claim PASSes and no claim is WEAK."""
        return all_passed(self.rows)

    def __str__(self) -> str:
        return console_table(self.rows)

    def _repr_html_(self) -> str:
        body = [[r["experiment"], r["claim"], r["statement"], r["claimed"], measured_text(r), r["status"],
                 r["control"]] for r in self.rows]
        return _html_table(["experiment", "claim", "statement", "claimed", "measured [95% CI]", "verdict", "control"],
                           body, f"{summary(self.rows)} ({self.mode}); {self.markdown_path}")
