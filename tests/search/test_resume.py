"""Fault tests with real Ray, Optuna and MLflow: the driver dies with SIGKILL and --resume completes the sweep."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from tests.helpers import last_epoch, tiny, uri

pytestmark = pytest.mark.slow

SAMPLES = 2  # architectures: the base (2 seeds) and the hand-made reference (1 seed)
TRIALS = 3
TINY = tiny(epochs=2)


def command(tmp: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "search.run", "--space", "modes", "--sampler", "grid", "--samples", str(SAMPLES),
        "--name", "faulty", "--storage-path", str(tmp / "ray"), "--tracking-uri", uri(tmp), *TINY, *extra,
        "--max-concurrent", "1",  # one trial at a time: each kill lands at a known point of one trial
    ]  # fmt: skip


def children(tmp: Path) -> list[mlflow.entities.Run]:
    log = tmp / "first.log"
    if log.exists() and "[sweep] faulty:" not in log.read_text():
        return []  # the driver is still creating the store; a second process migrating it at once would clash
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "trial"]


def kill_driver_when(
    tmp: Path, ready: Callable[[], bool], env: dict | None = None, limit_s: float = 600, extra: tuple = ()
) -> None:
    """Start a sweep, wait until ``ready()``, then SIGKILL the driver and the local Ray it started."""
    log = open(tmp / "first.log", "w")
    proc = subprocess.Popen(
        command(tmp, *extra),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.time() + limit_s
    try:
        while not ready():
            assert proc.poll() is None, (
                "the sweep ended before the fault: " + (tmp / "first.log").read_text()[-3000:]
            )
            assert time.time() < deadline, "timed out waiting for the fault point"
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a sweep that ended first has no group left to kill
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    time.sleep(3)  # Ray's trial workers exit once their raylet is gone


def resume_and_check(tmp: Path, extra: tuple = ()) -> list[mlflow.entities.Run]:
    done = subprocess.run(command(tmp, *extra, "--resume"), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    kids = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    archs = [r for r in runs if r.data.tags.get("sweep.role") == "architecture"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == TRIALS, [k.data.tags.get("trial.id") for k in kids]
    assert all(k.info.status == "FINISHED" and k.data.tags["trial.status"] == "ok" for k in kids)
    assert len({k.data.tags["trial.id"] for k in kids}) == TRIALS
    trained = [
        (k.data.tags["arch_hash"], k.data.params["seed"]) for k in kids if "reused_from" not in k.data.tags
    ]
    assert len(trained) == len(set(trained)), "no seed of an architecture trained twice"
    # one run per architecture, ended, with the mean over all its seeds (none lost, none counted twice)
    assert len(archs) == SAMPLES and all(a.info.status == "FINISHED" for a in archs)
    assert sorted(a.data.metrics["n_seeds"] for a in archs) == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"pareto.csv", "report.html"} <= artifacts
    assert any(k.data.tags.get("pareto") == "true" for k in kids)
    return kids


def test_killed_before_any_trial_finished(tmp_path):
    def started() -> bool:
        kids = children(tmp_path)
        state = list((tmp_path / "ray" / "faulty").glob("experiment_state-*.json"))
        return bool(kids) and bool(state) and not any(k.info.status == "FINISHED" for k in kids)

    kill_driver_when(tmp_path, started, env={"RTDETR_SEARCH_PAUSE_AFTER_EPOCH": "3"})  # not over too soon
    resume_and_check(tmp_path)


def test_killed_in_the_middle_of_a_trial_resumes_from_its_last_epoch(tmp_path):
    epochs = 5
    seen: dict[str, float] = {}  # trial id -> when it was first seen past its first epoch
    interrupted: list[str] = []

    def checkpoint_saved() -> bool:
        # A trial goes on to epoch 2 only after the driver has taken in epoch 1's checkpoint, and the
        # driver's experiment state (what --resume reads) is saved after that: a state file written
        # after the trial was seen in epoch 2 knows the checkpoint. Its files on disk alone do not.
        # The kill lands while such a trial still has an epoch to go; one that ends first does not count.
        running = [k for k in children(tmp_path) if k.info.status == "RUNNING"]
        mid = [k.data.tags["trial.id"] for k in running if 2 <= last_epoch(tmp_path, k) < epochs]
        for trial in mid:
            seen.setdefault(trial, time.time())
        states = list((tmp_path / "ray" / "faulty").glob("experiment_state-*.json"))
        # the sweep saves its state every 2 s
        interrupted[:] = [t for t in mid if any(p.stat().st_mtime > seen[t] + 1 for p in states)]
        return bool(interrupted)

    # Each epoch waits 3 s after its report, so the state saved every 2 s and the poll below both see the
    # trial between two epochs however fast this machine trains (a fast one used to finish all three first).
    kill_driver_when(
        tmp_path,
        checkpoint_saved,
        env={"RTDETR_SEARCH_PAUSE_AFTER_EPOCH": "3"},
        extra=("--epochs", str(epochs)),
    )
    kids = resume_and_check(tmp_path, extra=("--epochs", str(epochs)))
    resumed = [k for k in kids if k.data.tags["trial.id"] in interrupted]
    assert resumed and all(int(k.data.tags["resumed_from_epoch"]) >= 1 for k in resumed)
    assert all(k.data.metrics["trial/epochs_done"] == epochs for k in resumed)


def test_killed_after_the_last_trial_before_the_frontier(tmp_path):
    marker = "writing the frontier"
    kill_driver_when(
        tmp_path,
        lambda: marker in (tmp_path / "first.log").read_text(),
        env={"RTDETR_SEARCH_PAUSE_BEFORE_FRONTIER": "120"},
    )
    before = {k.info.run_id for k in children(tmp_path)}
    assert len(before) == TRIALS
    kids = resume_and_check(tmp_path)
    assert {k.info.run_id for k in kids} == before  # the same runs, none repeated
