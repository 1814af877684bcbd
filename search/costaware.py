"""The cost-aware sampler: the architecture to train next is the one with the largest expected hypervolume
gain, given the costs every candidate's exact count says before it is trained.

Optuna's samplers learn an architecture's parameters and GFLOPs only after it has been trained, and its
``constraints_func`` sees a trial only after it has run. Here each objective the caller can compute
without training (``known``: GFLOPs, parameters) is exact for every candidate, and each other objective
(mAP, latency) comes from a Bayesian additive model of per-site effects fitted on the trials so far
(:class:`BayesAdditive`). Many candidates are drawn (at random, and by changing one or two sites of an
architecture on the current front); the one whose posterior draws add the most hypervolume to the
front, in the box the base fixes (:func:`search.frontier.hypervolume_box`), is trained. The first
``startup`` architectures are drawn at random, as Optuna's model-based samplers do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

from .frontier import MAXIMIZE, Objective, hypervolume_box, pareto_front

__all__ = ["BayesAdditive", "CostAwareSampler", "Known", "SiteCosts", "expected_gain"]

Known = Callable[[Mapping[str, str]], Mapping[str, float]]


class BayesAdditive:
    """Bayesian linear regression on one indicator per non-keep site choice, with a Gaussian prior on each
    effect; the prior's scale and the noise are chosen by the marginal likelihood over a small grid
    (empirical Bayes). Effects never observed keep their prior: the model is uncertain exactly there.
    """

    def __init__(self, choices: Mapping[str, Sequence[str]], keep: Mapping[str, str]):
        self.columns = [(s, c) for s, names in choices.items() for c in names if c != keep.get(s)]

    def design(self, points: Sequence[Mapping[str, str]]) -> np.ndarray:
        return np.array([[1.0] + [float(p.get(s) == c) for s, c in self.columns] for p in points])

    def fit(self, points: Sequence[Mapping[str, str]], values: Sequence[float]) -> BayesAdditive:
        X, y = self.design(points), np.asarray(values, dtype=float)  # noqa: N806
        scale = float(np.std(y)) or max(abs(float(np.mean(y))), 1.0) * 0.01
        best = None
        for tau in (0.1, 0.3, 1.0, 3.0):  # effect scale, in units of the values' spread
            for sigma in (0.03, 0.1, 0.3, 1.0):  # noise, likewise
                prior = np.full(X.shape[1], (tau * scale) ** 2)
                prior[0] = (10 * scale) ** 2 + float(np.mean(y)) ** 2
                cov_y = X @ np.diag(prior) @ X.T + (sigma * scale) ** 2 * np.eye(len(y))
                sign, logdet = np.linalg.slogdet(cov_y)
                loglik = -0.5 * (logdet + y @ np.linalg.solve(cov_y, y))
                if best is None or loglik > best[0]:
                    best = (loglik, prior, (sigma * scale) ** 2)
        _, prior, noise = best
        precision = X.T @ X / noise + np.diag(1 / prior)
        self.cov = np.linalg.inv(precision)
        self.cov = (self.cov + self.cov.T) / 2
        self.mean = self.cov @ (X.T @ y / noise)
        self.noise = noise
        return self

    def draws(self, points: Sequence[Mapping[str, str]], n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` joint posterior draws of the noise-free value of each point: shape ``(n, len(points))``."""
        beta = rng.multivariate_normal(self.mean, self.cov, size=n, method="cholesky")
        return beta @ self.design(points).T


def expected_gain(candidates: np.ndarray, front: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Each candidate's expected hypervolume gain over ``front``, estimated on points spread in the box.

    Everything is in minimize-space. ``candidates`` has shape ``(n, draws, m)`` (a candidate's draws of its
    objective values), ``front`` ``(k, m)``, ``box`` ``(b, m)`` (points uniform in the hypervolume's box).
    The gain is the fraction of the box the candidate dominates and the front does not, averaged over
    its draws.
    """
    free = box
    if len(front):
        free = box[~(front[:, None, :] <= box[None, :, :]).all(axis=2).any(axis=0)]
    if not len(free):
        return np.zeros(len(candidates))
    n, d, m = candidates.shape
    flat = candidates.reshape(n * d, m)
    gained = (flat[:, None, :] <= free[None, :, :]).all(axis=2).sum(axis=1)
    return gained.reshape(n, d).mean(axis=1) / len(box)


class CostAwareSampler(BaseSampler):
    """An Optuna sampler over categorical site choices that trains the candidate with the largest expected
    hypervolume gain given its known costs.

    Args:
        space: each site's distribution (the study's parameters).
        metrics: the study's objectives, in its order, and their directions (``"maximize"``/``"minimize"``).
        known: a candidate's exact values of the objectives it can compute without training (e.g.
            ``{"gflops": ..., "n_params": ...}``); the other objectives are modelled.
        keep: each site's choice in the base (the reference level of the model, and the box's base).
        seed: the random stream of the startup, the candidates and the draws.
        startup: architectures drawn at random before the model is trusted.
        candidates, draws, box_points: the acquisition's sizes.
    """

    def __init__(
        self,
        space: Mapping[str, CategoricalDistribution],
        metrics: Sequence[tuple[str, str]],
        *,
        known: Known | None = None,
        keep: Mapping[str, str] | None = None,
        seed: int | None = None,
        startup: int = 8,
        candidates: int = 128,
        draws: int = 16,
        box_points: int = 4096,
    ):
        self.space = dict(space)
        self.objectives = [Objective(m, d) for m, d in metrics]
        self.known, self.keep = known, dict(keep or {})
        self.rng = np.random.default_rng(seed)
        self.random = RandomSampler(seed=seed)
        self.startup, self.candidates, self.n_draws, self.box_points = startup, candidates, draws, box_points
        self.model = BayesAdditive({k: d.choices for k, d in self.space.items()}, self.keep)

    def reseed_rng(self) -> None:
        self.rng = np.random.default_rng()
        self.random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict:
        return dict(self.space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study, trial, search_space) -> dict:
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and all(math.isfinite(v) for v in t.values) and set(self.space) <= set(t.params)
        ]
        if len(done) < self.startup or set(search_space) != set(self.space):
            return {}
        points = [{k: t.params[k] for k in self.space} for t in done]
        values = np.array([t.values for t in done], dtype=float)
        pool = self._candidates(points, values)
        if not pool:
            return {}
        return pool[int(np.argmax(self._gains(points, values, pool)))]

    def _candidates(self, points: list[dict], values: np.ndarray) -> list[dict]:
        """Random architectures and one- or two-site changes of the current front's, none trained yet."""
        names = list(self.space)
        seen = {tuple(p[k] for k in names) for p in points}
        front = [points[i] for i in pareto_front(values.tolist(), [o.direction for o in self.objectives])]
        pool: dict[tuple, dict] = {}
        for k in range(self.candidates * 4):
            if len(pool) >= self.candidates:
                break
            if k % 2 and front:
                point = dict(front[int(self.rng.integers(len(front)))])
                for site in self.rng.choice(names, size=int(self.rng.integers(1, 3)), replace=False):
                    point[site] = self.space[site].choices[
                        int(self.rng.integers(len(self.space[site].choices)))
                    ]
            else:
                point = {
                    n: self.space[n].choices[int(self.rng.integers(len(self.space[n].choices)))]
                    for n in names
                }
            key = tuple(point[n] for n in names)
            if key not in seen:
                pool[key] = point
        return list(pool.values())

    def _gains(self, points: list[dict], values: np.ndarray, pool: list[dict]) -> np.ndarray:
        """The expected hypervolume gain of each candidate of ``pool`` over the trained ``points``."""
        m = len(self.objectives)
        known_pool = [dict(self.known(p)) if self.known else {} for p in pool]
        draws = np.empty((len(pool), self.n_draws, m))
        for j, o in enumerate(self.objectives):
            if all(o.metric in k for k in known_pool):
                draws[:, :, j] = np.array([k[o.metric] for k in known_pool])[:, None]
            else:
                draws[:, :, j] = self.model.fit(points, values[:, j]).draws(pool, self.n_draws, self.rng).T
        base_i = next((i for i, p in enumerate(points) if all(p[k] == v for k, v in self.keep.items())), 0)
        base = {o.metric: float(values[base_i, j]) for j, o in enumerate(self.objectives)}
        try:
            reference, ideal = hypervolume_box(self.objectives, base)
        except ValueError:  # a base without positive costs: the box of the values seen
            reference = [
                0.0 if o.direction == MAXIMIZE else 2 * float(values[:, j].max())
                for j, o in enumerate(self.objectives)
            ]
            ideal = [1.0 if o.direction == MAXIMIZE else 0.0 for o in self.objectives]
        signs = np.array([-1.0 if o.direction == MAXIMIZE else 1.0 for o in self.objectives])
        lo, hi = np.minimum(reference, ideal) * 1.0, np.maximum(reference, ideal) * 1.0
        box = lo + (hi - lo) * self.rng.random((self.box_points, m))
        return expected_gain(draws * signs, values * signs, box * signs)


class SiteCosts:
    """An additive model of exact costs: an architecture's value of each metric is the base's plus, for each
    site it changes, what that single change alone adds. Built from ``exact`` (a point's exact costs, e.g.
    search.cost's count of its deploy-form model) on the base and each single change, when first asked:
    a sweep that never asks spends nothing. Counting every candidate exactly would take seconds each.
    """

    def __init__(self, space, exact: Known, metrics: Sequence[str] = ("gflops", "n_params")):
        self.space, self.exact, self.metrics = space, exact, tuple(metrics)
        self.base: dict[str, float] | None = None
        self.deltas: dict[tuple[str, str], dict[str, float]] = {}

    def _build(self) -> None:
        point = dict(self.space.base_point)
        base = self.exact(point)
        self.base = {m: float(base[m]) for m in self.metrics}
        for site in self.space.sites:
            for choice in site.choices:
                if choice.name != point[site.name]:
                    cost = self.exact({**point, site.name: choice.name})
                    self.deltas[(site.name, choice.name)] = {
                        m: float(cost[m]) - self.base[m] for m in self.metrics
                    }

    def __call__(self, point: Mapping[str, str]) -> dict[str, float]:
        if self.base is None:
            self._build()
        return {
            m: self.base[m] + sum(d[m] for (s, c), d in self.deltas.items() if point.get(s) == c)
            for m in self.metrics
        }
