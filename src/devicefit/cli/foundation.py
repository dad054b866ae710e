"""Foundation CLI commands: ``info``, ``measure`` and ``devices``.

Top-level imports are typer and light devicefit modules only; torch (counting, building, measuring) and
rich are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

from ..data import data_dir
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

if TYPE_CHECKING:
    from rich.table import Table

NB201_INPUT_SHAPE = (3, 32, 32)
#: The runtimes of :func:`devicefit.hardware.measure_latency` (a test keeps the two lists equal).
Runtime = Literal["torch", "onnxruntime"]
ArchArgument = typer.Argument(..., help="NB201 arch string, or nb201:INDEX (official index, 0..15624; needs the data).")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _mega(x: float) -> str:
    return f"{x / 1e6:,.2f} M"


def _kib(x: float) -> str:
    return f"{x / 1024:,.1f} KiB"


@app.command()
@clean_errors
def info(
    arch: str = ArchArgument,
    memory: bool = typer.Option(False, "--memory", help="Also count peak activation memory: builds and runs the "
                                "network (imports torch; about 3 s more). Without it params and MACs come from "
                                "the closed form, equal to the counted values."),
    data_dir_path: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Cost (params, MACs, memory), benchmark accuracies and all known device latencies of one NB201 cell."""
    from ..data import device_values, load_nb201_table, resolve_arch
    from ..data.nb201_table import RELATIVE_PATH

    root = data_dir(data_dir_path, required=False)
    table = None
    if root is not None and (root / RELATIVE_PATH).is_file():
        table = load_nb201_table(root / RELATIVE_PATH)
    cell, index = resolve_arch(arch, root, table=table)
    latencies_ms: dict[str, float | None] = {} if root is None else device_values(cell, root)
    accuracies: dict[str, Any] = {}
    if table is not None:
        record = table.record(cell)
        accuracies = {k: v for k, v in record.items() if k in table.accuracy_columns}
    cost = _cell_cost(cell, memory)
    out = {
        "arch_str": cell.to_str(),
        "nb201_index": index,
        "disconnected": cell.is_disconnected(),
        "canonical_key": cell.canonical_key(),
        "cost": cost,
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
    model_bytes = (cost["model_bytes_fp32"], cost["model_bytes_fp16"], cost["model_bytes_int8"])
    peak = cost["peak_activation_bytes"]
    con.print(_two_columns("cost (NB201 CIFAR network, C=16, N=5, input 1x3x32x32)", ("quantity", "value"), [
        ("params", f"{cost['params']:,}"),
        ("MACs (conv + linear)", _mega(cost["macs"])),
        ("FLOPs (= 2 x MACs)", _mega(cost["flops"])),
        ("peak activation memory", "— (--memory counts it)" if peak is None else _kib(peak)),
        ("model size fp32 / fp16 / int8", " / ".join(_kib(b) for b in model_bytes)),
    ]))
    if root is None:
        con.print("No data directory (pass --data-dir or set DEVICEFIT_DATA): accuracies and device latencies omitted.")
        return
    if table is None:
        con.print(f"No NB201 table ({RELATIVE_PATH}) in {root}: accuracies omitted.")
    else:
        con.print(_two_columns("NB201 accuracies, %", ("column", "value"),
                               [(k, "—" if v is None else f"{v:.2f}") for k, v in accuracies.items()]))
    con.print(_two_columns("device latencies, ms", ("device", "latency ms"),
                           [(k, "— (not in table)" if v is None else f"{v:.4g}") for k, v in latencies_ms.items()]))


def _cell_cost(cell: Any, memory: bool) -> dict[str, Any]:
    """The cost of a cell's network: counted (``memory``: with peak activation memory) or in closed form."""
    if memory:
        from ..hardware.counting import count_model
        from ..spaces.nb201_model import build_nb201

        return {**count_model(build_nb201(cell), NB201_INPUT_SHAPE).to_dict(), "how": "counted"}
    from ..predictors.flops import cell_macs_params

    macs, params = cell_macs_params(cell)
    return {"params": params, "macs": macs, "flops": 2 * macs, "peak_activation_bytes": None,
            "model_bytes_fp32": 4 * params, "model_bytes_fp16": 2 * params, "model_bytes_int8": params,
            "input_shape": [1, *NB201_INPUT_SHAPE], "how": "closed form"}


def _two_columns(title: str, headers: tuple[str, str], rows: list[tuple[str, str]]) -> Table:
    """A name / right-aligned value table."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column(headers[0])
    t.add_column(headers[1], justify="right")
    for name, value in rows:
        t.add_row(name, value)
    return t


@app.command()
@clean_errors
def measure(
    arch: str = ArchArgument,
    runtime: Runtime = typer.Option("onnxruntime", "--runtime", help="Inference runtime."),
    repeats: int = typer.Option(50, "--repeats", min=1, help="Timed runs."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs first."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads of the runtime."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Batch size."),
    data_dir_path: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Measure the latency of one NB201 cell on this machine's CPU (median and inter-quartile range)."""
    from ..data import resolve_arch
    from ..hardware.counting import count_model
    from ..hardware.measure import measure_latency
    from ..spaces.nb201_model import build_nb201

    cell, index = resolve_arch(arch, data_dir_path)
    model = build_nb201(cell)
    cost = count_model(model, NB201_INPUT_SHAPE, batch_size=batch_size)
    m = measure_latency(
        model, NB201_INPUT_SHAPE, runtime, warmup=warmup, repeats=repeats, threads=threads, batch_size=batch_size
    )
    p = m.protocol
    out = {
        "arch_str": cell.to_str(),
        "nb201_index": index,
        "latency_ms": {"median": m.median_ms, "p25": m.p25_ms, "p75": m.p75_ms},
        "cpu_time_ms": {"median": m.cpu_median_ms, "p25": m.cpu_p25_ms, "p75": m.cpu_p75_ms},
        "samples": m.samples,
        "macs": cost.macs,
        "params": cost.params,
        "protocol": p.to_dict(),
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
    con.print(
        f"[dim]{p.runtime} on {p.cpu}, {p.threads} thread(s), batch {p.batch_size}, "
        f"{p.warmup} warm-up + {p.repeats} timed runs, {p.date_utc}[/dim]"
    )


@app.command()
@clean_errors
def devices(data_dir_path: Path | None = DataDirOption, as_json: bool = JsonOption) -> None:
    """List devices: this machine and every latency table in the data directory, with source and cell count."""
    from rich.table import Table

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
