"""What one Ray trial does: claim its architecture (an architecture already trained in this sweep under the
same setup is never trained again), open its MLflow runs, train and measure it with
:func:`search.training.run_trial`, and report to Ray. A trial's own error ends it with a failed result."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import (
    records,
    ultra,  # noqa: F401  (must precede any ultralytics import)
)
from .claims import Claims
from .config import SweepContext, loader_workers
from .records import (
    COST_METRICS,
    FAILED,
    INFEASIBLE,
    LATENCY_SETTINGS,
    LOST,
    MAP_DETAILS,
    OK,
    ORT_METRICS,
    STOPPED,
    TRAINING,
    TRIAL_METRICS,
    WARM_COUNTS,
    Tag,
)
from .results import update_architecture
from .space import Space
from .tracking import SweepTracker

__all__ = [
    "TrialInfeasible",
    "failed_result",
    "sweep_trial",
]

LOGGER = logging.getLogger(__name__)


class TrialInfeasible(RuntimeError):
    """The architecture breaks a cost constraint; it was measured but not trained."""


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


def _claim(tracker: SweepTracker, claims: Claims, key: str, *, run_id: str, poll_s: float):
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
    tracker: SweepTracker, claims: Claims, ctx: SweepContext, *, arch: str, params: dict, name: str
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
                Tag.BUDGET: ctx.budget.name,
                **({Tag.REFERENCE: reference} if reference else {}),
                Tag.RUN_NAME: name + (f" ({reference})" if reference and reference != "base" else ""),
            },
        )
        if claims.take(key, run_id, 0):
            return run_id
        tracker.delete(run_id)


def sweep_trial(config: dict, ctx: SweepContext) -> None:
    """The Ray Tune trainable: one seed of one architecture of the space, trained once per sweep.

    Whatever the seed's outcome, its architecture's run is brought up to date (mean and spread over
    the seeds trained so far), and ended when this was its last seed.
    """
    from .training import TrialFailed

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
                update_architecture(state["tracker"], state["arch_run"], ctx.space, seeds=state["seeds"])
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

    from .materialize import arch_hash, materialize
    from .recipe import trial_spec
    from .training import TrialFailed, run_trial, with_classes

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
    arch_run = _architecture_run(tracker, claims, ctx, arch=arch, params=params, name=short)
    state.update(tracker=tracker, arch_run=arch_run, seeds=n_seeds)
    run_id = tracker.child(
        arch_run,
        trial_id,
        params={**params, "seed": seed},  # the choices and the seed (the hash and budget are tags)
        tags={
            Tag.ARCH: arch,
            Tag.BUDGET: budget.name,
            Tag.SETUP: ctx.setup,
            Tag.RUN_NAME: f"{short} seed {seed} [{trial_id}]",
        },
        reopen=False,
    )
    previous = tracker.run(run_id)
    attempts = int(previous.data.tags.get(Tag.ATTEMPTS, "0")) + 1
    tracker.set_tags(run_id, {Tag.ATTEMPTS: str(attempts)})
    status = previous.data.tags.get(Tag.STATUS)
    if status in (FAILED, INFEASIBLE, LOST):  # Ray retried the trial after its recorded end: same answer
        raise TrialFailed(f"trial already recorded as {status}: {previous.data.tags.get(Tag.ERROR, '')}")
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
        {Tag.STATUS: TRAINING, Tag.GPU_IDS: ",".join(gpu_ids) or "none", Tag.NODE: node, Tag.DEVICE: device,
         Tag.PID: os.getpid()},
    )  # fmt: skip
    done = _claim(tracker, claims, f"{arch}-{ctx.setup or 'any'}-s{seed}", run_id=run_id, poll_s=ctx.poll_s)
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
    spec = trial_spec(
        space,
        params,
        budget,
        out=out,
        seed=seed,
        data=ctx.data,
        nc=ctx.nc,  # the model is built for the dataset's classes, as the claim's arch hash was
        arch_hash=arch,
        workers=loader_workers(cpus, budget.workers),
        threads=max(1, int(cpus)),  # exactly the CPUs Ray gave it: never more (oversubscribed), never fewer
        device=device,
        fresh_cost=True,  # every seed measures its own latency: their spread is the latency's noise
        base_latency=ctx.base_latency,  # one latency: the base alone x the trial's ratio to it
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
