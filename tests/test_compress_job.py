"""``devicefit compress`` / ``devicefit evaluate`` end to end on the pretrained ResNet-20 and a trained LeNet-5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from devicefit.cli import app

from .conftest import need_file

runner = CliRunner()


@pytest.fixture
def cifar(data_root: Path) -> Path:
    need_file(data_root, "models/resnet-cifar10/resnet20-12fca82f.th")
    need_file(data_root, "images/cifar10-jpg.tar.gz")
    return data_root


def test_lowrank_resnet20_end_to_end(cifar: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from devicefit.compression import Policy, replay_history
    from devicefit.models import get_model

    res = runner.invoke(app, ["compress", "resnet20", "--method", "lowrank", "--ratio", "0.5", "--out",
                              str(tmp_path), "--eval-limit", "300", "--data-dir", str(cifar), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    o, c = out["cost"]["original"], out["cost"]["compressed"]
    assert out["layers"] == 20 and not out["skipped"]  # 19 convolutions and the classifier
    assert c["macs"] < 0.6 * o["macs"] and c["params"] < 0.6 * o["params"] and o["params"] == 269_722
    assert 74 < out["accuracy"]["original"] < 90 and out["accuracy"]["compressed"] < out["accuracy"]["original"]
    assert out["latency_ms"]["compressed"] > 0 and out["speedup"] == pytest.approx(
        out["latency_ms"]["original"] / out["latency_ms"]["compressed"])
    # the saved policy + history + weights rebuild the compressed model, and its ONNX file runs
    policy = Policy.from_json(Path(out["files"]["policy"]).read_text())
    assert len(policy) == 20
    history = json.loads(Path(out["files"]["history"]).read_text())
    model = replay_history(get_model("resnet20"), history, torch.zeros(1, 3, 32, 32))
    model.load_state_dict(torch.load(out["files"]["weights"], weights_only=True))
    session = ort.InferenceSession(out["files"]["onnx"], providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-3
    assert "Compression of resnet20: lowrank, ratio 0.5" in Path(out["files"]["report"]).read_text()


def test_masks_save_no_time_and_the_report_says_so(cifar: Path, tmp_path: Path) -> None:
    import devicefit

    report = devicefit.compress("resnet20", method="unstructured", ratio=0.3, eval_limit=200, data_dir=cifar,
                                progress=False)
    o, c = report.cost["original"], report.cost["compressed"]
    assert c["params"] == o["params"] and c["macs"] == o["macs"]
    assert c["nonzero_params"] < 0.35 * o["params"]
    assert any("stored sparse" in n for n in report.notes)  # from the counts; the timing notes vary with load


def test_pattern_and_int8_with_per_layer_report(cifar: Path, tmp_path: Path) -> None:
    """Pattern masks keep 4 of 9 weights of every kept 3x3 kernel; int8 is measured on its ONNX model; both
    reports carry per-layer figures, and ``devicefit report`` renders a compress folder again."""
    import devicefit
    from devicefit.report import compress_report

    report = devicefit.compress("resnet20", method="pattern", ratio=0.5, eval_limit=100, data_dir=cifar,
                                progress=False, out=tmp_path / "pattern")
    rows = {r["layer"]: r for r in report.per_layer}
    assert len(rows) == 19 and "fc" not in rows  # every 3x3 convolution, not the classifier
    for r in rows.values():
        o, c = r["original"], r["compressed"]
        assert c["macs"] == o["macs"] and c["params"] == o["params"]
        kernels = o["params"] // 9
        assert 4 * round(0.5 * kernels) - 4 <= c["nonzero_params"] <= 4 * round(0.5 * kernels) + 4
    assert any("stored sparse" in n for n in report.notes)  # from the counts; the timing notes vary with load
    int8 = devicefit.compress("resnet20", method="int8", eval_limit=100, data_dir=cifar, progress=False)
    assert int8.ratio is None and int8.accuracy["deployed"] is not None
    assert abs(int8.accuracy["deployed"] - int8.accuracy["original"]) <= 3.0
    assert int8.cost["compressed"]["bytes"] < 0.3 * int8.cost["original"]["bytes"]
    assert int8.comparison["compressed"]["precision"] == "int8"
    paths = compress_report(int8, tmp_path / "int8-report")
    assert "int8 ONNX model in ONNX Runtime" in paths.markdown.read_text() and paths.figures
    res = runner.invoke(app, ["report", str(tmp_path / "pattern"), "--json"])
    assert res.exit_code == 0, res.output
    page = Path(json.loads(res.output)["html"]).read_text()
    assert "<svg" in page and "layer3.2.conv2" in page and "pattern connectivity=0.5" in page


def test_evaluate_and_bad_input(cifar: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["evaluate", "resnet20", "--limit", "200", "--data-dir", str(cifar), "--json"])
    assert res.exit_code == 0, res.output
    assert 70 < json.loads(res.output)["accuracy"] < 92
    for args, message in ((["compress", "resnet20", "--method", "lowrank", "--ratio", "0", "--out", str(tmp_path)],
                           "ratio is the fraction kept"),
                          (["compress", "resnet20", "--method", "lowrank", "--ratio", "1.5", "--out", str(tmp_path)],
                           "number in (0, 1]"),
                          (["compress", "resnet20", "--method", "channel", "--out", str(tmp_path)], "needs a ratio"),
                          (["compress", "resnet20", "--method", "int8", "--ratio", "0.5", "--out", str(tmp_path)],
                           "int8 takes no ratio"),
                          (["compress", "resnet20", "--method", "int8", "--finetune-epochs", "1", "--out",
                            str(tmp_path)], "post-training"),
                          (["report", str(tmp_path)], "holds no compress_report.json"),
                          (["compress", "resnet21", "--method", "lowrank", "--ratio", "0.5", "--out", str(tmp_path)],
                           "unknown model 'resnet21'"),
                          (["compress", "lenet5", "--method", "lowrank", "--ratio", "0.5", "--out", str(tmp_path)],
                           "give --weights"),
                          (["compress", "resnet20", "--method", "lowrank", "--ratio", "0.5", "--out", str(tmp_path),
                            "--distill"], "give finetune_epochs"),
                          (["compress", "resnet20", "--method", "lowrank", "--ratio", "0.5", "--out", str(tmp_path),
                            "--noise", "0.1"], "give finetune_epochs"),
                          (["evaluate", "resnet20", "--weights", str(tmp_path / "none.pt")], "none.pt' not found"),
                          (["evaluate", "mypkg.models:build"], "give --weights and --data")):
        res = runner.invoke(app, [*args, "--data-dir", str(cifar)])
        assert res.exit_code == 2 and message in res.output, (args, res.output)


def test_your_own_model_and_data(tmp_path: Path) -> None:
    """No data directory: an nn.Module with a (train, test) pair of data sources is compressed, recovered and
    measured; int8 is calibrated on the first training inputs."""
    import devicefit

    from .toy_compress import image_data, tiny_cnn

    train, test = image_data(128), image_data(64)
    report = devicefit.compress(tiny_cnn(), method="channel", ratio=0.5, data=(train, test), finetune_epochs=1,
                                progress=False, out=tmp_path / "c")
    assert report.cost["compressed"]["params"] < report.cost["original"]["params"]
    assert report.accuracy["recovered"] is not None and report.data == test.description
    assert (tmp_path / "c" / "compressed.onnx").exists()
    int8 = devicefit.compress(tiny_cnn(), method="int8", data=(train, test), progress=False)
    assert int8.accuracy["deployed"] is not None and int8.comparison["compressed"]["precision"] == "int8"
    with pytest.raises(Exception, match="differ in shape"):
        devicefit.compress(tiny_cnn(), method="lowrank", ratio=0.5, data=(train, _resized(test)), progress=False)


def _resized(data):  # type: ignore[no-untyped-def]
    from devicefit.models import TensorData

    return TensorData(data.x[:, :, :4, :4], data.y, "smaller images")


def test_bits_method_takes_k_over_32_and_no_recovery() -> None:
    from torch import nn

    import devicefit
    from devicefit.compression import WeightBits, method_action
    from devicefit.errors import InputError

    assert method_action("bits", 0.125) == WeightBits(bits=4)
    assert method_action("bits", 2 / 32) == WeightBits(bits=2)
    for bad in (0.1, 1 / 32, 0.5):
        with pytest.raises(InputError, match="ratio must be k / 32"):
            method_action("bits", bad)
    from devicefit.models import TensorData

    data = TensorData(torch.randn(8, 4), torch.zeros(8, dtype=torch.int64))
    with pytest.raises(InputError, match="bits is post-training"):
        devicefit.compress(nn.Sequential(nn.Linear(4, 2)), method="bits", ratio=0.25, finetune_epochs=1,
                           data=(data, data))
