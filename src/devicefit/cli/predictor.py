"""``devicefit predictor``: fit, evaluate, pre-train and use latency/energy predictors.

Thin over :func:`devicefit.predictors.fit_on_device`, :func:`~devicefit.predictors.evaluate_on_device`,
:func:`~devicefit.predictors.pretrain_trunk` and :func:`~devicefit.predictors.load_predictor`. Heavy
libraries (torch, numpy, pandas) are imported inside the commands only, so ``devicefit --help`` stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from ..errors import InputError
from ..predictors.kinds import PREDICTOR_KINDS, UNITS
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

predictor_app = typer.Typer(
    help="Latency/energy predictors: FLOPs, layer-wise, MLP, BRP-NAS GCN, few-shot transfer.", no_args_is_help=True
)
app.add_typer(predictor_app, name="predictor")

#: The predictor kinds and units as choices, so that ``--help`` lists them and a wrong value exits with 2.
Kind = Enum("Kind", {k: k for k in PREDICTOR_KINDS}, type=str)  # type: ignore[misc]
Unit = Enum("Unit", {u: u for u in UNITS}, type=str)  # type: ignore[misc]

DeviceOption = typer.Option(
    ..., "--device", help="A device of the data directory (LatBench/HELP), or a column of --table."
)
KindOption = typer.Option("gcn", "--kind", help="Predictor kind.")
TrainOption = typer.Option(900, "--train", min=0, help="Number of random training cells of the table.")
SeedOption = typer.Option(
    0, "--seed", min=0, help="Seed of the training sample, of the weights and of a transfer trunk's pre-training."
)
TableOption = typer.Option(
    None, "--table", help="Your own measurements: CSV with arch_str + one column per device (HELP layout)."
)
UnitOption = typer.Option("ms", "--unit", help="Unit of the --table values: ms (latency) or mJ (energy).")
TrunkOption = typer.Option(
    None, "--trunk",
    help="Transfer only: a trunk saved by 'devicefit predictor pretrain' (refused if it was pre-trained on the "
    "target's family, or on an --exclude device).",
)
ExcludeOption = typer.Option(
    "", "--exclude",
    help="Transfer only: comma-separated devices to leave out of the trunk's sources. A device of the data "
    "directory always leaves its own family out; a --table column leaves out only what --exclude names.",
)
CacheDirOption = typer.Option(
    None, "--cache-dir",
    help="Transfer only, without --trunk: folder of pre-trained trunks, reused by later calls with the same "
    "sources, settings and seed (default: $DEVICEFIT_CACHE, else .devicefit-cache in the current directory).",
    show_default=False,
)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _target(device: str, table: Path | None, unit: Any) -> Any:
    """The device name (a table of the data directory) or the user's table read from ``--table``."""
    if table is None:
        if unit.value != "ms":
            raise InputError("--unit applies to a --table of your own; the data directory's tables are in ms")
        return device
    from ..data import read_latency_csv
    from ..errors import UnknownNameError

    tables = read_latency_csv(table, unit=unit.value, source="user")
    if device not in tables:
        raise UnknownNameError(f"device {device!r} is not a column of {str(table)!r}; columns: {', '.join(tables)}")
    return tables[device]


def _run(fit: bool, device: str, kind: Any, train: int, seed: int, data_dir: Path | None, table: Path | None,
         unit: Any, trunk: Path | None, exclude: str, cache_dir: Path | None) -> Any:
    from rich.console import Console

    from ..predictors import evaluate_on_device, fit_on_device

    err = Console(stderr=True)
    target = _target(device, table, unit)
    run = fit_on_device if fit else evaluate_on_device
    with err.status(f"fitting {kind.value} on {train or 'all'} cells of {device} ..."):
        result = run(target, kind.value, train, seed, data_dir=data_dir, trunk=trunk, exclude=_names(exclude),
                     cache_dir=cache_dir)
    if result.trunk is not None:
        t = result.trunk
        how = f"pre-trained in {t.seconds:.0f} s and saved to" if t.pretrained else "reused"
        left_out = ", ".join(t.excluded) or "none"
        err.print(f"transfer trunk: {how} {t.path or 'the given trunk'}; {len(t.sources)} sources; left out: "
                  f"{left_out}" + (f" (family {t.excluded_family!r})" if t.excluded_family else ""), highlight=False)
    return result


def _echo_table(summary: dict[str, Any]) -> None:
    width = max(map(len, summary))
    for k, v in summary.items():
        text = ", ".join(map(str, v)) if isinstance(v, list) else (f"{v:.4f}" if isinstance(v, float) else str(v))
        typer.echo(f"{k:>{width}}  {text}")


@predictor_app.command("fit")
@clean_errors
def fit_cmd(
    device: str = DeviceOption,
    kind: Kind = KindOption,
    train: int = typer.Option(900, "--train", min=0, help="Number of random training cells of the table (0 = all)."),
    seed: int = SeedOption,
    out: Path = typer.Option(..., "--out", help="Output file name (writes OUT.npz + OUT.json)."),
    data_dir: Path | None = DataDirOption,
    table: Path | None = TableOption,
    unit: Unit = UnitOption,
    trunk: Path | None = TrunkOption,
    exclude: str = ExcludeOption,
    cache_dir: Path | None = CacheDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Fit a predictor on N random cells of a device table and save it (metrics on the other cells)."""
    from ..predictors.io import check_writable

    check_writable(out)  # before minutes of fitting, not after
    result = _run(True, device, kind, train, seed, data_dir, table, unit, trunk, exclude, cache_dir)
    summary = {**result.as_dict(), "saved": str(result.predictor.save(out))}
    if as_json:
        print_json(summary)
    else:
        _echo_table(summary)


@predictor_app.command("evaluate")
@clean_errors
def evaluate_cmd(
    device: str = DeviceOption,
    kind: Kind = KindOption,
    train: int = TrainOption,
    seed: int = SeedOption,
    data_dir: Path | None = DataDirOption,
    table: Path | None = TableOption,
    unit: Unit = UnitOption,
    trunk: Path | None = TrunkOption,
    exclude: str = ExcludeOption,
    cache_dir: Path | None = CacheDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Train on N random cells of the table and report within +-1/5/10 %, Spearman, Kendall, MAPE on the rest.

    When the table measures both cells of enough twin pairs (one network under two arch strings), it also
    reports the bracket that measurement noise puts on within +-10 % for any predictor.
    """
    result = _run(False, device, kind, train, seed, data_dir, table, unit, trunk, exclude, cache_dir)
    if as_json:
        print_json(result.as_dict())
    else:
        _echo_table(result.as_dict())


@predictor_app.command("pretrain")
@clean_errors
def pretrain_cmd(
    out: Path = typer.Option(..., "--out", help="Output file name of the trunk (writes OUT.npz + OUT.json)."),
    exclude: str = typer.Option(
        "", "--exclude", help="Comma-separated devices to leave out of the sources (e.g. the family you will "
        "evaluate on: a trunk that holds it is refused there)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the pre-training sample and weights."),
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Pre-train the few-shot transfer trunk on the data directory's latency tables and save it (minutes).

    Later 'fit'/'evaluate --kind transfer --trunk OUT' adapt it to a device from a few cells in milliseconds.
    """
    from rich.console import Console

    from ..predictors import pretrain_trunk
    from ..predictors.io import check_writable

    check_writable(out)
    with Console(stderr=True).status("pre-training the transfer trunk ..."):
        trunk = pretrain_trunk(data_dir=data_dir, exclude=_names(exclude), seed=seed)
    summary = {"sources": trunk.sources, "excluded": sorted(_names(exclude)), "seed": trunk.seed,
               "pretrain_seconds": round(float(trunk.info.get("seconds", 0.0)), 3), "saved": str(trunk.save(out))}
    if as_json:
        print_json(summary)
    else:
        _echo_table(summary)


@predictor_app.command("predict")
@clean_errors
def predict_cmd(
    file: Path = typer.Argument(..., help="A saved predictor (.npz or .json of the pair)."),
    candidates: list[str] = typer.Argument(
        ..., help="Candidates of the predictor's space: NB201 arch strings (other spaces: their JSON text)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Predicted latency (ms) or energy (mJ) of each candidate."""
    from ..predictors import load_predictor

    predictor = load_predictor(file)
    space = predictor.space
    cands = [_candidate(space, c) for c in candidates]
    values = predictor.predict(cands)
    if as_json:
        print_json({"device": predictor.device, "kind": predictor.name, "unit": predictor.unit,
                    "space": space.settings(),
                    "predictions": [{"candidate": space.to_json(c), "value": float(v)} for c, v in zip(cands, values)]})
        return
    for c, v in zip(cands, values):
        data = space.to_json(c)
        typer.echo(f"{v:10.4f} {predictor.unit}  {data if isinstance(data, str) else space.identity(c)}")


def _candidate(space: Any, text: str) -> Any:
    """A command-line candidate: the space's JSON string (an NB201 arch string), else JSON text."""
    try:
        return space.from_json(text)
    except InputError as exc:
        try:
            return space.from_identity(text)
        except InputError:
            raise exc from None


__all__ = ["predictor_app"]
