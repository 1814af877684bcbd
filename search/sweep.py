"""The sweep: Ray Tune runs trials, Optuna samples them, MLflow records them, the frontier is kept.

Every trial runs ``search.trial.run_trial`` in a Ray worker with the resources it asked for (one GPU
by default when there are GPUs). Tracking is ours, keyed by Ray's trial id, so a resumed sweep
reattaches to the same MLflow runs; an architecture already trained in this sweep under the same
budget is never trained again.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import gc
import json
import logging
import math
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
from ray.tune.search import Searcher
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
from .pretrain import fresh_layers, kept_checkpoint, with_pretrain
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
from .space import Budget, Space, validate_params
from .stats import EXACT_METRICS, interval_text
from .tracking import SweepTracker, git_commit

LOGGER = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random", "grid", "ablation", "list")
# a fixed list of points, in order, each once; "list": the config's own points (e.g. a past sweep's frontier)
FIXED_SAMPLERS = ("grid", "ablation", "list")


# how a latency was timed (tags of a trial's run): precision, the versions, ONNX Runtime's provider
LATENCY_SETTINGS = ("latency_precision", "latency_torch", "latency_cuda", "latency_ort_provider")
ORT_METRICS = ("latency_ort_ms", "latency_ort_p90_ms", "latency_ort_iqr_ms")  # --latency-backend onnxruntime
WARM_COUNTS = ("loaded", "skipped", "new")  # a warm start's tensor counts, logged as warm_start/<count>
# Beside map50_95 and map50 (the space's evaluator's): both evaluators' figures and the val split's
MAP_DETAILS = (
    "map50_95_coco",
    "map50_coco",
    "map50_95_ultralytics",
    "map50_ultralytics",
    "map50_95_val",
    "map50_val",
)


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
    latency_precision: str | None = None  # None: fp16 on a GPU, fp32 on the CPU
    latency_backend: str = "torch"  # "onnxruntime": each trial also times its ONNX export
    poll_s: float = 5.0
    references: dict[str, str] = field(default_factory=dict)  # arch hash -> the reference it is ("base", ...)
    base_yaml: dict | None = None  # the base as trials build it: latency is timed against it (None: no base)
    base_latency: dict | None = None  # the base timed alone before the trials (search.cost.base_alone)


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
    repeats: int = 1  # seeds per architecture (the base: at least 2)
    points: list[dict] = field(default_factory=list)  # sampler "list": the architectures to train
    from_sweep: str | None = None  # the past sweep whose frontier ``points`` are
    count_references: bool = False  # the references count toward `samples` (tpe, nsga2, random)
    latency_precision: str | None = None  # None: fp16 on a GPU, fp32 on the CPU
    latency_backend: str = "torch"  # "onnxruntime": each trial also times its ONNX export (latency_ort_ms)
    # The sweep's wall time from `started` (time.time(), the command's start): no trial starts that would
    # not end in it, except the base's seeds. None: no limit.
    time_budget_s: float | None = None
    started: float | None = None


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
    if budget.pretrain and not budget.weights:  # what run_sweep resolves it to: the copy in the storage
        kept = kept_checkpoint(config.space, budget, config.data, experiment_path(config).parent / "pretrain")
        budget = dataclasses.replace(budget, weights=str(kept) if kept.exists() else None)
    values = {
        "budget": config.budget,
        **{f"budget.{k}": v for k, v in dataclasses.asdict(budget).items() if k != "name"},
        "data": config.data or "built-in shapes",
        "data_fingerprint": dataset_fingerprint(config.data or builtin_dataset()),
        "weights_fingerprint": file_fingerprint(budget.weights) if budget.weights else "none",
        "seed": config.seed,
        "max_latency_ms": config.max_latency_ms,
        "max_gflops": config.max_gflops,
        "map_evaluator": config.space.map_evaluator,
        "latency_precision": config.latency_precision or "auto",
        "latency_backend": config.latency_backend,
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
    "budget.pretrain": "--pretrain",
    "data": "--data",
    "data_fingerprint": "--data (the dataset's files changed)",
    "budget.weights": "--weights",
    "weights_fingerprint": "--weights (the checkpoint's content changed)",
    "seed": "--seed",
    "max_latency_ms": "--max-latency-ms",
    "max_gflops": "--max-gflops",
    "code_version": "the code (ghost_blocks, the trial code, torch or Ultralytics changed)",
    "map_evaluator": "the space's map_evaluator",
    "latency_precision": "--latency-precision",
    "latency_backend": "--latency-backend",
    "space_file": "--space",
}


def loader_workers(cpus: float, budget_workers: int | None = None) -> int:
    """A trial's data loader worker processes: the budget's, else one per CPU Ray gave the trial beyond
    the one its training loop runs on (none with one CPU: loading in-process, as the CPU proxy wants)."""
    return budget_workers if budget_workers is not None else max(0, int(cpus) - 1)


def default_cpus_per_trial(cpus: int, gpus: int, gpus_per_trial: float) -> float:
    """CPUs per trial by default: on a GPU machine, the node's CPUs shared by its trial slots (GPUs over
    GPUs per trial), so each trial's data loading keeps its GPU busy; without GPUs, 1."""
    if not gpus or not gpus_per_trial:
        return 1
    return max(1, cpus // max(1, int(gpus / gpus_per_trial)))


def default_concurrency(cpus: int, gpus: int, gpus_per_trial: float, cpus_per_trial: float) -> int:
    """Trials at once by default: one per GPU slot (GPUs over GPUs per trial) on a GPU machine; without
    GPUs, one per ``cpus_per_trial`` of the machine's CPUs (each trial trains on its own CPUs)."""
    if gpus and gpus_per_trial:
        return max(1, int(gpus // gpus_per_trial))
    return max(1, int(cpus // max(cpus_per_trial, 1)))


def file_fingerprint(path: str) -> str:
    """16 hex chars of a file's SHA-256 (a warm start's checkpoint: its name may stay, its content change)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


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


def _architecture_run(
    tracker: SweepTracker, claims: Claims, ctx: SweepContext, arch: str, params: dict, name: str
) -> str:
    """The run of architecture ``arch`` in this sweep, created by the first of its seeds to get here.

    Seeds of one architecture may start at once: each creates a run and claims the architecture's
    key; the one whose claim wins keeps its run, the others delete theirs and use the winner's.
    """
    key = f"arch-{arch}-{ctx.setup or 'any'}"
    reference = ctx.references.get(arch)
    while True:
        current = claims.holder(key)
        if current is not None:
            if current[1]:
                return current[1]
            time.sleep(0.1)  # the winner is writing its claim
            continue
        run_id = tracker.create_child(
            ctx.parent_id,
            records.ROLE_ARCH,
            params=params,
            tags={
                Tag.ARCH: arch,
                Tag.SETUP: ctx.setup,
                "budget": ctx.budget.name,
                **({Tag.REFERENCE: reference} if reference else {}),
                "mlflow.runName": name + (f" ({reference})" if reference and reference != "base" else ""),
            },
        )
        if claims.take(key, run_id, 0):
            return run_id
        tracker.delete(run_id)


def architecture_metrics(rows: list[dict]) -> dict[str, float]:
    """An architecture run's metrics from its trained seeds' rows: each trial metric's mean, ``_std``
    and ``_ci95`` (the 95 % interval's half-width), and ``n_seeds``."""
    if not rows:
        return {}
    (row,) = records.architecture_rows(rows)
    out = {m: row[m] for m in TRIAL_METRICS}
    out.update({f"{m}_{k}": row[f"{m}_{k}"] for m in TRIAL_METRICS for k in ("std", "ci95")})
    out["n_seeds"] = row["n_seeds"]
    return out


def update_architecture(tracker: SweepTracker, arch_run: str, space: Space, seeds: int | None = None) -> None:
    """Log an architecture run's mean, spread and seed count over its trained seeds (at step
    ``n_seeds``, so MLflow shows the latest), and end it once ``seeds`` of its seeds have an outcome
    (``None``: end it now, the sweep is over)."""
    children = tracker.children(arch_run)
    rows = records.trial_rows(children, [s.name for s in space.sites])
    metrics = architecture_metrics(rows)
    run = tracker.run(arch_run)
    if metrics and run.data.metrics.get("n_seeds") != metrics["n_seeds"]:
        tracker.log_metrics(arch_run, metrics, step=int(metrics["n_seeds"]))
    ended = {
        c.data.params.get("seed")
        for c in children
        if c.data.tags.get(Tag.STATUS) in (OK, FAILED, INFEASIBLE, STOPPED, LOST)
    }
    if run.info.status != "RUNNING" or (seeds is not None and len(ended) < seeds):
        return
    statuses = [c.data.tags.get(Tag.STATUS) for c in children]
    status = next((s for s in (OK, INFEASIBLE, STOPPED, FAILED, LOST) if s in statuses), FAILED)
    tracker.set_tags(arch_run, {Tag.STATUS: status})
    tracker.finish(arch_run, "FINISHED" if status in (OK, INFEASIBLE, STOPPED) else "FAILED")


def sweep_trial(config: dict, ctx: SweepContext) -> None:
    """The Ray Tune trainable: one seed of one architecture of the space, trained once per sweep.

    Whatever the seed's outcome, its architecture's run is brought up to date (mean and spread over
    the seeds trained so far), and ended when this was its last seed.
    """
    from .trial import TrialFailed

    state: dict = {}
    try:
        _sweep_trial(config, ctx, state)
    except (TrialFailed, TrialInfeasible) as exc:
        # The trial's own outcome, recorded in its run: the model does not build, the weights do not load,
        # training diverged, a cost is over its limit. A retry would end the same way, so the trial ends
        # here, reporting it; Ray's retries (--max-failures) stay for workers and nodes that die.
        from ray import tune

        tune.report(failed_result(exc))
    finally:
        if "arch_run" in state:
            try:
                update_architecture(state["tracker"], state["arch_run"], ctx.space, state["seeds"])
            except Exception:  # noqa: BLE001 - the seed's own outcome is recorded; the summary is redone at the end
                LOGGER.warning("could not update architecture run %s", state["arch_run"], exc_info=True)
        # the worker may take the next trial (reuse_actors): free this one's model, data and GPU memory now
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def failed_result(exc: Exception) -> dict:
    """The last result of a trial that ended on its own error: every metric NaN (Ray checks that each
    result holds the searcher's metrics), ``failed`` 1 and the error, which the searcher and the
    progress lines read."""
    infeasible = isinstance(exc, TrialInfeasible)
    return {
        **dict.fromkeys(TRIAL_METRICS, float("nan")),
        "failed": 1,
        "outcome": INFEASIBLE if infeasible else FAILED,
        "error": " ".join(str(exc).split())[:500],
    }


def _sweep_trial(config: dict, ctx: SweepContext, state: dict) -> None:
    import ray
    import torch
    from ray import tune

    from .materialize import arch_hash, layer_map, materialize
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
    seed, n_seeds = int(config.get("seed", ctx.seed)), int(config.get("seeds", 1))
    tracker = SweepTracker(ctx.tracking_uri, ctx.experiment)
    claims = Claims(Path(ctx.out_root).parent / "claims")
    # the runs' names say the choices at a glance: "stage3 gate, pan_p5 ori" and "... seed 1 [54a6348e]"
    short = (", ".join(f"{k} {v}" for k, v in params.items() if v != "keep") or "unmodified base")[:200]
    arch_run = _architecture_run(tracker, claims, ctx, arch, params, short)
    state.update(tracker=tracker, arch_run=arch_run, seeds=n_seeds)
    run_id = tracker.child(
        arch_run,
        trial_id,
        params={**params, "seed": seed},  # the choices and the seed (the hash and budget are tags)
        tags={
            Tag.ARCH: arch,
            "budget": budget.name,
            Tag.SETUP: ctx.setup,
            "mlflow.runName": f"{short} seed {seed} [{trial_id}]",
        },
        reopen=False,
    )
    previous = tracker.run(run_id)
    attempts = int(previous.data.tags.get(Tag.ATTEMPTS, "0")) + 1
    tracker.set_tags(run_id, {Tag.ATTEMPTS: str(attempts)})
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
    done = _claim(tracker, claims, f"{arch}-{ctx.setup or 'any'}-s{seed}", run_id, ctx.poll_s)
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
    pause_after_epoch = float(os.environ.get("RTDETR_SEARCH_PAUSE_AFTER_EPOCH", "0"))

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
        if pause_after_epoch:  # fault-injection window for tests: a kill lands between two epochs
            time.sleep(pause_after_epoch)

    cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    spec = TrialSpec.from_budget(
        model_yaml,
        budget,
        out,
        workers=loader_workers(cpus, budget.workers),
        threads=max(1, int(cpus)),  # exactly the CPUs Ray gave it: never more (oversubscribed), never fewer
        arch_hash=arch,  # model_yaml is built for the dataset's classes already
        data=ctx.data,
        device=device,
        seed=seed,
        fresh_cost=True,  # every seed measures its own latency: their spread is the latency's noise
        reference_yaml=ctx.base_yaml,  # ... interleaved with the base's, for a ratio that load cancels out of
        map_evaluator=space.map_evaluator,
        layer_map=layer_map(space, params),  # a warm start's base layers, where insertions moved them
        deploy_yaml=materialize(space, params)[0],  # the cost objectives: the architecture a user deploys
        base_latency=ctx.base_latency,  # one latency: the base alone x the trial's ratio to it
        fresh_layers=fresh_layers(space, budget),  # a fair warm start: no site's layer is loaded
        max_latency_ms=ctx.max_latency_ms,
        max_gflops=ctx.max_gflops,
        latency_precision=ctx.latency_precision,
        latency_backend=ctx.latency_backend,
    )
    try:
        result = run_trial(spec, report=report, resume_from=resume_from)
    except Exception as exc:
        error = str(exc) if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
        tracker.set_tags(run_id, {Tag.STATUS: FAILED})
        tracker.finish(run_id, "FAILED", error=error)
        raise TrialFailed(error) from exc  # deterministic: the same trial fails the same way again
    cost = {k: result[k] for k in COST_METRICS}
    if result["status"] == "infeasible":
        tracker.log_metrics(run_id, cost)
        tracker.set_tags(run_id, {Tag.STATUS: INFEASIBLE, Tag.INFEASIBLE: result["reason"]})
        tracker.finish(run_id)
        raise TrialInfeasible(f"over the cost constraints: {result['reason']}")
    final = {**cost, **{k: result[k] for k in ("map50_95", "map50", *MAP_DETAILS, "epochs_done", "train_s")}}
    ort = {k: result[k] for k in ORT_METRICS if k in result}
    tracker.log_metrics(  # the cost is already logged when an epoch was reported; the bookkeeping under trial/
        run_id,
        {k: result[k] for k in ("map50_95", "map50", *MAP_DETAILS) if k in result}
        | {f"warm_start/{k}": result[f"warm_start_{k}"] for k in WARM_COUNTS if f"warm_start_{k}" in result}
        | ({} if cost_logged else cost)
        | ort
        | {"trial/epochs_done": result["epochs_done"], "trial/train_s": result["train_s"]}
        | {f"proxy/{k[6:]}": result[k] for k in ("proxy_n_params", "proxy_gflops") if k in result}
        | ({"latency_loaded_ms": result["latency_loaded_ms"]} if "latency_loaded_ms" in result else {}),
    )
    for path in (result["model_yaml"], result["results_csv"], out / "trial.json"):
        if Path(path).exists():
            tracker.log_artifact(run_id, str(path))
    tracker.set_tags(
        run_id,
        {
            Tag.STATUS: OK,
            Tag.LATENCY_DEVICE: result["latency_device"],
            **{k: result[k] for k in LATENCY_SETTINGS if k in result},
            Tag.SCORED_SPLIT: result["scored_split"],
            "weights": result["weights"],
            "amp": str(result["amp"]).lower(),
            "amp_reason": result["amp_reason"],
            "workers": spec.workers,
            "threads": result["threads"],
            **(
                {
                    Tag.WARM_START: budget.weights,
                    Tag.FRESH_LAYERS: ",".join(map(str, result["warm_start_fresh_layers"])),
                }
                if "warm_start_fresh_layers" in result
                else {}
            ),
        },
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
def base_point(space: Space) -> dict[str, str] | None:
    """The unmodified base: every site keeps its layer (its first ``keep`` choice); None when a site
    has no ``keep`` choice, so the space does not hold the base."""
    point = {site.name: site.default for site in space.sites}
    return point if all(point.values()) else None


def ablation_points(space: Space) -> list[dict[str, str]]:
    """The base, then every single change from it: each site with each of its other choices, alone.

    Raises:
        ValueError: the space has a site without a ``keep`` choice (no base to ablate from).
    """
    base = base_point(space)
    if base is None:
        missing = [site.name for site in space.sites if site.default is None]
        raise ValueError(f"space {space.name}: no ablation without the base; sites without keep: {missing}")
    return [base] + [
        {**base, site.name: choice.name}
        for site in space.sites
        for choice in site.choices
        if choice.name != base[site.name]
    ]


def sweep_points(
    space: Space, sampler: str, samples: int | None = None, listed: list[dict] | None = None
) -> list[dict[str, str]]:
    """The points a sweep trains first, in order: the base and (but for a list) the space's references, then, for the
    fixed samplers, the rest of their list (``grid``: every point, up to ``samples``; ``ablation``:
    every single change from the base; ``list``: ``listed``). Each point once."""
    import itertools

    base = base_point(space)
    points = [base] if base is not None else []
    if sampler != "list":  # a list (--from-sweep) is trained exactly, with the base for the noise floor
        points += [validate_params(space, dict(r.params)) for r in space.references]
    if sampler == "grid":
        names = [s.name for s in space.sites]
        grid = itertools.product(*[[c.name for c in s.choices] for s in space.sites])
        points += [dict(zip(names, combo, strict=True)) for combo in grid]
    elif sampler == "ablation":
        points += ablation_points(space)
    elif sampler == "list":
        points += [validate_params(space, dict(p)) for p in listed or []]
    unique = list({tuple(p.items()): p for p in points}.values())  # first occurrence wins, order kept
    return unique[:samples] if sampler == "grid" and samples else unique


def seeds_of(point: dict[str, str] | None, space: Space, repeats: int) -> int:
    """Seeds an architecture is trained with: ``repeats``, and at least 2 for the base (every sweep
    measures its own noise floor)."""
    return max(repeats, 2) if point is not None and point == base_point(space) else repeats


def sweep_plan(config: SweepConfig) -> tuple[list[dict[str, str]], list[int], int]:
    """The leading points (references first), their seed counts, and the sweep's number of Ray trials.

    With a sampler that searches (tpe, nsga2, random), ``samples`` architectures are sampled after the
    references, which do not count toward it unless ``count_references``.
    """
    points = sweep_points(config.space, config.sampler, config.samples, config.points)
    seeds = [seeds_of(p, config.space, config.repeats) for p in points]
    sampled = 0
    if config.sampler not in FIXED_SAMPLERS:
        sampled = max(0, config.samples - (len(points) if config.count_references else 0))
    return points, seeds, sum(seeds) + sampled * config.repeats


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


def make_searcher(config: SweepConfig, error_for: Callable[[str], str | None]):
    """Ray Tune's OptunaSearch in multi-objective form with the chosen Optuna sampler, the sweep's
    leading points enqueued first (see :func:`sweep_plan`), each architecture repeated over its seeds.

    ``grid`` and ``ablation`` enqueue their whole list: the sampler is never asked for a point.
    """
    from optuna.distributions import CategoricalDistribution
    from ray.tune.search import ConcurrencyLimiter

    space = config.space
    choices = {s.name: [c.name for c in s.choices] for s in space.sites}
    seed = config.seed
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(20, config.samples // 2))
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    points, leading, _ = sweep_plan(config)
    searcher = TruthfulOptunaSearch(
        space={name: CategoricalDistribution(names) for name, names in choices.items()},
        metric=[o.metric for o in space.objectives],
        mode=["max" if o.direction == "maximize" else "min" for o in space.objectives],
        sampler=samplers.get(config.sampler, samplers["random"])(),
        seed=seed,
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
        protected=1 if base_point(space) is not None else 0,
    )
    return ConcurrencyLimiter(seeds, max_concurrent=config.max_concurrent)


# ------------------------------------------------------------------------------------- frontier
def seed_rows(tracker: SweepTracker, parent_id: str, space: Space) -> list[dict]:
    """A sweep's trained seeds, one row each, in the order they ended (reused results excluded)."""
    return records.trial_rows(tracker.trials(parent_id), [s.name for s in space.sites])


def trial_rows(tracker: SweepTracker, parent_id: str, space: Space) -> list[dict]:
    """A sweep's architectures with at least one trained seed, one row each (means over the seeds;
    see :func:`search.records.architecture_rows`), in the order they first finished."""
    rows = records.architecture_rows(seed_rows(tracker, parent_id, space))
    marks = {a.info.run_id: a.data.tags.get(Tag.REFERENCE, "") for a in tracker.architectures(parent_id)}
    return [
        {**r, "run_id": r["arch_run_id"] or r["run_id"], "label": marks.get(r["arch_run_id"]) or r["label"]}
        for r in rows
    ]


def noise_of(rows: list[dict], objectives) -> dict[str, tuple[float, int]]:
    """The sweep's noise floor for its objectives and mAPs (see :func:`search.stats.noise_floor`)."""
    from .stats import noise_floor

    metrics = [o.metric for o in objectives] + ["map50_95", "map50", "latency_ms", "latency_ratio"]
    return noise_floor(rows, dict.fromkeys(metrics))


def reference_hashes(space: Space, budget: Budget, nc: int) -> dict[str, str]:
    """The architecture hash of the base and of each reference the space names, under this budget and
    class count: ``{hash: "base" or the reference's name}``."""
    from .materialize import arch_hash, materialize
    from .trial import with_classes

    def hash_of(params: dict) -> str:
        return arch_hash(with_classes(materialize(space, params, budget=budget)[0], nc))

    base = base_point(space)
    marks = {hash_of(base): "base"} if base is not None else {}
    return {**marks, **{hash_of(validate_params(space, dict(r.params))): r.name for r in space.references}}


def base_yaml(space: Space, budget: Budget, nc: int) -> dict | None:
    """The base's model yaml as the sweep's trials build it (budget, class count); None without a base."""
    from .materialize import materialize
    from .trial import with_classes

    base = base_point(space)
    return with_classes(materialize(space, base, budget=budget)[0], nc) if base is not None else None


def time_base_alone(
    tracker: SweepTracker, parent_id: str, space: Space, budget: Budget, nc: int, config: SweepConfig
) -> dict | None:
    """The base's latency timed alone on this machine's CPU, with the threads a trial has, before any trial
    starts (logged on the sweep's run as ``latency_base_*``; a resumed sweep reads it back). None when the
    trials time on GPUs (each times on its own, training held off meanwhile) or the space has no base."""
    import torch
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .cost import base_alone, deploy_form

    base = base_yaml(space, budget, nc)
    if base is None or config.gpus_per_trial:
        return None
    recorded = tracker.run(parent_id).data
    if "latency_base_ms" in recorded.metrics and "latency_base_device" in recorded.tags:
        m = recorded.metrics
        return {"latency_ms": m["latency_base_ms"], "latency_p90_ms": m["latency_base_p90_ms"],
                "latency_iqr_ms": m["latency_base_iqr_ms"], "latency_device": recorded.tags["latency_base_device"]}  # fmt: skip
    threads = torch.get_num_threads()
    try:
        ultra.use_threads(max(1, int(config.cpus_per_trial)))  # the device key names the trials' threads
        model = deploy_form(RTDETRDetectionModel(copy.deepcopy(base), verbose=False))
        timed = base_alone(model, budget.imgsz, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    tracker.log_metrics(parent_id, {f"latency_base_{k[8:]}": timed[k] for k in
                                    ("latency_ms", "latency_p90_ms", "latency_iqr_ms")})  # fmt: skip
    tracker.set_tags(parent_id, {"latency_base_device": timed["latency_device"]})
    return timed


def finalize(
    tracker: SweepTracker,
    parent_id: str,
    space: Space,
    budget: Budget,
    nc: int,
    out_dir: Path,
) -> tuple[list[dict], dict]:
    """End every architecture run with its mean and spread; tag the noise-aware frontier; attach its
    table, plots and the sweep report to the parent; log the hypervolume and the noise floor."""
    from .report import BASE_TEXT, sweep_report, write_report

    objectives = list(space.objectives)
    for run in tracker.architectures(parent_id):  # the sweep is over: every architecture ends
        update_architecture(tracker, run.info.run_id, space)
    references = reference_hashes(space, budget, nc)  # the points the space names, marked as such
    rows = [
        {**r, "label": references.get(r["arch_hash"], r["label"])}
        for r in trial_rows(tracker, parent_id, space)
    ]
    noise = noise_of(rows, space.objectives)
    front = frontier_table(rows, objectives, noise)
    on_front = {r["arch_hash"] for r in front}
    for run in [*tracker.architectures(parent_id), *tracker.trials(parent_id)]:
        if run.data.tags.get(Tag.STATUS) == OK:
            tracker.set_tags(
                run.info.run_id, {Tag.PARETO: str(run.data.tags.get(Tag.ARCH) in on_front).lower()}
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [o.metric for o in objectives]
    columns = ["trial_id", "arch_hash", "label", "n_seeds", *metrics, *(f"{m}_ci95" for m in metrics), "n_params",
               "latency_ratio"]  # fmt: skip
    with open(out_dir / "pareto.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, "params", "run_id"], extrasaction="ignore")
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
            title=f"{space.name}: {len(rows)} architectures, {len(front)} on the frontier",
            noise=noise,
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
    # every measured noise, zero included (seeds that agree exactly); exact metrics (no degrees of freedom) have none
    tracker.log_metrics(parent_id, {f"noise/{m}_std": std for m, (std, df) in noise.items() if df})
    report = sweep_report(space, budget, rows, front=front, hypervolumes=curve, noise=noise)
    artifacts.append(write_report(out_dir / "report.html", report))
    for path in artifacts:
        tracker.log_artifact(parent_id, str(path))
    tracker.set_tags(parent_id, {"frontier.size": str(len(front)), "trials.finished": str(len(rows))})
    return front, noise


def _interval(row: dict, metric: str) -> str | None:
    """A table cell for a mean's 95 % interval: its half-width, with the seed values on one degree of
    freedom, said in words when wider than the mean; empty (None) for one seed."""
    half, mean = row.get(f"{metric}_ci95"), row.get(metric)
    if not all(isinstance(v, float | int) and math.isfinite(v) for v in (half, mean)):
        return None
    text = interval_text(mean, half, [s.get(metric) for s in (row.get("seeds") or {}).values()])
    return text.split(" ± ", 1)[1] if " ± " in text else text.split(" ", 1)[1].strip("()")


def frontier_text(front: list[dict], space: Space, noise: dict | None = None, *, notes: bool = True) -> str:
    """The frontier as a text table (means over seeds, with their 95 % intervals), one table per
    latency device when latencies of several are there, and what the noise leaves undecided (the
    noise floor only, when ``notes`` is False: rows that are not a frontier)."""
    from .frontier import frontier_notes

    if not front:
        return "no finished trial: the frontier is empty"
    objectives = list(space.objectives)
    cols = ["trial_id", "label"] + (["frontier"] if any("frontier" in r for r in front) else []) + ["n_seeds"]
    for o in objectives:
        cols += [o.metric] + ([f"{o.metric} ±95%"] if o.metric not in EXACT_METRICS else [])

    def shown(key: str) -> bool:  # a column for a measured value some row has
        return any(isinstance(r.get(key), float | int) and math.isfinite(r[key]) for r in front)

    cols += ["latency_ratio", "latency_ratio ±95%"] if shown("latency_ratio") else []
    cols += ["n_params", "arch_hash", "choices"]
    groups = comparable_groups(front, objectives)
    parts = []
    if len(groups) > 1:
        parts.append(
            f"latency was measured on {len(groups)} devices and is never compared across them: "
            "one frontier per device"
        )
    for device, rows in groups.items():
        shown = [
            {
                **r,
                "choices": records.choices_text(r["params"]),
                **{f"{m} ±95%": _interval(r, m) for m in [*(o.metric for o in objectives), "latency_ratio"]},
            }
            for r in rows
        ]
        if len(groups) > 1:
            parts.append(f"latency device {device}:")
        parts.append(format_table(shown, cols))
        if noise is not None:
            parts.extend(frontier_notes(rows, objectives, noise, groups=notes))
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
        *,
        epochs: int = 1,
        concurrent: int = 1,
        live: bool = False,
        stream=None,
    ) -> None:
        self.say, self.objectives, self.total = say, list(objectives), total
        self.epochs, self.concurrent, self.live = epochs, max(1, concurrent), live
        self.stream = stream  # None: sys.stdout when writing (Ray pickles callbacks with the Tuner)
        self.last: dict[str, tuple[float, int]] = {}  # trial id -> (time of its last result, epoch)
        self.epoch_s: list[float] = []
        self.rows: dict[tuple, dict] = {}  # finished seeds' final results, by (architecture, seed)
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
        rows = records.architecture_rows(
            [{**r, "arch_hash": arch, "seed": seed} for (arch, seed), r in self.rows.items()]
        )
        if not rows:
            return ""
        front = frontier_table(rows, self.objectives, noise_of(rows, self.objectives))  # as the final table
        try:
            hv = f", hypervolume {100 * hypervolume_curve(rows, self.objectives)[1][-1]:.3g} % of the box"
        except ValueError:
            hv = ""
        return f" | frontier {len(front)} of {len(rows)} architectures{hv}"

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
            f"{self._left(running, pending)}"  # where the runs are: said at the start and at the end
        )

    @staticmethod
    def _choices(trial) -> str:
        config = dict(trial.config or {})
        seed = config.pop("seed", None)
        config.pop("seeds", None)
        return records.choices_text(config) + (f" seed {seed}" if seed is not None else "")

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
        if result.get("failed"):
            what = "over a cost limit" if result.get("outcome") == INFEASIBLE else "failed"
            self._line(
                trials, f"{what} {trial.trial_id}: {result.get('error', '')[:200]}", trial, "TERMINATED"
            )
            return
        if result.get("final"):
            config = dict(trial.config or {})
            seed = config.pop("seed", 0)
            config.pop("seeds", None)
            base = bool(config) and all(
                v == "keep" for v in config.values()
            )  # the hypervolume's box needs it
            # a reused result counts once
            self.rows[(result.get("arch_hash") or trial.trial_id, seed)] = {
                **result,
                "label": "base" if base else "",
            }
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
            (r for r in tracker.trials(self.parent_id) if r.data.tags.get(Tag.TRIAL_ID) == trial_id), None
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

    def __init__(self, record: TrialRecord, space: Space) -> None:
        self.record, self.space = record, space

    def _architecture(self, tracker: SweepTracker, run, trial) -> None:
        arch_run = run.data.tags.get(Tag.PARENT)
        if arch_run and arch_run != self.record.parent_id:
            update_architecture(tracker, arch_run, self.space, int((trial.config or {}).get("seeds", 1)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("final") or (trial.last_result or {}).get("failed"):
            return  # finished, or ended on its own error: recorded by the trial itself
        tracker, run = self.record.run(trial.trial_id)
        if run is not None and run.data.tags.get(Tag.STATUS) == TRAINING:
            tracker.set_tags(run.info.run_id, {Tag.STATUS: STOPPED, Tag.STOPPED_EARLY: "true"})
            tracker.finish(run.info.run_id, "FINISHED")
            self._architecture(tracker, run, trial)

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
        self._architecture(tracker, run, trial)


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
    # ... and --resume reads the experiment state, which Ray saves every 10 s at first: a driver killed in
    # that window would train the epoch again. Every 2 s: tens of kB of JSON.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Ray's own experiment banner, configuration table and TensorBoard hint: the Progress callback says it
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = config.space
    path = experiment_path(config)
    tracker = SweepTracker(config.tracking_uri, config.experiment)
    budget = resolved_budget(space, config.budget, config.overrides)
    if budget.pretrain and not budget.weights:  # trained before anything is written to MLflow; once per setup
        trained = with_pretrain(space, budget, config.data, path.parent / "pretrain", say)
        config = dataclasses.replace(config, overrides={**config.overrides, "weights": trained.weights})
        budget = trained
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
            "repeats": config.repeats,
            "count_references": config.count_references,
            **({"from_sweep": config.from_sweep} if config.from_sweep else {}),
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
        latency_precision=config.latency_precision,
        latency_backend=config.latency_backend,
        references=reference_hashes(space, budget, nc),
        base_yaml=base_yaml(space, budget, nc),
        base_latency=time_base_alone(tracker, parent_id, space, budget, nc, config),
    )
    points, _, n_trials = sweep_plan(config)

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
                n_trials,
                epochs=budget.epochs,
                concurrent=config.max_concurrent,
                live=live,
            ),
            TrialOutcomes(record, space),
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
                num_samples=n_trials,
                # a finished trial's worker takes the next trial: a new one would import torch,
                # Ultralytics, MLflow and Ray again (about 10 s on a CPU, for a trial of a few seconds)
                reuse_actors=True,
            ),
            run_config=run_config,
        )
    sampled = n_trials - sum(seeds_of(p, space, config.repeats) for p in points)
    say(
        f"[sweep] {config.name}: {n_trials} trials of space '{space.name}' ({space.size} points), sampler "
        f"{config.sampler}, budget {config.budget}: {len(points)} listed architectures (base and references "
        f"first){f', {sampled // config.repeats} sampled' if sampled else ''}, {config.repeats} seed(s) each, "
        f"{'the base ' + str(seeds_of(base_point(space), space, config.repeats)) if base_point(space) else 'no base in this space'}"
        f" | {where}"
    )
    tuner.fit()
    pause = float(os.environ.get("RTDETR_SEARCH_PAUSE_BEFORE_FRONTIER", "0"))
    if pause:  # fault-injection window for tests: the driver dies after the trials, before the frontier
        say(f"[sweep] trials done; writing the frontier in {pause:g} s")
        time.sleep(pause)
    front, noise = finalize(tracker, parent_id, space, budget, nc, path / "report")
    tracker.close_dangling(parent_id)
    counts, errors = records.outcomes(tracker.trials(parent_id))
    tracker.finish(parent_id, "FINISHED" if front else "FAILED")
    if front:
        say(
            f"[sweep] frontier of {config.name} ({len(front)} architectures):\n{frontier_text(front, space, noise)}"
        )
        if budget.is_proxy:
            say(
                f"[sweep] GFLOPs and parameters are the deployable architecture's (full size, 640); mAP and latency "
                f"are the scaled-down proxy's the '{budget.name}' budget trains: train the frontier at full size "
                f"with --from-sweep {config.name} --budget full"
            )
    say(f"[sweep] {config.name} is in {where}")
    for line in mlflow_links(config.tracking_uri, tracker.experiment_id, [r["run_id"] for r in front]):
        say(f"[sweep] {line}")
    for line in outcome_lines(counts, errors, finished=bool(front)):
        say(f"[sweep] {line}")
    started = sum(counts.values())
    if config.time_budget_s and started < n_trials and not config.resume:
        say(
            f"[sweep] time budget {config.time_budget_s / 60:.3g} min: {n_trials - started} of the {n_trials} "
            f"planned trials left out (each would have ended past it; the base's seeds are never left out). "
            f"--time-budget 0 runs them all"
        )
    return front


def outcome_lines(counts: dict[str, int], errors: dict[str, int], *, finished: bool) -> list[str]:
    """The sweep's last lines: how many trials ended how, and each distinct error once."""
    total = sum(counts.values())
    bad = {k: v for k, v in counts.items() if k != OK}
    lines = []
    if not finished:
        lines.append(f"no trial finished: the sweep produced no frontier ({total} trials)")
    elif bad:
        lines.append(f"{counts.get(OK, 0)} of {total} trials finished")
    if bad:
        lines.append("not finished: " + ", ".join(f"{n} {status}" for status, n in sorted(bad.items())))
    lines += [f"error ({n} trial{'s' if n > 1 else ''}): {text}" for text, n in errors.items()]
    return lines


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
