"""Search spaces: declarative YAML files in ``spaces/``, parsed and validated into frozen dataclasses.

A space names a base RT-DETR yaml, the objectives, the training budgets and a set of *sites*. A site
is one Optuna categorical parameter: it points at a layer of the base model (its index in
backbone+head, before any insertion) and offers named choices, each either ``keep`` (no change),
``replace`` the layer with one of our blocks, or ``insert`` one of our blocks after it.

Every problem a user's file can cause raises :class:`SpaceError`, with a one-line message naming the
file, the key path and the problem. Heavy libraries (torch, ultralytics) are not imported here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .frontier import Objective
from .layers import BLOCKS, choice_layer, layer_channels
from .records import TRIAL_METRICS

__all__ = [
    "BLOCKS",
    "MODES",
    "SHIPPED_BASES",
    "SPACES_DIR",
    "Budget",
    "Choice",
    "Constraints",
    "Objective",
    "Reference",
    "Site",
    "Space",
    "SpaceError",
    "list_spaces",
    "load_base",
    "load_space",
    "parse_space",
    "validate_params",
]

SPACES_DIR = Path(__file__).resolve().parents[1] / "spaces"
SHIPPED_BASES = ("rtdetr-l", "rtdetr-x", "rtdetr-resnet50", "rtdetr-resnet101")
# Kept in step with ghost_blocks.MODES by a test; duplicated so that loading a space needs no torch.
MODES = ("ori", "ori_shortcut_mul_conv15")
OPS = ("keep", "replace", "insert")
DIRECTIONS = ("maximize", "minimize")

_TOP_KEYS = (
    "name", "description", "base", "objectives", "map_evaluator", "constraints", "budgets", "sites", "references"
)  # fmt: skip
# What a trial's map50_95 and map50 are: the COCO protocol's figures (faster-coco-eval, the default; what
# papers quote) or Ultralytics' own. Both are always logged, as map50_95_coco and map50_95_ultralytics.
MAP_EVALUATORS = ("coco", "ultralytics")
_TOP_REQUIRED = ("name", "base", "objectives", "budgets", "sites")
_SITE_KEYS = ("layer", "choices", "description")
_CHOICE_KEYS = ("op", "block", "mode", "args", "repeats")
_CONSTRAINT_KEYS = ("max_latency_ms", "max_gflops")
_REQUIRED_BUDGETS = ("cpu", "full")
# Site and choice names become Optuna/MLflow parameter names and key-path segments: no dots or spaces.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class SpaceError(ValueError):
    """A space file (or a params dict for it) is invalid. The message is one line."""


def _err(path: str, key: str, problem: str) -> SpaceError:
    key = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(key))  # a key is named on one line
    return SpaceError(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


@dataclass(frozen=True)
class Choice:
    """One value of a site. ``op`` is ``keep`` (no change), ``replace`` or ``insert``.

    ``args`` are the block's yaml args without the mode (None: derived from the base layer) and
    ``repeats`` its yaml repeats (None: derived); both are None for ``keep``.
    """

    name: str
    op: str
    block: str | None = None
    mode: str | None = None
    args: tuple | None = None
    repeats: int | None = None


@dataclass(frozen=True)
class Site:
    """One categorical parameter: a base-model layer index and the choices offered there."""

    name: str
    layer: int
    choices: tuple[Choice, ...]

    def choice(self, name: str) -> Choice:
        """The choice called ``name`` (KeyError if there is none)."""
        for c in self.choices:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def default(self) -> str | None:
        """Name of the first ``keep`` choice, used when a params dict omits this site."""
        return next((c.name for c in self.choices if c.op == "keep"), None)


@dataclass(frozen=True)
class Budget:
    """How long and how big a trial trains. Keys other than these are rejected."""

    name: str
    epochs: int  # training epochs
    imgsz: int  # train/val image size; a multiple of 32, RT-DETR's largest stride
    batch: int  # images per batch
    fraction: float = 1.0  # fraction of the training split used, in (0, 1]
    width: float = 1.0  # channel multiplier for the proxy model (1.0: the architecture as written)
    depth: float = 1.0  # repeat multiplier for the proxy model (1.0: as written)
    hidden_dim: int | None = None  # RT-DETR decoder hidden dim (None: Ultralytics' 256); a multiple of 8
    queries: int | None = None  # RT-DETR decoder object queries (None: Ultralytics' 300)
    ffn: int | None = None  # RT-DETR decoder feed-forward width (None: Ultralytics' 1024)
    denoising: int | None = None  # RT-DETR denoising queries in training (None: Ultralytics' 100; 0: none)
    decoder_layers: int | None = None  # RT-DETR decoder layers (None: Ultralytics' 6)
    lr0: float | None = None  # initial learning rate (None: Ultralytics' default)
    patience: int | None = None  # early-stopping patience in epochs (None: Ultralytics' default)
    workers: int | None = None  # dataloader workers; 0 loads in the main process (None: default)
    # a fair warm start (search.pretrain): every trial starts from the base trained this many epochs at this
    # budget on the training split (or from ``weights``, when given), with every site's layers left fresh in
    # every architecture, the base included (None or 0: no such warm start)
    pretrain: int | None = None
    # warm start: a checkpoint of the base model; every trial loads each tensor whose name (its layer renamed
    # to its place after any insertion) and shape match. A relative path is relative to the space file.
    weights: str | None = None
    # any other Ultralytics train() argument, e.g. {optimizer: AdamW, mosaic: 0.0}; checked against
    # Ultralytics' own list of arguments, and never one the service sets itself
    train: dict = field(default_factory=dict, hash=False)

    @property
    def is_proxy(self) -> bool:
        """Whether this budget trains a scaled-down proxy instead of the architecture as written."""
        decoder = (self.hidden_dim, self.queries, self.ffn, self.denoising, self.decoder_layers)
        return self.width != 1 or self.depth != 1 or any(v is not None for v in decoder)


@dataclass(frozen=True)
class Constraints:
    """Optional hard limits; a trial over a limit is kept off the frontier."""

    max_latency_ms: float | None = None
    max_gflops: float | None = None


@dataclass(frozen=True)
class Reference:
    """A point of the space a user compares against (e.g. a placement made by hand), marked in reports."""

    name: str
    params: tuple[tuple[str, str], ...]  # (site, choice) for every site, in file order
    caption: str


@dataclass(frozen=True)
class Space:
    """A validated search space."""

    name: str
    path: str
    description: str
    base: str  # a shipped base name (rtdetr-l, ...) or the absolute path of a base yaml
    base_yaml: dict = field(repr=False, compare=False)
    objectives: tuple[Objective, ...]
    sites: tuple[Site, ...]
    budgets: dict[str, Budget]
    constraints: Constraints = Constraints()
    references: tuple[Reference, ...] = ()
    map_evaluator: str = "coco"  # one of MAP_EVALUATORS

    @property
    def base_point(self) -> dict[str, str] | None:
        """The unmodified base: every site keeps its layer (its first ``keep`` choice); None when a site has
        no ``keep`` choice, so the space does not hold the base."""
        point = {site.name: site.default for site in self.sites}
        return point if all(point.values()) else None

    @property
    def size(self) -> int:
        """Number of distinct parameter dicts (product of the choice counts)."""
        return math.prod(len(s.choices) for s in self.sites)

    def site(self, name: str) -> Site:
        """The site called ``name`` (KeyError if there is none)."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def points(self) -> Iterator[dict[str, str]]:
        """Every params dict, in file order (the last site varies fastest)."""
        names = [s.name for s in self.sites]
        for combo in itertools.product(*([c.name for c in s.choices] for s in self.sites)):
            yield dict(zip(names, combo, strict=True))

    def point(self, index: int) -> dict[str, str]:
        """The ``index``-th params dict of :meth:`points`, without iterating."""
        out: dict[str, str] = {}
        for s in reversed(self.sites):
            index, r = divmod(index, len(s.choices))
            out[s.name] = s.choices[r].name
        return {s.name: out[s.name] for s in self.sites}

    def random_points(self, n: int, seed: int) -> list[dict[str, str]]:
        """``n`` params dicts drawn with ``seed``: distinct while ``n <= size``, then cycling."""
        if n < 0:
            raise ValueError(f"`n` must be >= 0, got {n}")
        order = random.Random(seed).sample(range(self.size), min(n, self.size))
        return [self.point(order[i % len(order)]) for i in range(n)] if order else []


# ----------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, label: str) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise _err(label, "", f"cannot read file ({e.strerror or e})") from e
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as e:
        raise _err(label, "", "invalid YAML: " + " ".join(str(e).split())) from e


def list_spaces() -> list[str]:
    """Names of the spaces shipped in ``spaces/``, sorted."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> Space:
    """Read and validate a space.

    Args:
        name_or_path: a shipped space name (``placements``), or a path to a yaml file (anything
            containing ``/`` or ending in ``.yaml``/``.yml``).
    """
    s = str(name_or_path)
    if "/" in s or s.endswith((".yaml", ".yml")):
        path = Path(s).expanduser().resolve()
    else:
        path = SPACES_DIR / f"{s}.yaml"
        if not path.is_file():
            raise _err(str(path), "", f"no space named {s!r} (shipped: {', '.join(list_spaces())})")
    if not path.is_file():
        raise _err(str(path), "", "no such space file")
    return parse_space(_read_yaml(path, str(path)), str(path))


def _shipped_base_path(name: str) -> Path:
    # find_spec locates ultralytics without importing it (and torch with it).
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("ultralytics is not installed; it ships the base RT-DETR yamls")
    return Path(spec.submodule_search_locations[0]) / "cfg" / "models" / "rt-detr" / f"{name}.yaml"


def load_base(base: str, relative_to: str | Path = ".") -> tuple[str, dict]:
    """Resolve and read a base model yaml.

    Args:
        base: a shipped name (``rtdetr-l``, ...) or a yaml path.
        relative_to: folder a relative path is resolved against (the space file's folder).

    Returns:
        The resolved base (the shipped name, or an absolute path) and the loaded model dict. Like
        Ultralytics when it loads a yaml file, a single-entry ``scales`` also sets ``scale``.
    """
    if base in SHIPPED_BASES:
        resolved, path = base, _shipped_base_path(base)
    elif "/" not in base and not base.endswith((".yaml", ".yml")):
        raise ValueError(f"unknown base {base!r} (expected {', '.join(SHIPPED_BASES)}, or a yaml path)")
    else:
        path = Path(base).expanduser()
        path = (path if path.is_absolute() else Path(relative_to) / path).resolve()
        resolved = str(path)
    if not path.is_file():
        raise ValueError(f"no such base yaml {str(path)!r} (shipped: {', '.join(SHIPPED_BASES)})")
    data = yaml.safe_load(path.read_text())
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("backbone"), list)
        or not isinstance(data.get("head"), list)
    ):
        raise ValueError(f"base yaml {str(path)!r} has no 'backbone' and 'head' layer lists")
    scales = data.get("scales")
    if isinstance(scales, dict) and len(scales) == 1 and "scale" not in data:
        data["scale"] = next(iter(scales))
    return resolved, data


# ----------------------------------------------------------------------------- parsing


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    """A finite number (YAML's .nan and .inf are floats too, and no budget, constraint or arg means them)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _among(value: Any, names) -> bool:
    """Whether ``value`` is one of the names (a list or a mapping from the file is not, and never raises)."""
    return isinstance(value, str) and value in names


def _mapping(path: str, key: str, value: Any, *, allowed: tuple, required: tuple = ()) -> dict:
    """Check ``value`` is a mapping with only ``allowed`` keys and all ``required`` ones."""
    if not isinstance(value, dict):
        raise _err(path, key, f"expected a mapping, got {value!r}")
    for k in value:
        if k not in allowed:
            where = f"{key}.{k}" if key else str(k)
            raise _err(path, where, f"unknown key (expected {', '.join(allowed)})")
    for k in required:
        if k not in value:
            raise _err(path, f"{key}.{k}" if key else k, "missing required key")
    return value


def _name(path: str, key: str, value: Any, *, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise _err(path, key, f"invalid {what} name {value!r} (letters, digits, '_' and '-')")
    return value


def _objectives(path: str, raw: Any) -> tuple[Objective, ...]:
    if not isinstance(raw, list) or not raw:
        raise _err(path, "objectives", f"expected a non-empty list, got {raw!r}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        key = f"objectives.{i}"
        item = _mapping(path, key, item, allowed=("metric", "direction"), required=("metric", "direction"))
        metric, direction = item["metric"], item["direction"]
        if not _among(metric, TRIAL_METRICS):
            raise _err(
                path,
                f"{key}.metric",
                f"no trial reports {metric!r} (objectives may be {', '.join(TRIAL_METRICS)})",
            )
        if not _among(direction, DIRECTIONS):
            raise _err(
                path,
                f"{key}.direction",
                f"unknown direction {direction!r} (expected {', '.join(DIRECTIONS)})",
            )
        if any(o.metric == metric for o in out):
            raise _err(path, f"{key}.metric", f"duplicate metric {metric!r}")
        out.append(Objective(metric, direction))
    return tuple(out)


def _constraints(path: str, raw: Any) -> Constraints:
    if raw is None:
        return Constraints()
    raw = _mapping(path, "constraints", raw, allowed=_CONSTRAINT_KEYS)
    for k, v in raw.items():
        if v is not None and (not _is_num(v) or v <= 0):
            raise _err(path, f"constraints.{k}", f"expected a positive number or null, got {v!r}")
    return Constraints(**raw)


_BUDGET_INTS = (
    "epochs",
    "imgsz",
    "batch",
    "hidden_dim",
    "queries",
    "ffn",
    "denoising",
    "decoder_layers",
    "patience",
    "workers",
    "pretrain",
)
_BUDGET_KEYS = (
    "epochs",
    "imgsz",
    "batch",
    "fraction",
    "width",
    "depth",
    "hidden_dim",
    "queries",
    "ffn",
    "denoising",
    "decoder_layers",
    "lr0",
    "patience",
    "workers",
    "pretrain",
    "weights",
    "train",
)
# train() arguments the service sets itself: a budget's `train` mapping may not hold them
_RESERVED_TRAIN_ARGS = {
    "data", "model", "epochs", "imgsz", "batch", "fraction", "device", "workers", "seed", "project", "name",
    "exist_ok", "resume", "lr0", "patience", "plots", "verbose", "amp", "pretrained",
}  # fmt: skip


@functools.cache
def _ultralytics_train_keys() -> frozenset[str]:
    """The arguments Ultralytics' train() accepts, read from its default.yaml (no torch import)."""
    spec = importlib.util.find_spec("ultralytics")
    cfg = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml"
    return frozenset(yaml.safe_load(cfg.read_text()))


def _train_args(path: str, key: str, raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise _err(path, key, f"expected a mapping of Ultralytics train() arguments, got {raw!r}")
    for k, v in raw.items():
        if k in _RESERVED_TRAIN_ARGS:
            raise _err(path, f"{key}.{k}", "is set by the service (use the budget's own key or a flag)")
        if k not in _ultralytics_train_keys():
            raise _err(path, f"{key}.{k}", "is not an Ultralytics train() argument")
        if not isinstance(v, (str, int, float, bool)):
            raise _err(path, f"{key}.{k}", f"expected a plain value, got {v!r}")
    return dict(raw)


def _budget(path: str, name: str, raw: Any) -> Budget:
    key = f"budgets.{name}"
    raw = _mapping(path, key, raw, allowed=_BUDGET_KEYS, required=("epochs", "imgsz", "batch"))
    train = _train_args(path, f"{key}.train", raw.pop("train")) if "train" in raw else {}
    weights = raw.pop("weights", None)
    if weights is not None:
        if not isinstance(weights, str) or not weights:
            raise _err(path, f"{key}.weights", f"expected a checkpoint path, got {weights!r}")
        weights = str((Path(path).parent / weights).resolve()) if not Path(weights).is_absolute() else weights
    for k, v in raw.items():
        if v is None and k not in ("epochs", "imgsz", "batch", "fraction", "width", "depth"):
            continue  # null: the field's default, None (Ultralytics' own value, or no warm start)
        kind = "an int" if k in _BUDGET_INTS else "a number"
        if not (_is_int(v) if k in _BUDGET_INTS else _is_num(v)):
            raise _err(path, f"{key}.{k}", f"expected {kind}, got {v!r}")
        if v < 0 or (v == 0 and k not in ("workers", "denoising", "pretrain")):  # 0 of these is meaningful
            raise _err(path, f"{key}.{k}", f"must be positive, got {v!r}")
    if raw.get("fraction", 1.0) > 1:
        raise _err(path, f"{key}.fraction", f"must be in (0, 1], got {raw['fraction']!r}")
    if raw["imgsz"] % 32:
        raise _err(
            path, f"{key}.imgsz", f"must be a multiple of 32 (RT-DETR's largest stride), got {raw['imgsz']}"
        )
    if raw.get("hidden_dim") is not None and raw["hidden_dim"] % 8:
        raise _err(
            path,
            f"{key}.hidden_dim",
            f"must be a multiple of 8 (the decoder's 8 heads), got {raw['hidden_dim']}",
        )
    return Budget(name=name, **raw, train=train, weights=weights)


def _budgets(path: str, raw: Any) -> dict[str, Budget]:
    if not isinstance(raw, dict):
        raise _err(path, "budgets", f"expected a mapping of budget name to budget, got {raw!r}")
    for name in _REQUIRED_BUDGETS:
        if name not in raw:
            raise _err(path, f"budgets.{name}", "missing required budget")
    return {_name(path, f"budgets.{k}", k, what="budget"): _budget(path, k, v) for k, v in raw.items()}


def _check_args(path: str, key: str, block: str, *, args: Any) -> tuple:
    """Shape-check explicit yaml args (without the mode) for ``block``."""
    if not isinstance(args, list) or not args:
        raise _err(path, key, f"expected a non-empty list of yaml args, got {args!r}")
    if any(isinstance(a, str) for a in args):
        raise _err(path, key, f"args hold the yaml args without the mode (set it with 'mode'), got {args!r}")
    # (count range, positions that must be positive ints) per block, following its yaml form
    shape = {
        "GhostModuleV3": ((1, 3), (0, 1, 2), "[c2, k, s]"),
        "HGBlockGhostV3": ((2, 5), (0, 1, 2), "[cm, c2, k, light, shortcut]"),
        "RepC3GhostV3": ((1, 2), (0,), "[c2, e]"),
        "RepNCSPELAN4GhostV3": ((3, 4), (0, 1, 2, 3), "[c2, c3, c4, n]"),
    }[block]
    (lo, hi), positive, form = shape
    if not lo <= len(args) <= hi:
        raise _err(path, key, f"{block} takes {form} ({lo} to {hi} values), got {args!r}")
    names = form.strip("[]").split(", ")
    for i in positive:
        if i < len(args) and (not _is_int(args[i]) or args[i] < 1):
            raise _err(path, key, f"{block} {names[i]} must be a positive int, got {args[i]!r}")
    if block == "GhostModuleV3" and len(args) > 1 and args[1] % 2 == 0:
        raise _err(path, key, f"GhostModuleV3 k must be odd, got {args[1]!r}")
    return tuple(args)


def _choice(path: str, key: str, name: str, *, raw: Any) -> Choice:
    if raw == "keep" or raw == {"op": "keep"}:
        return Choice(name, "keep")
    if isinstance(raw, str):
        raise _err(path, key, f"expected 'keep' or a mapping with op/block/mode, got {raw!r}")
    raw = _mapping(path, key, raw, allowed=_CHOICE_KEYS, required=("op",))
    if not _among(raw["op"], OPS):
        raise _err(path, f"{key}.op", f"unknown op {raw['op']!r} (expected {', '.join(OPS)})")
    if raw["op"] == "keep":
        raise _err(path, key, "a 'keep' choice takes no other keys")
    for k in ("block", "mode"):
        if k not in raw:
            raise _err(path, f"{key}.{k}", "missing required key")
    if not _among(raw["block"], BLOCKS):
        raise _err(path, f"{key}.block", f"unknown block {raw['block']!r} (expected {', '.join(BLOCKS)})")
    if not _among(raw["mode"], MODES):
        raise _err(path, f"{key}.mode", f"unknown mode {raw['mode']!r} (expected {', '.join(MODES)})")
    args = (
        None if raw.get("args") is None else _check_args(path, f"{key}.args", raw["block"], args=raw["args"])
    )
    repeats = raw.get("repeats")
    if repeats is not None and (not _is_int(repeats) or repeats < 1):
        raise _err(path, f"{key}.repeats", f"expected a positive int, got {repeats!r}")
    return Choice(name, raw["op"], raw["block"], raw["mode"], args, repeats)


def _sites(path: str, raw: Any, base_yaml: dict) -> tuple[Site, ...]:
    if not isinstance(raw, dict) or not raw:
        raise _err(path, "sites", "a space needs at least one site")
    layers = base_yaml["backbone"] + base_yaml["head"]
    channels = layer_channels(base_yaml)
    sites: list[Site] = []
    replaced_by: dict[int, str] = {}
    for sname, sraw in raw.items():
        key = f"sites.{_name(path, f'sites.{sname}', sname, what='site')}"
        sraw = _mapping(path, key, sraw, allowed=_SITE_KEYS, required=("layer", "choices"))
        layer = sraw["layer"]
        if not _is_int(layer) or not 0 <= layer < len(layers):
            raise _err(
                path,
                f"{key}.layer",
                f"layer {layer!r} is outside the base model (layers 0-{len(layers) - 1})",
            )
        craw = sraw["choices"]
        if not isinstance(craw, dict) or not craw:
            raise _err(path, f"{key}.choices", "expected a non-empty mapping of choice name to choice")
        choices = []
        for cname, spec in craw.items():
            ckey = f"{key}.choices.{_name(path, f'{key}.choices.{cname}', cname, what='choice')}"
            choice = _choice(path, ckey, cname, raw=spec)
            if choice.op == "replace":
                other = replaced_by.setdefault(layer, sname)
                if other != sname:
                    raise _err(path, f"{ckey}.op", f"layer {layer} is already replaced by site {other!r}")
            if choice.op != "keep":
                try:  # derive the layer now, so a bad choice fails at load time, not in a trial
                    choice_layer(choice, layers, layer, channels=channels)
                except ValueError as e:
                    raise _err(path, ckey, str(e)) from None
            choices.append(choice)
        sites.append(Site(sname, layer, tuple(choices)))
    if all(c.op == "keep" for s in sites for c in s.choices):
        raise _err(path, "sites", "every choice is 'keep': the space holds only the base model")
    return tuple(sites)


def parse_space(data: dict, path: str, *, base_yaml: dict | None = None) -> Space:
    """Validate a space mapping (as read from a file) and build the :class:`Space`.

    Args:
        data: the space mapping.
        path: the file it came from, used in error messages and to resolve a relative base.
        base_yaml: the base model dict to use instead of reading ``data['base']`` (no I/O then).

    Raises:
        SpaceError: on the first problem found.
    """
    data = _mapping(path, "", data, allowed=_TOP_KEYS, required=_TOP_REQUIRED)
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise _err(path, "name", f"expected a non-empty string, got {name!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise _err(path, "description", f"expected a string, got {description!r}")
    base = data["base"]
    if not isinstance(base, str) or not base:
        raise _err(
            path, "base", f"expected a shipped base ({', '.join(SHIPPED_BASES)}) or a yaml path, got {base!r}"
        )
    if base_yaml is None:
        try:
            base, base_yaml = load_base(base, Path(path).parent)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise _err(path, "base", " ".join(str(e).split())) from None
    if not isinstance(base_yaml.get("backbone"), list) or not isinstance(base_yaml.get("head"), list):
        raise _err(path, "base", "the base model has no 'backbone' and 'head' layer lists")
    evaluator = data.get("map_evaluator", "coco")
    if evaluator not in MAP_EVALUATORS:
        raise _err(path, "map_evaluator", f"expected one of {', '.join(MAP_EVALUATORS)}, got {evaluator!r}")
    space = Space(
        name=name,
        path=path,
        description=description,
        base=base,
        base_yaml=base_yaml,
        objectives=_objectives(path, data["objectives"]),
        sites=_sites(path, data["sites"], base_yaml),
        budgets=_budgets(path, data["budgets"]),
        constraints=_constraints(path, data.get("constraints")),
        map_evaluator=evaluator,
    )
    pretrained = [b.name for b in space.budgets.values() if b.pretrain]
    keepless = [site.name for site in space.sites if site.default is None]
    if pretrained and keepless:
        raise _err(
            path,
            f"budgets.{pretrained[0]}.pretrain",
            f"pretrains the base, but sites {', '.join(keepless)} have no keep choice: the space holds no base",
        )
    return dataclasses.replace(space, references=_references(space, data.get("references")))


def _references(space: Space, raw: Any) -> tuple[Reference, ...]:
    if raw is None:
        return ()
    path = space.path
    if not isinstance(raw, dict):
        raise _err(path, "references", f"expected a mapping of reference name to reference, got {raw!r}")
    out = []
    for rname, rraw in raw.items():
        key = f"references.{_name(path, f'references.{rname}', rname, what='reference')}"
        if rname == "base":
            raise _err(
                path, key, "'base' is the unmodified model, always marked; name the reference otherwise"
            )
        rraw = _mapping(path, key, rraw, allowed=("params", "caption"), required=("params", "caption"))
        if not isinstance(rraw["caption"], str) or not rraw["caption"].strip():
            raise _err(path, f"{key}.caption", f"expected a non-empty string, got {rraw['caption']!r}")
        try:
            params = validate_params(space, rraw["params"])
        except SpaceError as e:
            raise _err(path, f"{key}.params", str(e).split(": ", 2)[-1]) from None
        out.append(Reference(rname, tuple(params.items()), rraw["caption"]))
    return tuple(out)


def validate_params(space: Space, params: dict[str, str]) -> dict[str, str]:
    """Canonical params: every site present, in file order.

    A site missing from ``params`` takes its ``keep`` choice; unknown sites or choices raise.
    """
    if not isinstance(params, dict):
        raise _err(space.path, "params", f"expected a mapping of site to choice, got {params!r}")
    names = [s.name for s in space.sites]
    for k in params:
        if k not in names:
            raise _err(space.path, f"params.{k}", f"unknown site (expected {', '.join(names)})")
    out: dict[str, str] = {}
    for s in space.sites:
        value = params.get(s.name, s.default)
        if value is None:
            raise _err(space.path, f"params.{s.name}", "missing, and the site has no 'keep' choice")
        allowed = [c.name for c in s.choices]
        if value not in allowed:
            raise _err(
                space.path, f"params.{s.name}", f"unknown choice {value!r} (expected {', '.join(allowed)})"
            )
        out[s.name] = value
    return out
