"""The sweep report: one offline HTML page whose numbers match the rows it was built from."""

from __future__ import annotations

import html
import math
import random
import re
import shutil
import subprocess
from dataclasses import fields

import pytest

from search.frontier import Objective, fmt, frontier_table, hypervolume, hypervolume_box
from search.report import BASE_TEXT, SECTIONS, sweep_report, write_report
from search.space import Budget, load_space
from tests.helpers import Tables


def row(i: int, params: dict, *, m: float, lat: float, gf: float, label: str = "") -> dict:
    return {
        "trial_id": f"trial_{i:04d}",
        "run_id": f"run{i}",
        "arch_hash": f"{i:016x}",
        "map50_95": m,
        "map50": m + 0.1,
        "latency_ms": lat,
        "gflops": gf,
        "n_params": 1000 + i,
        "params": params,
        "label": label,
    }


@pytest.fixture(scope="module")
def placements():
    space = load_space("placements")
    rng = random.Random(0)
    rows = [
        row(0, dict.fromkeys((s.name for s in space.sites), "keep"), m=0.3, lat=20.0, gf=100.0, label="base")
    ]
    for i, params in enumerate(space.random_points(24, seed=1), 1):
        rows.append(row(i, params, m=rng.uniform(0.1, 0.5), lat=rng.uniform(5, 30), gf=rng.uniform(50, 150)))
    rows[5]["latency_ms"] = math.nan  # skipped by the latency means, kept in the others
    rows[7]["gflops"] = None
    return space, rows, sweep_report(space, space.budgets["cpu"], rows, title="placements <demo>")


@pytest.fixture(scope="module")
def modes():
    space = load_space("modes")
    rows = [
        row(1, {"stage3": "keep"}, m=0.30, lat=20.0, gf=100.0, label="base"),
        row(2, {"stage3": "ori"}, m=0.32, lat=18.0, gf=90.0),
        row(3, {"stage3": "gate"}, m=0.28, lat=19.0, gf=95.0),
    ]
    return space, rows


def _effect_rows(doc: str) -> list:
    """The per-site effects table's body rows; [] when the report shows no table (nothing identified)."""
    tables = [rows for attrs, rows in Tables(doc).tables if attrs.get("id") == "effects"]
    assert len(tables) <= 1
    return [r for r in tables[0] if r] if tables else []


def assert_offline(doc: str) -> None:
    assert "http://" not in doc and "https://" not in doc
    assert re.search(r"<script[^>]*\bsrc\s*=", doc, re.I) is None
    assert re.search(r"<link\b", doc, re.I) is None
    assert re.search(r"(src|href)\s*=\s*[\"']?(?!data:|#)", doc, re.I) is None


def test_self_contained_with_every_section(placements):
    space, rows, doc = placements
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert_offline(doc)
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in doc
    assert "placements &lt;demo&gt;" in doc and "<demo>" not in doc
    assert doc.count("<svg") == 3  # map vs latency, map vs GFLOPs, hypervolume
    effects = _effect_rows(doc)  # a row per identified choice, in site order; one sentence for the rest
    choices = [f"{s.name}={c.name}" for s in space.sites for c in s.choices if c.op != "keep"]
    shown = [c[0][0] for c in effects]
    assert shown == [c for c in choices if c in shown]
    assert f"{len(choices) - len(shown)} of the {len(choices)} choices are not identified" in doc
    budget = Tables(doc).find(id="budget")  # every Budget field, then is_proxy
    assert [c[0][0] for c in budget] == [
        fmt(getattr(space.budgets["cpu"], f.name)) for f in fields(Budget)
    ] + ["True"]
    assert len(Tables(doc).find(id="sites")) == len(space.sites)
    assert any("GhostModuleV3" in cells[3][0] for cells in Tables(doc).find(id="sites"))


def test_frontier_rows_and_base_marker(placements):
    space, rows, doc = placements
    objectives = [Objective(o.metric, o.direction) for o in space.objectives]
    front = frontier_table(rows, objectives)
    shown = [cells[0][0] for cells in Tables(doc).find(id="frontier")]
    assert shown == [r["trial_id"] for r in front]
    assert f"{BASE_TEXT}: large marker" in doc
    assert not space.references and "not among these trials" not in doc  # placements names no reference
    # the base is drawn as a highlighted marker in both scatter panels (mAP vs latency, mAP vs GFLOPs)
    assert doc.count('class="hl" fill="#e6b800"') == 2 and 'class="hl" fill="#2ca02c"' not in doc


def test_means_over_seeds_are_drawn_with_their_intervals_and_ties_are_said(modes):
    space, rows = modes
    seeded = [{**r, "n_seeds": 2, "map50_95_ci95": 0.05, "map50_95_std": 0.004} for r in rows]
    seeded[2]["map50_95_ci95"] = float("nan")  # one seed: no interval, no bar
    noise = {"map50_95": (0.03, 3), "latency_ms": (0.1, 3), "gflops": (0.0, 0)}
    doc = sweep_report(space, space.budgets["cpu"], seeded, noise=noise)
    assert doc.count('class="bar"') == 2 * 2  # two rows with an interval, in each of the two panels
    frontier = Tables(doc).find(id="frontier")
    assert all("±" in cells[3][0] for cells in frontier if cells[2][0] == "2")
    notes = doc[doc.index('id="noise-notes"') :].split("</ul>")[0]
    assert "noise floor" in notes and "map50_95 0.03 (df 3)" in notes


def test_reference_marker_by_hash_or_label(modes):
    """The modes space names the hand-made placement as a reference; the report marks it with its caption."""
    space, rows = modes
    budget = space.budgets["cpu"]
    (hand,) = space.references
    caption = html.escape(hand.caption)
    assert "hand-made placement" in hand.caption
    none = sweep_report(space, budget, rows)
    assert f"{caption}: not among these trials" in none
    by_hash = sweep_report(space, budget, rows, marks={rows[1]["arch_hash"]: "hand"})
    assert f"{caption}: large marker" in by_hash and f"{BASE_TEXT}: large marker" in by_hash
    assert by_hash.count('class="hl" fill="#e6b800"') == 2 and by_hash.count('class="hl" fill="#2ca02c"') == 2
    assert rows[1]["label"] == ""  # the input rows are not changed
    trials = Tables(by_hash).find(id="trials")
    assert [c[1][0] for c in trials] == ["base", "hand", ""]
    by_label = sweep_report(space, budget, [rows[0], {**rows[1], "label": "hand"}, rows[2]])
    assert f"{caption}: large marker" in by_label
    assert_offline(by_hash)


def test_effects_are_shown_only_where_the_trials_identify_them(placements):
    """25 random architectures cannot separate the 30 effects of placements: the report says which it
    cannot estimate and how many trials each needs, instead of a mean of the trials that had it."""
    space, rows, doc = placements
    effects = _effect_rows(doc)
    shown = [c for c in effects if "±" in c[2][0]]
    assert len(shown) == len(effects)  # only identified effects have rows (here: none is) ...
    assert "not identified:" not in doc  # ... and no row each for the rest, but one sentence
    assert re.search(
        r"\d+ of the 30 choices are not identified by these trials .* each needs 1 more trial,", doc
    )
    assert len(shown) <= len(rows) - 1  # never more effects than the trials can carry
    for c in effects:
        site, choice = c[0][0].split("=")
        assert int(c[1][0]) == sum(r["params"][site] == choice for r in rows)
    assert all("best" not in c[2][1].get("class", "") for c in effects)


def test_hypervolume_matches_prefixes(placements):
    space, rows, doc = placements
    directions = [o.direction for o in space.objectives]
    points = [
        [r[o.metric] if isinstance(r[o.metric], float) else math.nan for o in space.objectives] for r in rows
    ]
    # the box is fixed by the space and the base, not by the rows: mAP from 0 to 1, each cost from twice
    # the base's down to 0; the hypervolume is a fraction of it
    reference, ideal = hypervolume_box(space.objectives, rows[0])
    assert reference == [
        0.0 if o.direction == "maximize" else 2 * rows[0][o.metric] for o in space.objectives
    ]
    box = math.prod(abs(a - b) for a, b in zip(reference, ideal, strict=True))
    cells = Tables(doc).find(id="hypervolume")
    assert [int(c[0][0]) for c in cells] == list(range(1, len(rows) + 1))
    assert [c[1][0] for c in cells] == [r["trial_id"] for r in rows]
    for i, c in enumerate(cells, 1):
        expected = hypervolume(points[:i], directions, reference) / box
        assert float(c[2][1]["data-value"]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert 0 <= expected <= 1
    assert "fraction of a box fixed by the space and the base" in doc


def test_empty_and_single_row(modes):
    space, rows = modes
    empty = sweep_report(space, space.budgets["full"], [])
    assert "No trial finished" in empty and "<svg" not in empty
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in empty
    assert_offline(empty)
    one = sweep_report(space, space.budgets["cpu"], rows[:1])  # the base alone
    assert Tables(one).find(id="frontier")[0][0][0] == "trial_0001"
    hv = Tables(one).find(id="hypervolume")
    assert len(hv) == 1 and float(hv[0][2][1]["data-value"]) == pytest.approx(0.30 * 0.5 * 0.5)
    assert one.count("<svg") == 3
    other = sweep_report(space, space.budgets["cpu"], rows[1:2])  # no base: no box to measure in
    assert "No hypervolume: no base among the finished architectures" in other and other.count("<svg") == 2


def test_text_is_escaped(modes):
    space, rows = modes
    evil = [{**rows[0], "trial_id": "<script>alert(1)</script>", "arch_hash": "a&b"}]
    doc = sweep_report(space, space.budgets["cpu"], evil, title="<i>t</i>")
    assert "<script" not in doc and "<i>t</i>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc and "a&amp;b" in doc


def test_write_report_and_screenshot(placements, tmp_path):
    _, _, doc = placements
    page = write_report(tmp_path / "out" / "report.html", doc)
    assert page.read_text(encoding="utf-8") == doc
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no `chromium` on PATH: the headless render check needs it")
    png = tmp_path / "report.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1200,2000",
        page.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_the_points_the_plots_mark_are_exactly_the_tables_frontier(placements):
    """In a 3-objective space a pair's own 2-D front differs from the frontier the table shows; the panels
    mark only the table's members (in every panel), and draw no step line of a pair's own front."""
    space, rows, doc = placements
    objectives = [Objective(o.metric, o.direction) for o in space.objectives]
    table = [cells[0][0] for cells in Tables(doc).find(id="frontier")]
    marked = set()
    for panel in re.findall(r"<svg[^>]*role=\"img\">.*?</svg>", doc, re.S)[:2]:  # the two scatter panels
        ids = set(re.findall(r'class="front"><title>trial_id: (trial_\d+)', panel))
        marked |= ids
        assert 'class="step"' not in panel and "polyline" not in panel
        assert ids <= set(table)
    assert marked == set(table)
    from search.frontier import pareto_front

    pts = [(r["latency_ms"], r["map50_95"]) for r in rows if math.isfinite(r["latency_ms"] or math.nan)]
    pair = pareto_front(pts, ["minimize", "maximize"])
    assert len(pair) != len(table) or set(table) != {rows[i]["trial_id"] for i in pair}  # the case is real
    assert len(frontier_table(rows, objectives)) == len(table)


def test_the_frontier_png_and_html_mark_the_same_members_as_the_table(placements, tmp_path):
    from search.plots import build_panels, plot_frontier

    space, rows, _ = placements
    objectives = [Objective(o.metric, o.direction) for o in space.objectives]
    plot_frontier(rows, objectives, tmp_path / "f.png", path_html=tmp_path / "f.html")
    page = (tmp_path / "f.html").read_text()
    front = frontier_table(rows, objectives)
    shown = {c[0] for cells in Tables(page).find() for c in cells if c[0].startswith("trial_")}
    assert shown == {r["trial_id"] for r in front}
    for panel in build_panels(rows, objectives):
        assert {id(r) for _, _, r in panel.front} == {
            id(r) for r in front if r in [p[2] for p in panel.points]
        }
