"""One trial, as a library: build an architecture, measure its deploy-form cost, train it with Ultralytics,
validate it.

:func:`run_trial` is what every sweep trial, the pretraining and the benchmarks call, with a
:class:`TrialSpec` saying everything the trial needs; ``python -m search.trial`` (:mod:`search.trial`) is the
command over it. Cost (params, GFLOPs, latency) is measured before training, so every per-epoch report
carries every objective; the sweep's searcher needs them all in each result.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ultra
from .records import COST_METRICS

__all__ = [
    "AMP_CHECK_WEIGHTS",
    "Reporter",
    "TrialFailed",
    "TrialSpec",
    "amp_decision",
    "default_device",
    "epochs_in",
    "has_test_split",
    "prepare_data",
    "run_trial",
    "safe_checkpoint",
    "torch_device",
    "with_base_latency",
    "with_classes",
]

LOGGER = logging.getLogger(__name__)
Reporter = Callable[[dict[str, Any], Path | None], None]
MAP_KEY, MAP50_KEY = "metrics/mAP50-95(B)", "metrics/mAP50(B)"


class TrialFailed(RuntimeError):
    """A trial ended without a trustworthy metric (it raised, diverged or ran out of memory)."""


@dataclass
class TrialSpec:
    """Everything one trial needs. Paths are absolute: Ray Tune changes each trial's working directory."""

    model_yaml: dict
    out: Path
    epochs: int
    imgsz: int
    batch: int
    fraction: float = 1.0
    data: str | None = None  # an Ultralytics dataset yaml; None: the built-in shapes dataset
    device: str | None = None  # Ultralytics device string ("cpu", "0"); None: GPU 0 if there is one
    seed: int = 0
    workers: int = 0  # in-process data loading: trials already run in parallel, one per GPU
    patience: int | None = None
    lr0: float | None = None
    weights: str | None = None  # warm start: tensors whose name and shape match are loaded
    latency_imgsz: int | None = None  # None: the training image size
    latency_precision: str | None = None  # "fp16" or "fp32"; None: fp16 on a GPU, fp32 on the CPU
    latency_backend: str = "torch"  # "onnxruntime": also time the exported ONNX model (latency_ort_*)
    max_latency_ms: float | None = None
    max_gflops: float | None = None
    train_args: dict = field(default_factory=dict)  # any other Ultralytics train() argument
    fresh_cost: bool = False  # measure latency anew even when it is cached (each seed of a sweep: its spread)
    reference_yaml: dict | None = (
        None  # the base's model yaml: latency is timed interleaved with it (a ratio)
    )
    map_evaluator: str = "coco"  # what map50_95 and map50 are: COCO's protocol or Ultralytics' (both logged)
    layer_map: list[int] | None = None  # with weights of the base: each base layer's index in this model
    fresh_layers: tuple[int, ...] = ()  # with weights: base layers never loaded (search.pretrain)
    threads: int | None = None  # CPU threads it trains on (a sweep: its --cpus-per-trial); None: every CPU
    # The full-size architecture a user would deploy (a space's point without the budget's scaling): its
    # parameters and GFLOPs are the trial's cost objectives, model_yaml's own are logged as proxy_*.
    # None: model_yaml is what the user deploys (a --model-yaml trial).
    deploy_yaml: dict | None = None
    # The base timed alone on its device (search.cost.base_alone): with a ratio to the base timed on that
    # same device, the trial's latency is that figure times the ratio; its own median, timed while other
    # trials trained beside it, is kept as latency_loaded_ms. None: the trial's own median.
    base_latency: dict | None = None
    # The caller's search.materialize.arch_hash of model_yaml, when model_yaml is already built for the
    # dataset's classes (a sweep has both); None: the trial sets the class count and hashes it itself.
    arch_hash: str | None = None

    @classmethod
    def from_budget(cls, model_yaml: dict, budget, out: Path, **kw) -> TrialSpec:
        """A trial of ``model_yaml`` trained as a space's budget says; ``kw`` sets the other fields."""
        return cls(
            model_yaml=model_yaml,
            out=out,
            epochs=budget.epochs,
            imgsz=budget.imgsz,
            batch=budget.batch,
            fraction=budget.fraction,
            workers=kw.pop("workers", budget.workers or 0),
            patience=budget.patience,
            lr0=budget.lr0,
            train_args={**budget.train, **kw.pop("train_args", {})},
            **{"weights": budget.weights, **kw},
        )


def default_device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def torch_device(device: str):
    """Ultralytics' device string ("cpu", "0", "cuda:1") as a torch.device."""
    import torch

    if device in ("cpu", "mps"):
        return torch.device(device)
    return torch.device(device if device.startswith("cuda") else f"cuda:{device.split(',')[0]}")


def prepare_data(data: str | None) -> tuple[str, list[str]]:
    """The dataset yaml to train on and its class names; a user's dataset is checked first."""
    from .data import CLASS_NAMES, builtin_dataset, check_dataset

    if data is None:
        return str(builtin_dataset()), list(CLASS_NAMES)
    checked = check_dataset(data)
    return str(Path(data).resolve()), [checked["names"][i] for i in sorted(checked["names"])]


def with_classes(model_yaml: dict, nc: int) -> dict:
    """The model yaml trained on a dataset with ``nc`` classes (its cost and hash are of that model)."""
    return {**model_yaml, "nc": nc}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def with_base_latency(cost: dict, base: dict | None) -> dict:
    """``cost`` with its latency the base's alone times its interleaved ratio, when ``base`` was timed on
    the same device; its own median (timed under the load of other trials) moves to ``latency_loaded_ms``."""
    if (
        not base
        or base["latency_device"] != cost.get("latency_device")
        or not _finite(cost.get("latency_ratio"))
    ):
        return cost
    r = cost["latency_ratio"]
    return {
        **cost,
        "latency_loaded_ms": cost["latency_ms"],
        "latency_ms": base["latency_ms"] * r,
        "latency_p90_ms": base["latency_p90_ms"] * r,
        "latency_iqr_ms": base["latency_iqr_ms"] * r,
        "latency_source": "base alone x ratio",
    }


def _renamed(key: str, layer_map: list[int] | None) -> str:
    """A base checkpoint's tensor name in the generated model: ``model.<i>.`` becomes ``model.<map[i]>.``."""
    parts = key.split(".")
    if layer_map is None or len(parts) < 2 or parts[0] != "model" or not parts[1].isdigit():
        return key
    index = int(parts[1])
    return ".".join(["model", str(layer_map[index]) if index < len(layer_map) else parts[1], *parts[2:]])


def _layer_of(key: str) -> int | None:
    """The layer index in a tensor name ``model.<i>.<...>``; None for any other name."""
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit() else None


def _warm_start(
    model, weights: str, out: Path, *, layer_map: list[int] | None = None, fresh: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Load every tensor of ``weights`` whose name (after ``layer_map``) and shape match ``model``; say how many.

    ``layer_map`` (see :func:`search.materialize.layer_map`) renames a base checkpoint's layers to
    their places in this model, so a layer after an inserted block still receives its own tensors.
    The checkpoint's layers in ``fresh`` (base indices) are not loaded at all: they count as skipped.
    The matched tensors are loaded into ``model`` and handed to Ultralytics as its starting weights
    (``warm_start.pt`` in ``out``): ``train()`` starts from them.
    """
    import torch

    from .checkpoint import CheckpointError, load, tensors

    try:
        source = tensors(load(weights))
    except CheckpointError as exc:
        raise TrialFailed(f"warm start: {exc}") from None
    theirs = {_renamed(k, layer_map): v for k, v in source.items() if _layer_of(k) not in fresh}
    withheld = len(source) - len(theirs)
    ours = model.model.state_dict()
    matched = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    model.model.load_state_dict(matched, strict=False)
    start = Path(out) / "warm_start.pt"
    torch.save({"model": model.model, "warm_start_from": str(weights)}, start)
    model.load(str(start))  # Ultralytics' own starting-weights path: train() transfers them into its model
    unloaded = sorted({_layer_of(k) for k in ours if k not in matched} - {None})
    counts = {
        "warm_start_loaded": len(matched),
        "warm_start_skipped": withheld + len(theirs) - len(matched),  # checkpoint tensors not loaded
        "warm_start_new": len(ours) - len(matched),  # this model's tensors left at their initial values
        "warm_start_fresh_layers": unloaded,  # layers with at least one tensor not loaded
    }
    LOGGER.info(
        "warm start from %s: %d tensors loaded, %d skipped, %d new in this model (fresh layers %s)",
        weights, *list(counts.values())[:3], unloaded,
    )  # fmt: skip
    return counts


def safe_checkpoint(checkpoint: Path) -> dict:
    """An Ultralytics checkpoint read back from sweep storage, loaded as data (:func:`search.checkpoint.load`).

    Checkpoints read back from sweep storage may come from a shared folder: a file holding anything
    but model classes and tensors is refused before Ultralytics ever opens it.

    Raises:
        TrialFailed: the file cannot be read or holds other objects.
    """
    from .checkpoint import CheckpointError, load

    try:
        return load(checkpoint)
    except CheckpointError as exc:
        raise TrialFailed(f"refusing to load checkpoint {exc}") from None


def epochs_in(checkpoint: Path) -> int:
    """Epochs an Ultralytics training checkpoint has completed (loaded safely)."""
    return int(safe_checkpoint(checkpoint).get("epoch", -1)) + 1


def _validate(weights: Path, train_args: dict, split: str = "val") -> dict:
    """Ultralytics' validation of a checkpoint on one split of the dataset, as a metrics dict.

    Like the trainer's own final validation: twice the training batch.
    """
    return _validation(weights, train_args, split)[0]


def _validation(
    weights: Path, train_args: dict, split: str, *, save_json: bool = False
) -> tuple[dict, list[dict]]:
    """:func:`_validate`, and with ``save_json`` the predictions in COCO's json form (``image_id`` = stem)."""
    from ultralytics import RTDETR

    keys = ("data", "imgsz", "device", "workers", "project")
    name = f"{split}-predictions" if save_json else split
    metrics = RTDETR(str(weights)).val(
        **{k: train_args[k] for k in keys},
        batch=train_args["batch"] * 2,
        split=split,
        name=name,
        exist_ok=True,
        plots=False,
        verbose=False,
        save_json=save_json,
    )
    predictions = Path(train_args["project"]) / name / "predictions.json"  # none written without a detection
    return dict(metrics.results_dict), json.loads(
        predictions.read_text()
    ) if save_json and predictions.exists() else []


def _onnx_cost(model, folder: Path, imgsz: int, *, device, precision: str | None) -> dict:
    """ONNX Runtime's latency of ``model``'s deploy form, exported as the winner export writes it."""
    from .cost import onnx_latency, timing_plan
    from .deploy import export_onnx, write_deploy

    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.pt")
    write_deploy(folder / "model.pt", folder / "deploy.pt")
    onnx = export_onnx(folder / "deploy.pt", folder / "model.onnx", imgsz, opset=None)
    plan = {k: v for k, v in timing_plan(device, precision).items() if k != "precision"}
    return onnx_latency(onnx, imgsz, device, **plan)


AMP_CHECK_WEIGHTS = (
    "yolo26n.pt"  # what Ultralytics' AMP check loads (from its weights folder, or the network)
)


def amp_decision(device: str, weights_dir: Path | None = None) -> tuple[bool, str]:
    """Whether a trial trains with mixed precision, and why (logged with the trial).

    On CPU, never (AMP is for accelerators). On a GPU, Ultralytics checks AMP first by running a
    small model it downloads once; offline, that download cannot happen, so AMP is on only when that
    model is already in Ultralytics' weights folder, and off, with the reason said, otherwise.
    """
    if device in ("cpu", "mps"):
        return False, f"AMP off: {device} training"
    if weights_dir is None:
        from ultralytics.utils import WEIGHTS_DIR

        weights_dir = Path(WEIGHTS_DIR)
    check = Path(weights_dir) / AMP_CHECK_WEIGHTS
    if check.is_file():
        return True, f"AMP on: Ultralytics' AMP check runs offline with {check}"
    return False, (
        f"AMP off: Ultralytics' AMP check needs {check}, which is not there and is never downloaded "
        "(offline); put that file there to train with AMP"
    )


def has_test_split(data: str) -> bool:
    """Whether a dataset yaml names a held-out ``test`` split."""
    import yaml

    return bool((yaml.safe_load(Path(data).read_text()) or {}).get("test"))


def run_trial(spec: TrialSpec, report: Reporter | None = None, resume_from: Path | None = None) -> dict:
    """Train and evaluate one architecture; return its result.

    Args:
        spec: the architecture, budget and where to write.
        report: called after every epoch with the epoch's metrics (mAP and the cost metrics) and the
            path of Ultralytics' ``last.pt`` for that epoch.
        resume_from: a ``last.pt`` of an interrupted run of this trial to continue from; the run's
            ``best.pt`` so far, when there is one, lies beside it. Both are loaded safely (see
            :func:`safe_checkpoint`) before Ultralytics opens them.

    Returns:
        The result: ``status`` is ``ok`` or ``infeasible`` (over a cost constraint, not trained).

    Raises:
        TrialFailed: training raised, diverged, or produced no validation metric.
    """
    import torch
    import yaml
    from ultralytics import RTDETR

    from .cost import DeviceUse, device_key, measure_cost
    from .materialize import arch_hash

    ultra.setup()
    started = time.perf_counter()
    out = Path(spec.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, names = prepare_data(spec.data)
    if spec.arch_hash is not None:
        model_yaml, h = spec.model_yaml, spec.arch_hash
    else:
        model_yaml = with_classes(spec.model_yaml, len(names))
        h = arch_hash(model_yaml)
    yaml_path = out / "model.yaml"
    yaml_path.write_text(yaml.safe_dump(model_yaml, sort_keys=False))
    device = spec.device or default_device()
    latency_imgsz = spec.latency_imgsz or spec.imgsz

    threads = spec.threads or ultra.available_cpus()
    ultra.use_threads(threads)  # before the cost is measured: the latency's device key names the count
    result: dict[str, Any] = {
        "arch_hash": h, "model_yaml": str(yaml_path), "data": data, "device": device, "threads": threads,
    }  # fmt: skip
    try:
        # a warm start hands this model's values to the trainer, so its fresh layers start from the seed's draw
        torch.manual_seed(spec.seed)
        model = RTDETR(str(yaml_path))
        if spec.weights:
            result.update(
                _warm_start(model, spec.weights, out, layer_map=spec.layer_map, fresh=spec.fresh_layers)
            )
        reference = None
        if spec.reference_yaml is not None:
            from ultralytics.nn.tasks import RTDETRDetectionModel

            reference = RTDETRDetectionModel(with_classes(spec.reference_yaml, len(names)), verbose=False)
        cost = measure_cost(
            model.model,
            h,
            latency_imgsz=latency_imgsz,
            device=torch_device(device),
            use_cache=not spec.fresh_cost,
            reference=reference,
            precision=spec.latency_precision,
        )
        if spec.latency_backend == "onnxruntime":
            cost.update(
                _onnx_cost(
                    model,
                    out / "onnx",
                    latency_imgsz,
                    device=torch_device(device),
                    precision=spec.latency_precision,
                )
            )
        cost = with_base_latency(cost, spec.base_latency)
        if spec.deploy_yaml is not None:  # the objectives are the deployable architecture's, exact
            from .cost import architecture_cost

            proxy = {"proxy_n_params": cost["n_params"], "proxy_gflops": cost["gflops"]}
            cost = {**cost, **proxy, **architecture_cost(spec.deploy_yaml)}
    except Exception as exc:  # a model that does not build or cannot be measured is a failed trial
        raise TrialFailed(f"building and measuring the model failed: {type(exc).__name__}: {exc}") from exc
    result.update(cost)
    cost_metrics = {k: cost[k] for k in COST_METRICS}
    over = [
        f"{name} {cost[key]:.4g} > {limit:g}"
        for name, key, limit in (
            ("latency_ms", "latency_ms", spec.max_latency_ms),
            ("gflops", "gflops", spec.max_gflops),
        )
        if limit is not None and cost[key] > limit
    ]
    if over:
        result.update(status="infeasible", reason="; ".join(over), epochs_done=0, train_s=0.0)
        result["cost_s"] = time.perf_counter() - started
        (out / "trial.json").write_text(json.dumps(result, indent=2))
        return result

    amp, amp_reason = amp_decision(device)
    if device != "cpu" and not amp:
        LOGGER.warning("%s", amp_reason)
    state: dict[str, Any] = {"in_epoch": False, "epochs_done": 0, "final": None}

    def on_train_epoch_end(trainer) -> None:
        state["in_epoch"] = True

    def on_fit_epoch_end(trainer) -> None:
        metrics = dict(trainer.metrics or {})
        if not state["in_epoch"]:  # Ultralytics' final validation of best.pt, after the last epoch
            state["final"] = metrics
            return
        state["in_epoch"] = False
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
        if not losses or not all(_finite(float(v)) for v in losses.values()):
            raise TrialFailed(
                f"training diverged at epoch {trainer.epoch + 1}: loss is {losses or 'missing'}"
            )
        state["epochs_done"] = trainer.epoch + 1
        epoch_map = float(metrics.get(MAP_KEY, float("nan")))
        epoch_metrics = {  # per epoch every mAP is Ultralytics' on val: what a scheduler ranks trials by
            "epoch": trainer.epoch + 1,
            "map50_95": epoch_map,
            "map50_95_coco": epoch_map,
            "map50_95_ultralytics": epoch_map,
            "map50": float(metrics.get(MAP50_KEY, float("nan"))),
            **{k: float(v) for k, v in losses.items()},
            **{k: float(v) for k, v in metrics.items()},
            **cost_metrics,
        }
        if report is not None:
            last = Path(trainer.last)
            report(epoch_metrics, last if last.exists() else None)

    for event, fn in (("on_train_epoch_end", on_train_epoch_end), ("on_fit_epoch_end", on_fit_epoch_end)):
        model.add_callback(event, fn)
    # on a GPU, every batch (training and validation) holds the device for its duration, so that a packed
    # trial's latency timing on the same GPU never runs under it (search.cost.DeviceUse)
    use = DeviceUse(device_key(torch_device(device)))
    for event in ("on_train_batch_start", "on_val_batch_start"):
        model.add_callback(event, lambda _: use.acquire())
    for event in ("on_train_batch_end", "on_val_batch_end"):
        model.add_callback(event, lambda _: use.release())

    train_args = {
        "data": data,
        "epochs": spec.epochs,
        "imgsz": spec.imgsz,
        "batch": spec.batch,
        "fraction": spec.fraction,
        "device": device,
        "workers": spec.workers,
        "seed": spec.seed,
        "project": str(out),
        "name": "train",
        "exist_ok": True,
        "plots": False,
        "verbose": False,
        "amp": amp,
        **({"patience": spec.patience} if spec.patience is not None else {}),
        **({"lr0": spec.lr0} if spec.lr0 is not None else {}),
        **spec.train_args,
    }
    train_start = time.perf_counter()
    result["amp"], result["amp_reason"] = amp, amp_reason
    run_dir = out / "train"
    scored = run_dir / "weights" / "best.pt"  # what Ultralytics' final validation scores
    done = 0
    if resume_from is not None:
        resume_from = Path(resume_from)
        done = epochs_in(resume_from)
        result["resumed_from_epoch"] = done
        best = resume_from.with_name("best.pt")
        if best.exists():
            safe_checkpoint(best)
            if best.resolve() != scored.resolve():
                scored.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(best, scored)  # the resumed trainer keeps it, or replaces it when it does better
    if done >= spec.epochs:  # interrupted after its last epoch, before the final validation
        state["epochs_done"] = done
        if not scored.exists():  # no best.pt was kept: the last epoch's weights are all there is
            LOGGER.warning("no best.pt beside %s: scoring the last epoch's weights", resume_from)
            scored = resume_from
        else:
            from ultralytics.utils.torch_utils import strip_optimizer

            strip_optimizer(scored)  # as the trainer does before its final validation
        state["final"] = _validate(scored, train_args)
    else:
        if resume_from is not None:
            train_args["resume"] = str(resume_from)
        try:
            model.train(**train_args)
        except TrialFailed:
            raise
        except Exception as exc:  # Ultralytics raises many kinds; the sweep records them, it does not crash
            raise TrialFailed(f"training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            use.release()  # a batch that raised never reached its end callback
    train_s = time.perf_counter() - train_start

    final = state["final"]
    if not final or not _finite(final.get(MAP_KEY)):
        raise TrialFailed("training ended without a validation mAP")
    # best.pt was chosen on val: the reported mAP comes from the held-out test split when there is one, by
    # Ultralytics' validator and by the COCO protocol on the same predictions
    from .coco import coco_map

    result.update(map50_95_val=float(final[MAP_KEY]), map50_val=float(final[MAP50_KEY]))
    split = "test" if has_test_split(data) else "val"
    try:
        use.acquire()
        try:
            final, predictions = _validation(scored, train_args, split, save_json=True)
        finally:
            use.release()
        coco = coco_map(predictions, data, split, nc=len(names))
    except Exception as exc:  # noqa: BLE001 - Ultralytics and the COCO tools raise many kinds
        raise TrialFailed(
            f"scoring best.pt on the {split} split failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not _finite(final.get(MAP_KEY)):
        raise TrialFailed(f"the {split} split gave no mAP")
    result.update(
        scored_split=split,
        map50_95_ultralytics=float(final[MAP_KEY]),
        map50_ultralytics=float(final[MAP50_KEY]),
        **coco,
        map_evaluator=spec.map_evaluator,
    )
    chosen = "coco" if spec.map_evaluator == "coco" else "ultralytics"
    result.update(
        status="ok",
        map50_95=result[f"map50_95_{chosen}"],
        map50=result[f"map50_{chosen}"],
        epochs_done=state["epochs_done"],
        train_s=train_s,
        total_s=time.perf_counter() - started,
        results_csv=str(run_dir / "results.csv"),
        weights=str(scored),  # the checkpoint the reported mAP was scored on
        last=str(run_dir / "weights" / "last.pt"),
    )
    (out / "trial.json").write_text(json.dumps(result, indent=2))
    return result
