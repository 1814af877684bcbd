"""Drawing a frontier: PNG scatter panels (matplotlib) and self-contained SVG/HTML pages.

The Pareto maths is :mod:`search.frontier`; these functions only draw rows and fronts they are given.
"""

from __future__ import annotations

import html
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .frontier import MAXIMIZE, STEADIER, Objective, fmt, frontier_table

__all__ = ["CSS", "HIGHLIGHT_COLORS", "Panel", "build_panels", "plot_frontier", "scale", "svg_panel"]

_HIGHLIGHT_STYLES = [
    ("*", "gold"),
    ("D", "tab:green"),
    ("^", "tab:purple"),
    ("s", "tab:orange"),
    ("P", "tab:cyan"),
    ("X", "tab:brown"),
]
HIGHLIGHT_COLORS = ["#e6b800", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]


@dataclass
class Panel:
    """Data for one scatter panel: ``y`` is the first objective, ``x`` another one."""

    x_obj: Objective
    y_obj: Objective
    points: list[tuple[float, float, dict]]
    # the members of the frontier the table shows (over every objective, noise-aware), projected here:
    # a panel never draws a front of its own pair, which could disagree with the table
    front: list[tuple[float, float, dict]]


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def build_panels(
    rows: list[dict], objectives: list[Objective], noise=None, *, front: list[dict] | None = None
) -> list[Panel]:
    """One panel per objective after the first, against the first; each marks the members of ``front``
    (default: :func:`search.frontier.frontier_table` of the rows over ``objectives`` with ``noise``)."""
    primary = objectives[0]
    members = {id(r) for r in (frontier_table(rows, objectives, noise) if front is None else front)}
    panels = []
    for other in objectives[1:]:
        pts = [
            (float(r[other.metric]), float(r[primary.metric]), r)
            for r in rows
            if _finite(r.get(other.metric)) and _finite(r.get(primary.metric))
        ]
        marked = sorted((p for p in pts if id(p[2]) in members), key=lambda p: (other.sign * p[0], p[1]))
        panels.append(Panel(other, primary, pts, marked))
    return panels


def _half(row: Mapping[str, Any], metric: str) -> float:
    """The half-width of a row's 95 % interval of ``metric`` (its seeds' spread); 0 when it has none.

    A metric the frontier compares through a steadier stand-in (a latency through its interleaved ratio
    to the base, :data:`search.frontier.STEADIER`) gets the stand-in's relative interval, drawn at the
    metric's scale: the bar shows the uncertainty the frontier decides with, not the machine's load.
    """
    steady = STEADIER.get(metric)
    if steady is not None:
        value, ratio, ratio_half = row.get(metric), row.get(steady), row.get(f"{steady}_ci95")
        if _finite(value) and _finite(ratio) and _finite(ratio_half) and float(ratio) > 0:
            return abs(float(value)) * float(ratio_half) / float(ratio)
    v = row.get(f"{metric}_ci95")
    return float(v) if _finite(v) else 0.0


def _bars(panel: Panel) -> list[tuple[float, float, float, float]]:
    """``(x, y, x half-width, y half-width)`` of every point with an interval on either axis."""
    out = []
    for x, y, r in panel.points:
        hx, hy = _half(r, panel.x_obj.metric), _half(r, panel.y_obj.metric)
        if hx or hy:
            out.append((x, y, hx, hy))
    return out


def _axis_label(obj: Objective) -> str:
    return f"{obj.metric} ({'higher' if obj.direction == MAXIMIZE else 'lower'} is better)"


def _write_png(panels: list[Panel], path: Path, highlight: Mapping[str, str], *, title: str) -> None:
    from matplotlib.figure import Figure  # lazy: keeps importing this module cheap

    fig = Figure(figsize=(5.2 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel.points:
            xs, ys, _ = zip(*panel.points, strict=True)
            ax.scatter(xs, ys, s=14, c="0.7", label="all trials", zorder=1)
            limits = ax.get_xlim(), ax.get_ylim()
            for x, y, hx, hy in _bars(panel):  # 95 % intervals over seeds; the axes stay on the points
                ax.errorbar(
                    x, y, xerr=hx or None, yerr=hy or None, fmt="none", ecolor="0.55", lw=0.8, zorder=0
                )
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
        if panel.front:
            fx, fy, _ = zip(*panel.front, strict=True)
            ax.scatter(fx, fy, s=40, c="tab:red", label="frontier (the table's)", zorder=3)
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
            lines.extend(f"{key}.{k}: {fmt(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {fmt(value)}")
    return "\n".join(lines)


def scale(values: list[float], lo_px: float, hi_px: float) -> tuple[Any, float, float]:
    """Return a linear data->pixel map over the padded range of ``values`` and that range."""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or (abs(lo) * 0.05 or 0.5)
    lo, hi = lo - pad, hi + pad
    return (lambda v: lo_px + (v - lo) / (hi - lo) * (hi_px - lo_px)), lo, hi


def svg_panel(panel: Panel, highlight: Mapping[str, str]) -> str:
    w, h, ml, mr, mt, mb = 520, 380, 72, 16, 16, 52
    if not panel.points:
        return f'<svg width="{w}" height="{h}"><text x="20" y="40">no data</text></svg>'
    xs = [p[0] for p in panel.points]
    ys = [p[1] for p in panel.points]
    sx, x0, x1 = scale(xs, ml, w - mr)
    sy, y0, y1 = scale(ys, h - mb, mt)
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

    def circle(x: float, y: float, row: dict, *, cls: str, r: float, extra: str = "") -> str:
        tip = html.escape(_tooltip(row))
        return (
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" class="{cls}"{extra}>'
            f"<title>{tip}</title></circle>"
        )

    for x, y, hx, hy in _bars(panel):  # 95 % intervals over seeds, clipped to the frame
        px = [min(max(sx(v), ml), w - mr) for v in (x - hx, x + hx)]
        py = [min(max(sy(v), mt), h - mb) for v in (y - hy, y + hy)]
        if hx:
            out.append(
                f'<line x1="{px[0]:.1f}" y1="{sy(y):.1f}" x2="{px[1]:.1f}" y2="{sy(y):.1f}" class="bar"/>'
            )
        if hy:
            out.append(
                f'<line x1="{sx(x):.1f}" y1="{py[0]:.1f}" x2="{sx(x):.1f}" y2="{py[1]:.1f}" class="bar"/>'
            )
    out.extend(circle(x, y, r, cls="pt", r=3.5) for x, y, r in panel.points)
    out.extend(circle(x, y, r, cls="front", r=5) for x, y, r in panel.front)
    for k, (label, text) in enumerate(highlight.items()):
        color = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)]
        for x, y, r in panel.points:
            if r.get("label") == label:
                out.append(circle(x, y, r, cls="hl", r=7, extra=f' fill="{color}"'))
                caption = html.escape(text)
                out.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) - 8:.1f}" class="tick">{caption}</text>')
    out.append("</svg>")
    return "\n".join(out)


CSS = """
body { font-family: sans-serif; margin: 1.5em; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; }
svg text { font-size: 12px; fill: #222; }
svg .tick { font-size: 10px; }
svg .mid { text-anchor: middle; }
svg .end { text-anchor: end; }
.frame { fill: none; stroke: #888; }
.pt { fill: #b0b0b0; }
.front { fill: #d62728; }
.hl { stroke: #000; stroke-width: 1; }
.bar { stroke: #8c8c8c; stroke-width: 1; }
circle:hover { stroke: #000; stroke-width: 2; }
table { border-collapse: collapse; font-size: 13px; margin-top: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
"""


def _write_html(
    panels: list[Panel],
    front_rows: list[dict],
    objectives: list[Objective],
    *,
    path: Path,
    highlight: Mapping[str, str],
    title: str,
) -> None:
    columns = [o.metric for o in objectives]
    for row in front_rows:
        columns.extend(k for k, v in row.items() if k not in columns and not isinstance(v, Mapping))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in front_rows
    )
    legend = (
        "Grey: all architectures, with their 95 % intervals over seeds. Red: the frontier in the table below "
        "(over every objective, noise-aware: architectures tied within the noise are members together). "
        + "".join(f"{html.escape(t)} ({html.escape(k)}): large marker. " for k, t in highlight.items())
        + "Hover a point for its details."
    )
    page_title = html.escape(title or "Pareto frontier")
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{page_title}</title>'
        f"<style>{CSS}</style></head><body>\n<h1>{page_title}</h1>\n<p>{legend}</p>\n"
        f'<div class="panels">\n' + "\n".join(svg_panel(p, highlight) for p in panels) + "\n</div>\n"
        f"<h2>Frontier ({len(front_rows)} rows)</h2>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n</body></html>\n"
    )
    path.write_text(doc, encoding="utf-8")


def plot_frontier(
    rows: list[dict],
    objectives: list[Objective],
    path_png: str | os.PathLike[str],
    *,
    path_html: str | os.PathLike[str],
    highlight: dict[str, str] | None = None,
    title: str = "",
    noise=None,
) -> None:
    """Write a PNG and a self-contained offline HTML plot of the trials and their frontier.

    One panel per pair (first objective on the y axis against each other objective on the x
    axis). All architectures are grey; the members of the frontier the table shows (over every
    objective, noise-aware) are red in every panel, with no line of the pair's own. Rows whose ``label``
    key is a key of ``highlight`` get a large marker captioned with the mapped text. A row with
    ``<metric>_ci95`` (a mean over seeds) gets error bars of its 95 % interval; a latency with an
    interleaved ratio to the base gets the ratio's relative interval instead (see :func:`_half`). With ``noise`` (see
    :func:`search.frontier.frontier_table`) the frontier is the noise-aware one. The HTML uses inline
    SVG with per-point ``<title>`` tooltips and loads nothing external.

    Raises:
        ValueError: if fewer than two objectives are given.
    """
    if len(objectives) < 2:
        raise ValueError("plot_frontier needs at least two objectives")
    highlight = dict(highlight or {})
    front = frontier_table(rows, objectives, noise)
    panels = build_panels(rows, objectives, front=front)
    png, page = Path(path_png), Path(path_html)
    png.parent.mkdir(parents=True, exist_ok=True)
    page.parent.mkdir(parents=True, exist_ok=True)
    _write_png(panels, png, highlight, title=title)
    _write_html(panels, front, objectives, path=page, highlight=highlight, title=title)
