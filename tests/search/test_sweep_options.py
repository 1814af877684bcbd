"""Sweep options: cost constraints, ASHA early stopping, and what Optuna is told about each trial."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from optuna.trial import TrialState
from ultralytics.nn.tasks import RTDETRDetectionModel

from search.cost import deploy_form, model_cost
from search.materialize import materialize
from search.space import load_space
from search.sweep import SweepConfig, make_searcher
from search.trial import with_classes

TINY = ["--imgsz", "64", "--batch", "8", "--fraction", "0.25"]


def uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def sweep(tmp: Path, *args: str) -> list[mlflow.entities.Run]:
    cmd = [sys.executable, "-m", "search.run", "--space", "modes", "--sampler", "grid", "--storage-path",
           str(tmp / "ray"), "--tracking-uri", uri(tmp), *TINY, *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def test_over_budget_architectures_are_recorded_infeasible_without_training(tmp_path):
    space = load_space("modes")
    budget = space.budgets["cpu"]
    gflops = {}
    for (
        point
    ) in space.points():  # the cost each trial will measure: the proxy, built for the 3 built-in classes
        model = RTDETRDetectionModel(
            with_classes(materialize(space, point, budget=budget)[0], 3), verbose=False
        )
        gflops[point["stage3"]] = model_cost(deploy_form(model))["gflops"]
    limit = statistics.median(gflops.values())
    kids = sweep(tmp_path, "--epochs", "1", "--max-gflops", f"{limit:.9f}")
    assert len(kids) == 3
    for kid in kids:
        over = gflops[kid.data.params["stage3"]] > limit
        assert kid.data.tags["trial.status"] == ("infeasible" if over else "ok")
        if over:
            assert "gflops" in kid.data.tags["infeasible"] and kid.info.status == "FINISHED"
            assert "train_s" not in kid.data.metrics and "map50_95" not in kid.data.metrics
            assert kid.data.metrics["gflops"] > limit and kid.data.tags.get("pareto") != "true"
    assert sum(k.data.tags["trial.status"] == "infeasible" for k in kids) == 1


def test_asha_stopped_trials_are_tagged_and_kept_off_the_frontier(tmp_path):
    kids = sweep(tmp_path, "--epochs", "3", "--scheduler", "asha")
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)
    for kid in kids:
        status = kid.data.tags["trial.status"]
        assert status in ("ok", "stopped_early")
        if status == "stopped_early":
            assert kid.data.tags["stopped_early"] == "true" and kid.data.tags.get("pareto") != "true"
            assert "map50_95" not in kid.data.metrics  # no final validation, no made-up value
        else:
            assert kid.data.metrics["epochs_done"] == 3


def test_optuna_is_told_complete_pruned_or_failed():
    config = SweepConfig(
        space=load_space("modes"), budget="cpu", samples=3, sampler="random", max_concurrent=3
    )
    limiter = make_searcher(config, error_for=lambda trial_id: f"{trial_id} ran out of memory")
    searcher = limiter.searcher
    for trial_id in ("done", "stopped", "crashed"):
        assert limiter.suggest(trial_id) is not None
    values = {"map50_95": 0.3, "latency_ms": 12.0, "gflops": 4.0}
    limiter.on_trial_complete("done", result={**values, "final": 1})
    limiter.on_trial_complete("stopped", result={**values, "final": 0})  # what ASHA hands over
    limiter.on_trial_complete("crashed", result={**values, "final": 0}, error=True)
    trials = {t.number: t for t in searcher._ot_study.get_trials(deepcopy=False)}
    states = [trials[i].state for i in sorted(trials)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert trials[0].values == [0.3, 12.0, 4.0]
    assert trials[2].user_attrs["error"] == "crashed ran out of memory"


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_every_sampler_proposes_points_of_the_space(sampler):
    space = load_space("placements")
    limiter = make_searcher(
        SweepConfig(space=space, budget="cpu", samples=4, sampler=sampler), lambda t: None
    )
    point = limiter.suggest("t0")
    assert set(point) == {s.name for s in space.sites}
    assert all(point[s.name] in [c.name for c in s.choices] for s in space.sites)
