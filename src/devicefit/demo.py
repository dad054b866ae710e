"""The demo job (``make demo``): fit a NAS-Bench-201 network to a device under a latency budget, then report.

With the data directory: the most accurate cell (NB201 cifar10-valid validation accuracy as the signal, test
accuracy reported) whose latency on ``device`` (pixel3 by default, from its measured table) is at most the
median latency of that table; BRP-NAS with a zero-cost warm-up (synflow on CIFAR-10 images) for 50
evaluations. The answer is set against the true optimum under the same budget, exported to ONNX, measured
on this machine, and written up as a report (Markdown and one self-contained HTML page).

Without the data directory there is no accuracy table and no device table: the demo searches on the
data-free synflow score (random images) under this machine's own latency, measured with ONNX Runtime (the
budget: the median latency of a small random sample of cells measured first), and says what the data would
add. Every evaluation goes through the store in the output folder, so a rerun resumes.
"""

from __future__ import annotations

import json
import os
import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._files import write_atomic
from .data import ENV_VAR, data_dir
from .errors import InputError

OBJECTIVE = "c10valid_valid_200ep"
STORE_NAME = "search.sqlite"
SUMMARY_NAME = "demo_summary.json"
ONNX_NAME = "best.onnx"


@dataclass
class DemoResult:
    """What the demo found; ``to_dict`` is what ``demo_summary.json`` holds."""

    out_dir: Path
    mode: str  # "tables" or "no-data"
    device: str
    latency_budget_ms: float
    search: dict[str, Any]  # SearchResult.summary()
    optimum: dict[str, Any] | None  # the best cell under the budget in the table (tables mode)
    best_local_ms: float | None
    onnx: Path | None
    report: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"], d["onnx"] = str(self.out_dir), None if self.onnx is None else str(self.onnx)
        return d


def run_demo(
    out_dir: str | os.PathLike[str],
    data_dir_path: str | os.PathLike[str] | None = None,
    *,
    device: str = "pixel3",
    strategy: str = "brp",
    budget: int = 50,
    warmup: int = 200,
    seed: int = 0,
    sample: int = 12,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``out_dir`` (created). ``sample``: cells measured to set the local budget (no data)."""
    from .study.search_job import search

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file, expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    root = data_dir(data_dir_path, required=False)  # a data directory named but missing is an error
    notes: list[str] = []
    store = out / STORE_NAME
    if root is not None:
        from .study.estimators import DeviceTableLatency

        table = DeviceTableLatency(device, root)._table.values
        limit = float(statistics.median(table.values()))
        result = search(objective=OBJECTIVE, strategy=strategy, budget=budget, store=store, seed=seed, device=device,
                        max_latency_ms=limit, warmup=warmup, proxy="synflow", data_dir=root, name="demo",
                        progress=progress)
        optimum = _optimum(root, table, limit)
        mode = "tables"
        if result.best is not None:
            gap = optimum["accuracy"] - float(result.best.objective or 0.0)
            notes.append(f"{result.evaluations} evaluations found a cell {gap:.2f} points below the best of the "
                         f"{optimum['cells_meeting']} cells that meet {limit:.4g} ms on {device}.")
    else:
        limit = _local_budget(store, sample, seed, progress)
        result = search(objective="synflow", proxy_images="noise", strategy=strategy if strategy != "brp" else
                        "evolution", strategy_options={"population": 10, "tournament": 3} if strategy in ("brp",
                        "evolution") else None, budget=min(budget, 30), store=store, seed=seed, device="local",
                        max_latency_ms=limit, name="demo", progress=progress)
        optimum, mode, device = None, "no-data", "local"
        notes.append(
            f"No data directory (set {ENV_VAR} or --data-dir): searched on the data-free synflow score under this "
            "machine's measured latency. With the data, the objective is the trained accuracy of NAS-Bench-201, "
            "the latency comes from ~36 real device tables (phones, GPUs, CPUs, Edge TPU, FPGA), BRP-NAS ranks "
            "candidates with a learned predictor, and the answer is set against the true optimum.")
    onnx_path, local_ms = None, None
    if result.best is not None:
        onnx_path = out / ONNX_NAME
        result.export_onnx(onnx_path)
        local_ms = _measure_here(onnx_path, result.input_shape)
    summary = result.summary()
    report: dict[str, str] = {}
    if result.best is not None:
        from .report import search_report

        paths = search_report(store, out, study="demo", data_dir=root)
        report = {"markdown": str(paths.markdown), "html": str(paths.html)}
    res = DemoResult(out, mode, device, limit, summary, optimum, local_ms, onnx_path, report, notes)
    write_atomic(out / SUMMARY_NAME, json.dumps(res.to_dict(), indent=2, allow_nan=False).encode())
    return res


def _optimum(root: Path, latency: dict[Any, float], limit: float) -> dict[str, Any]:
    """The most accurate cell of the table whose latency meets ``limit``."""
    import math

    from .data import load_nb201_table

    table = load_nb201_table(root / "nb201" / "nb201_accuracy.csv")
    best, best_acc, meeting = None, -math.inf, 0
    for cell, acc in zip(table.cells, table.column(OBJECTIVE)):
        if cell in latency and latency[cell] <= limit and math.isfinite(acc):
            meeting += 1
            if acc > best_acc:
                best, best_acc = cell, float(acc)
    assert best is not None
    return {"arch": str(best), "nb201_index": table.index_of(best), "accuracy": best_acc,
            "latency_ms": latency[best], "cells_meeting": meeting}


def _local_budget(store: Path, sample: int, seed: int, progress: bool) -> float:
    """The median latency here of ``sample`` random cells (measured through the store, so cached)."""
    from .spaces import get_space
    from .study import MeasuredLatency, evaluate_all

    if sample < 3:
        raise InputError(f"sample must be at least 3 cells, got {sample}")
    space = get_space("nb201")
    rng = random.Random(f"demo budget {seed}")
    cells = [space.sample(rng) for _ in range(sample)]
    est = MeasuredLatency("onnxruntime")
    res = evaluate_all(space, cells, [est], store, progress=progress, description="measuring the budget")
    values = [v["value"] for v in res.values(est.name).values() if v is not None]
    if not values:
        raise InputError("no cell could be measured on this machine")
    return float(statistics.median(values))


def _measure_here(onnx_path: Path, input_shape: tuple[int, ...]) -> float:
    from .hardware import measure_latency

    return measure_latency(str(onnx_path), input_shape, "onnxruntime", warmup=10, repeats=50, threads=1).median_ms
