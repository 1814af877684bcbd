"""What every command line of the service shares: its start, its argument parser and its usage errors.

A usage error (a bad flag, space file, dataset, store ...) is one line on stderr and exit code 2,
before any training and before anything is written to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import NoReturn

from . import ultra

__all__ = ["Parser", "UsageError", "check_name", "start", "usage_error"]


class UsageError(ValueError):
    """A problem with the command line or its inputs; exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(flag: str, name: str | None) -> None:
    """A sweep name becomes a folder under the storage path and a value in MLflow filters: letters,
    digits, ``.``, ``_`` and ``-``, starting with a letter or digit, so it can never leave that folder
    (``..``, ``/``) or change a filter (quotes).

    Raises:
        UsageError: naming ``flag`` and the name.
    """
    if name is not None and (not _NAME.fullmatch(name) or ".." in name):
        raise UsageError(
            f"{flag} {name!r}: a sweep name is 1-128 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (it becomes a folder in the storage path)"
        )


def start(level: int = logging.WARNING) -> None:
    """First thing in every command: Ultralytics offline before anything imports it, plain log lines."""
    ultra.offline()
    logging.basicConfig(level=level, format="%(message)s")


def usage_error(exc: BaseException) -> int:
    """Report a usage error in one line on stderr; returns the exit code, 2."""
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
    return 2
