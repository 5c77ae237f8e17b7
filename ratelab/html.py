"""The browsable report: ``index.html`` beside ``REPORT.md`` and ``report.json``.

One self-contained page that works offline: inline CSS and JS (no framework, no fonts, no network fetch), figures
linked relatively (``ID/figure.png`` and the extra figures). One table row per claim, rendered here with every text
escaped; a small script sorts and filters the rows (paper, package, verdict, control outcome, free text) and opens a
claim's detail row (figures, claimed and measured values, interval, seeds to decide, each control's numbers, the
config and the versions). The view lives in the URL hash, e.g. ``#status=FAIL&package=bilevel&sort=measured&dir=desc
&open=rm-fast/rate``, so a link shows the same view. The script writes its state into the DOM for tests:
``body[data-ready]``, ``data-shown`` (rows shown), ``hidden`` on filtered rows and ``data-loaded`` (the natural width,
or ``error``) on each figure once it loads.

A claim's *package* is its experiment's solver family, :attr:`ratelab.registry.Experiment.package`, as recorded in
its ``result.json``; for a result written before that field existed it is looked up in the registry (``unknown`` for
an experiment that is no longer registered).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ratelab.claims import POWERS, STATUSES
from ratelab.errors import RatelabError
from ratelab.io import atomic_write_text
from ratelab.report import control_text, measured_text, number_text, report_pair_agrees, rows, summary

PAGE = "index.html"
STATUS_RANK = {"FAIL": 0, "INCONCLUSIVE": 1, "PASS": 2}  # sorting ascending puts the worst first
POWER_RANK = {"WEAK": 0, "inconclusive": 1, "not run": 2, "none declared": 3, "no control": 4, "controlled": 5}
FILTERS = ("paper", "package", "status", "power")
# (key, heading, kind): kind "text" sorts case-insensitively, "num" numerically with missing values last
COLUMNS = (("experiment", "experiment", "text"), ("paper", "paper", "text"), ("package", "package", "text"),
           ("statement", "claim", "text"), ("claimed", "claimed", "text"), ("measured", "measured [95% CI]", "num"),
           ("status", "verdict", "num"), ("power", "control", "num"), ("seeds_needed", "seeds to decide", "num"))
WIDTHS = (12, 8, 7, 28, 11, 12, 9, 8, 5)  # percent: a fixed table layout, so that filtering and sorting stay fast


def load_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], list[dict]]:
    """A results folder's report metadata (mode, generated, versions) and its experiments' results.

    The experiments are those of ``report.json`` in its order, each read from its ``ID/result.json`` (the copy in
    ``report.json`` where that file is missing); without ``report.json``, every ``*/result.json`` by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RatelabError(f"folder must be a results folder, got {str(folder)!r} (not a folder)")
    meta: dict[str, Any] = {}
    embedded: list[dict] = []
    if (folder / "report.json").exists():
        meta = _read_json(folder / "report.json")
        if not report_pair_agrees(folder, meta):
            print(f"ratelab: warning: {folder / 'REPORT.md'} is not the report {folder / 'report.json'} was written "
                  "with (an interrupted or older write); the page follows report.json", file=sys.stderr, flush=True)
        embedded = meta.pop("experiments", [])
        meta.pop("claims", None)
        ids = [e["id"] for e in embedded]
    else:
        ids = sorted(p.parent.name for p in folder.glob("*/result.json"))
    if not ids:
        raise RatelabError(f"folder must hold report.json or ID/result.json files, got {str(folder)!r} (neither)")
    copies = {e["id"]: e for e in embedded}
    results = [_read_json(folder / i / "result.json") if (folder / i / "result.json").exists() else copies[i]
               for i in ids]
    meta.setdefault("mode", _modes(results))
    return meta, results


def _modes(results: list[dict]) -> str:
    return "/".join(dict.fromkeys(r.get("mode", "?") for r in results))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RatelabError(f"{path} must be readable JSON ({err})") from None


def packages_of(results: list[dict]) -> dict[str, str]:
    """Experiment id -> its solver family: the result's own ``package``, else the registered experiment's
    (``unknown`` for an id that is not registered)."""
    known = {r["id"]: r["package"] for r in results if r.get("package")}
    if len(known) < len(results):
        from ratelab.registry import experiments

        known = {**{e.id: e.package for e in experiments()}, **known}
    return {r["id"]: known.get(r["id"], "unknown") for r in results}


def write_page(folder: str | os.PathLike) -> Path:
    """Write ``FOLDER/index.html`` (atomically) from the folder's ``report.json`` and ``ID/result.json`` files."""
    meta, results = load_folder(folder)
    packages = packages_of(results)
    return atomic_write_text(Path(folder) / PAGE, render(results, meta=meta, packages=packages))


# ------------------------------------------------------------------------------------------------- the page


def sort_keys(row: dict) -> dict[str, str]:
    """The key each column sorts a row by, as the page stores it (``data-k``): text lowercased, verdicts and
    control outcomes by rank (worst first), numbers as ``repr`` floats, a missing number as ``""`` (sorted last)."""
    num = lambda x: "" if x is None or x != x else repr(float(x))  # noqa: E731
    keys = {k: str(row[k]).lower() for k, _, kind in COLUMNS if kind == "text"}
    keys.update(measured=num(row["measured"]), status=str(STATUS_RANK[row["status"]]),
                power=str(POWER_RANK.get(row["power"], len(POWER_RANK))), seeds_needed=num(row["seeds_needed"]))
    return keys


def filter_options(table: list[dict]) -> dict[str, list[tuple[str, str, int]]]:
    """Each filter's options as (value, label, count): papers (by key, labelled with the short citation, and the
    key too where two papers share it) and packages as they occur, sorted; every verdict and every control outcome
    in their fixed order (with zero counts where none occurs)."""
    count = lambda key, value: sum(r[key] == value for r in table)  # noqa: E731
    shorts = {r["paper_key"]: r["paper"] for r in table}
    clash = {s for s in shorts.values() if list(shorts.values()).count(s) > 1}
    papers = sorted(shorts, key=lambda k: (shorts[k], k))
    return {
        "paper": [(k, f"{shorts[k]}, {k}" if shorts[k] in clash else shorts[k], count("paper_key", k)) for k in papers],
        "package": [(p, p, count("package", p)) for p in sorted({r["package"] for r in table})],
        "status": [(s, s, count("status", s)) for s in STATUSES],
        "power": [(p, p, count("power", p)) for p in POWERS],
    }


def render(results: list[dict], *, meta: dict[str, Any] | None = None,
           packages: dict[str, str] | None = None) -> str:
    """The page for ``results`` (each experiment's ``result.json``): every claim a row, in report order.
    ``packages`` (id -> solver family) overrides the results' own ``package``."""
    meta = meta or {}
    packages = packages or {}
    table = rows(results)
    pairs = [(r, v) for r in results for v in r["verdicts"]]
    for row, (r, _) in zip(table, pairs, strict=True):
        row["package"] = packages.get(r["id"]) or r.get("package") or "unknown"
        row["paper_key"] = r["paper"].get("key") or r["paper"]["short"]
    mode = meta.get("mode") or _modes(results)
    generated = meta.get("generated") or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    v = meta.get("versions") or (results[0].get("versions", {}) if results else {})
    about = (f"{len(results)} experiments, mode {mode}, generated {generated}"
             + (f" with jax {v['jax']} on {v.get('backend', '?')}" if "jax" in v else ""))
    body = "\n".join(_row(i, row, r, verdict) for i, (row, (r, verdict)) in enumerate(zip(table, pairs, strict=True)))
    cols = "".join(f'<col style="width:{w}%">' for w in WIDTHS)
    heads = "".join(f'<th data-col="{k}" data-kind="{kind}" tabindex="0" aria-sort="none">{escape(h)}</th>'
                    for k, h, kind in COLUMNS)
    return _TEMPLATE.format(
        title=escape(f"ratelab report ({mode})"), summary=escape(summary(table)), about=escape(about),
        filters=_filters(filter_options(table)), cols=cols, heads=heads, body=body, total=len(table), css=_CSS,
        js=_JS)


def _filters(opts: dict[str, list[tuple[str, str, int]]]) -> str:
    labels = {"paper": "paper", "package": "package", "status": "verdict", "power": "control"}
    out = []
    for key in FILTERS:
        extra = '<option value="!PASS">not PASS</option>' if key == "status" else ""
        options = "".join(f'<option value="{escape(v)}">{escape(label)} ({n})</option>' for v, label, n in opts[key])
        out.append(f'<label>{labels[key]} <select id="f-{key}" data-filter="{key}"><option value="">all</option>'
                   f"{extra}{options}</select></label>")
    out.append('<label>text <input id="f-q" type="search" placeholder="statement, id, reason"></label>')
    out.append('<button id="f-clear" type="button">clear</button>')
    return "\n".join(out)


def _row(i: int, row: dict, result: dict, verdict: dict) -> str:
    keys = sort_keys(row)
    attrs = {"experiment": row["experiment"], "claim": row["claim"], "paper": row["paper_key"],
             "package": row["package"], "status": row["status"], "power": row["power"],
             "text": " ".join((row["experiment"], row["claim"], row["statement"], row["reason"], row["paper"])).lower()}
    data = " ".join(f'data-{k}="{escape(v)}"' for k, v in attrs.items())
    seeds = "" if row["seeds_needed"] is None else str(row["seeds_needed"])
    cells = {
        "experiment": f"<code>{escape(row['experiment'])}</code>",
        "paper": escape(row["paper"]),
        "package": escape(row["package"]),
        "statement": f'{escape(row["statement"])} <span class="id">{escape(row["claim"])}</span>',
        "claimed": escape(row["claimed"]),
        "measured": escape(measured_text(row)),
        "status": _badge("s", row["status"]),
        "power": _badge("p", row["power"]),
        "seeds_needed": escape(seeds),
    }
    tds = "".join(f'<td data-k="{escape(keys[k])}">{cells[k]}</td>' for k, _, _ in COLUMNS)
    return (f'<tr class="claim" data-i="{i}" tabindex="0" aria-expanded="false" {data}>{tds}</tr>\n'
            f'<tr class="detail" hidden><td colspan="{len(COLUMNS)}"><template>{_detail(row, result, verdict)}'
            f"</template></td></tr>")


def _src(exp_id: str, name: str) -> str:
    return escape(f"{quote(exp_id)}/{quote(name)}")


def _badge(kind: str, value: str) -> str:
    return f'<span class="b {kind}-{escape(value.replace(" ", "-"))}">{escape(value)}</span>'


def _kv(pairs: list[tuple[str, Any]]) -> str:
    cell = lambda x: x if isinstance(x, str) else json.dumps(x, sort_keys=True)  # noqa: E731
    return '<table class="kv">' + "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(cell(v))}</td></tr>"
                                             for k, v in pairs) + "</table>"


def _detail(row: dict, result: dict, verdict: dict) -> str:
    claim = verdict["claim"]
    exp_id = result["id"]
    figures = [("figure", result.get("files", {}).get("figure", "figure.png"))]
    figures += [(k, f) for k, f in result.get("files", {}).items() if k != "figure" and str(f).endswith(".png")]
    imgs = "".join(f'<figure><img src="{_src(exp_id, f)}" alt="{escape(f"{exp_id}: {k}")}">'
                   f"<figcaption>{escape(f'{exp_id}/{f}')}</figcaption></figure>" for k, f in figures)
    lo, hi = row["ci"]
    facts = [("statement", row["statement"]), ("claim", f"{exp_id} / {row['claim']}"),
             ("claimed", row["claimed"]), ("measured", number_text(row["measured"])),
             ("95% interval", f"[{number_text(lo)}, {number_text(hi)}]"), ("verdict", row["status"]),
             ("reason", row["reason"]),
             *([("known failure", row["known_failure"])] if row.get("known_failure") else []),
             ("seeds to decide", "" if row["seeds_needed"] is None else str(row["seeds_needed"])),
             ("diverged seeds", f"{row['diverged_seeds']} of {result.get('divergence', {}).get('of', '?')}"),
             ("metric", claim.get("metric", "")), ("kind", f"{claim.get('kind', '')} ({claim.get('relation', '')})"),
             ("window", claim.get("window") or "(default)"), ("source", claim.get("source", ""))]
    paper = result.get("paper", {})
    url = paper.get("url", "")
    link = f' <a href="{escape(url)}">{escape(url)}</a>' if url.startswith(("https://", "http://")) else ""
    head = (f'<p class="cite">{escape(paper.get("citation", row["paper"]))}{link}<br>'
            f'{escape(result.get("figure", ""))}: {escape(result.get("title", ""))}</p>')
    declared = {c["id"]: c for c in claim.get("controls", [])}
    judged = {c["id"]: c for c in verdict.get("controls", [])}
    ctl_rows = []
    for cid in dict.fromkeys([*declared, *judged]):
        d, j = declared.get(cid, {}), judged.get(cid, {})
        ci = j.get("ci") or [None, None]
        ctl_rows.append("<tr>" + "".join(f"<td>{escape(str(x))}</td>" for x in (
            cid, d.get("change", ""), j.get("status", "not run"), number_text(j.get("measured")),
            f"[{number_text(ci[0])}, {number_text(ci[1])}]", j.get("diverged_seeds", ""), j.get("reason", ""),
            json.dumps({**d.get("overrides", {}), **d.get("claim", {})}, sort_keys=True))) + "</tr>")
    controls = f'<p>control: {_badge("p", row["power"])} {escape(control_text(verdict))}</p>'
    if ctl_rows:
        controls += ('<table class="grid"><tr><th>control</th><th>change</th><th>verdict</th><th>measured</th>'
                     "<th>95% interval</th><th>diverged</th><th>reason</th><th>changes</th></tr>"
                     + "".join(ctl_rows) + "</table>")
    timings = {k: f"{x:.2f} s" for k, x in result.get("timings", {}).items() if isinstance(x, (int, float))}
    run = [("mode", result.get("mode", "")), ("seed", result.get("seed", "")),
           ("config hash", result.get("config_hash", "")), ("code version", result.get("code_version", "")),
           *timings.items()]
    return (f'<div class="panel"><div class="figs">{imgs}</div><div class="facts">{head}{_kv(facts)}'
            f"<h3>Negative control</h3>{controls}"
            f"<h3>Config</h3>{_kv(sorted(result.get('config', {}).items()))}"
            f"<h3>Run</h3>{_kv(run)}"
            f"<h3>Versions</h3>{_kv(sorted(result.get('versions', {}).items()))}</div></div>")


_CSS = """
:root{color-scheme:light;--fg:#1b1f24;--mute:#59636e;--line:#d8dee4;--bg2:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;padding:16px 20px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg)}
h1{font-size:20px;margin:0 0 6px}h3{font-size:14px;margin:14px 0 4px}
#summary{font-weight:600;margin:4px 0}#about,#count,.cite,.id{color:var(--mute)}.id{font-size:12px}
#filters{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin:12px 0;padding:8px;background:var(--bg2);
 border:1px solid var(--line);border-radius:6px}
select,input,button{font:inherit}
table#claims{border-collapse:collapse;width:100%;table-layout:fixed}
#claims th,#claims td{border-bottom:1px solid var(--line);padding:5px 6px;text-align:left;vertical-align:top}
#claims thead th{position:sticky;top:0;background:#fff;cursor:pointer;user-select:none}
#claims thead th[aria-sort=ascending]::after{content:" \\25B2"}
#claims thead th[aria-sort=descending]::after{content:" \\25BC"}
tr.claim{cursor:pointer}tr.claim:hover,tr.claim[aria-expanded=true]{background:var(--bg2)}
tr.detail>td{background:#fbfcfd;padding:10px}
.b{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.s-PASS,.p-controlled{background:#dafbe1;color:#116329}.s-FAIL,.p-WEAK{background:#ffebe9;color:#a40e26}
.s-INCONCLUSIVE,.p-inconclusive{background:#fff8c5;color:#7d4e00}
.p-no-control,.p-none-declared,.p-not-run{background:#eaeef2;color:#424a53}
.panel{display:flex;flex-wrap:wrap;gap:16px}.figs{flex:1 1 520px;min-width:0}.facts{flex:1 1 420px;min-width:0}
figure{margin:0 0 10px}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:12px;color:var(--mute)}
table.kv,table.grid{border-collapse:collapse;font-size:13px}
.kv th,.kv td,.grid th,.grid td{border:1px solid var(--line);padding:2px 6px;text-align:left;vertical-align:top}
.kv th{background:var(--bg2);font-weight:500;white-space:nowrap}.kv td{overflow-wrap:anywhere}
code{font-size:13px}#claims td{overflow-wrap:anywhere}
"""

_JS = r"""
(function () {
  "use strict";
  var tbody = document.querySelector("#claims tbody");
  var heads = Array.prototype.slice.call(document.querySelectorAll("#claims thead th"));
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var q = document.getElementById("f-q");
  var cols = heads.map(function (h) { return h.dataset.col; });
  // one record per claim, read once: its rows, filter values, search text and sort keys
  var rows = Array.prototype.map.call(tbody.querySelectorAll("tr.claim"), function (tr) {
    var d = tr.dataset;
    return {tr: tr, detail: tr.nextElementSibling, i: +d.i, id: d.experiment + "/" + d.claim, text: d.text,
            open: false, values: selects.map(function (s) { return d[s.dataset.filter]; }),
            keys: heads.map(function (h, c) {
              var k = tr.cells[c].dataset.k;
              return h.dataset.kind === "num" ? (k === "" ? null : parseFloat(k)) : k;
            })};
  });
  var view = {sort: "", dir: "asc", open: []}, sortedBy = "";

  function readHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    selects.forEach(function (s) {
      var v = p.get(s.dataset.filter) || "";
      if (v && !Array.prototype.some.call(s.options, function (o) { return o.value === v; })) {
        var o = document.createElement("option"); o.value = v; o.textContent = v + " (0)"; s.appendChild(o);
      }
      s.value = v;
    });
    q.value = p.get("q") || "";
    view.sort = cols.indexOf(p.get("sort")) >= 0 ? p.get("sort") : "";
    view.dir = p.get("dir") === "desc" ? "desc" : "asc";
    view.open = p.getAll("open");
  }

  function writeHash() {
    var p = new URLSearchParams();
    selects.forEach(function (s) { if (s.value) p.set(s.dataset.filter, s.value); });
    if (q.value) p.set("q", q.value);
    if (view.sort) { p.set("sort", view.sort); p.set("dir", view.dir); }
    view.open.forEach(function (id) { p.append("open", id); });
    var h = p.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }

  function openIds() { return rows.filter(function (r) { return r.open; }).map(function (r) { return r.id; }); }

  function fill(r) {  // the detail's content, cloned from its template on first opening
    var cell = r.detail.firstElementChild;
    cell.appendChild(cell.querySelector("template").content.cloneNode(true));
    Array.prototype.forEach.call(cell.querySelectorAll("img"), function (img) {
      function done() { img.dataset.loaded = img.naturalWidth > 0 ? String(img.naturalWidth) : "error"; }
      if (img.complete) done(); else { img.addEventListener("load", done); img.addEventListener("error", done); }
    });
    r.filled = true;
  }

  function show(r, visible, open) {
    if (open && !r.filled) fill(r);
    if (r.tr.hidden === visible) r.tr.hidden = !visible;
    if (r.open !== open) { r.open = open; r.tr.setAttribute("aria-expanded", open ? "true" : "false"); }
    if (r.detail.hidden === (visible && open)) r.detail.hidden = !(visible && open);
  }

  function order() {
    var key = view.sort + " " + view.dir;
    if (key === sortedBy) return;
    sortedBy = key;
    var c = cols.indexOf(view.sort), sign = view.dir === "desc" ? -1 : 1;
    var sorted = rows.slice().sort(function (a, b) {
      if (c >= 0) {
        var x = a.keys[c], y = b.keys[c];
        if (x === null || y === null) { if (x !== y) return x === null ? 1 : -1; }  // missing numbers last
        else if (x !== y) return (x < y ? -1 : 1) * sign;
      }
      return a.i - b.i;
    });
    var frag = document.createDocumentFragment();
    sorted.forEach(function (r) { frag.appendChild(r.tr); frag.appendChild(r.detail); });
    tbody.appendChild(frag);
    heads.forEach(function (h) {
      h.setAttribute("aria-sort", h.dataset.col !== view.sort ? "none" : sign > 0 ? "ascending" : "descending");
    });
  }

  function apply() {
    var want = selects.map(function (s) { return s.value; }), text = q.value.trim().toLowerCase(), shown = 0;
    rows.forEach(function (r) {
      var ok = !text || r.text.indexOf(text) >= 0;
      for (var f = 0; ok && f < want.length; f++) {
        ok = want[f] === "!PASS" ? r.values[f] !== "PASS" : !want[f] || r.values[f] === want[f];
      }
      show(r, ok, view.open.indexOf(r.id) >= 0);
      if (ok) shown++;
    });
    order();
    document.getElementById("count").textContent = "showing " + shown + " of " + rows.length + " claims";
    document.body.dataset.shown = String(shown);
  }

  function changed() { view.open = openIds(); writeHash(); apply(); }
  function flip(r) { show(r, true, !r.open); view.open = openIds(); writeHash(); }
  function recordOf(el) {
    var tr = el.closest && el.closest("tr.claim");
    return tr ? rows[+tr.dataset.i] : null;
  }

  selects.forEach(function (s) { s.addEventListener("change", changed); });
  q.addEventListener("input", changed);
  document.getElementById("f-clear").addEventListener("click", function () {
    selects.forEach(function (s) { s.value = ""; }); q.value = ""; view.sort = ""; changed();
  });
  heads.forEach(function (h) {
    function sort() {
      view.dir = view.sort === h.dataset.col && view.dir === "asc" ? "desc" : "asc";
      view.sort = h.dataset.col; changed();
    }
    h.addEventListener("click", sort);
    h.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });
  tbody.addEventListener("click", function (e) {
    var r = recordOf(e.target);
    if (r && !e.target.closest("a")) flip(r);
  });
  tbody.addEventListener("keydown", function (e) {
    var r = recordOf(e.target);
    if (r && e.key === "Enter") flip(r);
  });
  window.addEventListener("hashchange", function () { readHash(); apply(); });
  readHash();
  apply();
  document.body.dataset.ready = "1";
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body data-total="{total}">
<h1>ratelab verification report</h1>
<p id="summary">{summary}</p>
<p id="about">{about}</p>
<div id="filters">
{filters}
<span id="count">{total} claims</span>
</div>
<table id="claims">
<colgroup>{cols}</colgroup>
<thead><tr>{heads}</tr></thead>
<tbody>
{body}
</tbody>
</table>
<noscript><p>Sorting, filtering and the claims' details need JavaScript.</p></noscript>
<script>{js}</script>
</body>
</html>
"""
