"""GhostModuleV3 blocks for RT-DETR, their exact deploy forms, and their registration with Ultralytics."""

from .fused import HGBlockGhostV3, RepC3GhostV3, RepNCSPELAN4GhostV3, reparameterize_model
from .ghost import MODES, GhostModuleV3, fuse_conv_bn
from .registry import BLOCKS, is_registered, register

__all__ = [
    "BLOCKS",
    "MODES",
    "GhostModuleV3",
    "HGBlockGhostV3",
    "RepC3GhostV3",
    "RepNCSPELAN4GhostV3",
    "fuse_conv_bn",
    "is_registered",
    "register",
    "reparameterize_model",
]
