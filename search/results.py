"""A sweep's results, read from MLflow without Ray or Optuna: architecture rows, the noise floor, the base timed
alone, the end of a sweep (finalize: frontier, report, CSV), and the text of the frontier and of the last
lines."""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
from pathlib import Path

from . import records, ultra
from .config import SweepConfig
from .frontier import (
    comparable_groups,
    format_table,
    frontier_table,
    hypervolume_curve,
)
from .plan import reference_hashes
from .plots import plot_frontier
from .recipe import base_model_yaml
from .records import FAILED, INFEASIBLE, LOST, OK, STOPPED, TRIAL_METRICS, Tag
from .space import Budget, Space
from .stats import EXACT_METRICS, interval_text
from .tracking import SweepTracker

__all__ = [
    "architecture_metrics",
    "update_architecture",
    "finalize",
    "frontier_text",
    "mlflow_links",
    "noise_of",
    "outcome_lines",
    "seed_rows",
    "time_base_alone",
    "architecture_table",
]

LOGGER = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- frontier
def seed_rows(tracker: SweepTracker, parent_id: str, space: Space) -> list[dict]:
    """A sweep's trained seeds, one row each, in the order they ended (reused results excluded)."""
    return records.seed_rows_of(tracker.trials(parent_id), [s.name for s in space.sites])


def architecture_table(tracker: SweepTracker, parent_id: str, space: Space) -> list[dict]:
    """A sweep's architectures with at least one trained seed, one row each (means over the seeds;
    see :func:`search.records.architecture_rows`), in the order they first finished."""
    rows = records.architecture_rows(seed_rows(tracker, parent_id, space))
    marks = {a.info.run_id: a.data.tags.get(Tag.REFERENCE, "") for a in tracker.architectures(parent_id)}
    return [
        {**r, "run_id": r["arch_run_id"] or r["run_id"], "label": marks.get(r["arch_run_id"]) or r["label"]}
        for r in rows
    ]


def noise_of(rows: list[dict], objectives) -> dict[str, tuple[float, int]]:
    """The sweep's noise floor for its objectives and mAPs (see :func:`search.stats.noise_floor`)."""
    from .stats import noise_floor

    metrics = [o.metric for o in objectives] + ["map50_95", "map50", "latency_ms", "latency_ratio"]
    return noise_floor(rows, dict.fromkeys(metrics))


def time_base_alone(
    tracker: SweepTracker, parent_id: str, space: Space, *, budget: Budget, nc: int, config: SweepConfig
) -> dict | None:
    """The base's latency timed alone on this machine's CPU, with the threads a trial has, before any trial
    starts (logged on the sweep's run as ``latency_base_*``; a resumed sweep reads it back). None when the
    trials time on GPUs (each times on its own, training held off meanwhile) or the space has no base."""
    import torch
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .cost import base_alone, deploy_form

    base = base_model_yaml(space, budget, nc)
    if base is None or config.gpus_per_trial:
        return None
    recorded = tracker.run(parent_id).data
    if "latency_base_ms" in recorded.metrics and "latency_base_device" in recorded.tags:
        m = recorded.metrics
        return {"latency_ms": m["latency_base_ms"], "latency_p90_ms": m["latency_base_p90_ms"],
                "latency_iqr_ms": m["latency_base_iqr_ms"], "latency_device": recorded.tags[Tag.LATENCY_BASE_DEVICE]}  # fmt: skip
    threads = torch.get_num_threads()
    try:
        ultra.use_threads(max(1, int(config.cpus_per_trial)))  # the device key names the trials' threads
        model = deploy_form(RTDETRDetectionModel(copy.deepcopy(base), verbose=False))
        timed = base_alone(model, budget.imgsz, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    tracker.log_metrics(parent_id, {f"latency_base_{k[8:]}": timed[k] for k in
                                    ("latency_ms", "latency_p90_ms", "latency_iqr_ms")})  # fmt: skip
    tracker.set_tags(parent_id, {Tag.LATENCY_BASE_DEVICE: timed["latency_device"]})
    return timed


def finalize(
    tracker: SweepTracker,
    parent_id: str,
    space: Space,
    *,
    budget: Budget,
    nc: int,
    out_dir: Path,
) -> tuple[list[dict], dict]:
    """End every architecture run with its mean and spread; tag the noise-aware frontier; attach its
    table, plots and the sweep report to the parent; log the hypervolume and the noise floor."""
    from .report import BASE_TEXT, sweep_report, write_report

    objectives = list(space.objectives)
    for run in tracker.architectures(parent_id):  # the sweep is over: every architecture ends
        update_architecture(tracker, run.info.run_id, space)
    references = reference_hashes(space, budget, nc)  # the points the space names, marked as such
    rows = [
        {**r, "label": references.get(r["arch_hash"], r["label"])}
        for r in architecture_table(tracker, parent_id, space)
    ]
    noise = noise_of(rows, space.objectives)
    front = frontier_table(rows, objectives, noise)
    on_front = {r["arch_hash"] for r in front}
    for run in [*tracker.architectures(parent_id), *tracker.trials(parent_id)]:
        if run.data.tags.get(Tag.STATUS) == OK:
            tracker.set_tags(
                run.info.run_id, {Tag.PARETO: str(run.data.tags.get(Tag.ARCH) in on_front).lower()}
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [o.metric for o in objectives]
    columns = ["trial_id", "arch_hash", "label", "n_seeds", *metrics, *(f"{m}_ci95" for m in metrics), "n_params",
               "latency_ratio"]  # fmt: skip
    with open(out_dir / "pareto.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, "params", "run_id"], extrasaction="ignore")
        writer.writeheader()
        for r in front:
            writer.writerow({**r, "params": " ".join(f"{k}={v}" for k, v in r["params"].items())})
    artifacts = [out_dir / "pareto.csv"]
    if rows:
        plot_frontier(
            rows,
            objectives,
            out_dir / "frontier.png",
            path_html=out_dir / "frontier.html",
            highlight={"base": BASE_TEXT, **{r.name: r.caption for r in space.references}},
            title=f"{space.name}: {len(rows)} architectures, {len(front)} on the frontier",
            noise=noise,
        )
        artifacts += [out_dir / "frontier.png", out_dir / "frontier.html"]
    curve = None
    if rows:
        try:  # once per sweep end: logged here, shown in the report
            curve = hypervolume_curve(rows, objectives)
        except ValueError as exc:
            LOGGER.warning("no hypervolume for sweep run %s: %s", parent_id, exc)
    if curve is not None:
        _, values, counted = curve
        if len(comparable_groups(rows, objectives)) > 1:
            tracker.set_tags(parent_id, {Tag.HYPERVOLUME_DEVICE: counted[0].get("latency_device", "")})
        logged = tracker.metric_steps(parent_id, "hypervolume")
        for i, value in enumerate(values, 1):
            if i not in logged:  # a resumed sweep that already logged some steps does not log them twice
                tracker.log_metrics(parent_id, {"hypervolume": value}, step=i)
    # every measured noise, zero included (seeds that agree exactly); exact metrics (no degrees of freedom) have none
    tracker.log_metrics(parent_id, {f"noise/{m}_std": std for m, (std, df) in noise.items() if df})
    report = sweep_report(space, budget, rows, front=front, hypervolumes=curve, noise=noise)
    artifacts.append(write_report(out_dir / "report.html", report))
    for path in artifacts:
        tracker.log_artifact(parent_id, str(path))
    tracker.set_tags(parent_id, {Tag.FRONTIER_SIZE: str(len(front)), Tag.TRIALS_FINISHED: str(len(rows))})
    return front, noise


def _interval(row: dict, metric: str) -> str | None:
    """A table cell for a mean's 95 % interval: its half-width, with the seed values on one degree of
    freedom, said in words when wider than the mean; empty (None) for one seed."""
    half, mean = row.get(f"{metric}_ci95"), row.get(metric)
    if not all(isinstance(v, float | int) and math.isfinite(v) for v in (half, mean)):
        return None
    text = interval_text(mean, half, [s.get(metric) for s in (row.get("seeds") or {}).values()])
    return text.split(" ± ", 1)[1] if " ± " in text else text.split(" ", 1)[1].strip("()")


def frontier_text(front: list[dict], space: Space, noise: dict | None = None, *, notes: bool = True) -> str:
    """The frontier as a text table (means over seeds, with their 95 % intervals), one table per
    latency device when latencies of several are there, and what the noise leaves undecided (the
    noise floor only, when ``notes`` is False: rows that are not a frontier)."""
    from .frontier import frontier_notes

    if not front:
        return "no finished trial: the frontier is empty"
    objectives = list(space.objectives)
    cols = ["trial_id", "label"] + (["frontier"] if any("frontier" in r for r in front) else []) + ["n_seeds"]
    for o in objectives:
        cols += [o.metric] + ([f"{o.metric} ±95%"] if o.metric not in EXACT_METRICS else [])

    def shown(key: str) -> bool:  # a column for a measured value some row has
        return any(isinstance(r.get(key), float | int) and math.isfinite(r[key]) for r in front)

    cols += ["latency_ratio", "latency_ratio ±95%"] if shown("latency_ratio") else []
    cols += ["n_params", "arch_hash", "choices"]
    groups = comparable_groups(front, objectives)
    parts = []
    if len(groups) > 1:
        parts.append(
            f"latency was measured on {len(groups)} devices and is never compared across them: "
            "one frontier per device"
        )
    for device, rows in groups.items():
        shown = [
            {
                **r,
                "choices": records.choices_text(r["params"]),
                **{f"{m} ±95%": _interval(r, m) for m in [*(o.metric for o in objectives), "latency_ratio"]},
            }
            for r in rows
        ]
        if len(groups) > 1:
            parts.append(f"latency device {device}:")
        parts.append(format_table(shown, cols))
        if noise is not None:
            parts.extend(frontier_notes(rows, objectives, noise, groups=notes))
    return "\n".join(parts)


def outcome_lines(counts: dict[str, int], errors: dict[str, int], *, finished: bool) -> list[str]:
    """The sweep's last lines: how many trials ended how, and each distinct error once."""
    total = sum(counts.values())
    bad = {k: v for k, v in counts.items() if k != OK}
    lines = []
    if not finished:
        lines.append(f"no trial finished: the sweep produced no frontier ({total} trials)")
    elif bad:
        lines.append(f"{counts.get(OK, 0)} of {total} trials finished")
    if bad:
        lines.append("not finished: " + ", ".join(f"{n} {status}" for status, n in sorted(bad.items())))
    lines += [f"error ({n} trial{'s' if n > 1 else ''}): {text}" for text, n in errors.items()]
    return lines


def mlflow_links(tracking_uri: str, experiment_id: str, frontier_run_ids: list[str]) -> list[str]:
    """Where a user looks next: the sweep's runs table and the frontier's runs side by side, as links.

    MLflow 3 opens an experiment on its GenAI views unless the link asks for the "Model training" one.
    """
    from urllib.parse import urlencode

    served = tracking_uri.startswith(("http://", "https://"))
    ui = tracking_uri.rstrip("/") if served else "http://127.0.0.1:5000"
    lines = [] if served else ["the MLflow UI on this store: bash mlflow/server.sh"]
    lines.append(f"the sweep's runs: {ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    if frontier_run_ids:
        query = urlencode({"runs": json.dumps(frontier_run_ids), "experiments": json.dumps([experiment_id])})
        lines.append(f"the frontier's runs side by side: {ui}/#/compare-runs?{query}")
    return lines


def architecture_metrics(rows: list[dict]) -> dict[str, float]:
    """An architecture run's metrics from its trained seeds' rows: each trial metric's mean, ``_std``
    and ``_ci95`` (the 95 % interval's half-width), and ``n_seeds``."""
    if not rows:
        return {}
    (row,) = records.architecture_rows(rows)
    out = {m: row[m] for m in TRIAL_METRICS}
    out.update({f"{m}_{k}": row[f"{m}_{k}"] for m in TRIAL_METRICS for k in ("std", "ci95")})
    out["n_seeds"] = row["n_seeds"]
    return out


def update_architecture(
    tracker: SweepTracker, arch_run: str, space: Space, *, seeds: int | None = None
) -> None:
    """Log an architecture run's mean, spread and seed count over its trained seeds (at step
    ``n_seeds``, so MLflow shows the latest), and end it once ``seeds`` of its seeds have an outcome
    (``None``: end it now, the sweep is over)."""
    children = tracker.children(arch_run)
    rows = records.seed_rows_of(children, [s.name for s in space.sites])
    metrics = architecture_metrics(rows)
    run = tracker.run(arch_run)
    if metrics and run.data.metrics.get("n_seeds") != metrics["n_seeds"]:
        tracker.log_metrics(arch_run, metrics, step=int(metrics["n_seeds"]))
    ended = {
        c.data.params.get("seed")
        for c in children
        if c.data.tags.get(Tag.STATUS) in (OK, FAILED, INFEASIBLE, STOPPED, LOST)
    }
    if run.info.status != "RUNNING" or (seeds is not None and len(ended) < seeds):
        return
    statuses = [c.data.tags.get(Tag.STATUS) for c in children]
    status = next((s for s in (OK, INFEASIBLE, STOPPED, FAILED, LOST) if s in statuses), FAILED)
    tracker.set_tags(arch_run, {Tag.STATUS: status})
    tracker.finish(arch_run, "FINISHED" if status in (OK, INFEASIBLE, STOPPED) else "FAILED")
