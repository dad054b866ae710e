"""Latency of a model on the local CPU, in PyTorch eager or ONNX Runtime, with its protocol.

What can be measured: an ``nn.Module`` (any: eager, TorchScript, a ``torch.export`` program's
``.module()``; fp32, fp16, bf16 or torch.ao-quantized) in either runtime, or an ONNX model (a file path,
raw bytes or an ``onnx.ModelProto``; fp32, fp16 or quantized by ``onnxruntime.quantization``) in ONNX
Runtime. That is how compressed models are measured: quantize or export them to ONNX and pass the file.

Every number comes with a :class:`MeasurementProtocol` (runtime and versions, precision, threads, warmup,
repeats, batch, input shape, CPU model, where the model came from, date), so a latency is never separated
from how it was measured; :meth:`MeasurementProtocol.fingerprint` is everything the number depends on,
the key a results cache uses.

Method: the model runs in eval mode (modes restored afterwards); PyTorch runs under
``torch.inference_mode`` with ``torch.set_num_threads(threads)`` (restored afterwards); ONNX Runtime runs
on the CPU execution provider with ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``,
sequential execution and full graph optimisation (Conv+BN folding, QDQ fusion into integer kernels).
The input is a fixed random normal batch (seed 0) of the model's floating dtype. ``warmup`` untimed runs
precede ``repeats`` runs timed one by one with ``time.perf_counter_ns``; the summary is the median and
the 25th/75th percentiles. Each run's thread CPU time (``time.thread_time_ns``) is recorded too: with one
thread both runtimes compute on the calling thread, so on an idle machine CPU time equals wall time,
while on a shared machine it leaves out the time the OS gave to other processes (not cache or
memory-bandwidth interference).

An ``nn.Module`` measured in ONNX Runtime is first exported with the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``, opset 17, to memory, constant folding on). Why that exporter:
for NB201 networks it takes ~0.2 s per model against ~3 s for the dynamo exporter (torch 2.13, measured on
this machine), and produces the same graph of Conv, BN (folded by ONNX Runtime), ReLU, AveragePool, Add,
Gemm; at 1,000+ cells the export time dominates.

Input shape of an ONNX model: ``input_shape`` (one sample, without the batch dimension) may be omitted;
it is then read from the graph's only input. A symbolic or dynamic batch dimension takes ``batch_size``;
a static one must equal it; any other dynamic dimension needs an explicit ``input_shape``.

Precision (:data:`PRECISIONS`) is the precision that actually ran, detected from the model, not assumed:

- ``fp32``, ``fp16``, ``bf16``, ``fp64``: every floating weight has that type (a module's floating
  parameters; an ONNX graph's floating initializers and constants of more than one element, or its
  inputs when it has none). ``mixed``: floating weights of more than one type.
- ``int8``: integer arithmetic on 8-bit weights AND activations, whether activation scales come from
  calibration or are computed at run time: ONNX ``QLinear*``, ``ConvInteger``/``MatMulInteger``,
  ``com.microsoft`` ``QGemm``/``DynamicQuantizeMatMul``/``MatMulIntegerToFloat``/``QAttention``, or
  ``QuantizeLinear``/``DynamicQuantizeLinear`` applied to activations (QDQ form, which ONNX Runtime fuses into
  integer kernels); a torch module holding ``torch.ao.nn.quantized`` (static or dynamic) layers.
- ``int8-weights``: weights stored in 8 bits and dequantized to float for float arithmetic, activations
  never quantized (``DequantizeLinear`` on initializers only).
- ``int16``, ``int16-weights``, ``int4-weights`` (e.g. ``MatMulNBits``): the same with other widths; the
  width is the widest integer type among the quantized weights, zero points and quantized outputs.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .counting import eval_mode, float_dtype
from .machine import cpu_model

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ONNX_OPSET",
    "PRECISIONS",
    "RUNTIMES",
    "LatencyMeasurement",
    "MeasurementProtocol",
    "cpu_model",
    "detect_module_precision",
    "detect_onnx_precision",
    "export_onnx",
    "make_runner",
    "measure_latency",
    "onnx_input_spec",
    "protocol",
    "summarize",
    "time_runner",
]

Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
ONNX_OPSET = 17
#: The precision vocabulary of :attr:`MeasurementProtocol.precision` (see the module docstring).
PRECISIONS: tuple[str, ...] = (
    "fp32", "fp16", "bf16", "fp64", "mixed", "int8", "int8-weights", "int16", "int16-weights", "int4-weights",
)
TIMER = "wall: time.perf_counter_ns per call; cpu: time.thread_time_ns per call; median, 25/75th pct"
EXPORTER = f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}"
PROVIDER = "CPUExecutionProvider"
SOURCE_MODULE = "nn.Module"

#: An ONNX model: a file path, its serialized bytes, or an ``onnx.ModelProto``.
OnnxModel: TypeAlias = "str | os.PathLike[str] | bytes | onnx.ModelProto"
#: What :func:`measure_latency` accepts.
Measurable: TypeAlias = "nn.Module | OnnxModel"


@dataclass(frozen=True)
class MeasurementProtocol:
    """How one latency was measured. All fields are plain values; :meth:`to_dict` is JSON-able.

    ``input_shape`` is the full input, batch first. ``torch`` is the PyTorch version when torch ran or
    exported the model (``None`` for an ONNX model given as such); ``onnxruntime`` and ``provider`` are set
    for the ONNX Runtime runtime; ``exporter`` is how an ``nn.Module`` became ONNX (``None`` otherwise).
    ``source`` says what was given: ``"nn.Module"``, ``"onnx file <file name>"``, ``"onnx bytes"`` or
    ``"onnx ModelProto"``. ``precision`` is one of :data:`PRECISIONS`, detected from the model.
    """

    runtime: str
    precision: str
    threads: int
    batch_size: int
    warmup: int
    repeats: int
    input_shape: tuple[int, ...]
    cpu: str
    torch: str | None
    onnxruntime: str | None
    exporter: str | None
    provider: str | None
    source: str
    date_utc: str
    timer: str = TIMER

    def __post_init__(self) -> None:
        if isinstance(self.input_shape, list):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if self.runtime not in RUNTIMES:
            raise InputError(f"protocol runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"protocol precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("threads", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise InputError(f"protocol {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise InputError(f"protocol warmup must be >= 0, got {self.warmup}")
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise InputError(f"protocol input_shape must be positive sizes, got {self.input_shape}")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (``input_shape`` as a list)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasurementProtocol:
        """The protocol of :meth:`to_dict`'s output; a missing or unknown key, or a value of the wrong type,
        raises :class:`~devicefit.errors.InputError`."""
        if not isinstance(data, Mapping):
            raise InputError(f"a measurement protocol must be a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(str(k) for k in data if k not in names)
        if missing or unknown:
            raise InputError(
                f"measurement protocol keys do not match: missing {missing or 'none'}, unknown {unknown or 'none'}; "
                f"expected exactly {', '.join(names)}"
            )
        for name in ("runtime", "precision", "cpu", "source", "date_utc", "timer"):
            _expect(isinstance(data[name], str), name, "a string", data[name])
        for name in ("torch", "onnxruntime", "exporter", "provider"):
            _expect(data[name] is None or isinstance(data[name], str), name, "a string or null", data[name])
        for name in ("threads", "batch_size", "warmup", "repeats"):
            _expect(_is_int(data[name]), name, "an integer", data[name])
        shape = data["input_shape"]
        _expect(isinstance(shape, (list, tuple)) and all(_is_int(s) for s in shape), "input_shape",
                "a list of integers", shape)
        return cls(**{**{n: data[n] for n in names}, "input_shape": tuple(int(s) for s in shape)})

    def fingerprint(self) -> dict[str, Any]:
        """Everything the measured value depends on: :meth:`to_dict` without ``date_utc``."""
        d = self.to_dict()
        del d["date_utc"]
        return d


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expect(ok: bool, name: str, what: str, got: Any) -> None:
    if not ok:
        raise InputError(f"measurement protocol {name!r} must be {what}, got {got!r}")


@dataclass(frozen=True)
class LatencyMeasurement:
    """Latency summary in milliseconds: wall-clock median and inter-quartile range over ``samples`` timed
    runs, and the same for the thread's CPU time, with the protocol that produced them."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    samples: int
    protocol: MeasurementProtocol
    #: Median and quartiles of the calling thread's CPU time per run (see the module docstring).
    cpu_median_ms: float = float("nan")
    cpu_p25_ms: float = float("nan")
    cpu_p75_ms: float = float("nan")

    @property
    def iqr_ms(self) -> float:
        """Inter-quartile range of the wall-clock latency, ms."""
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict, the protocol as :meth:`MeasurementProtocol.to_dict`."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["protocol"] = self.protocol.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyMeasurement:
        """The measurement of :meth:`to_dict`'s output (strict, like :meth:`MeasurementProtocol.from_dict`)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, Mapping) or set(data) != set(names):
            got = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
            raise InputError(f"a latency measurement needs exactly the keys {', '.join(names)}, got {got}")
        values = {n: data[n] for n in names}
        values["protocol"] = MeasurementProtocol.from_dict(data["protocol"])
        for n in names:
            if n != "protocol" and (not isinstance(values[n], (int, float)) or isinstance(values[n], bool)):
                raise InputError(f"latency measurement {n!r} must be a number, got {values[n]!r}")
        return cls(**values)


def _check(runtime: str, warmup: int, repeats: int, threads: int, batch_size: int) -> None:
    if runtime not in RUNTIMES:
        raise InputError(f"runtime {runtime!r} is not supported; expected one of {', '.join(RUNTIMES)}")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")


def _sample_shape(input_shape: Any, what: str = "input_shape") -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise InputError(
            f"{what} must be a sequence of positive integers like (3, 32, 32), got {input_shape!r}"
        ) from None
    if any(s < 1 for s in shape):
        raise InputError(f"{what} must have positive sizes, got {shape}")
    return shape


# ---------------------------------------------------------------------------------------------- precision

_TORCH_FLOAT_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


def detect_module_precision(model: nn.Module) -> str:
    """The precision (:data:`PRECISIONS`) a module computes in: ``int8`` when it holds torch.ao quantized
    layers, else the type of its floating parameters (buffers when it has none; ``fp32`` when neither),
    ``mixed`` when they have several."""
    for m in model.modules():
        origin = type(m).__module__
        if origin.startswith("torch.ao.nn.quantized") and not origin.startswith("torch.ao.nn.quantized.reference"):
            return "int8"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not dtypes:
        dtypes = {b.dtype for b in model.buffers() if b.is_floating_point()}
    if not dtypes:
        return "fp32"
    if len(dtypes) > 1:
        return "mixed"
    (dtype,) = dtypes
    return _TORCH_FLOAT_NAMES.get(dtype, "mixed")


# Integer element types of quantized tensors (onnx.TensorProto values) and their widths.
_INT_BITS = {2: 8, 3: 8, 4: 16, 5: 16, 21: 4, 22: 4}  # UINT8, INT8, UINT16, INT16, UINT4, INT4
_FLOAT_NAMES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}  # FLOAT, FLOAT16, BFLOAT16, DOUBLE
# Operators that compute in integers (both operands quantized).
_INTEGER_COMPUTE = {
    "ConvInteger", "MatMulInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "DynamicQuantizeLSTM",
}
_QUANTIZE = {"QuantizeLinear", "DynamicQuantizeLinear"}
_DEQUANTIZE = {"DequantizeLinear"}
_WEIGHT_ONLY = {"MatMulNBits", "GatherBlockQuantized"}


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def detect_onnx_precision(model: onnx.ModelProto) -> str:
    """The precision (:data:`PRECISIONS`) an ONNX model computes in, from its operators and weights (see
    the module docstring)."""
    graphs = list(_graphs(model.graph))
    consts: dict[str, onnx.TensorProto] = {}
    for g in graphs:
        consts.update({t.name: t for t in g.initializer})
        for node in g.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        consts[node.output[0]] = attr.t
    nodes = [n for g in graphs for n in g.node]
    constant = set(consts)  # plus QuantizeLinear outputs of constants (weights quantized at load time)
    bits: set[int] = set()
    integer = weights_only = False
    for node in nodes:  # ONNX nodes are in topological order
        op = node.op_type
        if op == "QuantizeLinear" and node.input[0] in constant:
            constant.update(node.output)
        quant = op.startswith("QLinear") or op in _INTEGER_COMPUTE or op in _QUANTIZE or op in _DEQUANTIZE
        if op in _WEIGHT_ONLY:
            weights_only = True
            bits.add(next((int(a.i) for a in node.attribute if a.name == "bits"), 4))
        if not quant:
            continue
        quantized = [consts[i].data_type for i in node.input if i in consts]
        bits.update(_INT_BITS[t] for t in quantized if t in _INT_BITS)
        if op == "DynamicQuantizeLinear":
            bits.add(8)  # always uint8
        if op == "QuantizeLinear" and (len(node.input) < 3 or not node.input[2]):  # no zero point: its type
            out_type = next((int(a.i) for a in node.attribute if a.name == "output_dtype"), 0)
            bits.add(_INT_BITS.get(out_type, 8))  # is output_dtype, by default uint8
        if op.startswith("QLinear") or op in _INTEGER_COMPUTE or (op in _QUANTIZE and node.input[0] not in constant):
            integer = True
        elif op in _DEQUANTIZE and node.input[0] in constant:
            weights_only = True
    if integer or weights_only:
        width = max(bits) if bits else 8
        return f"int{width}" if integer else f"int{width}-weights"
    dtypes = {_FLOAT_NAMES[t.data_type] for t in consts.values()
              if t.data_type in _FLOAT_NAMES and math.prod(t.dims) > 1}
    if not dtypes:
        init_names = {t.name for t in model.graph.initializer}
        dtypes = {_FLOAT_NAMES[i.type.tensor_type.elem_type] for i in model.graph.input
                  if i.name not in init_names and i.type.tensor_type.elem_type in _FLOAT_NAMES}
    if not dtypes:
        return "fp32"
    return dtypes.pop() if len(dtypes) == 1 else "mixed"


# ---------------------------------------------------------------------------------------------- ONNX input


@dataclass(frozen=True)
class _OnnxSource:
    proto: onnx.ModelProto
    session_input: str | bytes  # a path (external data next to it is found) or the serialized model
    source: str


def _is_onnx_like(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike, bytes, bytearray, memoryview)) or type(model).__name__ == "ModelProto"


def _check_proto(proto: onnx.ModelProto, what: str) -> None:
    if proto.ir_version < 1 or not proto.graph.node or not proto.graph.input or not proto.graph.output:
        raise InputError(f"{what} is not an ONNX model (no IR version, nodes, inputs or outputs); expected a "
                         "serialized onnx.ModelProto")


def _read_onnx(model: OnnxModel) -> _OnnxSource:
    """Parse an ONNX model given as a path, bytes or ``ModelProto``; clear errors for anything else."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        try:
            proto = onnx.load_model_from_string(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the {len(data)} bytes given are not an ONNX model ({exc}); expected a serialized "
                             "onnx.ModelProto") from None
        _check_proto(proto, f"the {len(data)} bytes given")
        return _OnnxSource(proto, data, "onnx bytes")
    if isinstance(model, onnx.ModelProto):
        _check_proto(model, "the onnx.ModelProto given")
        return _OnnxSource(model, model.SerializeToString(), "onnx ModelProto")
    path = Path(os.fspath(model))
    if not path.exists():
        raise InputError(f"ONNX model file {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"ONNX model file {str(path)!r} is not a file (a directory?); expected an .onnx file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf, external-data and OS errors of many types
        raise InputError(f"ONNX model file {str(path)!r} could not be read as ONNX ({type(exc).__name__}: {exc}); "
                         "PyTorch model files are read with devicefit.models.load_model_file") from None
    _check_proto(proto, f"ONNX model file {str(path)!r}")
    return _OnnxSource(proto, str(path), f"onnx file {path.name}")


def _fmt_dims(dims: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def onnx_input_spec(
    model: onnx.ModelProto, input_shape: Sequence[int] | None, batch_size: int
) -> tuple[str, tuple[int, ...], np.dtype]:
    """Name, full shape (batch first) and numpy dtype of the one input fed to an ONNX model.

    ``input_shape`` (one sample) may be ``None``: it is then read from the graph (see the module docstring).
    """
    import onnx

    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise InputError(f"the ONNX model has {len(inputs)} graph inputs ({names}); measure_latency feeds exactly one")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise InputError(f"ONNX input {inp.name!r} is not a tensor; measure_latency feeds one tensor")
    tensor = inp.type.tensor_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = None
    if dtype is None or dtype.kind != "f":
        name = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "undefined"
        raise InputError(f"ONNX input {inp.name!r} has element type {name}; measure_latency feeds float inputs "
                         "(float32, float16, float64)")
    sample = None if input_shape is None else _sample_shape(input_shape)
    if not tensor.HasField("shape"):
        if sample is None:
            raise InputError(f"ONNX input {inp.name!r} has no shape in the graph; pass input_shape (one sample)")
        return inp.name, (batch_size, *sample), dtype
    dims: list[int | str | None] = [
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
    ]
    if not dims:
        raise InputError(f"ONNX input {inp.name!r} is a scalar; expected a batch dimension first")
    if isinstance(dims[0], int) and dims[0] != batch_size:
        raise InputError(f"ONNX input {inp.name!r} has shape {_fmt_dims(dims)}, a fixed batch of {dims[0]}; "
                         f"got batch_size={batch_size} (pass batch_size={dims[0]})")
    rest = dims[1:]
    if sample is None:
        if not all(isinstance(d, int) for d in rest):
            raise InputError(f"ONNX input {inp.name!r} has dynamic dimensions {_fmt_dims(dims)}; pass input_shape "
                             "(the shape of one sample, without the batch dimension)")
        return inp.name, (batch_size, *(int(d) for d in rest)), dtype  # type: ignore[arg-type]
    if len(sample) != len(rest) or any(isinstance(d, int) and d != s for d, s in zip(rest, sample)):
        raise InputError(f"input_shape {sample} does not fit ONNX input {inp.name!r} of shape {_fmt_dims(dims)} "
                         "(input_shape is one sample, without the batch dimension)")
    return inp.name, (batch_size, *sample), dtype


# ---------------------------------------------------------------------------------------------- runners


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Serialized ONNX model of ``model`` (eval mode, restored after) for input ``example``, TorchScript
    exporter, opset 17."""
    buffer = io.BytesIO()
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
            do_constant_folding=True,
        )
    return buffer.getvalue()


@dataclass(frozen=True)
class _Prepared:
    run: Callable[[], Any]
    input_shape: tuple[int, ...]  # full, batch first
    precision: str
    source: str


def _ort_session(model: str | bytes, threads: int, source: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(model, options, providers=[PROVIDER])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InputError(f"ONNX Runtime ({PROVIDER}) cannot load the model ({source}): {exc}") from None


def _ort_runner(session: Any, name: str, feed_array: np.ndarray, what: str) -> Callable[[], Any]:
    feed = {name: feed_array}
    try:
        session.run(None, feed)
    except Exception as exc:
        raise InputError(f"ONNX Runtime failed to run {what} on input {name!r} of shape {feed_array.shape}: "
                         f"{exc}") from None

    def run_ort() -> Any:
        return session.run(None, feed)

    return run_ort


def _prepare(
    model: Measurable, input_shape: Sequence[int] | None, runtime: str, *, threads: int, batch_size: int
) -> _Prepared:
    """The runner and what it runs; for a module, the caller has put it in eval mode."""
    if isinstance(model, nn.Module):
        if input_shape is None:
            raise InputError("input_shape is required for an nn.Module: the shape of one sample without the batch "
                             "dimension, e.g. (3, 32, 32)")
        shape = (batch_size, *_sample_shape(input_shape))
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(float_dtype(model))
        try:
            with torch.inference_mode():
                model(example)
        except Exception as exc:
            raise InputError(f"the model ({type(model).__name__}) failed on an input of shape {shape} "
                             f"(batch {batch_size} of input_shape {tuple(shape[1:])}): {type(exc).__name__}: "
                             f"{exc}") from exc
        if runtime == "torch":

            def run_torch() -> Any:
                with torch.inference_mode():
                    return model(example)

            return _Prepared(run_torch, shape, detect_module_precision(model), SOURCE_MODULE)
        try:
            data = export_onnx(model, example)
        except Exception as exc:
            raise InputError(f"the model ({type(model).__name__}) could not be exported to ONNX ({EXPORTER}): "
                             f"{type(exc).__name__}: {exc}; measure it with runtime='torch', or export it "
                             "yourself and pass the ONNX file") from exc
        import onnx

        precision = detect_onnx_precision(onnx.load_model_from_string(data))
        session = _ort_session(data, threads, "exported nn.Module")
        name = session.get_inputs()[0].name
        return _Prepared(_ort_runner(session, name, example.numpy(), "the exported model"), shape, precision,
                         SOURCE_MODULE)
    if not _is_onnx_like(model):
        raise InputError(f"model must be a torch.nn.Module or an ONNX model (a path, bytes or onnx.ModelProto), "
                         f"got {type(model).__name__}")
    if runtime != "onnxruntime":
        raise InputError(f"runtime {runtime!r} cannot run an ONNX model; use runtime='onnxruntime'")
    src = _read_onnx(model)
    name, shape, dtype = onnx_input_spec(src.proto, input_shape, batch_size)
    feed = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    session = _ort_session(src.session_input, threads, src.source)
    return _Prepared(_ort_runner(session, name, feed, src.source), shape, detect_onnx_precision(src.proto),
                     src.source)


def _default_runtime(model: Any, runtime: str | None) -> str:
    if runtime is not None:
        return runtime
    return "torch" if isinstance(model, nn.Module) else "onnxruntime"


def make_runner(
    model: Measurable,
    input_shape: Sequence[int] | None = None,
    runtime: Runtime | None = None,
    *,
    threads: int = 1,
    batch_size: int = 1,
) -> Callable[[], Any]:
    """A zero-argument function running one inference of ``model`` on a fixed random batch.

    ``model`` is an ``nn.Module`` (put in eval mode and left so) or an ONNX model (path, bytes,
    ``onnx.ModelProto``; ONNX Runtime only). ``input_shape`` is the shape of ONE sample (e.g. ``(3, 32, 32)``),
    required for a module, read from the graph for ONNX when omitted; the batch is ``batch_size``.
    ``runtime`` defaults to ``"torch"`` for a module and ``"onnxruntime"`` for ONNX. Export, session creation
    and one check run happen here, outside any timing; a model that fails on the shape raises
    :class:`~devicefit.errors.InputError`.
    """
    runtime = _default_runtime(model, runtime)
    _check(runtime, 0, 1, threads, batch_size)
    if isinstance(model, nn.Module):
        try:
            model.eval()
        except NotImplementedError:
            pass  # a torch.export module: its mode is fixed at export
    return _prepare(model, input_shape, runtime, threads=threads, batch_size=batch_size).run


def time_runner(run: Callable[[], Any], *, warmup: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``warmup`` untimed then ``repeats`` timed calls of ``run``; per-call wall and thread-CPU times, ms."""
    for _ in range(warmup):
        run()
    wall = np.empty(repeats, dtype=np.float64)
    cpu = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        c0 = time.thread_time_ns()
        w0 = time.perf_counter_ns()
        run()
        wall[i] = (time.perf_counter_ns() - w0) / 1e6
        cpu[i] = (time.thread_time_ns() - c0) / 1e6
    return wall, cpu


def protocol(
    runtime: str,
    *,
    threads: int,
    warmup: int,
    repeats: int,
    batch_size: int,
    input_shape: Sequence[int],
    precision: str = "fp32",
    source: str = SOURCE_MODULE,
) -> MeasurementProtocol:
    """The protocol of a measurement with these settings on this machine, dated now.

    ``input_shape`` is one sample's shape (without the batch dimension). For an ONNX ``source`` (not
    ``"nn.Module"``) no torch version or exporter is recorded: torch took no part.
    """
    from_module = source == SOURCE_MODULE
    ort_version = None
    if runtime == "onnxruntime":
        import onnxruntime as ort

        ort_version = ort.__version__
    return MeasurementProtocol(
        runtime=runtime,
        precision=precision,
        threads=threads,
        batch_size=batch_size,
        warmup=warmup,
        repeats=repeats,
        input_shape=(batch_size, *(int(s) for s in input_shape)),
        cpu=cpu_model(),
        torch=torch.__version__ if from_module else None,
        onnxruntime=ort_version,
        exporter=EXPORTER if from_module and runtime == "onnxruntime" else None,
        provider=PROVIDER if runtime == "onnxruntime" else None,
        source=source,
        date_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def summarize(wall_ms: np.ndarray, cpu_ms: np.ndarray, proto: MeasurementProtocol) -> LatencyMeasurement:
    """Median and quartiles of per-run wall and CPU times (ms), with ``proto``."""
    p25, median, p75 = np.percentile(wall_ms, [25, 50, 75])
    c25, c50, c75 = np.percentile(cpu_ms, [25, 50, 75])
    return LatencyMeasurement(
        float(median), float(p25), float(p75), int(wall_ms.size), proto, float(c50), float(c25), float(c75)
    )


def measure_latency(
    model: Measurable,
    input_shape: Sequence[int] | None = None,
    runtime: Runtime | None = None,
    *,
    warmup: int = 10,
    repeats: int = 50,
    threads: int = 1,
    batch_size: int = 1,
) -> LatencyMeasurement:
    """Latency of one inference of ``model`` on this machine's CPU (ms), with its protocol.

    ``model``: an ``nn.Module``, or an ONNX model as a file path (``str``/``PathLike``), raw ``bytes`` or an
    ``onnx.ModelProto``. ``input_shape``: the shape of one sample without the batch dimension
    (``(3, 32, 32)`` for NB201); required for a module, read from the graph's input for ONNX when omitted.
    ``runtime``: ``"torch"`` (modules only) or ``"onnxruntime"``; by default ``"torch"`` for a module and
    ``"onnxruntime"`` for ONNX. The module's train/eval modes and torch's thread count are restored.

    Raises :class:`~devicefit.errors.InputError` for bad settings, a path that is missing or not an ONNX
    file, bytes that are not ONNX, an ONNX input shape that cannot be resolved, or a model that fails on
    the shape (whatever it raises).
    """
    runtime = _default_runtime(model, runtime)
    _check(runtime, warmup, repeats, threads, batch_size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if isinstance(model, nn.Module):
            with eval_mode(model):
                prepared = _prepare(model, input_shape, runtime, threads=threads, batch_size=batch_size)
                wall, cpu = time_runner(prepared.run, warmup=warmup, repeats=repeats)
        else:
            prepared = _prepare(model, input_shape, runtime, threads=threads, batch_size=batch_size)
            wall, cpu = time_runner(prepared.run, warmup=warmup, repeats=repeats)
    finally:
        torch.set_num_threads(previous_threads)
    proto = protocol(
        runtime, threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size,
        input_shape=prepared.input_shape[1:], precision=prepared.precision, source=prepared.source,
    )
    return summarize(wall, cpu, proto)
