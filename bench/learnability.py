"""Can a trial at a space's budget learn the built-in shapes dataset fast enough to rank architectures?

Run: ``.venv/bin/python bench/learnability.py [--space placements] [--params JSON] [--budget cpu]
[--epochs N] [--imgsz N] [--batch N] [--set JSON] [--train-args JSON] [--threshold 0.2]
[--time-limit 300] [--out DIR] [--keep]``

It trains one point of a space (default: the base, every site ``keep``) exactly as a sweep trial
does (``search.training.run_trial`` with the budget's epochs, imgsz, batch, fraction, lr0, patience,
workers and train arguments, the proxy model the budget's width/depth/decoder keys give, the built-in synthetic
shapes dataset, seed 0), and prints after training:

- a table, one row per epoch: validation mAP50 and mAP50-95 on the built-in val split, the summed
  training loss of that epoch (GIoU + cls + L1 of RT-DETR's criterion) and the cumulative training
  wall time at the end of that epoch (its validation included);
- the final validation figures (Ultralytics' last validation of ``best.pt``), the number of
  epochs run, the training time and the whole trial's time (cost measurement and final validation
  included);
- the verdict: whether mAP50 >= ``--threshold`` (0.2) was reached within ``--time-limit`` (300) s
  of training, and the epoch and time it was first reached.

How to read it. The budget is fit for a search when the base reaches the threshold well inside the
time limit (the margin is what absorbs a slower or busier machine and a weaker candidate), the
mAP50 column climbs well clear of zero and stays there rather than flickering near it (a signal,
not noise), and the training loss falls steadily. ``PASS`` alone is not enough: compare the final
figures of the points you care about; a ranking needs gaps larger than the epoch-to-epoch jitter of
the last few rows and than the spread between seeds (``--seed``). The cost measurement in the whole
trial's time is cached per architecture, so it is short on a rerun. Training time is measured from the start of Ultralytics' training routine (dataset
and optimizer set-up included), so it is comparable to the time a sweep trial spends training.
Wall times depend on the machine's load: the script prints the load average before and after.

Overrides: ``--epochs/--imgsz/--batch`` and ``--set '{"width": 0.5, ...}'`` (any budget key) change
the budget for this run only; ``--train-args '{"mosaic": 0.5}'`` adds or overrides Ultralytics
train() arguments on top of the budget's own ``train:`` mapping, to test whether one matters. The
shipped cpu budget carries ``train: {nbs: 4, optimizer: AdamW, warmup_epochs: 0, warmup_bias_lr: 0.0,
mosaic: 0.0}``: under Ultralytics' defaults (nbs=64, one optimizer step per 64 images; optimizer 'auto', which
ignores lr0) the proxy did not learn in its epochs (mAP50 0.004 after 12 epochs).
Output goes to a temporary folder that is deleted afterwards unless ``--out`` or ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import load_average  # noqa: E402  (bench/ is the script's folder)

from search import ultra  # noqa: E402

ultra.offline()  # before anything imports ultralytics


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="placements", help="space name or yaml path (default: placements)")
    p.add_argument("--params", default="{}", help="the point as JSON {site: choice} (default: the base)")
    p.add_argument("--budget", default="cpu", help="the space's budget (default: cpu)")
    p.add_argument("--epochs", type=int, help="override the budget's epochs")
    p.add_argument("--imgsz", type=int, help="override the budget's imgsz")
    p.add_argument("--batch", type=int, help="override the budget's batch")
    p.add_argument("--set", default="{}", help="override any budget key, as JSON (e.g. '{\"width\": 0.5}')")
    p.add_argument(
        "--train-args", default="{}", help="extra Ultralytics train() args as JSON (a sweep passes none)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="Ultralytics device (default: cpu)")
    p.add_argument("--threshold", type=float, default=0.2, help="mAP50 to reach (default: 0.2)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds of training (default: 300)")
    p.add_argument("--out", help="output folder (default: a temporary folder, deleted afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ultralytics.utils.callbacks.base import default_callbacks

    from search.materialize import materialize
    from search.recipe import resolve_budget, trial_spec
    from search.space import load_space, validate_params
    from search.training import run_trial

    space = load_space(args.space)
    if args.budget not in space.budgets:
        raise SystemExit(f"space {space.name} has budgets {', '.join(space.budgets)}, not {args.budget!r}")
    overrides = json.loads(args.set)
    overrides.update({k: getattr(args, k) for k in ("epochs", "imgsz", "batch") if getattr(args, k)})
    budget = resolve_budget(space, args.budget, overrides)
    params = validate_params(space, json.loads(args.params))
    h = materialize(space, params, budget=budget)[1]

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="learnability-"))
    spec = trial_spec(  # the sweep's recipe for this point
        space, params, budget, out=out, seed=args.seed, device=args.device, train_args=json.loads(args.train_args)
    )  # fmt: skip
    changed = {s.name: params[s.name] for s in space.sites if params[s.name] != s.default}
    print(f"space {space.name}  point {json.dumps(changed) if changed else 'base (all keep)'}  arch {h}")
    print(f"budget {json.dumps({k: v for k, v in dataclasses.asdict(budget).items() if v is not None})}")
    if spec.train_args:
        print(f"Ultralytics train args: {json.dumps(spec.train_args)}")
    print(f"load before: {load_average()}")
    print(f"output {out}", flush=True)

    # Ultralytics copies default_callbacks into every model it builds: this marks when training starts.
    clock: dict[str, float] = {}

    def _started(trainer) -> None:
        clock.setdefault("t0", time.perf_counter())

    default_callbacks["on_pretrain_routine_start"].append(_started)
    rows: list[dict] = []

    def report(metrics: dict, last: Path | None) -> None:
        t = time.perf_counter() - clock.get("t0", started)
        loss = sum(v for k, v in metrics.items() if k.startswith("train/") and k.endswith("loss"))
        rows.append(
            {
                "epoch": metrics["epoch"],
                "map50": metrics["map50"],
                "map": metrics["map50_95"],
                "loss": loss,
                "t": t,
            }
        )
        print(
            f"  epoch {metrics['epoch']:3d}  mAP50 {metrics['map50']:.3f}  loss {loss:.3f}  {t:6.1f} s",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    try:
        result = run_trial(spec, report=report)
    finally:
        default_callbacks["on_pretrain_routine_start"].remove(_started)
    total = time.perf_counter() - started

    print()
    print(f"{'epoch':>5}  {'mAP50':>6}  {'mAP50-95':>8}  {'train loss':>10}  {'time s':>7}")
    for r in rows:
        print(f"{r['epoch']:5d}  {r['map50']:6.3f}  {r['map']:8.3f}  {r['loss']:10.3f}  {r['t']:7.1f}")
    print()
    print(
        f"params {result['n_params'] / 1e6:.2f} M   GFLOPs@640 {result['gflops']:.2f}   "
        f"latency {result['latency_ms']:.1f} ms @ {result['latency_imgsz']}"
    )
    print(
        f"best.pt on the {result['scored_split']} split ({result['map_evaluator']} protocol): mAP50 {result['map50']:.3f}  "
        f"mAP50-95 {result['map50_95']:.3f}; on val (Ultralytics): mAP50-95 {result['map50_95_val']:.3f}"
    )
    print(
        f"epochs run {result['epochs_done']}/{spec.epochs}   training {result['train_s']:.1f} s   "
        f"whole trial {total:.1f} s"
    )
    first = next((r for r in rows if math.isfinite(r["map50"]) and r["map50"] >= args.threshold), None)
    if first is not None and first["t"] <= args.time_limit:
        print(
            f"PASS: mAP50 >= {args.threshold:g} first at epoch {first['epoch']}, {first['t']:.1f} s "
            f"of training (limit {args.time_limit:g} s)"
        )
        ok = True
    elif first is not None:
        print(
            f"FAIL: mAP50 >= {args.threshold:g} first at epoch {first['epoch']}, {first['t']:.1f} s "
            f"of training, over the {args.time_limit:g} s limit"
        )
        ok = False
    else:
        best = max((r["map50"] for r in rows), default=float("nan"))
        print(f"FAIL: mAP50 never reached {args.threshold:g} (best epoch mAP50 {best:.3f})")
        ok = False
    import torch

    print(f"torch threads in training: {torch.get_num_threads()} (Ultralytics sets min(8, CPUs - 1) on CPU)")
    print(f"load after: {load_average()}")
    if not args.out and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
