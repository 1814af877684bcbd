"""Test-wide setup: Ultralytics offline and quiet, with its settings in a throwaway folder."""

from __future__ import annotations

import os
import tempfile

# Before anything imports ultralytics.
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="yolo-config-")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The built-in dataset at its former, smaller size (64 train, 32 val, 32 test images) keeps the many tiny
# trials of the suite fast; tests/search/test_data.py checks the default sizes a sweep uses without it.
os.environ["RTDETR_SEARCH_SHAPES"] = "64,32,32"

import search.ultra  # noqa: E402,F401  (sets YOLO_OFFLINE / YOLO_AUTOINSTALL)

search.ultra.setup()
