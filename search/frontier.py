"""Pareto frontiers, hypervolume and frontier reports for multi-objective search results.

Everything here is a pure function of its inputs except :func:`plot_frontier`, which writes a PNG
and a self-contained HTML file. Objectives are given as direction strings (``"maximize"`` or
``"minimize"``), one per coordinate of each point; internally every point is mapped to
"minimize" space by negating maximized coordinates.

NaN handling: a point with a NaN coordinate is never compared; it is left out of every front
and contributes nothing to a hypervolume. Infinite values are ordinary values (``+inf`` is the
worst possible minimized value, ``-inf`` the best).
"""

from __future__ import annotations

import html
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAXIMIZE = "maximize"
MINIMIZE = "minimize"
_DIRECTIONS = (MAXIMIZE, MINIMIZE)


@dataclass(frozen=True)
class Objective:
    """One optimisation objective: a metric name and whether to maximize or minimize it."""

    metric: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"direction for {self.metric!r} must be 'maximize' or 'minimize', got {self.direction!r}"
            )

    @property
    def sign(self) -> float:
        """Multiplier mapping this objective's values to minimize space."""
        return -1.0 if self.direction == MAXIMIZE else 1.0


# --------------------------------------------------------------------------- core helpers


def _signs(directions: Sequence[str]) -> np.ndarray:
    """Return +1/-1 per objective (minimize/maximize); raise ValueError on a bad direction."""
    if isinstance(directions, str):
        raise ValueError(f"directions must be a sequence of strings, got the string {directions!r}")
    signs = []
    for d in directions:
        if d not in _DIRECTIONS:
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
        signs.append(-1.0 if d == MAXIMIZE else 1.0)
    if not signs:
        raise ValueError("at least one objective direction is required")
    return np.asarray(signs, dtype=float)


def _to_min_space(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Return an (n, m) float array of ``points`` with maximized coordinates negated."""
    signs = _signs(directions)
    m = len(signs)
    rows = []
    for i, p in enumerate(points):
        row = [float(v) for v in p]
        if len(row) != m:
            raise ValueError(f"point {i} has {len(row)} values but {m} directions were given")
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(rows), m) * signs


def _dominance_matrix(pts: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when point i dominates point j (both already in minimize space)."""
    le = (pts[:, None, :] <= pts[None, :, :]).all(axis=-1)
    lt = (pts[:, None, :] < pts[None, :, :]).any(axis=-1)
    return le & lt


def _front_mask(pts: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a NaN-free minimize-space array."""
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    return ~_dominance_matrix(pts).any(axis=0)


# --------------------------------------------------------------------------- dominance / sorting


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Return True if ``a`` Pareto-dominates ``b``.

    ``a`` dominates ``b`` when it is no worse in every objective and strictly better in at least
    one. Comparisons involving NaN are false, so NaN points never dominate nor are dominated.
    """
    pts = _to_min_space([a, b], directions)
    return bool((pts[0] <= pts[1]).all() and (pts[0] < pts[1]).any())


def non_dominated_sort(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Sort points into exact non-domination fronts.

    Args:
        points: n points, each with one value per objective.
        directions: ``"maximize"``/``"minimize"`` per objective.

    Returns:
        Fronts as lists of indices into ``points`` (ascending within a front); front 0 is the
        Pareto frontier. Identical points never dominate each other, so they share a front.
        Points containing NaN are excluded from every front.
    """
    pts = _to_min_space(points, directions)
    valid = np.flatnonzero(~np.isnan(pts).any(axis=1))
    if len(valid) == 0:
        return []
    dom = _dominance_matrix(pts[valid])
    n_dominators = dom.sum(axis=0)
    remaining = np.ones(len(valid), dtype=bool)
    fronts: list[list[int]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (n_dominators == 0))
        fronts.append([int(valid[i]) for i in front])
        remaining[front] = False
        n_dominators = n_dominators - dom[front].sum(axis=0)
    return fronts


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Return the indices (ascending) of the non-dominated points; NaN points are excluded."""
    fronts = non_dominated_sort(points, directions)
    return fronts[0] if fronts else []


# --------------------------------------------------------------------------- hypervolume


def _hv2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume of minimize-space points that are all strictly below ``ref``."""
    area = 0.0
    cur_y = float(ref[1])
    for x, y in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:
        if y < cur_y:
            area += (float(ref[0]) - x) * (cur_y - y)
            cur_y = float(y)
    return area


def _hv3d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact 3-D hypervolume by slicing along the last axis and summing 2-D sweeps."""
    pts = pts[_front_mask(pts)]
    pts = pts[np.argsort(pts[:, 2], kind="stable")]
    zs = np.unique(pts[:, 2])
    volume = 0.0
    for k, z in enumerate(zs):
        z_next = zs[k + 1] if k + 1 < len(zs) else ref[2]
        volume += _hv2d(pts[pts[:, 2] <= z][:, :2], ref[:2]) * float(z_next - z)
    return volume


def hypervolume(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``.

    Args:
        points: points with 1, 2 or 3 objective values each.
        directions: ``"maximize"``/``"minimize"`` per objective.
        reference: finite reference point in the original directions (i.e. worse than the
            points of interest: below them for maximized, above them for minimized objectives).

    Returns:
        The dominated volume. Points that are not strictly better than the reference in every
        objective, and points containing NaN, contribute nothing.

    Raises:
        ValueError: for more than 3 objectives, mismatched lengths or a non-finite reference.
    """
    signs = _signs(directions)
    m = len(signs)
    if m > 3:
        raise ValueError(f"hypervolume supports 1 to 3 objectives, got {m}")
    ref = _to_min_space([reference], directions)[0]
    if not np.isfinite(ref).all():
        raise ValueError(f"reference must be finite, got {list(reference)!r}")
    pts = _to_min_space(points, directions)
    pts = pts[(pts < ref).all(axis=1)]  # NaN compares false, so NaN points drop out here
    if len(pts) == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        return _hv2d(pts, ref)
    return _hv3d(pts, ref)


def default_reference(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """Derive a hypervolume reference point from the finite values of each objective.

    Minimized objectives use ``max + 10%`` of ``max(|max|, max - min)``; maximized objectives
    whose values all lie in [0, 1] (mAP-like) use 0.0, other maximized objectives use
    ``min - 10%`` of ``max(|min|, max - min)``. When that margin is zero (all values 0) a margin
    of 1.0 is used. Note that with the 0.0 reference a maximized value of exactly 0 contributes
    nothing.

    Raises:
        ValueError: when an objective has no finite value.
    """
    signs = _signs(directions)
    raw = _to_min_space(points, directions) * signs  # validated, back in original directions
    reference = []
    for k, sign in enumerate(signs):
        col = raw[:, k][np.isfinite(raw[:, k])]
        if len(col) == 0:
            raise ValueError(f"objective {k} has no finite values to derive a reference from")
        lo, hi = float(col.min()), float(col.max())
        if sign > 0:
            margin = 0.1 * max(abs(hi), hi - lo) or 1.0
            reference.append(hi + margin)
        elif lo >= 0.0 and hi <= 1.0:
            reference.append(0.0)
        else:
            margin = 0.1 * max(abs(lo), hi - lo) or 1.0
            reference.append(lo - margin)
    return reference


# --------------------------------------------------------------------------- tables


def _metric_vector(row: Mapping[str, Any], objectives: Sequence[Objective]) -> list[float] | None:
    """Return the row's finite objective values, or None if any is missing or not finite."""
    values = []
    for obj in objectives:
        v = row.get(obj.metric)
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        f = float(v)
        if not math.isfinite(f):
            return None
        values.append(f)
    return values


def comparable_groups(rows: list[dict], objectives: Sequence[Objective]) -> dict[str, list[dict]]:
    """Rows split into groups whose objectives can be compared with each other, in first-seen order.

    A latency is a property of the device it was measured on: when an objective is a latency and the
    rows carry more than one ``latency_device``, each device is its own group. Otherwise all rows are
    one group (keyed by their one device, or ``""``).
    """
    if not any(o.metric.startswith("latency") for o in objectives):
        return {"": list(rows)} if rows else {}
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("latency_device") or ""), []).append(row)
    return groups


def frontier_table(rows: list[dict], objectives: list[Objective]) -> list[dict]:
    """Return the rows on the Pareto frontier, sorted by the first objective, best first.

    Rows missing an objective metric or holding a non-numeric or non-finite value are ignored.
    Ties on the first objective are broken by the following objectives, then by input order.
    The returned dicts are the input row objects themselves. Latencies measured on different devices
    are never compared: with several devices (see :func:`comparable_groups`) the result is each
    device's own frontier, one after the other.
    """
    if not objectives:
        raise ValueError("at least one objective is required")
    groups = comparable_groups(rows, objectives)
    if len(groups) > 1:
        return [row for group in groups.values() for row in _frontier(group, objectives)]
    return _frontier(rows, objectives)


def _frontier(rows: list[dict], objectives: list[Objective]) -> list[dict]:
    kept = [(row, vec) for row in rows if (vec := _metric_vector(row, objectives)) is not None]
    if not kept:
        return []
    front = pareto_front([vec for _, vec in kept], [o.direction for o in objectives])
    signs = [o.sign for o in objectives]
    chosen = [kept[i] for i in front]
    chosen.sort(key=lambda rv: tuple(s * v for s, v in zip(signs, rv[1], strict=True)))
    return [row for row, _ in chosen]


def _fmt(value: Any) -> str:
    """Format one table cell: floats with 4 significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool | numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Render rows as a plain-text aligned table (numeric columns right-aligned)."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(c), numbers.Real) and not isinstance(row.get(c), bool)
            for row in rows
            if row.get(c) is not None
        )
        for c in columns
    ]
    widths = [max([len(c)] + [len(r[k]) for r in cells]) for k, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


# --------------------------------------------------------------------------- plotting

_HIGHLIGHT_STYLES = [
    ("*", "gold"),
    ("D", "tab:green"),
    ("^", "tab:purple"),
    ("s", "tab:orange"),
    ("P", "tab:cyan"),
    ("X", "tab:brown"),
]
_SVG_HIGHLIGHT_COLORS = ["#e6b800", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]


@dataclass
class _Panel:
    """Data for one scatter panel: ``y`` is the first objective, ``x`` another one."""

    x_obj: Objective
    y_obj: Objective
    points: list[tuple[float, float, dict]]
    front: list[tuple[float, float, dict]]  # pairwise 2-D front, best x first
    global_front: list[tuple[float, float, dict]]  # all-objective front projected here


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _build_panels(rows: list[dict], objectives: list[Objective]) -> list[_Panel]:
    primary = objectives[0]
    global_ids = {id(r) for r in frontier_table(rows, objectives)} if len(objectives) > 2 else set()
    panels = []
    for other in objectives[1:]:
        pts = [
            (float(r[other.metric]), float(r[primary.metric]), r)
            for r in rows
            if _finite(r.get(other.metric)) and _finite(r.get(primary.metric))
        ]
        idx = pareto_front([(x, y) for x, y, _ in pts], [other.direction, primary.direction])
        front = sorted((pts[i] for i in idx), key=lambda p: (other.sign * p[0], primary.sign * p[1]))
        glob = [p for p in pts if id(p[2]) in global_ids]
        panels.append(_Panel(other, primary, pts, front, glob))
    return panels


def _axis_label(obj: Objective) -> str:
    return f"{obj.metric} ({'higher' if obj.direction == MAXIMIZE else 'lower'} is better)"


def _write_png(panels: list[_Panel], path: Path, highlight: Mapping[str, str], title: str) -> None:
    from matplotlib.figure import Figure  # lazy: keeps importing this module cheap

    fig = Figure(figsize=(5.2 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel.points:
            xs, ys, _ = zip(*panel.points, strict=True)
            ax.scatter(xs, ys, s=14, c="0.7", label="all trials", zorder=1)
        if panel.front:
            fx, fy, _ = zip(*panel.front, strict=True)
            ax.plot(fx, fy, drawstyle="steps-post", color="tab:red", lw=1.2, zorder=2)
            ax.scatter(fx, fy, s=30, c="tab:red", label="Pareto front", zorder=3)
        if panel.global_front:
            gx, gy, _ = zip(*panel.global_front, strict=True)
            ax.scatter(
                gx,
                gy,
                s=80,
                facecolors="none",
                edgecolors="tab:blue",
                zorder=3,
                label="front (all objectives)",
            )
        for k, (label, text) in enumerate(highlight.items()):
            marker, color = _HIGHLIGHT_STYLES[k % len(_HIGHLIGHT_STYLES)]
            hits = [(x, y) for x, y, r in panel.points if r.get("label") == label]
            if hits:
                hx, hy = zip(*hits, strict=True)
                ax.scatter(hx, hy, s=140, marker=marker, c=color, edgecolors="black", zorder=4, label=text)
        ax.set_xlabel(_axis_label(panel.x_obj))
        ax.set_ylabel(_axis_label(panel.y_obj))
        ax.grid(alpha=0.3)
        if panel.points:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _tooltip(row: Mapping[str, Any]) -> str:
    """Multi-line ``key: value`` text for a row; nested dicts (e.g. params) are flattened."""
    lines = []
    for key, value in row.items():
        if isinstance(value, Mapping):
            lines.extend(f"{key}.{k}: {_fmt(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {_fmt(value)}")
    return "\n".join(lines)


def _scale(values: list[float], lo_px: float, hi_px: float) -> tuple[Any, float, float]:
    """Return a linear data->pixel map over the padded range of ``values`` and that range."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or (abs(lo) * 0.05 or 0.5)
    lo, hi = lo - pad, hi + pad
    return (lambda v: lo_px + (v - lo) / (hi - lo) * (hi_px - lo_px)), lo, hi


def _svg_panel(panel: _Panel, highlight: Mapping[str, str]) -> str:
    w, h, ml, mr, mt, mb = 520, 380, 72, 16, 16, 52
    if not panel.points:
        return f'<svg width="{w}" height="{h}"><text x="20" y="40">no data</text></svg>'
    xs = [p[0] for p in panel.points]
    ys = [p[1] for p in panel.points]
    sx, x0, x1 = _scale(xs, ml, w - mr)
    sy, y0, y1 = _scale(ys, h - mb, mt)
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    out.append(f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" class="frame"/>')
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * (i + 0.5) / 5, y0 + (y1 - y0) * (i + 0.5) / 5
        out.append(f'<text x="{sx(xv):.1f}" y="{h - mb + 16}" class="tick mid">{xv:.4g}</text>')
        out.append(f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" class="tick end">{yv:.4g}</text>')
    out.append(
        f'<text x="{(ml + w - mr) / 2}" y="{h - 10}" text-anchor="middle">'
        f"{html.escape(_axis_label(panel.x_obj))}</text>"
    )
    out.append(
        f'<text transform="translate(16 {(mt + h - mb) / 2}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(_axis_label(panel.y_obj))}</text>"
    )

    def circle(x: float, y: float, row: dict, cls: str, r: float, extra: str = "") -> str:
        tip = html.escape(_tooltip(row))
        return (
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" class="{cls}"{extra}>'
            f"<title>{tip}</title></circle>"
        )

    out.extend(circle(x, y, r, "pt", 3.5) for x, y, r in panel.points)
    if panel.front:
        coords = []
        for k, (x, y, _) in enumerate(panel.front):
            if k:
                coords.append(f"{sx(x):.1f},{sy(panel.front[k - 1][1]):.1f}")
            coords.append(f"{sx(x):.1f},{sy(y):.1f}")
        out.append(f'<polyline points="{" ".join(coords)}" class="step"/>')
        out.extend(circle(x, y, r, "front", 4.5) for x, y, r in panel.front)
    out.extend(circle(x, y, r, "gfront", 7) for x, y, r in panel.global_front)
    for k, (label, text) in enumerate(highlight.items()):
        color = _SVG_HIGHLIGHT_COLORS[k % len(_SVG_HIGHLIGHT_COLORS)]
        for x, y, r in panel.points:
            if r.get("label") == label:
                out.append(circle(x, y, r, "hl", 7, f' fill="{color}"'))
                caption = html.escape(text)
                out.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) - 8:.1f}" class="tick">{caption}</text>')
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font-family: sans-serif; margin: 1.5em; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; }
svg text { font-size: 12px; fill: #222; }
svg .tick { font-size: 10px; }
svg .mid { text-anchor: middle; }
svg .end { text-anchor: end; }
.frame { fill: none; stroke: #888; }
.pt { fill: #b0b0b0; }
.front { fill: #d62728; }
.gfront { fill: none; stroke: #1f77b4; stroke-width: 1.5; }
.hl { stroke: #000; stroke-width: 1; }
.step { fill: none; stroke: #d62728; stroke-width: 1.3; }
circle:hover { stroke: #000; stroke-width: 2; }
table { border-collapse: collapse; font-size: 13px; margin-top: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
"""


def _write_html(
    panels: list[_Panel],
    front_rows: list[dict],
    objectives: list[Objective],
    path: Path,
    highlight: Mapping[str, str],
    title: str,
) -> None:
    columns = [o.metric for o in objectives]
    for row in front_rows:
        columns.extend(k for k, v in row.items() if k not in columns and not isinstance(v, Mapping))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in front_rows
    )
    legend = (
        "Grey: all trials. Red: Pareto front of the plotted pair (step line). "
        + ("Blue rings: front over all objectives. " if len(objectives) > 2 else "")
        + "".join(f"{html.escape(t)} ({html.escape(k)}): large marker. " for k, t in highlight.items())
        + "Hover a point for its details."
    )
    page_title = html.escape(title or "Pareto frontier")
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{page_title}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{page_title}</h1>\n<p>{legend}</p>\n"
        f'<div class="panels">\n' + "\n".join(_svg_panel(p, highlight) for p in panels) + "\n</div>\n"
        f"<h2>Frontier ({len(front_rows)} rows)</h2>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n</body></html>\n"
    )
    path.write_text(doc, encoding="utf-8")


def plot_frontier(
    rows: list[dict],
    objectives: list[Objective],
    path_png: str | os.PathLike[str],
    path_html: str | os.PathLike[str],
    *,
    highlight: dict[str, str] | None = None,
    title: str = "",
) -> None:
    """Write a PNG and a self-contained offline HTML plot of the trials and their frontier.

    One panel per pair (first objective on the y axis against each other objective on the x
    axis). All trials are grey, the pair's Pareto front is red and joined by a step line; with
    three or more objectives the all-objective front is ringed in blue. Rows whose ``label``
    key is a key of ``highlight`` get a large marker captioned with the mapped text. The HTML
    uses inline SVG with per-point ``<title>`` tooltips and loads nothing external.

    Raises:
        ValueError: if fewer than two objectives are given.
    """
    if len(objectives) < 2:
        raise ValueError("plot_frontier needs at least two objectives")
    highlight = dict(highlight or {})
    panels = _build_panels(rows, objectives)
    png, page = Path(path_png), Path(path_html)
    png.parent.mkdir(parents=True, exist_ok=True)
    page.parent.mkdir(parents=True, exist_ok=True)
    _write_png(panels, png, highlight, title)
    _write_html(panels, frontier_table(rows, objectives), objectives, page, highlight, title)
