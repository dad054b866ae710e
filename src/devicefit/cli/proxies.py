"""``devicefit proxies``: zero-cost proxies of NB201 cells (through the evaluation loop: resumable, on any
executor, ranked against the benchmark) or of a user's own model file.

Thin over :func:`devicefit.study.rank_proxies` and :func:`devicefit.models.load_model_file`; heavy
libraries are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from ..errors import InputError
from ..proxies.datasets import DATASETS, DEFAULT_BATCH_SIZE, IMAGE_SOURCES
from ..proxies.result import PROXIES
from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

EXECUTOR_NAMES = ("inline", "process", "ray")

TRUST_HELP = (
    "Load a full pickled nn.Module (torch.save(model)). Unpickling runs any code the file contains, so it is "
    "refused unless you trust the file. State dicts (with --architecture), TorchScript and torch.export "
    "files need no trust."
)


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


@app.command("proxies")
@clean_errors
def proxies_command(
    space: Literal["nb201"] = typer.Option(None, "--space", help="Search space whose cells to score."),
    model_file: Path = typer.Option(None, "--model", help="Score your own model file (see --trust-model-file)."),
    trust_model_file: bool = typer.Option(False, "--trust-model-file", help=TRUST_HELP),
    architecture: str = typer.Option(None, "--architecture", help="For a state-dict --model: 'package.module:factory' "
                                     "that builds the network (called with no arguments)."),
    sample: int = typer.Option(100, "--sample", min=1, help="Number of random NB201 cells (from all 15,625)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sample, the initialisation and the minibatches."),
    proxies: str = typer.Option(",".join(PROXIES), "--proxies", help=f"Comma-separated: {', '.join(PROXIES)}."),
    dataset: Literal[DATASETS] = typer.Option("cifar10", "--dataset", help="Images and classes."),
    store: Path = typer.Option(None, "--store", help="Results store (SQLite) of --space runs; rerun to resume."),
    executor: Literal[EXECUTOR_NAMES] = typer.Option(
        "inline", "--executor", help="Where cells are scored: this process, a process pool, or Ray."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes (process) or CPUs (local ray)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Address of a running Ray cluster (with --executor "
                                    "ray); default: start a local one."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Score again the cells whose proxies failed."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=2, help="Minibatch size (reference: 64)."),
    images: Literal[IMAGE_SOURCES] = typer.Option(
        "npz", "--images", help="Image pool: npz (lossless) or jpeg (CIFAR-10 only)."),
    variant: Literal["default", "zc_reference"] = typer.Option(
        "default", "--variant", help="NB201 network: the benchmark's, or the zero-cost reference's (conv biases)."),
    input_shape: str = typer.Option("3,32,32", "--input-shape", help="Per-example input shape for --model."),
    num_classes: int = typer.Option(None, "--num-classes", min=2, help="Classes of --model labels (default: outputs)."),
    truth: str = typer.Option(None, "--truth", help="NB201 column to rank against (default: per dataset, e.g. "
                              "c10_test_200ep; the paper used c10valid_test_200ep for CIFAR-10)."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Zero-cost proxies (arXiv 2101.08134): score NB201 cells and rank them against the benchmark, or score
    your own model."""
    from ..proxies import check_proxy_names

    names = check_proxy_names(_parse_list(proxies, "--proxies"))
    if (space is None) == (model_file is None):
        raise InputError("give exactly one of --space nb201 (score benchmark cells) or --model FILE (your model)")
    if model_file is not None:
        _score_model(model_file, trust_model_file, architecture, names, dataset, batch_size,
                     _parse_shape(input_shape), num_classes, seed, data_dir, images, as_json)
        return
    if store is None:
        raise InputError("--store FILE is required with --space (the results store that makes the run resumable)")
    from ..spaces import get_space
    from ..study import ZeroCostProxies, make_executor
    from ..study.proxy_ranking import rank_proxies

    estimator = ZeroCostProxies(tuple(names), dataset=dataset, seed=seed, batch_size=batch_size, images=images,
                                variant=variant, data_dir=data_dir)
    runner = make_executor(executor, workers=workers, address=ray_address)
    result = rank_proxies(get_space(space), sample, estimator, store, truth=truth, executor=runner,
                          retry_failed=retry_failed, progress=not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    _print_ranking(result)


def _print_ranking(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{result.computed} cells computed, {result.reused} already in {result.store} "
                  f"({result.cells} in the sample)")
    if result.metrics:
        t = Table(title=f"Ranking against {result.truth} (vote: majority of synflow, jacob_cov, snip)")
        for col in ("proxy", "spearman", "kendall", "top10%/top10%", "top64/top5%", "pairwise acc", "n", "failures"):
            t.add_column(col, justify="left" if col == "proxy" else "right")
        for name, m in result.metrics.items():
            t.add_row(name, f"{m['spearman']:.3f}", f"{m['kendall']:.3f}", f"{m['top10_top10']:.3f}",
                      str(int(m["top64_top5"])), f"{m['pairwise']:.3f}", str(int(m["n"])), str(int(m["failures"])))
        console.print(t)
    else:
        console.print(f"no ranking metrics: {result.metrics_unavailable}")


def _score_model(
    path: Path, trust: bool, architecture: str | None, names: list[str], dataset: str, batch_size: int,
    shape: tuple[int, ...], num_classes: int | None, seed: int, data_dir: Path | None, source: str, as_json: bool,
) -> None:
    from ..models import load_model_file, model_file_kind, proxy_limitation
    from ..proxies import PROXIES, compute_proxies, model_minibatch

    kind = model_file_kind(path)
    limitation = proxy_limitation(kind)
    if limitation is not None:
        raise InputError(f"model file {str(path)!r} is a {kind.replace('_', ' ')}: {limitation}. Save the weights "
                         "with torch.save(model.state_dict(), path) and pass --architecture package.module:factory")
    model = load_model_file(path, trust=trust, architecture=architecture).float()
    x, y, origin = model_minibatch(model, shape, dataset=dataset, batch_size=batch_size, num_classes=num_classes,
                                   seed=seed, source=source, data_dir=data_dir)
    scores = compute_proxies(model, x, y, names)
    result = {"model": str(path), "inputs": origin, "input_shape": list(shape), "batch_size": batch_size,
              **scores.to_record()}
    if as_json:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{path}: minibatch of {batch_size} from {origin}")
    t = Table()
    t.add_column("proxy")
    t.add_column("score", justify="right")
    t.add_column("higher is better")
    for name, r in scores.results.items():
        t.add_row(name, f"{r.score:.6g}" if r.ok else f"[red]failed: {r.error}", str(PROXIES[name].higher_is_better))
    console.print(t)
