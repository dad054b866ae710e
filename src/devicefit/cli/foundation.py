"""Foundation CLI commands: ``info``, ``measure``, ``devices`` and ``demo``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..data import NB201Table, data_dir, load_device_tables, load_nb201_table
from ..data.datadir import DataFileError
from ..errors import InputError
from ..spaces import NB201Cell, build_nb201
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

NB201_INPUT_SHAPE = (3, 32, 32)
_INDEX_PREFIX = "nb201:"


def resolve_arch(
    text: str, data_dir_path: str | os.PathLike[str] | None = None, *, table: NB201Table | None = None
) -> tuple[NB201Cell, int | None]:
    """An NB201 cell from an arch string or ``nb201:INDEX`` (official index, looked up in the NB201 table).

    Returns the cell and its official index (``None`` for an arch string when no data directory is set).
    ``table``, when the caller has already loaded it, is used instead of reading the table again.
    """
    text = text.strip()
    if text.lower().startswith(_INDEX_PREFIX):
        raw = text[len(_INDEX_PREFIX) :]
        try:
            index = int(raw)
        except ValueError:
            raise InputError(
                f"architecture {text!r}: expected nb201:INDEX with an integer INDEX, got {raw!r}"
            ) from None
        table = table or load_nb201_table(data_dir=data_dir_path)
        return table.cell_at(index), index
    cell = NB201Cell.from_str(text)
    if table is None:
        root = data_dir(data_dir_path, required=False)
        if root is None:
            return cell, None
        try:
            table = load_nb201_table(data_dir=root)
        except DataFileError:
            return cell, None
    try:
        return cell, table.index_of(cell)
    except KeyError:
        return cell, None


def _console() -> Console:
    return Console(highlight=False)


def _mega(x: float) -> str:
    return f"{x / 1e6:,.2f} M"


def _kib(x: float) -> str:
    return f"{x / 1024:,.1f} KiB"


@app.command()
@clean_errors
def info(
    arch: str = typer.Argument(..., help="NB201 arch string, or nb201:INDEX (official index)."),
    data_dir_path: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Cost (params, MACs, memory), benchmark accuracies and all known device latencies of one NB201 cell."""
    from ..hardware.counting import count_model

    root = data_dir(data_dir_path, required=data_dir_path is not None)
    table = None if root is None else load_nb201_table(data_dir=root)
    cell, index = resolve_arch(arch, root, table=table)
    cost = count_model(build_nb201(cell), NB201_INPUT_SHAPE)
    accuracies: dict[str, Any] = {}
    latencies_ms: dict[str, float | None] = {}
    if root is not None and table is not None:
        record = table.record(cell)
        accuracies = {k: v for k, v in record.items() if k in table.accuracy_columns}
        for name, lat in sorted(load_device_tables(root).items()):
            latencies_ms[name] = lat.get(cell)
    out = {
        "arch_str": cell.to_str(),
        "nb201_index": index,
        "disconnected": cell.is_disconnected(),
        "canonical_key": cell.canonical_key(),
        "cost": cost.to_dict(),
        "accuracy_pct": accuracies,
        "latency_ms": latencies_ms,
        "data_dir": None if root is None else str(root),
    }
    if as_json:
        print_json(out)
        return
    con = _console()
    con.print(f"[bold]{cell.to_str()}[/bold]" + (f"  (NB201 index {index})" if index is not None else ""))
    if cell.is_disconnected():
        con.print("[yellow]disconnected cell: no path from input to output (chance accuracy)[/yellow]")
    model_bytes = (cost.model_bytes_fp32, cost.model_bytes_fp16, cost.model_bytes_int8)
    con.print(_two_columns("cost (NB201 CIFAR network, C=16, N=5, input 1x3x32x32)", ("quantity", "value"), [
        ("params", f"{cost.params:,}"),
        ("MACs (conv + linear)", _mega(cost.macs)),
        ("FLOPs (= 2 x MACs)", _mega(cost.flops)),
        ("peak activation memory", _kib(cost.peak_activation_bytes)),
        ("model size fp32 / fp16 / int8", " / ".join(_kib(b) for b in model_bytes)),
    ]))
    if root is None:
        con.print("No data directory (pass --data-dir or set DEVICEFIT_DATA): accuracies and device latencies omitted.")
        return
    con.print(_two_columns("NB201 accuracies, %", ("column", "value"),
                           [(k, "—" if v is None else f"{v:.2f}") for k, v in accuracies.items()]))
    con.print(_two_columns("device latencies, ms", ("device", "latency ms"),
                           [(k, "— (not in table)" if v is None else f"{v:.4g}") for k, v in latencies_ms.items()]))


def _two_columns(title: str, headers: tuple[str, str], rows: list[tuple[str, str]]) -> Table:
    """A name / right-aligned value table."""
    t = Table(title=title)
    t.add_column(headers[0])
    t.add_column(headers[1], justify="right")
    for name, value in rows:
        t.add_row(name, value)
    return t


@app.command()
@clean_errors
def measure(
    arch: str = typer.Argument(..., help="NB201 arch string, or nb201:INDEX (official index; needs the data)."),
    runtime: str = typer.Option("onnxruntime", "--runtime", help="torch or onnxruntime."),
    repeats: int = typer.Option(50, "--repeats", help="Timed runs."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
    threads: int = typer.Option(1, "--threads", help="CPU threads of the runtime."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch size."),
    data_dir_path: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Measure the latency of one NB201 cell on this machine's CPU (median and inter-quartile range)."""
    from ..hardware.counting import count_model
    from ..hardware.measure import measure_latency

    cell, index = resolve_arch(arch, data_dir_path)
    model = build_nb201(cell)
    cost = count_model(model, NB201_INPUT_SHAPE, batch_size=batch_size)
    m = measure_latency(
        model, NB201_INPUT_SHAPE, runtime, warmup=warmup, repeats=repeats, threads=threads,  # type: ignore[arg-type]
        batch_size=batch_size,
    )
    out = {
        "arch_str": cell.to_str(),
        "nb201_index": index,
        "latency_ms": {"median": m.median_ms, "p25": m.p25_ms, "p75": m.p75_ms},
        "cpu_time_ms": {"median": m.cpu_median_ms, "p25": m.cpu_p25_ms, "p75": m.cpu_p75_ms},
        "samples": m.samples,
        "macs": cost.macs,
        "params": cost.params,
        "protocol": m.protocol,
    }
    if as_json:
        print_json(out)
        return
    con = _console()
    con.print(f"[bold]{cell.to_str()}[/bold]" + (f"  (NB201 index {index})" if index is not None else ""))
    con.print(
        f"latency {m.median_ms:.4f} ms (median; IQR {m.p25_ms:.4f}–{m.p75_ms:.4f} ms over {m.samples} runs)  "
        f"MACs {_mega(cost.macs)}  params {cost.params:,}"
    )
    con.print(f"thread CPU time {m.cpu_median_ms:.4f} ms (median; differs from latency when other processes compete)")
    p = m.protocol
    con.print(
        f"[dim]{p['runtime']} on {p['cpu']}, {p['threads']} thread(s), batch {p['batch_size']}, "
        f"{p['warmup']} warm-up + {p['repeats']} timed runs, {p['date_utc']}[/dim]"
    )


@app.command()
@clean_errors
def devices(data_dir_path: Path | None = DataDirOption, as_json: bool = JsonOption) -> None:
    """List devices: this machine and every latency table in the data directory, with source and cell count."""
    from ..hardware.devices import list_devices

    found = list_devices(data_dir_path)
    if as_json:
        print_json([d.to_dict() for d in found])
        return
    t = Table(title=f"{len(found)} devices")
    t.add_column("device")
    t.add_column("source")
    t.add_column("cells", justify="right")
    t.add_column("unit")
    for d in found:
        t.add_row(d.name, d.source, "on demand" if d.source == "measured" else f"{d.cells:,}", d.unit)
    con = _console()
    con.print(t)
    if len(found) == 1:
        con.print("No data directory (pass --data-dir or set DEVICEFIT_DATA): only this machine is listed.")
