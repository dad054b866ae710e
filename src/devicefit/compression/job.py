"""``compress(...)``: compress a trained model with one method at a uniform per-layer ratio, recover, measure.

What ``devicefit compress`` runs, one call in Python::

    import devicefit
    report = devicefit.compress("resnet20", method="lowrank", ratio=0.5, finetune_epochs=1, out="runs/r20-lr")
    report.accuracy, report.cost, report.latency_ms, report.per_layer

Steps: the model (a built-in name with its pretrained weights, or an ``nn.Module``) -> a uniform policy over
its compressible layers (every layer that takes the method's action) -> :func:`apply_policy` -> optional
recovery training (:func:`finetune`, with distillation from the original on request) -> accuracy of the
original, of the compressed model (BatchNorm statistics re-estimated on 20 training batches) and after
recovery, on the test part -> :func:`~devicefit.compression.export.compare_models`: the ONNX files of both
timed alternately in ONNX Runtime (1 thread, the same protocol), MACs, params, non-zero params and bytes, and
notes derived from those figures -> ``out``: the policy, the history, the compressed weights, the ONNX file
and the report data (JSON; ``devicefit.report.compress_report`` renders it as Markdown and HTML with the
per-layer plot, as ``devicefit compress`` does).

``ratio`` is the fraction kept in each layer: the rank fraction for ``lowrank``, the channels kept for
``channel`` (coupled layers pruned together through Torch-Pruning; ``round_to=8`` keeps multiples of 8, the
widths CPU kernels block by), ``1 - sparsity`` for ``unstructured`` and
``block``, the 3x3 kernels kept for ``pattern`` (PatDNN: each kept kernel keeps 4 of its 9 weights, so
``pattern`` at ratio 1.0 keeps 4/9 of the 3x3 weights), bits / 32 for ``bits`` (weights stored at 2..8 bits,
post-training, no recovery: 0.125 is 4 bits). ``int8`` takes no ratio: post-training quantization
by ONNX Runtime (per-channel int8 weights, activations calibrated on the lossless calibration images); its
accuracy is measured on the int8 ONNX model itself (``accuracy["deployed"]``), beside the fake-quant estimate
in PyTorch (``accuracy["compressed"]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import torch_save_atomic, write_atomic
from ..errors import InputError
from .apply import apply_policy, compressed_cost, finalize
from .bn import recalibrate_batchnorm
from .policy import Action, Block, ChannelPrune, Int8, LowRank, Pattern, Policy, Unstructured, WeightBits

METHODS = ("lowrank", "channel", "unstructured", "block", "pattern", "int8", "bits")
#: Calibration images of the int8 activations (the lossless CIFAR-10 batch has 960).
INT8_CALIBRATION_IMAGES = 960


def method_action(method: str, ratio: float | None, round_to: int = 1) -> Action:
    """The per-layer action of a method at a kept ``ratio`` (see the module docstring; ``int8`` takes none);
    ``round_to``: channel counts kept as multiples of it (``channel`` only)."""
    if round_to != 1 and method != "channel":
        raise InputError(f"round_to (kept channels as multiples of it) is an option of channel pruning, not {method}")
    if method not in METHODS:
        raise InputError(f"unknown compression method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "int8":
        if ratio is not None:
            raise InputError(f"int8 takes no ratio (8-bit weights, 4x fewer weight bytes); got ratio {ratio!r}")
        return Int8()
    if ratio is None:
        raise InputError(f"{method} needs a ratio: the fraction kept in each layer, a number in (0, 1]")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise InputError(f"ratio is the fraction kept in each layer, a number in (0, 1]; got {ratio!r}")
    removed = 0.0 if ratio == 1.0 else 1.0 - float(ratio)
    if method == "bits":
        bits = 32 * float(ratio)
        if bits != round(bits) or not 2 <= bits <= 8:
            raise InputError(f"bits keeps the weights at bits / 32 of their size: ratio must be k / 32 for k bits, "
                             f"k in 2..8 (0.125 = 4 bits), got {ratio!r}")
        return WeightBits(bits=round(bits))
    if method == "lowrank":
        return LowRank(rank_fraction=float(ratio))
    if method == "channel":
        return ChannelPrune(keep=float(ratio), round_to=round_to)
    if method == "pattern":
        return Pattern(connectivity=removed)
    return Unstructured(sparsity=removed) if method == "unstructured" else Block(sparsity=removed)


@dataclass
class CompressReport:
    """What :func:`compress` did and measured. ``per_layer``: one row per compressed layer (``layer``, ``kind``,
    ``action`` and the original's and the compressed model's ``macs``, ``params``, ``nonzero_params`` for one
    sample); ``comparison``: :meth:`~devicefit.compression.export.Comparison.to_dict` of the measurement, whose
    ONNX Runtime figures ``latency_ms`` and ``speedup`` repeat and whose ``notes`` are derived from it."""

    model_name: str
    method: str
    ratio: float | None
    layers: int
    skipped: list[dict[str, str]]
    accuracy: dict[str, float | None]  # original, compressed, recovered, deployed (int8 ONNX) (%), on the test part
    cost: dict[str, dict[str, Any]]  # original / compressed: params, macs, nonzero_params, bytes
    latency_ms: dict[str, float]  # original / compressed, ONNX Runtime here
    speedup: float
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    data: str = ""
    per_layer: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)  # the policy search that chose per-layer settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressReport:
        """The report of a ``compress_report.json`` (unknown or missing fields refused by name)."""
        names = set(cls.__dataclass_fields__)
        required = {n for n, f in cls.__dataclass_fields__.items() if f.default is MISSING
                    and f.default_factory is MISSING}
        if not isinstance(data, dict) or set(data) - names or required - set(data):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InputError(f"not a compress report: expected the fields {', '.join(sorted(names))}; got {got}")
        return cls(**data)

    @property
    def title(self) -> str:
        if self.search:
            return (f"Compression of {self.model_name}: {self.method}, per-layer policy by {self.search['search']} "
                    f"search to {self.search['metric']} <= {self.search['limit']:,.0f}")
        ratio = "" if self.ratio is None else f", ratio {self.ratio}"
        return f"Compression of {self.model_name}: {self.method}{ratio}"

    def summary_rows(self) -> list[list[Any]]:
        """(figure, original, compressed) rows of the summary table."""
        o, c = self.cost["original"], self.cost["compressed"]
        final = next((self.accuracy.get(k) for k in ("deployed", "recovered", "compressed")
                      if self.accuracy.get(k) is not None), None)
        return [["top-1 accuracy %", self.accuracy.get("original"), final],
                ["params", o["params"], c["params"]], ["non-zero params", o["nonzero_params"], c["nonzero_params"]],
                ["MACs", o["macs"], c["macs"]], ["weight bytes", o["bytes"], c["bytes"]],
                ["latency ms (ONNX Runtime, 1 thread)", self.latency_ms["original"], self.latency_ms["compressed"]]]

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", "",
                 f"{self.layers} layers compressed, {len(self.skipped)} skipped. Data: {self.data}.", "",
                 "| | original | compressed |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(a)} | {_fmt(b)} |" for k, a, b in self.summary_rows()]
        before = ("PyTorch fake-quant estimate" if self.accuracy.get("deployed") is not None else
                  "Accuracy before recovery")
        lines += ["", f"{before}: {_fmt(self.accuracy.get('compressed'))} %. Speed-up here: {self.speedup:.2f}x.",
                  ""] + [f"- {n}" for n in self.notes]
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
    ratio: float | None = None,
    finetune_epochs: float = 0.0,
    distill: bool = False,
    noise: float = 0.0,
    lr: float = 0.01,
    out: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    data: tuple[Any, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    eval_limit: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    policy: Policy | None = None,
    search: dict[str, Any] | None = None,
    round_to: int = 1,
    baseline: nn.Module | None = None,
    name: str | None = None,
) -> CompressReport:
    """Compress ``model``; see the module docstring. A built-in ``model`` name brings its data set and input
    shape; an ``nn.Module`` needs ``dataset`` (cifar10 or mnist) and ``input_shape``, or your own ``data``: a
    ``(train, test)`` pair of :class:`~devicefit.models.DataSource` (``LabelledImages``, ``TensorData``), from
    which the input shape is read, BN is re-calibrated and int8 calibrated (the first training images).

    ``policy``: per-layer settings (e.g. :func:`devicefit.study.search_policy`'s answer, whose summary goes in
    ``search``) instead of the method's uniform ``ratio``; its actions must be the method's. ``baseline``: the
    model the report compares with and distils from (default: ``model`` itself; iterative compression passes the
    uncompressed original while ``model`` is the last round's). ``name``: the model's name in the report (default:
    the built-in name, or the module's class name)."""
    from ..models import (
        calibration_batch,
        evaluate_accuracy,
        evaluate_onnx_accuracy,
        get_model,
        load_images,
        load_weights,
        model_spec,
    )
    from .analysis import layer_costs
    from .export import TimingProtocol, compare_models
    from .int8 import Int8Config
    from .train import FinetuneConfig, finetune

    if policy is not None:
        if ratio is not None:
            raise InputError("give either a uniform ratio or a per-layer policy, not both")
        if not isinstance(policy, Policy):
            raise InputError(f"policy must be a devicefit Policy, got {type(policy).__name__}")
        tags = {a.tag for a in policy.values()} - {"keep"}
        if tags - {method}:  # every method is named by the tag of its action
            raise InputError(f"the policy's actions ({', '.join(sorted(tags))}) are not the method {method!r}")
    action = method_action(method, ratio, round_to) if policy is None else None
    if isinstance(model, str):
        spec = model_spec(model)
        name, dataset, input_shape = model, spec.dataset, spec.input_shape
        original = get_model(model, pretrained=weights is None and spec.weights is not None, data_dir=data_dir)
        if weights is None and spec.weights is None:
            raise InputError(f"{model!r} has no pretrained weights in the data directory: give --weights")
    else:
        if data is not None:
            input_shape = _data_shape(data)
            dataset = dataset or getattr(data[0], "dataset", None)
        elif dataset is None or input_shape is None:
            raise InputError("compressing your own nn.Module needs dataset= (cifar10 or mnist) and input_shape=, or "
                             "data=(train, test)")
        name, original = name or type(model).__name__, model
    if weights is not None:
        load_weights(original, weights)
    if (distill or noise) and not finetune_epochs:
        raise InputError("distillation and noisy training are kinds of recovery training: give finetune_epochs > 0")
    if method == "int8" and finetune_epochs:
        raise InputError("int8 here is post-training quantization (ONNX Runtime, calibrated); recovery training "
                         "is for the other methods: leave finetune_epochs at 0")
    if method == "bits" and finetune_epochs:
        raise InputError("bits is post-training weight quantization: recovery training would move the weights off "
                         "their levels; leave finetune_epochs at 0 (quantization-aware training is the joint "
                         "method's, devicefit.compression.compress_to_size)")
    original.eval()
    reference = original if baseline is None else baseline.eval()
    example = torch.zeros(1, *input_shape)
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--out {str(out_dir)!r} is a file, expected a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    train, test = data if data is not None else (
        load_images(dataset, "train" if dataset == "cifar10" else "train8k", data_dir),
        load_images(dataset, "test" if dataset == "cifar10" else "test2k", data_dir))
    if policy is None:
        assert action is not None
        policy = Policy.uniform(original, action)  # every layer that supports the action
    if method == "int8" and data is None:
        calibration = list(calibration_batch(dataset, INT8_CALIBRATION_IMAGES, data_dir).split(64))
    elif method == "int8":
        calibration = [x for x, _ in train.subset(min(len(train), INT8_CALIBRATION_IMAGES)).batches(64)]
    else:
        calibration = list(train.subset(min(len(train), 1280)).batches(64))  # 20 fixed batches (or fewer)
    result = apply_policy(original, policy, example, data=calibration)
    compressed = result.model
    if method != "int8":  # new layers see new activations: re-estimate BN statistics (int8 changes no layer)
        recalibrate_batchnorm(compressed, calibration)
    accuracy: dict[str, float | None] = {"original": evaluate_accuracy(reference, test, limit=eval_limit),
                                         "compressed": evaluate_accuracy(compressed, test, limit=eval_limit),
                                         "recovered": None, "deployed": None}
    if finetune_epochs:
        config = FinetuneConfig(epochs=finetune_epochs, lr=lr, seed=seed, augment=dataset == "cifar10",
                                distill=distill, noise_std=noise)
        finetune(compressed, train, config, teacher=reference if distill else None, progress=progress,
                 checkpoint=None if out_dir is None else out_dir / "finetune.ckpt")
        accuracy["recovered"] = evaluate_accuracy(compressed, test, limit=eval_limit)
    finalize(compressed)
    int8 = Int8Config(torch.cat(calibration)) if method == "int8" else None
    comparison = compare_models(reference, compressed, example, runtimes=("onnxruntime",), int8=int8,
                                protocol=TimingProtocol(threads=1))
    timed = comparison.runtimes[0]
    onnx = comparison.onnx  # the file that was measured: exported (and quantized) once
    if int8 is not None:  # the fake-quant estimate is not what a device runs: measure the int8 file itself
        accuracy["deployed"] = evaluate_onnx_accuracy(onnx, test, limit=eval_limit)
    from .analysis import compressible_layers

    names = list(policy) if baseline is None else list(compressible_layers(reference))
    before, after = layer_costs(reference, example, names), layer_costs(compressed, example, names)
    skipped = {s["module"] for s in result.skipped}
    per_layer = [{"layer": n, "action": policy[n].to_dict() if n in policy else None, "original": before[n],
                  "compressed": after.get(n)} for n in names if n not in skipped and n in before]
    cost = {"original": compressed_cost(reference, example), "compressed": result.cost}
    report = CompressReport(name, method, None if ratio is None else float(ratio), len(result.history),
                            result.skipped, accuracy, cost,
                            {"original": timed.original.median_ms, "compressed": timed.compressed.median_ms},
                            timed.speedup, list(comparison.notes),
                            data=test.description + (f", first {eval_limit} of a fixed permutation" if eval_limit
                                                     else ""),
                            per_layer=per_layer, comparison=comparison.to_dict(), search=search or {})
    if out_dir is not None:
        files = {"policy": out_dir / "policy.json", "history": out_dir / "history.json",
                 "weights": out_dir / "compressed.pt", "onnx": out_dir / "compressed.onnx",
                 "json": out_dir / "compress_report.json"}
        report.files = {k: str(v) for k, v in files.items()}
        write_atomic(files["policy"], policy.to_json().encode())
        write_atomic(files["history"], json.dumps(result.history, indent=1).encode())
        torch_save_atomic(compressed.state_dict(), files["weights"])
        write_atomic(files["onnx"], onnx)
        write_atomic(files["json"], json.dumps(report.to_dict(), indent=1, allow_nan=False).encode())
    return report


def _data_shape(data: Any) -> tuple[int, ...]:
    """The input shape of one sample of a ``(train, test)`` pair of data sources (checked alike)."""
    from ..models import DataSource

    if not isinstance(data, tuple) or len(data) != 2 or not all(isinstance(d, DataSource) for d in data):
        raise InputError("data must be a (train, test) pair of DataSource (LabelledImages, TensorData, ...), got "
                         f"{type(data).__name__}")
    shapes = [tuple(next(d.batches(1))[0].shape[1:]) for d in data]
    if shapes[0] != shapes[1]:
        raise InputError(f"train and test inputs differ in shape: {shapes[0]} and {shapes[1]}")
    return shapes[0]
