"""Int8: ONNX Runtime static quantization, PyTorch fake quantization, and the Int8 policy action."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from devicefit.compression import apply_policy, replay_history
from devicefit.compression.int8 import (
    Int8Config,
    fake_quantize,
    int8_layers,
    layer_nodes,
    quantize_onnx_int8,
    quantize_weight,
    strip_fake_quant,
)
from devicefit.compression.policy import Int8, Policy
from devicefit.errors import InputError
from devicefit.hardware.measure import detect_onnx_precision, export_onnx

from .conftest import need_file


class SmallNet(nn.Module):
    """Conv-BN-ReLU, a residual block, pooling and a classifier: the ops of a CIFAR ResNet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.block(x))
        return self.fc(x.mean((2, 3)))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding matters
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


def inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def run_onnx(data: bytes, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])


def weight_initializers(data: bytes) -> dict[int, int]:
    """Element type -> number of elements of the initializers that are Conv/Gemm weights or their quantized form."""
    proto = onnx.load_model_from_string(data)
    counts: dict[int, int] = {}
    for t in proto.graph.initializer:
        if len(t.dims) >= 2:
            counts[t.data_type] = counts.get(t.data_type, 0) + int(np.prod(t.dims))
    return counts


def test_int8_onnx_runs_and_agrees_with_fake_quant():
    net = small_net()
    calibration, test = inputs(128, 1), inputs(64, 2)
    fp32 = export_onnx(net, torch.zeros(1, 3, 16, 16))
    int8 = quantize_onnx_int8(fp32, calibration)
    assert detect_onnx_precision(onnx.load_model_from_string(int8)) == "int8"
    q = run_onnx(int8, test)
    fq_model = fake_quantize(net, calibration.split(32))
    with torch.no_grad():
        fq, ref = fq_model(test).numpy(), net(test).numpy()
    assert (q.argmax(1) == fq.argmax(1)).mean() >= 0.95
    scale = ref.std()
    assert np.sqrt(((q - fq) ** 2).mean()) < 0.05 * scale
    # the int8 model is not the float one, and fake quantization models part of its error (the weights' grid
    # here: 0.87 of the float model's distance; 0.996 without weight quantization)
    assert np.abs(q - ref).max() > 1e-4
    assert np.sqrt(((q - fq) ** 2).mean()) < 0.95 * np.sqrt(((q - ref) ** 2).mean())


def test_pretrained_resnet20_int8_agrees_with_fake_quant(data_root):
    need_file(data_root, "models/resnet-cifar10/resnet20-12fca82f.th")
    need_file(data_root, "images/cifar10_train_aug_960.npz")
    from devicefit.models import get_model
    from devicefit.models.evaluate import calibration_batch

    model = get_model("resnet20", pretrained=True, data_dir=data_root).eval()
    calibration = calibration_batch("cifar10", 256, data_root)
    test = calibration_batch("cifar10", 960, data_root)[-96:]  # not among the calibration images
    q = run_onnx(quantize_onnx_int8(export_onnx(model, torch.zeros(1, 3, 32, 32)), calibration), test)
    with torch.no_grad():
        fq = fake_quantize(model, calibration.split(64))(test).numpy()
        ref = model(test).numpy()
    assert (q.argmax(1) == fq.argmax(1)).mean() >= 0.97
    assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.95
    # closer to the int8 model than the float model is: 0.78 of its distance (0.92 without the input
    # fake-quantization, 0.95 without the weights')
    assert np.sqrt(((q - fq) ** 2).mean()) < 0.85 * np.sqrt(((q - ref) ** 2).mean())


def test_weights_are_stored_as_int8_and_the_file_is_about_4x_smaller():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    weights = sum(m.weight.numel() for m in mlp if isinstance(m, nn.Linear))
    fp32 = export_onnx(mlp, torch.zeros(1, 256))
    int8 = quantize_onnx_int8(fp32, torch.randn(64, 256))
    assert weight_initializers(fp32) == {onnx.TensorProto.FLOAT: weights}
    assert weight_initializers(int8) == {onnx.TensorProto.INT8: weights}
    assert 3.5 < len(fp32) / len(int8) < 4.1


def test_per_tensor_and_selected_nodes():
    net = small_net()
    fp32 = export_onnx(net, torch.zeros(1, 3, 16, 16))
    nodes = layer_nodes(fp32, ["block.2", "fc"])
    assert nodes == {"block.2": ["/block/block.2/Conv"], "fc": ["/fc/Gemm"]}
    only = quantize_onnx_int8(fp32, inputs(32, 1), nodes_to_quantize=nodes["fc"], per_channel=False)
    proto = onnx.load_model_from_string(only)
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert [tuple(t.dims) for t in int8_weights] == [(10, 16)]  # only the classifier's weight
    scales = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("_scale")]
    assert all(s.size == 1 for s in scales)  # per tensor everywhere
    but_fc = onnx.load_model_from_string(quantize_onnx_int8(fp32, inputs(32, 1), nodes_to_exclude=nodes["fc"]))
    assert sorted(tuple(t.dims) for t in but_fc.graph.initializer if t.data_type == onnx.TensorProto.INT8
                  and len(t.dims) > 1) == [(16, 3, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3)]
    assert "Relu" not in {n.op_type for n in but_fc.graph.node}  # folded into the quantized convolutions
    per_channel = onnx.load_model_from_string(quantize_onnx_int8(fp32, inputs(32, 1)))
    assert any(numpy_helper.to_array(t).size == 16 for t in per_channel.graph.initializer
               if t.name.endswith("_scale"))


def test_percentile_calibration_clips_the_activation_range():
    net = small_net()
    fp32 = export_onnx(net, torch.zeros(1, 3, 16, 16))
    calibration = inputs(256, 1)
    calibration[0, 0, 0, 0] = 40.0  # one outlier among 196,608 values: beyond the 99.999th percentile
    minmax = onnx.load_model_from_string(quantize_onnx_int8(fp32, calibration, method="minmax"))
    percentile = onnx.load_model_from_string(quantize_onnx_int8(fp32, calibration, method="percentile"))

    def input_scale(proto: onnx.ModelProto) -> float:
        q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        return float(numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == q.input[1])))

    assert input_scale(minmax) == pytest.approx((40.0 - float(calibration.min())) / 255, rel=1e-5)
    assert input_scale(percentile) < 0.5 * input_scale(minmax)


def test_fake_quantize_puts_weights_on_the_int8_grid_and_leaves_the_model():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fq = fake_quantize(net, [inputs(16, 1)], layers=["conv1", "fc"])
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert set(int8_layers(fq)) == {"conv1", "fc"} and not int8_layers(net)
    for name in ("conv1", "fc"):
        w, q = before[f"{name}.weight"], fq.get_submodule(name).weight.detach()
        scale = w.abs().reshape(len(w), -1).amax(1) / 127
        steps = q.reshape(len(q), -1) / scale[:, None]
        assert torch.allclose(steps, steps.round(), atol=1e-3)
        assert steps.abs().max() <= 127.001
        assert steps.abs().amax(1).round().eq(127).all()  # the largest weight of each channel is +-127 steps
    assert torch.equal(fq.block[0].weight, net.block[0].weight)  # not named: untouched
    per_tensor = quantize_weight(before["fc.weight"], per_channel=False)
    assert len(torch.unique(per_tensor / (before["fc.weight"].abs().max() / 127)).round()) <= 255


def test_fake_quantize_input_ranges_come_from_the_calibration_batches():
    net = small_net()
    x = inputs(16, 1)
    mark = int8_layers(fake_quantize(net, x, layers=["conv1"]))["conv1"]
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert mark.input_scale == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert mark.input_zero_point == round(-lo / mark.input_scale)


def test_int8_policy_marks_layers_replays_and_skips_rnns():
    class WithRnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.rnn = nn.LSTM(8, 8, batch_first=True)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(torch.relu(self.conv(x)).mean(2).transpose(1, 2))
            return self.fc(out[:, -1])

    torch.manual_seed(0)
    net = WithRnn().eval()
    example = inputs(2, 0)
    data = [(inputs(16, i), torch.zeros(16, dtype=torch.long)) for i in range(3)]
    result = apply_policy(net, Policy({"conv": Int8(), "fc": Int8(per_channel=False), "rnn": Int8()}), example,
                          data=data)
    assert [s["module"] for s in result.skipped] == ["rnn"] and "LSTM" in result.skipped[0]["reason"]
    marks = int8_layers(result.model)
    assert set(marks) == {"conv", "fc"} and not marks["fc"].per_channel
    details = {h["module"]: h["details"] for h in result.history}
    assert details["conv"]["input_scale"] == marks["conv"].input_scale > 0
    assert 0 < details["conv"]["weight_relative_error"] < 0.02
    assert result.cost["int8_params"] == 8 * 3 * 9 + 8 + 4 * 8 + 4
    replayed = replay_history(net, result.history)  # without the data: the recorded ranges
    with torch.no_grad():
        assert torch.equal(replayed(example), result.model(example))
    stripped = strip_fake_quant(result.model)
    assert not int8_layers(stripped) and not stripped.conv._forward_pre_hooks


def test_int8_policy_without_data_quantizes_weights_only():
    net = small_net()
    result = apply_policy(net, Policy({"conv1": Int8()}), inputs(2, 0))
    mark = int8_layers(result.model)["conv1"]
    assert mark.input_scale is None and not result.model.conv1._forward_pre_hooks


def test_layer_nodes_follow_the_exporters_scope_names():
    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.seq = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.seq(self.conv(x))

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)  # folded: weight renamed
            self.a = nn.Sequential(Inner(), Inner())
            self.b = nn.ModuleList([Inner()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b[0](self.a(self.bn(self.stem(x))))

    model = Outer().eval()
    data = export_onnx(model, torch.zeros(1, 3, 8, 8))
    names = ["stem", "a.0.conv", "a.1.seq.1.1", "b.0.seq.0"]
    assert layer_nodes(data, names) == {"stem": ["/stem/Conv"], "a.0.conv": ["/a/a.0/conv/Conv"],
                                        "a.1.seq.1.1": ["/a/a.1/seq/seq.1/seq.1.1/Conv"],
                                        "b.0.seq.0": ["/b.0/seq/seq.0/Conv"]}
    with pytest.raises(InputError, match="no ONNX node computes layer"):
        layer_nodes(data, ["bn"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda fp32: quantize_onnx_int8(fp32, (inputs(8, 0) * 50).to(torch.uint8)), "float model inputs"),
        (lambda fp32: quantize_onnx_int8(fp32, torch.randn(8, 3, 8, 8)), "do not fit the model's input"),
        (lambda fp32: quantize_onnx_int8(fp32, inputs(8, 0), method="entropy"), "calibration method"),
        (lambda fp32: quantize_onnx_int8(fp32, inputs(8, 0), nodes_to_quantize=["/nope/Conv"]), "'/nope/Conv'"),
        (lambda fp32: quantize_onnx_int8(b"not onnx", inputs(8, 0)), "not an ONNX model"),
        (lambda fp32: quantize_onnx_int8(fp32, []), "empty"),
        (lambda fp32: quantize_onnx_int8(fp32, "images.npz"), "float inputs"),
        (lambda fp32: quantize_onnx_int8(fp32, inputs(8, 0) * float("nan")), "NaN"),
        (lambda fp32: quantize_onnx_int8("/no/such/model.onnx", inputs(8, 0)), "does not exist"),
        (lambda fp32: quantize_onnx_int8(fp32, inputs(8, 0), per_channel="yes"), "per_channel"),
        (lambda fp32: fake_quantize(small_net(), inputs(8, 0), layers=["bn1"]), "BatchNorm2d"),
        (lambda fp32: fake_quantize(small_net(), inputs(8, 0), layers=["nope"]), "no layer 'nope'"),
        (lambda fp32: fake_quantize(small_net(), torch.randn(8, 5, 16, 16)), "calibration batch 0"),
        (lambda fp32: Int8Config(None), "calibration is required"),
        (lambda fp32: Int8Config(inputs(8, 0), method="kl"), "calibration method"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    fp32 = export_onnx(small_net(), torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputError, match=message):
        call(fp32)


def test_rnn_layers_are_refused_by_name():
    net = nn.Sequential(nn.LSTM(4, 4))
    with pytest.raises(InputError, match="no recurrent kernel"):
        fake_quantize(net, torch.randn(2, 3, 4), layers=["0"])


def test_a_fixed_batch_needs_enough_samples():
    fp32 = export_onnx(small_net(), torch.zeros(4, 3, 16, 16))  # the exporter fixes the batch at 4
    assert detect_onnx_precision(onnx.load_model_from_string(quantize_onnx_int8(fp32, inputs(6, 0)))) == "int8"
    with pytest.raises(InputError, match="fixed batch of 4"):
        quantize_onnx_int8(fp32, inputs(3, 0))
