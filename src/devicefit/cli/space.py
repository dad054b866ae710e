"""``devicefit space`` and ``devicefit bench``: the search space and its benchmark table.

Top-level imports are typer and light devicefit modules only (``space nb201`` needs neither numpy nor torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

#: The spaces with statistics and a benchmark table (NB201 is the one with tables).
SpaceName = Literal["nb201"]


@app.command("space")
@clean_errors
def space_command(
    name: SpaceName = typer.Argument("nb201", help="Search space."), json_out: bool = JsonOption
) -> None:
    """Statistics of a search space: cells, unique cells (isomorphism-aware), disconnected cells."""
    from ..spaces.nb201 import space_statistics

    stats = {"space": name, **space_statistics()}
    if json_out:
        print_json(stats)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"search space {name}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for k, v in stats.items():
        if k != "space":
            table.add_row(k, f"{v:,}")
    Console().print(table)


@app.command("bench")
@clean_errors
def bench_command(
    name: SpaceName = typer.Argument("nb201", help="Benchmark table."),
    data_dir: Path | None = DataDirOption,
    json_out: bool = JsonOption,
) -> None:
    """The best cell of every accuracy column of the benchmark table, beside the published optimum."""
    from ..data import PUBLISHED_OPTIMA, load_nb201_table

    nb = load_nb201_table(data_dir=data_dir)
    rows = []
    for column in nb.accuracy_columns:
        cell, value = nb.best(column)
        rows.append(
            {
                "column": column,
                "best_percent": value,
                "published_percent": PUBLISHED_OPTIMA.get(column),
                "nb201_index": nb.index_of(cell),
                "arch_str": cell.to_str(),
            }
        )
    if json_out:
        print_json({"benchmark": name, "cells": len(nb), "best": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name}: best cell per accuracy column ({len(nb):,} cells)")
    for col in ("column", "best %", "published %", "index", "arch_str"):
        table.add_column(col, justify="right" if "%" in col or col == "index" else "left")
    for r in rows:
        pub = r["published_percent"]
        table.add_row(
            r["column"],
            f"{r['best_percent']:.2f}",
            "" if pub is None else f"{pub:.2f}",
            str(r["nb201_index"]),
            r["arch_str"],
        )
    Console(width=200).print(table)
