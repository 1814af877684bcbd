"""Make Ultralytics' yaml parser build GhostModuleV3 and the fused blocks.

Ultralytics' ``parse_model`` infers input and output channels only for the classes it knows; an
unknown class gets its yaml args unchanged and is assumed to keep its input's channel count. So a
plain name injection cannot express ``[-1, 1, GhostModuleV3, [512, 3, 2]]`` after a 256-channel
layer. Instead, ``register()`` wraps ``ultralytics.nn.tasks.parse_model``: each of our layers is
first parsed as the Ultralytics block with the same channel arithmetic (its *stand-in*: ``Conv`` for
GhostModuleV3, ``HGBlock`` for HGBlockGhostV3, ...), so Ultralytics itself resolves ``from``
indices, width and depth scaling and channel bookkeeping for every later layer; then the stand-in
is swapped for our block, built with the channels Ultralytics gave the stand-in. Nothing in
site-packages is edited and the parser is not copied.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .fused import HGBlockGhostV3, RepC3GhostV3, RepNCSPELAN4GhostV3
from .ghost import GhostModuleV3

__all__ = ["BLOCKS", "register", "is_registered"]

LOGGER = logging.getLogger(__name__)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Spec:
    """How one of our yaml names is parsed: its stand-in and how to build it from the stand-in's channels."""

    cls: type[nn.Module]
    standin: str
    n_standin_args: int  # leading yaml args the stand-in takes (the ones its channel arithmetic reads)
    defaults: tuple  # defaults for those leading args when the yaml omits them
    build: Callable[[int, int, nn.Module, list], nn.Module]


def _split_mode(args: list) -> tuple[list, str]:
    """Fused blocks take their Ultralytics block's args followed by an optional mode string."""
    if args and isinstance(args[-1], str):
        return list(args[:-1]), args[-1]
    return list(args), "ori"


def _chain(make: Callable[[int], nn.Module], c1: int, c2: int, reps: int) -> nn.Module:
    """``reps`` copies of a block, the first taking ``c1`` channels and the rest ``c2``."""
    blocks = [make(c1 if i == 0 else c2) for i in range(reps)]
    return blocks[0] if reps == 1 else nn.Sequential(*blocks)


def _reps(standin: nn.Module) -> int:
    return len(standin) if isinstance(standin, nn.Sequential) else 1


def _build_ghost(c1: int, c2: int, standin: nn.Module, args: list) -> nn.Module:
    for i, name in ((1, "k"), (2, "s")):  # the positional form is [c2, k, s, mode, ...]
        if i < len(args) and isinstance(args[i], str):
            raise ValueError(
                f"GhostModuleV3 yaml args are [c2, k, s, mode, ratio, dw_size, relu]: {name} must be an int, "
                f"got {args[i]!r} in {args!r}"
            )
    return _chain(lambda ci: GhostModuleV3(ci, c2, *args[1:]), c1, c2, _reps(standin))


def _build_hgblock(c1: int, c2: int, standin: nn.Module, args: list) -> nn.Module:
    args, mode = _split_mode(args)
    if len(args) < 3:  # HGBlock's kernel size defaults to 3
        args = [*args, 3]
    cm, _, k, *rest = args
    return HGBlockGhostV3(c1, cm, c2, k, len(standin.m), *rest, mode=mode)


def _build_repc3(c1: int, c2: int, standin: nn.Module, args: list) -> nn.Module:
    args, mode = _split_mode(args)
    return RepC3GhostV3(c1, c2, len(standin.m), *args[1:], mode=mode)


def _build_elan(c1: int, c2: int, standin: nn.Module, args: list) -> nn.Module:
    args, mode = _split_mode(args)
    return _chain(lambda ci: RepNCSPELAN4GhostV3(ci, c2, *args[1:], mode=mode), c1, c2, _reps(standin))


BLOCKS: dict[str, _Spec] = {
    "GhostModuleV3": _Spec(GhostModuleV3, "Conv", 1, (), _build_ghost),
    "HGBlockGhostV3": _Spec(HGBlockGhostV3, "HGBlock", 3, (None, None, 3), _build_hgblock),
    "RepC3GhostV3": _Spec(RepC3GhostV3, "RepC3", 1, (), _build_repc3),
    "RepNCSPELAN4GhostV3": _Spec(RepNCSPELAN4GhostV3, "RepNCSPELAN4", 3, (), _build_elan),
}


def _standin_args(spec: _Spec, args: list) -> list:
    lead, _ = _split_mode(args) if spec.cls is not GhostModuleV3 else (list(args), None)
    lead = lead[: spec.n_standin_args]
    for i in range(len(lead), spec.n_standin_args):
        if i >= len(spec.defaults) or spec.defaults[i] is None:
            raise ValueError(f"{spec.cls.__name__}: yaml args {args!r} need at least {i + 1} values")
        lead.append(spec.defaults[i])
    return lead


def _io_channels(module: nn.Module) -> tuple[int, int]:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[0].in_channels, convs[-1].out_channels


def _make_parse_model(original: Callable) -> Callable:
    def parse_model(d, ch, verbose=True):
        d = copy.deepcopy(d)
        ours: dict[int, tuple[str, list]] = {}
        for i, layer in enumerate(d["backbone"] + d["head"]):
            name = layer[2]
            if name in BLOCKS:
                spec = BLOCKS[name]
                ours[i] = (name, list(layer[3]))
                layer[2], layer[3] = spec.standin, _standin_args(spec, layer[3])
        model, save = original(d, ch, verbose)
        for i, (name, args) in ours.items():
            standin = model[i]
            c1, c2 = _io_channels(standin)
            block = BLOCKS[name].build(c1, c2, standin, args)
            block.np = sum(p.numel() for p in block.parameters())
            block.i, block.f, block.type = standin.i, standin.f, f"ghost_blocks.{name}"
            model[i] = block
            if verbose:
                LOGGER.info(
                    f"{i:>3} {name} replaces its stand-in {BLOCKS[name].standin}: {c1}->{c2}, {block.np} params"
                )
        return model, save

    parse_model.ghost_blocks_original = original
    return parse_model


def is_registered() -> bool:
    """Whether ``register()`` has hooked Ultralytics' parser in this process."""
    from ultralytics.nn import tasks

    return hasattr(tasks.parse_model, "ghost_blocks_original")


def register() -> None:
    """Teach Ultralytics' yaml parser our block names. Idempotent and thread-safe.

    Call it before building a model from a yaml that names our blocks, and before training or
    loading a checkpoint of such a model (the trainer rebuilds the model from its yaml).
    """
    from ultralytics.nn import tasks

    with _LOCK:
        if not is_registered():
            tasks.parse_model = _make_parse_model(tasks.parse_model)
        for name, spec in BLOCKS.items():
            setattr(tasks, name, spec.cls)  # so any name lookup in tasks' globals finds the class
        # Ultralytics' opt-in weights_only loading accepts only allow-listed classes: ours, and RT-DETR's
        # loss, which its list lacks and a model pickled after a training step holds as its `criterion`.
        from ultralytics.models.utils.loss import RTDETRDetectionLoss
        from ultralytics.models.utils.ops import HungarianMatcher

        torch.serialization.add_safe_globals(
            [*(spec.cls for spec in BLOCKS.values()), RTDETRDetectionLoss, HungarianMatcher]
        )
