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


def _searched_policy(net, dataset, shape, method, ratio, targets, device, search,  # type: ignore[no-untyped-def]
                     evaluations, store, images, seed, weights, data_dir, progress):
    """The per-layer policy searched to the one target given (or none: the uniform ratio is used), its summary,
    and (model, data set, input shape): the module the search loaded, or what was given when none ran."""
    import torch

    from ..errors import InputError

    targets = {k: v for k, v in targets.items() if v is not None}
    if (device is not None) != ("energy_mj" in targets):
        raise InputError("--target-energy-mj and --device go together (the device whose energy model counts)")
    if not targets:
        return None, None, (net, dataset, shape)
    if len(targets) > 1:
        raise InputError(f"give one target, got {', '.join('--target-' + k for k in targets)}")
    if ratio is not None:
        raise InputError("--ratio is a uniform setting; a target searches per-layer settings: give one of them")
    if store is None:
        raise InputError("a searched policy needs --store FILE: its evaluations are kept there, and a rerun resumes")
    from ..study import search_policy

    metric, value = next(iter(targets.items()))
    module, name, dataset, shape = _module(net, dataset, shape, weights, data_dir)
    if metric == "bytes" and method == "unstructured":
        metric = "bytes_nonzero"
    limit, fraction = (None, value) if metric in ("macs", "params") else (
        value * 1000 if metric.startswith("bytes") else value, None)
    energy = None
    if device is not None:
        from ..hardware import fit_energy_model

        energy = fit_energy_model(device, data_dir=data_dir)
    found = search_policy(module, torch.zeros(1, *shape), method=method, metric=metric, limit=limit,
                          fraction=fraction, search=search, evaluations=evaluations, store=store, dataset=dataset,
                          images=images, seed=seed, model_name=name, energy=energy, data_dir=data_dir,
                          progress=progress)
    return found.policy, found.to_dict(), (module, dataset, shape)


@app.command("compress")
@clean_errors
def compress_command(
    model: str = ModelArgument,
    method: Literal["lowrank", "channel", "unstructured", "block", "pattern", "int8", "bits"] = typer.Option(
        ..., "--method", help="Compression method."),
    ratio: float = typer.Option(None, "--ratio", help="Fraction kept in each layer: rank fraction (lowrank), "
                                "channels (channel), 1 - sparsity (unstructured, block), 3x3 kernels kept "
                                "(pattern: each keeps 4 of 9 weights), bits / 32 (bits: 0.125 = 4-bit weights). "
                                "int8 takes none."),
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
    round_to: int = typer.Option(1, "--round-to", min=1, help="channel: keep channel counts that are multiples of "
                                 "this (8: the widths CPU kernels block by)."),
    target_macs: float = typer.Option(None, "--target-macs", help="Search per-layer settings so that the MACs are "
                                      "at most this fraction of the original's (e.g. 0.5: 2x fewer)."),
    target_params: float = typer.Option(None, "--target-params", help="... at most this fraction of the "
                                        "original's parameters."),
    target_size_kb: float = typer.Option(None, "--target-size-kb", help="... weights of at most this many kB "
                                         "(1,000 bytes; fp32, the non-zero ones for unstructured)."),
    target_energy_mj: float = typer.Option(None, "--target-energy-mj", help="... energy per inference of at most "
                                           "this many mJ on --device, by its energy model (ECC's bilinear form "
                                           "fitted on the HW-NAS-Bench energy table)."),
    device: str = typer.Option(None, "--device", help="Device of --target-energy-mj: eyeriss, edgegpu or fpga."),
    target_latency_ms: float = typer.Option(None, "--target-latency-ms", help="... ONNX Runtime latency here "
                                            "(batch 1, 1 thread) of at most this many ms, each policy measured once "
                                            "and cached in --store."),
    search: Literal["greedy", "rl", "random", "evolution", "reinforce", "optuna"] = typer.Option(
        "greedy", "--search", help="Policy search: greedy (AIMET-style sensitivity + one threshold), rl (AMC / "
        "ShrinkML's bounded-action agent), or a search strategy on the per-layer policy space."),
    evaluations: int = typer.Option(100, "--evaluations", min=1, help="Accuracy estimates of a strategy search "
                                    "(greedy: one per layer and ratio)."),
    iterative: int = typer.Option(None, "--iterative", min=1, help="Rounds of search, compress and recovery "
                                  "training (--finetune-epochs each), each to a tighter target (arXiv 2008.02897); "
                                  "with --target-macs or --target-params."),
    store: Path = typer.Option(None, "--store", help="Results store of the policy search (SQLite); a rerun "
                               "resumes it."),
    images: int = typer.Option(1000, "--search-images", min=1, help="Held-out training images each policy is "
                               "scored on (no fine-tuning, BatchNorm re-calibrated)."),
    data_dir: Path = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Compress a trained model (a uniform ratio, or per-layer settings searched to a target), recover it, and
    measure what it gained."""
    from ..compression import compress

    net, dataset, shape = _model(model, weights, data)
    if iterative is not None:
        report = _iterative(net, dataset, shape, method, ratio, target_macs, target_params, iterative, search,
                            evaluations, store, images, seed, weights, finetune_epochs, distill, lr, out, eval_limit,
                            data_dir, not as_json)
        _finish(report, out, as_json)
        return
    policy, found, (searched, dataset, shape) = _searched_policy(net, dataset, shape, method, ratio,
                                     {"macs": target_macs, "params": target_params, "bytes": target_size_kb,
                                      "energy_mj": target_energy_mj, "latency_ms": target_latency_ms}, device,
                                     search, evaluations, store, images, seed, weights, data_dir, not as_json)
    # the model the search loaded, if it did: not a second copy from disk
    report = compress(searched, method=method, ratio=ratio, finetune_epochs=finetune_epochs, distill=distill,
                      noise=noise, lr=lr, out=out, weights=weights if isinstance(searched, str) else None,
                      dataset=dataset, input_shape=shape, eval_limit=eval_limit, seed=seed, data_dir=data_dir,
                      progress=not as_json, policy=policy, search=found, round_to=round_to,
                      name=net if isinstance(net, str) else None)
    _finish(report, out, as_json)


def _finish(report, out, as_json):  # type: ignore[no-untyped-def]
    """Write the Markdown/HTML report beside the outputs and print the summary (or its JSON)."""
    from ..report import compress_report

    paths = compress_report(report, out)
    report.files.update(report=str(paths.markdown), html=str(paths.html))
    if as_json:
        print_json(report.to_dict())
    else:
        print(report.to_markdown())


def _iterative(net, dataset, shape, method, ratio, target_macs, target_params, rounds, search,  # type: ignore[no-untyped-def]
               evaluations, store, images, seed, weights, finetune_epochs, distill, lr, out, eval_limit, data_dir,
               progress):
    """Rounds of search, compression and recovery to the target, then the usual measurement against the original."""
    import torch

    from ..compression import FinetuneConfig, Policy, compress
    from ..errors import InputError
    from ..study.policy_search import iterative_compress

    targets = {k: v for k, v in (("macs", target_macs), ("params", target_params)) if v is not None}
    if len(targets) != 1 or ratio is not None:
        raise InputError("--iterative needs exactly one of --target-macs and --target-params (and no --ratio)")
    if store is None:
        raise InputError("--iterative needs --store FILE: the searches are kept there, and a rerun resumes")
    module, _, dataset, shape = _module(net, dataset, shape, weights, data_dir)
    metric, fraction = next(iter(targets.items()))
    recovery = None if not finetune_epochs else FinetuneConfig(epochs=finetune_epochs, lr=lr, seed=seed,
                                                               augment=dataset == "cifar10", distill=distill)
    result = iterative_compress(module, torch.zeros(1, *shape), rounds=rounds, fraction=fraction, method=method,
                                metric=metric, search=search, evaluations=evaluations, store=store, dataset=dataset,
                                images=images, recovery=recovery, checkpoint_dir=out / "rounds", seed=seed,
                                data_dir=data_dir, progress=progress)
    searched = [r["search"] for r in result.rounds if r["search"]]
    last = result.rounds[-1]
    summary = {"search": f"iterative ({rounds} rounds of {search})", "method": method, "metric": metric,
               "limit": last["limit"], "original_cost": searched[0]["original_cost"] if searched else {},
               "cost": last["cost"], "accuracy": searched[-1]["accuracy"] if searched else None,
               "evaluations": sum(r["evaluations"] for r in searched), "rounds": result.rounds}
    return compress(result.model, method=method, policy=Policy(), dataset=dataset, input_shape=shape, out=out,
                    eval_limit=eval_limit, seed=seed, data_dir=data_dir, progress=progress, search=summary,
                    baseline=module)


def _module(net, dataset, shape, weights, data_dir):  # type: ignore[no-untyped-def]
    """The nn.Module of a built-in name (its pretrained or given weights) or of a factory, its name, data set and
    input shape."""
    from ..models import get_model, load_weights, model_spec

    if not isinstance(net, str):
        return net, type(net).__name__, dataset, shape
    spec = model_spec(net)
    module = get_model(net, pretrained=weights is None, data_dir=data_dir)
    if weights is not None:
        load_weights(module, weights)
    return module, net, spec.dataset, spec.input_shape


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
