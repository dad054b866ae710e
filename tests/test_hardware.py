"""devicefit.hardware: counting against hand counts, latency measurement, the device registry;
devicefit.study.pareto and the demo job (small samples)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.hardware import LOCAL_DEVICE, count_model, list_devices, measure_latency
from devicefit.hardware.measure import make_runner
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
    assert (p["runtime"], p["threads"], p["warmup"], p["repeats"], p["batch_size"]) == (runtime, 1, 1, 5, 1)
    assert p["input_shape"] == [1, 3, 5, 6] and p["cpu"] and p["date_utc"]
    if runtime == "onnxruntime":
        assert p["onnxruntime"] and "opset" in p["exporter"]


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
