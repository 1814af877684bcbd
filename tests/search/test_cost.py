"""Cost on the deploy form: Ultralytics' own figures for rtdetr-l, a lock across processes, a cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from ultralytics import RTDETR
from ultralytics.utils.torch_utils import get_flops, get_num_params

from search.cost import (
    CostError,
    DeviceUse,
    deploy_form,
    device_timing,
    latency,
    measure_cost,
    model_cost,
    onnx_latency,
    timing_plan,
)


def test_unmodified_rtdetr_l_gives_ultralytics_own_fused_figures():
    ours = model_cost(deploy_form(RTDETR("rtdetr-l.yaml").model))
    theirs = RTDETR("rtdetr-l.yaml").model.fuse(verbose=False)
    assert ours["n_params"] == get_num_params(theirs) == 32_148_140
    assert ours["gflops"] == get_flops(theirs, 640)
    assert f"{ours['gflops']:.1f}" == "105.7"  # what Ultralytics prints for the fused rtdetr-l


def test_deploy_form_counts_less_than_training_form_and_leaves_the_model_alone(tmp_path):
    d = RTDETR("rtdetr-l.yaml").model.yaml
    d["backbone"][5] = [-1, 2, "GhostModuleV3", [512, 3]]
    (tmp_path / "m.yaml").write_text(json.dumps(d))
    model = RTDETR(str(tmp_path / "m.yaml")).model
    deployed = deploy_form(model)
    assert any("rpr" in n for n, _ in model.named_modules())  # original untouched
    assert not any("rpr" in n for n, _ in deployed.named_modules())
    assert model_cost(deployed)["n_params"] < get_num_params(model)


def test_latency_reports_median_and_spread():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    out = latency(net, 32, torch.device("cpu"), min_runs=12, max_runs=12)
    assert out["latency_runs"] == 12
    assert 0 < out["latency_ms"] <= out["latency_p90_ms"]
    assert out["latency_iqr_ms"] >= 0


def test_cost_is_cached_per_architecture_device_and_size(tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path))
    net = RTDETR("rtdetr-l.yaml").model
    first = measure_cost(net, "abc123", latency_imgsz=64)
    second = measure_cost(net, "abc123", latency_imgsz=64)
    assert first["cost_cached"] is False and second["cost_cached"] is True
    assert len(list((tmp_path / "cost").glob("abc123-*.json"))) == 1  # the cache folder is read when used
    assert second["latency_ms"] == first["latency_ms"] and second["gflops"] == first["gflops"]
    assert measure_cost(net, "abc123", latency_imgsz=96)["cost_cached"] is False  # other size: measured


def test_two_processes_never_time_each_other(tmp_path):
    script = textwrap.dedent(
        """
        import json, sys, torch
        from search.cost import latency
        net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
        net[0] = torch.nn.Conv2d(3, 16, 3, padding=1)
        out = latency(net, 96, torch.device("cpu"), min_runs=15, max_runs=15)
        print(json.dumps(out["latency_window"]))
        """
    )
    env = {"RTDETR_SEARCH_LOCK_DIR": str(tmp_path)}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
        )
        for _ in range(2)
    ]
    windows = sorted(json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    (a0, a1), (b0, b1) = windows
    assert a1 <= b0, f"measurements overlapped: {windows}"


def test_cost_cache_is_not_served_across_a_code_change(tmp_path, monkeypatch):
    """A change to the blocks' code, torch or Ultralytics changes the code version: costs are measured again."""
    import search.provenance

    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    assert measure_cost(net, "abc123", latency_imgsz=32)["cost_cached"] is False
    assert measure_cost(net, "abc123", latency_imgsz=32)["cost_cached"] is True
    search.provenance.code_version.cache_clear()
    monkeypatch.setattr("search.provenance._PACKAGES", ("torch", "ultralytics-opencv-headless", "numpy"))
    try:
        assert measure_cost(net, "abc123", latency_imgsz=32)["cost_cached"] is False
    finally:
        search.provenance.code_version.cache_clear()


def _shipped_single_changes():
    from search.space import list_spaces, load_space

    for name in list_spaces():
        space = load_space(name)
        for site in space.sites:
            for choice in site.choices:
                if choice.op != "keep":
                    yield pytest.param(name, site.name, choice.name, id=f"{name}-{site.name}-{choice.name}")


@pytest.mark.parametrize(("space_name", "site", "choice"), list(_shipped_single_changes()))
def test_gflops_equal_a_direct_count_at_640_for_every_shipped_site_and_choice(space_name, site, choice):
    """Ultralytics' get_flops extrapolates from 1-stride-high inputs, where the gate at P5 skips its pooling;
    the figure must be the one a direct count of the real 640x640 forward pass gives (cpu proxy: fast)."""
    import thop
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from search.materialize import materialize
    from search.space import load_space

    space = load_space(space_name)
    model_yaml, _ = materialize(space, {site: choice}, budget=space.budgets["cpu"])
    deployed = deploy_form(RTDETRDetectionModel(model_yaml, verbose=False))
    direct = thop.profile(deployed, inputs=[torch.empty(1, 3, 640, 640)], verbose=False)[0] / 1e9 * 2
    assert model_cost(deployed)["gflops"] == pytest.approx(direct, rel=1e-12)


def test_latency_is_fp16_with_200_synchronised_runs_on_a_gpu_and_fp32_on_the_cpu():
    gpu = timing_plan(torch.device("cuda:0"))
    assert gpu["precision"] == "fp16" and gpu["min_runs"] >= 200
    assert timing_plan(torch.device("cuda:0"), "fp32")["precision"] == "fp32"
    assert timing_plan(torch.device("cpu")) == {"precision": "fp32"}
    with pytest.raises(CostError, match="fp16 latency needs a CUDA device"):
        timing_plan(torch.device("cpu"), "fp16")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(CostError, match="fp16 needs CUDA"):
        latency(net, 32, torch.device("cpu"), precision="fp16")


def test_measured_cost_names_its_precision_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    out = measure_cost(net, "abc123", latency_imgsz=32)
    assert out["latency_precision"] == "fp32" and out["latency_torch"] == torch.__version__
    assert out["latency_cuda"] == (torch.version.cuda or "none")


def test_onnx_runtime_times_an_exported_model_under_its_own_name(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(tmp_path / "m.onnx"), dynamo=False)
    out = onnx_latency(tmp_path / "m.onnx", 32, torch.device("cpu"), min_runs=12, max_runs=12)
    assert out["latency_ort_provider"] == "CPUExecutionProvider" and out["latency_ort_runs"] == 12
    assert 0 < out["latency_ort_ms"] <= out["latency_ort_p90_ms"] and out["latency_ort_iqr_ms"] >= 0


def test_gpu_timing_waits_for_the_batch_in_flight_and_holds_off_the_next(tmp_path, monkeypatch):
    """Packed trials on one GPU: a timing never overlaps a training batch of any trial on that GPU."""
    import threading

    monkeypatch.setenv("RTDETR_SEARCH_LOCK_DIR", str(tmp_path))
    events: list[str] = []
    batch = DeviceUse("gpu-test")
    other_gpu = DeviceUse("gpu-other")
    batch.acquire()  # a batch of one trial is in flight
    other_gpu.acquire()  # ... and one on another GPU, which a timing here does not wait for
    started, timed = threading.Event(), threading.Event()

    def timer() -> None:
        started.set()
        with device_timing("gpu-test"):
            events.append("timing")
            timed.wait(timeout=30)  # hold the GPU until the next batch is queued behind the timing
            events.append("timing done")  # still holding it: the next batch cannot have run yet

    def next_batch() -> None:
        nxt = DeviceUse("gpu-test")
        nxt.acquire()
        events.append("next batch")
        nxt.release()

    t = threading.Thread(target=timer)
    t.start()
    started.wait(timeout=30)
    t.join(timeout=0.5)
    assert events == [], "the timing waits for the batch in flight"
    batch.release()
    for _ in range(100):
        if events:
            break
        t.join(timeout=0.1)
    assert events == ["timing"]
    b = threading.Thread(target=next_batch)
    b.start()
    b.join(timeout=0.5)
    assert events == ["timing"], "a new batch waits while the GPU is being timed"
    timed.set()
    t.join(timeout=30)
    b.join(timeout=30)
    assert events == ["timing", "timing done", "next batch"]
    other_gpu.release()
    with device_timing(None):  # the CPU: nothing to hold
        pass
