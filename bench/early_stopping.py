"""No early stopping, ``--scheduler asha`` and ``--scheduler moasha`` on the same small real sweep, side by side.

Run: ``.venv/bin/python bench/early_stopping.py [--space modes] [--sampler grid] [--epochs 4] [--imgsz 64]
[--fraction 0.5] [--repeats 1]``

Each scheduler runs ``python -m search.run`` in a subprocess with its own Ray storage and MLflow store
(the same space, sampler, seeds and budget; the default is the ``modes`` grid: the base with 2 seeds and
its other 2 architectures, 4 epochs at 64 px on half of the built-in training split, from scratch so that
rungs see differences). Then it reads each sweep back from MLflow and prints, per scheduler: the sweep's
wall time, the trial-epochs spent (every trial run's last logged epoch), the trials stopped at a rung
and at which epoch, and the frontier it ended with (the architecture runs tagged ``pareto=true``).

How to read it. Fewer trial-epochs for the same frontier is compute saved; a frontier that lost a
member is what the saving cost. On so small a sweep it shows the mechanics, not which scheduler wins on
a real search: that needs many sweeps (or the replay of a finished one).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]


def sweep(args: argparse.Namespace, scheduler: str | None, tmp: Path) -> tuple[float, str, str]:
    """Run one sweep; its wall time, MLflow URI and name."""
    uri, name = f"sqlite:///{tmp / 'mlflow.db'}", f"early-{scheduler or 'none'}"
    cmd = [sys.executable, "-m", "search.run", "--space", args.space, "--sampler", args.sampler,
           "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", "8",
           "--fraction", str(args.fraction), "--pretrain", str(args.pretrain), "--repeats", str(args.repeats),
           "--storage-path", str(tmp / "ray"), "--tracking-uri", uri, "--name", name, "--address", "local",
           "--time-budget", "0", *(["--scheduler", scheduler] if scheduler else [])]  # fmt: skip
    start = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.time() - start, uri, name


def read(uri: str, name: str) -> dict:
    """Trial-epochs, stopped trials and the frontier of the sweep ``name``."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    runs = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=5000)
        if r.data.tags.get("sweep.name") == name
    ]
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    archs = [r for r in runs if r.data.tags.get("sweep.role") == "architecture"]
    epochs, stopped = 0, []
    for t in trials:
        history = client.get_metric_history(t.info.run_id, "train/giou_loss")
        last = max((m.step for m in history), default=0)
        epochs += last
        if t.data.tags.get("trial.status") == "stopped_early":
            stopped.append((t.data.tags.get("mlflow.runName", t.info.run_id), last))
    front = sorted(
        a.data.tags.get("mlflow.runName", a.info.run_id) for a in archs if a.data.tags.get("pareto") == "true"
    )
    return {"trials": len(trials), "epochs": epochs, "stopped": stopped, "front": front}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="modes")
    p.add_argument("--sampler", default="grid")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument(
        "--pretrain", type=int, default=0, help="the budget's warm start (default 0: from scratch)"
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)
    rows = []
    for scheduler in (None, "asha", "moasha"):
        with tempfile.TemporaryDirectory(prefix="early-stopping-") as d:
            wall, uri, name = sweep(args, scheduler, Path(d))
            rows.append((scheduler or "none", wall, read(uri, name)))
            print(f"{scheduler or 'none'}: {wall:.0f} s", flush=True)
    print(
        f"\n{args.space}, sampler {args.sampler}, {args.epochs} epochs at {args.imgsz} px, fraction {args.fraction}"
    )
    print(f"{'scheduler':10} {'wall s':>7} {'trials':>6} {'trial-epochs':>12}  stopped (epoch)  |  frontier")
    for scheduler, wall, r in rows:
        stopped = ", ".join(f"{n} ({e})" for n, e in r["stopped"]) or "-"
        print(
            f"{scheduler:10} {wall:7.0f} {r['trials']:6d} {r['epochs']:12d}  {stopped}  |  {', '.join(r['front'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
