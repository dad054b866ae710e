"""``devicefit demo``: what ``make demo`` runs (see :mod:`devicefit.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json


def _mega(x: float) -> str:
    return f"{x / 1e6:,.2f} M"


@app.command()
@clean_errors
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder (results store, summary, plot)."),
    data_dir_path: Path | None = DataDirOption,
    sample: int = typer.Option(100, "--sample", min=3, help="Number of NB201 cells to measure (unique, connected)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the cell sample."),
    runtime: Literal["onnxruntime", "torch"] = typer.Option("onnxruntime", "--runtime", help="Inference runtime."),
    repeats: int = typer.Option(50, "--repeats", min=1, help="Timed runs per cell."),
    as_json: bool = JsonOption,
) -> None:
    """Measure NB201 cells on this machine; rank them by MACs and other devices; accuracy-latency Pareto front."""
    from ..demo import run_demo

    result = run_demo(
        out, data_dir_path, sample=sample, seed=seed, runtime=runtime, repeats=repeats, progress=not as_json
    )
    if as_json:
        print_json(result.to_dict())
        return
    con = Console(highlight=False)
    p = result.protocol
    con.print(
        f"[bold]{result.cells} NB201 cells[/bold] measured on {p.get('cpu', 'this CPU')} with {result.runtime} "
        f"(fp32, batch 1, {p.get('threads', 1)} thread, {p.get('repeats')} timed runs each; "
        f"{result.newly_measured} new, the rest resumed from {out / 'demo_results.sqlite'}); "
        f"median latency {result.median_latency_ms:.3f} ms"
    )
    t = Table(title="How well does X rank this machine's latency? (Spearman rho)")
    t.add_column("ranked by")
    t.add_column("source")
    t.add_column("cells", justify="right")
    t.add_column("Spearman rho", justify="right")
    t.add_row("MACs", "counted", str(result.cells), f"{result.spearman_macs:.3f}")
    t.add_row("params", "counted", str(result.cells), f"{result.spearman_params:.3f}")
    for d in result.device_spearman:
        t.add_row(f"{d['device']} latency", d["source"], str(d["cells"]), f"{d['spearman']:.3f}")
    con.print(t)
    if result.pareto:
        t = Table(title="Pareto front: NB201 CIFAR-10 test accuracy (200 ep) against latency here")
        for col in ("NB201 index", "latency ms", "accuracy %", "MACs"):
            t.add_column(col, justify="right")
        t.add_column("arch", overflow="fold")
        for r in result.pareto:
            t.add_row(str(r["nb201_index"]), f"{r['latency_ms']:.3f}", f"{r['accuracy']:.2f}", _mega(r["macs"]),
                      r["arch_str"])
        con.print(t)
    for note in result.notes:
        con.print(note)
    con.print(f"plot: {result.plot}\nsummary: {out / 'demo_summary.json'}")
