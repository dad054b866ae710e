"""``devicefit space`` and ``devicefit bench``: the search space and its benchmark table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..data import PUBLISHED_OPTIMA, load_nb201_table
from ..errors import InputError
from ..spaces import space_statistics
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

SPACES = ("nb201",)


def _check_space(name: str) -> None:
    if name not in SPACES:
        raise InputError(f"unknown search space {name!r}; expected one of {', '.join(SPACES)}")


@app.command("space")
@clean_errors
def space_command(name: str = typer.Argument("nb201", help="Search space."), json_out: bool = JsonOption) -> None:
    """Statistics of a search space: cells, unique cells (isomorphism-aware), disconnected cells."""
    _check_space(name)
    stats = {"space": name, **space_statistics()}
    if json_out:
        print_json(stats)
        return
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
    name: str = typer.Argument("nb201", help="Benchmark table."),
    data_dir: Path | None = DataDirOption,
    json_out: bool = JsonOption,
) -> None:
    """The best cell of every accuracy column of the benchmark table, beside the published optimum."""
    _check_space(name)
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
