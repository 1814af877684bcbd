"""Layer-level yaml arithmetic shared by space validation and the generator: channel counts as
Ultralytics' parser computes them, and the yaml layer a replace or insert choice puts into a model.

Pure functions over plain yaml lists; nothing here imports torch or Ultralytics, or the space module.
"""

from __future__ import annotations

import copy
import math
from typing import Any

__all__ = ["BLOCKS", "absolute", "choice_layer", "is_int", "layer_channels", "scale_info"]

# Our blocks and the base layer types each may replace. A fused block is a drop-in only for its own
# Ultralytics block (same yaml args, same channel arithmetic); GhostModuleV3 stands in for a conv.
BLOCKS: dict[str, tuple[str, ...]] = {
    "GhostModuleV3": ("Conv", "DWConv", "HGBlock", "RepC3", "RepNCSPELAN4"),
    "HGBlockGhostV3": ("HGBlock",),
    "RepC3GhostV3": ("RepC3",),
    "RepNCSPELAN4GhostV3": ("RepNCSPELAN4",),
}

# Layer types whose output channels Ultralytics computes as make_divisible(min(c2, max_ch) * width, 8)
# from args[0]; our blocks are parsed through such a stand-in (Conv, RepC3, RepNCSPELAN4).
_CONV_LIKE = (
    "Conv",
    "DWConv",
    "GhostModuleV3",
    "RepC3",
    "RepC3GhostV3",
    "RepNCSPELAN4",
    "RepNCSPELAN4GhostV3",
)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def absolute(f: int | list, i: int) -> int | list:
    """``from`` of layer ``i`` with relative indices made absolute (-1 at layer 0 is the image)."""
    if isinstance(f, list):
        return [x if x >= 0 else i + x for x in f]
    return f if f >= 0 else i + f


def scale_info(model: dict) -> tuple[float, float, float]:
    """(depth, width, max_channels) as Ultralytics' parser reads them."""
    scales = model.get("scales")
    if scales:
        return tuple(scales[model.get("scale") or next(iter(scales))])
    return model.get("depth_multiple", 1.0), model.get("width_multiple", 1.0), math.inf


def layer_channels(model: dict, ch: int = 3) -> list[int | None]:
    """Output channels of every layer (backbone+head), following Ultralytics' parser.

    None where it cannot be known from the yaml (the decoder, unknown modules fed by several inputs).
    """
    _, width, max_ch = scale_info(model)
    out: list[int | None] = []

    def src(j: int) -> int | None:
        return ch if j < 0 else out[j]

    for i, (f, _, m, args) in enumerate(model["backbone"] + model["head"]):
        f = absolute(f, i)
        if m in _CONV_LIKE:
            c = math.ceil(min(args[0], max_ch) * width / 8) * 8
        elif m in ("HGStem", "HGBlock", "HGBlockGhostV3"):
            c = args[1]
        elif m == "ResNetLayer":
            c = args[1] if args[3] else args[1] * (args[5] if len(args) > 5 else 4)
        elif m == "Concat":
            parts = [src(j) for j in f]
            c = None if None in parts else sum(parts)
        elif m == "RTDETRDecoder" or isinstance(f, list):
            c = None
        else:  # AIFI, nn.Upsample, ...: channels pass through
            c = src(f)
        out.append(c)
    return out


def _ghost_args(m: str, args: list) -> list:
    """[c2, k, s] for a GhostModuleV3 that replaces a base layer of type ``m``."""
    if m in ("Conv", "DWConv"):
        k = args[1] if len(args) > 1 and args[1] is not None else 1
        return [args[0], k, args[2] if len(args) > 2 else 1]
    if m == "HGBlock":
        return [args[1], args[2] if len(args) > 2 else 3, 1]
    return [args[0], 3, 1]  # RepC3, RepNCSPELAN4: their inner convolutions are 3x3


def choice_layer(choice, layers: list, index: int, *, channels: list[int | None]) -> list:
    """The yaml layer ``[from, repeats, module, args]`` that ``choice`` puts at or after ``layers[index]``.

    Args:
        choice: a replace or insert choice.
        layers: the base model's backbone+head layers.
        index: the site's layer.
        channels: :func:`layer_channels` of the base model.

    Raises:
        ValueError: the choice does not fit that layer.
    """
    f, n, m, args = layers[index]
    if choice.op == "replace":
        if not any(m in targets for targets in BLOCKS.values()):
            raise ValueError(
                f"cannot replace layer {index} ({m}): only Conv-like and block layers can be replaced"
            )
        if m not in BLOCKS[choice.block]:
            raise ValueError(
                f"{choice.block} can only replace {', '.join(BLOCKS[choice.block])}, "
                f"layer {index} is {m}: choice makes channels not fit"
            )
        if choice.block == "GhostModuleV3":
            new = list(choice.args) if choice.args is not None else _ghost_args(m, args)
            reps = choice.repeats or 1
        else:  # a fused block keeps its base block's args and repeats unless given
            new = list(choice.args) if choice.args is not None else list(args)
            reps = choice.repeats or n
        if choice.block == "GhostModuleV3" and new[1:2] and new[1] % 2 == 0:
            raise ValueError(f"GhostModuleV3 needs an odd kernel; layer {index} ({m}) gives k={new[1]}")
        return [copy.deepcopy(f), reps, choice.block, _with_mode(choice.block, new, choice.mode)]
    if m == "RTDETRDecoder" or index == len(layers) - 1:
        raise ValueError(f"cannot insert after layer {index} ({m}): it is the model's output")
    if choice.args is not None:
        new = list(choice.args)
    elif choice.block != "GhostModuleV3":
        raise ValueError(f"inserting {choice.block} needs explicit args")
    elif channels[index] is None:
        raise ValueError(f"cannot infer the output channels of layer {index} ({m}); give explicit args")
    else:
        new = [channels[index], 3, 1]
    return [-1, choice.repeats or 1, choice.block, _with_mode(choice.block, new, choice.mode)]


# GhostModuleV3 takes its mode positionally after [c2, k, s]: shorter args are padded with its defaults
# (k=1, s=1) so that the mode never lands in k or s. The fused blocks take the mode as a trailing string.
_GHOST_DEFAULTS = (None, 1, 1)


def _with_mode(block: str, args: list, mode: str) -> list:
    """The yaml args of ``block`` with ``mode`` in its place."""
    if block == "GhostModuleV3":
        args = [*args, *_GHOST_DEFAULTS[len(args) :]]
    return [*args, mode]
