"""The sweep: Ray Tune runs trials, Optuna samples them, MLflow records them, the frontier is kept.

Every trial runs ``search.trial.run_trial`` in a Ray worker with the resources it asked for (one GPU
by default when there are GPUs). Tracking is ours, keyed by Ray's trial id, so a resumed sweep
reattaches to the same MLflow runs; an architecture already trained in this sweep under the same
budget is never trained again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from . import (
    records,
    ultra,  # noqa: F401  (must precede any ultralytics import)
)
from .claims import Claims
from .frontier import (
    comparable_groups,
    format_table,
    frontier_table,
    hypervolume_curve,
)
from .plots import plot_frontier
from .records import (
    COST_METRICS,
    EXPERIMENT,
    FAILED,
    INFEASIBLE,
    LOST,
    OK,
    STOPPED,
    TRAINING,
    TRIAL_METRICS,
    Tag,
)
from .space import Budget, Space
from .tracking import SweepTracker, git_commit

LOGGER = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random", "grid")


class TrialInfeasible(RuntimeError):
    """The architecture breaks a cost constraint; it was measured but not trained."""


@dataclass
class SweepContext:
    """What every trial of a sweep shares, resolved once at the edge; plain data so Ray ships it to workers."""

    space: Space
    budget: Budget  # resolved: the space's budget with the sweep's overrides
    nc: int  # the dataset's class count: every trial's model is built for it
    data: str | None
    tracking_uri: str
    experiment: str
    sweep_name: str
    parent_id: str
    out_root: str
    setup: str = ""  # the training setup's key (see training_setup): results are reused only under the same
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


def training_setup(config: SweepConfig) -> dict[str, str]:
    """Everything a trained result depends on besides its architecture, as MLflow param values.

    A sweep's results are reused (and the sweep resumed) only under the same setup: every value of
    the resolved budget, the dataset's identity (yaml path and a fingerprint of its yaml and label
    files), the seed, the cost constraints and the code version. ``setup_key`` hashes the rest.
    """
    import hashlib
    import json

    from .data import builtin_dataset, dataset_fingerprint
    from .provenance import code_version

    budget = resolved_budget(config.space, config.budget, config.overrides)
    values = {
        "budget": config.budget,
        **{f"budget.{k}": v for k, v in dataclasses.asdict(budget).items() if k != "name"},
        "data": config.data or "built-in shapes",
        "data_fingerprint": dataset_fingerprint(config.data or builtin_dataset()),
        "seed": config.seed,
        "max_latency_ms": config.max_latency_ms,
        "max_gflops": config.max_gflops,
        "code_version": code_version(),
    }
    setup = {k: str(v) for k, v in values.items()}
    setup["setup_key"] = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:16]
    return setup


# What a user changes to change a setup value: named when a --resume would change the setup.
SETUP_FLAGS = {
    "budget": "--budget",
    "budget.epochs": "--epochs",
    "budget.imgsz": "--imgsz",
    "budget.batch": "--batch",
    "budget.fraction": "--fraction",
    "budget.lr0": "--lr0",
    "data": "--data",
    "data_fingerprint": "--data (the dataset's files changed)",
    "seed": "--seed",
    "max_latency_ms": "--max-latency-ms",
    "max_gflops": "--max-gflops",
    "code_version": "the code (ghost_blocks, the trial code, torch or Ultralytics changed)",
    "space_file": "--space",
}


def setup_changes(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """What differs between a sweep's recorded params and a resume's setup, as the flags to fix."""
    changed = []
    for key, value in now.items():
        if key == "setup_key" or recorded.get(key) == value:
            continue
        flag = SETUP_FLAGS.get(key, f"the space's budget value {key}")
        changed.append(f"{flag} (was {recorded.get(key, 'not recorded')}, now {value})")
    return list(dict.fromkeys(changed))


def _site_params(space: Space, config: dict) -> dict[str, str]:
    return {site.name: config[site.name] for site in space.sites}


# ------------------------------------------------------------------------------------------- trial
def _wait_for(tracker: SweepTracker, run_id: str, poll_s: float):
    """The run once it has an outcome: its trial status is no longer ``training``, or the run ended."""
    while True:
        run = tracker.run(run_id)
        if run.data.tags.get(Tag.STATUS) != TRAINING or run.info.status in ("FAILED", "KILLED"):
            return run
        time.sleep(poll_s)


def _claim(tracker: SweepTracker, claims: Claims, key: str, run_id: str, poll_s: float):
    """Claim the architecture ``key`` for ``run_id``; returns None when this run is to train it, else the
    finished run of the trial that trained it (or failed to, by its own error)."""
    while True:
        current = claims.holder(key)
        if current is None:
            if claims.take(key, run_id, 0):
                return None
            continue
        generation, holder = current
        if holder == run_id:  # ours: a restarted trial carries on
            return None
        if not holder:  # the winner is writing its claim
            time.sleep(0.1)
            continue
        tracker.set_tags(run_id, {Tag.WAITING_FOR: holder})
        done = _wait_for(tracker, holder, poll_s)
        status = done.data.tags.get(Tag.STATUS)
        if status in (OK, INFEASIBLE, FAILED, STOPPED) and done.info.status != "KILLED":
            return done  # an outcome: reuse it
        # the holder died without an outcome (worker killed, out of memory, node lost): train it ourselves
        LOGGER.warning(
            "run %s holding architecture %s died (%s); run %s takes over", holder, key, status, run_id
        )
        if claims.take(key, run_id, generation + 1):
            tracker.set_tags(run_id, {Tag.TOOK_OVER_FROM: holder})
            return None


def sweep_trial(config: dict, ctx: SweepContext) -> None:
    """The Ray Tune trainable: one architecture of the space, trained once per sweep."""
    import ray
    import torch
    from ray import tune

    from .materialize import arch_hash, materialize
    from .trial import TrialFailed, TrialSpec, run_trial, with_classes

    ultra.setup()
    trial_id = tune.get_context().get_trial_id()
    space, budget = ctx.space, ctx.budget
    params = _site_params(space, config)
    model_yaml = with_classes(materialize(space, params, budget=budget)[0], ctx.nc)
    arch = arch_hash(model_yaml)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    node = ray.get_runtime_context().get_node_id()
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs, so inside the trial they are numbered from 0.
    device = "0" if gpu_ids and torch.cuda.is_available() else "cpu"
    tracker = SweepTracker(ctx.tracking_uri, ctx.experiment)
    # the run's name says its choices at a glance: "stage3 gate, pan_p5 ori [54a6348e]"
    short = ", ".join(f"{k} {v}" for k, v in params.items() if v != "keep") or "unmodified base"
    run_id = tracker.child(
        ctx.parent_id,
        trial_id,
        params=params,  # the choices: what a user compares runs by (the hash and budget are tags)
        tags={
            Tag.ARCH: arch,
            "budget": budget.name,
            Tag.SETUP: ctx.setup,
            "mlflow.runName": f"{short[:230]} [{trial_id}]",
        },
        reopen=False,
    )
    previous = tracker.run(run_id)
    status = previous.data.tags.get(Tag.STATUS)
    if status in (FAILED, INFEASIBLE, LOST):  # Ray retried the trial after its recorded end: same answer
        raise TrialFailed(f"trial already recorded as {status}: {previous.data.tags.get('error', '')}")
    if status == OK and previous.info.status == "FINISHED":  # finished before the driver died: keep it
        final = {k: previous.data.metrics[k] for k in TRIAL_METRICS if k in previous.data.metrics}
        tune.report({**final, "final": 1, "arch_hash": arch, "recorded": 1})
        return
    if previous.info.status != "RUNNING":
        tracker.reopen(run_id)

    # No architecture is trained twice under one setup: the first trial to claim it trains it, the others
    # wait for its outcome and reuse it; if its worker dies, one of them takes over.
    tracker.set_tags(
        run_id,
        {Tag.STATUS: TRAINING, "gpu_ids": ",".join(gpu_ids) or "none", "node": node, "device": device,
         "pid": os.getpid()},
    )  # fmt: skip
    claims = Claims(Path(ctx.out_root).parent / "claims")
    done = _claim(tracker, claims, f"{arch}-{ctx.setup or 'any'}", run_id, ctx.poll_s)
    if done is not None:
        status = done.data.tags.get(Tag.STATUS)
        tracker.set_tags(run_id, {Tag.REUSED_FROM: done.info.run_id, Tag.STATUS: status or FAILED})
        if status == INFEASIBLE:
            tracker.finish(run_id)
            raise TrialInfeasible(
                f"same architecture as run {done.info.run_id}, which is over the cost constraints"
            )
        if status != OK:
            why = f"same architecture as run {done.info.run_id}, which is {status}"
            if done.data.tags.get(Tag.ERROR):
                why += f": {done.data.tags[Tag.ERROR]}"
            tracker.finish(run_id, "FAILED", error=why)
            raise TrialFailed(why)
        final = {k: done.data.metrics[k] for k in TRIAL_METRICS if k in done.data.metrics}
        tracker.log_metrics(run_id, final)
        tracker.finish(run_id)
        tune.report({**final, "final": 1, "reused": 1, "arch_hash": arch})
        return

    out = Path(ctx.out_root) / trial_id
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / "last.pt").exists():
                resume_from = out / "resume" / "last.pt"
                resume_from.parent.mkdir(parents=True, exist_ok=True)
                for name in ("last.pt", "best.pt"):  # best.pt: what the final validation scores
                    if (Path(d) / name).exists():
                        shutil.copy2(Path(d) / name, resume_from.with_name(name))
                epoch = json.loads((Path(d) / "epoch.json").read_text())["epoch"]
                tracker.set_tags(run_id, {Tag.RESUMED_FROM_EPOCH: str(epoch)})

    cost_logged = []

    def report(metrics: dict, last_pt: Path | None) -> None:
        if not cost_logged:  # measured before training, logged once and first: the objectives known now,
            # in the space's order, lead the run's metrics (MLflow's compare view plots its first metric)
            cost = {k: metrics[k] for k in COST_METRICS}
            first = [o.metric for o in space.objectives if o.metric in cost]
            tracker.log_metrics(run_id, {k: cost[k] for k in [*first, *(k for k in cost if k not in first)]})
            cost_logged.append(True)
        # The curves; mAP is logged once, at the end, from the final validation of best.pt (MLflow shows a
        # metric's value at its highest step, so per-epoch values would shadow it). The epoch is the step:
        # no `epoch` metric of its own to crowd the objectives in MLflow's charts.
        curves = {k: v for k, v in metrics.items() if k not in (*TRIAL_METRICS, *COST_METRICS, "epoch")}
        tracker.log_metrics(run_id, curves, step=int(metrics["epoch"]))
        extra = {"final": 0, "arch_hash": arch, "gpu_ids": ",".join(gpu_ids)}
        if last_pt is None:
            tune.report({**metrics, **extra})
            return
        with tempfile.TemporaryDirectory() as d:
            shutil.copy2(last_pt, Path(d) / "last.pt")
            if last_pt.with_name("best.pt").exists():
                shutil.copy2(last_pt.with_name("best.pt"), Path(d) / "best.pt")
            (Path(d) / "epoch.json").write_text(json.dumps({"epoch": int(metrics["epoch"])}))
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(d))

    spec = TrialSpec.from_budget(
        model_yaml,
        budget,
        out,
        arch_hash=arch,  # model_yaml is built for the dataset's classes already
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
        tracker.set_tags(run_id, {Tag.STATUS: FAILED})
        tracker.finish(run_id, "FAILED", error=error)
        raise
    cost = {k: result[k] for k in COST_METRICS}
    if result["status"] == "infeasible":
        tracker.log_metrics(run_id, cost)
        tracker.set_tags(run_id, {Tag.STATUS: INFEASIBLE, Tag.INFEASIBLE: result["reason"]})
        tracker.finish(run_id)
        raise TrialInfeasible(f"over the cost constraints: {result['reason']}")
    final = {**cost, **{k: result[k] for k in ("map50_95", "map50", "epochs_done", "train_s")}}
    tracker.log_metrics(  # the cost is already logged when an epoch was reported; the bookkeeping under trial/
        run_id,
        {k: result[k] for k in ("map50_95", "map50")}
        | ({} if cost_logged else cost)
        | {"trial/epochs_done": result["epochs_done"], "trial/train_s": result["train_s"]},
    )
    for path in (result["model_yaml"], result["results_csv"], out / "trial.json"):
        if Path(path).exists():
            tracker.log_artifact(run_id, str(path))
    tracker.set_tags(
        run_id,
        {Tag.STATUS: OK, Tag.LATENCY_DEVICE: result["latency_device"], "weights": result["weights"]},
    )
    tracker.finish(run_id)
    tune.report(
        {
            **final,
            "final": 1,
            "arch_hash": arch,
            "gpu_ids": ",".join(gpu_ids),
            "latency_device": result["latency_device"],
        }
    )


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
    return records.trial_rows(tracker.children(parent_id), [s.name for s in space.sites])


def reference_hashes(space: Space, budget: Budget, nc: int) -> dict[str, str]:
    """The architecture hash of each reference the space names, under this budget and class count."""
    from .materialize import arch_hash, materialize
    from .trial import with_classes

    return {
        arch_hash(with_classes(materialize(space, dict(r.params), budget=budget)[0], nc)): r.name
        for r in space.references
    }


def finalize(
    tracker: SweepTracker, parent_id: str, space: Space, budget: Budget, nc: int, out_dir: Path
) -> list[dict]:
    """Tag the frontier; attach its table, plots and the sweep report to the parent; log hypervolume."""
    from .report import BASE_TEXT, sweep_report, write_report

    objectives = list(space.objectives)
    references = reference_hashes(space, budget, nc)  # the points the space names, marked as such
    rows = [
        {**r, "label": references.get(r["arch_hash"], r["label"])}
        for r in trial_rows(tracker, parent_id, space)
    ]
    front = frontier_table(rows, objectives)
    on_front = {r["arch_hash"] for r in front}
    for run in tracker.children(parent_id):
        if run.data.tags.get(Tag.STATUS) == OK:
            tracker.set_tags(
                run.info.run_id, {Tag.PARETO: str(run.data.tags.get(Tag.ARCH) in on_front).lower()}
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
            highlight={"base": BASE_TEXT, **{r.name: r.caption for r in space.references}},
            title=f"{space.name}: {len(rows)} trials, {len(front)} on the frontier",
        )
        artifacts += [out_dir / "frontier.png", out_dir / "frontier.html"]
    curve = None
    if rows:
        try:  # once per sweep end: logged here, shown in the report
            curve = hypervolume_curve(rows, objectives)
        except ValueError as exc:
            LOGGER.warning("no hypervolume for sweep run %s: %s", parent_id, exc)
    if curve is not None:
        _, values, counted = curve
        if len(comparable_groups(rows, objectives)) > 1:
            tracker.set_tags(parent_id, {"hypervolume.latency_device": counted[0].get("latency_device", "")})
        logged = tracker.metric_steps(parent_id, "hypervolume")
        for i, value in enumerate(values, 1):
            if i not in logged:  # a resumed sweep that already logged some steps does not log them twice
                tracker.log_metrics(parent_id, {"hypervolume": value}, step=i)
    report = sweep_report(space, budget, rows, front=front, hypervolumes=curve)
    artifacts.append(write_report(out_dir / "report.html", report))
    for path in artifacts:
        tracker.log_artifact(parent_id, str(path))
    tracker.set_tags(parent_id, {"frontier.size": str(len(front)), "trials.finished": str(len(rows))})
    return front


def frontier_text(front: list[dict], space: Space) -> str:
    """The frontier as a text table; one table per latency device when latencies of several are there."""
    if not front:
        return "no finished trial: the frontier is empty"
    cols = ["trial_id", *[o.metric for o in space.objectives], "n_params", "arch_hash", "choices"]
    groups = comparable_groups(front, list(space.objectives))
    parts = []
    if len(groups) > 1:
        parts.append(
            f"latency was measured on {len(groups)} devices and is never compared across them: "
            "one frontier per device"
        )
    for device, rows in groups.items():
        shown = [{**r, "choices": records.choices_text(r["params"])} for r in rows]
        if len(groups) > 1:
            parts.append(f"latency device {device}:")
        parts.append(format_table(shown, cols))
    return "\n".join(parts)


# -------------------------------------------------------------------------------------- progress
class Progress(Callback):
    """The sweep in the terminal, instead of Ray's tables.

    A line per trial event (started, finished, failed) with the counts, the frontier's size and
    hypervolume so far; and each running trial's progress after every epoch (its choices, epoch e/E,
    that epoch's mAP, and an estimate of the sweep's time left): rewritten in place when ``live`` (a
    terminal), else a plain line per epoch.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        objectives,
        total: int,
        where: str,
        *,
        epochs: int = 1,
        concurrent: int = 1,
        live: bool = False,
        stream=None,
    ) -> None:
        self.say, self.objectives, self.total, self.where = say, list(objectives), total, where
        self.epochs, self.concurrent, self.live = epochs, max(1, concurrent), live
        self.stream = stream  # None: sys.stdout when writing (Ray pickles callbacks with the Tuner)
        self.last: dict[str, tuple[float, int]] = {}  # trial id -> (time of its last result, epoch)
        self.epoch_s: list[float] = []
        self.rows: dict[str, dict] = {}  # finished trials' final results
        self.in_place = False

    def _emit(self, line: str, *, transient: bool = False) -> None:
        if self.live:
            stream = self.stream or sys.stdout
            stream.write("\r\x1b[K" + (line if transient else ""))
            stream.flush()
            self.in_place = transient
            if transient:
                return
        self.say(line)

    def _frontier(self) -> str:
        rows = list(self.rows.values())
        if not rows:
            return ""
        front = frontier_table(rows, self.objectives)
        try:
            hv = f", hypervolume {hypervolume_curve(rows, self.objectives)[1][-1]:.4g}"
        except ValueError:
            hv = ""
        return f" | frontier {len(front)} of {len(rows)}{hv}"

    def _counts(self, trials, trial=None, now: str = "") -> tuple[int, int, int]:
        # Ray calls back before it updates the trial's own status: count it as it is about to be.
        status = {t.trial_id: t.status for t in trials}
        if trial is not None:
            status[trial.trial_id] = now
        done = sum(s in ("TERMINATED", "ERROR") for s in status.values())
        running = sum(s == "RUNNING" for s in status.values())
        return done, running, max(0, self.total - done - running)

    def _left(self, running: int, pending: int) -> str:
        """The time left: the mean epoch so far, times the epochs left, over the trials running at once."""
        if not self.epoch_s:
            return ""
        epochs_left = sum(self.epochs - e for _, e in self.last.values()) + pending * self.epochs
        seconds = (
            statistics.mean(self.epoch_s) * epochs_left / min(self.concurrent, max(1, running + pending))
        )
        return f" | about {seconds / 60:.0f} min left" if seconds >= 90 else f" | about {seconds:.0f} s left"

    def _line(self, trials, event: str, trial=None, now: str = "") -> None:
        done, running, pending = self._counts(trials, trial, now)
        self._emit(
            f"[sweep] {event} | {done} done, {running} running, {pending} pending{self._frontier()}"
            f"{self._left(running, pending)} | {self.where}"
        )

    @staticmethod
    def _choices(trial) -> str:
        config = trial.config or {}
        return records.choices_text(config or {})

    def on_trial_start(self, iteration, trials, trial, **info):
        self.last.setdefault(trial.trial_id, (time.monotonic(), 0))
        self._line(trials, f"started {trial.trial_id} {self._choices(trial)}", trial, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final") or "epoch" not in result:
            return
        now, epoch = time.monotonic(), int(result["epoch"])
        since, before = self.last.get(trial.trial_id, (now, epoch - 1))
        if epoch > before:
            self.epoch_s.append((now - since) / (epoch - before))
        self.last[trial.trial_id] = (now, epoch)
        _, running, pending = self._counts(trials)
        main = self.objectives[0].metric
        value = result.get(main, float("nan"))
        self._emit(
            f"[sweep] {trial.trial_id} {self._choices(trial)}: epoch {epoch}/{self.epochs}, "
            f"{main} {value:.4g}{self._left(running, pending)}",
            transient=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)
        result = trial.last_result or {}
        if result.get("final"):
            self.rows[result.get("arch_hash") or trial.trial_id] = result  # a reused result counts once
        self._line(trials, f"finished {trial.trial_id}", trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)
        self._line(trials, f"failed {trial.trial_id}", trial, "ERROR")

    def on_experiment_end(self, trials, **info):
        if self.in_place:
            self._emit("")


class TrialRecord:
    """Looks a trial's child run up in MLflow, from the driver."""

    def __init__(self, tracking_uri: str, experiment: str, parent_id: str) -> None:
        self.tracking_uri, self.experiment, self.parent_id = tracking_uri, experiment, parent_id

    def run(self, trial_id: str):
        tracker = SweepTracker(self.tracking_uri, self.experiment)
        return tracker, next(
            (r for r in tracker.children(self.parent_id) if r.data.tags.get(Tag.TRIAL_ID) == trial_id), None
        )

    def __call__(self, trial_id: str) -> str | None:
        """The error recorded for a trial, if any."""
        _, run = self.run(trial_id)
        return run.data.tags.get(Tag.ERROR) if run is not None else None


class TrialOutcomes(Callback):
    """Record the outcomes a trial cannot record itself: stopped early by the scheduler, or lost.

    A trial whose worker died (SIGKILL, out of memory, node lost) after Ray's last retry never ends its
    run: mark it FAILED with status ``lost``, so a trial waiting for that architecture takes it over.
    """

    def __init__(self, record: TrialRecord) -> None:
        self.record = record

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("final"):
            return
        tracker, run = self.record.run(trial.trial_id)
        if run is not None and run.data.tags.get(Tag.STATUS) == TRAINING:
            tracker.set_tags(run.info.run_id, {Tag.STATUS: STOPPED, Tag.STOPPED_EARLY: "true"})
            tracker.finish(run.info.run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        tracker, run = self.record.run(trial.trial_id)
        if run is None or run.data.tags.get(Tag.STATUS) not in (None, TRAINING):
            return  # the trial recorded its own outcome (a failure it caught, infeasible, ...)
        tracker.set_tags(run.info.run_id, {Tag.STATUS: LOST})
        tracker.finish(
            run.info.run_id,
            "FAILED",
            error=f"the trial's worker died before the trial recorded an outcome (killed, out of memory or "
            f"its node lost), after {trial.num_failures} tries: {_last_line(trial.error_file)}",
        )


def _last_line(error_file: str | None) -> str:
    """The last line of Ray's error file for a trial (the exception), or a placeholder."""
    try:
        lines = [ln for ln in Path(error_file).read_text().splitlines() if ln.strip()] if error_file else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "no error text"


def experiment_path(config: SweepConfig) -> Path:
    return Path(config.storage_path).resolve() / config.name


def run_sweep(
    config: SweepConfig, say: Callable[[str], None] = LOGGER.info, *, live: bool = False
) -> list[dict]:
    """Run (or resume) a sweep to the end and return its frontier rows.

    Args:
        config: the resolved sweep.
        say: where progress lines go (default: this module's logger; the CLI prints them).
        live: rewrite each running trial's epoch line in place (a terminal) instead of one line per epoch.
    """
    import ray
    from ray import tune

    # A checkpoint every epoch is the point (resume from the last epoch): don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's own experiment banner, configuration table and TensorBoard hint: the Progress callback says it
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = config.space
    path = experiment_path(config)
    tracker = SweepTracker(config.tracking_uri, config.experiment)
    budget = resolved_budget(space, config.budget, config.overrides)
    if not ray.is_initialized():
        raise RuntimeError("run_sweep needs a running Ray: call ray.init() (the CLI does) first")
    setup = training_setup(config)
    parent_id = tracker.parent(
        config.name,
        params={
            "space": space.name,
            "space_file": space.path,
            "base": space.base,
            "sampler": config.sampler,
            "samples": config.samples,
            **setup,
            "scheduler": config.scheduler or "none",
            "git_commit": git_commit() or "unknown",
        },
        tags={"space": space.name, "sampler": config.sampler, "base": space.base, "storage": str(path)},
    )
    where = f"MLflow {config.tracking_uri} experiment '{config.experiment}' run {parent_id}"
    import yaml

    from .space import space_document
    from .trial import prepare_data

    # what the trials are built and trained from, in file order (it means something: the first keep is
    # the default, inserts chain in site order); a resume writes the same file, its setup being the same
    document = yaml.safe_dump(space_document(space, budget), sort_keys=False)
    tracker.log_text(parent_id, document, "space.yaml")
    nc = len(prepare_data(config.data)[1])
    ctx = SweepContext(
        space=space,
        budget=budget,
        nc=nc,
        data=config.data,
        tracking_uri=config.tracking_uri,
        experiment=config.experiment,
        sweep_name=config.name,
        parent_id=parent_id,
        out_root=str(path / "trials"),
        setup=setup["setup_key"],
        seed=config.seed,
        max_latency_ms=config.max_latency_ms,
        max_gflops=config.max_gflops,
    )

    record = TrialRecord(config.tracking_uri, config.experiment, parent_id)
    resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), resources)
    run_config = tune.RunConfig(
        name=config.name,
        storage_path=str(path.parent),
        verbose=0,
        callbacks=[
            Progress(
                say,
                space.objectives,
                config.samples,
                where,
                epochs=budget.epochs,
                concurrent=config.max_concurrent,
                live=live,
            ),
            TrialOutcomes(record),
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
                # a trial that survives every rung runs to its end: Ray's default stops it at max_t, inside
                # its last report and before the final validation of best.pt, so no trial would finish
                stop_last_trials=False,
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
    front = finalize(tracker, parent_id, space, budget, nc, path / "report")
    tracker.close_dangling(parent_id)
    tracker.finish(parent_id)
    say(f"[sweep] frontier of {config.name} ({len(front)} trials):\n{frontier_text(front, space)}")
    for line in mlflow_links(config.tracking_uri, tracker.experiment_id, [r["run_id"] for r in front]):
        say(f"[sweep] {line}")
    return front


def mlflow_links(tracking_uri: str, experiment_id: str, frontier_run_ids: list[str]) -> list[str]:
    """Where a user looks next: the sweep's runs table and the frontier's runs side by side, as links.

    MLflow 3 opens an experiment on its GenAI views unless the link asks for the "Model training" one.
    """
    import json
    from urllib.parse import urlencode

    served = tracking_uri.startswith(("http://", "https://"))
    ui = tracking_uri.rstrip("/") if served else "http://127.0.0.1:5000"
    lines = [] if served else ["the MLflow UI on this store: bash mlflow/server.sh"]
    lines.append(f"the sweep's runs: {ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    if frontier_run_ids:
        query = urlencode({"runs": json.dumps(frontier_run_ids), "experiments": json.dumps([experiment_id])})
        lines.append(f"the frontier's runs side by side: {ui}/#/compare-runs?{query}")
    return lines
