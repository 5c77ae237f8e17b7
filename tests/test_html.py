"""The browsable report ``index.html``: the generator (every claim a row, escaping, sort keys, filter options,
offline, ``ratelab report``) and the page in headless Chromium (rows, the FAIL filter, a figure, a screenshot).

One small real ``ratelab verify`` feeds every test: ``rm-fast`` on a small config and a registered experiment on
arrays whose claims cover every verdict and control outcome, with a statement full of ``| < > & " '``."""

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs

import jax
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from ratelab.claims import POWERS, STATUSES, Claim, Control
from ratelab.cli import main
from ratelab.errors import RatelabError
from ratelab.html import COLUMNS, filter_options, load_folder, packages_of, render, sort_keys
from ratelab.registry import Experiment, Panel, Paper, experiments, get, register, unregister
from ratelab.runner import trace_from_arrays

NASTY = "E|x| < 1 & y > 2: \"q\" 'a' </td><script>alert(1)</script> ||grad||"
TESTER = Paper(key="tester24", authors="A. Tester and B. O'Brien <&>", title="A <title> & more", venue="Nowhere",
               year=2024, url="javascript:alert(1)")


def _execute(cfg, key, **kw):
    gammas = np.geomspace(1.0, 1e3, 12)
    scale = np.exp(0.1 * np.asarray(jax.random.normal(key, (cfg["seeds"], 1))))
    return trace_from_arrays(gammas, {"dist": scale / gammas, "dist2": scale / gammas**2,
                                      "floor": 0.3 + 0 * scale / gammas, "floor_copy": 0.3 + 0 * scale / gammas})


def _landscape(cfg, trace, verdicts):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(trace.steps, trace["dist"].mean(axis=0))
    return fig


def _claims(cfg):
    return [
        Claim("rate", "dist = O(1/gamma)", "dist", expected=-1.0, tolerance=0.05,
              controls=(Control("squared", "judge dist2 ~ gamma^-2 instead", claim={"metric": "dist2"}),)),
        Claim("wrong", NASTY, "dist", expected=-2.0, tolerance=0.05, no_control="a test claim that is false"),
        Claim("floor", "floor stays 0.3", "floor", kind="value", expected=0.3, tolerance=0.01,
              controls=(Control("copy", "a copy of the same curve: passes, so the claim is WEAK",
                                claim={"metric": "floor_copy"}),)),
    ]


ARRAYS = Experiment(
    id="test-html-arrays", paper=TESTER, figure="Fig. <1> & 2", title="curves over gamma | a & b",
    configs={m: {"seed": 0, "seeds": 16, "steps": 12, "log_every": 1} for m in ("quick", "full")},
    execute=_execute, claims=_claims,
    panels=(Panel("dist", "distance", xlabel="gamma"), Panel("floor", "floor", xlabel="gamma", yscale="linear")),
    extra_figures={"landscape": _landscape})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A real ``ratelab verify`` of rm-fast (small) and the array experiment: exit 1, the ``wrong`` claim FAILs."""
    out = tmp_path_factory.mktemp("html")
    register(ARRAYS)
    try:
        code = main(["verify", "--only", "rm-fast", ARRAYS.id, "--seeds", "64", "--steps", "2000", "--out", str(out),
                     "--no-progress"])
    finally:
        unregister(ARRAYS.id)
    assert code == 1
    return out


class _Page(HTMLParser):
    """The parts of the page the tests read: claim rows (attributes, cell texts), selects' options, images, the
    summary and every src / href."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.rows: list[dict] = []
        self.options: dict[str, list[str]] = {}
        self.imgs: list[dict] = []
        self.links: list[str] = []
        self.body: dict = {}
        self._select = self._cell = None
        self._text: list[str] = []
        self._summary = False
        self.summary = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href")]
        if tag == "body":
            self.body = a
        elif tag == "tr" and a.get("class") == "claim":
            self.rows.append({**a, "cells": []})
        elif tag == "td" and self.rows and "claim" == self._last_tr:
            self._cell, self._text = a, []
        elif tag == "select":
            self._select = a["data-filter"]
            self.options[self._select] = []
        elif tag == "option" and self._select:
            self.options[self._select].append(a["value"])
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "p" and a.get("id") == "summary":
            self._summary = True
        if tag == "tr":
            self._last_tr = a.get("class")

    _last_tr = None

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._text).strip())
            self._cell = None
        elif tag == "select":
            self._select = None
        elif tag == "p":
            self._summary = False

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)
        if self._summary:
            self.summary += data


def _page(folder: Path) -> tuple[str, _Page]:
    text = (folder / "index.html").read_text()
    return text, _Page(text)


# ------------------------------------------------------------------------------------------------ the generator


def test_every_claim_is_a_row_in_report_order_with_its_numbers(folder):
    report = json.loads((folder / "report.json").read_text())
    _, page = _page(folder)
    assert [(r["data-experiment"], r["data-claim"]) for r in page.rows] == \
        [(c["experiment"], c["claim"]) for c in report["claims"]]
    assert len(page.rows) == 5
    for row, claim in zip(page.rows, report["claims"], strict=True):
        assert row["data-status"] == claim["status"] and row["data-power"] == claim["power"]
        assert len(row["cells"]) == len(COLUMNS)
    by = {(r["data-experiment"], r["data-claim"]): r for r in page.rows}
    assert [by[(ARRAYS.id, c)]["data-status"] for c in ("rate", "wrong", "floor")] == ["PASS", "FAIL", "PASS"]
    assert [by[(ARRAYS.id, c)]["data-power"] for c in ("rate", "wrong", "floor")] == ["controlled", "no control",
                                                                                      "WEAK"]
    assert {by[("rm-fast", c)]["data-package"] for c in ("rate", "constant")} == {"rl_theory"}
    assert by[(ARRAYS.id, "rate")]["data-package"] == "other"  # its solver is written in the test module
    from ratelab.report import summary

    assert page.summary == summary(report["claims"])


def test_every_text_is_escaped(folder):
    text, page = _page(folder)
    assert "<script>alert" not in text and "</td><script>" not in text
    assert text.count("<script>") == 1  # the page's own
    wrong = next(r for r in page.rows if r["data-claim"] == "wrong")
    statement = wrong["cells"][[k for k, _, _ in COLUMNS].index("statement")]
    assert statement == f"{NASTY} wrong"  # the statement as written, then the claim id
    assert wrong["data-paper"] == TESTER.key and "&lt;&amp;&gt;" in text  # the citation's <&>, escaped
    assert "javascript:" not in " ".join(page.links)  # a paper url that is not http(s) is not a link
    assert "Fig. &lt;1&gt; &amp; 2" in text and "curves over gamma | a &amp; b" in text


def test_the_page_is_offline_and_its_figures_are_beside_it(folder):
    text, page = _page(folder)
    for bad in ("<link", "@import", "url(", "<script src", "<iframe", "fetch(", "XMLHttpRequest"):
        assert bad not in text, bad
    srcs = {i["src"] for i in page.imgs}
    assert srcs == {"rm-fast/figure.png", f"{ARRAYS.id}/figure.png", f"{ARRAYS.id}/landscape.png"}
    assert all((folder / s).stat().st_size > 1000 for s in srcs)
    external = [u for u in page.links if u not in srcs]
    assert external == ["https://doi.org/10.1214/aoms/1177728716"] * 2  # rm-fast's two claims cite Chung (1954)
    assert not list(folder.glob(".index.html.*"))


def test_sort_keys_rank_verdicts_and_controls_and_put_missing_numbers_last(folder):
    report = json.loads((folder / "report.json").read_text())
    _, page = _page(folder)
    cols = [k for k, _, _ in COLUMNS]
    for row, claim in zip(page.rows, report["claims"], strict=True):
        keys = sort_keys({**claim, "package": row["data-package"]})
        assert set(keys) == set(cols)
        assert float(keys["measured"]) == claim["measured"]
        assert keys["seeds_needed"] == ("" if claim["seeds_needed"] is None else repr(float(claim["seeds_needed"])))
        assert keys["statement"] == claim["statement"].lower()
    row = {"experiment": "E", "paper": "P", "package": "p", "statement": "S", "claimed": "c", "seeds_needed": None}
    ranks = [sort_keys({**row, "measured": float("nan"), "status": s, "power": "controlled"})["status"]
             for s in ("FAIL", "INCONCLUSIVE", "PASS")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3
    powers = [sort_keys({**row, "measured": None, "status": "PASS", "power": p})["power"]
              for p in ("WEAK", "inconclusive", "controlled")]
    assert powers == sorted(powers) and len(set(powers)) == 3
    assert sort_keys({**row, "measured": None, "status": "PASS", "power": "WEAK"})["measured"] == ""


def test_filter_options_list_what_occurs_and_every_verdict_and_control_outcome(folder):
    report = json.loads((folder / "report.json").read_text())
    _, page = _page(folder)
    assert page.options["paper"] == ["", "chung1954", TESTER.key]  # by key, in the order of the short citations
    assert page.options["package"] == ["", "other", "rl_theory"]
    assert page.options["status"] == ["", "!PASS", *STATUSES]
    assert page.options["power"] == ["", *POWERS]
    table = [{**c, "package": "x", "paper_key": c["paper"]} for c in report["claims"]]
    opts = filter_options(table)
    assert {v: n for v, _, n in opts["status"]} == {s: sum(c["status"] == s for c in table) for s in STATUSES}
    assert sum(n for *_, n in opts["power"]) == len(table) == sum(n for *_, n in opts["paper"])
    # two papers with the same short citation (Li et al. (2022) wrote RADMM and RFedSVRG) stay apart
    two = [{**table[0], "paper": "Li et al. (2022)", "paper_key": k} for k in ("li2022radmm", "li2022rfedsvrg")]
    assert filter_options(two)["paper"] == [("li2022radmm", "Li et al. (2022), li2022radmm", 1),
                                            ("li2022rfedsvrg", "Li et al. (2022), li2022rfedsvrg", 1)]


def test_report_command_rewrites_the_same_page_and_reads_result_files(folder, tmp_path, capsys):
    before = (folder / "index.html").read_text()
    (folder / "index.html").unlink()
    assert main(["report", str(folder)]) == 0  # the array experiment is no longer registered: its result suffices
    assert (folder / "index.html").read_text() == before
    assert capsys.readouterr().out.strip() == str(folder / "index.html")
    # without report.json: every ID/result.json, by id
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "report.json").unlink()
    meta, results = load_folder(bare)
    assert [r["id"] for r in results] == sorted(["rm-fast", ARRAYS.id]) and meta["mode"] == "quick"
    assert main(["report", str(bare)]) == 0
    assert _Page((bare / "index.html").read_text()).body["data-total"] == "5"
    # results written before they recorded their package: the registry's, or unknown for an unregistered id
    assert [r["package"] for r in results] == ["rl_theory", "other"]
    old = [{k: v for k, v in r.items() if k != "package"} for r in results]
    assert packages_of(old) == {"rm-fast": "rl_theory", ARRAYS.id: "unknown"}
    assert 'data-package="unknown"' in render(old, meta=meta)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing", "not a folder"),
    (lambda p: p, "neither"),
    (lambda p: (p / "report.json").write_text("{not json") and p, "must be readable JSON"),
])
def test_report_of_a_bad_folder_is_one_line_exit_2(make, fragment, tmp_path, capsys):
    target = make(tmp_path)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ratelab: error:") and fragment in err and "\n" not in err
    with pytest.raises(RatelabError, match=fragment):
        load_folder(target)


def test_every_registered_experiment_has_a_solver_family():
    families = {e.id: e.package for e in experiments()}
    assert {families[i] for i in ("rm-fast", "msa-linear3", "a3c-speedup")} == {"rl_theory"}
    assert {families[i] for i in ("pbgd-toy", "aipod-quadratic", "pbrl-lambda")} == {"bilevel"}
    assert {families[i] for i in ("radmm-odl", "zo-rasa-samples", "rfedsvrg-linear")} == {"riemannian"}
    assert "other" not in families.values() and "unknown" not in families.values()
    assert get("rm-fast").package == "rl_theory"


# -------------------------------------------------------------------------------------- in headless Chromium


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; the test is skipped, saying why, where there is none (failed under
    RATELAB_REQUIRE_BROWSER, which ``.ci/run`` sets where it can install the browser)."""
    path = os.environ.get("RATELAB_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if path is None:
        reason = ("headless Chromium not found: install Debian's chromium (apt-get install -y chromium) or set "
                  "RATELAB_CHROMIUM to a Chromium binary")
        if os.environ.get("RATELAB_REQUIRE_BROWSER"):
            pytest.fail(f"RATELAB_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    return path


def _browse(chromium: str, url: str, tmp: Path, *args: str) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", "--window-size=1400,1000", *args, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_in_headless_chromium(chromium, folder, tmp_path):
    report = json.loads((folder / "report.json").read_text())
    url = (folder / "index.html").resolve().as_uri()

    # every claim a row, nothing hidden, in report order
    page = _Page(_browse(chromium, url, tmp_path, "--dump-dom"))
    assert page.body.get("data-ready") == "1", "the page's script did not finish"
    assert [(r["data-experiment"], r["data-claim"]) for r in page.rows] == \
        [(c["experiment"], c["claim"]) for c in report["claims"]]
    assert page.body["data-shown"] == str(len(report["claims"])) and not any("hidden" in r for r in page.rows)

    # the FAIL filter, with the failing claim opened and the rows sorted by measured value (descending)
    fails = [(c["experiment"], c["claim"]) for c in report["claims"] if c["status"] == "FAIL"]
    assert fails == [(ARRAYS.id, "wrong")]
    view = f"#status=FAIL&open={ARRAYS.id}/wrong&sort=measured&dir=desc"
    page = _Page(_browse(chromium, url + view, tmp_path, "--dump-dom"))
    shown = [(r["data-experiment"], r["data-claim"]) for r in page.rows if "hidden" not in r]
    assert shown == fails and page.body["data-shown"] == "1"
    assert {r["data-status"] for r in page.rows if "hidden" not in r} == {"FAIL"}
    loaded = {i["src"]: i.get("data-loaded") for i in page.imgs if "data-loaded" in i}
    assert set(loaded) == {f"{ARRAYS.id}/figure.png", f"{ARRAYS.id}/landscape.png"}
    assert all(v.isdigit() and int(v) > 0 for v in loaded.values()), loaded  # naturalWidth > 0
    measured = [float(r["cells"][[k for k, _, _ in COLUMNS].index("measured")].split()[0]) for r in page.rows]
    assert measured == sorted(measured, reverse=True)

    # what a person does: pick a verdict, sort by seeds to decide (twice: descending), open a claim; the URL follows
    clicks = """<script>
      var s = document.getElementById("f-status"); s.value = "INCONCLUSIVE"; s.dispatchEvent(new Event("change"));
      var h = document.querySelector('#claims th[data-col="seeds_needed"]'); h.click(); h.click();
      document.querySelector('tr.claim[data-claim="constant"]').cells[0].click();
      document.body.dataset.hash = location.hash;
    </script></body>"""
    (folder / "clicked.html").write_text((folder / "index.html").read_text().replace("</body>", clicks))
    page = _Page(_browse(chromium, (folder / "clicked.html").resolve().as_uri(), tmp_path, "--dump-dom"))
    assert parse_qs(page.body["data-hash"].lstrip("#")) == {"status": ["INCONCLUSIVE"], "sort": ["seeds_needed"],
                                                           "dir": ["desc"], "open": ["rm-fast/constant"]}
    undecided = sorted((c for c in report["claims"] if c["status"] == "INCONCLUSIVE"), key=lambda c: -c["seeds_needed"])
    assert [c["claim"] for c in undecided] == ["constant", "rate"]  # rm-fast on 64 seeds: C needs more seeds
    shown = [r for r in page.rows if "hidden" not in r]
    assert [(r["data-experiment"], r["data-claim"]) for r in shown] == \
        [(c["experiment"], c["claim"]) for c in undecided]
    assert [r["aria-expanded"] for r in shown] == ["true", "false"]
    (folder / "clicked.html").unlink()

    # a screenshot of rm-fast's claim opened is not blank
    shot = tmp_path / "page.png"
    _browse(chromium, f"{url}#open=rm-fast/rate", tmp_path, f"--screenshot={shot}")
    pixels = matplotlib.image.imread(shot)[..., :3].mean(axis=-1)
    assert pixels.shape == (1000, 1400)
    assert pixels.var() > 1e-3 and (pixels < 0.9).mean() > 0.02  # text, badges and a figure, not a white page
    shutil.copy(shot, folder / "screenshot.png")  # kept beside the page for a person to look at
