"""How well each sampler spends trials, replayed on the reference table we ship: ``python -m search.replay`` on
``bench/reference_table.json``.

Run: ``.venv/bin/python bench/search_efficiency.py [--replays 20] [--plot docs/search_efficiency.png]``

The table holds every trained seed of three sweeps of ``placements`` on the ``cpu`` budget (the base with
five seeds, every single change, random architectures with several changes; its ``setup`` says the commit,
code version and machine). The replay fits an additive surrogate of it, replays random, TPE, NSGA-II,
Optuna's GP sampler and the cost-aware sampler through the sweep's own searcher, and prints the
hypervolume each reaches at 10, 20 and 40 architectures (median and IQR over the replays), the
architectures each needs to reach 90 % of the best, and the one-sided Mann-Whitney p-value against
random; then early stopping (none, asha, moasha) on sweeps replayed from the table's per-epoch curves.
The last line is the verdict on the default sampler (``--sampler``'s default in ``search.run``) at 20
architectures. A few minutes on 2 CPU cores, most of them the GP sampler's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._machine import load_average  # noqa: E402
from search.records import DEFAULT_SAMPLER  # noqa: E402
from search.replay import main as replay  # noqa: E402

TABLE = REPO / "bench" / "reference_table.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--plot", default=str(REPO / "docs" / "search_efficiency.png"))
    p.add_argument("--table", default=str(TABLE))
    args = p.parse_args()
    setup = json.loads(Path(args.table).read_text())["setup"]
    print(f"[bench] table: {args.table} ({', '.join(setup.get('sweeps', []))}; commit {setup.get('commit')}, "
          f"code {setup.get('code_version')}, trained on: {setup.get('machine') or 'unrecorded'})")  # fmt: skip
    print(f"[bench] load average before: {load_average()}")
    with tempfile.TemporaryDirectory() as d:
        summary = Path(d) / "summary.json"
        started = time.time()
        code = replay(["--table", args.table, "--replays", str(args.replays), "--plot", args.plot,
                       "--json", str(summary)])  # fmt: skip
        if code:
            return code
        rows = {r["strategy"]: r for r in json.loads(summary.read_text())["rows"]}
    default = DEFAULT_SAMPLER
    row = rows.get(default)
    print(f"[bench] replayed in {time.time() - started:.0f} s; load average after: {load_average()}")
    if row is None or "p20" not in row:
        print(f"[bench] the default sampler ({default}) was not replayed")
        return 1
    verdict = "beats" if row["p20"] < 0.05 else "does NOT beat"
    print(
        f"[bench] verdict: the default sampler ({default}) {verdict} random at 20 architectures: hypervolume "
        f"{row['hv20'][0]:.4f} against {rows['random']['hv20'][0]:.4f} (medians), p = {row['p20']:.3g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
