"""Cost on the deploy form: Ultralytics' own figures for rtdetr-l, a lock across processes, a cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from ultralytics import RTDETR
from ultralytics.utils.torch_utils import get_flops, get_num_params

from search.cost import deploy_form, latency, measure_cost, model_cost


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
    monkeypatch.setattr("search.cost.CACHE", tmp_path)
    net = RTDETR("rtdetr-l.yaml").model
    first = measure_cost(net, "abc123", latency_imgsz=64)
    second = measure_cost(net, "abc123", latency_imgsz=64)
    assert first["cost_cached"] is False and second["cost_cached"] is True
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
