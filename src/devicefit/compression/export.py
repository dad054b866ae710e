"""Export of a compressed model to ONNX, and a measured before/after comparison on this machine.

:func:`export_compressed` writes the ONNX file a device would run: on a copy, ``torch.nn.utils.prune`` masks are
made permanent (:func:`~devicefit.compression.finalize`) and int8 fake-quantization removed, the model is
exported (TorchScript exporter, opset 17, as :func:`devicefit.hardware.export_onnx`), and with an
:class:`~devicefit.compression.int8.Int8Config` quantized by ONNX Runtime (the layers marked by an ``Int8``
policy action, or every Conv/Linear layer when none is marked).

:func:`compare_models` measures the original and the compressed model under one :class:`TimingProtocol` per
runtime (ONNX Runtime on the exported files; PyTorch eager on the modules): the same threads, warm-up and
number of timed runs, the two models **alternated** in rounds (ABBA order) so that a noisy, shared machine slows
both alike; the speed-up is the ratio of the two medians of the same run, with the range of the per-round
ratios. It also counts MACs, parameters and non-zero parameters (:func:`devicefit.hardware.count_model`) and
bytes: fp32 dense (4 per parameter), the ONNX file on disk, and the sparse size the zeros would allow
(:data:`SPARSE_ENCODING`). The notes are derived from these figures, not from the method's name: a compressed
model that is not measurably faster gets a note saying what did not buy time (fewer MACs, or zeros that a dense
runtime multiplies like any other weight) and what it saves instead (size once stored sparse).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._files import write_atomic
from ..errors import InputError
from .int8 import (
    QUANTIZABLE,
    QUANTIZED_OPS,
    Int8Config,
    int8_layers,
    layer_nodes,
    quantize_onnx_int8,
    strip_fake_quant,
)

__all__ = ["SPARSE_ENCODING", "Comparison", "ModelFigures", "RuntimeComparison", "TimingProtocol",
           "compare_models", "compressed_onnx", "export_compressed"]

#: How :attr:`ModelFigures.bytes_sparse` is counted.
SPARSE_ENCODING = ("per parameter tensor, the smallest of: dense; bitmap (1 bit per element + the non-zero "
                   "values); CSR of its (rows = dim 0, cols = the rest) matrix (the non-zero values + a 16-bit "
                   "column index each, 32-bit past 65,536 columns, + 32-bit row pointers). Values are 4 bytes, 1 "
                   "for the weights of int8 layers")
#: Below this speed-up a compressed model is "not measurably faster" in the notes.
NO_GAIN = 1.05


@dataclass(frozen=True)
class TimingProtocol:
    """How :func:`compare_models` times: ``threads`` (intra-op), ``warmup`` untimed runs of each model, then
    ``rounds`` rounds of ``repeats_per_round`` timed runs of each, alternating which model goes first."""

    threads: int = 1
    warmup: int = 10
    rounds: int = 6
    repeats_per_round: int = 10

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            low = 0 if f.name == "warmup" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"TimingProtocol.{f.name} must be an integer >= {low}, got {v!r}")


@dataclass(frozen=True)
class ModelFigures:
    """Static figures of one model, for one forward of the example batch (see the module docstring)."""

    params: int
    nonzero_params: int
    macs: int
    bytes_fp32_dense: int
    bytes_onnx: int
    bytes_sparse: int
    precision: str  # of the ONNX model, as devicefit.hardware.detect_onnx_precision reads it
    int8_layers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["int8_layers"] = list(self.int8_layers)
        return d


@dataclass(frozen=True)
class RuntimeComparison:
    """Latency of both models in one runtime, measured alternately, and the speed-up ``original / compressed``
    of the wall-clock medians (``speedup_low``/``_high``: the range of the per-round ratios; ``speedup_cpu``:
    the same ratio of thread CPU times, which leaves out time the OS gave to other processes)."""

    runtime: str
    original: Any  # LatencyMeasurement
    compressed: Any  # LatencyMeasurement
    speedup: float
    speedup_low: float
    speedup_high: float
    speedup_cpu: float

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "original": self.original.to_dict(), "compressed": self.compressed.to_dict(),
                "speedup": self.speedup, "speedup_low": self.speedup_low, "speedup_high": self.speedup_high,
                "speedup_cpu": self.speedup_cpu}


@dataclass(frozen=True)
class Comparison:
    """The measured before/after comparison of :func:`compare_models`."""

    original: ModelFigures
    compressed: ModelFigures
    runtimes: tuple[RuntimeComparison, ...]
    skipped: tuple[tuple[str, str], ...]  # (runtime, why it was not measured)
    notes: tuple[str, ...]
    timing: TimingProtocol
    input_shape: tuple[int, ...]
    sparse_encoding: str = SPARSE_ENCODING
    #: the compressed model's ONNX file as measured (int8 when asked): what :func:`export_compressed` writes
    onnx: bytes = field(default=b"", repr=False, compare=False)

    def speedup(self, runtime: str) -> float:
        """The measured speed-up in ``runtime``."""
        for r in self.runtimes:
            if r.runtime == runtime:
                return r.speedup
        raise InputError(f"runtime {runtime!r} was not measured; measured: "
                         f"{', '.join(r.runtime for r in self.runtimes) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        return {"original": self.original.to_dict(), "compressed": self.compressed.to_dict(),
                "runtimes": [r.to_dict() for r in self.runtimes],
                "skipped": [{"runtime": rt, "reason": why} for rt, why in self.skipped],
                "notes": list(self.notes), "timing": asdict(self.timing), "input_shape": list(self.input_shape),
                "sparse_encoding": self.sparse_encoding}

    def to_markdown(self) -> str:
        o, c = self.original, self.compressed
        rows = [("MACs", o.macs, c.macs), ("parameters", o.params, c.params),
                ("non-zero parameters", o.nonzero_params, c.nonzero_params),
                ("bytes, fp32 dense", o.bytes_fp32_dense, c.bytes_fp32_dense),
                ("bytes, ONNX file", o.bytes_onnx, c.bytes_onnx), ("bytes, sparse", o.bytes_sparse, c.bytes_sparse),
                ("precision (ONNX)", o.precision, c.precision)]
        lines = [f"Input {tuple(self.input_shape)}.", "", "| | original | compressed | ratio |", "|---|---|---|---|"]
        for name, a, b in rows:
            ratio = f"{a / b:.2f}x" if isinstance(a, int) and isinstance(b, int) and b else ""
            lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
        if self.runtimes:
            lines += ["", "| runtime | original ms | compressed ms | speed-up (per-round range) | speed-up, CPU time |",
                      "|---|---|---|---|---|"]
            for r in self.runtimes:
                lines.append(f"| {r.runtime} | {r.original.median_ms:.4g} | {r.compressed.median_ms:.4g} | "
                             f"{r.speedup:.2f}x ({r.speedup_low:.2f}-{r.speedup_high:.2f}) | {r.speedup_cpu:.2f}x |")
        for runtime, why in self.skipped:
            lines.append(f"\n{runtime}: not measured ({why}).")
        t = self.timing
        proto = self.runtimes[0].original.protocol if self.runtimes else None
        where = f" on {proto.cpu}" if proto is not None else ""
        lines += ["", f"Timing{where}: {t.threads} thread(s), {t.warmup} warm-up runs, {t.rounds} alternating rounds "
                      f"of {t.repeats_per_round} timed runs per model; medians.", "",
                  f"Sparse bytes: {self.sparse_encoding}.", ""]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


# --- export -------------------------------------------------------------------------------------------


def _check_example(example_input: Any) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor) or example_input.ndim < 1 or example_input.shape[0] < 1:
        raise InputError(f"example_input must be a batch tensor (N, ...), got {type(example_input).__name__} "
                         f"{tuple(getattr(example_input, 'shape', ()))}")
    if not example_input.is_floating_point():
        raise InputError(f"example_input must be a float tensor, got {example_input.dtype}")
    return example_input


def _deployable(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A copy with masks made permanent and fake-quantization removed, in eval mode; and the int8 marks."""
    from .apply import finalize

    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    marks = int8_layers(out)
    finalize(out)
    strip_fake_quant(out)
    return out.eval(), marks


def _int8_targets(model: nn.Module, marks: dict[str, Any], int8: Int8Config) -> list[str]:
    """The layers the int8 export quantizes: the marked ones, else every Conv/Linear layer."""
    if not marks:
        return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    differ = [n for n, mark in marks.items() if mark.per_channel != int8.per_channel]
    if differ:
        raise InputError(f"layer(s) {', '.join(differ[:5])} were made int8 with per_channel="
                         f"{not int8.per_channel} but the export asks per_channel={int8.per_channel}")
    return list(marks)


def _float_nodes(data: bytes, targets: Sequence[str]) -> list[str] | None:
    """The Conv/Gemm/MatMul nodes that compute none of ``targets`` (None when there are none): excluded from
    quantization, so that ORT still quantizes the ReLUs, pads and slices around the quantized layers."""
    import onnx

    ours = {n for names in layer_nodes(data, targets).values() for n in names}
    others = [n.name for n in onnx.load_model_from_string(data).graph.node
              if n.op_type in QUANTIZED_OPS and n.name not in ours]
    return others or None


def _exported(model: nn.Module, example: torch.Tensor, int8: Int8Config | None
              ) -> tuple[nn.Module, bytes, list[str]]:
    """The deployable copy of ``model``, its ONNX bytes (fp32, or int8 with ``int8``) and the layers quantized."""
    from ..hardware.measure import export_onnx

    if int8 is not None and not isinstance(int8, Int8Config):
        raise InputError(f"int8 must be an Int8Config (calibration inputs, per_channel, method) or None, got "
                         f"{type(int8).__name__}")
    deployable, marks = _deployable(model)
    if int8 is None and marks:
        raise InputError(f"layer(s) {', '.join(list(marks)[:5])} are marked int8: give int8=Int8Config("
                         "calibration) so that they are exported as int8 (ONNX Runtime quantizes them)")
    try:
        data = export_onnx(deployable, example)
    except Exception as exc:
        raise InputError(f"the model ({type(model).__name__}) could not be exported to ONNX on an input of shape "
                         f"{tuple(example.shape)}: {type(exc).__name__}: {exc}") from exc
    if int8 is None:
        return deployable, data, []
    targets = _int8_targets(deployable, marks, int8)
    return deployable, quantize_onnx_int8(data, int8.calibration, per_channel=int8.per_channel,
                                          nodes_to_exclude=_float_nodes(data, targets), method=int8.method), targets


def compressed_onnx(model: nn.Module, example_input: torch.Tensor, *, int8: Int8Config | None = None) -> bytes:
    """The ONNX model a device would run, as bytes (see :func:`export_compressed`, which writes it)."""
    return _exported(model, _check_example(example_input), int8)[1]


def export_compressed(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike[str], *,
                      int8: Int8Config | None = None) -> int:
    """Write ``model`` as the ONNX file ``path`` (see the module docstring); the file's size in bytes.

    ``model`` itself is not changed. Layers marked int8 by a policy need ``int8`` (the calibration inputs);
    ``int8`` without marks quantizes every Conv/Linear layer. The file is written atomically."""
    example = _check_example(example_input)
    target = Path(path)
    if target.is_dir():
        raise InputError(f"path {str(target)!r} is a folder; expected an .onnx file name")
    if not target.parent.is_dir():
        raise InputError(f"the folder of {str(target)!r} does not exist")
    data = compressed_onnx(model, example, int8=int8)
    write_atomic(target, data)
    return len(data)


# --- figures --------------------------------------------------------------------------------------------


def sparse_bytes(model: nn.Module, int8_modules: Sequence[str] = ()) -> int:
    """Bytes of ``model``'s parameters (masks applied) stored as :data:`SPARSE_ENCODING` says; the weights of
    ``int8_modules`` at 1 byte per value."""
    total = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                masked = pname.endswith("_orig") and hasattr(module, pname[: -len("_orig")] + "_mask")
                base = pname[: -len("_orig")] if masked else pname
                t = getattr(module, base) if masked else p
                total += tensor_sparse_bytes(t, 1 if name in int8_modules and base == "weight" else 4)
    return total


def tensor_sparse_bytes(t: torch.Tensor, value_bytes: int) -> int:
    """The smallest of dense, bitmap and CSR bytes of one tensor (see :data:`SPARSE_ENCODING`)."""
    n = t.numel()
    nnz = int(torch.count_nonzero(t))
    rows = t.shape[0] if t.ndim >= 1 and n else 1
    cols = n // max(rows, 1)
    index = 2 if cols <= 65536 else 4
    return min(n * value_bytes, math.ceil(n / 8) + nnz * value_bytes, nnz * (value_bytes + index) + (rows + 1) * 4)


def _figures(model: nn.Module, example: torch.Tensor, onnx_bytes: bytes, int8: Sequence[str]) -> ModelFigures:
    import onnx

    from ..hardware import count_model
    from ..hardware.measure import detect_onnx_precision

    cost = count_model(model, tuple(example.shape[1:]), batch_size=int(example.shape[0]))
    return ModelFigures(params=cost.params, nonzero_params=cost.nonzero_params, macs=cost.macs,
                        bytes_fp32_dense=cost.model_bytes_fp32, bytes_onnx=len(onnx_bytes),
                        bytes_sparse=sparse_bytes(model, int8),
                        precision=detect_onnx_precision(onnx.load_model_from_string(onnx_bytes)),
                        int8_layers=tuple(int8))


# --- measurement ----------------------------------------------------------------------------------------


def _timed_pair(runners: tuple[Any, Any], timing: TimingProtocol) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per model, per round: (wall ms, cpu ms) arrays; models alternate, ABBA."""
    from ..hardware.measure import time_runner

    for run in runners:
        for _ in range(timing.warmup):
            run()
    wall: list[list[np.ndarray]] = [[], []]
    cpu: list[list[np.ndarray]] = [[], []]
    for r in range(timing.rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            w, c = time_runner(runners[i], warmup=0, repeats=timing.repeats_per_round)
            wall[i].append(w)
            cpu[i].append(c)
    return [np.stack(wall[0]), np.stack(wall[1])], [np.stack(cpu[0]), np.stack(cpu[1])]


def _measure(runtime: str, models: tuple[Any, Any], sources: tuple[str, str], precisions: tuple[str, str],
             example: torch.Tensor, timing: TimingProtocol) -> RuntimeComparison:
    from ..hardware.measure import make_runner, protocol, summarize

    shape = tuple(int(s) for s in example.shape[1:])
    batch = int(example.shape[0])
    previous = torch.get_num_threads()
    torch.set_num_threads(timing.threads)
    try:
        runners = tuple(make_runner(m, shape if isinstance(m, nn.Module) else None, runtime,  # type: ignore[arg-type]
                                    threads=timing.threads, batch_size=batch) for m in models)
        wall, cpu = _timed_pair(runners, timing)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(previous)
    results = []
    for i in range(2):
        proto = protocol(runtime, threads=timing.threads, warmup=timing.warmup,
                         repeats=timing.rounds * timing.repeats_per_round, batch_size=batch, input_shape=shape,
                         precision=precisions[i], source=sources[i])
        results.append(summarize(wall[i].ravel(), cpu[i].ravel(), proto))
    per_round = np.median(wall[0], axis=1) / np.median(wall[1], axis=1)
    return RuntimeComparison(runtime, results[0], results[1], results[0].median_ms / results[1].median_ms,
                             float(per_round.min()), float(per_round.max()),
                             results[0].cpu_median_ms / results[1].cpu_median_ms)


def compare_models(
    original: nn.Module,
    compressed: nn.Module,
    example_input: torch.Tensor,
    *,
    runtimes: Sequence[str] = ("onnxruntime", "torch"),
    protocol: TimingProtocol = TimingProtocol(),
    int8: Int8Config | None = None,
) -> Comparison:
    """Measure ``original`` against ``compressed`` on this machine (see the module docstring).

    Both are ``nn.Module``s run on batches shaped like ``example_input``; neither is changed. ``runtimes``:
    ``"onnxruntime"`` (each model's ONNX export, :func:`export_compressed`'s file) and/or ``"torch"`` (eager,
    masks made permanent). ``int8``: the compressed model is measured as its int8 ONNX model, so only in
    ONNX Runtime (the torch runtime is then skipped, with the reason)."""
    from ..hardware.measure import RUNTIMES, SOURCE_MODULE

    example = _check_example(example_input)
    if isinstance(runtimes, str) or not runtimes or any(r not in RUNTIMES for r in runtimes) or \
            len(set(runtimes)) != len(runtimes):
        raise InputError(f"runtimes must be a non-empty list of distinct names from {', '.join(RUNTIMES)}, got "
                         f"{runtimes!r}")
    if not isinstance(protocol, TimingProtocol):
        raise InputError(f"protocol must be a TimingProtocol, got {type(protocol).__name__}")
    models = {"original": original, "compressed": compressed}
    for what, m in models.items():
        if not isinstance(m, nn.Module):
            raise InputError(f"{what} must be a torch.nn.Module, got {type(m).__name__}")
    if int8_layers(original):
        raise InputError("the original model has int8 (fake-quantized) layers; compare against the float model")
    plain_o, onnx_o, _ = _exported(original, example, None)
    plain_c, onnx_c, quantized = _exported(compressed, example, int8)
    fig_o = _figures(plain_o, example, onnx_o, ())
    fig_c = _figures(plain_c, example, onnx_c, quantized)
    measured, skipped = [], []
    for runtime in runtimes:
        if runtime == "onnxruntime":
            measured.append(_measure(runtime, (onnx_o, onnx_c), ("onnx bytes", "onnx bytes"),
                                     (fig_o.precision, fig_c.precision), example, protocol))
        elif int8 is not None:
            skipped.append((runtime, "the int8 model exists as ONNX only; PyTorch would run its float weights"))
        else:
            from ..hardware.measure import detect_module_precision

            measured.append(_measure(runtime, (plain_o, plain_c), (SOURCE_MODULE, SOURCE_MODULE),
                                     (detect_module_precision(plain_o), detect_module_precision(plain_c)), example,
                                     protocol))
    notes = _notes(fig_o, fig_c, measured)
    return Comparison(fig_o, fig_c, tuple(measured), tuple(skipped), tuple(notes), protocol,
                      tuple(int(s) for s in example.shape), onnx=onnx_c)


def _notes(o: ModelFigures, c: ModelFigures, measured: Sequence[RuntimeComparison]) -> list[str]:
    """Plain-language reading of the figures: what bought time, what did not, and what was saved instead."""
    notes = []
    zero_share = 1.0 - c.nonzero_params / c.params if c.params else 0.0
    fewer_macs = c.macs < 0.95 * o.macs
    for r in measured:
        where = "ONNX Runtime" if r.runtime == "onnxruntime" else "PyTorch eager"
        if r.speedup >= NO_GAIN:
            notes.append(f"{where}: {r.speedup:.2f}x faster (per-round range {r.speedup_low:.2f}-"
                         f"{r.speedup_high:.2f}x).")
            continue
        verdict = "no measurable speed-up" if r.speedup > 1 / NO_GAIN else f"{1 / r.speedup:.2f}x slower"
        reasons = []
        if fewer_macs:
            reasons.append(f"{1 - c.macs / o.macs:.0%} fewer MACs did not buy time here (the layers are not "
                           "where this runtime spends it, or the smaller layers run less efficiently)")
        if zero_share >= 0.05 and not fewer_macs:
            reasons.append(f"{zero_share:.0%} of the weights are zero, but a dense runtime multiplies zeros like any "
                           "other weight, so masks save no time here")
        if not reasons:
            reasons.append("the compressed model computes as much as the original here")
        notes.append(f"{where}: {verdict} ({r.speedup:.2f}x); " + "; ".join(reasons) + ".")
    if zero_share >= 0.05 and c.bytes_sparse < 0.95 * c.bytes_onnx:
        notes.append(f"What it saves is size once stored sparse: {c.bytes_sparse:,} bytes against "
                     f"{c.bytes_onnx:,} in its dense ONNX file ({o.bytes_onnx:,} for the original).")
    elif c.bytes_onnx < 0.95 * o.bytes_onnx:
        notes.append(f"ONNX file {o.bytes_onnx / c.bytes_onnx:.2f}x smaller ({c.bytes_onnx:,} bytes against "
                     f"{o.bytes_onnx:,}).")
    return notes
