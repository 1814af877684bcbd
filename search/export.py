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
import logging
import os
import sys
from pathlib import Path

from .cli import Parser, UsageError, check_name, start, usage_error
from .deploy import (
    ATOL,
    PICKS,
    EmptyFrontier,
    ExportError,
    export_run,
    frontier_architectures,
    frontier_runs,
    get_run,
    open_store,
    pick_run,
    representative_seed,
    sweep_objectives,
)
from .records import EXPERIMENT

__all__ = ["main"]

LOGGER = logging.getLogger(__name__)


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
