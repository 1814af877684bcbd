"""``python -m search.trial``: train and measure one architecture from the shell, over :mod:`search.training`::

    python -m search.trial --space modes --params '{"stage3": "gate"}' --epochs 3
    python -m search.trial --model-yaml my_rtdetr.yaml --data coco.yaml --budget full --device 0

It prints the trial's result as JSON on stdout; bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from . import ultra
from .cli import Parser, start, usage_error
from .training import TrialFailed, TrialSpec, default_device, prepare_data, run_trial

LOGGER = logging.getLogger(__name__)

__all__ = ["main", "spec_from_args"]


# --------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.trial", description="Train and measure one RT-DETR architecture.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", help="a space name (spaces/NAME.yaml) or a path to a space file")
    what.add_argument("--model-yaml", help="an Ultralytics RT-DETR model yaml (may use our blocks)")
    p.add_argument("--params", default="{}", help="with --space: the point, as JSON {site: choice}")
    p.add_argument(
        "--budget", help="with --space: the space's budget to use (default: cpu without a GPU, else full)"
    )
    p.add_argument("--data", help="an Ultralytics dataset yaml (default: the built-in shapes dataset)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--fraction", type=float)
    p.add_argument("--lr0", type=float)
    p.add_argument(
        "--pretrain", type=int, help="with --space: the budget's fair warm start (0: from scratch)"
    )
    p.add_argument("--patience", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="'cpu', '0', ... (default: GPU 0 if there is one)")
    p.add_argument("--weights", help="warm start from a checkpoint (tensors matching by name and shape)")
    p.add_argument("--latency-imgsz", type=int, help="image size for latency (default: the training size)")
    p.add_argument(
        "--latency-precision", choices=("fp16", "fp32"), help="default: fp16 on a GPU, fp32 on the CPU"
    )
    p.add_argument("--latency-backend", choices=("torch", "onnxruntime"), default="torch",
                   help="onnxruntime: also time the exported ONNX model (latency_ort_ms)")  # fmt: skip
    p.add_argument("--out", default="runs/trial", help="output folder (default: runs/trial)")
    return p


def _check_weights(path: str, model_yaml: dict) -> str:
    """:func:`search.checkpoint.check_weights` against the model ``model_yaml`` builds; ValueError if it fails."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .checkpoint import check_weights

    ultra.setup()
    return check_weights(path, RTDETRDetectionModel(copy.deepcopy(model_yaml), verbose=False))


_TRAINING_FLAGS = ("epochs", "imgsz", "batch", "fraction", "lr0", "patience", "workers")
_DEFAULTS = {"epochs": 25, "imgsz": 640, "batch": 16, "fraction": 1.0, "workers": 0}  # --model-yaml's


def _check_sizes(values: dict) -> None:
    for key in ("epochs", "imgsz", "batch"):
        if values[key] < 1:
            raise ValueError(f"--{key} must be >= 1, got {values[key]}")
    if not 0 < values["fraction"] <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {values['fraction']}")


def _measuring(args: argparse.Namespace) -> dict:
    """How the trial is measured and where it runs, from the flags (the same for both kinds of trial)."""
    if args.latency_precision == "fp16" and (args.device or default_device()) in ("cpu", "mps"):
        raise ValueError("--latency-precision fp16 needs a CUDA device; on the CPU latency is timed in fp32")
    return {
        "device": args.device,
        "latency_imgsz": args.latency_imgsz,
        "latency_precision": args.latency_precision,
        "latency_backend": args.latency_backend,
    }


def _space_spec(args: argparse.Namespace) -> tuple[TrialSpec, Callable[[], str] | None]:
    """A point of a space: its recipe (:func:`search.recipe.trial_spec`) at the budget the flags resolve."""
    from .materialize import materialize
    from .pretrain import pretrained_base
    from .recipe import base_model_yaml, resolve_budget, trial_spec
    from .space import load_space, validate_params

    space = load_space(args.space)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object {site: choice}")
    name = args.budget or ("full" if default_device() != "cpu" else "cpu")
    if name not in space.budgets:
        raise ValueError(f"--budget {name!r}: space {space.name} has budgets {', '.join(space.budgets)}")
    if args.pretrain is not None and args.pretrain < 0:
        raise ValueError(f"--pretrain must be >= 0, got {args.pretrain}")
    overrides = {k: getattr(args, k) for k in (*_TRAINING_FLAGS, "pretrain", "weights")}
    budget = resolve_budget(space, name, overrides)
    _check_sizes(dataclasses.asdict(budget))
    point = validate_params(space, params)
    measuring = _measuring(args)
    if budget.weights:  # opened as data, and it must fit the base (or this model): before anything trains
        model = base_model_yaml(space, budget) or materialize(space, point, budget=budget)[0]
        LOGGER.info("%s", _check_weights(budget.weights, model))
    pretrain = None
    if budget.pretrain and not budget.weights:
        pretrain = lambda: str(pretrained_base(space, budget, args.data, say=LOGGER.info))  # noqa: E731
    spec = trial_spec(
        space,
        point,
        budget,
        out=args.out,
        seed=args.seed,
        data=args.data,
        max_latency_ms=space.constraints.max_latency_ms,
        max_gflops=space.constraints.max_gflops,
        **measuring,
    )
    return spec, pretrain


def _yaml_spec(args: argparse.Namespace) -> TrialSpec:
    """A model yaml of the user's, trained as the flags say (defaults: ``_DEFAULTS``)."""
    import yaml

    path = Path(args.model_yaml)
    if not path.is_file():
        raise ValueError(f"--model-yaml {path}: no such file")
    try:
        model_yaml = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"--model-yaml {path}: not valid YAML ({exc})") from None
    if not isinstance(model_yaml, dict) or "backbone" not in model_yaml or "head" not in model_yaml:
        raise ValueError(f"--model-yaml {path}: not a model yaml (needs 'backbone' and 'head')")
    training = {
        k: getattr(args, k) if getattr(args, k) is not None else _DEFAULTS.get(k) for k in _TRAINING_FLAGS
    }
    _check_sizes(training)
    measuring = _measuring(args)
    if args.weights:  # opened as data, and it must fit the model: before anything trains
        LOGGER.info("%s", _check_weights(args.weights, model_yaml))
    return TrialSpec(
        model_yaml=model_yaml,
        out=Path(args.out).resolve(),
        data=args.data,
        seed=args.seed,
        weights=args.weights,
        **training,
        **measuring,
    )


def spec_from_args(args: argparse.Namespace) -> tuple[TrialSpec, Callable[[], str] | None]:
    """Resolve the CLI's flags into a TrialSpec; raises ValueError for bad input.

    The second value, for a budget with ``pretrain`` and no ``--weights``, trains (or finds) the
    pretrained base its warm start loads and returns its path (:mod:`search.pretrain`); otherwise None.
    """
    return _space_spec(args) if args.space else (_yaml_spec(args), None)


def main(argv: list[str] | None = None) -> int:
    from .data import DataError

    start(logging.INFO)
    args = _parser().parse_args(argv)
    try:
        spec, pretrain = spec_from_args(args)
        if spec.data is not None:
            prepare_data(spec.data)  # a bad dataset fails here, before any model is built
    except (ValueError, DataError) as exc:  # SpaceError and DataError are ValueErrors
        return usage_error(exc)
    stdout = sys.stdout
    try:
        with _ultralytics_to_stderr():  # stdout carries exactly one JSON object
            if pretrain is not None:
                spec = dataclasses.replace(spec, weights=pretrain())
            result = run_trial(spec)
    except TrialFailed as exc:
        print(json.dumps({"status": "failed", "error": str(exc), "out": str(spec.out)}), file=stdout)
        return 1
    print(json.dumps(result), file=stdout)
    return 0


@contextlib.contextmanager
def _ultralytics_to_stderr():
    from ultralytics.utils import LOGGER as ULTRA_LOGGER

    handlers = [h for h in ULTRA_LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(sys.stderr) for h in handlers]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h, s in zip(handlers, streams, strict=True):
            h.setStream(s)


if __name__ == "__main__":
    sys.exit(main())
