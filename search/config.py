"""A sweep's configuration and training setup: what the command line resolved (:class:`SweepConfig`), what
every trial of it carries (:class:`SweepContext`), the setup key a resume and a reuse are checked against,
and the resources a trial gets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pretrain import kept_checkpoint
from .recipe import resolve_budget
from .records import DEFAULT_SAMPLER, EXPERIMENT
from .space import Budget, Choice, Space

__all__ = [
    "space_document",
    "FIXED_SAMPLERS",
    "SAMPLERS",
    "SETUP_FLAGS",
    "SweepConfig",
    "SweepContext",
    "default_concurrency",
    "default_cpus_per_trial",
    "experiment_path",
    "file_fingerprint",
    "loader_workers",
    "setup_changes",
    "training_setup",
]

SAMPLERS = ("tpe", "nsga2", "gp", "cost", "random", "grid", "ablation", "list")


# a fixed list of points, in order, each once; "list": the config's own points (e.g. a past sweep's frontier)
FIXED_SAMPLERS = ("grid", "ablation", "list")


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
    base_latency: dict | None = None  # the base timed alone before the trials (search.cost.base_alone)


@dataclass
class SweepConfig:
    """A resolved ``python -m search.run`` invocation."""

    space: Space
    budget: str
    overrides: dict = field(default_factory=dict)
    samples: int = 4
    sampler: str = DEFAULT_SAMPLER
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

    @property
    def trained_budget(self) -> Budget:
        """The space's budget with this sweep's overrides (:func:`search.recipe.resolve_budget`)."""
        return resolve_budget(self.space, self.budget, self.overrides)


def training_setup(config: SweepConfig) -> dict[str, str]:
    """Everything a trained result depends on besides its architecture, as MLflow param values.

    A sweep's results are reused (and the sweep resumed) only under the same setup: every value of
    the resolved budget, the dataset's identity (yaml path and a fingerprint of its yaml and label
    files), the seed, the cost constraints and the code version. ``setup_key`` hashes the rest.
    """
    import hashlib

    from .data import builtin_dataset, dataset_fingerprint
    from .provenance import code_version

    budget = config.trained_budget
    if budget.pretrain and not budget.weights:  # what run_sweep resolves it to: the copy in the storage
        kept = kept_checkpoint(
            config.space, budget, config.data, keep_in=experiment_path(config).parent / "pretrain"
        )
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


def default_concurrency(cpus: int, gpus: int, gpus_per_trial: float, *, cpus_per_trial: float) -> int:
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


def experiment_path(config: SweepConfig) -> Path:
    return Path(config.storage_path).resolve() / config.name


def space_document(space: Space, budget: Budget | None = None) -> dict:
    """The space as a space file would say it, with ``budget`` (e.g. one resolved with a sweep's flags) in
    place of the budget of its name. It loads as a space again.

    Logged with a sweep, so the run records exactly what its trials were built and trained from.
    """

    def choice(c: Choice) -> Any:
        if c.op == "keep":
            return "keep"
        out = {"op": c.op, "block": c.block, "mode": c.mode}
        if c.args is not None:
            out["args"] = list(c.args)
        if c.repeats is not None:
            out["repeats"] = c.repeats
        return out

    budgets = list({**space.budgets, **({budget.name: budget} if budget is not None else {})}.values())
    doc = {
        "name": space.name,
        "description": space.description,
        "base": space.base,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in space.objectives],
        "map_evaluator": space.map_evaluator,
        "constraints": dataclasses.asdict(space.constraints),
        "budgets": {
            b.name: {k: v for k, v in dataclasses.asdict(b).items() if k != "name" and v not in (None, {})}
            for b in budgets
        },
        "sites": {
            s.name: {"layer": s.layer, "choices": {c.name: choice(c) for c in s.choices}} for s in space.sites
        },
    }
    if space.references:
        doc["references"] = {
            r.name: {"params": dict(r.params), "caption": r.caption} for r in space.references
        }
    return doc
