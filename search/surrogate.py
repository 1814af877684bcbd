"""A surrogate of a finished sweep: what training any architecture of its space would measure, without training.

Every objective is an additive model of per-site effects (``value = base + the sum of what each changed site
adds``), the model :mod:`search.effects` fits:

- exact costs (GFLOPs, parameters) from the base's and each single change's exact counts
  (:class:`search.costaware.SiteCosts`), checked against the exact counts of the sweep's architectures
  with several changes;
- measured objectives (mAP, and latency through its ratio to the base, timed interleaved with it) fitted
  by least squares on every trained seed, their residual noise drawn at the sweep's own seed noise floor;
  the mAP model is checked by leaving each architecture out.

A sweep too small to identify every choice's effect, or without a noise floor (the base's seeds), is
refused (:class:`SweepTooSmall`). Pure functions and plain data; no I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .costaware import SiteCosts
from .effects import Additive, fit_additive
from .frontier import MAXIMIZE, Objective, hypervolume, hypervolume_box
from .records import architecture_rows
from .space import Space
from .stats import EXACT_METRICS, margin, noise_floor, t975

__all__ = [
    "Fidelity",
    "Surrogate",
    "SweepTooSmall",
    "best_hypervolume",
    "effect_floor",
    "fit_surrogate",
    "pareto_filter",
]

RATIO = "latency_ratio"  # a latency objective is modelled as the base's latency times this ratio


class SweepTooSmall(ValueError):
    """The sweep's trials do not support a surrogate; the message says what more it needs."""


@dataclass(frozen=True)
class Fidelity:
    """How well each part of a surrogate matches what was measured.

    ``cost``: per exact metric, the relative errors (median, max) of the additive cost model against the
    exact counts of the sweep's architectures with two or more changes, and how many there were.
    ``loo``: per measured metric, the root-mean-square error of predicting each architecture's mean from a
    fit without it, beside ``noise``: its seed standard deviation (the least that error can be for a
    one-seed architecture).
    """

    cost: dict[str, tuple[float, float, int]]
    loo: dict[str, float]
    noise: dict[str, tuple[float, int]]
    architectures: int
    seeds: int


@dataclass
class Surrogate:
    """The objectives of any point of ``space``, noise-free (:meth:`values`) or as one seed would measure
    them (:meth:`measure`)."""

    space: Space
    objectives: tuple[Objective, ...]
    costs: SiteCosts
    models: dict[str, Additive]  # measured metrics: the mAP, latency_ratio
    noise: dict[str, float]  # each measured metric's seed standard deviation
    base_latency: float | None = None  # the base's latency_ms: latency_ms = base_latency * latency_ratio
    base: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.base = self.values(self.space.base_point)

    def _metric(self, point: Mapping[str, str], metric: str, extra: Mapping[str, float]) -> float:
        if metric in self.costs.metrics:
            return self.costs(point)[metric]
        if metric == "latency_ms" and metric not in self.models:
            return self.base_latency * (self.models[RATIO].predict(point) + extra.get(RATIO, 0.0))
        return self.models[metric].predict(point) + extra.get(metric, 0.0)

    def values(self, point: Mapping[str, str]) -> dict[str, float]:
        """The objectives' noise-free values (the model's means)."""
        return {o.metric: self._metric(point, o.metric, {}) for o in self.objectives}

    def measure(self, point: Mapping[str, str], rng: np.random.Generator) -> dict[str, float]:
        """The objectives as one trained seed would report them: the means plus seed noise."""
        extra = {m: float(rng.normal(0.0, s)) for m, s in sorted(self.noise.items())}
        return {o.metric: self._metric(point, o.metric, extra) for o in self.objectives}

    def box(self) -> tuple[list[float], list[float]]:
        """The hypervolume's box (:func:`search.frontier.hypervolume_box`), fixed by the surrogate's base."""
        return hypervolume_box(self.objectives, self.base)

    def hypervolume(self, points: list[Mapping[str, str]]) -> float:
        """The noise-free hypervolume of ``points`` as a fraction of the box."""
        reference, ideal = self.box()
        size = math.prod(abs(r - i) for r, i in zip(reference, ideal, strict=True))
        values = [[self.values(p)[o.metric] for o in self.objectives] for p in points]
        return (
            hypervolume(values, [o.direction for o in self.objectives], reference) / size if values else 0.0
        )


def _measured(objectives: tuple[Objective, ...]) -> list[str]:
    """The metrics a surrogate fits from trials: every objective that is not an exact count, latency as its
    ratio to the base."""
    out = []
    for o in objectives:
        if o.metric in EXACT_METRICS:
            continue
        out.append(RATIO if o.metric == "latency_ms" else o.metric)
    return out


def _single_change(space: Space, point: Mapping[str, str]) -> bool:
    return sum(point.get(s.name) != s.default for s in space.sites) <= 1


def _cost_lookup(space: Space, rows: list[dict], metrics: tuple[str, ...]):
    """Exact costs of the base and single changes, from the sweep's own rows (their counts are exact)."""
    known = {tuple(sorted(r["params"].items())): r for r in rows if _single_change(space, r["params"])}

    def exact(point: Mapping[str, str]) -> dict[str, float]:
        row = known.get(tuple(sorted(point.items())))
        if row is None:
            change = ", ".join(f"{k}={v}" for k, v in point.items() if v != space.base_point[k]) or "the base"
            raise SweepTooSmall(
                f"the sweep has no trial of {change} alone, whose exact cost the additive cost model needs: "
                "train the ablation (--sampler ablation) into the same experiment"
            )
        return {m: float(row[m]) for m in metrics}

    return exact


def _loo_rmse(rows: list[dict], space: Space, metric: str) -> float:
    """Leave each architecture out, fit on the others, predict its mean: the root-mean-square error."""
    errors = []
    for i, row in enumerate(rows):
        rest = rows[:i] + rows[i + 1 :]
        fit = fit_additive(rest, space, metric)
        changed = [(s, c) for s, c in row["params"].items() if c != space.base_point.get(s)]
        if any(col in fit.unidentified for col in changed) or not math.isfinite(row.get(metric, math.nan)):
            continue  # its only witness: nothing to predict it from
        errors.append(fit.predict(row["params"]) - row[metric])
    return math.sqrt(statistics.fmean(e * e for e in errors)) if errors else math.nan


def fit_surrogate(space: Space, seed_rows: list[dict]) -> tuple[Surrogate, Fidelity]:
    """The surrogate of a sweep from its trained seeds (:func:`search.records.seed_rows_of` rows), with its
    fidelity.

    Raises:
        SweepTooSmall: no base with two or more seeds (no noise floor), an effect the trials do not
            identify, or a single change whose exact cost is missing.
    """
    if space.base_point is None:
        raise SweepTooSmall(
            f"space {space.name} has no base (a site without keep): nothing to replay against"
        )
    rows = architecture_rows(seed_rows)
    objectives = tuple(space.objectives)
    measured = _measured(objectives)
    noise = noise_floor(rows, measured)
    missing = [m for m in measured if m not in noise]
    if missing:
        raise SweepTooSmall(
            f"no noise floor for {', '.join(missing)}: the replay draws seed noise at the sweep's own, which needs "
            "an architecture (the base) trained with two or more seeds"
        )
    models = {m: fit_additive(rows, space, m) for m in measured}
    blind = sorted({f"{s}={c}" for fit in models.values() for s, c in fit.unidentified})
    if blind:
        raise SweepTooSmall(
            f"the sweep's {len(rows)} architectures do not identify the effect of {len(blind)} choice(s) "
            f"({', '.join(blind[:6])}{', ...' if len(blind) > 6 else ''}): train the ablation (--sampler "
            "ablation: the base and every single change) or more architectures into the same experiment"
        )
    exact = tuple(o.metric for o in objectives if o.metric in EXACT_METRICS) or ("gflops",)
    exact = tuple(dict.fromkeys((*exact, *(m for m in EXACT_METRICS if all(m in r for r in rows)))))
    costs = SiteCosts(space, _cost_lookup(space, rows, exact), exact)
    costs(space.base_point)  # every single change's count is looked up now: a missing one is refused here
    base_rows = [r for r in rows if all(v == space.base_point[k] for k, v in r["params"].items())]
    base_latency = float(base_rows[0]["latency_ms"]) if base_rows and "latency_ms" in base_rows[0] else None
    surrogate = Surrogate(
        space, objectives, costs, models, {m: noise[m][0] for m in measured}, base_latency=base_latency
    )
    cost_fit = {}
    for m in exact:
        errs = [
            abs(costs(r["params"])[m] - r[m]) / abs(r[m])
            for r in rows
            if not _single_change(space, r["params"]) and r.get(m)
        ]
        cost_fit[m] = (statistics.median(errs), max(errs), len(errs)) if errs else (math.nan, math.nan, 0)
    fidelity = Fidelity(
        cost=cost_fit,
        loo={m: _loo_rmse(rows, space, m) for m in measured},
        noise={m: noise[m] for m in measured},
        architectures=len(rows),
        seeds=len(seed_rows),
    )
    return surrogate, fidelity


def pareto_filter(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (minimize-space) no other row dominates, one of each set of equal rows."""
    order = np.lexsort(points.T[::-1])
    kept: list[int] = []
    for i in order:
        p = points[i]
        if kept:
            k = points[kept]
            if ((k <= p).all(axis=1)).any():
                continue
        kept.append(int(i))
    return points[kept]


def best_hypervolume(surrogate: Surrogate) -> float:
    """The largest hypervolume any set of the space's architectures reaches on the surrogate's noise-free
    values, as a fraction of the box: the front of every architecture, found site by site (the objectives
    are additive, so a point dominated within the first sites stays dominated whatever the rest add)."""
    space, objectives = surrogate.space, surrogate.objectives
    base = space.base_point
    signs = np.array([-1.0 if o.direction == MAXIMIZE else 1.0 for o in objectives])

    def vector(point):
        return np.array([surrogate.values(point)[o.metric] for o in objectives]) * signs

    origin = vector(base)
    front = origin[None, :]
    for site in space.sites:
        steps = np.array([vector({**base, site.name: c.name}) - origin for c in site.choices])
        front = pareto_filter((front[:, None, :] + steps[None, :, :]).reshape(-1, len(objectives)))
    reference, ideal = surrogate.box()
    size = math.prod(abs(r - i) for r, i in zip(reference, ideal, strict=True))
    inside = front[(front < np.array(reference) * signs).all(axis=1)]
    return hypervolume(inside * signs, [o.direction for o in objectives], reference) / size


def effect_floor(space: Space, noise: tuple[float, int], trials: int, *, rng: np.random.Generator) -> dict:
    """What a search of ``trials`` one-seed architectures (after the base's two seeds) can tell apart in a
    metric whose seed noise is ``noise``: the smallest difference between two of its architectures beyond
    the noise, and the median 95 % half-width of the per-site effects it would estimate from random
    architectures (None where ``trials`` architectures cannot identify them all)."""
    columns = [(s.name, c.name) for s in space.sites for c in s.choices if c.op != "keep"]
    halves = []
    for _ in range(20):
        points = [space.base_point] * 2 + [
            {s.name: s.choices[int(rng.integers(len(s.choices)))].name for s in space.sites}
            for _ in range(trials - 1)
        ]
        X = np.array([[1.0] + [float(p[s] == c) for s, c in columns] for p in points])  # noqa: N806
        if np.linalg.matrix_rank(X) < X.shape[1]:
            continue
        cov = np.linalg.inv(X.T @ X)
        halves.append(float(np.median(t975(noise[1]) * noise[0] * np.sqrt(np.diag(cov)[1:]))))
    return {
        "trials": trials,
        "pair": margin(noise, 1, 1),
        "effects": statistics.median(halves) if len(halves) >= 10 else None,
        "unknowns": len(columns) + 1,
    }
