"""Which code produced a result: the version key of trained results and of cached costs.

A trial's mAP and an architecture's cost depend on the blocks' code, on the code that builds, trains
and measures a trial, and on the torch and Ultralytics versions. :func:`code_version` hashes all of
them, so a cached cost or a sweep's reusable results are never served across a change to any.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

__all__ = ["code_version"]

_REPO = Path(__file__).resolve().parents[1]
# the code a trained or measured result depends on (reporting, tracking and the CLIs are not)
_SOURCES = (
    "ghost_blocks/*.py",
    "search/checkpoint.py",
    "search/coco.py",
    "search/cost.py",
    "search/data.py",
    "search/materialize.py",
    "search/pretrain.py",
    "search/trainable.py",
    "search/training.py",
    "search/trial.py",
    "search/ultra.py",
)
_PACKAGES = ("torch", "ultralytics-opencv-headless")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def code_version() -> str:
    """16 hex chars over the sources in ``_SOURCES`` and the versions of torch and Ultralytics."""
    digest = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(_REPO.glob(pattern)):
            digest.update(path.relative_to(_REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for package in _PACKAGES:
        digest.update(f"{package}=={_version(package)}\0".encode())
    return digest.hexdigest()[:16]
