"""``devicefit predictor``: fit, evaluate and use latency/energy predictors (see :mod:`devicefit.predictors`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from ..data import load_device_table, load_device_tables, read_latency_csv
from ..data.latency_table import LatencyTable
from ..errors import InputError, UnknownNameError
from ..predictors import (
    PREDICTORS,
    Predictor,
    TransferPredictor,
    evaluate,
    load_predictor,
    make_predictor,
    measurement_ceiling,
    sources_for,
    split_table,
)
from ..spaces.nb201 import NB201Cell
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

predictor_app = typer.Typer(help="Latency/energy predictors: FLOPs, layer-wise, MLP, BRP-NAS GCN, few-shot transfer.")
app.add_typer(predictor_app, name="predictor")

_err = Console(stderr=True)
MODELS = ", ".join(PREDICTORS)

DeviceOption = typer.Option(..., "--device", help="Device name (a LatBench/HELP device, or a column of --table).")
ModelOption = typer.Option("gcn", "--model", help=f"Predictor: {MODELS}.")
TrainOption = typer.Option(900, "--train", help="Number of random training cells of the table (0 = all).")
SeedOption = typer.Option(0, "--seed", help="Seed of the training-cell sample and of the weights.")
TableOption = typer.Option(
    None, "--table", help="Your own measurements: CSV with arch_str + one column per device (HELP layout)."
)
UnitOption = typer.Option("ms", "--unit", help="Unit of the --table values: ms (latency) or mJ (energy).")


def _load_table(device: str, data_dir: Path | None, table: Path | None, unit: str) -> LatencyTable:
    if table is None:
        return load_device_table(device, data_dir)
    tables = read_latency_csv(table, unit=unit, source="user")
    if device not in tables:
        raise UnknownNameError(f"device {device!r} is not a column of {str(table)!r}; columns: {', '.join(tables)}")
    return tables[device]


def _fit(
    device: str, model: str, n_train: int, seed: int, data_dir: Path | None, table: Path | None, unit: str
) -> tuple[Predictor, LatencyTable, list[NB201Cell], list[NB201Cell]]:
    target = _load_table(device, data_dir, table, unit)
    if n_train == 0 or n_train >= len(target):
        if n_train > len(target):
            raise InputError(f"--train {n_train} exceeds the {len(target)} cells of device {device!r}")
        train, test = sorted(target.cells()), []
    else:
        train, test = split_table(target, n_train, seed)
    predictor = make_predictor(model)
    with _err.status(f"fitting {model} on {len(train)} cells of {device} ..."):
        if isinstance(predictor, TransferPredictor):
            sources = sources_for(device, load_device_tables(data_dir))
            sources = {k: v for k, v in sources.items() if v.unit == target.unit}
            _err.print(f"pre-training on {len(sources)} source devices (family of {device!r} left out)")
            predictor.pretrain(sources, seed=seed)
        predictor.fit_table(target, train, seed=seed)
    if test:
        predictor.metrics = {"n_test": len(test), **evaluate(predictor, target, test)}
    return predictor, target, train, test


def _summary(predictor: Predictor, target: LatencyTable, n_test: int) -> dict:
    return {
        "device": target.device, "model": predictor.name, "unit": predictor.unit, "n_train": predictor.n_train,
        "n_test": n_test, "fit_seconds": round(predictor.fit_seconds, 3), **predictor.metrics,
    }


@predictor_app.command("fit")
@clean_errors
def fit_cmd(
    device: str = DeviceOption,
    model: str = ModelOption,
    train: int = TrainOption,
    seed: int = SeedOption,
    out: Path = typer.Option(..., "--out", help="Output file (writes OUT.npz + OUT.json)."),
    data_dir: Path | None = DataDirOption,
    table: Path | None = TableOption,
    unit: str = UnitOption,
    as_json: bool = JsonOption,
) -> None:
    """Fit a predictor on N random cells of a device table and save it (metrics on the other cells)."""
    predictor, target, _, test = _fit(device, model, train, seed, data_dir, table, unit)
    path = predictor.save(out)
    summary = {**_summary(predictor, target, len(test)), "saved": str(path)}
    if as_json:
        print_json(summary)
    else:
        typer.echo("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


@predictor_app.command("evaluate")
@clean_errors
def evaluate_cmd(
    device: str = DeviceOption,
    model: str = ModelOption,
    train: int = TrainOption,
    seed: int = SeedOption,
    data_dir: Path | None = DataDirOption,
    table: Path | None = TableOption,
    unit: str = UnitOption,
    as_json: bool = JsonOption,
) -> None:
    """Train on N random cells of the table and report within +-1/5/10 %, Spearman, Kendall, MAPE on the rest.

    When the table measures both cells of enough twin pairs (one network under two arch strings), it also
    reports the bracket that measurement noise puts on within +-10 % for any predictor.
    """
    if train == 0:
        raise InputError("evaluate needs held-out cells: give --train N smaller than the table")
    start = time.perf_counter()
    predictor, target, _, test = _fit(device, model, train, seed, data_dir, table, unit)
    summary = {**_summary(predictor, target, len(test)), "seconds": round(time.perf_counter() - start, 3)}
    ceiling = measurement_ceiling(target)
    if ceiling is not None:  # what the table's own noise allows (see devicefit.predictors.ceiling)
        summary |= {"twin_pairs": ceiling.pairs, "ceiling_within_10pct_low": ceiling.twin_agreement,
                    "ceiling_within_10pct_high": ceiling.upper_bound}
    if as_json:
        print_json(summary)
        return
    width = max(map(len, summary))
    for k, v in summary.items():
        typer.echo(f"{k:>{width}}  {v:.4f}" if isinstance(v, float) else f"{k:>{width}}  {v}")


@predictor_app.command("predict")
@clean_errors
def predict_cmd(
    file: Path = typer.Argument(..., help="A saved predictor (.npz or .json of the pair)."),
    archs: list[str] = typer.Argument(..., help="NB201 arch strings."),
    as_json: bool = JsonOption,
) -> None:
    """Predicted latency (ms) or energy (mJ) of each architecture."""
    predictor = load_predictor(file)
    cells = [NB201Cell.from_str(a) for a in archs]
    values = predictor.predict(cells)
    if as_json:
        print_json({"device": predictor.device, "model": predictor.name, "unit": predictor.unit,
                    "predictions": [{"arch": c.to_str(), "value": float(v)} for c, v in zip(cells, values)]})
        return
    for c, v in zip(cells, values):
        typer.echo(f"{v:10.4f} {predictor.unit}  {c.to_str()}")


__all__ = ["predictor_app"]
