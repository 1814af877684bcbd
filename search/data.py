"""Datasets for the search: a built-in synthetic shapes set and a pre-flight check for user data yamls.

The built-in set lets a search run (and its tests) without any download. ``check_dataset`` catches the
common mistakes in a user's Ultralytics data yaml up front, with one clear message, instead of deep inside
a training worker minutes later.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from .ultra import cache_dir

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_SIZES",
    "DataError",
    "builtin_dataset",
    "builtin_sizes",
    "check_dataset",
    "dataset_fingerprint",
    "label_dir",
    "labels_fingerprint",
]

logger = logging.getLogger(__name__)

CLASS_NAMES = ["circle", "square", "triangle"]
# Bump when the generator's output changes, so stale caches are not reused.
_GENERATOR_VERSION = 1
_MARKER = ".complete"
# Same set as ultralytics.data.utils.IMG_FORMATS; copied so this module stays import-light.
IMG_FORMATS = {
    "avif",
    "bmp",
    "dng",
    "heic",
    "heif",
    "jp2",
    "jpeg",
    "jpg",
    "mpo",
    "png",
    "tif",
    "tiff",
    "webp",
}
# Class hue centres (OpenCV hue, 0-179): colour hints the class, shape decides it.
_CLASS_HUES = [0, 60, 120]
_SPLITS = {"train": 0, "val": 1, "test": 2}
# The built-in dataset's split sizes (train, val, test). best.pt is chosen on val; the reported mAP comes
# from test, large so that a trial's figure does not hang on which few images it was scored on (with 32
# test images the same models' seed spread read half again as large as with 512: bench/noise.py).
DEFAULT_SIZES = (256, 32, 512)
SIZES_ENV = "RTDETR_SEARCH_SHAPES"  # "TRAIN,VAL,TEST": other sizes (the test suite uses a smaller set)


class DataError(ValueError):
    """A dataset yaml or its folders are unusable for training."""


# --------------------------------------------------------------------------- built-in dataset


def _default_root() -> Path:
    return cache_dir() / "data"


def _background(rng: np.random.Generator, imgsz: int) -> np.ndarray:
    """A smooth linear gradient between two muted random colours."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:imgsz, 0:imgsz] / max(imgsz - 1, 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (c0 + (c1 - c0) * t[..., None]).astype(np.float32)


def _object_colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    hue = (_CLASS_HUES[cls] + rng.integers(-15, 16)) % 180
    hsv = np.array([[[hue, rng.integers(170, 256), rng.integers(150, 256)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _shape_mask(rng: np.random.Generator, cls: int, imgsz: int, *, x0: int, y0: int, side: int) -> np.ndarray:
    """Binary mask of one shape drawn inside the square [x0, x0+side) x [y0, y0+side)."""
    mask = np.zeros((imgsz, imgsz), np.uint8)
    c = np.array([x0 + side / 2, y0 + side / 2])
    if cls == 0:
        cv2.circle(mask, (int(c[0]), int(c[1])), side // 2 - 1, 1, thickness=-1, lineType=cv2.LINE_8)
        return mask
    # Rotated square or triangle, inscribed in the circle of radius side/2 so it stays inside its cell.
    n = 4 if cls == 1 else 3
    start = rng.uniform(0, 2 * np.pi)
    angles = start + 2 * np.pi * np.arange(n) / n
    r = side / 2 - 1
    pts = np.stack([c[0] + r * np.cos(angles), c[1] + r * np.sin(angles)], axis=1)
    # LINE_8 (no anti-aliasing) keeps the mask binary, so the tight box is exact.
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def _render(seed: int, split: str, index: int, *, imgsz: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image and its objects.

    Returns:
        The BGR uint8 image and a list of objects, each ``{"cls", "mask", "colour", "box"}`` where ``box``
        is the normalized xywh of the mask's tight bounding box.
    """
    # One generator per image: an image does not depend on how many others the split has.
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    img = _background(rng, imgsz)
    cells: list[tuple[int, int, int]] = []
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        side = int(rng.uniform(0.2, 0.45) * imgsz)
        # Rejection-sample a free cell; objects never overlap, so every drawn pixel stays visible.
        for _attempt in range(30):
            x0, y0 = (int(v) for v in rng.integers(0, imgsz - side + 1, size=2))
            if all(
                x0 + side + 2 <= x or x + s + 2 <= x0 or y0 + side + 2 <= y or y + s + 2 <= y0
                for x, y, s in cells
            ):
                break
        else:
            continue
        cells.append((x0, y0, side))
        mask = _shape_mask(rng, cls, imgsz, x0=x0, y0=y0, side=side).astype(bool)
        colour = _object_colour(rng, cls)
        img[mask] = colour
        ys, xs = np.nonzero(mask)
        # Pixel i covers [i, i+1), so the tight box runs from min to max+1.
        bx0, bx1, by0, by1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        box = ((bx0 + bx1) / 2 / imgsz, (by0 + by1) / 2 / imgsz, (bx1 - bx0) / imgsz, (by1 - by0) / imgsz)
        objects.append({"cls": cls, "mask": mask, "colour": colour, "box": box})
    img += rng.normal(0, 6, img.shape).astype(np.float32)  # mild sensor-like noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _write_dataset(out: Path, final: Path, seed: int, *, counts: dict[str, int], imgsz: int) -> None:
    for split, n in counts.items():
        if not n:
            continue
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img, objects = _render(seed, split, i, imgsz=imgsz)
            stem = f"{split}_{i:05d}"
            if not cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img):
                raise OSError(f"could not write {out / 'images' / split / stem}.png")
            lines = [f"{o['cls']} " + " ".join(f"{v:.6f}" for v in o["box"]) for o in objects]
            (out / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
    meta = {
        "path": str(final),  # where the folder will live after the rename, not the temp folder
        **{split: f"images/{split}" for split, n in counts.items() if n},
        "names": dict(enumerate(CLASS_NAMES)),
    }
    (out / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def _discard(folder: Path) -> None:
    """Remove an incomplete dataset folder without clobbering one a concurrent generator just finished."""
    trash = folder.with_name(f".{folder.name}.trash-{uuid.uuid4().hex}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    if (trash / _MARKER).is_file():
        try:  # another process completed it between our check and the rename: put it back
            os.rename(trash, folder)
            return
        except OSError:
            pass
    shutil.rmtree(trash, ignore_errors=True)


def builtin_sizes() -> tuple[int, int, int]:
    """The built-in dataset's (train, val, test) sizes: ``$RTDETR_SEARCH_SHAPES`` or :data:`DEFAULT_SIZES`.

    Raises:
        DataError: the variable is not three counts ``TRAIN,VAL,TEST``.
    """
    raw = os.environ.get(SIZES_ENV, "").strip()
    if not raw:
        return DEFAULT_SIZES
    try:
        sizes = tuple(int(v) for v in raw.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3 or sizes[0] < 1 or sizes[1] < 1 or sizes[2] < 0:
        raise DataError(f"{SIZES_ENV}={raw!r}: expected TRAIN,VAL,TEST image counts, e.g. 256,32,512")
    return sizes  # type: ignore[return-value]


def builtin_dataset(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    imgsz: int = 160,
) -> Path:
    """Generate (once) a small synthetic shapes detection dataset in Ultralytics YOLO format.

    Images hold 1-3 non-overlapping circles, squares and triangles on noisy gradient backgrounds; labels
    are the exact tight boxes. Output is a pure function of the arguments and is cached.

    Args:
        root: Parent folder. Defaults to ``$RTDETR_SEARCH_CACHE/data``, else
            ``~/.cache/rtdetr-ghost-search/data``.
        seed: Random seed.
        n_train: Number of training images (None: from :func:`builtin_sizes`, as for the others).
        n_val: Number of validation images (the trainer picks ``best.pt`` on them).
        n_test: Number of held-out test images (a trial's reported mAP); 0 for no test split.
        imgsz: Square image side in pixels.

    Returns:
        Absolute path of the dataset's ``data.yaml``.
    """
    sizes = builtin_sizes()
    n_train, n_val, n_test = (
        v if v is not None else d for v, d in zip((n_train, n_val, n_test), sizes, strict=True)
    )
    if n_train < 1 or n_val < 1 or n_test < 0:
        raise ValueError(
            f"n_train and n_val must be >= 1 and n_test >= 0, got {n_train}, {n_val} and {n_test}"
        )
    if imgsz < 32:
        raise ValueError(f"imgsz must be >= 32, got {imgsz}")
    base = (Path(root) if root is not None else _default_root()).expanduser().resolve()
    final = base / f"shapes-v{_GENERATOR_VERSION}-s{seed}-{n_train}-{n_val}-{n_test}-{imgsz}"
    if (final / _MARKER).is_file():
        return final / "data.yaml"

    base.mkdir(parents=True, exist_ok=True)
    # Build in a private temp folder on the same filesystem, then rename it into place in one step, so
    # neither a crash nor a concurrent caller ever sees a half-written dataset.
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=base))
    try:
        logger.info("generating built-in dataset %s", final)
        _write_dataset(tmp, final, seed, counts={"train": n_train, "val": n_val, "test": n_test}, imgsz=imgsz)
        (tmp / _MARKER).write_text("ok\n")  # written last: its presence means the folder is whole
        if final.exists() and not (final / _MARKER).is_file():
            logger.warning("discarding incomplete dataset folder %s", final)
            _discard(final)
        try:
            os.rename(tmp, final)
        except OSError:
            # Lost the race to a concurrent generator: its result is identical, use it.
            if not (final / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"


# --------------------------------------------------------------------------- user dataset check


def _names_dict(names: Any, where: str) -> dict[int, str]:
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise DataError(f"{where}: 'names' must be a list or a mapping, not {type(names).__name__}")
    try:
        out = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: 'names' keys must be integer class indices ({e})") from None
    if not out:
        raise DataError(f"{where}: 'names' is empty; at least one class is required")
    if sorted(out) != list(range(len(out))):
        raise DataError(f"{where}: 'names' keys must be 0..{len(out) - 1}, got {sorted(out)}")
    return dict(sorted(out.items()))


def _dataset_root(data: dict[str, Any], yaml_path: Path, where: str) -> Path:
    """Resolve the dataset root the way ``ultralytics.data.utils.check_det_dataset`` does."""
    raw = data.get("path")
    if raw is not None and not isinstance(raw, str):
        raise DataError(f"{where}: 'path' must be a string, not {type(raw).__name__}")
    if not raw:
        return yaml_path.parent
    path = Path(raw).expanduser()
    if path.is_absolute() or path.exists():
        # Ultralytics takes a relative `path` relative to the working directory when it exists there.
        return path.resolve()
    # ...and otherwise relative to its datasets dir, not to the yaml's folder. Import only here: it is slow.
    from ultralytics.utils import DATASETS_DIR

    path = (Path(DATASETS_DIR) / raw).resolve()
    if not path.exists() and (yaml_path.parent / raw).exists():
        raise DataError(
            f"{where}: relative 'path: {raw}' is resolved by Ultralytics against the working directory or "
            f"{DATASETS_DIR}, not the yaml's folder; make it absolute ({(yaml_path.parent / raw).resolve()})"
        )
    return path


def _resolve_split(root: Path, value: str) -> Path:
    x = (root / value).resolve()
    if not x.exists() and value.startswith("../"):  # same fallback as Ultralytics
        x = (root / value[3:]).resolve()
    return x


def label_dir(image_dir: Path) -> Path:
    """The labels folder Ultralytics pairs with an image folder (last ``/images/`` -> ``/labels/``)."""
    probe = str(image_dir / "x.png")
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(probe.rsplit(sa, 1))).parent


def _check_folder(folder: Path, key: str, where: str) -> None:
    if folder.suffix == ".txt":  # an image list file: its entries are checked by Ultralytics at load time
        if not folder.is_file():
            raise DataError(f"{where}: '{key}' image list {folder} does not exist")
        return
    if not folder.is_dir():
        raise DataError(f"{where}: '{key}' folder {folder} does not exist")
    if not any(p.is_file() and p.suffix[1:].lower() in IMG_FORMATS for p in folder.rglob("*")):
        kinds = ", ".join(sorted(IMG_FORMATS))
        raise DataError(f"{where}: '{key}' folder {folder} contains no images ({kinds})")
    labels = label_dir(folder)
    if not labels.is_dir():
        raise DataError(f"{where}: '{key}' labels folder {labels} does not exist (expected next to {folder})")


def check_dataset(data: str | Path, expected_names: list[str] | dict | None = None) -> dict[str, Any]:
    """Validate an Ultralytics detection data yaml before any training, without downloading anything.

    Args:
        data: Path of the data yaml.
        expected_names: If given, the class names the yaml must declare (list, or ``{index: name}``).

    Returns:
        The parsed yaml with ``path``, ``train``, ``val`` (and ``test`` when given) as absolute path
        strings (lists stay lists),
        ``names`` as ``{index: name}`` and ``nc`` set.

    Raises:
        DataError: The first problem found, naming the file and what is wrong.
    """
    yaml_path = Path(data).expanduser()
    where = str(data)
    if not yaml_path.is_file():
        raise DataError(f"{where}: dataset yaml does not exist")
    try:
        parsed = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not valid YAML ({e})") from None
    if not isinstance(parsed, dict):
        raise DataError(f"{where}: expected a YAML mapping, got {type(parsed).__name__}")
    yaml_path = yaml_path.resolve()

    for key in ("train", "val"):
        if not parsed.get(key):
            raise DataError(f"{where}: missing required key '{key}'")
        if not isinstance(parsed[key], str | list):
            raise DataError(f"{where}: '{key}' must be a folder path or a list of them")

    nc = parsed.get("nc")
    if parsed.get("names") is None:
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataError(f"{where}: missing required key 'names' (or a positive integer 'nc')")
        names = {i: f"class_{i}" for i in range(nc)}
    else:
        names = _names_dict(parsed["names"], where)
        if nc is not None and nc != len(names):
            raise DataError(f"{where}: 'nc: {nc}' does not match the {len(names)} entries in 'names'")
    if expected_names is not None:
        expected = _names_dict(expected_names, "expected_names")
        if names != expected:
            raise DataError(
                f"{where}: class names {list(names.values())} do not match expected {list(expected.values())}"
            )

    if parsed.get("test") is not None and not isinstance(parsed["test"], str | list):
        raise DataError(f"{where}: 'test' must be a folder path or a list of them")
    root = _dataset_root(parsed, yaml_path, where)
    out = dict(parsed, path=str(root), names=names, nc=len(names))
    for key in ("train", "val", "test"):
        if key == "test" and not parsed.get("test"):
            continue  # optional: without it, a trial's mAP is scored on val (and says so)
        values = parsed[key] if isinstance(parsed[key], list) else [parsed[key]]
        resolved = []
        for v in values:
            if not isinstance(v, str) or not v:
                raise DataError(f"{where}: '{key}' entries must be non-empty path strings, got {v!r}")
            folder = _resolve_split(root, v)
            _check_folder(folder, key, where)
            resolved.append(str(folder))
        out[key] = resolved if isinstance(parsed[key], list) else resolved[0]
    logger.debug("dataset %s ok: %d classes, root %s", where, len(names), root)
    return out


def _splits(checked: dict[str, Any]):
    """``(split, folder, labels)`` for every folder a checked dataset's splits name, in a fixed order:
    ``labels`` lists each label file as (its path relative to the labels folder, its path), sorted; a split
    given as an image list file comes as ``(split, list file, None)``."""
    root = Path(checked["path"])
    for key in ("train", "val", "test"):
        values = checked.get(key) or []
        for value in values if isinstance(values, list) else [values]:
            folder = _resolve_split(root, str(value))
            if folder.suffix == ".txt" and folder.is_file():
                yield key, folder, None
                continue
            labels = label_dir(folder)
            files = sorted(p for p in labels.rglob("*.txt") if p.is_file()) if labels.is_dir() else []
            yield key, folder, [(f.relative_to(labels), f) for f in files]


def dataset_fingerprint(data: str | Path) -> str:
    """16 hex chars identifying a dataset's content: its yaml and the list of its label files.

    The list holds each label file's path (relative to its labels folder) and size,
    for every split the yaml names (``train``, ``val`` and ``test`` when present), so adding, removing or
    rewriting a label changes the fingerprint. Image list files (``.txt``) count by their content.

    Raises:
        DataError: the dataset yaml is invalid (see :func:`check_dataset`).
    """
    import hashlib

    digest = hashlib.sha256(Path(data).expanduser().read_bytes())
    for key, folder, labels in _splits(check_dataset(data)):
        digest.update(f"\0{key}\0{folder}\0".encode())
        if labels is None:
            digest.update(folder.read_bytes())
            continue
        for relative, path in labels:
            digest.update(f"{relative}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def labels_fingerprint(data: str | Path) -> str:
    """16 hex chars over what a dataset's labels say, wherever it lies: each split's label files by their
    path relative to their labels folder and their content (no absolute path, no yaml bytes), so the same
    dataset generated on two machines has one fingerprint.

    Raises:
        DataError: the dataset yaml is invalid (see :func:`check_dataset`).
    """
    import hashlib

    digest = hashlib.sha256()
    for key, folder, labels in _splits(check_dataset(data)):
        if labels is None:
            digest.update(f"\0{key}\0".encode() + folder.read_bytes())
            continue
        for relative, path in labels:
            digest.update(f"\0{key}\0{relative}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]
