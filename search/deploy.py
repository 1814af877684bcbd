"""Export one trial of a sweep as a deployable model, as a library (:mod:`search.export` is the command):
pick a frontier architecture and its typical seed (:func:`pick_run`, :func:`representative_seed`), write the
deploy form and its ONNX export, and check that both give the same outputs (:func:`export_run`).

The rules, the files written and the check are described in :mod:`search.export`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ultra
from .checkpoint import CheckpointError
from .checkpoint import load as load_checkpoint_safely
from .records import OK, ROLE_ARCH, ROLE_TRIAL, Tag, run_row

__all__ = [
    "ATOL",
    "DEFAULT_IMGSZ",
    "EmptyFrontier",
    "ExportError",
    "KNEE_OBJECTIVES",
    "PICKS",
    "RECORDED",
    "check_onnx",
    "compare_outputs",
    "default_image",
    "export_onnx",
    "export_run",
    "frontier_architectures",
    "frontier_runs",
    "get_run",
    "knee",
    "load_input",
    "open_store",
    "pick_run",
    "representative_seed",
    "sweep_objectives",
    "trial_imgsz",
    "write_deploy",
]

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
            from .tracking import get_run as get_run_or_none

            parent = get_run_or_none(client, parent_id) if parent_id else None
            if parent is None or parent.data.tags.get(Tag.ROLE) != ROLE_ARCH:
                groups[seed.info.run_id] = (seed, [seed])
                continue
            groups[parent_id] = (parent, [])
        groups[parent_id][1].append(seed)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- MLflow
def open_store(uri: str):
    """An MLflow client on an existing store (:func:`search.tracking.open_store`); ExportError if there is none."""
    from .tracking import TrackingError
    from .tracking import open_store as open_existing

    try:
        return open_existing(uri)
    except TrackingError as exc:
        raise ExportError(str(exc)) from None


def frontier_runs(client: Any, experiment: str, sweep: str) -> list[Any]:
    """The sweep's finished, ok, frontier trial runs that trained their own weights."""
    from .tracking import SweepTracker

    if client.get_experiment_by_name(experiment) is None:
        raise ExportError(f"no MLflow experiment named {experiment!r} in {client.tracking_uri}")
    runs = SweepTracker(client.tracking_uri, experiment).runs_for_sweep(sweep)
    if not runs:
        raise ExportError(f"no sweep named {sweep!r} in experiment {experiment!r}")
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == ROLE_TRIAL]
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
    from .tracking import find_parent

    parent = find_parent(client.tracking_uri, experiment, sweep)
    try:
        space = load_space(parent.data.params["space_file"])
    except (AttributeError, KeyError, SpaceError) as exc:
        LOGGER.warning("sweep %s: its space cannot be read (%s); knee over %s", sweep, exc, KNEE_OBJECTIVES)
        return KNEE_OBJECTIVES
    return tuple((o.metric, o.direction == "maximize") for o in space.objectives)


def get_run(client: Any, run_id: str) -> Any:
    """A finished, ok trial run by id."""
    from .tracking import get_run as find_run

    run = find_run(client, run_id)
    if run is None:
        raise ExportError(f"no MLflow run with id {run_id!r} in {client.tracking_uri}")
    tags = run.data.tags
    if run.info.status != "FINISHED" or tags.get(Tag.STATUS) != OK:
        raise ExportError(
            f"run {run_id} is not a finished trial (status {run.info.status}, "
            f"{Tag.STATUS} {tags.get(Tag.STATUS, 'missing')})"
        )
    if Tag.REUSED_FROM in tags:
        raise ExportError(f"run {run_id} reused the result of run {tags[Tag.REUSED_FROM]}: export that one")
    return run


def _download(client: Any, run_id: str, name: str, *, dst: Path) -> Path:
    from .tracking import download_artifact

    path = download_artifact(client, run_id, name, dst=dst)
    if path is None:
        raise ExportError(f"run {run_id} has no {name} artifact")
    return path


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def trial_imgsz(trial: dict, train_args: dict, run: Any, *, parent: Any | None) -> int:
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


def export_onnx(deploy_pt: Path, path: Path, imgsz: int, *, opset: int | None) -> Path:
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


def check_onnx(deployed: Any, onnx_path: Path, image: Path, *, atol: float) -> dict[str, Any]:
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
        trial_json = _download(client, run_id, "trial.json", dst=Path(tmp))
        model_yaml = _download(client, run_id, "model.yaml", dst=Path(tmp))
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
        from .tracking import get_run as get_run_or_none

        parent = get_run_or_none(client, parent_id) if parent_id else None
        imgsz = trial_imgsz(trial, ckpt.get("train_args") or {}, run, parent=parent)
    deploy_pt = out / "deploy.pt"
    LOGGER.info("run %s: deploy form of %s -> %s", run_id, weights, deploy_pt)
    deployed = write_deploy(weights, deploy_pt)
    onnx_path = export_onnx(deploy_pt, out / "model.onnx", imgsz, opset=opset)
    check = check_onnx(deployed, onnx_path, image or default_image(), atol=atol)
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
    budget = run.data.tags.get(Tag.BUDGET)
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
