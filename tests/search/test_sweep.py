"""Real sweeps: Ray Tune + Optuna + an MLflow store in a temp dir, the built-in data, a tiny budget."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow
import pytest

from search.frontier import pareto_front

TINY = ["--epochs", "1", "--imgsz", "64", "--batch", "8", "--fraction", "0.25"]
METRICS = ("map50_95", "map50", "latency_ms", "gflops", "n_params")

FAIL_SPACE = """
name: fail
description: one site whose 'broken' choice builds a model that cannot be measured
base: rtdetr-l
objectives:
  - {metric: map50_95, direction: maximize}
  - {metric: latency_ms, direction: minimize}
  - {metric: gflops, direction: minimize}
budgets:
  cpu: {epochs: 1, imgsz: 64, batch: 8, fraction: 0.25, width: 0.25, depth: 0.34, hidden_dim: 64, queries: 100}
  full: {epochs: 1, imgsz: 64, batch: 8}
sites:
  lateral:
    layer: 12
    choices:
      keep: keep
      ori: {op: replace, block: GhostModuleV3, mode: ori}
      broken: {op: replace, block: GhostModuleV3, mode: ori, args: [256, 3, 2]}  # stride 2 breaks the FPN
"""


def sweep(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "search.run",
        "--storage-path",
        str(tmp / "ray"),
        "--tracking-uri",
        uri(tmp),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


def uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def runs(tmp: Path) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run], mlflow.MlflowClient]:
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    everything = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "one parent run per sweep"
    children = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(everything) - 1
    return parents[0], children, client


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    done = sweep(tmp, "--space", "modes", "--sampler", "grid", "--name", "ablation", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp, done


def test_grid_sweep_records_one_parent_and_a_child_per_trial(grid_sweep):
    tmp, done = grid_sweep
    parent, children, client = runs(tmp)
    assert parent.info.status == "FINISHED"
    for key in ("space", "sampler", "seed", "budget", "base"):
        assert key in parent.data.params
    assert parent.data.params["sampler"] == "grid"
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40  # the tests run inside the repo's checkout
    assert parent.data.params["git_commit"] == parent.data.tags["mlflow.source.git.commit"]
    assert len(children) == 3
    assert sorted(c.data.params["stage3"] for c in children) == [
        "gate",
        "keep",
        "ori",
    ]  # the whole ablation table
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["trial.status"] == "ok"
        assert len(child.data.tags["arch_hash"]) == 16
        for key in METRICS:
            assert key in child.data.metrics, key
        assert 0 <= child.data.metrics["map50_95"] <= 1 and child.data.metrics["latency_ms"] > 0
        # the per-epoch curves under valid MLflow names (Ultralytics' keys hold parentheses)
        assert "metrics/mAP50-95_B" in child.data.metrics and "train/giou_loss" in child.data.metrics
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"model.yaml", "results.csv", "trial.json"} <= artifacts
        # what a user compares runs by, first: the choices as params and name, the objectives before bookkeeping
        assert set(child.data.params) == {"stage3"}
        choice, trial_id = child.data.params["stage3"], child.data.tags["trial.id"]
        words = "unmodified base" if choice == "keep" else f"stage3 {choice}"
        assert child.info.run_name == f"{words} [{trial_id}]"
        assert "epoch" not in child.data.metrics and child.data.metrics["trial/epochs_done"] == 1
        assert (
            min(child.data.metrics) in METRICS
        )  # MLflow's compare view plots the first name in sorted order


def test_frontier_is_tagged_and_attached_to_the_parent(grid_sweep):
    tmp, done = grid_sweep
    parent, children, client = runs(tmp)
    points = [[c.data.metrics[m] for m in ("map50_95", "latency_ms", "gflops")] for c in children]
    expected = {children[i].info.run_id for i in pareto_front(points, ["maximize", "minimize", "minimize"])}
    tagged = {c.info.run_id for c in children if c.data.tags.get("pareto") == "true"}
    assert tagged == expected and tagged
    assert all(c.data.tags.get("pareto") in ("true", "false") for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "frontier.png", "frontier.html", "report.html", "space.yaml"} <= artifacts
    # the space as its trials were built and trained: the resolved budget, and it loads as a space again
    import yaml

    from search.space import load_space, parse_space

    logged = yaml.safe_load(
        Path(client.download_artifacts(parent.info.run_id, "space.yaml", str(tmp))).read_text()
    )
    again = parse_space(logged, "space.yaml")
    assert again.sites == load_space("modes").sites and again.references == load_space("modes").references
    assert (again.budgets["cpu"].epochs, again.budgets["cpu"].imgsz) == (
        1,
        64,
    )  # the sweep's --epochs, --imgsz
    report = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp))).read_text()
    # the modes grid trains both marked points: the report finds them among its trials and marks them
    from search.report import BASE_TEXT
    from search.space import load_space

    HAND_TEXT = load_space("modes").references[0].caption  # noqa: N806

    report = report.replace("&#x27;", "'")
    assert f"{BASE_TEXT}: large marker" in report and f"{HAND_TEXT}: large marker" in report
    assert "not among these trials" not in report
    from tests.search.test_report import Tables

    labels = {cells[-2][0]: cells[1][0] for cells in Tables(report).find(id="trials")}
    assert labels == {"(base)": "base", "stage3=ori": "hand", "stage3=gate": ""}
    assert report.count('class="hl" fill="#e6b800"') == 2 and report.count('class="hl" fill="#2ca02c"') == 2
    for child in children:  # the objectives are the final validation's, logged once
        assert len(client.get_metric_history(child.info.run_id, "map50_95")) == 1
    csv_text = Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp))).read_text()
    assert len(csv_text.strip().splitlines()) == 1 + len(expected)
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in history] == [1, 2, 3]
    assert all(a.value <= b.value for a, b in zip(history, history[1:], strict=False))  # never decreases
    # the terminal shows progress lines and the frontier table, not Ray's status table
    assert "[sweep] frontier of ablation" in done.stdout and "pending" in done.stdout
    assert "Trial status:" not in done.stdout
    # each running trial's progress per epoch, the frontier's size and hypervolume, a link to the frontier's runs
    assert re.search(r"\[sweep\] \w+ stage3=(ori|gate): epoch 1/1, map50_95 [0-9.e-]+", done.stdout)
    assert re.search(r"\| frontier [1-3] of [1-3], hypervolume [0-9.e-]+", done.stdout)
    front_ids = {c.info.run_id for c in children if c.data.tags.get("pareto") == "true"}
    assert re.search(
        r"the sweep's runs: http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning",
        done.stdout,
    )
    link = re.search(r"/#/compare-runs\?runs=(\S+?)&experiments=", done.stdout)
    assert link and set(json.loads(urllib.parse.unquote_plus(link.group(1)))) == front_ids
    for ray_banner in ("Configuration for experiment", "TensorBoard", "View detailed results here"):
        assert ray_banner not in done.stdout + done.stderr


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on_without_training_an_architecture_twice(tmp_path):
    space = tmp_path / "fail.yaml"
    space.write_text(FAIL_SPACE)
    done = sweep(
        tmp_path, "--space", str(space), "--sampler", "random", "--samples", "6", "--seed", "3", *TINY
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    parent, children, client = runs(tmp_path)
    assert len(children) == 6 and parent.info.status == "FINISHED"
    assert not [c for c in children if c.info.status == "RUNNING"]
    failed = [c for c in children if c.data.params["lateral"] == "broken"]
    assert failed, "the seeded sampler proposes the broken point"
    for c in failed:
        assert c.info.status == "FAILED" and c.data.tags["trial.status"] == "failed"
        assert "FLOPs" in c.data.tags["error"]
    good = [c for c in children if c.data.params["lateral"] != "broken"]
    trained = [c for c in good if "reused_from" not in c.data.tags]
    reused = [c for c in good if "reused_from" in c.data.tags]
    hashes = [c.data.tags["arch_hash"] for c in trained]
    assert len(hashes) == len(set(hashes)), "no architecture is trained twice"
    assert reused, "6 samples of 3 points repeat an architecture"
    by_id = {c.info.run_id: c for c in trained}
    for c in reused:
        original = by_id[c.data.tags["reused_from"]]
        assert original.data.tags["arch_hash"] == c.data.tags["arch_hash"]
        assert c.data.metrics["map50_95"] == original.data.metrics["map50_95"]
        assert c.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--space", "nope"], "nope"),
        (["--space", "modes", "--samples", "0"], "--samples"),
        (["--space", "modes", "--sampler", "grid", "--samples", "5"], "grid"),
        (["--space", "modes", "--data", "/nonexistent/data.yaml"], "does not exist"),
        (["--space", "modes", "--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--space", "modes", "--resume"], "--name"),
        (["--space", "modes", "--resume", "--name", "never"], "no sweep named"),
        (["--space", "modes", "--gpus-per-trial", "2"], "--gpus-per-trial must be at most 1"),
        (["--space", "modes", "--address", "127.0.0.1:9"], "no Ray cluster answers"),
        (["--space", "modes", "--max-failures", "-1"], "--max-failures"),
        (["--space", "BADOBJ"], "objectives may be"),
    ],
)
def test_bad_input_exits_2_before_anything_is_written(tmp_path, args, needle):
    if "BADOBJ" in args:  # a space whose objective no trial reports
        bad = tmp_path / "badobj.yaml"
        bad.write_text(FAIL_SPACE.replace("metric: latency_ms", "metric: latency_p99_ms"))
        args = [str(bad) if a == "BADOBJ" else a for a in args]
    cmd = [sys.executable, "-m", "search.run", "--storage-path", str(tmp_path / "ray"), *args]
    if "--tracking-uri" not in args:
        cmd += ["--tracking-uri", uri(tmp_path)]
    # an unreachable Ray cluster must not hang on Ray's connection retries: refused within a minute
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60 if "--address" in args else 300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ray").exists()
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(tracking_uri=uri(tmp_path))
        assert not client.search_experiments() or not client.search_runs(
            [e.experiment_id for e in client.search_experiments()]
        )


def test_an_existing_sweep_is_never_overwritten(grid_sweep):
    tmp, _ = grid_sweep
    done = sweep(tmp, "--space", "modes", "--name", "ablation", *TINY)
    assert done.returncode == 2 and "already exists" in done.stderr and "--resume" in done.stderr
    parent, children, _ = runs(tmp)
    assert len(children) == 3


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (["--epochs", "2"], "--epochs (was 1, now 2)"),
        (["--imgsz", "96"], "--imgsz (was 64, now 96)"),
        (["--seed", "5"], "--seed (was 0, now 5)"),
        (["--max-gflops", "50"], "--max-gflops (was None, now 50.0)"),
        (["--lr0", "0.01"], "--lr0"),
    ],
)
def test_resume_with_a_changed_training_setup_exits_2_naming_the_flags(grid_sweep, changed, named):
    """A result trained under one setup is never reused under another: the resume is refused."""
    tmp, _ = grid_sweep
    parent, children, client = runs(tmp)
    # the sweep's own values, then the changed one (argparse keeps the last)
    done = sweep(
        tmp, "--space", "modes", "--sampler", "grid", "--name", "ablation", "--resume", *TINY, *changed
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    after, kids, _ = runs(tmp)
    assert after.data.params == parent.data.params and len(kids) == len(children)
    assert after.info.status == "FINISHED"


def test_a_sweep_name_whose_ray_state_is_elsewhere_never_merges_into_its_mlflow_parent(grid_sweep, tmp_path):
    """Same --name and tracking store, another --storage-path: refused, nothing written."""
    tmp, _ = grid_sweep
    parent, children, _ = runs(tmp)
    cmd = [sys.executable, "-m", "search.run", "--space", "modes", "--name", "ablation", *TINY,
           "--storage-path", str(tmp_path / "elsewhere"), "--tracking-uri", uri(tmp)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "is taken in MLflow" in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "elsewhere").exists()
    after, kids, _ = runs(tmp)
    assert len(kids) == len(children) and after.data.params == parent.data.params


def test_the_frontier_of_a_past_sweep_prints_from_mlflow(grid_sweep):
    tmp, _ = grid_sweep
    parent, children, _ = runs(tmp)
    cmd = [sys.executable, "-m", "search.pareto", "--sweep", "ablation", "--tracking-uri", uri(tmp)]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr[-2000:]
    on_front = [c.data.tags["trial.id"] for c in children if c.data.tags.get("pareto") == "true"]
    assert all(t in text.stdout for t in on_front)
    as_json = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert sorted(r["trial_id"] for r in json.loads(as_json.stdout)) == sorted(on_front)
    missing = subprocess.run(
        [*cmd[:-4], "--sweep", "nope", "--tracking-uri", uri(tmp)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
