"""Per-site effects: what each site's choice adds to a metric, estimated over every trained seed.

An additive model, ``metric = base + sum over sites of effect(site, choice)`` with ``effect(site, keep)
= 0``, fitted by least squares to every trained seed of every architecture of a sweep. A choice's
effect is reported only when the trials identify it (the architectures trained separate it from the
other effects: e.g. the base and the base with only that change); otherwise the report says how many
more trials it needs. Intervals are 95 % t intervals from the residual spread, or from the sweep's
seed noise floor when the fit leaves no residual degrees of freedom. Sites interact in reality; the
additive effect is an average over the architectures that were trained. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .space import Space
from .stats import t975

__all__ = ["Additive", "Effect", "effects_by_choice", "fit_additive", "site_effects"]


@dataclass(frozen=True)
class Effect:
    """One site-choice's estimated effect on one metric, or why there is none.

    ``mean`` and ``half`` (the 95 % interval is ``mean ± half``) are None when the effect is not
    identified; ``needs`` is then the number of further trials that would identify it.
    """

    site: str
    choice: str
    metric: str
    mean: float | None
    half: float | None
    trials: int  # trained seeds that made this choice
    needs: int = 0


def _observations(rows: list[dict], metric: str) -> list[tuple[dict, float]]:
    """Each trained seed of each architecture as ``(params, value)``."""
    out = []
    for row in rows:
        seeds = row.get("seeds") or {0: {metric: row.get(metric)}}
        for values in seeds.values():
            value = values.get(metric)
            if value is not None and math.isfinite(float(value)):
                out.append((row.get("params") or {}, float(value)))
    return out


def _columns(space: Space) -> list[tuple[str, str]]:
    """The model's columns: every site's non-keep choices, in the space's order."""
    return [(s.name, c.name) for s in space.sites for c in s.choices if c.op != "keep"]


def _design(points: list[dict], columns: list[tuple[str, str]]) -> np.ndarray:
    """The additive model's design matrix: an intercept, then one indicator per column."""
    return np.array([[1.0] + [float(p.get(s) == c) for s, c in columns] for p in points])


@dataclass(frozen=True)
class Additive:
    """An additive model of one metric fitted by least squares: ``intercept`` (the base's value) plus the
    ``effects`` of a point's non-keep choices. ``unidentified`` names the choices the observations do not
    separate from the others (their effect is then the minimum-norm solution's, not an estimate)."""

    metric: str
    intercept: float
    effects: dict[tuple[str, str], float]
    unidentified: tuple[tuple[str, str], ...]
    observations: int

    def predict(self, point: Mapping[str, str]) -> float:
        return self.intercept + sum(v for (s, c), v in self.effects.items() if point.get(s) == c)


def _least_squares(obs: list[tuple[dict, float]], columns: list[tuple[str, str]]):
    """The fit both models share: the design matrix, the values, the least-squares coefficients, the rank, and
    the columns the observations do not identify (adding the column's unit row raises the rank)."""
    X = _design([p for p, _ in obs], columns)  # noqa: N806
    y = np.array([v for _, v in obs])
    rank = np.linalg.matrix_rank(X)
    unit = np.eye(X.shape[1])
    blind = {
        col
        for j, col in enumerate(columns, start=1)
        if np.linalg.matrix_rank(np.vstack([X, unit[j]])) != rank
    }
    return X, y, np.linalg.pinv(X) @ y, rank, blind


def fit_additive(rows: list[dict], space: Space, metric: str) -> Additive:
    """:class:`Additive` for ``metric`` over every trained seed of ``rows`` (see :func:`site_effects`)."""
    obs = _observations(rows, metric)
    columns = _columns(space)
    if not obs:
        return Additive(metric, math.nan, {c: 0.0 for c in columns}, tuple(columns), 0)
    _, _, beta, _, blind = _least_squares(obs, columns)
    effects = {col: float(beta[j]) for j, col in enumerate(columns, start=1)}
    return Additive(metric, float(beta[0]), effects, tuple(c for c in columns if c in blind), len(obs))


def site_effects(
    rows: list[dict], space: Space, metric: str, *, noise: tuple[float, int] | None = None
) -> list[Effect]:
    """Every non-keep choice's additive effect on ``metric``, in the space's site and choice order.

    Args:
        rows: the sweep's architectures (:func:`search.records.architecture_rows`), with their seeds.
        space: the sweep's space (its sites' keep choices are the reference level).
        metric: the metric to explain.
        noise: the metric's seed noise floor ``(std, df)``, used when the fit has no residual spread.
    """
    obs = _observations(rows, metric)
    columns = _columns(space)
    if not obs:
        return [Effect(s, c, metric, None, None, 0, 2) for s, c in columns]
    X, y, beta, rank, blind = _least_squares(obs, columns)  # noqa: N806
    dof = len(y) - rank
    if dof >= 1:
        sigma, df = math.sqrt(float(np.sum((y - X @ beta) ** 2)) / dof), dof
    elif noise is not None:
        sigma, df = noise
    else:
        sigma, df = math.nan, 0
    cov = np.linalg.pinv(X.T @ X)
    has_base = any(all(p.get(s.name) == s.default for s in space.sites) for p, _ in obs)
    effects = []
    for j, (site, choice) in enumerate(columns, start=1):
        made = int(X[:, j].sum())
        if (site, choice) in blind:
            effects.append(Effect(site, choice, metric, None, None, made, 1 if has_base else 2))
            continue
        half = t975(df) * sigma * math.sqrt(max(float(cov[j, j]), 0.0)) if df else math.nan
        effects.append(Effect(site, choice, metric, float(beta[j]), half, made))
    return effects


def effects_by_choice(
    rows: list[dict], space: Space, metrics: list[str], *, noise: Mapping[str, tuple[float, int]]
) -> dict[tuple[str, str], dict[str, Effect]]:
    """:func:`site_effects` for several metrics, keyed by ``(site, choice)`` then metric."""
    out: dict[tuple[str, str], dict[str, Effect]] = {}
    for metric in metrics:
        for e in site_effects(rows, space, metric, noise=noise.get(metric)):
            out.setdefault((e.site, e.choice), {})[metric] = e
    return out
