"""This machine, described without importing torch or numpy (the device registry and the CLI's fast
commands use it): the CPU model name."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

__all__ = ["cpu_model"]


@cache
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (falls back to :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
