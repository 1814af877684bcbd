"""Test-wide setup: Ultralytics offline and quiet, with its settings in a throwaway folder."""

from __future__ import annotations

import os
import tempfile

# Before anything imports ultralytics.
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="yolo-config-")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import search.ultra  # noqa: E402,F401  (sets YOLO_OFFLINE / YOLO_AUTOINSTALL)

search.ultra.setup()
