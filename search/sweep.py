"""The sweep: Ray Tune runs trials, Optuna samples them, MLflow records them, the frontier is kept.

Every trial runs ``search.trial.run_trial`` in a Ray worker with the resources it asked for (one GPU
by default when there are GPUs). Tracking is ours, keyed by Ray's trial id, so a resumed sweep
reattaches to the same MLflow runs; an architecture already trained in this sweep under the same
budget is never trained again.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from . import ultra  # noqa: F401  (must precede any ultralytics import)
from .frontier import (
    default_reference,
    format_table,
    frontier_table,
    hypervolume,
    plot_frontier,
)
from .space import Budget, Space, load_space
from .tracking import SweepTracker, git_commit

LOGGER = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random", "grid")
EXPERIMENT = "rtdetr-ghost-search"
REPORT_KEYS = ("map50_95", "map50", "latency_ms", "gflops", "n_params")
# Status of a trial, as the tag `trial.status` on its child run.
OK, TRAINING, FAILED, INFEASIBLE, STOPPED = "ok", "training", "failed", "infeasible", "stopped_early"


class TrialInfeasible(RuntimeError):
    """The architecture breaks a cost constraint; it was measured but not trained."""


@dataclass
class SweepContext:
    """What every trial of a sweep shares; plain data so Ray can ship it to workers."""

    space_path: str
    budget: str
    overrides: dict
    data: str | None
    tracking_uri: str
    experiment: str
    sweep_name: str
    parent_id: str
    out_root: str
    seed: int = 0
    max_latency_ms: float | None = None
    max_gflops: float | None = None
    poll_s: float = 5.0


@dataclass
class SweepConfig:
    """A resolved ``python -m search.run`` invocation."""

    space: Space
    budget: str
    overrides: dict = field(default_factory=dict)
    samples: int = 4
    sampler: str = "tpe"
    seed: int = 0
    max_concurrent: int = 1
    gpus_per_trial: float = 0
    cpus_per_trial: float = 1
    data: str | None = None
    name: str = "sweep"
    storage_path: str = "runs/sweeps"
    address: str | None = None
    tracking_uri: str = ""
    experiment: str = EXPERIMENT
    scheduler: str | None = None
    resume: bool = False
    max_latency_ms: float | None = None
    max_gflops: float | None = None
    max_failures: int = 2  # retries after a worker or node dies; a trial's own error is never retried


def resolved_budget(space: Space, name: str, overrides: dict) -> Budget:
    return dataclasses.replace(space.budgets[name], **{k: v for k, v in overrides.items() if v is not None})


def _site_params(space: Space, config: dict) -> dict[str, str]:
    return {site.name: config[site.name] for site in space.sites}


# ------------------------------------------------------------------------------------------- trial
def _find_same_arch(tracker: SweepTracker, ctx: SweepContext, arch: str, run_id: str):
    """The run that trained (or is training) this architecture under this budget in this sweep, if any."""
    same = [
        r
        for r in tracker.children(ctx.parent_id)
        if r.info.run_id != run_id
        and r.data.tags.get("arch_hash") == arch
        and r.data.tags.get("budget") == ctx.budget
        and "reused_from" not in r.data.tags
        and r.data.tags.get("trial.status") in (OK, TRAINING, INFEASIBLE)
    ]
    return min(same, key=lambda r: (r.info.start_time, r.info.run_id), default=None)


def _wait_for(tracker: SweepTracker, run_id: str, poll_s: float):
    while True:
        run = tracker.client.get_run(run_id)
        if run.data.tags.get("trial.status") != TRAINING or run.info.status in ("FAILED", "KILLED"):
            return run
        time.sleep(poll_s)


def sweep_trial(config: dict, ctx: SweepContext) -> None:
    """The Ray Tune trainable: one architecture of the space, trained once per sweep."""
    import ray
    import torch
    from ray import tune

    from .materialize import arch_hash, materialize
    from .trial import TrialFailed, TrialSpec, epochs_in, prepare_data, run_trial, with_classes

    ultra.setup()
    trial_id = tune.get_context().get_trial_id()
    space = load_space(ctx.space_path)
    params = _site_params(space, config)
    budget = resolved_budget(space, ctx.budget, ctx.overrides)
    model_yaml, _ = materialize(space, params, budget=budget)
    data, names = prepare_data(ctx.data)
    model_yaml = with_classes(model_yaml, len(names))
    arch = arch_hash(model_yaml)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    node = ray.get_runtime_context().get_node_id()
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs, so inside the trial they are numbered from 0.
    device = "0" if gpu_ids and torch.cuda.is_available() else "cpu"
    tracker = SweepTracker(ctx.tracking_uri, ctx.experiment)
    short = ",".join(f"{k}={v}" for k, v in params.items() if v != "keep") or "base"
    run_id = tracker.child(
        ctx.parent_id,
        trial_id,
        params={**params, "arch_hash": arch, "budget": ctx.budget},
        tags={"arch_hash": arch, "budget": ctx.budget, "mlflow.runName": f"{trial_id} {short}"[:250]},
        reopen=False,
    )
    previous = tracker.client.get_run(run_id)
    status = previous.data.tags.get("trial.status")
    if status in (FAILED, INFEASIBLE):  # Ray retried the trial after our own error: same answer
        raise TrialFailed(f"trial already recorded as {status}: {previous.data.tags.get('error', '')}")
    if status == OK and previous.info.status == "FINISHED":  # finished before the driver died: keep it
        final = {k: previous.data.metrics[k] for k in REPORT_KEYS if k in previous.data.metrics}
        tune.report({**final, "final": 1, "arch_hash": arch, "recorded": 1})
        return
    if previous.info.status != "RUNNING":
        tracker.client.update_run(run_id, status="RUNNING")

    # No architecture is trained twice: claim it, and if an earlier run holds it, reuse that run's result.
    tracker.set_tags(
        run_id,
        {"trial.status": TRAINING, "gpu_ids": ",".join(gpu_ids) or "none", "node": node, "device": device},
    )
    original = _find_same_arch(tracker, ctx, arch, run_id)
    if original is not None and (original.info.start_time, original.info.run_id) < (
        tracker.client.get_run(run_id).info.start_time,
        run_id,
    ):
        done = _wait_for(tracker, original.info.run_id, ctx.poll_s)
        status = done.data.tags.get("trial.status")
        tracker.set_tags(run_id, {"reused_from": done.info.run_id, "trial.status": status or FAILED})
        if status == INFEASIBLE:
            tracker.finish(run_id)
            raise TrialInfeasible(
                f"same architecture as run {done.info.run_id}, which is over the cost constraints"
            )
        if status != OK:
            tracker.finish(
                run_id, "FAILED", error=f"same architecture as run {done.info.run_id}, which is {status}"
            )
            raise TrialFailed(f"same architecture as run {done.info.run_id}, which is {status}")
        final = {k: done.data.metrics[k] for k in REPORT_KEYS if k in done.data.metrics}
        tracker.log_metrics(run_id, final)
        tracker.finish(run_id)
        tune.report({**final, "final": 1, "reused": 1, "arch_hash": arch})
        return

    out = Path(ctx.out_root) / trial_id
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            last = Path(d) / "last.pt"
            if last.exists():
                resume_from = out / "resume" / "last.pt"
                resume_from.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(last, resume_from)
                tracker.set_tags(run_id, {"resumed_from_epoch": str(epochs_in(resume_from))})

    def report(metrics: dict, last_pt: Path | None) -> None:
        # The curves; the objectives are logged once, at the end, from the final validation of best.pt
        # (MLflow shows a metric's value at its highest step, so per-epoch values would shadow it).
        curves = {k: v for k, v in metrics.items() if k not in REPORT_KEYS and not k.startswith("latency")}
        tracker.log_metrics(run_id, curves, step=int(metrics["epoch"]))
        extra = {"final": 0, "arch_hash": arch, "gpu_ids": ",".join(gpu_ids)}
        if last_pt is None:
            tune.report({**metrics, **extra})
            return
        with tempfile.TemporaryDirectory() as d:
            shutil.copy2(last_pt, Path(d) / "last.pt")
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(d))

    spec = TrialSpec.from_budget(
        model_yaml,
        budget,
        out,
        data=ctx.data,
        device=device,
        seed=ctx.seed,
        max_latency_ms=ctx.max_latency_ms,
        max_gflops=ctx.max_gflops,
    )
    try:
        result = run_trial(spec, report=report, resume_from=resume_from)
    except Exception as exc:
        error = str(exc) if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
        tracker.set_tags(run_id, {"trial.status": FAILED})
        tracker.finish(run_id, "FAILED", error=error)
        raise
    cost = {k: result[k] for k in ("latency_ms", "latency_p90_ms", "latency_iqr_ms", "gflops", "n_params")}
    if result["status"] == "infeasible":
        tracker.log_metrics(run_id, cost)
        tracker.set_tags(run_id, {"trial.status": INFEASIBLE, "infeasible": result["reason"]})
        tracker.finish(run_id)
        raise TrialInfeasible(f"over the cost constraints: {result['reason']}")
    final = {**cost, **{k: result[k] for k in ("map50_95", "map50", "epochs_done", "train_s")}}
    tracker.log_metrics(run_id, final)
    for path in (result["model_yaml"], result["results_csv"], out / "trial.json"):
        if Path(path).exists():
            tracker.log_artifact(run_id, str(path))
    tracker.set_tags(run_id, {"trial.status": OK, "latency_device": result["latency_device"]})
    tracker.finish(run_id)
    tune.report({**final, "final": 1, "arch_hash": arch, "gpu_ids": ",".join(gpu_ids)})


# ------------------------------------------------------------------------------------------ search
class RayGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()``: Ray Tune ends the sweep at ``num_samples``,
    and ``stop()`` raises outside ``Study.optimize``."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


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
        if error or values is None or any(v is None for v in values):
            state, values = TrialState.FAIL, None
            message = self.error_for(trial_id) if error and self.error_for else "no result"
            if message:
                ot_trial.set_user_attr("error", message[:2000])
        elif not result.get("final"):
            state, values = TrialState.PRUNED, None  # stopped before its budget: no trustworthy value
        else:
            state = TrialState.COMPLETE
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)


def make_searcher(config: SweepConfig, error_for: Callable[[str], str | None]):
    """Ray Tune's OptunaSearch in multi-objective form with the chosen Optuna sampler."""
    from optuna.distributions import CategoricalDistribution
    from ray.tune.search import ConcurrencyLimiter

    space = config.space
    grid = {s.name: [c.name for c in s.choices] for s in space.sites}
    seed = config.seed
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(20, config.samples // 2))
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: RayGridSampler(grid, seed=seed),
    }
    searcher = TruthfulOptunaSearch(
        space={name: CategoricalDistribution(choices) for name, choices in grid.items()},
        metric=[o.metric for o in space.objectives],
        mode=["max" if o.direction == "maximize" else "min" for o in space.objectives],
        sampler=samplers[config.sampler](),
        seed=seed,
        error_for=error_for,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=config.max_concurrent)


# ------------------------------------------------------------------------------------- frontier
def trial_rows(tracker: SweepTracker, parent_id: str, space: Space) -> list[dict]:
    """Finished full-budget trials of a sweep, in the order they ended (reused results excluded)."""
    rows = []
    for run in sorted(tracker.children(parent_id), key=lambda r: (r.info.end_time or 0, r.info.run_id)):
        tags, metrics = run.data.tags, run.data.metrics
        if run.info.status != "FINISHED" or tags.get("trial.status") != OK or "reused_from" in tags:
            continue
        params = {s.name: run.data.params.get(s.name, "") for s in space.sites}
        rows.append(
            {
                "trial_id": tags.get("trial.id", ""),
                "run_id": run.info.run_id,
                "arch_hash": tags.get("arch_hash", ""),
                **{k: metrics.get(k) for k in REPORT_KEYS},
                "n_params": int(metrics.get("n_params", 0)),
                "params": params,
                "label": "base" if all(v == "keep" for v in params.values()) else "",
            }
        )
    return rows


def hand_placement_hash(space: Space, budget: Budget, nc: int) -> str | None:
    """Architecture hash of the placement users copy by hand (the ``modes`` space's ``ori`` point),
    under this budget and class count, when the space shares its base model; else None."""
    from .materialize import arch_hash, materialize
    from .trial import with_classes

    modes = load_space("modes")
    if modes.base != space.base:
        return None
    return arch_hash(with_classes(materialize(modes, {"stage3": "ori"}, budget=budget)[0], nc))


def finalize(
    tracker: SweepTracker, parent_id: str, space: Space, budget: Budget, nc: int, out_dir: Path
) -> list[dict]:
    """Tag the frontier; attach its table, plots and the sweep report to the parent; log hypervolume."""
    from .report import sweep_report, write_report

    objectives = list(space.objectives)
    hand = hand_placement_hash(space, budget, nc)
    rows = [
        {**r, "label": "hand" if r["arch_hash"] == hand else r["label"]}
        for r in trial_rows(tracker, parent_id, space)
    ]
    front = frontier_table(rows, objectives)
    on_front = {r["arch_hash"] for r in front}
    for run in tracker.children(parent_id):
        if run.data.tags.get("trial.status") == OK:
            tracker.set_tags(
                run.info.run_id, {"pareto": str(run.data.tags.get("arch_hash") in on_front).lower()}
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["trial_id", "arch_hash", *[o.metric for o in objectives], "n_params", "params"]
    with open(out_dir / "pareto.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, "run_id"], extrasaction="ignore")
        writer.writeheader()
        for r in front:
            writer.writerow({**r, "params": " ".join(f"{k}={v}" for k, v in r["params"].items())})
    artifacts = [out_dir / "pareto.csv"]
    if rows:
        plot_frontier(
            rows,
            objectives,
            out_dir / "frontier.png",
            out_dir / "frontier.html",
            highlight={"base": "unmodified base", "hand": "hand placement (layer 5 GhostModuleV3)"},
            title=f"{space.name}: {len(rows)} trials, {len(front)} on the frontier",
        )
        artifacts += [out_dir / "frontier.png", out_dir / "frontier.html"]
        directions = [o.direction for o in objectives]
        points = [[r[o.metric] for o in objectives] for r in rows]
        reference = default_reference(points, directions)
        logged = {m.step for m in tracker.client.get_metric_history(parent_id, "hypervolume")}
        for i in range(1, len(points) + 1):
            if i not in logged:  # a resumed sweep that already logged some steps does not log them twice
                tracker.log_metrics(
                    parent_id, {"hypervolume": hypervolume(points[:i], directions, reference)}, step=i
                )
    artifacts.append(write_report(out_dir / "report.html", sweep_report(space, budget, rows)))
    for path in artifacts:
        tracker.log_artifact(parent_id, str(path))
    tracker.set_tags(parent_id, {"frontier.size": str(len(front)), "trials.finished": str(len(rows))})
    return front


def frontier_text(front: list[dict], space: Space) -> str:
    if not front:
        return "no finished trial: the frontier is empty"
    cols = ["trial_id", *[o.metric for o in space.objectives], "n_params", "arch_hash", "choices"]
    shown = [
        {**r, "choices": " ".join(f"{k}={v}" for k, v in r["params"].items() if v != "keep") or "(base)"}
        for r in front
    ]
    return format_table(shown, cols)


# -------------------------------------------------------------------------------------- progress
class Progress(Callback):
    """One line per trial event instead of Ray's full status table."""

    def __init__(self, say: Callable[[str], None], objectives, total: int, where: str) -> None:
        self.say, self.objectives, self.total, self.where = say, objectives, total, where

    def _line(self, trials, event: str, trial=None, now: str = "") -> None:
        # Ray calls back before it updates the trial's own status: count it as it is about to be.
        status = {t.trial_id: t.status for t in trials}
        if trial is not None:
            status[trial.trial_id] = now
        done = sum(s in ("TERMINATED", "ERROR") for s in status.values())
        running = sum(s == "RUNNING" for s in status.values())
        pending = max(0, self.total - done - running)
        main = self.objectives[0]
        finished = [t for t in trials if t.status == "TERMINATED" and main.metric in (t.last_result or {})]
        finished = [t for t in finished if t.last_result.get("final")]
        best = ""
        if finished:
            pick = max if main.direction == "maximize" else min
            r = pick(finished, key=lambda t: t.last_result[main.metric]).last_result
            best = " | best " + ", ".join(
                f"{o.metric} {r.get(o.metric, float('nan')):.4g}" for o in self.objectives
            )
        self.say(f"[sweep] {event} | {done} done, {running} running, {pending} pending{best} | {self.where}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(trials, f"started {trial.trial_id}", trial, "RUNNING")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trials, f"finished {trial.trial_id}", trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, f"failed {trial.trial_id}", trial, "ERROR")


class TrialRecord:
    """Looks a trial's child run up in MLflow, from the driver."""

    def __init__(self, tracking_uri: str, experiment: str, parent_id: str) -> None:
        self.tracking_uri, self.experiment, self.parent_id = tracking_uri, experiment, parent_id

    def run(self, trial_id: str):
        tracker = SweepTracker(self.tracking_uri, self.experiment)
        return tracker, next(
            (r for r in tracker.children(self.parent_id) if r.data.tags.get("trial.id") == trial_id), None
        )

    def __call__(self, trial_id: str) -> str | None:
        """The error recorded for a trial, if any."""
        _, run = self.run(trial_id)
        return run.data.tags.get("error") if run is not None else None


class StoppedEarly(Callback):
    """Tag trials a scheduler stopped before their budget, and close their runs."""

    def __init__(self, record: TrialRecord) -> None:
        self.record = record

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("final"):
            return
        tracker, run = self.record.run(trial.trial_id)
        if run is not None and run.data.tags.get("trial.status") == TRAINING:
            tracker.set_tags(run.info.run_id, {"trial.status": STOPPED, "stopped_early": "true"})
            tracker.finish(run.info.run_id, "FINISHED")


def experiment_path(config: SweepConfig) -> Path:
    return Path(config.storage_path).resolve() / config.name


def run_sweep(config: SweepConfig, say: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) a sweep to the end and return its frontier rows."""
    import ray
    from ray import tune

    # A checkpoint every epoch is the point (resume from the last epoch): don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    space = config.space
    path = experiment_path(config)
    tracker = SweepTracker(config.tracking_uri, config.experiment)
    budget = resolved_budget(space, config.budget, config.overrides)
    parent_id = tracker.parent(
        config.name,
        params={
            "space": space.name,
            "space_file": space.path,
            "base": space.base,
            "sampler": config.sampler,
            "seed": config.seed,
            "samples": config.samples,
            "budget": config.budget,
            **{f"budget.{k}": v for k, v in dataclasses.asdict(budget).items() if k != "name"},
            "data": config.data or "built-in shapes",
            "scheduler": config.scheduler or "none",
            "git_commit": git_commit() or "unknown",
        },
        tags={"space": space.name, "sampler": config.sampler, "base": space.base, "storage": str(path)},
    )
    where = f"MLflow {config.tracking_uri} experiment '{config.experiment}' run {parent_id}"
    ctx = SweepContext(
        space_path=space.path,
        budget=config.budget,
        overrides=config.overrides,
        data=config.data,
        tracking_uri=config.tracking_uri,
        experiment=config.experiment,
        sweep_name=config.name,
        parent_id=parent_id,
        out_root=str(path / "trials"),
        seed=config.seed,
        max_latency_ms=config.max_latency_ms,
        max_gflops=config.max_gflops,
    )

    record = TrialRecord(config.tracking_uri, config.experiment, parent_id)
    if not ray.is_initialized():
        ray.init(
            address=config.address or "local",  # else Ray joins any cluster `ray start` left on this machine
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), resources)
    run_config = tune.RunConfig(
        name=config.name,
        storage_path=str(path.parent),
        verbose=0,
        callbacks=[
            Progress(say, space.objectives, config.samples, where),
            StoppedEarly(record),
        ],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=config.max_failures),
    )
    if config.resume:
        tuner = tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        scheduler = None
        if config.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            main = space.objectives[0]
            scheduler = ASHAScheduler(
                time_attr="epoch",
                metric=main.metric,
                mode="max" if main.direction == "maximize" else "min",
                max_t=budget.epochs,
                grace_period=max(1, budget.epochs // 4),
            )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(config, record),
                scheduler=scheduler,
                num_samples=config.samples,
                reuse_actors=False,
            ),
            run_config=run_config,
        )
    say(
        f"[sweep] {config.name}: {config.samples} trials of space '{space.name}' ({space.size} points), "
        f"sampler {config.sampler}, budget {config.budget} | {where}"
    )
    tuner.fit()
    pause = float(os.environ.get("RTDETR_SEARCH_PAUSE_BEFORE_FRONTIER", "0"))
    if pause:  # fault-injection window for tests: the driver dies after the trials, before the frontier
        say(f"[sweep] trials done; writing the frontier in {pause:g} s")
        time.sleep(pause)
    from .trial import prepare_data

    nc = len(prepare_data(config.data)[1])
    front = finalize(tracker, parent_id, space, budget, nc, path / "report")
    tracker.close_dangling(parent_id)
    tracker.finish(parent_id)
    say(f"[sweep] frontier of {config.name} ({len(front)} trials):\n{frontier_text(front, space)}")
    say(
        f"[sweep] compare the trials in the MLflow UI: bash mlflow/server.sh, then open the experiment "
        f"'{config.experiment}' and run {parent_id}"
    )
    return front
