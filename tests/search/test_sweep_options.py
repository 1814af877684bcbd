"""Sweep options: cost constraints, ASHA early stopping, and what Optuna is told about each trial."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from optuna.trial import TrialState

from search.config import SweepConfig
from search.searcher import make_searcher
from search.space import load_space
from tests.helpers import tiny, uri

TINY = tiny()[2:]  # the tiny budget without its epochs: each test sets its own


def sweep(tmp: Path, *args: str, space: str = "modes") -> list[mlflow.entities.Run]:
    """The trial runs (one per seed) of a grid sweep run to its end."""
    cmd = [sys.executable, "-m", "search.run", "--space", space, "--sampler", "grid", "--storage-path",
           str(tmp / "ray"), "--tracking-uri", uri(tmp), *TINY, *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    (tmp / "sweep.out").write_text(done.stdout)
    return children(tmp)


def children(tmp: Path) -> list[mlflow.entities.Run]:
    """The sweep's trial runs so far (one per seed of an architecture)."""
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "trial"]


def architectures(tmp: Path) -> dict[str, mlflow.entities.Run]:
    """The sweep's architecture runs, by their params' values."""
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    runs = client.search_runs([exp.experiment_id])
    return {
        " ".join(r.data.params.values()): r for r in runs if r.data.tags.get("sweep.role") == "architecture"
    }


def write_space(tmp: Path, text: str) -> str:
    path = tmp / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# ASHA ranks on the first objective at each rung. Ranked on GFLOPs (exact, measured before training), the
# heavy choice is clearly weaker at the first rung, whatever the tiny budget's mAP; keep and ori are not.
RUNGS_SPACE = """
    name: rungs
    base: rtdetr-l
    objectives:
      - {metric: gflops, direction: minimize}
      - {metric: map50_95, direction: maximize}
    budgets:
      cpu: {epochs: 3, imgsz: 64, batch: 8, fraction: 0.25, width: 0.25, depth: 0.34, hidden_dim: 64, queries: 100}
      full: {epochs: 3, imgsz: 64, batch: 8}
    sites:
      stage3:
        layer: 5
        choices:
          keep: keep
          heavy: {op: insert, block: GhostModuleV3, mode: ori, args: [512, 5, 1], repeats: 3}
"""

# Two choices that build one architecture (a hash does not depend on choice names): one trial trains it,
# the other waits for it.
TWINS_SPACE = """
    name: twins
    base: rtdetr-l
    objectives:
      - {metric: map50_95, direction: maximize}
      - {metric: latency_ms, direction: minimize}
    budgets:
      cpu: {epochs: 4, imgsz: 64, batch: 8, fraction: 0.5, width: 0.25, depth: 0.34, hidden_dim: 64, queries: 100}
      full: {epochs: 4, imgsz: 64, batch: 8}
    sites:
      lateral:
        layer: 12
        choices:
          first: {op: replace, block: GhostModuleV3, mode: ori}
          second: {op: replace, block: GhostModuleV3, mode: ori}
"""


def test_over_budget_architectures_are_recorded_infeasible_without_training(tmp_path):
    """Costs and constraints are the deployable architecture's: what --dry-run without --budget prints,
    though the cpu budget trains a scaled-down proxy (whose own figures are logged as proxy/*)."""
    dry = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", "modes", "--dry-run", "--format", "json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    gflops = {row["params"]["stage3"]: row["gflops"] for row in json.loads(dry.stdout)}
    n_params = {row["params"]["stage3"]: row["n_params"] for row in json.loads(dry.stdout)}
    limit = statistics.median(gflops.values())
    kids = sweep(tmp_path, "--epochs", "1", "--max-gflops", f"{limit:.9f}")
    assert len(kids) == 4  # the base's 2 seeds, one of each other architecture
    for kid in kids:
        over = gflops[kid.data.params["stage3"]] > limit
        assert kid.data.tags["trial.status"] == ("infeasible" if over else "ok")
        if over:
            assert "gflops" in kid.data.tags["infeasible"] and kid.info.status == "FINISHED"
            assert "trial/train_s" not in kid.data.metrics and "map50_95" not in kid.data.metrics
            assert kid.data.metrics["gflops"] > limit and kid.data.tags.get("pareto") != "true"
        else:  # the proxy it trained is far smaller than what it stands for
            assert kid.data.metrics["proxy/gflops"] < kid.data.metrics["gflops"] / 10
            assert kid.data.metrics["proxy/n_params"] < kid.data.metrics["n_params"] / 10
        assert kid.data.metrics["gflops"] == gflops[kid.data.params["stage3"]]  # the dry run's, exactly
        assert kid.data.metrics["n_params"] == n_params[kid.data.params["stage3"]]
    assert sum(k.data.tags["trial.status"] == "infeasible" for k in kids) == 1
    archs = architectures(tmp_path)
    assert {k: a.data.tags["trial.status"] for k, a in archs.items()} == {
        k: "infeasible" if v > limit else "ok" for k, v in gflops.items()
    }


@pytest.mark.parametrize("scheduler", ["asha", "moasha"])
def test_early_stopping_stops_the_weak_trial_at_a_rung_and_lets_the_others_finish_onto_the_frontier(
    tmp_path, scheduler
):
    """Trials that reach the last epoch finish as ok, with their final validation, on the frontier; only a
    trial stopped at an earlier rung is stopped_early (Ray's default once stopped every trial at max_t).
    asha ranks on GFLOPs, the space's first objective; moasha sorts by GFLOPs and mAP at once, and the
    heavy architecture (more GFLOPs, its mAP at the first rung within the base's seed spread there, or
    below) is dominated there too."""
    # the base trains first (2 seeds), so heavy meets better results at the first rung
    kids = sweep(tmp_path, "--scheduler", scheduler, space=write_space(tmp_path, RUNGS_SPACE))
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)
    keeps = [k for k in kids if k.data.params["stage3"] == "keep"]
    (heavy,) = [k for k in kids if k.data.params["stage3"] == "heavy"]
    for keep in keeps:
        assert keep.data.tags["trial.status"] == "ok" and keep.data.metrics["trial/epochs_done"] == 3
        assert "map50_95" in keep.data.metrics and keep.data.tags["pareto"] == "true"
    archs = architectures(tmp_path)
    assert archs["keep"].data.tags["trial.status"] == "ok" and archs["keep"].data.metrics["n_seeds"] == 2
    assert (
        archs["heavy"].data.tags["trial.status"] == "stopped_early"
        and archs["heavy"].info.status == "FINISHED"
    )
    assert "map50_95" not in archs["heavy"].data.metrics
    assert heavy.data.tags["trial.status"] == "stopped_early" and heavy.data.tags["stopped_early"] == "true"
    assert heavy.data.tags.get("pareto") != "true"
    assert "map50_95" not in heavy.data.metrics  # no final validation, no made-up value
    assert max(m.step for m in mlflow.MlflowClient(uri(tmp_path)).get_metric_history(
        heavy.info.run_id, "train/giou_loss")) < 3  # fmt: skip


def test_a_trial_waiting_for_an_architecture_whose_holder_was_killed_trains_it_itself(tmp_path):
    """The holder's worker is SIGKILLed mid-training: its run is marked lost (FAILED), and the trial that
    waited for it takes the architecture over instead of waiting forever."""
    import os
    import signal
    import time

    space = write_space(tmp_path, TWINS_SPACE)
    cmd = [sys.executable, "-m", "search.run", "--space", space, "--sampler", "grid", "--max-concurrent", "2",
           "--max-failures", "0", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)]  # fmt: skip
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        # each epoch holds 3 s after its report: the holder is still training when the kill lands
        env={**os.environ, "PYTHONUNBUFFERED": "1", "RTDETR_SEARCH_PAUSE_AFTER_EPOCH": "3"},
    )
    deadline = time.time() + 900
    holder = None
    try:
        while holder is None:
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            assert time.time() < deadline, "the two trials never met"
            time.sleep(0.5)
            if "[sweep] twins-" not in (tmp_path / "sweep.log").read_text():
                continue  # the driver is still creating the store: a second client migrating it would clash
            kids = children(tmp_path)
            waiting = [k for k in kids if "waiting_for" in k.data.tags]
            training = [k for k in kids if "train/giou_loss" in k.data.metrics and "pid" in k.data.tags]
            if waiting and training:
                holder = training[0]
                assert waiting[0].data.tags["waiting_for"] == holder.info.run_id
        os.kill(int(holder.data.tags["pid"]), signal.SIGKILL)
        assert proc.wait(timeout=900) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    kids = {k.info.run_id: k for k in children(tmp_path)}
    assert len(kids) == 2
    lost = kids[holder.info.run_id]
    assert lost.info.status == "FAILED" and lost.data.tags["trial.status"] == "lost"
    assert "worker died" in lost.data.tags["error"]
    (heir,) = [k for k in kids.values() if k.info.run_id != holder.info.run_id]
    assert heir.info.status == "FINISHED" and heir.data.tags["trial.status"] == "ok"
    assert heir.data.tags["took_over_from"] == holder.info.run_id and "reused_from" not in heir.data.tags
    assert heir.data.metrics["trial/epochs_done"] == 4 and "map50_95" in heir.data.metrics


def test_optuna_is_told_the_mean_of_each_architectures_seeds_once_or_pruned_or_failed():
    config = SweepConfig(
        space=load_space("modes"), budget="cpu", samples=2, sampler="random", max_concurrent=8, repeats=2
    )
    limiter = make_searcher(config, error_for=lambda trial_id: f"{trial_id} ran out of memory")
    optuna_search = limiter.searcher.searcher
    configs = {t: limiter.suggest(t) for t in ("b0", "b1", "h0", "h1", "s0", "s1", "x0", "x1")}
    # the base first, then the space's reference (the hand-made placement), each over seeds 0 and 1
    assert [(c["stage3"], c["seed"], c["seeds"]) for c in configs.values()][:4] == [
        ("keep", 0, 2), ("keep", 1, 2), ("ori", 0, 2), ("ori", 1, 2)
    ]  # fmt: skip
    assert [c["seed"] for c in configs.values()][4:] == [0, 1, 0, 1]
    values = {"latency_ms": 12.0, "gflops": 4.0}
    limiter.on_trial_complete("b0", result={**values, "map50_95": 0.2, "final": 1})
    assert not optuna_search._ot_study.get_trials(deepcopy=False)[
        0
    ].state.is_finished()  # one seed is not enough
    limiter.on_trial_complete("b1", result={**values, "map50_95": 0.4, "final": 1})
    limiter.on_trial_complete("h0", result={**values, "map50_95": 0.3, "final": 0})  # what ASHA hands over
    limiter.on_trial_complete("h1", result={**values, "map50_95": 0.3, "final": 0})
    limiter.on_trial_complete("s0", result={**values, "final": 0}, error=True)
    limiter.on_trial_complete("s1", result={**values, "final": 0}, error=True)
    trials = {t.number: t for t in optuna_search._ot_study.get_trials(deepcopy=False)}
    states = [trials[i].state for i in sorted(trials)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING]
    assert trials[0].values == pytest.approx([0.3, 12.0, 4.0])  # the mean over the base's two seeds
    assert trials[2].user_attrs["error"] == "s0 ran out of memory"


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "cost", "random", "grid", "ablation"])
def test_every_sampler_proposes_points_of_the_space_the_base_first(sampler):
    space = load_space("placements")
    limiter = make_searcher(
        SweepConfig(space=space, budget="cpu", samples=4, sampler=sampler, max_concurrent=3), lambda t: None
    )
    points = [limiter.suggest(f"t{i}") for i in range(3)]
    assert [p["seed"] for p in points] == [0, 1, 0]  # the base's 2 seeds, then one seed of the next
    assert all(v == "keep" for k, v in points[0].items() if k in {s.name for s in space.sites})
    for point in points:
        assert set(point) == {s.name for s in space.sites} | {"seed", "seeds"}
        assert all(point[s.name] in [c.name for c in s.choices] for s in space.sites)


def test_the_ablation_plan_is_the_base_and_every_single_change():
    from search.plan import sweep_plan

    space = load_space("placements")
    points, seeds, n_trials = sweep_plan(
        SweepConfig(space=space, budget="cpu", sampler="ablation", repeats=3)
    )
    changes = sum(len(s.choices) - 1 for s in space.sites)
    assert len(points) == 1 + changes and seeds == [3] * len(points) and n_trials == 3 * len(points)
    base = points[0]
    assert all(v == "keep" for v in base.values())
    assert all(sum(p[k] != base[k] for k in base) == 1 for p in points[1:])
    assert len({tuple(p.items()) for p in points}) == len(points)
    # searching samplers: the base (2 seeds) and the references on top of --samples, unless counted
    modes = load_space("modes")
    assert sweep_plan(SweepConfig(space=modes, budget="cpu", samples=3))[2] == 2 + 1 + 3
    assert (
        sweep_plan(SweepConfig(space=modes, budget="cpu", samples=3, count_references=True))[2] == 2 + 1 + 1
    )
    assert sweep_plan(SweepConfig(space=modes, budget="cpu", sampler="grid", samples=3))[2] == 2 + 1 + 1


def test_the_default_plan_fills_its_last_round_of_trials():
    """No slot idles while the last trial trains alone: the default count of sampled architectures is
    raised until the trials fill whole rounds (the first command: the base's 2 seeds and 6 placements on
    two one-CPU slots, not 5 with the last trial alone)."""
    import dataclasses

    from search.plan import fill_last_round, sweep_plan

    two = SweepConfig(space=load_space("placements"), budget="cpu", samples=5, max_concurrent=2)
    filled = fill_last_round(two)
    assert filled.samples == 6 and sweep_plan(filled)[2] == 8
    assert fill_last_round(dataclasses.replace(two, samples=6)).samples == 6  # full rounds already
    four = fill_last_round(dataclasses.replace(two, max_concurrent=4))
    assert four.samples == 6 and sweep_plan(four)[2] % 4 == 0
    three = fill_last_round(dataclasses.replace(two, max_concurrent=3, repeats=2))
    assert sweep_plan(three)[2] % 3 == 0 and 5 <= three.samples < 5 + 3
    assert fill_last_round(dataclasses.replace(two, max_concurrent=1)).samples == 5  # one slot: nothing idles
    # never past the space, and a fixed list is kept as it is
    modes = SweepConfig(space=load_space("modes"), budget="cpu", samples=3, max_concurrent=4)
    assert fill_last_round(modes).samples == 3
    ablation = dataclasses.replace(two, sampler="ablation")
    assert fill_last_round(ablation) is ablation


def test_a_time_budget_keeps_the_bases_seeds_and_starts_no_trial_that_would_end_past_it(tmp_path):
    kids = sweep(tmp_path, "--epochs", "1", "--time-budget", "0.05", "--max-concurrent", "1")
    assert sorted(k.data.params["stage3"] for k in kids) == ["keep", "keep"]  # the base's 2 seeds, never cut
    assert all(k.data.tags["trial.status"] == "ok" for k in kids)
    out = (tmp_path / "sweep.out").read_text()
    assert "within 0.05 min" in out
    assert "time budget 0.05 min: 2 of the 4 planned trials left out" in out.splitlines()[-1]


def test_the_time_budget_counts_the_longest_trial_so_far():
    from ray.tune.search import Searcher

    from search.searcher import Seeds

    class Points(Searcher):
        def __init__(self):
            super().__init__(metric="m", mode="max")
            self.n = 0

        def suggest(self, trial_id):
            self.n += 1
            return {"p": self.n}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    import time

    seeds = Seeds(Points(), repeats=1, leading=[2], deadline=time.time() + 100, protected=1)
    assert seeds.suggest("a") == {"p": 1, "seed": 0, "seeds": 2} and seeds.suggest("b")["seed"] == 1
    seeds.started["a"] -= 60  # the base's first seed took a minute
    seeds.on_trial_complete("a", {"m": 1.0})
    assert seeds.suggest("c") == {"p": 2, "seed": 0, "seeds": 1}  # 60 s still fit in the 100 left
    seeds.started["b"] -= 120  # the second took two: no further trial would end in time
    seeds.on_trial_complete("b", {"m": 1.0})
    assert seeds.suggest("d") == Searcher.FINISHED
    seeds.deadline = None
    assert seeds.suggest("e") == {"p": 3, "seed": 0, "seeds": 1}


def test_the_live_frontier_line_is_noise_aware_like_the_final_table():
    """A placement 0.005 'better' on mAP within a two-seed noise, and 1 % dearer in exact GFLOPs, is
    dominated by the base; the progress line counts the same frontier the final table will show."""
    from search.progress import Progress
    from search.space import Objective

    objectives = [Objective("map50_95", "maximize"), Objective("gflops", "minimize")]
    progress = Progress(lambda line: None, objectives, 3)
    progress.rows = {
        ("base", 0): {"map50_95": 0.80, "gflops": 100.0, "n_params": 1, "label": "base"},
        ("base", 1): {"map50_95": 0.82, "gflops": 100.0, "n_params": 1, "label": "base"},
        ("a", 0): {"map50_95": 0.815, "gflops": 101.0, "n_params": 1, "label": ""},
    }
    line = progress._frontier()
    assert "frontier 1 of 2 architectures" in line, line  # without the noise both would be on it
    assert "hypervolume" in line and "% of the box" in line
