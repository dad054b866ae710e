"""The demo job: measure NB201 cells on this machine and relate them to MACs, other devices and accuracy.

1. Measure the local latency (ONNX Runtime by default; fp32, batch 1, 1 thread) of a fixed-seed sample of
   NB201 cells with distinct canonical keys (no disconnected cells), and count their MACs, through the
   evaluation loop (:func:`devicefit.study.evaluate_all`): each result is written to the store in the
   output folder as it finishes, and a re-run resumes.
2. Rank correlation (Spearman rho) of this machine's latency with MACs and parameters, and, with the data
   directory, with every device latency table (LatBench, HELP): how well a proxy or another device ranks
   cells for this one.
3. With the data directory: the Pareto front of NB201 CIFAR-10 test accuracy (``c10_test_200ep``) against
   the measured latency, as a table and a PNG plot.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import ENV_VAR, data_dir, load_device_tables, load_nb201_table
from .errors import InputError
from .ranking import spearman
from .spaces import get_space, sample_unique_cells
from .study import CountedCost, MeasuredLatency, Store, evaluate_all
from .study.pareto import pareto_front

ACCURACY_COLUMN = "c10_test_200ep"
INPUT_SHAPE = (3, 32, 32)
STORE_NAME = "demo_results.sqlite"
SUMMARY_NAME = "demo_summary.json"
PLOT_NAME = "pareto_accuracy_vs_local_latency.png"
PLOT_NAME_NO_DATA = "macs_vs_local_latency.png"


@dataclass
class DemoResult:
    """What the demo found; ``to_dict`` is what ``demo_summary.json`` holds."""

    out_dir: Path
    runtime: str
    cells: int
    newly_measured: int
    protocol: dict[str, Any]
    median_latency_ms: float
    spearman_macs: float
    spearman_params: float
    device_spearman: list[dict[str, Any]] = field(default_factory=list)  # device, source, cells, spearman
    pareto: list[dict[str, Any]] = field(default_factory=list)  # nb201_index, arch_str, latency_ms, accuracy, macs
    plot: Path | None = None
    data_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["plot"] = None if self.plot is None else str(self.plot)
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        return d


def run_demo(
    out_dir: str | os.PathLike[str],
    data_dir_path: str | os.PathLike[str] | None = None,
    *,
    sample: int = 100,
    seed: int = 0,
    runtime: str = "onnxruntime",
    warmup: int = 10,
    repeats: int = 50,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``out_dir`` (created); see the module docstring. Without a data directory
    (no ``data_dir_path`` and no ``$DEVICEFIT_DATA``) it measures and ranks against MACs only."""
    if sample < 3:
        raise InputError(f"--sample must be at least 3 cells to rank anything, got {sample}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")
    measured = MeasuredLatency(runtime, threads=1, warmup=warmup, repeats=repeats, batch_size=1,
                               input_shape=INPUT_SHAPE)  # validates the settings before anything is written
    counted = CountedCost(INPUT_SHAPE)
    root = data_dir(data_dir_path, required=data_dir_path is not None or bool(os.environ.get(ENV_VAR)))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder for the demo's results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {str(out)!r}: {exc.strerror}") from None
    space = get_space("nb201")
    cells = sample_unique_cells(sample, seed)
    with Store(out / STORE_NAME) as store:
        store.claim("demo", {"seed": seed, **measured.settings()})
        newly: list[int] = []
        res = evaluate_all(space, cells, [measured, counted], store, progress=progress,
                           description=f"measuring {runtime} latency",
                           on_outcome=lambda o: newly.append(1) if o.estimator == 0 else None)
    lat = res.values(measured.name)
    cost = res.values(counted.name)
    failed = res.failures(measured.name) | res.failures(counted.name)
    if failed:
        first = next(iter(failed.items()))
        raise RuntimeError(f"{len(failed)} cells could not be measured, e.g. {first[0]}: {first[1]}")
    ids = [space.identity(c) for c in cells]
    latency = np.array([lat[i]["value"] for i in ids])
    macs = np.array([cost[i]["macs"] for i in ids], dtype=np.float64)
    params = np.array([cost[i]["params"] for i in ids], dtype=np.float64)
    proto = dict(measured.machine)
    result = DemoResult(
        out_dir=out,
        runtime=runtime,
        cells=len(cells),
        newly_measured=len(newly),
        protocol=proto,
        median_latency_ms=float(np.median(latency)),
        spearman_macs=spearman(macs, latency),
        spearman_params=spearman(params, latency),
        data_dir=root,
    )
    if root is None:
        result.notes.append(
            "No data directory (pass --data-dir or set DEVICEFIT_DATA): with the public data the demo also ranks "
            "this machine against the 37 LatBench/HELP device tables and draws the Pareto front of NB201 CIFAR-10 "
            "accuracy against the measured latency."
        )
        result.plot = _plot_macs(out / PLOT_NAME_NO_DATA, macs, latency, runtime)
    else:
        for name, table in sorted(load_device_tables(root).items()):
            common = [i for i, c in enumerate(cells) if c in table]
            if len(common) < 3:
                continue
            rho = spearman(table.array([cells[i] for i in common]), latency[common])
            result.device_spearman.append(
                {"device": name, "source": table.source, "cells": len(common), "spearman": rho}
            )
        result.device_spearman.sort(key=lambda d: -d["spearman"])
        nb201 = load_nb201_table(data_dir=root)
        accuracy = nb201.values(cells, ACCURACY_COLUMN)
        front = pareto_front(latency, accuracy)
        result.pareto = [
            {
                "nb201_index": nb201.index_of(cells[i]),
                "arch_str": cells[i].to_str(),
                "latency_ms": float(latency[i]),
                "accuracy": float(accuracy[i]),
                "macs": int(macs[i]),
            }
            for i in front
        ]
        result.plot = _plot_pareto(out / PLOT_NAME, latency, accuracy, front, runtime)
    (out / SUMMARY_NAME).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _plot_pareto(path: Path, latency: np.ndarray, accuracy: np.ndarray, front: np.ndarray, runtime: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(latency, accuracy, s=12, alpha=0.5, color="tab:blue", label=f"sampled cells ({latency.size})")
    ax.step(latency[front], accuracy[front], where="post", color="tab:red", lw=1.5)
    ax.scatter(latency[front], accuracy[front], s=24, color="tab:red", label=f"Pareto front ({front.size})", zorder=3)
    ax.set_xlabel(f"latency on this CPU, ms ({runtime}, fp32, batch 1, 1 thread)")
    ax.set_ylabel("NB201 CIFAR-10 test accuracy, % (200 epochs)")
    ax.set_title("NB201: accuracy against measured local latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_macs(path: Path, macs: np.ndarray, latency: np.ndarray, runtime: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(macs / 1e6, latency, s=12, alpha=0.6)
    ax.set_xlabel("MACs, millions")
    ax.set_ylabel(f"latency on this CPU, ms ({runtime}, fp32, batch 1, 1 thread)")
    ax.set_title("NB201: MACs against measured local latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
