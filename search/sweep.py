"""The sweep: Ray Tune runs trials, Optuna samples them, MLflow records them, the frontier is kept.

Every trial runs ``search.training.run_trial`` in a Ray worker with the resources it asked for (one GPU
by default when there are GPUs). Tracking is ours, keyed by Ray's trial id, so a resumed sweep
reattaches to the same MLflow runs; an architecture already trained in this sweep under the same
budget is never trained again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable

from . import (
    records,
    ultra,  # noqa: F401  (must precede any ultralytics import)
)
from .config import SweepConfig, SweepContext, experiment_path, training_setup
from .costaware import SiteCosts
from .moasha import make_scheduler
from .plan import reference_hashes, seeds_of, sweep_plan
from .pretrain import with_pretrain
from .progress import Progress, TrialOutcomes, TrialRecord
from .recipe import deploy_cost
from .records import Tag
from .results import finalize, frontier_text, mlflow_links, outcome_lines, time_base_alone
from .searcher import make_searcher
from .tracking import SweepTracker, git_commit
from .trainable import sweep_trial

__all__ = [
    "known_costs",
    "run_sweep",
]

LOGGER = logging.getLogger(__name__)


def known_costs(config: SweepConfig) -> SiteCosts | None:
    """What the cost-aware sampler knows before training: each candidate's parameters and GFLOPs from the exact
    counts of the base and its single changes (counted when the sampler first needs them)."""
    exact = {"gflops", "n_params"} & {o.metric for o in config.space.objectives}
    if config.sampler != "cost" or config.space.base_point is None or not exact:
        return None  # nothing to count, or no base to count single changes from: every objective is modelled
    return SiteCosts(config.space, functools.partial(deploy_cost, config.space))  # pickled with the searcher


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
    budget = config.trained_budget
    if budget.pretrain and not budget.weights:  # trained before anything is written to MLflow; once per setup
        trained = with_pretrain(space, budget, config.data, keep_in=path.parent / "pretrain", say=say)
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
            **({Tag.FROM_SWEEP: config.from_sweep} if config.from_sweep else {}),
            **setup,
            "scheduler": config.scheduler or "none",
            "git_commit": git_commit() or "unknown",
        },
        tags={
            Tag.SPACE: space.name,
            Tag.SAMPLER: config.sampler,
            Tag.BASE: space.base,
            Tag.STORAGE: str(path),
        },
    )
    where = f"MLflow {config.tracking_uri} experiment '{config.experiment}' run {parent_id}"
    import yaml

    from .config import space_document
    from .training import prepare_data

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
        base_latency=time_base_alone(tracker, parent_id, space, budget=budget, nc=nc, config=config),
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
        scheduler = make_scheduler(config.scheduler, space, epochs=budget.epochs)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(config, record, known_costs(config)),
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
        f"{'the base ' + str(seeds_of(space.base_point, space, config.repeats)) if space.base_point else 'no base in this space'}"
        f" | {where}"
    )
    tuner.fit()
    pause = float(os.environ.get("RTDETR_SEARCH_PAUSE_BEFORE_FRONTIER", "0"))
    if pause:  # fault-injection window for tests: the driver dies after the trials, before the frontier
        say(f"[sweep] trials done; writing the frontier in {pause:g} s")
        time.sleep(pause)
    front, noise = finalize(tracker, parent_id, space, budget=budget, nc=nc, out_dir=path / "report")
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
