"""``python -m search.export``: turn one trial of a sweep into a deployable model.

    python -m search.export --sweep NAME --pick knee          # a frontier trial of a sweep
    python -m search.export --run-id RUN_ID --out best/        # one trial's MLflow run

Writes into ``--out`` (default ``runs/export/<run-id>``):

* ``model.yaml``: the trial's model yaml (its MLflow artifact);
* ``deploy.pt``: the trained weights in deploy form (GhostModuleV3 re-parameterised, then Ultralytics'
  conv+BN fuse), as an Ultralytics checkpoint: ``RTDETR("deploy.pt")`` loads it once
  ``ghost_blocks.register()`` has run;
* ``model.onnx``: Ultralytics' ONNX export of ``deploy.pt`` (static shape, batch 1, not simplified);
* ``export.json``: what was exported, from which run and why, and the check below.

The check: one image (default: the first val image of the built-in dataset), letterboxed to the export
size, goes through ``deploy.pt`` in PyTorch (fp32, eval) and through ONNX Runtime on CPU; the raw outputs
``(1, queries, 4 + classes)`` (normalised xywh boxes and sigmoid scores, all in [0, 1]) must agree within
``--atol`` (default 1e-3) on every element. The decoder keeps its top-k encoder queries; two near-tied
scores can swap places in fp32, which permutes the queries without changing them, so when the direct
comparison fails the rows are matched one-to-one by nearest row before giving up.

Pick rules (``--sweep``) choose an architecture of the sweep's frontier by its figures over its seeds
(the architecture run's means), among the architectures with a FINISHED seed run tagged
``trial.status=ok`` and ``pareto=true`` that trained its own weights (a run that reused another run's
result is skipped: the original holds the weights). The export then takes the seed whose ``map50_95`` is
nearest the architecture's mean (ties: the lower seed): a typical seed, not the luckiest one, so the
exported model scores what the frontier says it does. ``export.json`` records the architecture's means,
its number of seeds and the seed taken. The rules:

* ``map``: the highest ``map50_95`` (ties: lower ``latency_ms``);
* ``latency``: the lowest ``latency_ms`` (ties: higher ``map50_95``);
* ``knee``: each of the sweep's objectives (its space's; ``map50_95`` up, ``latency_ms`` and ``gflops``
  down when the space cannot be read) is min-max normalised
  over the frontier to a regret, 0 for the frontier's best value and 1 for its worst; the pick is the
  point nearest (Euclidean) to the ideal point, regret 0 everywhere (ties: higher ``map50_95``). An
  objective equal on every point counts 0.

Exit codes: 0 exported and checked, 1 the check failed, 2 a user error (unknown run or sweep, no frontier
trial, weights missing on this machine, bad flags), reported in one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ultra
from .checkpoint import CheckpointError
from .checkpoint import load as load_checkpoint_safely
from .cli import Parser, UsageError, check_name, start, usage_error
from .records import EXPERIMENT, OK, ROLE_ARCH, Tag, run_row

__all__ = [
    "ATOL", "EXPERIMENT", "PICKS", "EmptyFrontier", "ExportError", "compare_outputs", "export_run", "frontier_architectures", "knee",
    "pick_run", "representative_seed",
]  # fmt: skip

LOGGER = logging.getLogger(__name__)
PICKS = ("map", "latency", "knee")
# Boxes and scores both live in [0, 1]; fp32 PyTorch and ONNX Runtime differ by ~1e-6 on them, so
# 1e-3 catches a wrong graph without failing on kernel rounding.
ATOL = 1e-3
DEFAULT_IMGSZ = 640
KNEE_OBJECTIVES = (("map50_95", True), ("latency_ms", False), ("gflops", False))  # (metric, maximize)
RECORDED = ("map50_95", "map50", "latency_ms", "gflops", "n_params")


class ExportError(ValueError):
    """A problem the user can fix (a run, sweep, file or flag); exit code 2."""


class EmptyFrontier(ExportError):
    """The sweep exists but has no finished trial on its frontier: nothing to export (exit code 1)."""


# ------------------------------------------------------------------------------------------ picking
def knee(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> int:
    """Index of the point nearest the ideal point after min-max normalising each objective.

    Each objective becomes a regret in [0, 1] (0: the best value among ``points``, 1: the worst); an
    objective equal on every point is 0 everywhere. Ties go to the earliest point.

    Args:
        points: One row of objective values per point.
        maximize: Per objective, whether larger is better.
    """
    if not len(points):
        raise ValueError("`points` is empty")
    pts = np.asarray(points, dtype=float)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    regret = np.where(np.asarray(maximize, dtype=bool), hi - pts, pts - lo) / span
    return int(np.argmin(np.sqrt((regret**2).sum(axis=1))))


def _finite(run: Any, *metrics: str) -> bool:
    return all(math.isfinite(run.data.metrics.get(m, math.nan)) for m in metrics)


def pick_run(runs: Sequence[Any], rule: str, objectives: Sequence[tuple[str, bool]] = KNEE_OBJECTIVES) -> Any:
    """The run a pick rule chooses among frontier runs (MLflow ``Run`` objects); see the module docs.

    ``objectives`` are the knee's ``(metric, maximize)`` pairs: the sweep's own objectives.

    Raises:
        ExportError: No run has the metrics the rule needs.
        ValueError: ``rule`` is unknown.
    """
    if rule not in PICKS:
        raise ValueError(f"`rule` must be one of {PICKS}, got {rule!r}")
    need = [m for m, _ in objectives] if rule == "knee" else ["map50_95", "latency_ms"]
    usable = [r for r in runs if _finite(r, *need)]
    if not usable:
        raise ExportError(f"no frontier trial has the metrics {', '.join(need)} that --pick {rule} needs")
    # Best mAP first (then lower latency, then run id), so every rule breaks ties the same stable way.
    usable.sort(key=lambda r: (-r.data.metrics["map50_95"], r.data.metrics["latency_ms"], r.info.run_id))
    if rule == "map":
        return usable[0]
    if rule == "latency":
        return min(usable, key=lambda r: r.data.metrics["latency_ms"])  # min keeps the first of ties
    points = [[r.data.metrics[m] for m, _ in objectives] for r in usable]
    return usable[knee(points, [up for _, up in objectives])]


def representative_seed(seeds: Sequence[Any], mean: float) -> Any:
    """The seed run whose ``map50_95`` is nearest ``mean`` (its architecture's); ties: the lower seed."""
    if not seeds:
        raise ValueError("`seeds` is empty")
    return min(
        seeds,
        key=lambda r: (
            abs(r.data.metrics.get("map50_95", math.inf) - mean),
            int(r.data.params.get("seed", 0)),
            r.info.run_id,
        ),
    )


def frontier_architectures(client: Any, seeds: Sequence[Any]) -> list[tuple[Any, list[Any]]]:
    """Frontier seed runs grouped by architecture: ``(architecture run, its seed runs)`` in first-seen order.

    A seed whose parent is not an architecture run (a sweep recorded without one) stands for itself.
    """
    groups: dict[str, tuple[Any, list[Any]]] = {}
    for seed in seeds:
        parent_id = seed.data.tags.get(Tag.PARENT, "")
        if parent_id not in groups:
            parent = client.get_run(parent_id) if parent_id else None
            if parent is None or parent.data.tags.get(Tag.ROLE) != ROLE_ARCH:
                groups[seed.info.run_id] = (seed, [seed])
                continue
            groups[parent_id] = (parent, [])
        groups[parent_id][1].append(seed)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- MLflow
def open_store(uri: str):
    """An MLflow client on an existing store; raises ExportError instead of creating an empty one."""
    import mlflow

    from .tracking import TrackingError, check_tracking, local_store_path

    local = local_store_path(uri)
    if local is not None:
        if local[1] is None or not local[1].exists():  # MLflow would silently create an empty store
            raise ExportError(f"no MLflow tracking store at {uri}")
    else:
        try:
            check_tracking(uri)
        except TrackingError as exc:
            raise ExportError(str(exc)) from None
    return mlflow.MlflowClient(tracking_uri=uri)


def frontier_runs(client: Any, experiment: str, sweep: str) -> list[Any]:
    """The sweep's finished, ok, frontier trial runs that trained their own weights."""
    from .tracking import SweepTracker

    if client.get_experiment_by_name(experiment) is None:
        raise ExportError(f"no MLflow experiment named {experiment!r} in {client.tracking_uri}")
    runs = SweepTracker(client.tracking_uri, experiment).runs_for_sweep(sweep)
    if not runs:
        raise ExportError(f"no sweep named {sweep!r} in experiment {experiment!r}")
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == "trial"]
    # a finished trial that trained its own weights is a row of the sweep (records.run_row), on the frontier
    front = [r for r in trials if run_row(r, []) is not None and r.data.tags.get(Tag.PARETO) == "true"]
    if not front:
        raise EmptyFrontier(
            f"sweep {sweep!r} has no finished trial on the frontier (tags trial.status=ok, pareto=true) "
            f"among its {len(trials)} trial runs"
        )
    return front


def sweep_objectives(client: Any, experiment: str, sweep: str) -> tuple[tuple[str, bool], ...]:
    """The sweep's objectives as ``(metric, maximize)``, from its space; the default knee objectives if the
    space file cannot be read on this machine."""
    from .space import SpaceError, load_space
    from .tracking import SweepTracker

    runs = SweepTracker(client.tracking_uri, experiment).runs_for_sweep(sweep)
    parent = next((r for r in runs if r.data.tags.get(Tag.ROLE) == "parent"), None)
    try:
        space = load_space(parent.data.params["space_file"])
    except (AttributeError, KeyError, SpaceError) as exc:
        LOGGER.warning("sweep %s: its space cannot be read (%s); knee over %s", sweep, exc, KNEE_OBJECTIVES)
        return KNEE_OBJECTIVES
    return tuple((o.metric, o.direction == "maximize") for o in space.objectives)


def get_run(client: Any, run_id: str) -> Any:
    """A finished, ok trial run by id."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ExportError(f"no MLflow run with id {run_id!r} in {client.tracking_uri}") from None
    tags = run.data.tags
    if run.info.status != "FINISHED" or tags.get(Tag.STATUS) != OK:
        raise ExportError(
            f"run {run_id} is not a finished trial (status {run.info.status}, "
            f"{Tag.STATUS} {tags.get(Tag.STATUS, 'missing')})"
        )
    if Tag.REUSED_FROM in tags:
        raise ExportError(f"run {run_id} reused the result of run {tags[Tag.REUSED_FROM]}: export that one")
    return run


def _download(client: Any, run_id: str, name: str, dst: Path) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, name, str(dst)))
    except (MlflowException, OSError):
        raise ExportError(f"run {run_id} has no {name} artifact") from None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def trial_imgsz(trial: dict, train_args: dict, run: Any, parent: Any | None) -> int:
    """The size the trial trained at: trial.json, the checkpoint's train args, the runs' params, or 640."""
    candidates = (
        trial.get("imgsz"),
        train_args.get("imgsz"),
        run.data.params.get("imgsz"),
        run.data.params.get("budget.imgsz"),
        parent.data.params.get("budget.imgsz") if parent is not None else None,
    )
    return next((n for n in map(_int_or_none, candidates) if n), DEFAULT_IMGSZ)


# ------------------------------------------------------------------------------------------- models
def write_deploy(weights: Path, path: Path) -> Any:
    """Write the deploy form of an Ultralytics checkpoint to ``path``; return it as loaded back (fp32)."""
    from ultralytics import RTDETR
    from ultralytics.nn.tasks import load_checkpoint

    import ghost_blocks

    from .cost import deploy_form

    model = RTDETR(str(weights))
    model.model = deploy_form(model.model)
    model.save(path)  # Ultralytics' own checkpoint format: the module (half), train_args, metadata
    deployed, _ = load_checkpoint(path)
    # A pickled GhostModuleV3 reads its form from its own submodules: prove the file holds the deploy form.
    left = [
        n for n, m in deployed.named_modules() if isinstance(m, ghost_blocks.GhostModuleV3) and not m.deployed
    ]
    if left:
        raise RuntimeError(f"{path}: GhostModuleV3 modules still in training form: {left}")
    return deployed.eval()


def export_onnx(deploy_pt: Path, path: Path, imgsz: int, opset: int | None) -> Path:
    """Ultralytics' ONNX export of ``deploy_pt``, moved to ``path``."""
    from ultralytics import RTDETR

    with warnings.catch_warnings():
        # torch's TorchScript exporter warns about every slice it cannot constant-fold: noise, not a fault
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        exported = RTDETR(str(deploy_pt)).export(
            format="onnx", imgsz=imgsz, opset=opset, simplify=False, dynamic=False, batch=1, device="cpu"
        )
    os.replace(exported, path)
    return path


def default_image() -> Path:
    """The first validation image of the built-in shapes dataset."""
    from .data import builtin_dataset

    images = sorted((builtin_dataset().parent / "images" / "val").glob("*.png"))
    if not images:
        raise RuntimeError("the built-in dataset has no validation images")
    return images[0]


def load_input(image: Path, height: int, width: int) -> np.ndarray:
    """An image as the model sees it: letterboxed, RGB, [0, 1] float32, NCHW with batch 1."""
    import cv2
    from ultralytics.data.augment import LetterBox

    bgr = cv2.imread(str(image))
    if bgr is None:
        raise ExportError(f"--image {image}: not a readable image")
    boxed = LetterBox(new_shape=(height, width))(image=bgr)
    chw = boxed[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(chw, dtype=np.float32)[None] / 255.0


def compare_outputs(ours: np.ndarray, theirs: np.ndarray, atol: float = ATOL) -> dict[str, Any]:
    """Do two raw RT-DETR outputs agree within ``atol``, directly or up to a permutation of queries?"""
    if ours.shape != theirs.shape:
        return {"passed": False, "reason": f"shapes differ: {ours.shape} vs {theirs.shape}", "atol": atol}
    direct = float(np.abs(ours - theirs).max())
    result = {"passed": direct <= atol, "atol": atol, "max_abs_diff": direct, "matched": "direct"}
    if result["passed"]:
        return result
    # Near-tied encoder scores can reorder the top-k queries; the same queries, reordered, still agree.
    a, b = ours.reshape(-1, ours.shape[-1]), theirs.reshape(-1, theirs.shape[-1])
    dist = np.abs(a[:, None, :] - b[None, :, :]).max(axis=-1)
    nearest = dist.argmin(axis=1)
    matched = float(dist[np.arange(len(a)), nearest].max())
    one_to_one = len(set(nearest.tolist())) == len(a)
    result.update(matched="permuted", max_abs_diff_matched=matched, passed=one_to_one and matched <= atol)
    return result


def check_onnx(deployed: Any, onnx_path: Path, image: Path, atol: float) -> dict[str, Any]:
    """Run one image through the PyTorch deploy model and ONNX Runtime (CPU) and compare the outputs."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    _, _, height, width = inp.shape  # the exported static shape, whatever imgsz rounding happened
    x = load_input(image, height, width)
    theirs = session.run(None, {inp.name: x})[0]
    with torch.inference_mode():
        out = deployed.float().eval()(torch.from_numpy(x))
    ours = (out[0] if isinstance(out, (list, tuple)) else out).numpy()
    return {**compare_outputs(ours, theirs, atol), "image": str(image), "shape": list(theirs.shape)}


# ------------------------------------------------------------------------------------------- export
def export_run(
    client: Any,
    run: Any,
    out: Path,
    *,
    pick: str | None = None,
    architecture: Any | None = None,
    weights: Path | None = None,
    imgsz: int | None = None,
    opset: int | None = None,
    image: Path | None = None,
    atol: float = ATOL,
) -> dict[str, Any]:
    """Export one trial run into ``out`` and check the ONNX model; returns what ``export.json`` holds.

    Args:
        client: An MLflow client on the run's store.
        run: The trial's finished MLflow run.
        out: The output folder (created).
        pick: The pick rule that chose the run, for the record.
        architecture: The architecture run the pick chose, whose typical seed ``run`` is, for the record.
        weights: Use this checkpoint instead of the path recorded in the run's ``trial.json``.
        imgsz: Export size; default the trial's training size.
        opset: ONNX opset; default Ultralytics' choice.
        image: The check's test image; default the built-in dataset's first val image.
        atol: The check's absolute tolerance.

    Raises:
        ExportError: The run lacks an artifact, or the weights are not on this machine.
    """
    from ultralytics.nn.tasks import torch_safe_load

    ultra.setup()
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        trial_json = _download(client, run_id, "trial.json", Path(tmp))
        model_yaml = _download(client, run_id, "model.yaml", Path(tmp))
        try:
            trial = json.loads(trial_json.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"run {run_id}: trial.json is not valid JSON ({exc})") from None
        if weights is None:
            if not trial.get("weights"):
                raise ExportError(f"run {run_id}: trial.json records no weights")
            weights = Path(trial["weights"])
            if not weights.is_file():
                raise ExportError(
                    f"run {run_id}: its weights {weights} (from trial.json) are not on this machine; "
                    "run the export where the trial trained, or copy the file here and pass --weights"
                )
        elif not weights.is_file():
            raise ExportError(f"--weights {weights}: no such file")
        try:  # opened as data: a file holding more than model classes and tensors is refused here
            load_checkpoint_safely(weights)
        except CheckpointError as exc:
            raise ExportError(f"--weights {exc}") from None
        if image is not None and not image.is_file():
            raise ExportError(f"--image {image}: no such file")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_yaml, out / "model.yaml")

    if imgsz is None:
        ckpt, _ = torch_safe_load(str(weights))
        parent_id = run.data.tags.get(Tag.PARENT)
        parent = client.get_run(parent_id) if parent_id else None
        imgsz = trial_imgsz(trial, ckpt.get("train_args") or {}, run, parent)
    deploy_pt = out / "deploy.pt"
    LOGGER.info("run %s: deploy form of %s -> %s", run_id, weights, deploy_pt)
    deployed = write_deploy(weights, deploy_pt)
    onnx_path = export_onnx(deploy_pt, out / "model.onnx", imgsz, opset)
    check = check_onnx(deployed, onnx_path, image or default_image(), atol)
    LOGGER.info("ONNX check: %s", check)

    import onnx

    record = {
        "run_id": run_id,
        "sweep": run.data.tags.get(Tag.SWEEP),
        "trial_id": run.data.tags.get(Tag.TRIAL_ID),
        "arch_hash": run.data.tags.get(Tag.ARCH),
        "pick": pick or "run-id",
        "tracking_uri": client.tracking_uri,
        "seed": run.data.params.get("seed"),
        "metrics": {k: run.data.metrics[k] for k in RECORDED if k in run.data.metrics},
        "weights": str(weights.resolve()),
        "imgsz": imgsz,
        "opset": max(o.version for o in onnx.load(str(onnx_path), load_external_data=False).opset_import),
        "files": {
            "model_yaml": str((out / "model.yaml").resolve()),
            "deploy_pt": str(deploy_pt.resolve()),
            "onnx": str(onnx_path.resolve()),
        },
        "check": check,
    }
    budget = run.data.tags.get("budget")
    if budget and budget != "full" and "proxy/n_params" in run.data.metrics:
        # the weights are the scaled-down model the budget trained, not the architecture its costs describe
        record["proxy"] = {
            "budget": budget,
            "n_params": int(run.data.metrics["proxy/n_params"]),
            "train_deployable": f"python -m search.run --from-sweep {record['sweep']} --budget full",
        }
    if architecture is not None and architecture is not run:
        record["architecture"] = {
            "run_id": architecture.info.run_id,
            "n_seeds": int(architecture.data.metrics.get("n_seeds", 1)),
            "metrics": {k: architecture.data.metrics[k] for k in RECORDED if k in architecture.data.metrics},
            "seed_rule": "the seed whose map50_95 is nearest the architecture's mean",
        }
    (out / "export.json").write_text(json.dumps(record, indent=2))
    return record


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.export", description=__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the MLflow run of one trial")
    which.add_argument("--sweep", help="a sweep name: export one of its frontier trials (see --pick)")
    p.add_argument("--pick", choices=PICKS, help="with --sweep: map | latency | knee (default: knee)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the embedded store in mlflow/)")
    p.add_argument(
        "--experiment", default=EXPERIMENT, help=f"with --sweep: the experiment (default: {EXPERIMENT})"
    )
    p.add_argument("--out", help="output folder (default: runs/export/<run-id>)")
    p.add_argument("--weights", help="the trial's best.pt, when trial.json's path is not on this machine")
    p.add_argument("--imgsz", type=int, help="export size (default: the trial's training size, else 640)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: Ultralytics' choice)")
    p.add_argument(
        "--image", help="test image for the check (default: the built-in dataset's first val image)"
    )
    p.add_argument("--atol", type=float, default=ATOL, help=f"check tolerance (default: {ATOL:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    from .tracking import default_tracking_uri

    start()
    # MLflow draws a progress bar per downloaded artifact on stderr, which must carry one line on errors
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = _parser().parse_args(argv)
    try:
        check_name("--sweep", args.sweep)
        if args.pick and not args.sweep:
            raise ExportError("--pick only applies with --sweep")
        for key in ("imgsz", "opset"):
            if getattr(args, key) is not None and getattr(args, key) < 1:
                raise ExportError(f"--{key} must be >= 1, got {getattr(args, key)}")
        if not args.atol > 0:
            raise ExportError(f"--atol must be > 0, got {args.atol}")
        client = open_store(args.tracking_uri or default_tracking_uri())
        pick = (args.pick or "knee") if args.sweep else None
        architecture = None
        if args.sweep:
            groups = frontier_architectures(client, frontier_runs(client, args.experiment, args.sweep))
            objectives = sweep_objectives(client, args.experiment, args.sweep)
            architecture = pick_run([a for a, _ in groups], pick, objectives)
            seeds = next(s for a, s in groups if a is architecture)
            run = representative_seed(seeds, architecture.data.metrics["map50_95"])
        else:
            run = get_run(client, args.run_id)
        out = Path(args.out) if args.out else Path("runs") / "export" / run.info.run_id
        record = export_run(
            client,
            run,
            out,
            pick=pick,
            architecture=architecture,
            weights=Path(args.weights) if args.weights else None,
            imgsz=args.imgsz,
            opset=args.opset,
            image=Path(args.image) if args.image else None,
            atol=args.atol,
        )
    except EmptyFrontier as exc:  # the request was fine; the sweep produced nothing to export
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except (ExportError, UsageError) as exc:
        return usage_error(exc)
    check = record["check"]
    metrics = " ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
    if "architecture" in record:
        arch = record["architecture"]
        means = " ".join(f"{k} {v:.4g}" for k, v in arch["metrics"].items())
        print(
            f"[export] architecture {arch['run_id']} (pick {record['pick']}), over its {arch['n_seeds']} "
            f"seed(s): {means}; exporting seed {record['seed']}, the one nearest its mean mAP50-95"
        )
    print(f"[export] run {record['run_id']} (trial {record['trial_id']}, pick {record['pick']}): {metrics}")
    for name, path in record["files"].items():
        print(f"[export] {name}: {path}")
    diff = f"max abs diff {check['max_abs_diff']:.3g}" if "max_abs_diff" in check else check.get("reason", "")
    if "max_abs_diff_matched" in check:
        diff += f", {check['max_abs_diff_matched']:.3g} with queries matched up to order"
    verdict = "passed" if check["passed"] else "FAILED"
    print(f"[export] ONNX Runtime vs PyTorch on {check['image']}: {diff} (atol {check['atol']:g}): {verdict}")
    print(f"[export] record: {out / 'export.json'}")
    if "proxy" in record:
        proxy = record["proxy"]
        print(
            f"[export] these weights are the scaled-down proxy the '{proxy['budget']}' budget trains "
            f"({proxy['n_params'] / 1e6:.2f} M parameters), not the deployable architecture whose costs the "
            f"sweep reports ({record['metrics'].get('n_params', 0) / 1e6:.1f} M); to train that one: "
            f"{proxy['train_deployable']}"
        )
    return 0 if check["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
