"""``python -m search.pareto``: the Pareto frontier of a past sweep, read back from MLflow.

python -m search.pareto --sweep placements-20261128-090000
python -m search.pareto --sweep NAME --all --format json --tracking-uri http://mlflow:5000
python -m search.pareto --sweep NAME --table ablation    # every single change against the base
"""

from __future__ import annotations

import json
import sys

from .cli import Parser, check_name, start, usage_error

__all__ = [
    "main",
]


def main(argv: list[str] | None = None) -> int:
    from .ablation import ablation_table, ablation_text
    from .frontier import frontier_table
    from .records import EXPERIMENT, Tag
    from .results import architecture_table, frontier_text, noise_of
    from .space import SpaceError, load_space
    from .tracking import SweepTracker, TrackingError, check_tracking, default_tracking_uri

    start()
    p = Parser(prog="python -m search.pareto", description="Print the frontier of a past sweep.")
    p.add_argument("--sweep", required=True, help="the sweep's --name")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the embedded store in mlflow/)")
    p.add_argument("--experiment", default=EXPERIMENT)
    p.add_argument("--all", action="store_true", help="every finished architecture, not only the frontier")
    p.add_argument(
        "--table",
        choices=("frontier", "ablation"),
        default="frontier",
        help="frontier: the noise-aware Pareto frontier; ablation: each single change against the base",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    args = p.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        check_name("--sweep", args.sweep)
        check_tracking(uri)
        tracker = SweepTracker(uri, args.experiment)
        parents = [r for r in tracker.runs_for_sweep(args.sweep) if Tag.PARENT not in r.data.tags]
        if not parents:
            raise ValueError(f"no sweep named {args.sweep!r} in experiment {args.experiment!r} at {uri}")
        parent = parents[0]
        space = load_space(parent.data.params["space_file"])
    except (TrackingError, SpaceError, ValueError, KeyError) as exc:
        return usage_error(exc)
    objectives = list(space.objectives)
    rows = architecture_table(tracker, parent.info.run_id, space)
    noise = noise_of(rows, space.objectives)
    front = frontier_table(rows, objectives, noise)
    if args.table == "ablation":
        table = ablation_table(rows, space, noise)
        if args.format == "json":
            print(json.dumps(table, indent=2))
            return 0
        print(
            f"sweep {args.sweep}: {len(table)} single changes from the base among {len(rows)} architectures"
        )
        print(ablation_text(table))
        return 0
    if not front:  # nothing to show: a script reading the exit code must not take it for a result
        print(f"sweep {args.sweep}: no finished architecture, so no frontier", file=sys.stderr)
        return 1
    members = {r["trial_id"] for r in front}
    shown = rows if args.all else front
    if args.format == "json":
        print(json.dumps([{**r, "seeds": {str(k): v for k, v in r["seeds"].items()},
                           "on_frontier": r["trial_id"] in members} for r in shown], indent=2))  # fmt: skip
        return 0
    if args.all:  # which rows are the frontier
        shown = [{**r, "frontier": "yes" if r["trial_id"] in members else "-"} for r in rows]
    print(f"sweep {args.sweep}: {len(rows)} finished architectures, {len(front)} on the noise-aware frontier")
    print(frontier_text(shown, space, noise, notes=not args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
