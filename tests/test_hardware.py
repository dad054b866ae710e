"""devicefit.hardware: counting against hand counts, latency measurement, the device registry;
devicefit.study.pareto and the demo job (small samples)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.hardware import (
    LOCAL_DEVICE,
    LatencyMeasurement,
    MeasurementProtocol,
    count_model,
    list_devices,
    measure_latency,
)
from devicefit.hardware.measure import RUNTIMES, make_runner
from devicefit.spaces import build_nb201
from devicefit.study.pareto import hypervolume_2d, pareto_front, pareto_mask

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _tiny() -> nn.Module:
    # Conv 3->8, 3x3, pad 1 on 5x6 input -> 8x5x6; Linear 240 -> 7.
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 6, 7))


def test_counts_match_hand_count() -> None:
    conv_macs = (8 * 5 * 6) * (3 * 3 * 3)  # output elements x (c_in * k * k)
    linear_macs = 240 * 7
    params = (8 * 3 * 3 * 3 + 8) + (240 * 7 + 7)
    cost = count_model(_tiny(), (3, 5, 6))
    assert cost.macs == conv_macs + linear_macs
    assert cost.flops == 2 * cost.macs
    assert cost.params == params
    assert (cost.model_bytes_fp32, cost.model_bytes_fp16, cost.model_bytes_int8) == (4 * params, 2 * params, params)
    # Peak: input (3*5*6) + conv output (240) + ReLU output (240) floats alive together; Flatten is a view.
    assert cost.peak_activation_bytes == 4 * (3 * 5 * 6 + 240 + 240)
    assert cost.input_shape == (1, 3, 5, 6)
    batched = count_model(_tiny(), (3, 5, 6), batch_size=3)
    assert batched.macs == 3 * cost.macs and batched.params == cost.params


def test_nb201_all_conv3x3_macs_match_hand_count() -> None:
    c, hw = 16, 32 * 32
    stem = c * 3 * 9 * hw
    cells = 3 * 5 * 6 * (c * c * 9 * hw)  # every stage: 5 cells x 6 conv3x3 edges, same MACs per stage
    reduction = 2 * ((2 * c * c * 9 + 2 * c * 2 * c * 9 + c * 2 * c) * hw // 4)  # conv_a, conv_b, 1x1 shortcut
    classifier = 64 * 10
    cost = count_model(build_nb201(ALL_CONV3))
    assert cost.macs == stem + cells + reduction + classifier  # 220,119,680


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_rnn_macs_match_hand_count(cell: str) -> None:
    """Each step multiplies the input by W_ih and the state by W_hh, for every sequence of the batch (the fused
    CPU LSTM needs devicefit's own formula; a GRU runs as matrix products)."""
    steps, batch, features, hidden, gates = 7, 3, 5, 6, 4 if cell == "LSTM" else 3
    rnn = getattr(nn, cell)(features, hidden, batch_first=True)
    cost = count_model(rnn, (steps, features), batch_size=batch)
    assert cost.macs == steps * batch * gates * hidden * (features + hidden)


def test_count_model_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        count_model(_tiny(), (3, 5, 6), batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        count_model(_tiny(), (3, 0, 6))


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_measure_latency_returns_positive_numbers_with_protocol(runtime: str) -> None:
    threads_before = torch.get_num_threads()
    m = measure_latency(_tiny(), (3, 5, 6), runtime, warmup=1, repeats=5, threads=1)  # type: ignore[arg-type]
    assert torch.get_num_threads() == threads_before
    assert all(math.isfinite(v) and v > 0 for v in (m.p25_ms, m.median_ms, m.p75_ms))
    assert m.p25_ms <= m.median_ms <= m.p75_ms
    assert m.cpu_p25_ms <= m.cpu_median_ms <= m.cpu_p75_ms and m.cpu_median_ms > 0
    assert m.samples == 5
    p = m.protocol
    assert isinstance(p, MeasurementProtocol)
    assert (p.runtime, p.threads, p.warmup, p.repeats, p.batch_size) == (runtime, 1, 1, 5, 1)
    assert p.input_shape == (1, 3, 5, 6) and p.cpu and p.date_utc
    assert (p.precision, p.source, p.torch) == ("fp32", "nn.Module", torch.__version__)
    if runtime == "onnxruntime":
        assert p.onnxruntime and "opset" in p.exporter and p.provider == "CPUExecutionProvider"
    else:
        assert p.onnxruntime is None and p.exporter is None and p.provider is None
    d = json.loads(json.dumps(m.to_dict()))  # JSON-able, and the old protocol keys are all still there
    assert {"runtime", "torch", "threads", "warmup", "repeats", "batch_size", "input_shape", "precision", "cpu",
            "date_utc", "timer"} <= set(d["protocol"])
    assert d["protocol"]["input_shape"] == [1, 3, 5, 6]
    assert MeasurementProtocol.from_dict(d["protocol"]) == p
    assert LatencyMeasurement.from_dict(d) == m


def test_onnx_export_computes_the_same_function() -> None:
    model = build_nb201("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")
    torch.manual_seed(0)
    for mod in model.modules():  # non-trivial BN statistics so that folding matters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    expected = make_runner(model, (3, 32, 32), "torch")().numpy()
    got = make_runner(model, (3, 32, 32), "onnxruntime")()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_measure_latency_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="runtime 'tvm'"):
        measure_latency(_tiny(), (3, 5, 6), "tvm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(_tiny(), (3, 5, 6), repeats=0)


def test_devices_without_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    devices = list_devices()
    assert [d.name for d in devices] == [LOCAL_DEVICE]
    with pytest.raises(ValueError, match="does not exist"):
        list_devices("/nonexistent/devicefit-data")


def test_devices_with_data_dir(data_root: Path) -> None:
    devices = {d.name: d for d in list_devices(data_root)}
    assert LOCAL_DEVICE in devices
    tables = [d for d in devices.values() if d.name != LOCAL_DEVICE]
    assert tables and all(d.cells > 0 and d.source for d in tables)
    latbench = [d for d in tables if d.source == "latbench"]
    # Every LatBench file lacks at least the 341 disconnected cells.
    assert all(d.cells <= 15_625 - 341 for d in latbench)


def test_pareto_front_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    cost, value = rng.random(60), rng.random(60)
    front = pareto_front(cost, value)
    brute = [i for i in range(60) if not any(
        cost[j] <= cost[i] and value[j] >= value[i] and (cost[j] < cost[i] or value[j] > value[i]) for j in range(60))]
    assert sorted(front.tolist()) == brute
    assert np.all(np.diff(cost[front]) >= 0) and np.all(np.diff(value[front]) > 0)
    mask = pareto_mask(np.column_stack([cost, value]), (False, True))
    assert sorted(np.flatnonzero(mask).tolist()) == brute


def test_hypervolume_and_bad_input() -> None:
    # Points (1, 1) and (2, 2), reference (3, 0): 1x1 + 1x2.
    assert hypervolume_2d([1, 2, 2.5], [1, 2, 0.5], ref_cost=3, ref_value=0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="finite"):
        pareto_front([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------------------------------
# ONNX models, precision, the typed protocol, errors

from dataclasses import replace  # noqa: E402

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from devicefit.errors import InputError  # noqa: E402
from devicefit.hardware import (  # noqa: E402
    count_nonzero_params,
    detect_module_precision,
    detect_onnx_precision,
    eval_mode,
    export_onnx,
    weight_bytes,
)
from devicefit.hardware.counting import count_macs  # noqa: E402


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader protocol: a few random inputs."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter([{"input": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny conv net as ONNX: fp32 with a dynamic batch, fp32 with a fixed batch, and int8 made by
    onnxruntime.quantization (static QDQ with calibration, and dynamic)."""
    import logging

    from onnxruntime.quantization import quantize_dynamic, quantize_static

    d = tmp_path_factory.mktemp("onnx")
    model = _conv_net()
    files = {"fp32": d / "fp32.onnx", "fixed": d / "fixed.onnx", "static": d / "s8.onnx", "dynamic": d / "d8.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 6, 6),), str(files["fp32"]), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "batch"}})
    files["fixed"].write_bytes(export_onnx(model, torch.randn(1, 3, 6, 6)))
    logging.disable(logging.WARNING)  # "please run pre-processing before quantization"
    try:
        quantize_static(str(files["fp32"]), str(files["static"]), _Calibration())
        quantize_dynamic(str(files["fp32"]), str(files["dynamic"]))
    finally:
        logging.disable(logging.NOTSET)
    return files


def _weight_only_int8() -> onnx.ModelProto:
    """X (N, 8) @ dequantize(W int8 (8, 4)): int8 weights, float activations and arithmetic."""
    w = numpy_helper.from_array(np.arange(-16, 16, dtype=np.int8).reshape(8, 4), "w_int8")
    scale = numpy_helper.from_array(np.array(0.05, dtype=np.float32), "w_scale")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zero")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w_int8", "w_scale", "w_zero"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "weight_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[w, scale, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_onnx_path_bytes_and_proto_are_measured_with_the_input_shape_of_the_graph(onnx_files: dict[str, Path]) -> None:
    by_path = measure_latency(onnx_files["fp32"], warmup=1, repeats=3)  # runtime defaults to onnxruntime
    p = by_path.protocol
    assert (p.runtime, p.precision, p.input_shape, p.source) == ("onnxruntime", "fp32", (1, 3, 6, 6),
                                                                  "onnx file fp32.onnx")
    assert p.torch is None and p.exporter is None and p.onnxruntime and p.provider == "CPUExecutionProvider"
    assert by_path.median_ms > 0 and by_path.samples == 3
    by_bytes = measure_latency(onnx_files["fp32"].read_bytes(), runtime="onnxruntime", batch_size=3, warmup=0,
                               repeats=2)
    assert by_bytes.protocol.input_shape == (3, 3, 6, 6) and by_bytes.protocol.source == "onnx bytes"
    by_proto = measure_latency(onnx.load(str(onnx_files["fixed"])), warmup=0, repeats=2)
    assert by_proto.protocol.input_shape == (1, 3, 6, 6) and by_proto.protocol.source == "onnx ModelProto"
    explicit = measure_latency(str(onnx_files["fp32"]), (3, 6, 6), warmup=0, repeats=2)
    assert explicit.protocol.input_shape == (1, 3, 6, 6)


def test_int8_onnx_models_from_onnxruntime_quantization_are_measured_as_int8(onnx_files: dict[str, Path]) -> None:
    ops = {name: {n.op_type for n in onnx.load(str(onnx_files[name])).graph.node} for name in ("static", "dynamic")}
    assert "QuantizeLinear" in ops["static"] and "ConvInteger" in ops["dynamic"]  # really quantized graphs
    for name in ("static", "dynamic"):
        m = measure_latency(onnx_files[name], warmup=1, repeats=3)
        assert m.protocol.precision == "int8" and m.protocol.input_shape == (1, 3, 6, 6) and m.median_ms > 0
    assert detect_onnx_precision(onnx.load(str(onnx_files["fp32"]))) == "fp32"


def _qdq_matmul(x_zero_type: int | None, w_const_float: bool) -> onnx.ModelProto:
    """x -> [QuantizeLinear -> DequantizeLinear] -> MatMul with W: int16 activations when ``x_zero_type``
    is INT16 (no activation quantization when None); W stored as float and quantized by a QuantizeLinear
    node when ``w_const_float`` (constant-folded at load), else stored int8."""
    nodes, inits = [], [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s")]
    x = "x"
    if x_zero_type is not None:
        inits.append(helper.make_tensor("zx", x_zero_type, [], [0]))
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "zx"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "zx"], ["xd"])]
        x = "xd"
    inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8), "zw"))
    if w_const_float:
        inits.append(numpy_helper.from_array(np.ones((8, 4), dtype=np.float32), "w_float"))
        nodes.append(helper.make_node("QuantizeLinear", ["w_float", "s", "zw"], ["w_int"]))
    else:
        inits.append(numpy_helper.from_array(np.ones((8, 4), dtype=np.int8), "w_int"))
    nodes += [helper.make_node("DequantizeLinear", ["w_int", "s", "zw"], ["w"]), helper.make_node("MatMul", [x, "w"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_weight_only_int8_and_fp16_onnx_precision() -> None:
    weight_only = _weight_only_int8()
    assert detect_onnx_precision(weight_only) == "int8-weights"
    assert detect_onnx_precision(_qdq_matmul(None, w_const_float=True)) == "int8-weights"
    assert detect_onnx_precision(_qdq_matmul(TensorProto.INT16, w_const_float=False)) == "int16"  # the widest
    assert detect_onnx_precision(_qdq_matmul(TensorProto.INT8, w_const_float=True)) == "int8"
    m = measure_latency(weight_only.SerializeToString(), batch_size=2, warmup=0, repeats=2)
    assert m.protocol.precision == "int8-weights" and m.protocol.input_shape == (2, 8)
    half = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)).half()
    data = export_onnx(half, torch.randn(1, 8, dtype=torch.float16))
    assert detect_onnx_precision(onnx.load_model_from_string(data)) == "fp16"
    assert measure_latency(data, warmup=0, repeats=2).protocol.precision == "fp16"


def test_module_precision_is_detected_from_its_parameters() -> None:
    half = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)).half()
    m = measure_latency(half, (8,), "torch", warmup=0, repeats=2)  # fp16 inputs, fp16 arithmetic
    assert m.protocol.precision == "fp16"
    assert measure_latency(half, (8,), "onnxruntime", warmup=0, repeats=2).protocol.precision == "fp16"
    assert detect_module_precision(nn.Linear(2, 2).to(torch.bfloat16)) == "bf16"
    assert detect_module_precision(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).half())) == "mixed"
    assert detect_module_precision(nn.ReLU()) == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(8, 4)), {nn.Linear}, torch.qint8)
    assert detect_module_precision(quantized) == "int8"
    assert measure_latency(quantized, (8,), warmup=0, repeats=2).protocol.precision == "int8"


def test_protocol_round_trip_is_strict_and_fingerprint_leaves_out_the_date() -> None:
    p = measure_latency(_tiny(), (3, 5, 6), warmup=0, repeats=2).protocol
    d = p.to_dict()
    assert MeasurementProtocol.from_dict(json.loads(json.dumps(d))) == p
    later = replace(p, date_utc="2099-01-01T00:00:00Z")
    assert later.fingerprint() == p.fingerprint() and "date_utc" not in p.fingerprint()
    assert replace(p, threads=2).fingerprint() != p.fingerprint()
    with pytest.raises(InputError, match="missing \\['source'\\]"):
        MeasurementProtocol.from_dict({k: v for k, v in d.items() if k != "source"})
    with pytest.raises(InputError, match="unknown \\['color'\\]"):
        MeasurementProtocol.from_dict({**d, "color": "red"})
    with pytest.raises(InputError, match="'threads' must be an integer"):
        MeasurementProtocol.from_dict({**d, "threads": "1"})
    with pytest.raises(InputError, match="precision 'int3'"):
        MeasurementProtocol.from_dict({**d, "precision": "int3"})
    with pytest.raises(InputError, match="mapping"):
        MeasurementProtocol.from_dict([1, 2])  # type: ignore[arg-type]


class _Picky(nn.Module):
    """Raises a non-RuntimeError on any input that is not (N, 4), as user models do."""

    def __init__(self, exc: type[Exception]) -> None:
        super().__init__()
        self.exc = exc
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (4,):
            raise self.exc(f"expected 4 features, got {tuple(x.shape)}")
        return self.fc(x)


def test_measure_latency_rejects_bad_models_and_inputs(tmp_path: Path, onnx_files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="not an ONNX model"):
        measure_latency(b"definitely not a protobuf \xff\xfe", warmup=0, repeats=1)
    with pytest.raises(InputError, match="not an ONNX model"):
        measure_latency(b"", warmup=0, repeats=1)
    with pytest.raises(InputError, match="does not exist"):
        measure_latency(tmp_path / "missing.onnx", warmup=0, repeats=1)
    with pytest.raises(InputError, match="not a file"):
        measure_latency(tmp_path, warmup=0, repeats=1)
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InputError, match="could not be read as ONNX.*load_model_file"):
        measure_latency(tmp_path / "weights.pt", warmup=0, repeats=1)
    with pytest.raises(InputError, match="runtime 'torch' cannot run an ONNX model"):
        measure_latency(onnx_files["fp32"], runtime="torch", warmup=0, repeats=1)
    with pytest.raises(InputError, match="input_shape is required"):
        measure_latency(_tiny(), warmup=0, repeats=1)
    with pytest.raises(InputError, match="torch.nn.Module or an ONNX model"):
        measure_latency(42, warmup=0, repeats=1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="fixed batch of 1.*batch_size=2"):
        measure_latency(onnx_files["fixed"], batch_size=2, warmup=0, repeats=1)
    with pytest.raises(InputError, match="does not fit ONNX input 'input'"):
        measure_latency(onnx_files["fp32"], (3, 7, 7), warmup=0, repeats=1)
    for exc in (ValueError, AssertionError, IndexError):
        for runtime in RUNTIMES:
            with pytest.raises(InputError, match=r"shape \(1, 3, 5, 6\).*expected 4 features"):
                measure_latency(_Picky(exc), (3, 5, 6), runtime, warmup=0, repeats=1)  # type: ignore[arg-type]
    assert measure_latency(_Picky(ValueError), (4,), warmup=0, repeats=1).median_ms > 0


def test_dynamic_onnx_dimensions_need_an_input_shape(tmp_path: Path) -> None:
    path = tmp_path / "any_size.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Conv2d(3, 2, 3), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(InputError, match=r"ONNX input 'image' has dynamic dimensions \(n, 3, h, w\)"):
        measure_latency(path, warmup=0, repeats=1)
    assert measure_latency(path, (3, 9, 10), batch_size=2, warmup=0, repeats=1).protocol.input_shape == (2, 3, 9, 10)


def test_measure_and_count_restore_modes_and_accept_scripted_and_exported_modules() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    for runtime in RUNTIMES:
        measure_latency(model, (4,), runtime, warmup=0, repeats=1)  # type: ignore[arg-type]
        assert all(m.training for m in model.modules())
    count_model(model, (4,))
    assert all(m.training for m in model.modules())
    conv = _tiny()
    example = torch.randn(1, 3, 5, 6)
    exported = torch.export.export(conv, (example,)).module()
    with pytest.raises(NotImplementedError):
        exported.eval()  # its mode is fixed at export ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(conv)
    for other in (exported, scripted):
        assert count_model(other, (3, 5, 6)).macs == count_model(conv, (3, 5, 6)).macs
        for runtime in RUNTIMES:
            m = measure_latency(other, (3, 5, 6), runtime, warmup=0, repeats=1)  # type: ignore[arg-type]
            assert m.median_ms > 0 and m.protocol.precision == "fp32"
    with pytest.raises(NotImplementedError):
        exported.train()  # ... and stays so after eval_mode
    with eval_mode(exported):
        assert exported.eval() is exported
    with pytest.raises(InputError, match=r"GraphModule\) failed on an input of shape \(2, 3, 5, 6\)"):
        measure_latency(exported, (3, 5, 6), batch_size=2, warmup=0, repeats=1)


def test_counting_turns_forward_failures_into_input_errors() -> None:
    for exc in (ValueError, AssertionError, IndexError):
        with pytest.raises(InputError, match=r"shape \(1, 3\).*expected 4 features"):
            count_model(_Picky(exc), (3,))
    with pytest.raises(InputError, match=r"shape \(2, 5\)"):
        count_macs(_Picky(ValueError), torch.zeros(2, 5))
    with pytest.raises(InputError, match="torch.nn.Module"):
        count_model("not a model", (3,))  # type: ignore[arg-type]


def test_nonzero_params_follow_pruning_masks_and_parametrizations() -> None:
    from torch.nn.utils import parametrize, prune

    model = _tiny()  # conv 216 + 8, linear 1680 + 7 parameters, none zero
    dense = count_model(model, (3, 5, 6))
    assert dense.nonzero_params == dense.params == 1911
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # 108 of 216 conv weights masked to zero
    assert count_nonzero_params(model) == 1911 - 108
    pruned = count_model(model, (3, 5, 6))
    assert (pruned.params, pruned.nonzero_params) == (1911, 1911 - 108)

    class KeepFirstRow(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros_like(w)
            mask[0] = 1
            return w * mask

    linear = nn.Linear(5, 3)
    parametrize.register_parametrization(linear, "weight", KeepFirstRow())
    assert count_nonzero_params(linear) == 5 + 3  # one row of weights, and the bias
    assert weight_bytes(3, "int4") == 2 and weight_bytes(10, "bf16") == 20
    with pytest.raises(InputError, match="precision 'int3'"):
        weight_bytes(3, "int3")


def test_hardware_and_models_import_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, devicefit.hardware, devicefit.hardware.machine, devicefit.hardware.devices, devicefit.models; "
            "assert devicefit.hardware.cpu_model(); "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
