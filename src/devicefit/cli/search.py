"""``devicefit search``: the most accurate NB201 cell under a device budget (thin over :func:`devicefit.search`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

STRATEGY_NAMES = ("random", "evolution", "reinforce", "brp", "optuna")
EXECUTOR_NAMES = ("inline", "process", "ray")


def strategy_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs as strategy options (VALUE as JSON where it parses: 10, 0.5, true; else the text)."""
    import json

    from ..errors import InputError

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--option takes KEY=VALUE (e.g. iterations=10), got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


@app.command("search")
@clean_errors
def search_command(
    space: Literal["nb201"] = typer.Option("nb201", "--space", help="Search space."),
    objective: str = typer.Option("c10_val_200ep", "--objective", help="NB201 accuracy column to maximise "
                                  "(validation accuracy is the search signal; test accuracy is reported), or a "
                                  "zero-cost proxy (synflow) where there is no table."),
    strategy: Literal[STRATEGY_NAMES] = typer.Option("evolution", "--strategy", help="Search strategy."),
    budget: int = typer.Option(100, "--budget", min=1, help="Objective evaluations of distinct candidates."),
    store: Path = typer.Option(..., "--store", help="Results store (SQLite); rerun the same command to resume."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the strategy and the warm-up pool."),
    device: str = typer.Option(None, "--device", help="Device whose latency is constrained (see devicefit devices), "
                               "or 'local': measured on this machine (ONNX Runtime, fp32, batch 1, 1 thread)."),
    max_latency: float = typer.Option(None, "--max-latency", help="Latency budget on --device, ms."),
    latency_from: Literal["table", "predictor"] = typer.Option(
        "table", "--latency-from", help="Judge latency by the device table, or by a saved --predictor (re-checked "
        "against the table at the end)."),
    predictor: Path = typer.Option(None, "--predictor", help="Saved latency predictor (devicefit predictor fit)."),
    max_macs: float = typer.Option(None, "--max-macs", min=0, help="MACs budget (counted)."),
    max_params: float = typer.Option(None, "--max-params", min=0, help="Parameter budget (counted)."),
    warmup: int = typer.Option(0, "--warmup", min=0, help="Zero-cost warm-up: score this many random cells with "
                               "--proxy first (arXiv 2101.08134; the paper used 3000)."),
    proxy: str = typer.Option("synflow", "--proxy", help="Zero-cost proxy of --warmup and --move."),
    proxy_images: Literal["npz", "jpeg", "noise"] = typer.Option(
        "npz", "--proxy-images", help="Images of the proxies: the data directory's lossless batches (npz), its "
        "CIFAR-10 JPEGs, or random noise (no data directory needed; meaningful for data-free synflow only)."),
    move: bool = typer.Option(False, "--move", help="Zero-cost move: evolution mutates to the best-scored neighbour."),
    multi_objective: bool = typer.Option(
        False, "--multi-objective", help="Also minimise --device latency: the result's Pareto front and hypervolume "
        "trade accuracy against it, and optuna searches both objectives."),
    sampler: Literal["tpe", "random", "nsga2"] = typer.Option(
        None, "--sampler", help="Optuna sampler (with --strategy optuna; default tpe)."),
    option: list[str] = typer.Option(None, "--option", help="A strategy option KEY=VALUE (repeatable; VALUE read as "
                                     "JSON where it parses, else text), e.g. --option iterations=10 for brp, "
                                     "--option population=32 for evolution."),
    executor: Literal[EXECUTOR_NAMES] = typer.Option("inline", "--executor", help="Where evaluations run."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes (process) or CPUs (local ray)."),
    ray_address: str = typer.Option(None, "--ray-address", help="A running Ray cluster (with --executor ray)."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Search a space for the most accurate network that meets a latency, MACs or size budget."""
    from ..errors import InputError
    from ..study.search_job import search

    if sampler is not None and strategy != "optuna":
        raise InputError(f"--sampler chooses an Optuna sampler: it needs --strategy optuna, not {strategy}")
    options = strategy_options(option or [])
    if sampler is not None:
        options["sampler"] = sampler
    result = search(space, objective=objective, strategy=strategy, budget=budget, store=store, seed=seed,
                    device=device, max_latency_ms=max_latency, latency_from=latency_from, predictor=predictor,
                    max_macs=max_macs, max_params=max_params, warmup=warmup, proxy=proxy, move=move,
                    proxy_images=proxy_images, multi_objective=multi_objective, executor=executor, workers=workers,
                    ray_address=ray_address, data_dir=data_dir,
                    strategy_options=options or None, progress=not as_json)
    summary = result.summary()
    if as_json:
        print_json(summary)
        return
    from rich.console import Console

    con = Console(highlight=False)
    best = summary["best"]
    con.print(f"[bold]{summary['strategy']}[/bold]: {summary['evaluations']} evaluations, "
              f"{summary['rejected']} candidates rejected by the constraints first, {summary['seconds']:.1f} s")
    if best is None:
        con.print("[yellow]no feasible candidate found[/yellow]")
        return
    con.print(f"best: [bold]{best['candidate']}[/bold]")
    for k, v in best["values"].items():
        con.print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    front = summary["pareto"]
    if front is not None:
        con.print(f"Pareto front of {summary['objective']} against {front['cost']}: {len(front['points'])} "
                  f"candidates, hypervolume {front['hypervolume']:.4g}")
    curve = summary["best_at"]
    con.print("best so far after " + ", ".join(f"{n}: {v:.4g}" for n, v in curve.items() if v is not None))
