"""Who trains an architecture: atomic claims in the sweep's storage folder, shared by every trial.

A sweep trains each architecture (under its training setup) once. The first trial to claim it trains
it; the others wait for that trial's outcome and reuse it. A claim is a file created with
``O_CREAT | O_EXCL``, which the file system grants to exactly one process, on one machine or on a
shared (NFS) sweep folder. Claims have generations: when the holder of generation ``g`` dies without
an outcome, the waiters race for generation ``g + 1`` and exactly one of them trains it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["Claims"]

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class Claims:
    """The claims of one sweep, as files ``<key>.<generation>`` in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def _check(self, key: str) -> None:
        if not _SAFE.match(key):
            raise ValueError(f"claim key {key!r} must be letters, digits, '_', '-' and '.'")

    def holder(self, key: str) -> tuple[int, str] | None:
        """The latest claim on ``key``: (generation, holder's run id), or None when nobody claimed it."""
        self._check(key)
        found = []
        for path in self.folder.glob(f"{key}.*"):
            suffix = path.name[len(key) + 1 :]
            if suffix.isdigit():
                found.append((int(suffix), path))
        while found:
            generation, path = max(found)
            try:
                holder = path.read_text().strip()
            except FileNotFoundError:  # pragma: no cover - claims are never deleted during a sweep
                found.remove((generation, path))
                continue
            if holder:
                return generation, holder
            # created but not yet written: its owner writes right after creating it
            return generation, ""
        return None

    def take(self, key: str, run_id: str, generation: int) -> bool:
        """Claim generation ``generation`` of ``key`` for ``run_id``; True for exactly one caller."""
        self._check(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.folder / f"{key}.{generation}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(run_id)
        return True
