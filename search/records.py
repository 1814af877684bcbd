"""A sweep's vocabulary: the metrics a trial reports, its statuses and the tag keys of its MLflow runs.

Plain constants, no imports beyond the standard library: a space file is checked against
:data:`TRIAL_METRICS` when it loads, and the sweep, the frontier and the CLIs read and write runs
with these names.
"""

from __future__ import annotations

__all__ = [
    "EXPERIMENT",
    "FAILED",
    "INFEASIBLE",
    "LOST",
    "OK",
    "STOPPED",
    "TRAINING",
    "TRIAL_METRICS",
]

EXPERIMENT = "rtdetr-ghost-search"

# The final metrics every finished trial reports (to the searcher and as its child run's metrics);
# a space's objectives must be among them. Cost metrics are measured before training and are also
# in every per-epoch result, so an early-stopping scheduler can rank on any of them.
TRIAL_METRICS = ("map50_95", "map50", "latency_ms", "latency_p90_ms", "gflops", "n_params")
COST_METRICS = ("latency_ms", "latency_p90_ms", "latency_iqr_ms", "gflops", "n_params")

# A trial's status: the tag `trial.status` on its child run. LOST: its worker died before the trial
# recorded an outcome (killed, out of memory, node lost) and Ray gave up retrying it.
OK, TRAINING, FAILED, INFEASIBLE, STOPPED = "ok", "training", "failed", "infeasible", "stopped_early"
LOST = "lost"
