"""Export of compressed models and the measured before/after comparison (structure and figures, never timings)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from devicefit.compression import apply_policy
from devicefit.compression.export import (
    NO_GAIN,
    ModelFigures,
    RuntimeComparison,
    TimingProtocol,
    _notes,
    compare_models,
    export_compressed,
    tensor_sparse_bytes,
)
from devicefit.compression.int8 import Int8Config, int8_layers
from devicefit.compression.policy import Int8, Policy, Unstructured
from devicefit.errors import InputError
from devicefit.hardware.measure import LatencyMeasurement, protocol

FAST = TimingProtocol(warmup=1, rounds=2, repeats_per_round=3)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    with torch.no_grad():
        net[1].bias.uniform_(-0.1, 0.1)  # no exact zeros in the dense model
    return net


EXAMPLE = torch.zeros(1, 3, 16, 16)


def masked(sparsity: float = 0.8) -> tuple[nn.Module, nn.Module]:
    original = small_cnn()
    policy = Policy({"0": Unstructured(sparsity), "3": Unstructured(sparsity)})
    return original, apply_policy(original, policy, EXAMPLE).model


def test_export_finalizes_masks_on_a_copy(tmp_path):
    _, compressed = masked()
    path = tmp_path / "model.onnx"
    size = export_compressed(compressed, EXAMPLE, path)
    assert size == path.stat().st_size
    assert hasattr(compressed[3], "weight_mask")  # the model given is unchanged
    proto = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    w3 = weights["3.weight"]
    assert np.count_nonzero(w3) == int(compressed[3].weight_mask.sum()) == round(0.2 * w3.size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], compressed(x).numpy(), atol=1e-5)


def int8_weight_shapes(proto: onnx.ModelProto) -> list[tuple[int, ...]]:
    """Shapes of the int8 weight matrices and kernels (not the per-channel zero points)."""
    return sorted(tuple(t.dims) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
                  and len(t.dims) >= 2)


def test_export_int8_quantizes_the_marked_layers_only(tmp_path):
    original = small_cnn()
    calibration = [torch.randn(16, 3, 16, 16) for _ in range(2)]
    marked = apply_policy(original, Policy({"3": Int8()}), EXAMPLE, data=[(x, None) for x in calibration]).model
    with pytest.raises(InputError, match="marked int8"):
        export_compressed(marked, EXAMPLE, tmp_path / "m.onnx")
    export_compressed(marked, EXAMPLE, tmp_path / "m.onnx", int8=Int8Config(calibration))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert int8_weight_shapes(proto) == [(16, 16, 3, 3)]
    assert int8_layers(marked) == {"3": int8_layers(marked)["3"]}  # marks kept on the model given
    with pytest.raises(InputError, match="per_channel=False"):
        export_compressed(marked, EXAMPLE, tmp_path / "m.onnx", int8=Int8Config(calibration, per_channel=False))
    every = tmp_path / "all.onnx"
    export_compressed(original, EXAMPLE, every, int8=Int8Config(calibration))
    assert int8_weight_shapes(onnx.load(str(every))) == [(10, 16), (16, 3, 3, 3), (16, 16, 3, 3)]


def test_compare_masks_counts_and_measures_both_runtimes_alike():
    original, compressed = masked(0.8)
    c = compare_models(original, compressed, EXAMPLE, protocol=FAST)
    o, k = c.original, c.compressed
    assert o.params == k.params and o.macs == k.macs and o.bytes_fp32_dense == k.bytes_fp32_dense
    assert o.nonzero_params == o.params
    pruned = int(compressed[0].weight_mask.numel() - compressed[0].weight_mask.sum()) + \
        int(compressed[3].weight_mask.numel() - compressed[3].weight_mask.sum())
    assert k.nonzero_params == o.params - pruned
    assert k.bytes_sparse < 0.5 * o.bytes_sparse and o.bytes_sparse == o.bytes_fp32_dense
    assert k.precision == o.precision == "fp32"
    assert [r.runtime for r in c.runtimes] == ["onnxruntime", "torch"] and not c.skipped
    for r in c.runtimes:
        po, pc = r.original.protocol, r.compressed.protocol
        assert (po.threads, po.warmup, po.repeats, po.input_shape) == (pc.threads, pc.warmup, pc.repeats,
                                                                         pc.input_shape) == (1, 1, 6, (1, 3, 16, 16))
        assert r.speedup == pytest.approx(r.original.median_ms / r.compressed.median_ms)
        assert r.speedup_low <= r.speedup_high
    doc = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert doc["compressed"]["nonzero_params"] == k.nonzero_params
    text = c.to_markdown()
    assert "| non-zero parameters |" in text and "onnxruntime" in text and "alternating rounds" in text


def test_compare_int8_runs_in_onnx_runtime_only():
    original = small_cnn()
    c = compare_models(original, original, EXAMPLE, protocol=FAST,
                       int8=Int8Config([torch.randn(16, 3, 16, 16)]))
    assert [r.runtime for r in c.runtimes] == ["onnxruntime"]
    assert c.skipped[0][0] == "torch" and "ONNX only" in c.skipped[0][1]
    assert c.compressed.precision == "int8" and c.original.precision == "fp32"
    assert c.runtimes[0].compressed.protocol.precision == "int8"
    assert c.compressed.int8_layers == ("0", "3", "7")
    params = c.compressed.params
    assert c.compressed.bytes_sparse < c.original.bytes_sparse - 2.5 * params  # weights at 1 byte, not 4


def latency(ms: float) -> LatencyMeasurement:
    proto = protocol("onnxruntime", threads=1, warmup=1, repeats=6, batch_size=1, input_shape=(3, 16, 16))
    return LatencyMeasurement(ms, ms, ms, 6, proto, ms, ms, ms)


def figures(macs: int, params: int, nonzero: int, onnx_bytes: int, sparse: int) -> ModelFigures:
    return ModelFigures(params, nonzero, macs, 4 * params, onnx_bytes, sparse, "fp32")


def runtime(speedup: float) -> RuntimeComparison:
    return RuntimeComparison("onnxruntime", latency(1.0), latency(1.0 / speedup), speedup, speedup, speedup, speedup)


def test_notes_are_derived_from_the_figures():
    dense = figures(1000, 100, 100, 420, 400)
    zeros = figures(1000, 100, 20, 420, 130)
    notes = _notes(dense, zeros, [runtime(1.0)])
    assert "no measurable speed-up" in notes[0] and "80% of the weights are zero" in notes[0]
    assert "130 bytes" in notes[1]
    fewer = figures(500, 60, 60, 260, 240)
    notes = _notes(dense, fewer, [runtime(0.98)])
    assert "50% fewer MACs did not buy time" in notes[0] and "ONNX file 1.62x smaller" in notes[1]
    faster = _notes(dense, fewer, [runtime(2.0)])
    assert faster[0].startswith("ONNX Runtime: 2.00x faster")
    assert "slower" in _notes(dense, dense, [runtime(1 / 1.5)])[0]
    assert "computes as much" in _notes(dense, dense, [runtime(1.0)])[0]
    assert NO_GAIN > 1


def test_sparse_bytes_pick_the_smallest_encoding():
    t = torch.zeros(4, 4)
    t[0, 1] = t[3, 2] = 1.0
    assert tensor_sparse_bytes(t, 4) == 2 + 2 * 4  # bitmap: 16 bits + 2 values (CSR 2 * 6 + 5 * 4 = 32)
    big = torch.zeros(1000, 1000)
    big[5, :10] = 1.0
    assert tensor_sparse_bytes(big, 4) == 10 * (4 + 2) + 1001 * 4  # CSR
    assert tensor_sparse_bytes(torch.ones(8, 8), 1) == 64  # dense int8
    wide = torch.zeros(1, 70000)
    wide[0, 0] = 1.0
    assert tensor_sparse_bytes(wide, 4) == 4 + 4 + 2 * 4  # 32-bit column index past 65,536 columns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtimes": ("tensorflow",)}, "runtimes must be"),
        ({"runtimes": "onnxruntime"}, "runtimes must be"),
        ({"runtimes": ()}, "runtimes must be"),
        ({"protocol": {"threads": 1}}, "TimingProtocol"),
        ({"int8": torch.randn(4, 3, 16, 16)}, "Int8Config"),
    ],
)
def test_compare_refuses_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        compare_models(small_cnn(), small_cnn(), EXAMPLE, **kwargs)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="example_input"):
        export_compressed(small_cnn(), [1, 2], tmp_path / "m.onnx")
    with pytest.raises(InputError, match="is a folder"):
        export_compressed(small_cnn(), EXAMPLE, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        export_compressed(small_cnn(), EXAMPLE, tmp_path / "no" / "m.onnx")
    with pytest.raises(InputError, match="could not be exported"):
        export_compressed(small_cnn(), torch.zeros(1, 5, 16, 16), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="compressed must be"):
        compare_models(small_cnn(), "model.onnx", EXAMPLE)
    with pytest.raises(InputError, match="TimingProtocol.rounds"):
        TimingProtocol(rounds=0)
