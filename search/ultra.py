"""Ultralytics as the search uses it: offline, no auto-install, and no tracking of its own.

Every entry point (the CLIs, a Ray trial, the benchmarks, the tests) calls :func:`offline` before
anything imports ``ultralytics`` (it reads these variables at import time), and :func:`setup` before
building a model. Importing this module changes nothing. Ultralytics' settings live in our own config
folder (unless the user points ``YOLO_CONFIG_DIR`` elsewhere), so turning its integrations off never
edits the user's global Ultralytics settings.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = [
    "available_cpus",
    "cache_dir",
    "offline",
    "quiet",
    "setup",
    "use_threads",
]

LOGGER = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The service's cache folder, read when asked (``RTDETR_SEARCH_CACHE``, else
    ~/.cache/rtdetr-ghost-search): the built-in dataset, pretrained checkpoints, measured costs and
    Ultralytics' settings."""
    cache = os.environ.get("RTDETR_SEARCH_CACHE")
    return Path(cache) if cache else Path.home() / ".cache" / "rtdetr-ghost-search"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or a scheduler may narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


def use_threads(n: int) -> None:
    """Train, validate and time on exactly ``n`` CPU threads.

    Ultralytics' ``select_device`` sets torch's thread count to its own ``NUM_THREADS``
    (``min(8, cpu_count - 1)``) whenever it picks the CPU: one thread on a 2-core machine, eight on a
    16-core node where Ray gave the trial one CPU. The value it reads is set here as well, so the
    trainer and the validator keep ``n``. A training's numerics depend on its thread count, so a
    trial's count is fixed by the CPUs it was given, never by what happens to be idle.
    """
    import torch
    from ultralytics.utils import torch_utils

    torch.set_num_threads(n)
    torch_utils.NUM_THREADS = n


def offline() -> None:
    """Ultralytics offline and without auto-install, its settings in our folder (call before importing it)."""
    if "ultralytics" in sys.modules and os.environ.get("YOLO_OFFLINE") != "1":
        LOGGER.warning("ultralytics was imported before search.ultra.offline(): it may try the network")
    os.environ["YOLO_OFFLINE"] = "1"  # no font, weight or dataset downloads, no online checks
    os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install a missing package mid-run
    # every checkpoint opened as data: weights_only loads against an allow-list (search.checkpoint)
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))


# Ultralytics' integrations switch themselves on when their library is importable: with mlflow and
# ray installed, every model.train() would open its own MLflow run and report to Ray Tune. Tracking
# belongs to the sweep, so all of them are off.
_QUIET = {
    "sync": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "comet": False,
    "clearml": False,
    "dvc": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


def quiet() -> None:
    """Switch Ultralytics' own integrations off (idempotent; writes settings only when they differ)."""
    from ultralytics.utils import SETTINGS

    changed = {k: v for k, v in _QUIET.items() if k in SETTINGS and SETTINGS[k] != v}
    if changed:
        SETTINGS.update(changed)


def setup() -> None:
    """Offline, quiet Ultralytics with our blocks registered in its parser, loading checkpoints safely."""
    offline()
    import ghost_blocks

    quiet()
    ghost_blocks.register()  # also adds our blocks to the safe loader's allow-list
    from ultralytics.nn import tasks

    # Ultralytics reads ULTRALYTICS_SAFE_LOAD once, at import: a process that imported it first (a Ray
    # worker on a node started without the variable) gets the safe loader here all the same.
    tasks.SAFE_LOAD = True
