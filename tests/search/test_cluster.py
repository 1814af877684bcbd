"""Sweeps on Ray clusters: simulated nodes with GPUs declared as resources, node loss, a separate Ray head."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import pytest
import ray
from ray.cluster_utils import Cluster

from search.config import SweepConfig
from search.space import load_space
from search.sweep import run_sweep
from tests.helpers import TINY_BUDGET, last_epoch, uri

pytestmark = pytest.mark.slow
TINY = TINY_BUDGET


def config(tmp: Path, **kw) -> SweepConfig:
    base = {
        "space": load_space("modes"),
        "budget": "cpu",
        "overrides": TINY,
        "samples": 3,
        "sampler": "grid",
        "max_concurrent": 3,
        "gpus_per_trial": 1,
        "cpus_per_trial": 1,
        "name": "cluster",
        "storage_path": str(tmp / "ray"),
        "tracking_uri": uri(tmp),
    }
    return SweepConfig(**{**base, **kw})


def child_runs(tmp: Path) -> list[mlflow.entities.Run]:
    if not (tmp / "ray").exists():
        return []  # the sweep is still creating the store; migrating it from two clients at once would clash
    client = mlflow.MlflowClient(tracking_uri=uri(tmp))
    exp = client.get_experiment_by_name("rtdetr-ghost-search")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id])
    return sorted(
        (r for r in runs if r.data.tags.get("sweep.role") == "trial"), key=lambda r: r.info.start_time
    )


@pytest.fixture
def make_cluster():
    made: list[Cluster] = []

    def make(head_gpus: int, head_cpus: int = 1) -> Cluster:
        made.append(
            Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "num_gpus": head_gpus})
        )
        return made[-1]

    yield make
    ray.shutdown()
    for c in made:
        c.shutdown()


def test_one_gpu_per_trial_on_a_two_node_cluster(tmp_path, make_cluster):
    cluster = make_cluster(head_gpus=1)
    cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address)
    run_sweep(config(tmp_path), say=lambda line: None)
    kids = child_runs(tmp_path)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)  # the base's 2 seeds, ori, gate
    slots = {k.info.run_id: (k.data.tags["node"], k.data.tags["gpu_ids"]) for k in kids}
    assert all(gpu != "none" for _, gpu in slots.values()), "every trial was given a GPU"
    assert all(k.data.tags["device"] == "cpu" for k in kids)  # declared GPUs, no CUDA here: trials run on CPU
    spans = [(k.info.start_time, k.info.end_time, k.info.run_id) for k in kids]
    overlapping = [(a, b) for a in spans for b in spans if a[2] < b[2] and a[0] < b[1] and b[0] < a[1]]
    for a, b in overlapping:
        assert slots[a[2]] != slots[b[2]], "concurrent trials saw different GPUs"
    for start, _, _ in spans:  # never more than the two declared GPUs busy at once
        assert sum(s <= start < e for s, e, _ in spans) <= 2
    assert overlapping, "two GPUs: two trials ran at the same time"
    base = [k for k in kids if k.data.params["stage3"] == "keep"]
    assert len(base) == 2 and base[0].info.start_time < base[1].info.end_time  # the seeds ran side by side
    assert slots[base[0].info.run_id] != slots[base[1].info.run_id]  # one GPU each


def test_half_a_gpu_per_trial_packs_two_trials_onto_one_declared_gpu(tmp_path, make_cluster):
    cluster = make_cluster(head_gpus=1, head_cpus=2)  # one GPU, declared: --gpus-per-trial 0.5
    ray.init(address=cluster.address)
    run_sweep(config(tmp_path, gpus_per_trial=0.5, max_concurrent=4), say=lambda line: None)
    kids = child_runs(tmp_path)
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)  # the base's 2 seeds, ori, gate
    assert all(k.data.tags["trial.status"] == "ok" for k in kids), "every packed trial trained"
    assert {k.data.tags["gpu_ids"] for k in kids} == {"0"}, "all on the one GPU"
    spans = [(k.info.start_time, k.info.end_time) for k in kids]
    at_once = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert at_once == 2, f"two trials share the GPU at a time, never more: {at_once}"


def test_a_node_lost_mid_trial_is_retried_elsewhere_and_the_sweep_completes(
    tmp_path, make_cluster, monkeypatch
):
    # each epoch holds 3 s after its report (the nodes' workers inherit this), so the node is removed while
    # the trial still trains however fast this machine is
    monkeypatch.setenv("RTDETR_SEARCH_PAUSE_AFTER_EPOCH", "3")
    cluster = make_cluster(head_gpus=0)  # a head without GPUs: trials land on worker nodes
    worker = cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address)
    cfg = config(tmp_path, samples=1, overrides={**TINY, "epochs": 5})
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            run_sweep(cfg, say=lambda line: None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline = time.time() + 600
    # Wait until the driver has taken in an epoch's checkpoint: the trial is told to go on only after it, so
    # an epoch logged after the first means the first's checkpoint is Ray's (its files alone are not enough).
    while not (kids := child_runs(tmp_path)) or last_epoch(tmp_path, kids[0]) < 2:
        assert thread.is_alive() and time.time() < deadline, errors
        time.sleep(1)
    first = kids[0]  # the base's first seed (one GPU: its second seed waits)
    lost = first.data.tags["node"]
    cluster.remove_node(worker)  # the node dies with the trial on it
    cluster.add_node(num_cpus=1, num_gpus=1)  # a replacement joins
    thread.join(timeout=900)
    assert not thread.is_alive() and not errors, errors
    runs = {r.info.run_id: r for r in child_runs(tmp_path)}
    assert len(runs) == 2 and all(r.data.tags["trial.status"] == "ok" for r in runs.values())
    run = runs[first.info.run_id]
    assert run.info.status == "FINISHED" and run.data.tags["trial.status"] == "ok"
    assert run.data.tags["node"] != lost, "retried on another node"
    assert int(run.data.tags["resumed_from_epoch"]) >= 1 and run.data.metrics["trial/epochs_done"] == 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_against_a_ray_head_started_as_a_separate_process(tmp_path):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    raytmp = tempfile.mkdtemp(
        prefix="ray", dir="/tmp"
    )  # short: Ray's unix socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # loopback only; a real cluster keeps token auth on
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", raytmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:  # the head is up once its GCS port accepts connections
            assert head.poll() is None and time.time() < deadline, "ray start --head did not come up"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        done = subprocess.run(
            [sys.executable, "-m", "search.run", "--space", "modes", "--sampler", "grid", "--samples", "2",
             "--address", f"127.0.0.1:{port}", "--name", "remote", "--storage-path", str(tmp_path / "ray"),
             "--tracking-uri", uri(tmp_path), "--epochs", "1", "--imgsz", "64", "--batch", "8", "--fraction", "0.25"],
            capture_output=True, text=True, timeout=900, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
        kids = child_runs(tmp_path)
        assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)  # the base's 2 seeds, ori
    finally:  # stop this head only (`ray stop` would stop every Ray on the machine)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(raytmp, ignore_errors=True)
