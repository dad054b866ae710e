"""Latency of a model on the local CPU, in PyTorch eager or ONNX Runtime, with its protocol.

Every number comes with the protocol that produced it (runtime and versions, threads, warmup, repeats,
batch, input shape, CPU model, date), so a latency is never separated from how it was measured.

Protocol: the model is put in eval mode; PyTorch runs under ``torch.inference_mode`` with
``torch.set_num_threads(threads)`` (restored afterwards); ONNX Runtime runs a model exported with the
TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17, exported to memory) on
the CPU execution provider with ``intra_op_num_threads = threads`` and ``inter_op_num_threads = 1``
and full graph optimisation (Conv+BN folding). ``warmup`` untimed runs precede ``repeats`` runs timed
one by one with ``time.perf_counter_ns``; the summary is the median and the 25th/75th percentiles.
Each run's thread CPU time (``time.thread_time_ns``) is recorded too: with one thread both runtimes compute
on the calling thread, so on an idle machine CPU time equals wall time, while on a shared machine it
leaves out the time the OS gave to other processes (not cache or memory-bandwidth interference).

Why the TorchScript exporter: for NB201 networks it takes ~0.2 s per model against ~3 s for the
dynamo exporter (torch 2.13, measured on this machine), and produces the same graph of Conv, BN
(folded by ONNX Runtime), ReLU, AveragePool, Add, Gemm; at 1,000+ cells the export time dominates.
"""

from __future__ import annotations

import datetime as _dt
import io
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import InputError

Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
ONNX_OPSET = 17


@cache
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (falls back to :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class LatencyMeasurement:
    """Latency summary in milliseconds: wall-clock median and inter-quartile range over ``samples`` timed
    runs, and the same for the thread's CPU time."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    samples: int
    protocol: dict[str, Any] = field(default_factory=dict)
    #: Median and quartiles of the calling thread's CPU time per run (see the module docstring).
    cpu_median_ms: float = float("nan")
    cpu_p25_ms: float = float("nan")
    cpu_p75_ms: float = float("nan")

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Serialized ONNX model of ``model`` (eval mode) for input ``example``, TorchScript exporter, opset 17."""
    buffer = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
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


def make_runner(
    model: nn.Module, input_shape: Sequence[int], runtime: Runtime = "torch", *, threads: int = 1, batch_size: int = 1
) -> Callable[[], Any]:
    """A zero-argument function running one inference of ``model`` on a fixed random batch.

    ``input_shape`` is the shape of ONE sample (e.g. ``(3, 32, 32)``); the batch is ``batch_size``.
    For ONNX Runtime the export and session creation happen here, outside any timing.
    """
    _check(runtime, 0, 1, threads, batch_size)
    shape = (batch_size, *(int(s) for s in input_shape))
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    model.eval()
    if runtime == "torch":

        def run_torch() -> Any:
            with torch.inference_mode():
                return model(example)

        return run_torch
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(export_onnx(model, example), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example.numpy()}

    def run_ort() -> Any:
        return session.run(None, feed)

    return run_ort


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
    runtime: str, *, threads: int, warmup: int, repeats: int, batch_size: int, input_shape: Sequence[int]
) -> dict[str, Any]:
    """The measurement settings recorded next to every latency."""
    info: dict[str, Any] = {
        "runtime": runtime,
        "torch": torch.__version__,
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "batch_size": batch_size,
        "input_shape": [batch_size, *(int(s) for s in input_shape)],
        "precision": "fp32",
        "cpu": cpu_model(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timer": "wall: time.perf_counter_ns per call; cpu: time.thread_time_ns per call; median, 25/75th pct",
    }
    if runtime == "onnxruntime":
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["exporter"] = f"torch.onnx.export(dynamo=False), opset {ONNX_OPSET}"
        info["provider"] = "CPUExecutionProvider"
    return info


def summarize(wall_ms: np.ndarray, cpu_ms: np.ndarray, proto: dict[str, Any]) -> LatencyMeasurement:
    p25, median, p75 = np.percentile(wall_ms, [25, 50, 75])
    c25, c50, c75 = np.percentile(cpu_ms, [25, 50, 75])
    return LatencyMeasurement(
        float(median), float(p25), float(p75), int(wall_ms.size), proto, float(c50), float(c25), float(c75)
    )


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 32, 32),
    runtime: Runtime = "torch",
    *,
    warmup: int = 10,
    repeats: int = 50,
    threads: int = 1,
    batch_size: int = 1,
) -> LatencyMeasurement:
    """Latency of one inference of ``model`` on this machine's CPU (ms), with its protocol.

    ``input_shape`` is the shape of one sample, without the batch dimension (``(3, 32, 32)`` for NB201).
    """
    _check(runtime, warmup, repeats, threads, batch_size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = make_runner(model, input_shape, runtime, threads=threads, batch_size=batch_size)
        wall, cpu = time_runner(run, warmup=warmup, repeats=repeats)
    finally:
        torch.set_num_threads(previous_threads)
    proto = protocol(
        runtime, threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size, input_shape=input_shape
    )
    return summarize(wall, cpu, proto)
