"""The pure yaml generator: a space point (params) on a base RT-DETR yaml -> a model yaml + its hash.

Nothing here does I/O or imports torch; every function returns new objects and leaves its inputs
unchanged.

Insertion semantics: a block inserted after layer ``L`` sits on ``L``'s output path. Every layer that
read ``L`` (by a relative index such as ``-1`` or by an absolute one, e.g. a Concat ``[-1, 17]`` or the
decoder's ``[21, 24, 27]``) reads the last block inserted after ``L`` instead. Several blocks inserted
after the same layer are chained in the order of their sites in the space file. Indices keep their
spelling: a relative ``from`` stays relative (recomputed), an absolute one stays absolute (remapped).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

from .layers import absolute, choice_layer, is_int, layer_channels, scale_info
from .space import Budget, Space, SpaceError, validate_params

__all__ = ["arch_hash", "materialize"]

# yaml arg positions holding channel counts, scaled by a proxy budget's width
_CHANNEL_ARGS = {
    "HGStem": (0, 1),
    "HGBlock": (0, 1),
    "HGBlockGhostV3": (0, 1),
    "Conv": (0,),
    "DWConv": (0,),
    "GhostModuleV3": (0,),
    "RepC3": (0,),
    "RepC3GhostV3": (0,),
    "RepNCSPELAN4": (0, 1, 2),
    "RepNCSPELAN4GhostV3": (0, 1, 2),
    "AIFI": (0,),  # the feed-forward width; AIFI's embedding width is its input's channels
    "ResNetLayer": (1,),  # c1 (args[0]) is re-derived from the producer afterwards
}
# yaml arg positions holding a repeat count (blocks that take n as an argument, not as yaml repeats)
_REPEAT_ARGS = {"ResNetLayer": 4, "RepNCSPELAN4": 3, "RepNCSPELAN4GhostV3": 3}
# RTDETRDecoder's defaults after nc: hd, nq, ndp, nh, ndl, d_ffn, dropout, act, eval_idx, nd
_DECODER_DEFAULTS = (256, 300, 4, 8, 6, 1024, 0.0, None, -1, 100)


def _remap(f: int | list, old_i: int, new_i: int, *, out: list[int]) -> int | list:
    """Point ``from`` of old layer ``old_i`` (now at ``new_i``) at each producer's output."""

    def one(x: int) -> int:
        a = x if x >= 0 else old_i + x
        if a < 0:  # the image: only the first layer reads it
            return x
        return out[a] - new_i if x < 0 else out[a]

    return [one(x) for x in f] if isinstance(f, list) else one(f)


def _width(c: int, width: float) -> int:
    return max(8, math.ceil(c * width / 8) * 8)


def _scale(layers: list, budget: Budget) -> None:
    """Shrink ``layers`` in place to ``budget``'s proxy (width, depth, decoder size)."""
    for layer in layers:
        _, n, m, args = layer
        if n > 1:
            layer[1] = max(1, round(n * budget.depth))
        if budget.width != 1:
            for p in _CHANNEL_ARGS.get(m, ()):
                if p < len(args) and is_int(args[p]):
                    args[p] = _width(args[p], budget.width)
        p = _REPEAT_ARGS.get(m)
        if p is not None and p < len(args) and is_int(args[p]) and args[p] > 1:
            args[p] = max(1, round(args[p] * budget.depth))
        if m == "RTDETRDecoder":
            # [nc, hd, nq, ndp, nh, ndl, d_ffn, dropout, act, eval_idx, nd]: fill the defaults up to what is set
            full = [args[0] if args else "nc", *args[1:]]
            full += list(_DECODER_DEFAULTS[len(full) - 1 :])
            for index, value in (
                (1, budget.hidden_dim),
                (2, budget.queries),
                (5, budget.decoder_layers),
                (6, budget.ffn),
                (10, budget.denoising),
            ):
                if value is not None:
                    full[index] = value
            keep = max(
                [3, len(args)]
                + [
                    i + 1
                    for i, v in ((5, budget.decoder_layers), (6, budget.ffn), (10, budget.denoising))
                    if v is not None
                ]
            )
            args[:] = full[:keep]


def _fit_channels(model: dict) -> None:
    """Re-derive the channel args Ultralytics does not infer, in place.

    ResNetLayer states its input channels (c1) explicitly: set it to its producer's output. AIFI's
    attention heads must divide its input channels: take the largest divisor not above the given count.
    Both are no-ops on a consistent yaml, e.g. every shipped base.
    """
    layers = model["backbone"] + model["head"]
    channels = layer_channels(model)
    for i, (f, _, m, args) in enumerate(layers):
        if m not in ("ResNetLayer", "AIFI") or isinstance(f, list):
            continue
        a = absolute(f, i)
        c_in = 3 if a < 0 else channels[a]
        if c_in is None:
            continue
        if m == "ResNetLayer":
            args[0] = c_in
        elif len(args) > 1 and is_int(args[1]) and c_in % args[1]:
            args[1] = max(h for h in range(1, args[1] + 1) if c_in % h == 0)


def materialize(
    space: Space, params: dict[str, str], base: dict | None = None, *, budget: Budget | None = None
) -> tuple[dict, str]:
    """Apply a space point to a base model yaml.

    Args:
        space: the space.
        params: site name -> choice name (missing sites keep, see ``validate_params``).
        base: base model dict (default ``space.base_yaml``); not modified.
        budget: a proxy budget (width/depth and the decoder's hidden_dim/queries/ffn/denoising) shrinks the
            result to train it cheaply.

    Returns:
        The model yaml dict (build it with Ultralytics after ``ghost_blocks.register()``) and its
        :func:`arch_hash`.
    """
    base = space.base_yaml if base is None else base
    layers = base["backbone"] + base["head"]
    replaced, inserted = _changes(space, params, base)
    start, out = _indices(len(layers), inserted)
    n_backbone = len(base["backbone"])
    backbone, head = [], []
    for j, layer in enumerate(layers):
        f, n, m, args = copy.deepcopy(replaced.get(j, layer))
        dest = backbone if j < n_backbone else head
        dest.append([_remap(f, j, start[j], out=out), n, m, args])
        dest.extend(copy.deepcopy(inserted.get(j, [])))

    new_lists = {"backbone": backbone, "head": head}
    model = {k: new_lists[k] if k in new_lists else copy.deepcopy(v) for k, v in base.items()}
    if budget is not None and budget.is_proxy:
        _scale(backbone + head, budget)
    _fit_channels(model)
    return model, arch_hash(model)


def layer_map(space: Space, params: dict[str, str], base: dict | None = None) -> list[int]:
    """The index each of the base model's layers has in the model :func:`materialize` builds for ``params``.

    Inserted blocks shift the layers after them; a warm start renames a base checkpoint's
    ``model.<i>.`` tensors with this map, so an unchanged layer receives its own weights.
    """
    base = space.base_yaml if base is None else base
    n = len(base["backbone"]) + len(base["head"])
    return _indices(n, _changes(space, params, base)[1])[0]


def _indices(n: int, inserted: dict[int, list]) -> tuple[list[int], list[int]]:
    """New index of each of ``n`` old layers, and of its output (the last block inserted after it)."""
    start, out, k = [], [], 0
    for j in range(n):
        start.append(k)
        k += 1 + len(inserted.get(j, ()))
        out.append(k - 1)
    return start, out


def _changes(
    space: Space, params: dict[str, str], base: dict
) -> tuple[dict[int, list], dict[int, list[list]]]:
    """The layers ``params`` replace (by index) and the blocks they insert after a layer, in site order."""
    params = validate_params(space, params)
    layers = base["backbone"] + base["head"]
    channels = layer_channels(base)
    replaced: dict[int, list] = {}
    inserted: dict[int, list[list]] = {}
    for site in space.sites:
        choice = site.choice(params[site.name])
        if choice.op == "keep":
            continue
        key = f"sites.{site.name}.choices.{choice.name}"
        if site.layer >= len(layers):
            raise SpaceError(f"{space.path}: {key}: layer {site.layer} is outside the given base model")
        try:
            new = choice_layer(choice, layers, site.layer, channels=channels)
        except ValueError as e:
            raise SpaceError(f"{space.path}: {key}: {e}") from None
        if choice.op == "replace":
            replaced[site.layer] = new
        else:  # chained after the layer in site order
            inserted.setdefault(site.layer, []).append(new)
    return replaced, inserted


def arch_hash(model_yaml: dict) -> str:
    """16 hex chars of sha256 over the architecture.

    Covers every layer with ``from`` made absolute (so relative and absolute spellings agree, and the
    backbone/head split does not matter), ``nc`` and the scale (depth, width, max_channels) the parser
    uses. Equal architectures hash equal however their params were named or ordered.
    """
    layers = model_yaml["backbone"] + model_yaml["head"]
    canon = {
        "nc": model_yaml.get("nc"),
        "scale": list(scale_info(model_yaml)),
        "layers": [[absolute(f, i), n, m, args] for i, (f, n, m, args) in enumerate(layers)],
    }
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
