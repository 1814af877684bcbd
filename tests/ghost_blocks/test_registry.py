"""register(): Ultralytics' yaml parser builds our blocks, with channel changes and stride 2, in any model yaml."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from ultralytics.nn import tasks
from ultralytics.nn.tasks import RTDETRDetectionModel
from ultralytics.utils import ROOT

import ghost_blocks
from ghost_blocks import GhostModuleV3, HGBlockGhostV3, RepC3GhostV3, RepNCSPELAN4GhostV3

RTDETR_L = yaml.safe_load((ROOT / "cfg/models/rt-detr/rtdetr-l.yaml").read_text())


def hand_placed() -> dict:
    """rtdetr-l with backbone layer 5 replaced by the placement users copy by hand."""
    d = copy.deepcopy(RTDETR_L)
    d["backbone"][5] = [-1, 2, "GhostModuleV3", [512, 3]]
    return d


def test_register_is_idempotent():
    ghost_blocks.register()
    wrapped = tasks.parse_model
    ghost_blocks.register()
    assert tasks.parse_model is wrapped and ghost_blocks.is_registered()
    assert not hasattr(wrapped.ghost_blocks_original, "ghost_blocks_original")


def test_site_packages_are_untouched():
    import inspect

    assert "GhostModuleV3" not in inspect.getsource(tasks)


SMALL = {
    "nc": 3,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],  # 0
        [-1, 1, "GhostModuleV3", [24, 3, 2, "ori_shortcut_mul_conv15"]],  # 1: 16 -> 24, stride 2
        # 2: ratio 3, repeated; like every Conv-like layer, Ultralytics rounds c2 up to a multiple of 8
        [-1, 2, "GhostModuleV3", [13, 3, 1, "ori", 3]],
        [-1, 2, "HGBlockGhostV3", [8, 32, 3, False, False, "ori"]],  # 3
        [-1, 1, "RepNCSPELAN4GhostV3", [32, 32, 16, 1, "ori_shortcut_mul_conv15"]],  # 4
    ],
    "head": [
        [-1, 2, "RepC3GhostV3", [40, "ori"]],  # 5: 32 -> 40
        [-1, 1, "Conv", [8, 1, 1]],  # 6: Ultralytics must see 40 channels coming in
    ],
}


def test_parser_tracks_channel_changes_and_strides():
    from ultralytics.nn.tasks import parse_model

    model, _ = parse_model(copy.deepcopy(SMALL), ch=3, verbose=False)
    assert isinstance(model[1], GhostModuleV3) and (model[1].c1, model[1].c2, model[1].s) == (16, 24, 2)
    assert [(m.c1, m.c2, m.ratio) for m in model[2]] == [(24, 16, 3), (16, 16, 3)]
    assert isinstance(model[3], HGBlockGhostV3) and len(model[3].m) == 2
    assert isinstance(model[4], RepNCSPELAN4GhostV3) and isinstance(model[5], RepC3GhostV3)
    assert model[6].conv.in_channels == 40
    assert model[1].type == "ghost_blocks.GhostModuleV3" and model[1].i == 1 and model[1].f == -1
    x = torch.randn(1, 3, 64, 64)
    for m in model.eval():
        x = m(x)
    assert x.shape == (1, 8, 16, 16)  # two stride-2 layers


def test_unknown_mode_in_yaml_is_a_clear_error():
    d = copy.deepcopy(SMALL)
    d["backbone"][1][3][3] = "fast"
    with pytest.raises(ValueError, match="mode"):
        RTDETRDetectionModel(d, verbose=False)


def test_hand_placed_rtdetr_l_trains_a_step_saves_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = RTDETRDetectionModel(hand_placed(), nc=3, verbose=False)
    layer5 = model.model[5]
    assert isinstance(layer5, torch.nn.Sequential) and [type(m) for m in layer5] == [GhostModuleV3] * 2
    assert (layer5[0].c1, layer5[0].c2, layer5[0].k) == (512, 512, 3)
    model.nc = 3  # what Ultralytics' trainer sets before computing the loss
    model.train()
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]]),
    }
    before = layer5[0].primary_rpr_conv[0].conv.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss, _ = model.loss(batch)
    loss.sum().backward()
    opt.step()
    assert not torch.equal(before, layer5[0].primary_rpr_conv[0].conv.weight)
    model.eval()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        # fp64: in fp32 the decoder's top-k query selection can flip on last-bit differences between processes
        expected = copy.deepcopy(model).double()(x)[0]
    ckpt = tmp_path / "hand.pt"
    torch.save({"model": model, "train_args": {}}, ckpt)
    torch.save(x, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import search.ultra, torch
        import ghost_blocks
        ghost_blocks.register()
        from ultralytics import RTDETR
        model = RTDETR({str(ckpt)!r})
        inner = model.model.eval().double()
        assert type(inner.model[5][0]).__name__ == "GhostModuleV3"
        x = torch.load({str(tmp_path / "x.pt")!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            got = inner(x)[0]
        torch.testing.assert_close(got, expected)
        print("LOADED-OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "LOADED-OK" in out.stdout, out.stderr[-3000:]


def test_whole_model_reparameterisation_keeps_outputs_and_leaves_no_training_branches():
    d = hand_placed()
    d["head"][12] = [-1, 1, "GhostModuleV3", [256, 3, 2, "ori_shortcut_mul_conv15"]]  # layer 22, stride 2
    torch.manual_seed(0)
    model = RTDETRDetectionModel(d, nc=3, verbose=False).double().eval()
    from tests.helpers import randomize_bn

    randomize_bn(model, seed=5)
    x = torch.rand(1, 3, 96, 96, dtype=torch.float64)
    deployed = ghost_blocks.reparameterize_model(model)
    with torch.no_grad():
        # fp64: the decoder's top-k query selection makes fp32 comparisons of the final boxes brittle.
        torch.testing.assert_close(deployed(x)[0], model(x)[0], rtol=0, atol=1e-7)
        fused = deployed.fuse(verbose=False)  # Ultralytics' own conv+BN fuse runs after ours
        torch.testing.assert_close(fused(x)[0], model(x)[0], rtol=0, atol=1e-7)
    names = {n for n, _ in fused.named_modules()}
    assert not any("rpr" in n for n in names)
    assert any(isinstance(m, GhostModuleV3) for m in model.modules()) and any(
        "rpr" in n for n, _ in model.named_modules()
    )
