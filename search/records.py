"""A sweep's vocabulary: the metrics a trial reports, its statuses and the tag keys of its MLflow runs.

Plain constants, no imports beyond the standard library: a space file is checked against
:data:`TRIAL_METRICS` when it loads, and the sweep, the frontier and the CLIs read and write runs
with these names.
"""

from __future__ import annotations

import re

from .stats import summarize

__all__ = [
    "COST_METRICS",
    "DEFAULT_SAMPLER",
    "EXPERIMENT",
    "LATENCY_SETTINGS",
    "MAP_DETAILS",
    "ORT_METRICS",
    "ROLE_ARCH",
    "ROLE_PARENT",
    "ROLE_TRIAL",
    "WARM_COUNTS",
    "architecture_rows",
    "outcomes",
    "choices_text",
    "Tag",
    "run_row",
    "seed_rows_of",
    "FAILED",
    "INFEASIBLE",
    "LOST",
    "OK",
    "STOPPED",
    "TRAINING",
    "TRIAL_METRICS",
]

EXPERIMENT = "rtdetr-ghost-search"
# what python -m search.run searches with unless --sampler says otherwise: the cost-aware sampler, which beat random
# and TPE in the replay of the shipped reference table (bench/search_efficiency.py, docs/measurements.md)
DEFAULT_SAMPLER = "cost"

# The final metrics every finished trial reports (to the searcher and as its child run's metrics);
# a space's objectives must be among them. Cost metrics are measured before training and are also
# in every per-epoch result, so an early-stopping scheduler can rank on any of them.
TRIAL_METRICS = ("map50_95", "map50", "map50_95_coco", "map50_95_ultralytics", "latency_ms", "latency_p90_ms",
                 "latency_ratio", "gflops", "n_params")  # fmt: skip
# map50_95 and map50: the space's map_evaluator's figures (COCO's by default), scored on the test split
# latency_ratio: the latency over the base's, timed interleaved with it (NaN in a space without a base)
COST_METRICS = ("latency_ms", "latency_p90_ms", "latency_iqr_ms", "latency_ratio", "latency_ratio_iqr", "gflops",
                "n_params")  # fmt: skip

# A trial's status: the tag `trial.status` on its child run. LOST: its worker died before the trial
# recorded an outcome (killed, out of memory, node lost) and Ray gave up retrying it.
OK, TRAINING, FAILED, INFEASIBLE, STOPPED = "ok", "training", "failed", "infeasible", "stopped_early"
LOST = "lost"


class Tag:
    """Tag keys of a sweep's MLflow runs (the parent's and the trials')."""

    SWEEP = "sweep.name"  # on the parent and every trial run of a sweep
    ROLE = "sweep.role"  # "parent", "architecture" (one per architecture) or "trial" (one per seed)
    STATUS = "trial.status"  # one of the statuses above
    TRIAL_ID = "trial.id"  # Ray Tune's trial id: a resumed trial finds its run by it
    PARENT = (
        "mlflow.parentRunId"  # nests an architecture under its sweep, a seed's trial under its architecture
    )
    REFERENCE = "reference"  # on a reference's architecture run: its name in the space ("base" for the base)
    ARCH = "arch_hash"  # search.materialize.arch_hash of the trained model yaml
    SETUP = "setup"  # the training setup's key: results are reused only under the same one
    REUSED_FROM = "reused_from"  # the run whose result this trial reused
    WAITING_FOR = "waiting_for"  # the run holding this architecture while this trial waited
    TOOK_OVER_FROM = "took_over_from"  # the lost run whose architecture this trial trained instead
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    STOPPED_EARLY = "stopped_early"
    INFEASIBLE = "infeasible"  # the cost constraint it broke
    ERROR = "error"
    ATTEMPTS = "trial.attempts"  # times Ray started the trial: more than 1 only after a worker or node died
    PARETO = "pareto"  # "true" on the frontier's runs
    LATENCY_DEVICE = "latency_device"
    SCORED_SPLIT = "scored_split"  # the split a trial's mAP was scored on: "test", or "val" without one
    WARM_START = "warm_start.from"  # the checkpoint a trial started from
    FRESH_LAYERS = "warm_start.fresh_layers"  # its layers (indices in the trained model) not loaded from it
    BUDGET = "budget"  # the budget's name, on architecture and trial runs
    # where a trial ran: Ray's GPU ids, node, the Ultralytics device string, the worker's process id
    GPU_IDS, NODE, DEVICE, PID = "gpu_ids", "node", "device", "pid"
    # on the parent: the space, sampler and base, the Ray storage folder (a name is never merged into
    # another folder's sweep), and the past sweep whose frontier it retrains
    SPACE, SAMPLER, BASE, STORAGE, FROM_SWEEP = "space", "sampler", "base", "storage", "from_sweep"
    LATENCY_BASE_DEVICE = "latency_base_device"  # on the parent: where the base was timed alone
    HYPERVOLUME_DEVICE = (
        "hypervolume.latency_device"  # on the parent: the device of the hypervolume's latency
    )
    FRONTIER_SIZE = "frontier.size"  # on the parent, at the end: architectures on the frontier
    TRIALS_FINISHED = "trials.finished"  # on the parent, at the end: trained seeds
    RUN_NAME = "mlflow.runName"  # MLflow's own: the name the UI shows
    GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own: the commit the parent ran at


ROLE_PARENT, ROLE_ARCH, ROLE_TRIAL = "parent", "architecture", "trial"

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


def run_row(run, site_names: list[str]) -> dict | None:
    """A finished, trained trial's run (one seed of one architecture) as a row; None for any other run.

    Reused results are not rows of their own: the run that trained the architecture's seed is.
    """
    tags, metrics = run.data.tags, run.data.metrics
    if run.info.status != "FINISHED" or tags.get(Tag.STATUS) != OK or Tag.REUSED_FROM in tags:
        return None
    if tags.get(Tag.ROLE, ROLE_TRIAL) != ROLE_TRIAL:
        return None
    params = {name: run.data.params.get(name, "") for name in site_names}
    return {
        "trial_id": tags.get(Tag.TRIAL_ID, ""),
        "run_id": run.info.run_id,
        "arch_run_id": tags.get(Tag.PARENT, ""),
        "arch_hash": tags.get(Tag.ARCH, ""),
        "seed": int(run.data.params.get("seed", 0)),
        **{k: metrics.get(k) for k in TRIAL_METRICS},
        "n_params": int(metrics.get("n_params", 0)),
        "latency_device": tags.get(Tag.LATENCY_DEVICE, ""),
        "scored_split": tags.get(Tag.SCORED_SPLIT, "val"),
        "warm_start": {
            **{k: int(metrics[f"warm_start/{k}"]) for k in WARM_COUNTS if f"warm_start/{k}" in metrics},
            "fresh_layers": tags.get(Tag.FRESH_LAYERS, ""),
        }
        if Tag.WARM_START in tags
        else None,
        "params": params,
        "label": "base" if all(v == "keep" for v in params.values()) else "",
    }


def seed_rows_of(runs: list, site_names: list[str]) -> list[dict]:
    """The rows of a sweep's trial runs (one per trained seed), in the order the trials ended."""
    ordered = sorted(runs, key=lambda r: (r.info.end_time or 0, r.info.run_id))
    return [row for run in ordered if (row := run_row(run, site_names)) is not None]


def architecture_rows(seed_rows: list[dict]) -> list[dict]:
    """One row per architecture from its seeds' rows, in the order each architecture first finished.

    Each metric of :data:`TRIAL_METRICS` is the mean over the architecture's seeds, with
    ``<metric>_std`` and ``<metric>_ci95`` (the half-width of its 95 % interval: NaN for one seed)
    beside it; ``n_seeds`` counts them and ``seeds`` maps each seed to its metric values (for
    differences paired by seed). ``trial_id`` and ``run_id`` are the first seed's; ``arch_run_id`` is
    the architecture's own run.
    """
    grouped: dict[str, list[dict]] = {}
    for row in seed_rows:
        grouped.setdefault(row["arch_hash"], []).append(row)
    out = []
    for seeds in grouped.values():
        first = seeds[0]
        row = {k: v for k, v in first.items() if k not in TRIAL_METRICS and k != "seed"}
        row["seeds"] = {r["seed"]: {k: r.get(k) for k in TRIAL_METRICS} for r in seeds}
        row["n_seeds"] = len(row["seeds"])
        for metric in TRIAL_METRICS:
            s = summarize(v[metric] for v in row["seeds"].values())
            row[metric], row[f"{metric}_std"], row[f"{metric}_ci95"] = s.mean, s.std, s.half
        row["n_params"] = int(first.get("n_params") or 0)
        out.append(row)
    return out


def outcomes(runs: list) -> tuple[dict[str, int], dict[str, int]]:
    """A sweep's trial runs counted by status, and each distinct error with how many trials ended on it.

    A trial that reused another's result counts under that result's status; its error names the run
    it reused, so it is not counted as an error of its own.
    """
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    for run in runs:
        status = run.data.tags.get(Tag.STATUS) or TRAINING
        counts[status] = counts.get(status, 0) + 1
        error = run.data.tags.get(Tag.ERROR)
        if status in (FAILED, LOST) and error and Tag.REUSED_FROM not in run.data.tags:
            line = _same_wording(" ".join(error.split()))[:300]
            errors[line] = errors.get(line, 0) + 1
    return counts, errors


def _same_wording(error: str) -> str:
    """An error text with every ``{a, b}`` set printed sorted: one error reads the same from every process
    (Python prints a set of strings in a different order in each)."""
    return re.sub(r"\{([^{}]*)\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", error)


def choices_text(params: dict[str, str]) -> str:
    """A point's choices as one short text: ``stage3=ori pan_p5=gate``, or ``(base)`` when all keep."""
    return " ".join(f"{k}={v}" for k, v in params.items() if v != "keep") or "(base)"
