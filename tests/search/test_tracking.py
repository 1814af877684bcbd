"""Tracking against a real MLflow SQLite store (no mocks).

Creating a fresh SQLite store runs MLflow's migrations (several seconds here), so the module shares one
store and each test works in its own experiment.
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest

from search.tracking import (
    DEFAULT_STORE_DIR,
    SweepTracker,
    TrackingError,
    check_tracking,
    default_tracking_uri,
    sanitize_metric_name,
    sanitize_metrics,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker(store_uri: str) -> SweepTracker:
    return SweepTracker(store_uri, f"exp-{uuid.uuid4().hex[:8]}")


def test_mlflow_is_the_library_not_the_repo_folder() -> None:
    path = Path(mlflow.__file__).resolve()
    assert "site-packages" in path.parts
    assert DEFAULT_STORE_DIR not in path.parents


def test_default_tracking_uri_points_into_repo_mlflow_folder() -> None:
    assert DEFAULT_STORE_DIR == REPO / "mlflow"
    assert default_tracking_uri() == f"sqlite:///{REPO / 'mlflow' / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("metrics/mAP50-95(B)", "metrics/mAP50-95_B"),
        ("metrics/precision(B)", "metrics/precision_B"),
        ("train/giou_loss", "train/giou_loss"),
        ("lr/pg0", "lr/pg0"),
        ("a:b", "a_b"),
        ("/a//b/", "a/b"),
        ("../x", "__/x"),
    ],
)
def test_sanitize_metric_name(name: str, expected: str) -> None:
    assert sanitize_metric_name(name) == expected


def test_sanitize_metric_name_rejects_empty() -> None:
    with pytest.raises(ValueError, match="no characters"):
        sanitize_metric_name("()")


def test_sanitize_metrics_drops_non_finite_and_non_numeric() -> None:
    out = sanitize_metrics(
        {"a(B)": 1, "b": np.float32(0.5), "nan": math.nan, "inf": -math.inf, "s": "x", "t": True, "n": None}
    )
    assert out == {"a_B": 1.0, "b": 0.5}


def test_parent_is_idempotent_and_reopens(tracker: SweepTracker) -> None:
    params = {"space": "placements", "budget": {"epochs": 3, "imgsz": 160}, "long": "x" * 7000}
    pid = tracker.parent("sweep-a", params, {"owner": "me"})
    assert tracker.parent("sweep-a", params, {}) == pid
    run = tracker.client.get_run(pid)
    assert run.info.status == "RUNNING"
    assert run.data.params["budget.epochs"] == "3"
    assert len(run.data.params["long"]) == 6000
    assert run.data.tags["sweep.role"] == "parent" and run.data.tags["owner"] == "me"

    tracker.finish(pid)
    assert tracker.client.get_run(pid).info.status == "FINISHED"
    assert tracker.parent("sweep-a", params, {}) == pid
    assert tracker.client.get_run(pid).info.status == "RUNNING"
    # Another sweep gets its own parent.
    assert tracker.parent("sweep-b", {}, {}) != pid


def test_child_is_one_run_per_trial_id(tracker: SweepTracker) -> None:
    pid = tracker.parent("sweep", {}, {})
    params = {"site.backbone": "ori", "lr": 0.01}
    cid = tracker.child(pid, "trial_0001", params, tags={"mlflow.runName": "t1 ori"})
    # Reattaching with the same params (a resume) and even a changed one must not raise.
    assert tracker.child(pid, "trial_0001", params, tags={}) == cid
    assert tracker.child(pid, "trial_0001", {**params, "lr": 0.5, "new": 1}, tags={}) == cid
    other = tracker.child(pid, "trial_0002", params, tags={})
    assert other != cid

    runs = tracker.children(pid)
    assert sorted(r.info.run_id for r in runs) == sorted([cid, other])
    run = tracker.client.get_run(cid)
    assert run.data.tags["mlflow.parentRunId"] == pid
    assert run.data.tags["trial.id"] == "trial_0001"
    assert run.info.run_name == "t1 ori"
    assert run.data.params == {"site.backbone": "ori", "lr": "0.01", "new": "1"}  # first value kept
    assert {r.info.run_id for r in tracker.runs_for_sweep("sweep")} == {pid, cid, other}

    tracker.finish(cid)
    assert tracker.child(pid, "trial_0001", params, tags={}, reopen=False) == cid
    assert tracker.client.get_run(cid).info.status == "FINISHED"
    tracker.child(pid, "trial_0001", params, tags={})
    assert tracker.client.get_run(cid).info.status == "RUNNING"


def test_metrics_logged_under_sanitized_names(tracker: SweepTracker) -> None:
    pid = tracker.parent("sweep", {}, {})
    cid = tracker.child(pid, "t", {}, tags={})
    for epoch, value in enumerate([0.1, 0.2]):
        tracker.log_metrics(cid, {"metrics/mAP50-95(B)": value, "train/loss": math.nan}, step=epoch)
    run = tracker.client.get_run(cid)
    assert run.data.metrics == {"metrics/mAP50-95_B": 0.2}
    history = tracker.client.get_metric_history(cid, "metrics/mAP50-95_B")
    assert [(m.step, m.value) for m in history] == [(0, 0.1), (1, 0.2)]


def test_finish_with_error_sets_failed_tag_and_artifact(tracker: SweepTracker, tmp_path: Path) -> None:
    pid = tracker.parent("sweep", {}, {})
    cid = tracker.child(pid, "t", {}, tags={})
    error = "Traceback ...\n" + "x" * 6000
    tracker.finish(cid, status="FAILED", error=error)
    run = tracker.client.get_run(cid)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == error[:5000]
    local = tracker.client.download_artifacts(cid, "error.txt", str(tmp_path))
    assert Path(local).read_text() == error
    # Artifacts land next to the SQLite database, not in the working directory.
    assert run.info.artifact_uri.startswith(Path(tracker.tracking_uri[len("sqlite:///") :]).parent.as_uri())


def test_finish_rejects_unknown_status(tracker: SweepTracker) -> None:
    pid = tracker.parent("sweep", {}, {})
    with pytest.raises(ValueError, match="status"):
        tracker.finish(pid, status="DONE")


def test_a_deleted_run_is_ended_first(tracker: SweepTracker) -> None:
    """A seed that lost the race for its architecture's run deletes the one it opened: not left RUNNING."""
    pid = tracker.parent("sweep", {}, {})
    lost = tracker.create_child(pid, "architecture", {}, tags={})
    tracker.delete(lost)
    run = tracker.client.get_run(lost)
    assert (run.info.lifecycle_stage, run.info.status) == ("deleted", "KILLED")
    assert lost not in {r.info.run_id for r in tracker.children(pid)}


def test_close_dangling_kills_running_children(tracker: SweepTracker) -> None:
    pid = tracker.parent("sweep", {}, {})
    done = tracker.child(pid, "a", {}, tags={})
    dangling = tracker.child(pid, "b", {}, tags={})
    tracker.finish(done)
    assert tracker.close_dangling(pid) == [dangling]
    statuses = {r.info.run_id: r.info.status for r in tracker.children(pid)}
    assert statuses == {done: "FINISHED", dangling: "KILLED"}
    assert tracker.client.get_run(pid).info.status == "RUNNING"  # the parent is the caller's to end


def test_check_tracking_closed_port_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"at {uri} is unreachable"):
        check_tracking(uri, timeout_s=3)
    assert time.monotonic() - start < 5


def test_check_tracking_local_stores(tmp_path: Path) -> None:
    check_tracking(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert (tmp_path / "new").is_dir()
    check_tracking((tmp_path / "mlruns").as_uri())
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrackingError, match="cannot create folder"):
        check_tracking(f"sqlite:///{blocker / 'sub' / 'mlflow.db'}")
