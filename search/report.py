"""One self-contained HTML report of a sweep: space, budget, frontier, hypervolume, per-site effects.

:func:`sweep_report` is a pure function of its inputs; :func:`write_report` writes its result. The page
uses inline CSS and inline SVG only (no scripts, fonts or URLs), so it opens offline and can be
attached to an MLflow run as is. The scatter panels are drawn by :mod:`search.frontier`'s helpers.

Markers: a row's ``label`` is ``"base"`` for the unmodified base model (every site keeps;
:func:`search.records.run_row` sets it), the name of one of the space's references (``references:`` in
the space file, e.g. ``hand`` in ``modes``: the hand-made placement), or ``""``. A caller that knows the
references' architecture hashes may pass ``marks={arch_hash: reference name}`` instead of labelling
rows: rows with such a hash are marked in the report (on copies; the input rows are left unchanged).
"""

from __future__ import annotations

import dataclasses
import html
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .ablation import COLUMNS as ABLATION_COLUMNS
from .ablation import ablation_cells, ablation_table
from .frontier import (
    Objective,
    comparable_groups,
    fmt,
    frontier_notes,
    frontier_table,
    hypervolume_curve,
)
from .plots import CSS, HIGHLIGHT_COLORS, build_panels, scale, svg_panel
from .records import TRIAL_METRICS, choices_text
from .space import Budget, Choice, Site, Space
from .stats import EXACT_METRICS, interval_text

__all__ = ["BASE_TEXT", "SECTIONS", "sweep_report", "write_report"]

SECTIONS = (
    "Search space",
    "Budget",
    "Frontier",
    "Hypervolume over trials",
    "Ablation",
    "Per-site effects",
    "All trials",
)
BASE_TEXT = "unmodified base"
# The metrics of the effect tables and the x axes of the plot, with their usual directions.

_REPORT_CSS = """
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
td.txt, th.txt { text-align: left; }
.note { color: #555; font-size: 13px; }
.hvline { fill: none; stroke: #1f77b4; stroke-width: 1.5; }
.hvpt { fill: #1f77b4; }
details { margin-top: 1em; }
"""


# --------------------------------------------------------------------------- small helpers


def _num(v: Any) -> float:
    """``v`` as a float; NaN when it is missing, boolean or not a number."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return math.nan
    return float(v)


def _td(value: Any, *, best: bool = False) -> str:
    """One table cell: numbers right-aligned with their full value in ``data-value``."""
    text = html.escape(fmt(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        cls = ' class="best"' if best else ""
        return f'<td{cls} data-value="{float(value)!r}">{text}</td>'
    return f'<td class="txt">{text}</td>'


def _table(columns: Sequence[str], body: Sequence[str], attrs: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(items: Sequence[tuple[str, Any]], attrs: str = "") -> str:
    body = [f'<tr><th class="txt">{html.escape(k)}</th>{_td(v)}</tr>' for k, v in items]
    return f"<table{attrs}><tbody>{''.join(body)}</tbody></table>"


def _choices_text(row: Mapping[str, Any]) -> str:
    params = row.get("params") or {}
    return choices_text(params)


def _objectives(space: Space) -> list[Objective]:
    return list(space.objectives)


def _labelled(rows: list[dict], marks: Mapping[str, str] | None) -> list[dict]:
    """Shallow copies of ``rows``, labelled with the reference ``marks`` names for their hash."""
    marks = marks or {}
    return [{**r, "label": marks.get(r.get("arch_hash"), r.get("label") or "")} for r in rows]


# --------------------------------------------------------------------------- sections


def _layer_type(space: Space, site: Site) -> str:
    try:
        layers = space.base_yaml["backbone"] + space.base_yaml["head"]
        return str(layers[site.layer][2])
    except (KeyError, IndexError, TypeError):
        return ""


def _choice_text(choice: Choice) -> str:
    if choice.op == "keep":
        return f"{choice.name}: keep"
    text = f"{choice.name}: {choice.op} {choice.block} ({choice.mode})"
    if choice.args is not None:
        text += f" args {list(choice.args)}"
    if choice.repeats is not None:
        text += f" x{choice.repeats}"
    return text


def _space_section(space: Space) -> str:
    info = _kv_table(
        [
            ("name", space.name),
            ("description", space.description),
            ("base model", space.base),
            ("objectives", ", ".join(f"{o.metric} ({o.direction})" for o in space.objectives)),
            ("constraints", ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(space.constraints).items())),
            ("sites", len(space.sites)),
            ("size (points)", space.size),
        ],
        ' id="space"',
    )
    body = [
        "<tr>"
        + _td(s.name)
        + _td(s.layer)
        + _td(_layer_type(space, s))
        + _td("; ".join(_choice_text(c) for c in s.choices))
        + "</tr>"
        for s in space.sites
    ]
    sites = _table(["site", "layer", "base layer", "choices"], body, ' id="sites"')
    return f"<h2>Search space</h2>\n{info}\n{sites}"


def _budget_section(budget: Budget) -> str:
    items = [(f.name, getattr(budget, f.name)) for f in dataclasses.fields(budget)]
    items.append(("is_proxy", str(budget.is_proxy)))
    return "<h2>Budget</h2>\n" + _kv_table(items, ' id="budget"')


def _rows_table(rows: list[dict], objectives: list[Objective], attrs: str) -> str:
    metrics = [o.metric for o in objectives] + [
        m for m in TRIAL_METRICS if m not in {o.metric for o in objectives}
    ]
    spread = [m for m in metrics if m not in EXACT_METRICS]  # measured: shown with their 95 % interval
    columns = ["trial_id", "label", "n_seeds", *(f"{m} ±95%" if m in spread else m for m in metrics)]
    columns += ["choices", "arch_hash"]
    body = [
        "<tr>"
        + "".join(_td(r.get(c)) for c in ("trial_id", "label", "n_seeds"))
        + "".join(_td(r.get(m)) if m not in spread else _mean_td(r, m) for m in metrics)
        + _td(_choices_text(r))
        + _td(r.get("arch_hash"))
        + "</tr>"
        for r in rows
    ]
    return _table(columns, body, attrs)


def _mean_td(row: Mapping[str, Any], metric: str) -> str:
    """A mean over seeds and its 95 % interval (see :func:`search.stats.interval_text`)."""
    mean, half = _num(row.get(metric)), _num(row.get(f"{metric}_ci95"))
    if math.isnan(mean):
        return _td(None)
    seeds = [v.get(metric) for v in (row.get("seeds") or {}).values()]
    return f'<td data-value="{mean!r}">{html.escape(interval_text(mean, half, seeds))}</td>'


def _plot_objectives(space: Space) -> list[Objective]:
    """The space's first objective on the y axis against each of the others."""
    return list(space.objectives)


def _frontier_section(
    space: Space,
    rows: list[dict],
    front: list[dict],
    *,
    references: Mapping[str, str],
    noise=None,
    proxy: str | None = None,
) -> str:
    objectives = _objectives(space)
    parts = [
        f"<h2>Frontier</h2>\n<p>{len(front)} of {len(rows)} finished architectures are on the Pareto frontier "
        f"of {html.escape(', '.join(o.metric for o in objectives))}. Each value is the mean over the "
        "architecture's seeds, ± the half-width of its 95 % interval. Latency is one figure per architecture: "
        "the base timed alone times the architecture's ratio to the base, timed interleaved with it.</p>"
    ]
    if proxy:
        parts.append(
            f'<p class="note" id="proxy">GFLOPs and parameters are the deployable architecture\'s (full size, at '
            f"640); mAP and latency are the scaled-down proxy's that the {html.escape(proxy)} budget trains.</p>"
        )
    if noise is not None:
        parts.append(
            '<p class="note" id="noise">The frontier is noise-aware: an architecture is dominated only by one '
            "that is not worse beyond noise on any objective and better beyond noise on one (GFLOPs and "
            "parameters are exact; mAP and latency have the seed spread below).</p>"
        )
        notes = frontier_notes(front, objectives, noise)
        if notes:
            parts.append(
                '<ul id="noise-notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
            )
    groups = comparable_groups(rows, objectives)
    if len(groups) > 1:
        parts.append(
            f'<p class="note" id="devices">Latency was measured on {len(groups)} devices '
            f"({html.escape(', '.join(groups))}) and is never compared across them: the frontier is each "
            "device's own, and the hypervolume is that of the device with the most trials.</p>"
        )
    if not rows:
        parts.append("<p>No trial finished: the frontier is empty.</p>")
        return "\n".join(parts)
    parts.append(_rows_table(front, objectives, ' id="frontier"'))
    highlight = {"base": BASE_TEXT, **references}  # fixed order: fixed colours
    panels = build_panels(rows, _plot_objectives(space), front=front)  # the table's frontier, marked
    marks = []
    for k, (label, text) in enumerate(highlight.items()):
        present = any(r.get("label") == label for r in rows)
        color = HIGHLIGHT_COLORS[k % len(HIGHLIGHT_COLORS)]
        state = "large marker" if present else "not among these trials"
        marks.append(f'<span style="color:{color}">&#9679;</span> {html.escape(text)}: {state}.')
    parts.append(
        '<p class="note">Grey: all architectures, with the 95 % interval of each mean over seeds (grey bars, '
        "clipped to the panel). Red: the frontier in the table above (noise-aware: architectures tied within "
        "the noise are members together), in every panel. "
        + " ".join(marks)
        + " Hover a point for its details.</p>"
    )
    parts.append('<div class="panels">\n' + "\n".join(svg_panel(p, highlight) for p in panels) + "\n</div>")
    return "\n".join(parts)


def _hypervolumes(space: Space, rows: list[dict]) -> tuple[list[float], list[float], list[dict]] | str:
    """:func:`search.frontier.hypervolume_curve` of ``rows``, or why there is none."""
    try:
        return hypervolume_curve(rows, space.objectives)
    except ValueError as e:
        return str(e)


def _svg_line(values: list[float]) -> str:
    w, h, ml, mr, mt, mb = 520, 240, 72, 16, 16, 44
    sx, _, _ = scale([1.0, float(len(values))], ml, w - mr)
    sy, y0, y1 = scale(values, h - mb, mt)
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    out.append(f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" class="frame"/>')
    step = max(1, math.ceil(len(values) / 8))
    for i in range(1, len(values) + 1, step):
        out.append(f'<text x="{sx(i):.1f}" y="{h - mb + 16}" class="tick mid">{i}</text>')
    for k in range(4):
        yv = y0 + (y1 - y0) * (k + 0.5) / 4
        out.append(f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" class="tick end">{yv:.4g}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 8}" text-anchor="middle">finished trials</text>')
    out.append(
        f'<text transform="translate(16 {(mt + h - mb) / 2}) rotate(-90)" text-anchor="middle">hypervolume</text>'
    )
    coords = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(values, 1))
    out.append(f'<polyline points="{coords}" class="hvline"/>')
    out.extend(
        f'<circle cx="{sx(i):.1f}" cy="{sy(v):.1f}" r="3" class="hvpt"><title>{i}: {v:.6g}</title></circle>'
        for i, v in enumerate(values, 1)
    )
    out.append("</svg>")
    return "\n".join(out)


def _hypervolume_section(space: Space, rows: list[dict], curve=None) -> str:
    head = "<h2>Hypervolume over trials</h2>"
    if not rows:
        return f"{head}\n<p>No trial finished: no hypervolume.</p>"
    result = curve if curve is not None else _hypervolumes(space, rows)
    if isinstance(result, str):
        return f"{head}\n<p>No hypervolume: {html.escape(result)}.</p>"
    reference, values, rows = result
    ref_text = ", ".join(f"{o.metric}={fmt(v)}" for o, v in zip(space.objectives, reference, strict=True))
    note = (
        f'<p class="note">Hypervolume of the first i finished architectures, in the order they finished, as a '
        f"fraction of a box fixed by the space and the base (not by the trials seen so far, so its changes "
        f"can be read): from the reference point {html.escape(ref_text)} (mAP 0; each cost twice the "
        f"base's) to the ideal (mAP 1, no cost).</p>"
    )
    body = [
        f"<tr>{_td(i)}{_td(r.get('trial_id'))}{_td(v)}</tr>"
        for i, (r, v) in enumerate(zip(rows, values, strict=True), 1)
    ]
    table = _table(["i", "trial_id", "hypervolume"], body, ' id="hypervolume"')
    return f"{head}\n{note}\n{_svg_line(values)}\n{table}"


def _split_note(rows: list[dict]) -> str:
    """Which split the mAPs were scored on; a warning when it is the split best.pt was chosen on."""
    splits = {r.get("scored_split") or "val" for r in rows}
    if splits == {"test"}:
        return (
            '<p class="note" id="split">mAP is scored on the dataset\'s held-out test split; each trial\'s '
            "best.pt was chosen on its val split.</p>"
        )
    return (
        '<p class="note" id="split"><strong>mAP is scored on the val split</strong>: the dataset has no '
        "<code>test:</code> split, so best.pt was chosen and scored on the same images and every mAP here "
        "is optimistic (the comparison between trials stays fair).</p>"
    )


def _ablation_section(space: Space, rows: list[dict], noise) -> str:
    head = "<h2>Ablation</h2>"
    table = ablation_table(rows, space, noise or {})
    if not table:
        return (
            f"{head}\n<p>No ablation table: it needs the trained base and at least one architecture that "
            "differs from it at exactly one site (<code>--sampler ablation</code> trains all of them).</p>"
        )
    note = (
        '<p class="note">Each architecture that differs from the unmodified base at one site, against the base: '
        "the difference of the means with its 95 % interval (paired by seed when both share two or more seeds, "
        "else against the sweep's pooled seed spread). A change whose interval includes zero is within noise: "
        "this sweep cannot tell it from no change. Latency is relative to the base's, GFLOPs are exact.</p>"
    )
    body = ["<tr>" + "".join(_td(v) for v in ablation_cells(e).values()) + "</tr>" for e in table]
    return f"{head}\n{note}\n" + _table(list(ABLATION_COLUMNS), body, ' id="ablation"')


def _effect_text(e) -> str:
    if e.mean is None:
        return f"not identified: needs {e.needs} more trial{'s' if e.needs > 1 else ''}"
    if e.metric in EXACT_METRICS:
        return f"{e.mean:+.4g} (exact)"
    if e.half is None or not math.isfinite(e.half):
        return f"{e.mean:+.4g} (no noise estimate)"
    return f"{e.mean:+.4g} ± {e.half:.2g}"


def _effects_section(space: Space, rows: list[dict], noise=None) -> str:
    from .effects import effects_by_choice

    head = "<h2>Per-site effects</h2>"
    if not rows:
        return f"{head}\n<p>No trial finished: no effects to show.</p>"
    metrics = [o.metric for o in space.objectives]
    effects = effects_by_choice(rows, space, metrics, noise=noise or {})
    seeds = sum(int(r.get("n_seeds") or 1) for r in rows)
    note = (
        '<p class="note">Each choice\'s effect against keeping the layer, from an additive model fitted to all '
        f"{seeds} trained seeds of the {len(rows)} architectures (metric = base + the sum of the sites' effects), "
        "with its 95 % interval (the residual spread, or the seed noise floor when the fit leaves none). An "
        "effect is shown only where the trained architectures separate it from the others; elsewhere the "
        "table says how many more trials would (e.g. the base with only that change). Sites interact: an "
        "additive effect is an average over the architectures trained.</p>"
    )
    shown = {k: v for k, v in effects.items() if v[metrics[0]].mean is not None}
    rest = [v[metrics[0]] for k, v in effects.items() if k not in shown]
    body = [
        "<tr>"
        + _td(f"{site}={choice}")
        + _td(by_metric[metrics[0]].trials)
        + "".join(_td(_effect_text(by_metric[m])) for m in metrics)
        + "</tr>"
        for (site, choice), by_metric in shown.items()
    ]
    columns = ["choice", "seeds with it", *(f"effect on {m} [95%]" for m in metrics)]
    table = _table(columns, body, ' id="effects"') if shown else ""
    if rest:  # one sentence for the rest, not a row each
        needs = sorted({e.needs for e in rest})
        many = f"{needs[0]}" if len(needs) == 1 else f"{needs[0]} to {needs[-1]}"
        table += (
            f'\n<p class="note" id="effects-rest">{len(rest)} of the {len(effects)} choices are not identified '
            f"by these trials (the fit cannot separate them from the others): each needs {many} more "
            f"trial{'s' if needs[-1] > 1 else ''}, such as the base with only that change; "
            "<code>--sampler ablation</code> trains every single change.</p>"
        )
    return f"{head}\n{note}\n{table}"


def _warm_start_section(rows: list[dict]) -> str:
    """What each architecture's trials loaded from the warm-start checkpoint ('' when none was used)."""
    started = [r for r in rows if r.get("warm_start")]
    if not started:
        return ""
    note = (
        '<p class="note">The trials started from a checkpoint of the base: each architecture loaded every tensor '
        "whose name and shape matched (a layer after an inserted block under its new index). <em>new</em> counts "
        "the tensors that started from their initial values, in the layers listed as fresh.</p>"
    )
    body = [
        "<tr>"
        + _td(_choices_text(r))
        + "".join(_td(r["warm_start"].get(k)) for k in ("loaded", "skipped", "new"))
        + _td(r["warm_start"].get("fresh_layers") or "none")
        + "</tr>"
        for r in started
    ]
    table = _table(
        ["architecture", "tensors loaded", "skipped", "new", "fresh layers"], body, ' id="warm-start"'
    )
    return f"<h2>Warm start</h2>\n{note}\n{table}"


def _trials_section(space: Space, rows: list[dict]) -> str:
    head = "<h2>All trials</h2>"
    if not rows:
        return f"{head}\n<p>No trial finished.</p>"
    table = _rows_table(rows, _objectives(space), ' id="trials"')
    return f"{head}\n<details><summary>{len(rows)} finished trials, in the order they finished</summary>\n{table}</details>"


# --------------------------------------------------------------------------- API


def sweep_report(
    space: Space,
    budget: Budget,
    rows: list[dict],
    *,
    title: str = "",
    marks: Mapping[str, str] | None = None,
    front: list[dict] | None = None,
    hypervolumes: tuple[list[float], list[float], list[dict]] | None = None,
    noise: Mapping[str, tuple[float, int]] | None = None,
) -> str:
    """Return one self-contained HTML document reporting a sweep.

    Args:
        space: the sweep's space.
        budget: the (resolved) budget its trials trained under.
        rows: finished trials as :func:`search.results.architecture_table` builds them, in the order they finished.
        title: page title (default: ``"<space name> sweep report"``).
        marks: ``arch_hash -> reference name``: rows with such a hash are marked as that reference (the
            space's ``references`` give the captions).
        front: the frontier of ``rows`` when the caller has it (:func:`search.frontier.frontier_table`).
        noise: the sweep's noise floor (:func:`search.stats.noise_floor`): the frontier is then
            noise-aware, and the report says what the noise leaves undecided.
        hypervolumes: their :func:`search.frontier.hypervolume_curve` when the caller has it.
    """
    given = rows
    rows = _labelled(list(rows), marks)
    if front is None:
        front = frontier_table(rows, _objectives(space), noise) if rows else []
    else:  # the caller's frontier, in its order, as this report's (labelled) copies of its rows
        copy_of = {id(row): copy for row, copy in zip(given, rows, strict=True)}
        front = [copy_of[id(r)] for r in front]
    page_title = html.escape(title or f"{space.name} sweep report")
    summary = (
        f"<p>{len(rows)} finished architectures of space {html.escape(space.name)} under budget "
        f"{html.escape(budget.name)}; {len(front)} on the frontier.</p>\n{_split_note(rows)}"
        if rows
        else "<p><strong>No trial finished.</strong></p>"
    )
    sections = [
        _space_section(space),
        _budget_section(budget),
        _frontier_section(
            space,
            rows,
            front,
            references={r.name: r.caption for r in space.references},
            noise=noise,
            proxy=budget.name if budget.is_proxy else None,
        ),
        _hypervolume_section(space, rows, hypervolumes),
        _ablation_section(space, rows, noise),
        _effects_section(space, rows, noise),
        _trials_section(space, rows),
        _warm_start_section(rows),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{page_title}</title>'
        f"<style>{CSS}{_REPORT_CSS}</style></head><body>\n<h1>{page_title}</h1>\n{summary}\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


def write_report(path: str | os.PathLike[str], html: str) -> Path:
    """Write the report ``html`` to ``path`` (creating its folder) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
