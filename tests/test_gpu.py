"""Checks that need a CUDA device: run with `python -m pytest -m gpu tests/test_gpu.py` on a GPU machine."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from ghost_blocks import MODES, GhostModuleV3
from tests.helpers import randomize_bn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    # fp32: exact up to float rounding; fp16 (latency's default precision on a GPU): the same function to
    # half precision's resolution, against the fp32 training form
    [(torch.float32, 0, 1e-4), (torch.float16, 1e-2, 1e-2)],
)
def test_deploy_form_is_exact_on_the_gpu(dtype, rtol, atol):
    for i, (k, s, mode) in enumerate(itertools.product([1, 3, 5], [1, 2], MODES)):
        m = GhostModuleV3(32, 63, k, s, mode, 2, 3).cuda()
        randomize_bn(m, seed=i)
        m.eval()
        x = torch.randn(2, 32, 40, 40, device="cuda")
        with torch.no_grad():
            y = m(x)
            m.reparameterize()
            torch.testing.assert_close(m.to(dtype)(x.to(dtype)).float(), y, rtol=rtol, atol=atol)


def test_latency_on_the_gpu_is_synchronised_and_named():
    from search.cost import device_name, latency

    net = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(8)]).cuda()
    net[0] = torch.nn.Conv2d(3, 64, 3, padding=1).cuda()
    from search.cost import timing_plan

    plan = timing_plan(torch.device("cuda:0"))
    out = latency(net, 320, torch.device("cuda:0"), **plan)
    assert out["latency_ms"] > 0 and out["latency_p90_ms"] >= out["latency_ms"]
    assert out["latency_precision"] == "fp16" and out["latency_runs"] >= 200
    assert device_name(torch.device("cuda:0")).startswith("cuda:")


def test_a_trial_trains_on_the_gpu(tmp_path: Path):
    from search.materialize import materialize
    from search.space import load_space
    from search.training import TrialSpec, run_trial

    space = load_space("modes")
    model_yaml, _ = materialize(space, {"stage3": "gate"})  # the full rtdetr-l with the hand placement
    reports = []
    result = run_trial(
        TrialSpec(model_yaml=model_yaml, out=tmp_path, epochs=3, imgsz=320, batch=16, device="0"),
        report=lambda metrics, last: reports.append(metrics),
    )
    assert result["status"] == "ok" and result["latency_device"].startswith("cuda:")
    assert result["latency_precision"] == "fp16" and result["latency_cuda"] == torch.version.cuda
    assert len(reports) == 3 and 0 <= result["map50_95"] <= 1
    print(
        {
            k: result[k]
            for k in ("map50_95", "map50", "latency_ms", "latency_p90_ms", "gflops", "n_params", "train_s")
        }
    )
