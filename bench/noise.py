"""How noisy is a trial's result? The base trained with several seeds, exactly as a sweep trains it.

Run: ``.venv/bin/python bench/noise.py [--space placements] [--budget cpu] [--seeds 10]
[--first-seed 0] [--jobs 2] [--pretrain-seeds 1] [--set JSON] [--epochs N] [--target 0.02] [--out DIR]``

It trains the space's unmodified base (every site ``keep``) once per seed (``--first-seed`` to
``--first-seed + --seeds - 1``; a second run with ``--first-seed 10`` adds ten new seeds to a first
run's) with ``search.training.run_trial``, as a sweep trial does: the budget's proxy model and training
arguments, the built-in shapes dataset, the budget's fair warm start (``pretrain``: the base pretrained
once and cached, every site's layers fresh; ``--set '{"pretrain": 0}'`` measures the proxy from
scratch), ``best.pt`` chosen on its val split and scored on its held-out
test split (COCO's protocol and Ultralytics'), latency measured anew and interleaved with a second copy of the
base (so ``latency_ratio`` is a ratio of two identical models: its spread is pure measurement noise).
``--jobs 2`` trains two seeds at once, one thread each, which is also the load a sweep's trials see.

It prints one row per seed, then for each figure the mean, the seed standard deviation with its own
95 % interval, the 95 % interval of the mean and the relative spread (std / mean), and a verdict:
whether the seed std of mAP50-95 (test, COCO: what a sweep reports) is at most ``--target`` (0.02),
given only for 5 seeds or more.
The default is 10 seeds because a std from 5 is rough: its interval runs from 0.6x to 2.9x the
figure, and on this proxy the first five seeds read 0.019-0.037 for three budgets whose next five
read 0.068-0.091.

A machine's checkpoint is not another's: float sums differ with the CPU and the thread count, and
training amplifies that, so the fine-tuned seeds of two machines differ in mean and spread.
``--pretrain-seeds N`` pretrains the base N times (seeds 1000, 1001, ...) and spreads the seeds over the
checkpoints, so the spread also holds the checkpoint's own variation: the figure a fresh clone on
another machine of this kind can expect, where ``--pretrain-seeds 1`` is this machine's checkpoint only.

How to read it. The seed std is the noise floor a sweep measures for itself from the base's seeds:
two architectures whose mAP differs by less than about ``2.8 x std / sqrt(seeds)`` (the 95 %
interval of a difference of two means) cannot be told apart at that many seeds. The val column is
the split ``best.pt`` was chosen on (optimistic); test is the held-out figure. For latency, compare
the relative spread of the absolute median with that of the ratio: the ratio cancels the machine's
load, which moves both models alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIGURES = (
    ("map50_95", "mAP50-95 test (COCO)"),
    ("map50_95_ultralytics", "mAP50-95 test (Ultralytics)"),
    ("map50_95_val", "mAP50-95 val (Ultralytics)"),
    ("map50", "mAP50 test (COCO)"),
    ("latency_ms", "latency ms (absolute median)"),
    ("latency_ratio", "latency ratio to the base"),
    ("train_s", "training s"),
)


def train_seed(space_name: str, budget: dict, seed: int, out: str) -> dict:
    """One seed of the base, as a sweep trial trains it (in a worker process, one thread)."""
    import torch

    from search import ultra

    ultra.offline()
    torch.set_num_threads(1)
    from search.recipe import trial_spec
    from search.space import Budget, load_space
    from search.training import run_trial

    space = load_space(space_name)
    b = Budget(**budget)
    spec = trial_spec(  # the sweep's recipe for the base
        space, space.base_point, b, out=Path(out) / f"seed{seed}", seed=seed, device="cpu", fresh_cost=True, threads=1,
    )  # fmt: skip
    result = run_trial(spec)
    return {"seed": seed, "checkpoint": Path(b.weights or "").parent.name[:8] if b.weights else "-",
            **{k: result.get(k) for k, _ in FIGURES}}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="placements")
    p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="seeds trained at once (one thread each)")
    p.add_argument(
        "--pretrain-seeds",
        type=int,
        default=1,
        help="pretrain the base this many times (seeds 1000, 1001, ...) and spread the seeds over the checkpoints "
        "(seed i fine-tunes checkpoint i mod N): the spread then holds what differs between machines too, whose "
        "checkpoints differ (default 1: the checkpoint a sweep here uses)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--set", default="{}", help="budget keys to change for this run, as JSON")
    p.add_argument("--target", type=float, default=0.02)
    p.add_argument("--out", help="keep the trials here (default: a temporary folder)")
    args = p.parse_args()

    from search import ultra

    ultra.offline()
    from search.pretrain import PRETRAIN_SEED, with_pretrain
    from search.space import load_space
    from search.stats import std_interval, std_verdict, summarize

    space = load_space(args.space)
    budget = dataclasses.replace(space.budgets[args.budget], **json.loads(args.set))
    if args.epochs:
        budget = dataclasses.replace(budget, epochs=args.epochs)
    print(f"space {space.name}, budget {budget}", flush=True)
    out = args.out or tempfile.mkdtemp(prefix="noise-")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        # once, before the seeds, as a sweep does; in a worker: a process forked after torch computed with
        # several threads can hang in the children's first parallel region
        budgets = [
            pool.submit(with_pretrain, space, budget, None, seed=PRETRAIN_SEED + k).result()
            for k in range(args.pretrain_seeds)
        ]  # one at a time: each pretraining trains on every CPU
        for k, b in enumerate(budgets):
            print(f"checkpoint {k} (pretraining seed {PRETRAIN_SEED + k}): {b.weights}", flush=True)
        jobs = [
            pool.submit(train_seed, space.name, dataclasses.asdict(budgets[seed % len(budgets)]), seed, out)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        rows = [job.result() for job in jobs]
    wall = time.perf_counter() - started
    print(f"\n{args.seeds} seeds of the base in {wall / 60:.1f} min ({args.jobs} at once)\n")
    print("seed  checkpoint  " + "  ".join(f"{k:>20s}" for k, _ in FIGURES))
    for r in rows:
        print(f"{r['seed']:>4d}  {r['checkpoint']:>10s}  " + "  ".join(f"{r[k]:>20.4f}" for k, _ in FIGURES))
    print(
        f"\n{'figure':32s} {'mean':>10s} {'seed std':>10s} {'std 95%':>18s} {'mean 95% ±':>11s} {'std/mean':>9s}"
    )
    stats, intervals = {}, {}
    for key, label in FIGURES:
        s = summarize(r[key] for r in rows)
        stats[key] = s
        intervals[key] = low, high = std_interval(s.std, s.n)
        interval = f"[{low:.4f}, {high:.4f}]"
        print(
            f"{label:32s} {s.mean:10.4f} {s.std:10.4f} {interval:>18s} {s.half:11.4f} {s.std / s.mean if s.mean else math.nan:9.1%}"
        )
    lat, ratio = stats["latency_ms"], stats["latency_ratio"]
    print(
        f"\nlatency: the absolute median moves by {lat.std / lat.mean:.1%} (std/mean) from seed to seed, the "
        f"ratio to the base timed interleaved by {ratio.std / ratio.mean:.1%}"
    )
    std, n = stats["map50_95"].std, stats["map50_95"].n
    low, high = intervals["map50_95"]
    verdict = std_verdict(std, n, args.target)
    print(
        f"{verdict}: seed std of mAP50-95 (test, COCO) {std:.4f} over {n} seeds (95 % interval {low:.4f} to "
        f"{high:.4f}) vs target <= {args.target}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
