"""Does a training's result depend on its CPU thread count? The base trained the same way with N threads.

Run: ``.venv/bin/python bench/threads.py [--space placements] [--budget cpu] [--epochs 1] [--threads 1 2 1]``

It trains the space's base exactly as the pretraining does (the budget's proxy, seed 1000, the built-in
data, from scratch) once per entry of ``--threads``, one after the other, and compares the weights each
run ends with against the first run's: the largest absolute difference of any tensor and how many
tensors are bit-identical. A thread count repeated (the default ``1 2 1``) shows whether a run is
reproducible at all at one count; the others show what the count alone changes. Float sums are
associative only on paper: a different split of a matrix product over threads adds in another order, and
training amplifies the last-bit differences, which is why a checkpoint pretrained on one machine is not
another's (see bench/noise.py ``--pretrain-seeds``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="placements")
    p.add_argument("--budget", default="cpu")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 1])
    args = p.parse_args()

    from search import ultra

    ultra.offline()
    import torch

    from search.checkpoint import load, tensors
    from search.pretrain import PRETRAIN_SEED
    from search.recipe import trial_spec
    from search.space import load_space
    from search.training import run_trial

    space = load_space(args.space)
    budget = dataclasses.replace(space.budgets[args.budget], epochs=args.epochs, pretrain=None, weights=None)
    out = Path(tempfile.mkdtemp(prefix="threads-"))
    runs = []
    for k, threads in enumerate(args.threads):
        spec = trial_spec(  # as the pretraining trains the base
            space, space.base_point, budget, out=out / f"run{k}", seed=PRETRAIN_SEED, threads=threads,
            deployed=False, timed_against_base=False,
        )  # fmt: skip
        result = run_trial(spec)
        runs.append((threads, tensors(load(result["last"])), result))
        print(
            f"run {k}: {threads} thread(s), {result['train_s']:.0f} s, mAP50-95 {result['map50_95']:.4f}",
            flush=True,
        )
    first_threads, first, _ = runs[0]
    print(f"\nagainst run 0 ({first_threads} thread(s)), after {args.epochs} epoch(s):")
    for k, (threads, weights, result) in enumerate(runs[1:], 1):
        diffs = [(first[n] - w).abs().max().item() for n, w in weights.items() if w.is_floating_point()]
        same = sum(torch.equal(first[n], w) for n, w in weights.items())
        print(
            f"run {k} ({threads} thread(s)): largest tensor difference {max(diffs):.3g}, "
            f"{same} of {len(weights)} tensors bit-identical, mAP50-95 {result['map50_95']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
