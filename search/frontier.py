"""Pareto frontiers, hypervolume and frontier tables for multi-objective search results.

Everything here is a pure function of its inputs (drawing lives in :mod:`search.plots`). Objectives are given as direction strings (``"maximize"`` or
``"minimize"``), one per coordinate of each point; internally every point is mapped to
"minimize" space by negating maximized coordinates.

NaN handling: a point with a NaN coordinate is never compared; it is left out of every front
and contributes nothing to a hypervolume. Infinite values are ordinary values (``+inf`` is the
worst possible minimized value, ``-inf`` the best).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .records import choices_text
from .stats import margin, seeds_to_separate

__all__ = [
    "MAXIMIZE",
    "MINIMIZE",
    "Noise",
    "Objective",
    "STEADIER",
    "close_groups",
    "comparable_groups",
    "default_reference",
    "dominates",
    "fmt",
    "format_table",
    "frontier_notes",
    "frontier_table",
    "hypervolume",
    "hypervolume_box",
    "hypervolume_curve",
    "noisy_dominates",
    "non_dominated_sort",
    "pareto_front",
    "within_noise",
]

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


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite real number (a bool is not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _metric_vector(row: Mapping[str, Any], objectives: Sequence[Objective]) -> list[float] | None:
    """Return the row's finite objective values, or None if any is missing or not finite."""
    values = [row.get(obj.metric) for obj in objectives]
    return [float(v) for v in values] if all(_finite(v) for v in values) else None


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


Noise = Mapping[str, tuple[float, int]]  # metric -> (seed std, degrees of freedom): search.stats.noise_floor


def frontier_table(rows: list[dict], objectives: list[Objective], noise: Noise | None = None) -> list[dict]:
    """Return the rows on the Pareto frontier, sorted by the first objective, best first.

    Rows missing an objective metric or holding a non-numeric or non-finite value are ignored.
    Ties on the first objective are broken by the following objectives, then by input order.
    The returned dicts are the input row objects themselves. Latencies measured on different devices
    are never compared: with several devices (see :func:`comparable_groups`) the result is each
    device's own frontier, one after the other.

    With ``noise`` (each metric's seed std, see :func:`search.stats.noise_floor`), the frontier is
    noise-aware: a row is dominated only by a row that is not worse beyond noise on any objective and
    better beyond noise on one (see :func:`noisy_dominates`). A metric missing from ``noise`` is
    compared exactly.
    """
    if not objectives:
        raise ValueError("at least one objective is required")
    groups = comparable_groups(rows, objectives)
    if len(groups) > 1:
        return [row for group in groups.values() for row in _frontier(group, objectives, noise)]
    return _frontier(rows, objectives, noise)


def _seeds(row: Mapping[str, Any]) -> int:
    return int(row.get("n_seeds") or 1)


# A latency is compared through its ratio to the base timed interleaved with it (A, B, A, B ...) wherever both
# rows and the noise floor have that ratio: the machine's load moves both timings of a pair alike, so the
# ratio's seed spread is a small part of the absolute median's (bench/noise.py: 0.8 % against 12 % on 2 CPUs)
# and a latency difference that the absolute median leaves within noise can be told apart.
STEADIER = {"latency_ms": "latency_ratio"}


def _compared_metric(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, *, noise: Noise) -> str:
    """The metric through which rows ``a`` and ``b`` are compared for ``metric`` (see :data:`STEADIER`)."""
    steady = STEADIER.get(metric)
    if steady and steady in noise and _finite(a.get(steady)) and _finite(b.get(steady)):
        return steady
    return metric


def _gap(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, *, noise: Noise) -> tuple[float, float]:
    """``b - a`` for ``metric`` (through its steadier stand-in, if any) and the noise margin it must pass."""
    metric = _compared_metric(a, b, metric, noise=noise)
    return float(b[metric]) - float(a[metric]), margin(noise.get(metric), _seeds(a), _seeds(b))


def noisy_dominates(
    a: Mapping[str, Any], b: Mapping[str, Any], objectives: Sequence[Objective], *, noise: Noise
) -> bool:
    """True when row ``a`` beats row ``b`` beyond noise: never worse by more than the noise on any
    objective, and better by more than it on at least one (a row's values are means over its
    ``n_seeds`` seeds; the noise margin is :func:`search.stats.margin`; a latency is compared through
    its interleaved ratio to the base where both rows have one, see :data:`STEADIER`)."""
    better = False
    for o in objectives:
        diff, m = _gap(a, b, o.metric, noise=noise)
        gain = o.sign * diff  # > 0: a is better
        if gain < -m:
            return False
        if gain > m:
            better = True
    return better


def within_noise(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, *, noise: Noise) -> bool:
    """True when two rows' values of ``metric`` differ by no more than the noise (a latency: see :data:`STEADIER`)."""
    diff, m = _gap(a, b, metric, noise=noise)
    return abs(diff) <= m


def close_groups(front: list[dict], metrics: Sequence[str], noise: Noise) -> list[list[dict]]:
    """Groups (two or more) of ``front`` rows linked by differing within noise on every one of ``metrics``.

    With all the objectives: the frontier's ties, points the sweep cannot tell apart. With the first
    objective alone: the members whose main metric is not separated, whatever their cost.
    """
    groups: list[list[dict]] = []
    for row in front:
        linked = [
            g for g in groups if any(all(within_noise(row, o, m, noise=noise) for m in metrics) for o in g)
        ]
        merged = [row] + [r for g in linked for r in g]
        groups = [g for g in groups if not any(g is x for x in linked)] + [merged]
    order = {id(r): k for k, r in enumerate(front)}
    return [sorted(g, key=lambda r: order[id(r)]) for g in groups if len(g) > 1]


def _frontier(rows: list[dict], objectives: list[Objective], noise: Noise | None = None) -> list[dict]:
    kept = [(row, vec) for row in rows if (vec := _metric_vector(row, objectives)) is not None]
    if not kept:
        return []
    front = pareto_front([vec for _, vec in kept], [o.direction for o in objectives])
    if noise is not None:
        survivors = [
            i for i, (row, _) in enumerate(kept)
            if not any(noisy_dominates(other, row, objectives, noise=noise) for other, _ in kept if other is not row)
        ]  # fmt: skip
        front = survivors or front  # a dominance cycle within noise leaves no survivor: the exact front
    signs = [o.sign for o in objectives]
    chosen = [kept[i] for i in front]
    chosen.sort(key=lambda rv: tuple(s * v for s, v in zip(signs, rv[1], strict=True)))
    return [row for row, _ in chosen]


def fmt(value: Any) -> str:
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
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
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


def hypervolume_box(
    objectives: Sequence[Objective], base: Mapping[str, Any]
) -> tuple[list[float], list[float]]:
    """The box a sweep's hypervolume is measured in, fixed by its objectives and its base, not by the rows
    seen so far: ``(reference, ideal)``. A maximized objective (an mAP, in [0, 1]) runs from 0 to 1; a
    minimized one (a cost) from twice the base's value (an architecture twice as costly adds nothing)
    down to 0.

    Raises:
        ValueError: the base has no finite positive value of a minimized objective.
    """
    reference, ideal = [], []
    for o in objectives:
        if o.direction == MAXIMIZE:
            reference.append(0.0)
            ideal.append(1.0)
            continue
        value = base.get(o.metric)
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"the base has no {o.metric} to fix the hypervolume's box with")
        reference.append(2.0 * float(value))
        ideal.append(0.0)
    return reference, ideal


def hypervolume_curve(
    rows: list[dict], objectives: Sequence[Objective], base: Mapping[str, Any] | None = None
) -> tuple[list[float], list[float], list[dict]]:
    """The hypervolume after each of ``rows`` (in their order), as a fraction of :func:`hypervolume_box`.

    ``base`` defaults to the row labelled ``base``. Latencies of different devices are never compared:
    with several (see :func:`comparable_groups`) only the rows of the device with the most trials count.

    Returns:
        The reference point, one hypervolume (a fraction of the box, 0 to 1) per counted row, and the
        counted rows.

    Raises:
        ValueError: no base among the rows, or one without the values that fix the box.
    """
    groups = comparable_groups(rows, objectives)
    counted = max(groups.values(), key=len) if len(groups) > 1 else list(rows)
    if base is None:
        base = next((r for r in counted if r.get("label") == "base"), None)
        if base is None:
            raise ValueError("no base among the finished architectures: the base fixes the hypervolume's box")
    reference, ideal = hypervolume_box(objectives, base)
    directions = [o.direction for o in objectives]
    box = math.prod(abs(r - i) for r, i in zip(reference, ideal, strict=True))
    points = [[float(r.get(o.metric) if r.get(o.metric) is not None else math.nan) for o in objectives]
              for r in counted]  # fmt: skip
    values = [hypervolume(points[:i], directions, reference) / box for i in range(1, len(points) + 1)]
    return reference, values, counted


def _name(row: Mapping[str, Any]) -> str:
    return str(row.get("label") or choices_text(row.get("params") or {}))


def frontier_notes(
    front: list[dict], objectives: Sequence[Objective], noise: Noise, *, groups: bool = True
) -> list[str]:
    """What the noise leaves undecided on a frontier, as lines for a reader.

    The noise floor used; objectives without a noise estimate; and with ``groups`` (rows that are a
    frontier), groups of members tied within noise on every objective and groups whose first objective
    differs only within noise (they are on the frontier for their cost, not for it).
    """
    metrics = [o.metric for o in objectives]
    measured = [f"{m} {fmt(noise[m][0])} (df {noise[m][1]})" for m in metrics if m in noise and noise[m][0]]
    notes = []
    if measured:
        notes.append(
            "noise floor, the seed std pooled over architectures with 2+ seeds: "
            + ", ".join(measured)
            + "; differences within t(df)·std·sqrt(1/n_a + 1/n_b) are noise"
        )
    for m in metrics:
        steady = STEADIER.get(m)
        if steady in noise and noise[steady][0]:
            notes.append(
                f"{m} is compared through {steady} (each trial's latency over the base's, timed interleaved "
                f"with it), whose noise floor is {fmt(noise[steady][0])} (df {noise[steady][1]})"
            )
    unknown = [m for m in metrics if m not in noise]
    if unknown:
        notes.append(
            f"no noise estimate for {', '.join(unknown)} (no architecture has 2+ trained seeds): "
            "compared as if exact, so its differences may be noise"
        )
    if not groups:
        return notes
    main = metrics[0]
    if main in noise and noise[main][0]:
        undecided = [
            abs(a[main] - b[main])
            for i, a in enumerate(front)
            for b in front[i + 1 :]
            if _finite(a.get(main)) and _finite(b.get(main)) and a[main] != b[main]
            and abs(a[main] - b[main]) < margin(noise[main], int(a.get("n_seeds") or 1), int(b.get("n_seeds") or 1))
        ]  # fmt: skip
        if undecided:
            lo, hi = min(undecided), max(undecided)
            n_hi, n_lo = (seeds_to_separate(d, noise[main][0]) or "more than 100" for d in (hi, lo))
            notes.append(
                f"a {main} difference of {fmt(hi)} is within noise here: separating it takes about {n_hi} seeds "
                "per architecture at this noise floor"
                if fmt(lo) == fmt(hi)
                else f"{main} differences within noise here run from {fmt(lo)} to {fmt(hi)}: at this noise "
                f"floor separating {fmt(hi)} takes about {n_hi} seeds per architecture, {fmt(lo)} about {n_lo}"
            )
    ties = close_groups(front, metrics, noise)
    for group in ties:
        notes.append("tied within noise on every objective: " + " = ".join(_name(r) for r in group))
    tie_sets = [{id(r) for r in g} for g in ties]
    for group in close_groups(front, [main], noise):
        if {id(r) for r in group} not in tie_sets:
            notes.append(
                f"{main} within noise of each other (on the frontier for their other objectives): "
                + ", ".join(_name(r) for r in group)
            )
    return notes
