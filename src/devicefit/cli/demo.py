"""``devicefit demo``: what ``make demo`` runs (see :mod:`devicefit.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json


@app.command()
@clean_errors
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder (results store, report, ONNX)."),
    data_dir_path: Path | None = DataDirOption,
    device: str = typer.Option("pixel3", "--device", help="Device whose latency is budgeted (its table's median)."),
    strategy: Literal["random", "evolution", "reinforce", "brp", "optuna"] = typer.Option(
        "brp", "--strategy", help="Search strategy."),
    budget: int = typer.Option(50, "--budget", min=1, help="Objective evaluations."),
    warmup: int = typer.Option(200, "--warmup", min=0, help="Cells scored with synflow before the search."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the search."),
    as_json: bool = JsonOption,
) -> None:
    """Fit a NAS-Bench-201 network to a device's latency budget and write its report (the main job)."""
    from ..demo import run_demo

    result = run_demo(out, data_dir_path, device=device, strategy=strategy, budget=budget, warmup=warmup, seed=seed,
                      progress=not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    from rich.console import Console

    con = Console(highlight=False)
    s = result.search
    con.print(f"[bold]{s['strategy']}[/bold] on {result.device} within {result.latency_budget_ms:.4g} ms: "
              f"{s['evaluations']} evaluations ({s['warmup_scored']} cells scored for warm-up, {s['rejected']} "
              f"candidates over budget skipped before evaluation), {s['seconds']:.1f} s")
    best = s["best"]
    if best is None:
        con.print("[yellow]no cell within the budget was found[/yellow]")
    else:
        con.print(f"best: [bold]{best['candidate']}[/bold]")
        for k, v in best["values"].items():
            con.print(f"  {k}: {v:.4g}")
        for k, v in s.get("best_test", {}).items():
            con.print(f"  {k} (reported, not searched on): {v:.4g}")
    if result.optimum is not None:
        o = result.optimum
        con.print(f"optimum under the budget: {o['accuracy']:.2f} (NB201 index {o['nb201_index']}, "
                  f"{o['latency_ms']:.4g} ms)")
    if result.best_local_ms is not None:
        con.print(f"the answer runs here in {result.best_local_ms:.3f} ms (ONNX Runtime, 1 thread): {result.onnx}")
    for note in result.notes:
        con.print(note)
    for kind, path in result.report.items():
        con.print(f"report ({kind}): {path}")
