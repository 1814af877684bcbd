"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os


def load_average() -> str:
    """The 1/5/15-minute load average: wall times mean little without it."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"
