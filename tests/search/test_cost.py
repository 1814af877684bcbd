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


def test_cost_cache_is_not_served_across_a_code_change(tmp_path, monkeypatch):
    """A change to the blocks' code, torch or Ultralytics changes the code version: costs are measured again."""
    import search.provenance

    monkeypatch.setattr("search.cost.CACHE", tmp_path)
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
