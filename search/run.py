"""``python -m search.run``: sweep a space of GhostModuleV3 placements in RT-DETR, or dry-run it.

    python -m search.run --space placements                 # a sweep (a small CPU run without a GPU)
    python -m search.run --space modes --sampler grid       # every point once, the base first
    python -m search.run --sampler ablation --repeats 2     # the base and every single change, 2 seeds
    python -m search.run --from-sweep NAME --budget full    # train a past sweep's frontier again
    python -m search.run --space placements --dry-run       # build and cost architectures, no training
    python -m search.run --name NAME --resume               # continue an interrupted sweep

Every user error (bad space file, flag, dataset, tracking server, an existing sweep name) is reported
in one line with exit code 2 before any training starts and before anything is written to MLflow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import ultra
from .cli import Parser, UsageError, check_name, start, usage_error
from .records import DEFAULT_SAMPLER, EXPERIMENT, Tag, choices_text

__all__ = [
    "DEFAULT_CPU_MINUTES",
    "check_base_weights",
    "dry_run",
    "dry_run_rows",
    "main",
    "past_frontier",
    "start_ray",
    "sweep_config",
]

DEFAULT_CPU_MINUTES = 15  # the first answer on a laptop: the default CPU sweep ends within this


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--space", default="placements", help="a space name in spaces/ or a path (default: placements)"
    )
    p.add_argument("--dry-run", action="store_true", help="build and cost architectures without training")
    p.add_argument("--format", choices=("text", "json"), default="text", help="dry-run output format")
    p.add_argument(
        "--samples",
        type=int,
        help="architectures to sample after the base and the space's references (grid: architectures in all; "
        "dry-run: rows when the space has > 64 points)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="seeds per architecture, each its own trial; the mean is the architecture's value (default 1; "
        "the base always gets at least 2, so every sweep measures its own noise)",
    )
    p.add_argument(
        "--count-references",
        action="store_true",
        help="count the base and the space's references toward --samples (default: they come on top)",
    )
    p.add_argument(
        "--budget", help="the space's budget (default: cpu without a GPU, else full; dry-run: as written)"
    )
    p.add_argument(
        "--sampler",
        choices=("tpe", "nsga2", "gp", "cost", "random", "grid", "ablation"),
        default=DEFAULT_SAMPLER,
        help=f"(default: {DEFAULT_SAMPLER}) tpe, nsga2, gp (Optuna's Gaussian process), cost (cost-aware: the candidate with the largest expected "
        "hypervolume gain given its exact parameters and GFLOPs), random: search; grid: every point; ablation: the "
        "base and every single change from it",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="trials at once (default: GPUs / gpus-per-trial; without GPUs, CPUs / cpus-per-trial)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs each trial reserves, at most 1: a trial trains on one GPU; a fraction such as 0.5 packs "
        "several trials onto one GPU (default 1 when GPUs exist, else 0)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        help="CPUs each trial reserves; its data loader gets one worker per CPU beyond the first (default 1 "
        "without GPUs, else the node's CPUs shared by its trial slots)",
    )
    p.add_argument("--data", help="an Ultralytics dataset yaml (default: the built-in shapes dataset)")
    for flag, kind in (
        ("--epochs", int),
        ("--imgsz", int),
        ("--batch", int),
        ("--fraction", float),
        ("--lr0", float),
    ):
        p.add_argument(flag, type=kind, help="override the budget's value")
    p.add_argument(
        "--pretrain",
        type=int,
        metavar="EPOCHS",
        help="the fair warm start: every trial starts from the base pretrained this many epochs (once, cached), "
        "every site's layers fresh in every architecture; 0 trains every trial from scratch. Default: the "
        "budget's (the cpu budget's: 20)",
    )
    p.add_argument(
        "--weights",
        help="warm start: a checkpoint of the base model; every trial loads each tensor whose name and shape "
        "match (layers renamed to their places after insertions). Default: the budget's weights, if any",
    )
    p.add_argument(
        "--from-sweep",
        metavar="NAME",
        help="train exactly the frontier of the past sweep NAME (in the same tracking store), in its space, "
        "e.g. again with --budget full; the base comes first as in every sweep",
    )
    p.add_argument(
        "--scheduler",
        choices=("asha", "moasha"),
        help="early stopping at rungs of epochs: asha ranks on the first objective, moasha by noise-aware "
        "non-dominated sorting over all of them (a cheap, slightly less accurate trial goes on)",
    )
    p.add_argument(
        "--latency-precision",
        choices=("fp16", "fp32"),
        help="latency on a GPU: fp16 (the default, as papers quote it) or fp32; on the CPU always fp32",
    )
    p.add_argument(
        "--latency-backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="onnxruntime: each trial also times its ONNX export with ONNX Runtime (CUDA's provider where "
        "installed, else the CPU's), logged as latency_ort_ms beside torch's latency_ms",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="the sweep's wall time from the command's start, pretraining included: no trial starts that would "
        "not end in it (judged by the longest trial so far), except the base's seeds; 0: no limit. Default: "
        "15 on a machine without a GPU training on the built-in data, else none",
    )
    p.add_argument("--max-latency-ms", type=float, help="architectures slower than this are not trained")
    p.add_argument("--max-gflops", type=float, help="architectures costlier than this are not trained")
    p.add_argument("--name", help="sweep name (default: SPACE-DATE-TIME)")
    p.add_argument(
        "--storage-path", default="runs/sweeps", help="where Ray Tune keeps sweeps (default: runs/sweeps)"
    )
    p.add_argument("--resume", action="store_true", help="continue the sweep --name in --storage-path")
    p.add_argument("--address", help="an existing Ray cluster, e.g. auto or HOST:6379 (default: a local Ray)")
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="times a trial is retried after its worker or node dies (default 2); then it is recorded lost",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the embedded store in mlflow/)")
    p.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment name (default: {EXPERIMENT})")
    return p


def _positive(args: argparse.Namespace) -> None:
    for key in ("samples", "epochs", "imgsz", "batch", "max_concurrent", "repeats"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    for key in (
        "gpus_per_trial",
        "cpus_per_trial",
        "max_latency_ms",
        "max_gflops",
        "lr0",
        "pretrain",
        "time_budget",
    ):
        value = getattr(args, key)
        if value is not None and value < 0:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 0, got {value}")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise UsageError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.gpus_per_trial is not None and args.gpus_per_trial > 1:
        raise UsageError(
            f"--gpus-per-trial must be at most 1, got {args.gpus_per_trial:g}: a trial trains on one GPU "
            "(a fraction such as 0.5 packs several trials onto one GPU)"
        )
    if args.max_failures < 0:
        raise UsageError(f"--max-failures must be >= 0, got {args.max_failures}")
    check_name("--name", args.name)
    check_name("--from-sweep", args.from_sweep)


# ------------------------------------------------------------------------------------------ dry run
def dry_run_rows(space, points: list[dict], budget=None) -> list[dict]:
    """Build every point with Ultralytics and measure its deploy form's parameters and GFLOPs at 640
    (without a budget: the deployable architecture, the figures every trial reports as its cost)."""
    from .cost import architecture_cost
    from .materialize import materialize

    rows = []
    for params in points:
        model_yaml, h = materialize(space, params, budget=budget)
        rows.append({"params": params, "arch_hash": h, **architecture_cost(model_yaml)})
    return rows


def dry_run(args: argparse.Namespace, space) -> int:
    budget = None
    if args.budget:
        if args.budget not in space.budgets:
            raise UsageError(
                f"--budget {args.budget!r}: space {space.name} has budgets {', '.join(space.budgets)}"
            )
        budget = space.budgets[args.budget]
    if space.size <= 64:
        points = list(space.points())
    else:
        points = space.random_points(args.samples or 8, args.seed)
    text = args.format == "text"
    if text:
        print(f"space {space.name}: {space.size} points, base {space.base}, {len(space.sites)} sites")
        for site in space.sites:
            print(f"  {site.name:<16} layer {site.layer:>3}: {', '.join(c.name for c in site.choices)}")
        shown = "all" if space.size <= 64 else f"{len(points)} random"
        print(
            f"{shown} architectures, deploy form at 640x640{' (proxy: budget ' + budget.name + ')' if budget else ''}:"
        )
    rows = dry_run_rows(space, points, budget)
    if not text:
        print(json.dumps(rows, indent=2))
        return 0
    from .frontier import format_table

    shown = [{**r, "choices": choices_text(r["params"])} for r in rows]
    print(format_table(shown, ["choices", "arch_hash", "n_params", "gflops"]))
    return 0


# --------------------------------------------------------------------------------------------- sweep
def sweep_config(
    args: argparse.Namespace, space, points: list[dict] | None = None, *, started: float | None = None
):
    """Resolve flags into a SweepConfig, checking every input a user can get wrong. ``started``: when the
    command started (its time budget counts from there, pretraining included; default now)."""
    import torch
    from ray import tune

    from .config import (
        SweepConfig,
        default_concurrency,
        default_cpus_per_trial,
        experiment_path,
        setup_changes,
        training_setup,
    )
    from .data import DataError, check_dataset
    from .plan import fill_last_round
    from .tracking import TrackingError, check_tracking, default_tracking_uri, find_parent

    gpus = torch.cuda.device_count()
    budget = args.budget or ("full" if gpus else "cpu")
    if budget not in space.budgets:
        raise UsageError(f"--budget {budget!r}: space {space.name} has budgets {', '.join(space.budgets)}")
    if args.sampler == "grid" and args.samples and args.samples > space.size:
        raise UsageError(
            f"--samples {args.samples} > {space.size} points: the grid sampler runs each point once"
        )
    if args.sampler in ("ablation", "list") and args.samples:
        raise UsageError(
            "--samples does not apply to --sampler ablation or --from-sweep: they train a fixed list of architectures"
        )
    weights = space.budgets[budget].weights
    if args.weights or weights:  # opened as data, and it must fit the base: before Ray or MLflow hear of it
        flag = "--weights" if args.weights else f"budget {budget!r} of space {space.name}: weights"
        print(f"[sweep] {check_base_weights(args.weights or weights, space, budget, flag=flag)}")
    if args.resume and not args.name:
        raise UsageError("--resume needs the --name of the sweep to continue")
    if args.data:
        try:
            check_dataset(args.data)
        except DataError as exc:
            raise UsageError(str(exc)) from None
    uri = args.tracking_uri or default_tracking_uri()
    try:
        check_tracking(uri)
    except TrackingError as exc:
        raise UsageError(str(exc)) from None
    gpus_per_trial = args.gpus_per_trial if args.gpus_per_trial is not None else (1 if gpus else 0)
    if args.latency_precision == "fp16" and not gpus_per_trial:
        raise UsageError(
            "--latency-precision fp16 needs trials on a GPU (--gpus-per-trial > 0); on the CPU latency is fp32"
        )
    if args.samples:
        samples = args.samples
    elif args.sampler == "grid":
        samples = space.size
    elif args.sampler == "list":
        samples = len(points or [])
    elif args.sampler == "ablation":
        from .plan import ablation_points

        try:
            samples = len(ablation_points(space))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        samples = min(space.size, 32 if gpus else 5)
    cpus_per_trial = (
        args.cpus_per_trial
        if args.cpus_per_trial is not None
        else default_cpus_per_trial(os.cpu_count() or 1, gpus, gpus_per_trial)
    )
    concurrent = args.max_concurrent or default_concurrency(
        os.cpu_count() or 1, gpus, gpus_per_trial, cpus_per_trial=cpus_per_trial
    )
    config = SweepConfig(
        space=space,
        budget=budget,
        overrides={
            **{k: getattr(args, k) for k in ("epochs", "imgsz", "batch", "fraction", "lr0", "pretrain")},
            "weights": str(Path(args.weights).resolve()) if args.weights else None,
        },
        samples=samples,
        sampler=args.sampler,
        seed=args.seed,
        max_concurrent=concurrent,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        data=str(Path(args.data).resolve()) if args.data else None,
        name=args.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(Path(args.storage_path).resolve()),
        address=args.address,
        tracking_uri=uri,
        experiment=args.experiment,
        scheduler=args.scheduler,
        resume=args.resume,
        max_latency_ms=args.max_latency_ms
        if args.max_latency_ms is not None
        else space.constraints.max_latency_ms,
        max_gflops=args.max_gflops if args.max_gflops is not None else space.constraints.max_gflops,
        max_failures=args.max_failures,
        repeats=args.repeats,
        count_references=args.count_references,
        points=list(points or []),
        from_sweep=args.from_sweep,
        latency_precision=args.latency_precision,
        latency_backend=args.latency_backend,
        time_budget_s=60
        * (
            args.time_budget
            if args.time_budget is not None
            else (0 if gpus or args.data else DEFAULT_CPU_MINUTES)
        )
        or None,
        started=started or time.time(),
    )
    if not args.samples:  # the default count: the last round of trials as full as the others
        config = fill_last_round(config)
    path = experiment_path(config)
    exists = path.exists() and tune.Tuner.can_restore(str(path))
    if args.resume and not exists:
        raise UsageError(f"no sweep named {config.name!r} in {config.storage_path} to resume")
    if not args.resume and path.exists():
        raise UsageError(
            f"a sweep named {config.name!r} already exists in {config.storage_path}; "
            "pass --resume to continue it or choose another --name"
        )
    try:
        parent = find_parent(uri, config.experiment, config.name)
    except Exception as exc:  # noqa: BLE001 - any store failure is the user's store: say it in one line
        raise UsageError(f"cannot read MLflow at {uri}: {' '.join(str(exc).split())[:300]}") from None
    if parent is not None:
        stored = parent.data.tags.get(Tag.STORAGE, "")
        if stored != str(path):  # another sweep folder, or its Ray state is gone: never merge into it
            raise UsageError(
                f"sweep name {config.name!r} is taken in MLflow by run {parent.info.run_id} whose Ray state "
                f"is {stored or 'unknown'}, not {path}: choose another --name"
            )
        if args.resume:
            recorded = {**parent.data.params}
            # (the sampler and the number of samples are Ray's own state: a resume keeps them anyway)
            setup = {**training_setup(config), "space_file": space.path}
            changed = setup_changes(recorded, setup)
            if changed:
                raise UsageError(
                    f"--resume of {config.name!r} would change how its trials train: "
                    + "; ".join(changed)
                    + ". Resume with the sweep's own values, or start a new sweep"
                )
    elif args.resume:
        raise UsageError(
            f"sweep {config.name!r} has Ray state in {path} but no parent run in MLflow experiment "
            f"{config.experiment!r} at {uri}: resume with the --tracking-uri it started with"
        )
    return config


def check_base_weights(path: str, space, budget: str, *, flag: str) -> str:
    """Check a warm-start checkpoint against the space's base at ``budget`` (see
    :func:`search.checkpoint.check_weights`); one line on how much of the base it fills.

    Raises:
        UsageError: the file is missing, not a safe checkpoint, or fits the base not at all.
    """
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .checkpoint import CheckpointError, check_weights
    from .materialize import materialize

    ultra.setup()
    point = space.base_point or next(iter(space.points()))
    model = RTDETRDetectionModel(materialize(space, point, budget=space.budgets[budget])[0], verbose=False)
    try:
        return check_weights(path, model, flag=flag)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None


def start_ray(address: str | None) -> None:
    """Start a local Ray, or join the cluster at ``address``; an unreachable one is a UsageError, fast."""
    import socket

    import ray

    if ray.is_initialized():
        return
    if address and address not in ("auto", "local") and "://" not in address:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=10):
                pass
        except (OSError, ValueError) as exc:
            raise UsageError(f"--address {address}: no Ray cluster answers there ({exc})") from None
    try:
        ray.init(
            address=address or "local",  # else Ray joins any cluster `ray start` left on this machine
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise UsageError(
            f"--address {address}: cannot join the Ray cluster: {' '.join(str(exc).split())[:300]}"
        ) from None


def past_frontier(args: argparse.Namespace):
    """The space of the past sweep ``--from-sweep`` and its frontier's points, read from MLflow."""
    from .space import SpaceError, load_space
    from .tracking import SweepTracker, TrackingError, check_tracking, default_tracking_uri, find_parent

    uri = args.tracking_uri or default_tracking_uri()
    try:
        check_tracking(uri)
        parent = find_parent(uri, args.experiment, args.from_sweep)
    except TrackingError as exc:
        raise UsageError(str(exc)) from None
    if parent is None:
        raise UsageError(
            f"--from-sweep {args.from_sweep}: no such sweep in experiment {args.experiment!r} at {uri}"
        )
    try:
        space = load_space(parent.data.params["space_file"])
    except (KeyError, SpaceError) as exc:
        raise UsageError(f"--from-sweep {args.from_sweep}: its space cannot be read here: {exc}") from None
    architectures = SweepTracker(uri, args.experiment).architectures(parent.info.run_id)
    runs = [r for r in architectures if r.data.tags.get(Tag.PARETO) == "true"]
    points = [{site.name: r.data.params[site.name] for site in space.sites} for r in runs]
    if not points:
        raise UsageError(
            f"--from-sweep {args.from_sweep}: the sweep has no frontier (no architecture tagged pareto=true)"
        )
    return space, sorted(points, key=lambda p: tuple(p.values()))


def main(argv: list[str] | None = None) -> int:
    from .space import SpaceError, load_space

    started = time.time()
    start()
    args = _parser().parse_args(argv)
    try:
        _positive(args)
        points = []
        if args.from_sweep:
            space, points = past_frontier(args)
            args.sampler = "list"
        else:
            space = load_space(args.space)
        if args.dry_run:
            ultra.setup()
            return dry_run(args, space)
        config = sweep_config(args, space, points, started=started)
        ultra.setup()
        start_ray(config.address)  # before anything is written to MLflow
    except (UsageError, SpaceError) as exc:
        return usage_error(exc)
    from .plan import sweep_plan
    from .sweep import run_sweep

    b = config.trained_budget
    if config.gpus_per_trial == 0 and not config.data:
        print(
            f"[sweep] no GPU: a small CPU run - {sweep_plan(config)[2]} trials on the built-in shapes dataset, "
            f"budget '{config.budget}' ({b.epochs} epochs at {b.imgsz}px, a scaled-down proxy model"
            + (f", warm-started from the base pretrained {b.pretrain} epochs" if b.pretrain else "")
            + "), "
            + "local Ray, embedded MLflow store"
            + (f", within {config.time_budget_s / 60:g} min" if config.time_budget_s else "")
            + ". Pass --samples/--epochs/--time-budget to change it."
        )
    for noisy in ("optuna", "mlflow"):  # their info lines (a new study, a new store) are not the user's news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    front = run_sweep(config, say=print, live=sys.stdout.isatty())
    return 0 if front else 1  # a sweep that produced no frontier must not read as a success to a script


if __name__ == "__main__":
    sys.exit(main())
