"""Where a short sweep's wall time goes: training and validation versus everything else.

Run: ``.venv/bin/python bench/sweep_overhead.py [--first | --quick] [--space modes] [--sampler grid]
[--samples N] [--epochs 2] [--imgsz 64] [--batch 8] [--fraction 0.5] [--cached-cost] [--keep]``

It runs a real sweep as a user does, ``python -m search.run`` in a subprocess (default: the
``modes`` space on the grid sampler, its 3 points, 2 epochs at 64 px, batch 8, half the built-in
training split; ``--quick``: 1 epoch on a quarter), with its own temporary Ray storage path and
SQLite MLflow store, and ``--address local`` (a Ray instance of its own: without it Ray joins the
cluster another process last started with ``ray start``, if any), and times the whole command.
Then it reads the sweep back from MLflow:

- per trial, from its child run: the run's wall time (``end_time - start_time``: the run is created
  in the Ray worker once the trial has loaded its space and dataset, and ended after its artifacts are
  logged), the metric ``train_s`` (the wall time of Ultralytics' ``train()``: dataset and optimizer
  set-up, the epochs with their per-epoch validation, and the final validation of ``best.pt``; the
  per-epoch report, i.e. the MLflow metrics and Ray's checkpoint of ``last.pt``, also runs inside it,
  from Ultralytics' callbacks), and the ``trial.json`` artifact (``total_s``: the whole
  ``run_trial``; ``latency_window``: the span the latency measurement held the machine lock);
- for the sweep, from the parent run: when it was created (after imports and input checks) and
  ended (after the frontier).

How to read it. The per-trial table splits each child run's wall time into ``train+val`` (``train_s``)
and ``other``: ``build+cost`` (``total_s - train_s``: dataset check, model build, deploy form,
params, GFLOPs, latency), of which ``latency`` is the time under the latency lock (``cached`` when the
architecture's cost came from the cache), and ``tracking`` (``run wall - total_s``: MLflow look-ups,
final metrics, artifacts, closing the run). ``share`` is train+val over the run's wall time.

The totals split the sweep's wall time (the command, from launch to exit) into consecutive parts
that add up to it when trials run one at a time, as they do on CPU: start-up (interpreter, imports,
input checks, the parent run), Ray start and the first trial's start-up (``ray.init``, the worker
process, its imports), the gaps between trial runs (Ray ending one trial and starting the next
worker), the trial runs (split as above), the frontier (``pareto.csv``, plots, hypervolume, closing
runs) and exit (Ray shutdown). The bottom line, ``train+val share``, is the part of the sweep that
trains and validates models; the rest is overhead a longer budget (more epochs, larger images)
dilutes, since it hardly grows with the budget.

``--first`` runs the README's first command itself (``search.run --space placements`` on its defaults:
the pretraining of the base, the default time budget) with an empty cache and nothing linked in, as on
a fresh machine, and adds the packing: the trials' wall time times their threads over the machine's
cores times the sweep's wall time (with the pretraining, which trains on every core, counted too; the
goal is 85 % or more), and the breakdown into pretraining, trials (with the slot time left empty, and
how long the last trial ran alone) and finalize. The packing lines are printed for every run.

Latency cache: the sweep normally reuses a cached cost per architecture, device and image size. By
default this script gives the sweep an empty cache (``RTDETR_SEARCH_CACHE`` pointed at the temporary
folder, the built-in dataset linked in from the usual cache so it is not generated again,
Ultralytics' settings folder unchanged), so every trial measures its cost as a new architecture
does; ``--cached-cost`` uses the usual cache instead. Timings depend on the machine's load (printed
before and after). Nothing is written to the repository; the temporary folder is deleted afterwards
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import load_average  # noqa: E402  (bench/ is the script's folder)

# Imported before anything that imports ultralytics: it sets YOLO_OFFLINE, YOLO_CONFIG_DIR etc.
import search.ultra

EXPERIMENT = "rtdetr-ghost-search"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch on a quarter of the data (~1.5 min)")
    p.add_argument(
        "--first",
        action="store_true",
        help="the README's first command as a new user runs it: `search.run --space placements` on its "
        "defaults (pretraining, time budget) with an empty cache, nothing linked in (about 15 min)",
    )
    p.add_argument("--space", default="modes", help="space name or yaml path (default: modes)")
    p.add_argument("--sampler", default="grid", help="sweep sampler (default: grid)")
    p.add_argument("--samples", type=int, help="trials (default: the sweep's; grid: every point)")
    p.add_argument("--epochs", type=int, help="default 2 (quick 1)")
    p.add_argument("--imgsz", type=int, default=64, help="default 64")
    p.add_argument("--batch", type=int, default=8, help="default 8")
    p.add_argument("--fraction", type=float, help="default 0.5 (quick 0.25)")
    p.add_argument("--cached-cost", action="store_true", help="let the sweep use the usual latency cache")
    p.add_argument("--timeout", type=float, default=900, help="give up on the sweep after this many s")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (sweep, MLflow store)")
    return p


def run_sweep(args: argparse.Namespace, tmp: Path, name: str, uri: str) -> tuple[float, float, Path]:
    """Run ``python -m search.run`` to the end; return its launch and exit times and its log."""
    env = dict(os.environ)  # YOLO_CONFIG_DIR is set by search.ultra: Ultralytics' settings unchanged
    if not args.cached_cost:
        cache = tmp / "cache"
        cache.mkdir()
        env["RTDETR_SEARCH_CACHE"] = str(cache)
        if not args.first and (search.ultra.cache_dir() / "data").is_dir():  # generated once per machine
            (cache / "data").symlink_to(search.ultra.cache_dir() / "data", target_is_directory=True)
    where = ["--name", name, "--storage-path", str(tmp / "ray"), "--tracking-uri", uri, "--address", "local"]
    if args.first:  # exactly what a user types, in a private store
        cmd = [sys.executable, "-m", "search.run", "--space", "placements", *where]
        print("$ " + " ".join(cmd[1:]), flush=True)
        return _timed(cmd, tmp, env, args.timeout)
    cmd = [
        sys.executable,
        "-m",
        "search.run",
        "--space",
        args.space,
        "--sampler",
        args.sampler,
        *(["--samples", str(args.samples)] if args.samples else []),
        "--epochs",
        str(args.epochs),
        "--imgsz",
        str(args.imgsz),
        "--batch",
        str(args.batch),
        "--fraction",
        str(args.fraction),
        "--pretrain",  # the trials' own overhead: no pretraining of the base before them
        "0",
        "--name",
        name,
        "--storage-path",
        str(tmp / "ray"),
        "--tracking-uri",
        uri,
        "--address",
        "local",  # a private Ray instance, never a cluster another process started (ray start)
    ]
    print("$ " + " ".join(cmd[1:]), flush=True)
    return _timed(cmd, tmp, env, args.timeout)


def _timed(cmd: list[str], tmp: Path, env: dict, timeout: float) -> tuple[float, float, Path]:
    log = tmp / "sweep.log"
    with open(log, "w") as fh:
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
        t1 = time.time()
    if proc.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"the sweep exited with {proc.returncode} after {t1 - t0:.0f} s (log above)")
    return t0, t1, log


def read_trials(uri: str, name: str, tmp: Path) -> tuple[object, list[dict]]:
    """The sweep's parent run and one dict per child run, oldest first."""
    from search.tracking import SweepTracker

    tracker = SweepTracker(uri, EXPERIMENT)
    runs = tracker.runs_for_sweep(name)
    parent = next(r for r in runs if r.data.tags.get("sweep.role") == "parent")
    trials = []
    for run in sorted(tracker.trials(parent.info.run_id), key=lambda r: r.info.start_time):
        info, tags, metrics = run.info, run.data.tags, run.data.metrics
        record: dict = {}
        try:
            path = tracker.client.download_artifacts(
                info.run_id, "trial.json", str(tmp / "read" / info.run_id)
            )
            record = json.loads(Path(path).read_text())
        except Exception:  # a failed trial logs no trial.json
            pass
        params = run.data.params
        sites = [k for k in params if k not in ("arch_hash", "budget")]
        choices = " ".join(f"{k}={params[k]}" for k in sites if params[k] != "keep") or "(base)"
        wall = ((info.end_time or info.start_time) - info.start_time) / 1000
        train = float(metrics.get("train_s", record.get("train_s", 0.0)))
        total = float(record.get("total_s", record.get("cost_s", train)))
        window = record.get("latency_window")
        latency = None if record.get("cost_cached", True) or not window else window[1] - window[0]
        trials.append(
            {
                "trial": tags.get("trial.id", info.run_id[:8]),
                "choices": choices,
                "status": tags.get("trial.status", info.status.lower()),
                "start": info.start_time / 1000,
                "end": (info.end_time or info.start_time) / 1000,
                "wall": wall,
                "train": train,
                "cost": total - train,
                "latency": latency,
                "tracking": wall - total,
                "threads": int(tags.get("threads", "1")),
            }
        )
    return parent, trials


# ----------------------------------------------------------------------------------- report
TRIAL_HEADER = (
    f"{'trial':<10} {'choices':<18} {'status':<10} {'run wall s':>10} {'train+val s':>11} "
    f"{'other s':>8} {'share':>6}   {'build+cost s':>12} {'latency s':>9} {'tracking s':>10}"
)


def trial_row(t: dict) -> str:
    latency = "cached" if t["latency"] is None else f"{t['latency']:.1f}"
    share = t["train"] / t["wall"] if t["wall"] > 0 else float("nan")
    return (
        f"{t['trial']:<10} {t['choices'][:18]:<18} {t['status'][:10]:<10} {t['wall']:>10.1f} "
        f"{t['train']:>11.1f} {t['wall'] - t['train']:>8.1f} {share:>6.1%}   {t['cost']:>12.1f} "
        f"{latency:>9} {t['tracking']:>10.1f}"
    )


def timeline(t0: float, t1: float, parent, trials: list[dict]) -> list[tuple[str, float]]:
    """The sweep's wall time as consecutive parts (trial runs by their union, so overlaps count once)."""
    p_start = parent.info.start_time / 1000
    p_end = (parent.info.end_time or parent.info.start_time) / 1000
    gaps, covered = 0.0, None
    for t in trials:  # sorted by start
        if covered is not None and t["start"] > covered:
            gaps += t["start"] - covered
        covered = t["end"] if covered is None else max(covered, t["end"])
    first = trials[0]["start"] if trials else p_end
    last = covered if covered is not None else p_end
    train = sum(t["train"] for t in trials)
    in_runs = (last - first) - gaps
    return [
        ("start-up: interpreter, imports, input checks, parent run", p_start - t0),
        ("Ray start + first trial's worker start-up", first - p_start),
        ("between trial runs: Ray ends one, starts the next worker", gaps),
        ("trial runs: build + cost measurement", sum(t["cost"] for t in trials)),
        (
            "trial runs: tracking (MLflow look-ups, metrics, artifacts)",
            in_runs - train - sum(t["cost"] for t in trials),
        ),
        ("trial runs: TRAINING + VALIDATION (train_s)", train),
        ("frontier: pareto.csv, plots, hypervolume, closing runs", p_end - last),
        ("exit: Ray shutdown, interpreter exit", t1 - p_end),
    ]


def pretrain_seconds(tmp: Path) -> float:
    """The pretraining's wall time, from the pretrain.json it left in the sweep's (empty) cache; 0 if none."""
    records = list((tmp / "cache" / "pretrain").glob("*/pretrain.json"))
    return sum(float(json.loads(r.read_text()).get("total_s", 0.0)) for r in records)


def packing(wall: float, trials: list[dict], tmp: Path, parent) -> list[str]:
    """How busy the machine's cores were: every core busy, none oversubscribed, is the goal."""
    cores = search.ultra.available_cpus()
    busy = sum(t["wall"] * t["threads"] for t in trials)
    pretrain = pretrain_seconds(tmp)
    first = min((t["start"] for t in trials), default=0.0)
    last = max((t["end"] for t in trials), default=0.0)
    slots = max(1, cores // max(1, min((t["threads"] for t in trials), default=1)))
    idle = slots * (last - first) - sum(t["wall"] for t in trials)  # trial slots left empty (the tail)
    ends = sorted(t["end"] for t in trials)
    tail = ends[-1] - ends[-2] if len(ends) > 1 else 0.0
    return [
        f"packing: the trials' wall x threads over cores x sweep wall = {busy:.0f} / ({cores} x {wall:.0f}) "
        f"= {busy / (cores * wall):.1%}; with the pretraining on every core "
        f"{(busy + pretrain * cores) / (cores * wall):.1%} (goal >= 85 %)",
        f"breakdown: pretraining {pretrain:.0f} s, trials {last - first:.0f} s ({len(trials)} trials, "
        f"{slots} at once, {idle:.0f} slot-s left empty; the last trial alone for {tail:.0f} s), "
        f"finalize {((parent.info.end_time or 0) / 1000 - last) if trials else 0:.0f} s",
    ]


def log_tail(log: Path, n: int = 4) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if ln.startswith("[sweep]")][-n:]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reading trial.json back
    if args.first:
        args.timeout = max(args.timeout, 3600)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.fraction = args.fraction or (0.25 if args.quick else 0.5)
    tmp = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    name = f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    print(f"load before: {load_average()}")
    print(
        f"latency cache: {'the usual one (' + str(search.ultra.cache_dir()) + ')' if args.cached_cost else 'empty'}"
        f"   temporary folder: {tmp}",
        flush=True,
    )
    try:
        t0, t1, _ = run_sweep(args, tmp, name, uri)
        parent, trials = read_trials(uri, name, tmp)
        wall = t1 - t0
        print(f"load after:  {load_average()}\n")

        print(f"per trial ({len(trials)} child runs, in start order)")
        print(TRIAL_HEADER)
        print("-" * len(TRIAL_HEADER))
        for t in trials:
            print(trial_row(t))
        run_wall = sum(t["wall"] for t in trials)
        run_train = sum(t["train"] for t in trials)
        print("-" * len(TRIAL_HEADER))
        print(
            trial_row(
                {
                    "trial": "sum",
                    "choices": "",
                    "status": "",
                    "wall": run_wall,
                    "train": run_train,
                    "cost": sum(t["cost"] for t in trials),
                    "latency": sum(t["latency"] or 0.0 for t in trials),
                    "tracking": sum(t["tracking"] for t in trials),
                }
            )
        )
        overlap = any(b["start"] < a["end"] for a, b in zip(trials, trials[1:], strict=False))
        if overlap:
            print("note: trial runs overlapped (concurrent trials): the parts below count the overlap once")

        print(f"\nthe sweep's wall time, {wall:.1f} s, in consecutive parts")
        print(f"{'part':<62} {'s':>7} {'share':>7}")
        print("-" * 78)
        parts = timeline(t0, t1, parent, trials)
        for label, seconds in parts:
            print(f"{label:<62} {seconds:>7.1f} {seconds / wall:>7.1%}")
        print("-" * 78)
        print(
            f"{'sum of the parts':<62} {sum(s for _, s in parts):>7.1f} {sum(s for _, s in parts) / wall:>7.1%}"
        )
        print()
        print(f"sweep wall            {wall:7.1f} s")
        print(f"sum train+val         {run_train:7.1f} s")
        print(f"everything else       {wall - run_train:7.1f} s")
        print(f"train+val share       {run_train / wall:7.1%}")
        print()
        for line in packing(wall, trials, tmp, parent):
            print(line)
        print(f"\nthe sweep's last lines:\n{chr(10).join(log_tail(tmp / 'sweep.log'))}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
