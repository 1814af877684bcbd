"""The fused blocks: GhostModuleV3 where the Ultralytics block has its inner convs, exact after re-parameterisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from ultralytics.nn.modules.block import HGBlock, RepC3, RepNCSPELAN4

from ghost_blocks import (
    MODES,
    GhostModuleV3,
    HGBlockGhostV3,
    RepC3GhostV3,
    RepNCSPELAN4GhostV3,
    reparameterize_model,
)
from tests.helpers import randomize_bn

CASES = [
    (
        lambda mode: HGBlockGhostV3(8, 6, 16, 3, 2, False, False, mode=mode),
        HGBlock(8, 6, 16, 3, 2, False, False),
        8,
    ),
    (
        lambda mode: HGBlockGhostV3(12, 6, 12, 5, 3, True, True, mode=mode),
        HGBlock(12, 6, 12, 5, 3, True, True),
        12,
    ),
    (lambda mode: RepC3GhostV3(8, 12, 2, 1.0, mode=mode), RepC3(8, 12, 2, 1.0), 8),
    (lambda mode: RepC3GhostV3(8, 13, 1, 0.5, mode=mode), RepC3(8, 13, 1, 0.5), 8),
    (lambda mode: RepNCSPELAN4GhostV3(8, 16, 16, 8, 1, mode=mode), RepNCSPELAN4(8, 16, 16, 8, 1), 8),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("make", "original", "c1"), CASES)
def test_fused_block_is_exact_after_reparameterisation(make, original, c1, mode):
    torch.manual_seed(0)
    block = make(mode).double()
    randomize_bn(block, seed=3)
    block.eval()
    x = torch.randn(2, c1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        y = block(x)
        assert y.shape == original.double().eval()(x).shape  # same interface as the Ultralytics block
        deployed = reparameterize_model(block)
        assert not any(hasattr(m, "primary_rpr_conv") for m in deployed.modules())
        torch.testing.assert_close(deployed(x), y, rtol=0, atol=1e-9)
    assert any(hasattr(m, "primary_rpr_conv") for m in block.modules()), "works on a copy by default"


def test_ghost_modules_sit_where_the_inner_convolutions_were():
    hg = HGBlockGhostV3(8, 6, 16, 5, 3, True, False, mode="ori")
    assert [type(m) for m in hg.m] == [GhostModuleV3] * 3 and hg.m[0].k == 1 and hg.m[0].dw_size == 5
    assert HGBlockGhostV3(8, 6, 16, 3, 2).m[1].k == 3
    rep = RepC3GhostV3(8, 12, 3, mode="ori_shortcut_mul_conv15")
    assert [type(m) for m in rep.m] == [GhostModuleV3] * 3 and rep.m[0].mode == "ori_shortcut_mul_conv15"
    elan = RepNCSPELAN4GhostV3(8, 16, 16, 8, 1)
    assert isinstance(elan.cv2[1], GhostModuleV3) and isinstance(elan.cv3[1], GhostModuleV3)


def test_reparameterize_model_inplace():
    block = RepC3GhostV3(4, 4, 1)
    out = reparameterize_model(block, inplace=True)
    assert out is block and all(m.deployed for m in block.modules() if isinstance(m, GhostModuleV3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.m.modules())
