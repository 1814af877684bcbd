"""``python -m search.replay``: replay search strategies on a finished sweep, without training.

    python -m search.replay --sweep ref-ablation --sweep ref-random     # one or more sweeps of one experiment
    python -m search.replay --table bench/reference_table.json          # a table exported with --save-table

The sweeps' trained seeds become a surrogate of their space (:mod:`search.surrogate`). Each strategy is
the product's own searcher (:func:`search.searcher.make_searcher`, as a sweep builds it: the base first,
then the sampler) told what the surrogate measures, noise included, for ``--trials`` architectures, over
``--replays`` seeds. What counts is the hypervolume of the architectures it picked, on the surrogate's
noise-free values (luck in the noise is not search), as a fraction of the box the base fixes. Printed:
for each strategy, the hypervolume at 10, 20 and 40 architectures (median and interquartile range), the
architectures it needs to reach 90 % of the best hypervolume any set of the space's architectures reaches,
and the one-sided Mann-Whitney p-value against random at each count; then what a search of 20 or 40
trials can tell apart at the measured noise. ``--plot`` draws the curves.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .cli import Parser, UsageError, check_name, start, usage_error
from .records import EXPERIMENT, Tag, seed_rows_of
from .space import Space, parse_space
from .stats import mann_whitney_greater
from .surrogate import Fidelity, Surrogate, SweepTooSmall, best_hypervolume, effect_floor, fit_surrogate

__all__ = [
    "CHECKPOINTS",
    "STRATEGIES",
    "TABLE_FORMAT",
    "against",
    "main",
    "read_table",
    "replay",
    "replay_all",
    "replay_stopping",
    "stopping_summary",
    "summarize_replays",
    "table_from_store",
    "write_table",
]

STRATEGIES = ("random", "tpe", "nsga2", "gp", "cost")
CHECKPOINTS = (10, 20, 40)
TABLE_FORMAT = 1
CURVE = "metrics/mAP50-95_B"  # a trial's per-epoch mAP50-95 on the validation split, as Ultralytics logs it


# ------------------------------------------------------------------------------------------ the replay
def replay(surrogate: Surrogate, strategy: str, *, seed: int, trials: int) -> list[float]:
    """One run of ``strategy`` on ``surrogate``: the noise-free hypervolume (a fraction of the box) after
    each of its first ``trials`` architectures, the base first as in every sweep.

    Every suggestion is an architecture trained, a repeated one too (a sweep's ``--samples`` counts it);
    the base's seeds are one architecture. Deterministic for a seed.
    """
    from .config import SweepConfig
    from .searcher import make_searcher

    space = surrogate.space
    config = SweepConfig(
        space=space,
        budget=next(iter(space.budgets)),
        samples=trials - 1,
        sampler=strategy,
        seed=seed,
        repeats=1,
        max_concurrent=1,
        count_references=False,
    )
    searcher = make_searcher(config, lambda _: None, known=surrogate.costs)
    seeds = searcher.searcher  # the Seeds wrapper: one group per architecture
    rng = np.random.default_rng(seed)
    picked: list[dict] = []
    curve: list[float] = []
    names = [s.name for s in space.sites]
    for k in range(trials * 4):  # the base's seeds are suggestions of their own
        config_k = searcher.suggest(f"r{k}")
        if config_k is None or not isinstance(config_k, dict):
            break
        point = {n: config_k[n] for n in names}
        if len(seeds.groups) > len(picked):
            picked.append(point)
        searcher.on_trial_complete(f"r{k}", result={**surrogate.measure(point, rng), "final": 1})
        if len(seeds.groups) > len(curve) and all(t is not None for t in seeds.groups[-1]["trials"].values()):
            if len(seeds.groups[-1]["trials"]) >= seeds.groups[-1]["n"]:
                curve.append(surrogate.hypervolume(picked))
        if len(curve) >= trials:
            break
    return curve


def replay_all(
    surrogate: Surrogate,
    strategies: Sequence[str],
    *,
    replays: int,
    trials: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Every strategy, ``replays`` times (seeds ``seed`` to ``seed + replays - 1``): their curves."""
    out = {}
    for strategy in strategies:
        out[strategy] = [replay(surrogate, strategy, seed=seed + r, trials=trials) for r in range(replays)]
        if progress:
            progress(f"[replay] {strategy}: {replays} replays of {trials} architectures")
    return out


def _at(runs: list[list[float]], t: int) -> list[float]:
    """Each run's hypervolume after ``t`` architectures (its last, if it ended sooner)."""
    return [run[min(t, len(run)) - 1] for run in runs if run]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = np.percentile(values, [25, 50, 75])
    return float(q[1]), float(q[0]), float(q[2])


def summarize_replays(
    curves: dict[str, list[list[float]]], best: float, checkpoints=CHECKPOINTS
) -> list[dict]:
    """Per strategy: the hypervolume at each checkpoint (median, quartiles), the p-value of a one-sided
    Mann-Whitney test that it beats random there, and the architectures it needs to reach 90 % of ``best``
    (the median over replays; None when most replays never reach it)."""
    rows = []
    for strategy, runs in curves.items():
        row = {"strategy": strategy, "replays": len(runs)}
        for t in checkpoints:
            row[f"hv{t}"] = _quartiles(_at(runs, t))
        if strategy != "random" and "random" in curves:
            row.update(
                {f"p{t}": p for t, p in against(curves, strategy, "random", checkpoints=checkpoints).items()}
            )
        reach = [next((i + 1 for i, v in enumerate(run) if v >= 0.9 * best), math.inf) for run in runs]
        median = statistics.median(reach)
        row["to90"] = None if math.isinf(median) else median
        row["reached90"] = sum(math.isfinite(r) for r in reach)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ early stopping
def replay_stopping(
    space: Space, seed_rows: list[dict], scheduler: str | None, *, seed: int, architectures: int
) -> dict:
    """One small sweep replayed from a table's per-epoch curves under ``scheduler`` (``asha``, ``moasha`` or None,
    built as a sweep builds it): the base's trained seeds first, then ``architectures`` of the table's other
    architectures in a random order (one trained seed each), each reporting its epochs one by one as its curve
    says (the costs from the first epoch) until the scheduler stops it.

    Returns the trial-epochs spent, the rows that finished (scored with their final, test-split values) and
    the number stopped.
    """
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from .moasha import make_scheduler

    rng = np.random.default_rng(seed)
    with_curves = [r for r in seed_rows if r.get("curve")]
    epochs = max(len(r["curve"]) for r in with_curves)
    base = [r for r in with_curves if r["params"] == space.base_point]
    others: dict[str, list[dict]] = {}
    for r in with_curves:
        if r["params"] != space.base_point and len(r["curve"]) == epochs:
            others.setdefault(r["arch_hash"], []).append(r)
    keys = sorted(others)
    picked = [others[keys[i]][0] for i in rng.permutation(len(keys))[:architectures]]
    sched = make_scheduler(scheduler, space, epochs=epochs)
    spent, finished, stopped = 0, [], 0
    for k, row in enumerate(base + picked):
        trial = SimpleNamespace(trial_id=f"t{k}", config=dict(row["params"]))
        if sched is not None:
            sched.on_trial_add(None, trial)
        costs = {
            m: row[m] for m in ("latency_ms", "latency_ratio", "gflops", "n_params") if row.get(m) is not None
        }
        for epoch, value in enumerate(row["curve"], start=1):
            spent += 1
            result = {"epoch": epoch, **costs, space.objectives[0].metric: value}
            if sched is not None and sched.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                break
        else:
            finished.append(row)
            continue
        stopped += 1
    return {"epochs": spent, "finished": finished, "stopped": stopped, "trials": len(base) + len(picked)}


def stopping_summary(
    space: Space, seed_rows: list[dict], *, replays: int, architectures: int, seed: int = 0
) -> list[dict]:
    """None, ``asha`` and ``moasha`` on the same replayed sweeps: per scheduler, the median trial-epochs, trials
    stopped, the hypervolume of what finished (measured final values, a fraction of what no early stopping
    ends with) and the share of no early stopping's frontier that finished."""
    from .frontier import hypervolume, hypervolume_box, pareto_front

    objectives = list(space.objectives)
    directions = [o.direction for o in objectives]
    runs = {name: [replay_stopping(space, seed_rows, name, seed=seed + r, architectures=architectures) for r in range(replays)]
            for name in (None, "asha", "moasha")}  # fmt: skip
    base = {
        o.metric: statistics.fmean(r[o.metric] for r in seed_rows if r["params"] == space.base_point)
        for o in objectives
    }
    reference, _ = hypervolume_box(objectives, base)

    def points(rows):
        return [[r[o.metric] for o in objectives] for r in rows]

    out = []
    for name, results in runs.items():
        ratios, recalls = [], []
        for mine, full in zip(results, runs[None], strict=True):
            full_hv = hypervolume(points(full["finished"]), directions, reference)
            ratios.append(
                hypervolume(points(mine["finished"]), directions, reference) / full_hv
                if full_hv
                else math.nan
            )
            front = {id(full["finished"][i]) for i in pareto_front(points(full["finished"]), directions)}
            recalls.append(sum(id(r) in front for r in mine["finished"]) / len(front))
        out.append({
            "scheduler": name or "none",
            "epochs": statistics.median(r["epochs"] for r in results),
            "stopped": statistics.median(r["stopped"] for r in results),
            "trials": results[0]["trials"],
            "hv_ratio": statistics.median(ratios),
            "front_kept": statistics.median(recalls),
        })  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------ the table
def read_table(path: Path) -> tuple[Space, list[dict], dict]:
    """A table :func:`table_from_store` wrote: its space, its trained seeds' rows and its setup.

    Raises:
        UsageError: not a readable table.
    """
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != TABLE_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {TABLE_FORMAT}")
        space = parse_space(copy.deepcopy(doc["space"]), f"{path}:space")
        return space, list(doc["seeds"]), dict(doc.get("setup") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--table {path}: not a replay table ({type(exc).__name__}: {exc})") from exc


def write_table(path: Path, space_document: dict, seeds: list[dict], *, setup: dict) -> None:
    """Write a table :func:`read_table` reads. The space keeps its document's order: its sites' order is the
    order a sampler draws them in, so a table replays exactly as the sweeps it came from."""
    doc = {"format": TABLE_FORMAT, "space": space_document, "setup": setup, "seeds": seeds}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def table_from_store(uri: str, experiment: str, sweeps: Sequence[str]) -> tuple[Space, list[dict], dict]:
    """The trained seeds of ``sweeps`` (one space, one training setup), each once, with each seed's
    per-epoch validation mAP: what a replay and a shipped table hold.

    Raises:
        UsageError: a sweep that does not exist, or sweeps of different spaces or setups.
    """
    import yaml

    from .tracking import SweepTracker, download_artifact, find_parent, open_store

    client = open_store(uri)
    tracker = SweepTracker(uri, experiment)
    space, setup, seeds, seen = None, None, [], set()
    for name in sweeps:
        parent = find_parent(uri, experiment, name)
        if parent is None:
            raise UsageError(f"--sweep {name}: no such sweep in experiment {experiment!r} at {uri}")
        with tempfile.TemporaryDirectory() as d:
            path = download_artifact(client, parent.info.run_id, "space.yaml", dst=Path(d))
            if path is None:
                raise UsageError(f"--sweep {name}: its run has no space.yaml")
            doc = yaml.safe_load(Path(path).read_text())
        key = parent.data.params.get("setup_key")
        if space is None:
            space, setup, first_doc = parse_space(copy.deepcopy(doc), f"{name}:space.yaml"), key, doc
        elif doc != first_doc or key != setup:
            raise UsageError(
                f"--sweep {name}: another space or training setup than {sweeps[0]}: not one table"
            )
        for row in seed_rows_of(tracker.trials(parent.info.run_id), [s.name for s in space.sites]):
            if (row["arch_hash"], row["seed"]) in seen:
                continue
            seen.add((row["arch_hash"], row["seed"]))
            history = client.get_metric_history(row["run_id"], CURVE)
            row["curve"] = [m.value for m in sorted(history, key=lambda m: m.step)]
            seeds.append({k: v for k, v in row.items() if k not in ("warm_start",)})
    params = parent.data.params
    info = {
        "sweeps": list(sweeps),
        "experiment": experiment,
        "setup_key": setup,
        "commit": parent.data.tags.get(Tag.GIT_COMMIT),
        **{
            k: params[k]
            for k in sorted(params)
            if (k.startswith("budget") and k != "budget.weights")  # a local path: its fingerprint says it
            or k
            in ("code_version", "data", "data_fingerprint", "weights_fingerprint", "seed", "map_evaluator")
        },
    }
    return space, seeds, {**info, "space_document": first_doc}


# ------------------------------------------------------------------------------------------ the command
def _parser() -> Parser:
    p = Parser(prog="python -m search.replay", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", action="append", help="a finished sweep (repeat it to join several)")
    which.add_argument("--table", help="a table written by --save-table (e.g. bench/reference_table.json)")
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated (default: {','.join(STRATEGIES)})",
    )
    p.add_argument("--replays", type=int, default=20, help="replays per strategy (default 20)")
    p.add_argument(
        "--trials", type=int, default=max(CHECKPOINTS), help="architectures per replay (default 40)"
    )
    p.add_argument("--seed", type=int, default=0, help="the first replay's seed")
    p.add_argument(
        "--stopping-architectures",
        type=int,
        default=12,
        help="early stopping's replayed sweeps: architectures besides the base (default 12; needs per-epoch curves)",
    )
    p.add_argument(
        "--noise",
        choices=("seed", "loo"),
        default="seed",
        help="the noise a replayed trial measures: seed (the table's seed noise, the default) or loo (each measured "
        "metric's leave-one-out error, where larger: the surrogate's misfit as noise)",
    )
    p.add_argument("--plot", help="write the hypervolume curves to this PNG")
    p.add_argument("--json", help="write the summary to this JSON file")
    p.add_argument("--save-table", help="with --sweep: write the table (for --table) to this JSON file")
    p.add_argument(
        "--machine", default="", help="with --save-table: the machine the sweeps trained on, in words"
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the embedded store in mlflow/)")
    p.add_argument("--experiment", default=EXPERIMENT, help=f"with --sweep (default: {EXPERIMENT})")
    return p


def _check(args) -> list[str]:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise UsageError(
            f"--strategies: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(STRATEGIES)})"
        )
    if args.replays < 2:
        raise UsageError(f"--replays must be >= 2, got {args.replays}")
    if args.trials < 2:
        raise UsageError(f"--trials must be >= 2, got {args.trials}")
    for name in args.sweep or []:
        check_name("--sweep", name)
    if args.save_table and not args.sweep:
        raise UsageError("--save-table only applies with --sweep")
    return strategies


def fidelity_lines(fidelity: Fidelity) -> list[str]:
    lines = [f"[replay] surrogate of {fidelity.architectures} architectures ({fidelity.seeds} trained seeds)"]
    for m, (med, worst, n) in fidelity.cost.items():
        checked = (
            f"median {med:.2%}, max {worst:.2%} on {n} architectures with several changes"
            if n
            else "unchecked"
        )
        lines.append(f"[replay]   {m}: additive in per-site costs; error against exact counts {checked}")
    for m, rmse in fidelity.loo.items():
        std, df = fidelity.noise[m]
        lines.append(
            f"[replay]   {m}: additive per-site effects; leave-one-out error {rmse:.4g} against a seed noise of "
            f"{std:.4g} ({df} df)"
        )
    return lines


def summary_lines(rows: list[dict], best: float, checkpoints=CHECKPOINTS) -> list[str]:
    head = (
        ["strategy"]
        + [f"HV@{t} median [IQR]" for t in checkpoints]
        + ["to 90 %"]
        + [f"p@{t}" for t in checkpoints]
    )
    table = [head]
    for r in rows:
        cells = [r["strategy"]]
        cells += [f"{r[f'hv{t}'][0]:.4f} [{r[f'hv{t}'][1]:.4f}, {r[f'hv{t}'][2]:.4f}]" for t in checkpoints]
        cells.append(
            f"{r['to90']:g} ({r['reached90']}/{r['replays']})"
            if r["to90"]
            else f"> {max(checkpoints)} ({r['reached90']}/{r['replays']})"
        )
        cells += [f"{r[f'p{t}']:.3g}" if f"p{t}" in r else "-" for t in checkpoints]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out = [f"[replay] hypervolume (fraction of the box; best reachable {best:.4f}), over replays:"]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    return out


def against(
    curves: dict[str, list[list[float]]], a: str, b: str, *, checkpoints=CHECKPOINTS
) -> dict[int, float]:
    """The one-sided Mann-Whitney p-value that strategy ``a`` reaches a larger hypervolume than ``b``, per checkpoint."""
    return {t: mann_whitney_greater(_at(curves[a], t), _at(curves[b], t)) for t in checkpoints}


def plot_curves(curves: dict[str, list[list[float]]], best: float, path: Path, *, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for strategy, runs in curves.items():
        n = min(len(r) for r in runs)
        values = np.array([r[:n] for r in runs])
        x = np.arange(1, n + 1)
        ax.plot(x, np.median(values, axis=0), label=strategy)
        ax.fill_between(x, *np.percentile(values, [25, 75], axis=0), alpha=0.15)
    ax.axhline(0.9 * best, color="0.4", ls="--", lw=0.8, label="90 % of the best")
    ax.set_xlabel("architectures trained (the base first)")
    ax.set_ylabel("hypervolume, noise-free (fraction of the box)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    import os

    start()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("optuna", "ray"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args = _parser().parse_args(argv)
    try:
        strategies = _check(args)
        if args.table:
            space, seeds, setup = read_table(Path(args.table))
        else:
            from .tracking import default_tracking_uri

            space, seeds, setup = table_from_store(
                args.tracking_uri or default_tracking_uri(), args.experiment, args.sweep
            )
        surrogate, fidelity = fit_surrogate(space, seeds)
        if args.noise == "loo":  # the model's misfit treated as noise: a harder replay than the seeds' noise
            surrogate.noise = {m: max(surrogate.noise[m], fidelity.loo[m]) for m in surrogate.noise}
    except (UsageError, SweepTooSmall) as exc:
        return usage_error(exc)
    if args.save_table:
        from .tracking import git_commit

        setup = {**setup, "machine": args.machine, "exported_at_commit": git_commit()}
        write_table(Path(args.save_table), setup.pop("space_document"), seeds, setup=setup)
        print(f"[replay] table of {len(seeds)} trained seeds written to {args.save_table}")
    for line in fidelity_lines(fidelity):
        print(line)
    best = best_hypervolume(surrogate)
    curves = replay_all(
        surrogate, strategies, replays=args.replays, trials=args.trials, seed=args.seed, progress=print
    )
    checkpoints = tuple(t for t in CHECKPOINTS if t <= args.trials) or (args.trials,)
    rows = summarize_replays(curves, best, checkpoints)
    for line in summary_lines(rows, best, checkpoints):
        print(line)
    if {"cost", "tpe"} <= set(curves):
        p = against(curves, "cost", "tpe", checkpoints=checkpoints)
        print("[replay] cost against tpe: " + ", ".join(f"p@{t} {v:.3g}" for t, v in p.items()))
    main_metric = space.objectives[0].metric
    rng = np.random.default_rng(args.seed)
    floors = [effect_floor(space, fidelity.noise[main_metric], t, rng=rng) for t in (20, 40)]
    for f in floors:
        effects = (
            f"its per-site effects to about ±{f['effects']:.3g} (95 %, median)"
            if f["effects"] is not None
            else f"none of its per-site effects one by one ({f['unknowns']} unknowns)"
        )
        print(
            f"[replay] at the measured noise, a search of {f['trials']} one-seed architectures tells two of them apart "
            f"in {main_metric} only beyond {f['pair']:.3g}, and estimates {effects}"
        )
    if sum(len(r.get("curve") or []) >= 2 for r in seeds) > args.stopping_architectures:
        print(
            f"[replay] early stopping, {args.replays} sweeps of the base's seeds and {args.stopping_architectures} "
            "architectures of the table each, trained one after another as their curves say:"
        )
        for row in stopping_summary(
            space, seeds, replays=args.replays, architectures=args.stopping_architectures
        ):
            print(
                f"  {row['scheduler']:<7} trial-epochs {row['epochs']:g}, stopped {row['stopped']:g} of {row['trials']}, "
                f"hypervolume {row['hv_ratio']:.1%} of no early stopping's, its frontier kept {row['front_kept']:.0%} "
                "(medians)"
            )
    if args.plot:
        plot_curves(
            curves,
            best,
            Path(args.plot),
            title=f"{space.name}: {args.replays} replays, {', '.join(setup.get('sweeps', []))}",
        )
        print(f"[replay] plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"best": best, "rows": rows, "floors": floors, "curves": curves, "noise": surrogate.noise}
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
