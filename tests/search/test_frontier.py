"""Tests for search.frontier: property tests against brute-force references, tables and plots."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.frontier import (
    Objective,
    comparable_groups,
    default_reference,
    dominates,
    format_table,
    frontier_table,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)
from search.plots import plot_frontier

GRID = 5  # coordinates drawn from 0..GRID-1 so ties and duplicates are frequent
PROPS = settings(max_examples=200, deadline=None)


# --------------------------------------------------------------------------- brute-force references


def _ref_dominates(a, b, directions) -> bool:
    better = worse = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y  # compare as "larger is better"
        better |= x > y
        worse |= x < y
    return better and not worse


def _ref_sort(points, directions) -> list[list[int]]:
    remaining = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    fronts = []
    while remaining:
        front = [
            i
            for i in remaining
            if not any(_ref_dominates(points[j], points[i], directions) for j in remaining)
        ]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def _ref_hypervolume(points, directions, reference) -> int:
    """Count the unit cells of the integer grid dominated by the points (exact for int data)."""
    flip = [1 if d == "minimize" else -1 for d in directions]
    ref = [f * r for f, r in zip(flip, reference, strict=True)]
    pts = [[f * v for f, v in zip(flip, p, strict=True)] for p in points]
    pts = [p for p in pts if all(v < r for v, r in zip(p, ref, strict=True))]
    if not pts:
        return 0
    lows = [min(p[k] for p in pts) for k in range(len(ref))]
    ranges = [range(lo, r) for lo, r in zip(lows, ref, strict=True)]
    return sum(
        any(all(v <= c for v, c in zip(p, cell, strict=True)) for p in pts)
        for cell in itertools.product(*ranges)
    )


# --------------------------------------------------------------------------- strategies


@st.composite
def point_sets(draw, min_size: int = 0, max_size: int = 25):
    m = draw(st.sampled_from([2, 3]))
    directions = draw(st.lists(st.sampled_from(["maximize", "minimize"]), min_size=m, max_size=m))
    coord = st.integers(0, GRID - 1)
    points = draw(st.lists(st.lists(coord, min_size=m, max_size=m), min_size=min_size, max_size=max_size))
    if points and draw(st.booleans()):  # force some exact duplicates
        points = points + draw(st.lists(st.sampled_from(points), max_size=5))
    return points, directions


@st.composite
def hv_cases(draw, max_size: int = 12):
    points, directions = draw(point_sets(max_size=max_size))
    # reference inside or just outside the grid so some points are not strictly better
    reference = [
        draw(st.integers(1, GRID)) if d == "minimize" else draw(st.integers(-1, GRID - 2)) for d in directions
    ]
    return points, directions, reference


# --------------------------------------------------------------------------- Objective / dominates


def test_objective_validates_direction():
    assert Objective("map50_95", "maximize").direction == "maximize"
    with pytest.raises(ValueError, match="'max'"):
        Objective("map50_95", "max")
    with pytest.raises(ValueError, match="sideways"):
        dominates([1, 2], [2, 1], ["minimize", "sideways"])


def test_dominates_basic():
    d = ["maximize", "minimize"]
    assert dominates([0.5, 10], [0.4, 12], d)
    assert dominates([0.5, 10], [0.5, 12], d)
    assert not dominates([0.5, 10], [0.5, 10], d)
    assert not dominates([0.5, 10], [0.6, 12], d)
    assert not dominates([math.nan, 1], [0.1, 2], d)
    with pytest.raises(ValueError):
        dominates([1, 2, 3], [1, 2], d)


@PROPS
@given(point_sets(min_size=2, max_size=6))
def test_dominates_matches_reference(case):
    points, directions = case
    for a, b in itertools.permutations(points, 2):
        assert dominates(a, b, directions) == _ref_dominates(a, b, directions)


# --------------------------------------------------------------------------- sorting


@PROPS
@given(point_sets())
def test_non_dominated_sort_matches_brute_force(case):
    points, directions = case
    fronts = non_dominated_sort(points, directions)
    assert fronts == _ref_sort(points, directions)
    assert pareto_front(points, directions) == (fronts[0] if fronts else [])
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    for f in fronts:
        assert f == sorted(f)


@PROPS
@given(point_sets(min_size=1))
def test_duplicates_share_a_front(case):
    points, directions = case
    front_of = {i: k for k, f in enumerate(non_dominated_sort(points, directions)) for i in f}
    for i, j in itertools.combinations(range(len(points)), 2):
        if points[i] == points[j]:
            assert front_of[i] == front_of[j]


def test_nan_points_are_excluded():
    points = [[1.0, 1.0], [math.nan, 0.0], [2.0, 0.5], [0.0, math.nan], [3.0, 3.0]]
    d = ["minimize", "minimize"]
    assert non_dominated_sort(points, d) == [[0, 2], [4]]
    assert pareto_front(points, d) == [0, 2]
    assert non_dominated_sort([[math.nan, 1.0]], d) == []
    assert non_dominated_sort([], d) == []


def test_infinite_values_are_ordinary():
    d = ["minimize", "minimize"]
    assert non_dominated_sort([[math.inf, 1.0], [1.0, 1.0], [0.0, math.inf]], d) == [[1, 2], [0]]


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_known_values():
    assert hypervolume([[1.0]], ["minimize"], [3.0]) == 2.0
    assert hypervolume([[0.8]], ["maximize"], [0.0]) == pytest.approx(0.8)
    pts = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume(pts, ["minimize", "minimize"], [4, 4]) == 6.0
    # mAP (max) vs latency (min)
    assert hypervolume([[0.5, 10.0]], ["maximize", "minimize"], [0.0, 20.0]) == pytest.approx(5.0)
    assert hypervolume([[1, 1, 1]], ["minimize"] * 3, [2, 3, 4]) == 6.0
    assert hypervolume([], ["minimize", "minimize"], [1, 1]) == 0.0
    assert hypervolume([[5, 0]], ["minimize", "minimize"], [5, 1]) == 0.0  # not strictly better


def test_hypervolume_rejects_bad_input():
    with pytest.raises(ValueError):
        hypervolume([[1, 1, 1, 1]], ["minimize"] * 4, [2, 2, 2, 2])
    with pytest.raises(ValueError):
        hypervolume([[1, 1]], ["minimize"] * 2, [math.nan, 2])


@PROPS
@given(hv_cases())
def test_hypervolume_matches_cell_count(case):
    points, directions, reference = case
    assert hypervolume(points, directions, reference) == _ref_hypervolume(points, directions, reference)


@PROPS
@given(hv_cases(), st.data())
def test_hypervolume_monotone_and_duplicate_invariant(case, data):
    points, directions, reference = case
    base = hypervolume(points, directions, reference)
    extra = data.draw(st.lists(st.integers(0, GRID - 1), min_size=len(directions), max_size=len(directions)))
    assert hypervolume(points + [extra], directions, reference) >= base
    assert hypervolume(points + points, directions, reference) == base
    assert hypervolume(points + [[math.nan] * len(directions)], directions, reference) == base


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 100), st.floats(1, 50)), min_size=1, max_size=30))
def test_default_reference_bounds_every_point(points):
    d = ["maximize", "minimize", "minimize"]
    ref = default_reference(points, d)
    assert ref[0] == 0.0
    assert all(ref[k] > max(p[k] for p in points) for k in (1, 2))
    assert hypervolume(points, d, ref) >= 0.0


def test_default_reference_cases():
    assert default_reference([[0.0], [0.0]], ["minimize"]) == [1.0]
    assert default_reference([[10.0], [20.0]], ["minimize"]) == [22.0]
    assert default_reference([[10.0], [20.0]], ["maximize"]) == [9.0]
    assert default_reference([[0.2], [math.nan], [math.inf]], ["maximize"]) == [0.0]
    with pytest.raises(ValueError):
        default_reference([[math.nan]], ["minimize"])


# --------------------------------------------------------------------------- tables


OBJECTIVES = [Objective("map", "maximize"), Objective("latency_ms", "minimize")]


def _rows():
    return [
        {"trial_id": 0, "label": "base", "map": 0.40, "latency_ms": 10.0, "params": {"w": 0.5}},
        {"trial_id": 1, "map": 0.45, "latency_ms": 12.0, "arch_hash": "ab12"},
        {"trial_id": 2, "map": 0.38, "latency_ms": 9.0},
        {"trial_id": 3, "map": 0.39, "latency_ms": 11.0},  # dominated by 0
        {"trial_id": 4, "map": math.nan, "latency_ms": 1.0},
        {"trial_id": 5, "map": 0.99, "latency_ms": math.inf},
        {"trial_id": 6, "latency_ms": 0.5},
        {"trial_id": 7, "map": "n/a", "latency_ms": 0.5},
    ]


def test_frontier_table_ignores_bad_rows_and_sorts_best_first():
    front = frontier_table(_rows(), OBJECTIVES)
    assert [r["trial_id"] for r in front] == [1, 0, 2]
    assert frontier_table([], OBJECTIVES) == []
    assert frontier_table([{"map": math.nan, "latency_ms": 1.0}], OBJECTIVES) == []


def test_frontier_table_minimize_first_and_duplicates():
    objs = [Objective("latency_ms", "minimize"), Objective("map", "maximize")]
    data = [(0.4, 10), (0.4, 10), (0.5, 20)]
    rows = [{"id": i, "map": m, "latency_ms": lat} for i, (m, lat) in enumerate(data)]
    assert [r["id"] for r in frontier_table(rows, objs)] == [0, 1, 2]


def test_format_table_alignment():
    text = format_table(_rows()[:3], ["trial_id", "map", "latency_ms", "arch_hash"])
    lines = text.splitlines()
    assert lines[0].split() == ["trial_id", "map", "latency_ms", "arch_hash"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["0", "0.4", "10"]
    assert lines[3].split() == ["1", "0.45", "12", "ab12"]
    assert len({len(line) for line in lines[:2]}) == 1
    assert format_table([{"x": 1234.5678}], ["x"]).splitlines()[-1].strip() == "1235"


# --------------------------------------------------------------------------- plotting


def test_plot_frontier_writes_offline_files(tmp_path):
    rows = _rows()
    for r in rows:
        if isinstance(r.get("map"), float) and math.isfinite(r["map"]):
            r["gflops"] = 50.0 + 10 * r["trial_id"]
    objectives = OBJECTIVES + [Objective("gflops", "minimize")]
    png, page = tmp_path / "front.png", tmp_path / "out" / "front.html"
    plot_frontier(
        rows, objectives, png, path_html=page, highlight={"base": "unmodified base"}, title="demo <run>"
    )
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = page.read_text(encoding="utf-8")
    assert doc.count("<svg") == 2
    assert "trial_id: 1" in doc and "params.w: 0.5" in doc
    assert doc.count('class="hl" fill="#e6b800"') == 2  # the base row, drawn highlighted in both panels
    assert "demo &lt;run&gt;" in doc
    assert re.search(r"<script[^>]*src\s*=\s*[\"']?https?://", doc, re.I) is None
    assert "http://" not in doc and "https://" not in doc
    with pytest.raises(ValueError):
        plot_frontier(rows, objectives[:1], png, path_html=page)


def test_latency_error_bars_show_the_ratio_interval_the_frontier_decides_with():
    """The frontier compares latency through the interleaved ratio to the base; a bar drawn from the
    absolute median's seed interval (the machine's load) would show overlaps the frontier does not use."""
    from search.plots import Panel, svg_panel

    obj = [Objective("map50_95", "maximize"), Objective("latency_ms", "minimize")]
    rows = [
        {
            "label": "base",
            "map50_95": 0.5,
            "map50_95_ci95": 0.02,
            "latency_ms": 20.0,
            "latency_ms_ci95": 8.0,
            "latency_ratio": 1.0,
            "latency_ratio_ci95": 0.01,
        },
        {
            "label": "a",
            "map50_95": 0.6,
            "latency_ms": 30.0,
            "latency_ms_ci95": 9.0,
            "latency_ratio": 1.5,
            "latency_ratio_ci95": 0.03,
        },
        {"label": "no ratio", "map50_95": 0.4, "latency_ms": 40.0, "latency_ms_ci95": 5.0},
    ]
    pts = [(r["latency_ms"], r["map50_95"], r) for r in rows]
    doc = svg_panel(Panel(obj[1], obj[0], pts, []), {})
    widths = sorted(
        round(abs(float(x2) - float(x1)), 1)
        for x1, y1, x2, y2 in re.findall(
            r'<line x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="([\d.]+)" class="bar"', doc
        )
        if y1 == y2
    )
    cx = [float(v) for v in re.findall(r'<circle cx="([\d.]+)"', doc)[:2]]
    px_per_ms = (cx[1] - cx[0]) / 10.0  # the base at 20 ms, "a" at 30 ms
    # the base: 20 ms x 1 % -> +-0.2 ms; "a": 30 ms x 2 % -> +-0.6 ms (not +-8 and +-9); the row without a
    # ratio keeps its own +-5 ms bar (clipped at the frame's edge)
    assert len(widths) == 3
    assert widths[:2] == pytest.approx([0.4 * px_per_ms, 1.2 * px_per_ms], abs=0.2)
    assert widths[2] > 5 * px_per_ms


def test_latencies_of_different_devices_are_never_compared():
    """On a cluster a trial's latency is its node's: a fast GPU would 'dominate' every trial timed on a slow
    one. Each device gets its own frontier, and the text says so."""
    from search.results import frontier_text
    from search.space import load_space

    objectives = [Objective("map50_95", "maximize"), Objective("latency_ms", "minimize")]
    rows = [
        {"trial_id": "a1", "map50_95": 0.40, "latency_ms": 30.0, "latency_device": "cpu:slow"},
        {"trial_id": "a2", "map50_95": 0.30, "latency_ms": 20.0, "latency_device": "cpu:slow"},
        {"trial_id": "b1", "map50_95": 0.41, "latency_ms": 3.0, "latency_device": "cuda:fast"},
        {"trial_id": "b2", "map50_95": 0.20, "latency_ms": 4.0, "latency_device": "cuda:fast"},
    ]
    front = [r["trial_id"] for r in frontier_table(rows, objectives)]
    assert sorted(front) == ["a1", "a2", "b1"]  # mixed, b1 would dominate both a1 and a2
    assert set(comparable_groups(rows, objectives)) == {"cpu:slow", "cuda:fast"}
    # without a latency objective, GFLOPs and mAP compare across devices
    assert [r["trial_id"] for r in frontier_table(rows, [Objective("map50_95", "maximize")])] == ["b1"]
    space = load_space("modes")
    shown = [
        {**r, "params": {"stage3": "keep"}, "gflops": 1.0, "n_params": 1, "arch_hash": "h"} for r in rows
    ]
    text = frontier_text(frontier_table(shown, list(space.objectives)), space)
    assert "never compared across them" in text and "latency device cpu:slow:" in text
