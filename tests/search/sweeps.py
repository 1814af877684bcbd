"""A finished sweep's runs as the tests read them: the parent, one run per architecture, one per seed."""

from __future__ import annotations

import mlflow

EXPERIMENT = "rtdetr-ghost-search"


def sweep_runs(tracking_uri: str, sweep: str | None = None):
    """``(parent, architectures, trials, client)`` of the experiment's one sweep (or the sweep named ``sweep``).

    Every architecture run is a child of the parent; every trial run (one seed) a child of an architecture.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    everything = client.search_runs([exp.experiment_id], max_results=5000)
    if sweep is not None:
        everything = [r for r in everything if r.data.tags.get("sweep.name") == sweep]
    parents = [r for r in everything if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1, "one parent run per sweep"
    parent = parents[0]
    archs = [r for r in everything if r.data.tags.get("sweep.role") == "architecture"]
    assert all(a.data.tags["mlflow.parentRunId"] == parent.info.run_id for a in archs)
    arch_ids = {a.info.run_id for a in archs}
    trials = [r for r in everything if r.data.tags.get("sweep.role") == "trial"]
    assert all(t.data.tags["mlflow.parentRunId"] in arch_ids for t in trials), (
        "every seed sits under its architecture"
    )
    assert len(everything) == 1 + len(archs) + len(trials)
    return parent, archs, trials, client
