"""Export a trial of a real (tiny) sweep: deploy checkpoint, ONNX model, and their agreement check."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest

from search import deploy, export
from search.records import EXPERIMENT
from search.tracking import SweepTracker
from tests.helpers import TINY

SWEEP = ["--space", "modes", "--sampler", "grid", "--samples", "2", "--name", "s"]


# ------------------------------------------------------------------------------------- pure parts
def test_knee_is_the_point_nearest_the_ideal_after_min_max_normalising():
    # regrets: map (0, .25, 1), latency (1, 4/9, 0), gflops (1, .75, 0): distances 1.41, 0.91, 1.0
    points = [(0.5, 10.0, 5.0), (0.4, 5.0, 4.0), (0.1, 1.0, 1.0)]
    assert deploy.knee(points, [True, False, False]) == 1
    # scale does not matter, only the normalised position
    assert deploy.knee([(p[0], p[1] * 1000, p[2]) for p in points], [True, False, False]) == 1


def test_knee_ignores_an_objective_equal_everywhere_and_keeps_the_first_of_ties():
    assert deploy.knee([(0.4, 1.0), (0.5, 1.0)], [True, False]) == 1
    assert deploy.knee([(0.5, 2.0), (0.5, 2.0)], [True, False]) == 0
    with pytest.raises(ValueError, match="points"):
        deploy.knee([], [True])


def _run(run_id: str, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(metrics=metrics))


def test_pick_rules():
    runs = [
        _run("accurate", map50_95=0.5, latency_ms=10.0, gflops=5.0),
        _run("balanced", map50_95=0.4, latency_ms=5.0, gflops=4.0),
        _run("fast", map50_95=0.1, latency_ms=1.0, gflops=1.0),
    ]
    assert deploy.pick_run(runs, "map").info.run_id == "accurate"
    assert deploy.pick_run(runs, "latency").info.run_id == "fast"
    assert deploy.pick_run(runs, "knee").info.run_id == "balanced"
    # ties on mAP go to the faster run
    tie = [_run("slow", map50_95=0.5, latency_ms=9.0), _run("quick", map50_95=0.5, latency_ms=3.0)]
    assert deploy.pick_run(tie, "map").info.run_id == "quick"
    with pytest.raises(deploy.ExportError, match="gflops"):
        deploy.pick_run(tie, "knee")  # no gflops recorded
    # the knee is over the sweep's own objectives: a space that cares only for GFLOPs gets the cheapest
    assert deploy.pick_run(runs, "knee", (("gflops", False),)).info.run_id == "fast"
    assert deploy.pick_run(tie, "knee", (("map50_95", True), ("latency_ms", False))).info.run_id == "quick"


def _seed(run_id: str, seed: int, parent: str, map50_95: float) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id),
        data=SimpleNamespace(metrics={"map50_95": map50_95}, params={"seed": str(seed)},
                             tags={"mlflow.parentRunId": parent, "sweep.role": "trial"}),
    )  # fmt: skip


def test_the_export_takes_the_seed_nearest_its_architectures_mean_not_the_luckiest():
    seeds = [_seed("lucky", 0, "a", 0.50), _seed("typical", 1, "a", 0.41), _seed("unlucky", 2, "a", 0.30)]
    assert deploy.representative_seed(seeds, mean=0.40).info.run_id == "typical"
    # equally near: the lower seed
    assert deploy.representative_seed(seeds[::-1][1:], mean=0.355).info.run_id == "typical"
    with pytest.raises(ValueError, match="empty"):
        deploy.representative_seed([], 0.4)


def test_frontier_seeds_are_grouped_under_their_architecture_runs():
    arch = SimpleNamespace(
        info=SimpleNamespace(run_id="a"), data=SimpleNamespace(tags={"sweep.role": "architecture"})
    )
    parent = SimpleNamespace(
        info=SimpleNamespace(run_id="p"), data=SimpleNamespace(tags={"sweep.role": "parent"})
    )
    client = SimpleNamespace(get_run={"a": arch, "p": parent}.__getitem__)
    s0, s1, lone = _seed("s0", 0, "a", 0.4), _seed("s1", 1, "a", 0.5), _seed("lone", 0, "p", 0.3)
    groups = deploy.frontier_architectures(client, [s0, lone, s1])
    # a seed recorded straight under the sweep's parent (no architecture run) stands for itself
    assert [(a.info.run_id, [r.info.run_id for r in rs]) for a, rs in groups] == [
        ("a", ["s0", "s1"]), ("lone", ["lone"])
    ]  # fmt: skip


def test_compare_outputs_direct_permuted_and_failing():
    rng = np.random.default_rng(0)
    ours = rng.random((1, 20, 7), dtype=np.float32)
    assert deploy.compare_outputs(ours, ours + 1e-5)["matched"] == "direct"
    assert deploy.compare_outputs(ours, ours + 1e-5)["passed"]
    swapped = ours[:, rng.permutation(20)]  # near-tied queries swapped by top-k: the same detections
    result = deploy.compare_outputs(ours, swapped)
    assert result["passed"] and result["matched"] == "permuted" and result["max_abs_diff_matched"] == 0
    wrong = ours.copy()
    wrong[0, 3, 0] += 0.1
    assert not deploy.compare_outputs(ours, wrong)["passed"]
    assert not deploy.compare_outputs(ours, ours[:, :10])["passed"]


# ------------------------------------------------------------------------------- a real tiny sweep
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "search.run",
        *SWEEP,
        *TINY,
        "--storage-path",
        str(tmp / "ray"),
        "--tracking-uri",
        uri,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp, uri


def frontier(uri: str, sweep: str = "s") -> list:
    runs = SweepTracker(uri, EXPERIMENT).runs_for_sweep(sweep)
    front = [
        r
        for r in runs
        if r.data.tags.get("pareto") == "true"
        and r.data.tags.get("trial.status") == "ok"
        and r.data.tags.get("sweep.role") == "trial"  # a seed of a frontier architecture: it has weights
    ]
    assert front, "the tiny sweep left no frontier"
    return front


def architectures(uri: str) -> list[tuple]:
    """The frontier's architecture runs (their means), each with its seed runs."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    seeds: dict[str, list] = {}
    for r in frontier(uri):
        seeds.setdefault(r.data.tags["mlflow.parentRunId"], []).append(r)
    return [(client.get_run(parent), rs) for parent, rs in seeds.items()]


@pytest.fixture(scope="module")
def map_export(store) -> tuple[subprocess.CompletedProcess, dict, Path]:
    tmp, uri = store
    out = tmp / "map"
    cmd = [
        sys.executable,
        "-m",
        "search.export",
        "--sweep",
        "s",
        "--pick",
        "map",
        "--tracking-uri",
        uri,
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    record = json.loads((out / "export.json").read_text()) if (out / "export.json").exists() else {}
    return done, record, out


@pytest.mark.slow
def test_pick_map_exports_the_best_frontier_trial(store, map_export):
    tmp, uri = store
    done, record, out = map_export
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    # the architecture with the best mean mAP50-95 (ties: lower mean latency), then its typical seed
    arch, seeds = min(
        architectures(uri), key=lambda a: (-a[0].data.metrics["map50_95"], a[0].data.metrics["latency_ms"])
    )
    best = deploy.representative_seed(seeds, arch.data.metrics["map50_95"])
    assert record["run_id"] == best.info.run_id and record["pick"] == "map"
    assert record["metrics"]["map50_95"] == best.data.metrics["map50_95"]
    assert record["seed"] == best.data.params["seed"]
    assert record["architecture"]["run_id"] == arch.info.run_id
    assert record["architecture"]["n_seeds"] == arch.data.metrics["n_seeds"]
    assert record["architecture"]["metrics"]["map50_95"] == arch.data.metrics["map50_95"]
    assert f"exporting seed {best.data.params['seed']}" in done.stdout
    assert record["imgsz"] == 64  # the trial's training size, not 640
    client = mlflow.MlflowClient(tracking_uri=uri)
    artifact = client.download_artifacts(best.info.run_id, "model.yaml", str(tmp / "dl"))
    assert (out / "model.yaml").read_text() == Path(artifact).read_text()
    for name in ("model.yaml", "deploy.pt", "model.onnx"):
        assert (out / name).is_file()
    check = record["check"]
    # an untrained model's query scores are near-tied, so top-k may order the same detections differently
    # in ONNX Runtime: then every query must match one of PyTorch's one-to-one within the tolerance
    assert check["passed"], check
    if check["matched"] == "direct":
        assert check["max_abs_diff"] <= deploy.ATOL
    else:
        assert check["matched"] == "permuted" and check["max_abs_diff_matched"] <= deploy.ATOL, check
    assert check["shape"][:2] == [1, 30]  # the cpu proxy's 30 queries
    assert "max abs diff" in done.stdout and "passed" in done.stdout
    # a proxy sweep's weights are the scaled-down model, and the export says how to train the real one
    assert record["proxy"]["n_params"] == best.data.metrics["proxy/n_params"] < best.data.metrics["n_params"]
    assert "scaled-down proxy" in done.stdout and "--from-sweep s --budget full" in done.stdout


FRESH = textwrap.dedent(
    """
    import sys
    import search.ultra
    import ghost_blocks
    ghost_blocks.register()
    from ultralytics import RTDETR
    from search.deploy import default_image
    m = RTDETR(sys.argv[1])
    ghosts = [x for x in m.model.modules() if isinstance(x, ghost_blocks.GhostModuleV3)]
    assert ghosts, "the trial's model holds no GhostModuleV3"
    assert not any(hasattr(g, "primary_rpr_conv") for g in ghosts), "training branches left"
    r = m.predict(str(default_image()), imgsz=64, device="cpu", verbose=False)
    assert len(r) == 1 and r[0].boxes is not None
    print("OK", len(ghosts))
    """
)


@pytest.mark.slow
def test_deploy_checkpoint_loads_and_predicts_in_a_fresh_process(store):
    """The hand-made placement's trial (it holds GhostModuleV3), exported by its run id."""
    tmp, uri = store
    (ori,) = [r for r in _sweep_runs(uri, "s") if r.data.tags.get("sweep.role") == "trial"
              and r.data.params.get("stage3") == "ori"]  # fmt: skip
    out = tmp / "ori"
    assert export.main(["--run-id", ori.info.run_id, "--tracking-uri", uri, "--out", str(out)]) == 0
    done = subprocess.run(
        [sys.executable, "-c", FRESH, str(out / "deploy.pt")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "OK" in done.stdout


@pytest.mark.slow
def test_pick_knee_then_the_same_run_by_id(store, tmp_path, monkeypatch, capsys):
    _, uri = store
    assert (
        export.main(["--sweep", "s", "--pick", "knee", "--tracking-uri", uri, "--out", str(tmp_path / "k")])
        == 0
    )
    record = json.loads((tmp_path / "k" / "export.json").read_text())
    front = architectures(uri)  # the knee of the architectures' means, then that one's typical seed
    points = [[a.data.metrics[m] for m, _ in deploy.KNEE_OBJECTIVES] for a, _ in front]
    arch, seeds = front[deploy.knee(points, [up for _, up in deploy.KNEE_OBJECTIVES])]
    assert record["run_id"] == deploy.representative_seed(seeds, arch.data.metrics["map50_95"]).info.run_id
    assert record["pick"] == "knee" and record["check"]["passed"]

    monkeypatch.chdir(tmp_path)  # default --out is runs/export/<run-id> under the working directory
    assert export.main(["--run-id", record["run_id"], "--tracking-uri", uri]) == 0
    again = json.loads((tmp_path / "runs" / "export" / record["run_id"] / "export.json").read_text())
    assert again["pick"] == "run-id" and again["check"]["passed"]
    assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out


def _sweep_runs(uri: str, sweep: str) -> list:
    return SweepTracker(uri, EXPERIMENT).runs_for_sweep(sweep)


def _fake_sweep(uri: str, name: str, weights: Path, status: str) -> str:
    """A sweep record without training: one finished child run with the artifacts an ok trial has."""
    tracker = SweepTracker(uri, EXPERIMENT)
    parent = tracker.parent(name, {}, {})
    run_id = tracker.child(parent, "t0", {}, tags={"arch_hash": "0" * 16})
    tracker.log_metrics(run_id, {"map50_95": 0.1, "latency_ms": 1.0, "gflops": 1.0})
    tracker.log_dict(run_id, {"status": status, "weights": str(weights)}, "trial.json")
    tracker.log_text(run_id, "nc: 3\n", "model.yaml")
    tracker.set_tags(run_id, {"trial.status": status, "pareto": str(status == "ok").lower()})
    tracker.finish(run_id)
    tracker.finish(parent)
    return run_id


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", "0123456789abcdef"], "no MLflow run with id"),
        (["--sweep", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
        (["--sweep", "moved", "--pick", "latency"], "not on this machine"),
        (["--run-id", "abc", "--pick", "map"], "--pick only applies with --sweep"),
    ],
)
def test_user_errors_exit_2_with_one_line(store, tmp_path, capsys, args, message):
    tmp, uri = store
    if "failed-only" in args and not _sweep_runs(uri, "failed-only"):
        _fake_sweep(uri, "failed-only", tmp / "nowhere.pt", "failed")
    if "moved" in args and not _sweep_runs(uri, "moved"):
        _fake_sweep(uri, "moved", tmp / "other-machine" / "best.pt", "ok")
    out = tmp_path / "out"
    assert export.main([*args, "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing half-written


@pytest.mark.slow
def test_a_sweep_with_an_empty_frontier_exits_1_with_one_line(store, tmp_path, capsys):
    tmp, uri = store
    if not _sweep_runs(uri, "failed-only"):
        _fake_sweep(uri, "failed-only", tmp / "nowhere.pt", "failed")
    out = tmp_path / "out"
    assert (
        export.main(["--sweep", "failed-only", "--pick", "map", "--tracking-uri", uri, "--out", str(out)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert "no finished trial on the frontier" in err and len(err.splitlines()) == 1 and not out.exists()


def test_bad_flags_and_a_missing_store_exit_2(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert export.main(["--run-id", "x", "--tracking-uri", missing]) == 2
    assert "no MLflow tracking store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()  # looking never creates a store
    with pytest.raises(SystemExit) as exc:
        export.main(["--sweep", "s", "--pick", "best"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--pick" in err and len(err.splitlines()) == 1
