"""Shared by the benchmark scripts: where results go, and the machine/date stamp every table carries."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, Python, torch and onnxruntime versions, date (UTC)."""
    import torch

    from devicefit.hardware import cpu_model

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        pass
    return info


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, markdown_body: str, data: dict[str, Any], indent: int | None = 2
                  ) -> tuple[Path, Path]:
    """Write ``results/<name>.md`` and ``results/<name>.json``, both stamped with :func:`machine_info`
    (``indent=None``: one-line JSON, for tables of long curves)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    md = RESULTS_DIR / f"{name}.md"
    js = RESULTS_DIR / f"{name}.json"
    stamp = ", ".join(f"{k}: {v}" for k, v in machine.items())
    md.write_text(f"# {title}\n\nMachine: {stamp}\n\n{markdown_body.rstrip()}\n")
    js.write_text(json.dumps({"machine": machine, **data}, indent=indent, default=float) + "\n")
    return md, js


def cached_run(path: Path, compute: Any) -> dict[str, Any]:
    """The JSON result at ``path`` if a run already wrote it, else ``compute()`` (a dict) timed as ``wall_s``
    and written there: resumable benchmark rows whose wall time is that of the run that computed them."""
    import time

    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    data = {**compute(), "wall_s": time.perf_counter() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return data


def bisect_boundary(fits: Callable[[float], bool], good: float, bad: float, steps: int) -> float:
    """The setting nearest ``bad`` that still ``fits`` (``fits(good)`` is assumed, ``fits`` monotone between),
    after ``steps`` halvings: e.g. the largest keep ratio, or the smallest pruning ratio, within a MACs target."""
    for _ in range(steps):
        mid = (good + bad) / 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good

