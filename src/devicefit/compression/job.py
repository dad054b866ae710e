"""``compress(...)``: compress a trained model with one method at a uniform per-layer ratio, recover, measure.

What ``devicefit compress`` runs, one call in Python::

    import devicefit
    report = devicefit.compress("resnet20", method="lowrank", ratio=0.5, finetune_epochs=1, out="runs/r20-lr")
    report.accuracy, report.cost, report.latency_ms

Steps: the model (a built-in name with its pretrained weights, or an ``nn.Module``) -> a uniform policy over
its compressible layers (Conv2d, Linear, and LSTM/GRU for masks) -> :func:`apply_policy` -> optional
recovery training (:func:`finetune`, with distillation from the original on request) -> accuracy of the
original, of the compressed model (BatchNorm statistics re-estimated on 20 training batches) and after
recovery, on the test part -> ONNX export of both and
their latency here (ONNX Runtime, 1 thread, the same protocol, measured alternately) -> ``out``: the
policy, the history, the compressed weights, the ONNX file and the report (Markdown + JSON).

``ratio`` is the fraction kept in each layer: the rank fraction for ``lowrank``, the channels kept for
``channel`` (coupled layers pruned together through Torch-Pruning), ``1 - sparsity`` for ``unstructured`` and
``block``. On a dense runtime masks save no time; the report says so from the measurement.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import write_atomic
from ..errors import InputError
from .apply import apply_policy, compressed_cost, finalize
from .bn import recalibrate_batchnorm
from .policy import Action, Block, ChannelPrune, LowRank, Policy, Unstructured

METHODS = ("lowrank", "channel", "unstructured", "block")


def method_action(method: str, ratio: float) -> Action:
    """The per-layer action of a method at a kept ``ratio``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise InputError(f"ratio is the fraction kept in each layer, a number in (0, 1]; got {ratio!r}")
    if method == "lowrank":
        return LowRank(rank_fraction=float(ratio))
    if method == "channel":
        return ChannelPrune(keep=float(ratio))
    if method in ("unstructured", "block"):
        sparsity = 0.0 if ratio == 1.0 else 1.0 - float(ratio)
        return Unstructured(sparsity=sparsity) if method == "unstructured" else Block(sparsity=sparsity)
    raise InputError(f"unknown compression method {method!r}; available now: {', '.join(METHODS)}")


@dataclass
class CompressReport:
    model_name: str
    method: str
    ratio: float
    layers: int
    skipped: list[dict[str, str]]
    accuracy: dict[str, float | None]  # original, compressed, recovered (%), on the test part
    cost: dict[str, dict[str, Any]]  # original / compressed: params, macs, nonzero_params, bytes
    latency_ms: dict[str, float]  # original / compressed, ONNX Runtime here
    speedup: float
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    data: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        o, c = self.cost["original"], self.cost["compressed"]
        rows = [("accuracy %", self.accuracy.get("original"), self.accuracy.get("recovered")
                 if self.accuracy.get("recovered") is not None else self.accuracy.get("compressed")),
                ("params", o["params"], c["params"]), ("non-zero params", o["nonzero_params"], c["nonzero_params"]),
                ("MACs", o["macs"], c["macs"]), ("latency ms (ONNX Runtime, 1 thread)", self.latency_ms["original"],
                                                 self.latency_ms["compressed"])]
        lines = [f"# Compression of {self.model_name}: {self.method}, ratio {self.ratio}", "",
                 f"{self.layers} layers compressed, {len(self.skipped)} skipped. Data: {self.data}.", "",
                 "| | original | compressed |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(a)} | {_fmt(b)} |" for k, a, b in rows]
        lines += ["", f"Accuracy before recovery: {_fmt(self.accuracy.get('compressed'))} %. "
                      f"Speed-up here: {self.speedup:.2f}x.", ""] + [f"- {n}" for n in self.notes]
        if self.skipped:
            lines += ["", "Skipped layers:", ""] + [f"- `{s['module']}`: {s['reason']}" for s in self.skipped]
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"


def compress(
    model: nn.Module | str,
    *,
    method: str,
    ratio: float,
    finetune_epochs: float = 0.0,
    distill: bool = False,
    noise: float = 0.0,
    lr: float = 0.01,
    out: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    eval_limit: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CompressReport:
    """Compress ``model``; see the module docstring. A built-in ``model`` name brings its data set and input
    shape; an ``nn.Module`` needs ``dataset`` (cifar10 or mnist) and ``input_shape``."""
    from ..hardware import measure_latency
    from ..hardware.measure import export_onnx
    from ..models import evaluate_accuracy, get_model, load_images, load_weights, model_spec
    from .train import FinetuneConfig, finetune

    action = method_action(method, ratio)
    if isinstance(model, str):
        spec = model_spec(model)
        name, dataset, input_shape = model, spec.dataset, spec.input_shape
        original = get_model(model, pretrained=weights is None and spec.weights is not None, data_dir=data_dir)
        if weights is None and spec.weights is None:
            raise InputError(f"{model!r} has no pretrained weights in the data directory: give --weights")
    else:
        if dataset is None or input_shape is None:
            raise InputError("compressing your own nn.Module needs dataset= (cifar10 or mnist) and input_shape=")
        name, original = type(model).__name__, model
    if weights is not None:
        load_weights(original, weights)
    if (distill or noise) and not finetune_epochs:
        raise InputError("distillation and noisy training are kinds of recovery training: give finetune_epochs > 0")
    original.eval()
    example = torch.zeros(1, *input_shape)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--out {str(out_dir)!r} is a file, expected a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    test = load_images(dataset, "test" if dataset == "cifar10" else "test2k", data_dir)
    policy = Policy.uniform(original, action)  # every layer that supports the action
    train = load_images(dataset, "train" if dataset == "cifar10" else "train8k", data_dir)
    calibration = list(train.subset(1280).batches(64))  # 20 fixed batches
    result = apply_policy(original, policy, example, data=calibration)
    compressed = result.model
    recalibrate_batchnorm(compressed, calibration)  # new layers see new activations: re-estimate BN statistics
    accuracy: dict[str, float | None] = {"original": evaluate_accuracy(original, test, limit=eval_limit),
                                         "compressed": evaluate_accuracy(compressed, test, limit=eval_limit),
                                         "recovered": None}
    if finetune_epochs:
        config = FinetuneConfig(epochs=finetune_epochs, lr=lr, seed=seed, augment=dataset == "cifar10",
                                distill=distill, noise_std=noise)
        finetune(compressed, train, config, teacher=original if distill else None, progress=progress,
                 checkpoint=None if out_dir is None else out_dir / "finetune.ckpt")
        accuracy["recovered"] = evaluate_accuracy(compressed, test, limit=eval_limit)
    finalize(compressed)
    onnx = {"original": export_onnx(original, example), "compressed": export_onnx(compressed.eval(), example)}
    latency: dict[str, list[float]] = {"original": [], "compressed": []}
    for _ in range(3):  # alternate, so that a noisy machine hurts both alike
        for k in ("original", "compressed"):
            latency[k].append(measure_latency(onnx[k], input_shape, "onnxruntime", warmup=10, repeats=50,
                                              threads=1).median_ms)
    lat = {k: sorted(v)[1] for k, v in latency.items()}
    speedup = lat["original"] / lat["compressed"]
    cost = {"original": compressed_cost(original, example), "compressed": result.cost}
    notes = []
    if method in ("unstructured", "block"):
        notes.append(f"Masks on a dense runtime: {speedup:.2f}x here (ONNX Runtime multiplies the zeros); what "
                     f"they save is size once stored sparse: {cost['compressed']['nonzero_params']:,} of "
                     f"{cost['compressed']['params']:,} weights are non-zero.")
    elif speedup < 1.1:
        notes.append(f"{speedup:.2f}x here: fewer MACs ({cost['compressed']['macs']:,} vs "
                     f"{cost['original']['macs']:,}) did not buy time on this runtime (more, smaller layers).")
    report = CompressReport(name, method, float(ratio), len(result.history), result.skipped, accuracy, cost, lat,
                            speedup, notes, data=test.description + (f", first {eval_limit} of a fixed "
                                                                       "permutation" if eval_limit else ""))
    if out_dir is not None:
        files = {"policy": out_dir / "policy.json", "history": out_dir / "history.json",
                 "weights": out_dir / "compressed.pt", "onnx": out_dir / "compressed.onnx",
                 "report": out_dir / "compress_report.md", "json": out_dir / "compress_report.json"}
        report.files = {k: str(v) for k, v in files.items()}
        write_atomic(files["policy"], policy.to_json().encode())
        write_atomic(files["history"], json.dumps(result.history, indent=1).encode())
        torch.save(compressed.state_dict(), files["weights"])
        write_atomic(files["onnx"], onnx["compressed"])
        write_atomic(files["report"], report.to_markdown().encode())
        write_atomic(files["json"], json.dumps(report.to_dict(), indent=1, allow_nan=False).encode())
    return report
