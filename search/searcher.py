"""The searcher: Optuna's samplers through Ray Tune, each point repeated over its seeds (:class:`Seeds`), and
Optuna told only what a trial really measured (:class:`TruthfulOptunaSearch`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .config import SweepConfig
from .costaware import CostAwareSampler, Known
from .plan import sweep_plan

__all__ = [
    "Seeds",
    "TruthfulOptunaSearch",
    "make_sampler",
    "make_searcher",
]


class Seeds(Searcher):
    """Each architecture the wrapped searcher suggests becomes one Ray trial per seed; the searcher is
    told the mean over the seeds, once per architecture.

    Trial configs gain ``seed`` (``first_seed + k`` for the k-th seed) and ``seeds`` (how many the
    architecture has). The first ``len(leading)`` suggestions get ``leading[i]`` seeds, the others
    ``repeats``. Seeds of one architecture are ordinary trials: they run at once when there are
    resources. An architecture whose seeds all failed is reported as failed; one with no finished seed
    (a scheduler stopped them) as stopped.
    """

    def __init__(
        self,
        searcher: Searcher,
        *,
        repeats: int,
        leading: list[int],
        first_seed: int = 0,
        deadline: float | None = None,
        protected: int = 0,
    ):
        self.searcher, self.repeats, self.leading, self.first_seed = (
            searcher,
            repeats,
            list(leading),
            first_seed,
        )
        self.groups: list[dict] = []  # {"id": the searcher's trial id, "config", "n", "trials": {id: result}}
        self.group_of: dict[str, int] = {}
        self.started: dict[str, float] = {}  # trial id -> when it was suggested (time.time())
        self.durations: list[float] = []  # wall seconds of the trials that finished, suggest to end
        # The time budget (not saved: a resumed sweep gets its own): no trial starts after the first
        # ``protected`` architectures (the base's seeds) unless the longest trial so far would end by then.
        self.deadline, self.protected = deadline, protected
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def out_of_time(self, now: float) -> bool:
        """Whether a new trial, as long as the longest so far, would end after the deadline."""
        if self.deadline is None:
            return False
        return now + (max(self.durations) if self.durations else 0.0) > self.deadline

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        group = self.groups[-1] if self.groups else None
        done = group is None or len(group["trials"]) >= group["n"]
        if len(self.groups) - (0 if done else 1) >= self.protected and self.out_of_time(time.time()):
            return Searcher.FINISHED  # what is left would not end in the time budget: the sweep ends here
        if done:
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            k = len(self.groups)
            n = self.leading[k] if k < len(self.leading) else self.repeats
            group = {"id": trial_id, "config": dict(config), "n": n, "trials": {}}
            self.groups.append(group)
        index = len(group["trials"])
        group["trials"][trial_id] = None
        self.group_of[trial_id] = len(self.groups) - 1
        self.started[trial_id] = time.time()
        return {**group["config"], "seed": self.first_seed + index, "seeds": group["n"]}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.group_of:
            return
        group = self.groups[self.group_of[trial_id]]
        failed = error or bool((result or {}).get("failed"))  # a trial that ended on its own error
        group["trials"][trial_id] = {"result": result or {}, "error": failed}
        if not failed and trial_id in self.started:
            self.durations.append(time.time() - self.started[trial_id])
        done = [t for t in group["trials"].values() if t is not None]
        if len(done) < group["n"]:
            return
        finals = [t["result"] for t in done if not t["error"] and t["result"].get("final")]
        if finals:
            metrics = (
                self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
            )
            mean = {m: statistics.fmean(r[m] for r in finals) for m in metrics}
            self.searcher.on_trial_complete(group["id"], result={**finals[0], **mean})
        elif any(t["error"] for t in done):
            self.searcher.on_trial_complete(group["id"], error=True)
        else:
            self.searcher.on_trial_complete(group["id"], result=done[-1]["result"])

    _UNSAVED = ("deadline", "started")  # a resumed sweep finishes its plan, without the first run's budget

    def __getstate__(self) -> dict:
        return {**self.__dict__, "deadline": None, "started": {}}

    def get_state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "searcher" and k not in self._UNSAVED}

    def set_state(self, state: dict) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k not in self._UNSAVED})

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class TruthfulOptunaSearch(OptunaSearch):
    """Ray Tune's OptunaSearch, telling Optuna the truth about each trial.

    Ray's OptunaSearch tells Optuna COMPLETE for any trial whose last result holds the metrics, even
    a failed one or one a scheduler stopped early. Here a failed trial is FAIL (with its error as a
    user attribute) and a trial that did not finish its budget is PRUNED.
    """

    def __init__(self, *args, error_for: Callable[[str], str | None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_for = error_for

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        values = [result.get(m) for m in self.metric] if result else None
        if (result or {}).get("failed"):  # ended on its own error, which its last result says
            error, values = True, None
        if error or values is None or any(v is None for v in values):
            state, values = TrialState.FAIL, None
            message = (result or {}).get("error") or (
                self.error_for(trial_id) if error and self.error_for else "no result"
            )
            if message:
                ot_trial.set_user_attr("error", message[:2000])
        elif not result.get("final"):
            state, values = TrialState.PRUNED, None  # stopped before its budget: no trustworthy value
        else:
            state = TrialState.COMPLETE
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)


def make_sampler(config: SweepConfig, known: Known | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``config.sampler``: ``tpe``, ``nsga2``, ``gp`` (Optuna's Gaussian-process
    sampler), ``cost`` (:class:`CostAwareSampler`, told each candidate's exact costs by ``known``), else
    random (the fixed lists never ask it)."""
    from optuna.distributions import CategoricalDistribution

    space, seed = config.space, config.seed
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, config.samples // 2)))
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if config.sampler == "cost":
        return CostAwareSampler(
            {s.name: CategoricalDistribution([c.name for c in s.choices]) for s in space.sites},
            [(o.metric, o.direction) for o in space.objectives],
            known=known,
            keep=space.base_point,
            seed=seed,
        )
    return optuna.samplers.RandomSampler(seed=seed)


def make_searcher(config: SweepConfig, error_for: Callable[[str], str | None], known: Known | None = None):
    """Ray Tune's OptunaSearch in multi-objective form with the chosen Optuna sampler (:func:`make_sampler`;
    ``known`` gives the cost-aware one each candidate's exact costs), the sweep's leading points enqueued
    first (see :func:`sweep_plan`), each architecture repeated over its seeds.

    ``grid`` and ``ablation`` enqueue their whole list: the sampler is never asked for a point.
    """
    from optuna.distributions import CategoricalDistribution
    from ray.tune.search import ConcurrencyLimiter

    space = config.space
    choices = {s.name: [c.name for c in s.choices] for s in space.sites}
    seed = config.seed
    points, leading, _ = sweep_plan(config)
    searcher = TruthfulOptunaSearch(
        space={name: CategoricalDistribution(names) for name, names in choices.items()},
        metric=[o.metric for o in space.objectives],
        mode=["max" if o.direction == "maximize" else "min" for o in space.objectives],
        sampler=make_sampler(
            config, known
        ),  # seeded itself: OptunaSearch's seed only seeds a sampler it makes
        points_to_evaluate=points,
        error_for=error_for,
    )
    deadline = None
    if config.time_budget_s:  # a little kept back for the frontier, the report and the re-timing at the end
        deadline = (config.started or time.time()) + config.time_budget_s * 0.95
    seeds = Seeds(
        searcher,
        repeats=config.repeats,
        leading=leading,
        first_seed=seed,
        deadline=deadline,
        protected=1 if space.base_point is not None else 0,
    )
    return ConcurrencyLimiter(seeds, max_concurrent=config.max_concurrent)
