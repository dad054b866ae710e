"""``devicefit compress`` and ``devicefit evaluate``: compress a trained model, and test a model's accuracy
(thin over :func:`devicefit.compress` and :func:`devicefit.models.evaluate_accuracy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from . import app
from .common import DataDirOption, JsonOption, clean_errors, print_json

ModelArgument = typer.Argument(..., help="A built-in model (resnet20, resnet56, lenet5, lstm, gru, ...; see "
                               "devicefit.models.MODEL_NAMES) or package.module:factory with --weights.")
WeightsOption = typer.Option(None, "--weights", help="Weights file (a state dict; checkpoints and 'module.' "
                             "prefixes are unwrapped). Default: the data directory's pretrained weights.")


def _model(model: str, weights: Path | None, dataset: str | None):
    """A built-in name stays a name (compress loads it); module:factory is built and its weights loaded."""
    from ..errors import InputError
    from ..models import load_factory, load_weights

    if ":" not in model:
        return model, None, None
    if weights is None or dataset is None:
        raise InputError(f"{model!r} is a factory: give --weights and --data (cifar10 or mnist)")
    net = load_weights(load_factory(model), weights)
    return net, dataset, (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)


@app.command("compress")
@clean_errors
def compress_command(
    model: str = ModelArgument,
    method: Literal["lowrank", "channel", "unstructured", "block", "pattern", "int8"] = typer.Option(
        ..., "--method", help="Compression method."),
    ratio: float = typer.Option(None, "--ratio", help="Fraction kept in each layer: rank fraction (lowrank), "
                                "channels (channel), 1 - sparsity (unstructured, block), 3x3 kernels kept "
                                "(pattern: each keeps 4 of 9 weights). int8 takes none."),
    out: Path = typer.Option(..., "--out", help="Output folder: policy, history, weights, ONNX, report (Markdown "
                             "and HTML with the per-layer plot)."),
    weights: Path = WeightsOption,
    data: Literal["cifar10", "mnist"] = typer.Option(None, "--data", help="Data set of a module:factory model."),
    finetune_epochs: float = typer.Option(0.0, "--finetune-epochs", min=0, help="Recovery training (epochs; "
                                          "fractions allowed); resumes from the checkpoint in --out."),
    distill: bool = typer.Option(False, "--distill", help="Recover by distillation from the original model."),
    noise: float = typer.Option(0.0, "--noise", min=0.0, help="Noisy training (arXiv 2107.04677): Gaussian weight "
                                "noise, std = S x each layer's weight std, during recovery training."),
    lr: float = typer.Option(0.01, "--lr", help="Learning rate of recovery training (SGD, cosine)."),
    eval_limit: int = typer.Option(None, "--eval-limit", min=1, help="Test on a fixed slice of this many images."),
    seed: int = typer.Option(0, "--seed", min=0),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Compress a trained model at a uniform per-layer ratio, recover it, and measure what it gained."""
    from ..compression import compress
    from ..report import compress_report

    net, dataset, shape = _model(model, weights, data)
    report = compress(net, method=method, ratio=ratio, finetune_epochs=finetune_epochs, distill=distill,
                      noise=noise, lr=lr,
                      out=out, weights=weights if isinstance(net, str) else None, dataset=dataset,
                      input_shape=shape, eval_limit=eval_limit, seed=seed, data_dir=data_dir, progress=not as_json)
    paths = compress_report(report, out)
    report.files.update(report=str(paths.markdown), html=str(paths.html))
    if as_json:
        print_json(report.to_dict())
    else:
        print(report.to_markdown())


@app.command("evaluate")
@clean_errors
def evaluate_command(
    model: str = ModelArgument,
    weights: Path = WeightsOption,
    data: Literal["cifar10", "mnist"] = typer.Option(None, "--data", help="Data set (default: the model's)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Test on a fixed slice of this many images."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Top-1 accuracy of a model on the test images of its data set."""
    from ..models import evaluate_accuracy, get_model, load_images, load_weights, model_spec

    net, dataset, _ = _model(model, weights, data)
    if isinstance(net, str):
        spec = model_spec(net)
        dataset = data or spec.dataset
        net = get_model(net, pretrained=weights is None, data_dir=data_dir)
        if weights is not None:
            load_weights(net, weights)
    assert dataset is not None
    test = load_images(dataset, "test" if dataset == "cifar10" else "test2k", data_dir)
    acc = evaluate_accuracy(net, test, limit=limit)
    if as_json:
        print_json({"model": model, "data": test.description, "images": limit or len(test), "accuracy": acc})
    else:
        print(f"{model}: {acc:.2f} % top-1 on {limit or len(test):,} images ({test.description})")
