"""RT-DETR's own blocks with GhostModuleV3 in place of their inner convolutions.

Each class subclasses the Ultralytics block it varies, so its forward pass and its outer
1x1 convolutions are Ultralytics' own; only the inner convolutions are swapped.
"""

from __future__ import annotations

import copy

from torch import nn
from ultralytics.nn.modules.block import HGBlock, RepC3, RepNCSPELAN4

from .ghost import GhostModuleV3

__all__ = ["HGBlockGhostV3", "RepC3GhostV3", "RepNCSPELAN4GhostV3", "reparameterize_model"]


class HGBlockGhostV3(HGBlock):
    """HGBlock whose ``n`` inner convolutions are GhostModuleV3.

    A plain ``k x k`` inner conv becomes ``GhostModuleV3(k=k)``; a LightConv (1x1 then depthwise
    ``k x k``) becomes ``GhostModuleV3(k=1, dw_size=k)``, the same 1x1-then-depthwise shape.
    """

    def __init__(
        self,
        c1: int,
        cm: int,
        c2: int,
        k: int = 3,
        n: int = 6,
        lightconv: bool = False,
        shortcut: bool = False,
        mode: str = "ori",
    ):
        super().__init__(c1, cm, c2, k, n, lightconv, shortcut)
        kw = {"k": 1, "dw_size": k} if lightconv else {"k": k}
        self.m = nn.ModuleList(GhostModuleV3(c1 if i == 0 else cm, cm, mode=mode, **kw) for i in range(n))


class RepC3GhostV3(RepC3):
    """RepC3 whose RepConv chain is a chain of 3x3 GhostModuleV3."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0, mode: str = "ori"):
        super().__init__(c1, c2, 0, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostModuleV3(c_, c_, 3, 1, mode) for _ in range(n)))


class RepNCSPELAN4GhostV3(RepNCSPELAN4):
    """RepNCSPELAN4 whose two 3x3 convolutions after the RepCSP stages are GhostModuleV3."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 1, mode: str = "ori"):
        super().__init__(c1, c2, c3, c4, n)
        self.cv2[1] = GhostModuleV3(c4, c4, 3, 1, mode)
        self.cv3[1] = GhostModuleV3(c4, c4, 3, 1, mode)


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every GhostModuleV3 in its deploy form.

    Args:
        model: any module, e.g. an Ultralytics ``DetectionModel`` or ``RTDETR(...).model``.
        inplace: change ``model`` itself instead of a deep copy.
    """
    out = model if inplace else copy.deepcopy(model)
    for module in out.modules():
        if isinstance(module, GhostModuleV3):
            module.reparameterize()
    return out
