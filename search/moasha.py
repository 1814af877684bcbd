"""Multi-objective early stopping (MO-ASHA, Schmucker et al. 2021): ``--scheduler moasha``.

ASHA stops a trial at a rung when its one metric is below the top ``1/reduction_factor`` of the trials that
reached that rung. For a multi-objective search that throws away the cheap architectures that are a little
less accurate, exactly the ones a latency-bound user wants. Here a rung ranks the trials that reached it by
non-dominated sorting over the space's objectives (the costs are exact from the first report, mAP is the
rung's), and promotes whole fronts, best first, until the top ``1/reduction_factor`` is covered: a front is
never split, since its members do not beat one another.

The ranking is noise-aware: the base's seeds report every epoch, so at each rung the spread of their values
is the noise floor at that epoch, and two trials whose difference is within it are tied
(:func:`search.frontier.noisy_dominates`). Until two of the base's seeds have reached a rung, differences
count as they are. A trial that survives every rung trains to its last epoch and is scored like any other;
one stopped at a rung is recorded as stopped by the sweep (``trial.status=stopped_early``) and never
enters the frontier.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .frontier import Noise, Objective, noisy_dominates

__all__ = ["MOASHA", "fronts", "make_scheduler", "promoted", "rung_noise", "rungs"]


def rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which trials are compared: ``grace_period * reduction_factor**k`` below ``max_t``."""
    out, t = [], grace_period
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out


def fronts(
    points: Mapping[str, Mapping[str, float]], objectives: Sequence[Objective], *, noise: Noise
) -> list[list[str]]:
    """``points`` (key -> metric values) in noise-aware non-dominated fronts, best first."""
    left = dict(points)
    out = []
    while left:
        front = [
            k
            for k, a in left.items()
            if not any(noisy_dominates(b, a, objectives, noise=noise) for b in left.values() if b is not a)
        ]
        if not front:  # cannot happen with a strict dominance relation; guards against NaN inputs
            front = list(left)
        out.append(front)
        for k in front:
            del left[k]
    return out


def promoted(
    points: Mapping[str, Mapping[str, float]],
    objectives: Sequence[Objective],
    *,
    reduction_factor: int,
    noise: Noise,
) -> set[str]:
    """The keys of ``points`` that go on from a rung: whole fronts, best first, until they hold at least
    ``len(points) / reduction_factor`` of them. Fewer than ``reduction_factor`` points: all go on (a rung
    judges nobody before it has seen enough trials, as ASHA does)."""
    if len(points) < reduction_factor:
        return set(points)
    quota = max(1, math.floor(len(points) / reduction_factor))
    kept: set[str] = set()
    for front in fronts(points, objectives, noise=noise):
        if len(kept) >= quota:
            break
        kept.update(front)
    return kept


def rung_noise(
    base_values: Sequence[Mapping[str, float]], metrics: Sequence[str]
) -> dict[str, tuple[float, int]]:
    """Each metric's seed std over the base's seeds at one rung, with its degrees of freedom; a metric with
    fewer than two finite values is left out (its differences count as they are)."""
    noise = {}
    for m in metrics:
        values = [float(v[m]) for v in base_values if m in v and math.isfinite(float(v[m]))]
        if len(values) >= 2:
            noise[m] = (statistics.stdev(values), len(values) - 1)
    return noise


class MOASHA(FIFOScheduler):
    """Ray Tune's asynchronous successive halving, promoting by noise-aware non-dominated sorting.

    Args:
        objectives: the space's objectives (their metrics are in every per-epoch result).
        is_base: whether a trial's config is one of the base's seeds (its values give the noise floor).
        time_attr: the result key counting epochs.
        max_t: the last epoch: a trial that gets there is never stopped.
        grace_period: the first rung.
        reduction_factor: a rung keeps about one trial in this many.
    """

    def __init__(
        self,
        objectives: Sequence[Objective],
        *,
        is_base: Callable[[dict], bool],
        time_attr: str = "epoch",
        max_t: int,
        grace_period: int = 1,
        reduction_factor: int = 3,
    ) -> None:
        super().__init__()
        self.objectives = list(objectives)
        self.is_base = is_base
        self.time_attr = time_attr
        self.reduction_factor = reduction_factor
        self.rungs = rungs(max_t, grace_period, reduction_factor)
        self.recorded: dict[int, dict[str, dict[str, float]]] = {r: {} for r in self.rungs}
        self.base_at: dict[int, dict[str, dict[str, float]]] = {r: {} for r in self.rungs}
        self.stopped: dict[str, int] = {}  # trial id -> the rung it was stopped at

    def _metrics(self) -> list[str]:
        names = [o.metric for o in self.objectives]
        return names + (["latency_ratio"] if "latency_ms" in names else [])

    def decide(self, trial_id: str, config: dict, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for ``result``, the trial's report at epoch ``result[time_attr]``."""
        t = result.get(self.time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        for rung in reversed(self.rungs):
            if t < rung or trial_id in self.recorded[rung]:
                continue
            values = {m: float(result[m]) for m in self._metrics() if m in result}
            self.recorded[rung][trial_id] = values
            if self.is_base(config):
                self.base_at[rung][trial_id] = values
            noise = rung_noise(list(self.base_at[rung].values()), self._metrics())
            points = {
                k: v for k, v in self.recorded[rung].items() if all(o.metric in v for o in self.objectives)
            }
            if trial_id in points and trial_id not in promoted(
                points, self.objectives, reduction_factor=self.reduction_factor, noise=noise
            ):
                self.stopped[trial_id] = rung
                return TrialScheduler.STOP
            break
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(trial.trial_id, trial.config or {}, result)

    def debug_string(self) -> str:
        reached = ", ".join(f"epoch {r}: {len(v)}" for r, v in self.recorded.items())
        return f"MO-ASHA rungs ({reached}); stopped {len(self.stopped)}"


def make_scheduler(name: str | None, space, *, epochs: int) -> TrialScheduler | None:
    """The early-stopping scheduler ``--scheduler`` names for a sweep of ``space`` trained ``epochs`` epochs:
    ``asha`` (Ray's, on the first objective), ``moasha`` (:class:`MOASHA`), None for none. Rungs start at a
    quarter of the epochs."""
    if name is None:
        return None
    grace = max(1, epochs // 4)
    if name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        main = space.objectives[0]
        return ASHAScheduler(
            time_attr="epoch",
            metric=main.metric,
            mode="max" if main.direction == "maximize" else "min",
            max_t=epochs,
            grace_period=grace,
            # a trial that survives every rung runs to its end: Ray's default stops it at max_t, inside
            # its last report and before the final validation of best.pt, so no trial would finish
            stop_last_trials=False,
        )
    if name == "moasha":
        base = space.base_point
        return MOASHA(
            space.objectives,
            is_base=lambda c: base is not None and all(c.get(k) == v for k, v in base.items()),
            max_t=epochs,
            grace_period=grace,
        )
    raise ValueError(f"unknown scheduler {name!r} (asha, moasha)")
