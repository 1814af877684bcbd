"""Checkpoints opened as data, never as code.

A checkpoint is the file researchers hand each other most ("here are my base weights"), and a pickle
can run anything when it is opened. Every ``.pt`` the service opens goes through Ultralytics' safe mode
(``torch.load(weights_only=True)`` against an allow-list of model classes, with this project's blocks
added by :func:`ghost_blocks.register`): :func:`search.ultra.setup` switches it on for the whole
process, so the loads Ultralytics makes inside its trainer are safe too, and :func:`load` here is the
one call the service makes itself. :func:`check_weights` is what the command lines run on a user's
``--weights`` before Ray starts or MLflow is written.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from . import ultra

__all__ = ["CheckpointError", "check_weights", "load", "tensors"]

LOGGER = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A file that is not a checkpoint the service will open: missing, unreadable, or holding more than data."""


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).replace("ERROR ❌️", "").split())
    return text[:300] or type(exc).__name__


def _foreign_globals(path: Path) -> list[str]:
    """The globals a checkpoint names that no model checkpoint needs (what a payload calls), at most 3."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: nothing to name
        return []
    known = ("torch.", "ultralytics.", "ghost_blocks.", "numpy.", "collections.OrderedDict", "pathlib.")
    return [n for n in names if not n.startswith(known)][:3]


def load(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, unpickled with ``weights_only=True`` and the allow-list.

    Raises:
        CheckpointError: the file is missing, not a torch checkpoint, or holds an object outside the
            allow-list (a pickled function call, an unknown class); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix != ".pt":
        raise CheckpointError(f"{path}: not a checkpoint (expected a .pt file saved by torch or Ultralytics)")
    ultra.setup()
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except (pickle.UnpicklingError, TypeError, RuntimeError, EOFError, OSError, ModuleNotFoundError,
            AttributeError, ValueError) as exc:  # fmt: skip
        # Ultralytics reports a refused global, a damaged file and a TorchScript archive as TypeError
        foreign = _foreign_globals(path)
        if foreign:
            raise CheckpointError(
                f"{path}: refused, it would run or build {', '.join(foreign)}, outside the allow-list of "
                "model classes (a checkpoint is opened as data, never as code)"
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint the service opens: {_first_line(exc)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def _float(t):
    return t.float() if t.is_floating_point() else t  # as Module.float(): counters stay integers


def tensors(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model tensors of a loaded checkpoint, by name (Ultralytics' EMA model first, as it loads them).

    Accepts Ultralytics' checkpoints (``model`` or ``ema`` an ``nn.Module``) and plain state dicts
    (``{"model": {name: tensor}}``, ``{"state_dict": ...}`` or the tensors themselves).
    """
    import torch

    for key in ("ema", "model", "state_dict"):
        value = ckpt.get(key)
        if isinstance(value, torch.nn.Module):
            return {k: _float(v) for k, v in value.state_dict().items()}
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return {k: _float(v) for k, v in value.items()}
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {k: _float(v) for k, v in ckpt.items()}
    return {}


def check_weights(path: str | Path, model, *, flag: str = "--weights") -> str:
    """Check a warm-start checkpoint against ``model`` (an ``nn.Module``, the base it is meant for).

    Returns:
        One line saying how many of ``model``'s tensors it fills (a partial match is fine).

    Raises:
        CheckpointError: the file is not a safe checkpoint (see :func:`load`) or not one tensor of it
            matches ``model`` by name and shape; the message starts with ``flag`` and the file.
    """
    try:
        theirs = tensors(load(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{flag} {exc}") from None
    if not theirs:
        raise CheckpointError(f"{flag} {path}: holds no model tensors")
    ours = model.state_dict()
    matched = sum(1 for k, v in theirs.items() if k in ours and ours[k].shape == v.shape)
    if not matched:
        raise CheckpointError(
            f"{flag} {path}: not one of its {len(theirs)} tensors matches the base model by name and shape"
        )
    return f"{flag} {path}: {matched} of the base's {len(ours)} tensors match by name and shape"
