"""``devicefit proxies``: zero-cost proxies of NB201 cells (resumable, ranked against the benchmark) or of
a user's own model file.

A user model is a full pickled ``nn.Module`` saved with ``torch.save(model, path)`` and read with
``torch.load(path, weights_only=False)``: this unpickles arbitrary Python objects, so load only files you
trust, and the model's class must be importable. TorchScript archives are refused: the proxies need
forward hooks, parameter-level gradients and a BatchNorm-free copy (synflow), which scripted modules do
not allow. A ``state_dict`` is refused too (it has no architecture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..data import load_nb201_table
from ..data.datadir import DataFileError
from ..errors import InputError
from ..proxies import (
    PROXIES,
    TRUTH_COLUMN,
    NB201ProxySettings,
    compute_proxies,
    load_image_pool,
    proxy_metrics,
    run_nb201_proxies,
    sample_nb201_cells,
)
from ..proxies.minibatch import DATASETS, DEFAULT_BATCH_SIZE
from ..study import ResultStore
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json


def _parse_list(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise InputError(f"{what} must be a comma-separated list, got {value!r}")
    return items


def _parse_shape(value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in _parse_list(value, "--input-shape"))
    except ValueError:
        raise InputError(f"--input-shape must be integers separated by commas like 3,32,32, got {value!r}") from None
    if any(s < 1 for s in shape):
        raise InputError(f"--input-shape must be positive integers, got {value!r}")
    return shape


def load_model_file(path: Path) -> torch.nn.Module:
    """Read a full pickled ``nn.Module`` (``torch.save(model, path)``); clear errors for anything else."""
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} not found")
    try:
        import zipfile

        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
                    raise InputError(
                        f"model file {str(path)!r} is a TorchScript archive; save the module itself with "
                        "torch.save(model, path) (proxies need hooks and a BatchNorm-free copy)"
                    )
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, AttributeError, ModuleNotFoundError) as exc:
        raise InputError(f"model file {str(path)!r} could not be read as a pickled torch module: {exc}") from exc
    except Exception as exc:  # unpickling errors have many types
        if isinstance(exc, ValueError):
            raise
        raise InputError(f"model file {str(path)!r} could not be read as a pickled torch module: {exc}") from exc
    if isinstance(obj, torch.jit.ScriptModule):
        raise InputError(f"model file {str(path)!r} holds a TorchScript module; save the nn.Module with torch.save")
    if isinstance(obj, dict):
        raise InputError(
            f"model file {str(path)!r} holds a dict (a state_dict or checkpoint), not a module; "
            "save the whole model with torch.save(model, path)"
        )
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"model file {str(path)!r} holds a {type(obj).__name__}, expected a torch.nn.Module")
    return obj.float()


def _model_minibatch(
    model: torch.nn.Module, shape: tuple[int, ...], dataset: str, batch_size: int, num_classes: int | None,
    seed: int, data_dir: Path | None, source: str = "npz",
) -> tuple[torch.Tensor, torch.Tensor, str]:
    rng = np.random.default_rng(seed)
    pool = None
    try:
        pool = load_image_pool(dataset, source=source, data_dir=data_dir)
    except DataFileError:
        pass
    if pool is not None and pool.input_shape == shape:
        x, y = pool.sample(rng, batch_size)
        origin = f"{dataset} training images"
    else:
        torch.manual_seed(seed)
        x = torch.randn((batch_size, *shape))
        y = None
        origin = "random normal inputs (no image data of this shape)"
    with torch.no_grad():
        was = model.training
        model.eval()
        try:
            out = model(x[:2])
        except RuntimeError as exc:
            dims = ", ".join(map(str, shape))
            raise InputError(f"the model does not accept inputs of shape (N, {dims}): {exc}") from None
        finally:
            model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise InputError("the model must return logits of shape (N, classes)")
    classes = num_classes or int(out.shape[1])
    if classes > out.shape[1]:
        raise InputError(f"--num-classes {classes} exceeds the model's {out.shape[1]} outputs")
    if y is None or int(y.max()) >= classes:
        y = torch.from_numpy(rng.integers(0, classes, size=batch_size))
        origin += ", random labels"
    return x, y, origin


@app.command("proxies")
@clean_errors
def proxies_command(
    space: str = typer.Option(None, "--space", help="Search space whose cells to score: nb201."),
    model_file: Path = typer.Option(None, "--model", help="Score your own model: a file from torch.save(model)."),
    sample: int = typer.Option(100, "--sample", help="Number of random NB201 cells (from all 15,625)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample, the initialisation and the minibatches."),
    proxies: str = typer.Option(",".join(PROXIES), "--proxies", help="Comma-separated proxy names."),
    dataset: str = typer.Option("cifar10", "--dataset", help="cifar10, cifar100 or imagenet16 (ImageNet16-120)."),
    out: Path = typer.Option(None, "--out", help="Results store (SQLite); resumes a run made with the same settings."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each with one torch thread)."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", help="Minibatch size (reference: 64)."),
    source: str = typer.Option("npz", "--images", help="Image pool: npz (lossless) or jpeg (CIFAR-10 only)."),
    nb201_model: str = typer.Option("nb201", "--nb201-model", help="nb201 (the benchmark's network) or "
                                    "zc_reference (the zero-cost reference's, with cell conv biases)."),
    input_shape: str = typer.Option("3,32,32", "--input-shape", help="Per-example input shape for --model."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classes for --model labels (default: its outputs)."),
    truth: str = typer.Option(None, "--truth", help="NB201 column to rank against (default: per dataset, e.g. "
                              "c10_test_200ep; the paper used c10valid_test_200ep for CIFAR-10)."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Zero-cost proxies (arXiv 2101.08134): score NB201 cells and rank them against the benchmark, or score
    your own model."""
    names = _parse_list(proxies, "--proxies")
    if dataset not in DATASETS:
        raise InputError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if (space is None) == (model_file is None):
        raise InputError("give exactly one of --space nb201 (score benchmark cells) or --model FILE (your model)")
    if model_file is not None:
        _score_model(model_file, names, dataset, batch_size, _parse_shape(input_shape), num_classes, seed, data_dir,
                     source, as_json)
        return
    if space != "nb201":
        raise InputError(f"--space must be 'nb201', got {space!r}")
    if out is None:
        raise InputError("--out FILE is required with --space (the results store that makes the run resumable)")
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    settings = NB201ProxySettings(dataset=dataset, seed=seed, proxies=tuple(names), batch_size=batch_size,
                                  source=source, model=nb201_model)
    cells = sample_nb201_cells(sample, seed)
    truth_column = truth or TRUTH_COLUMN[dataset]
    table, no_table = None, None
    try:
        table = load_nb201_table(data_dir=data_dir)
        table.column(truth_column)  # an unknown --truth fails before any work
    except DataFileError as exc:
        no_table = str(exc)
    console = Console(stderr=True)
    with ResultStore(out, meta=settings.meta()) as store:
        done = sum(c.to_str() in store for c in cells)
        columns = (TextColumn("[bold]proxies"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, disable=as_json) as progress:
            task = progress.add_task("cells", total=len(cells), completed=done)
            computed = run_nb201_proxies(cells, settings, store, data_dir=data_dir, workers=workers,
                                         on_result=lambda _a, _r: progress.advance(task))
        records = {c.to_str(): store.get(c.to_str()) for c in cells}
    result: dict[str, Any] = {"store": str(out), "settings": settings.meta(), "cells": len(cells),
                              "computed": computed, "resumed": done, "truth": truth_column}
    failures = {n: sum(n in r.get("errors", {}) for r in records.values()) for n in settings.proxies}
    result["failures"] = failures
    result["metrics"] = None
    if table is None:
        result["metrics_unavailable"] = no_table
    else:
        try:
            result["metrics"] = proxy_metrics(records, table, truth_column, settings.proxies)  # type: ignore[arg-type]
        except ValueError as exc:  # e.g. too few cells for a ranking metric
            result["metrics_unavailable"] = str(exc)
    if as_json:
        print_json(result)
        return
    console = Console()
    console.print(f"{computed} cells computed, {done} already in {out} ({len(cells)} in the sample)")
    if result["metrics"]:
        t = Table(title=f"Ranking against {result['truth']} (vote: majority of synflow, jacob_cov, snip)")
        for col in ("proxy", "spearman", "kendall", "top10%/top10%", "top64/top5%", "pairwise acc", "n", "failures"):
            t.add_column(col, justify="left" if col == "proxy" else "right")
        for name, m in result["metrics"].items():
            t.add_row(name, f"{m['spearman']:.3f}", f"{m['kendall']:.3f}", f"{m['top10_top10']:.3f}",
                      str(int(m["top64_top5"])), f"{m['pairwise']:.3f}", str(int(m["n"])), str(int(m["failures"])))
        console.print(t)
    else:
        console.print(f"no ranking metrics: {result.get('metrics_unavailable')}")


def _score_model(
    path: Path, names: list[str], dataset: str, batch_size: int, shape: tuple[int, ...], num_classes: int | None,
    seed: int, data_dir: Path | None, source: str, as_json: bool,
) -> None:
    model = load_model_file(path)
    x, y, origin = _model_minibatch(model, shape, dataset, batch_size, num_classes, seed, data_dir, source)
    scores = compute_proxies(model, x, y, names)
    result = {"model": str(path), "inputs": origin, "input_shape": list(shape), "batch_size": batch_size,
              **scores.to_record()}
    if as_json:
        print_json(result)
        return
    console = Console()
    console.print(f"{path}: minibatch of {batch_size} from {origin}")
    t = Table()
    t.add_column("proxy")
    t.add_column("score", justify="right")
    t.add_column("higher is better")
    for name, r in scores.results.items():
        t.add_row(name, f"{r.score:.6g}" if r.ok else f"[red]failed: {r.error}", str(PROXIES[name].higher_is_better))
    console.print(t)
