"""``devicefit report PATH``: Markdown and one self-contained HTML page of a search study (a results store) or of
a compression (the output folder of ``devicefit compress``); thin over :func:`devicefit.report.search_report`
and :func:`devicefit.report.compress_report`."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json


@app.command("report")
@clean_errors
def report_command(
    store: Path = typer.Argument(..., help="Results store of a search (devicefit search --store), or the output "
                                 "folder of devicefit compress."),
    study: str = typer.Option("search", "--study", help="Name of the study in the store."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: beside the store, <store name>-report)."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Write the report of a search or a compression: Markdown (PNG figures beside it) and one self-contained
    HTML page.

    A search: settings, the answer (with its test accuracy), the search curve, the Pareto front against the
    constrained cost, the re-check of a predicted budget, and the answer's latency and rank on every device
    table. A compression: accuracy and cost before and after, the measured speed-up, the per-layer plot.
    """
    from ..report import compress_report, search_report

    if store.is_dir():
        paths = compress_report(store, out if out is not None else store)
    else:
        folder = out if out is not None else store.with_name(f"{store.stem}-report")
        paths = search_report(store, folder, study=study, data_dir=data_dir)
    if as_json:
        print_json({"markdown": str(paths.markdown), "html": str(paths.html),
                    "figures": [str(f) for f in paths.figures]})
        return
    print(f"markdown: {paths.markdown}\nhtml: {paths.html}")
