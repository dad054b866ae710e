"""Built-in models: they build and run, the pretrained CIFAR ResNets load and classify, the data parts are right,
user factories and weight files fail clearly, and the option-A shortcut exports to ONNX."""

from __future__ import annotations

import copy
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.compression import train_mnist_model
from devicefit.errors import InputError
from devicefit.models import (
    MODEL_NAMES,
    TensorData,
    calibration_batch,
    cifar10_split,
    data_for,
    describe,
    evaluate_accuracy,
    get_model,
    load_factory,
    load_images,
    load_weights,
    mnist_split,
    model_spec,
)

from .conftest import need_file

R20 = "models/resnet-cifar10/resnet20-12fca82f.th"
R56 = "models/resnet-cifar10/resnet56-4bfd9763.th"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_classifies_its_input_and_has_its_parameters(name: str) -> None:
    spec = model_spec(name)
    model = get_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *spec.input_shape))
    assert out.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == spec.parameters
    assert isinstance(copy.deepcopy(model), type(model)) and pickle.loads(pickle.dumps(model)) is not None
    assert f"{spec.parameters:,} parameters" in describe(name)


def test_parameter_counts_are_the_references() -> None:
    count = {n: sum(p.numel() for p in get_model(n).parameters()) for n in ("resnet20", "resnet56", "lenet5")}
    assert count == {"resnet20": 269_722, "resnet56": 853_018, "lenet5": 431_080}  # akamaster; Deep Compression
    rnn = get_model("lstm").rnn
    assert rnn.weight_ih_l0.shape == (512, 28) and rnn.weight_hh_l0.shape == (512, 128)
    assert get_model("gru").rnn.weight_hh_l0.shape == (384, 128)


def test_option_a_shortcut_pads_zero_channels_and_exports_to_onnx(tmp_path: Path) -> None:
    import onnxruntime as ort

    from devicefit.models.cifar_resnet import PadShortcut

    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(8)(x)
    assert y.shape == (2, 32, 4, 4) and torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()
    torch.manual_seed(0)
    model = get_model("resnet20").eval()
    inp = torch.randn(2, 3, 32, 32)
    torch.onnx.export(model, (inp,), tmp_path / "r20.onnx", dynamo=False, input_names=["x"])
    out = ort.InferenceSession(str(tmp_path / "r20.onnx")).run(None, {"x": inp.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(inp).numpy(), rtol=1e-4, atol=1e-4)


def test_pretrained_resnet20_classifies_the_jpeg_test_images(data_root: Path) -> None:
    need_file(data_root, R20)
    need_file(data_root, "images/cifar10-jpg.tar.gz")
    model = get_model("resnet20", pretrained=True, data_dir=data_root)
    raw = torch.load(data_root / R20, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.layer3[2].conv2.weight, raw["module.layer3.2.conv2.weight"])
    test = cifar10_split("test", data_root)
    assert len(test) == 10_000 and test is load_images("cifar10", "test", data_root)  # decoded once
    acc = evaluate_accuracy(model, test, limit=500)
    assert 75.0 < acc < 90.0  # ~81 % on these JPEGs (91.7 % on the original pixels)
    assert evaluate_accuracy(get_model("resnet20"), test, limit=500) < 20.0
    assert model.training  # evaluate_accuracy put it back in the mode it had


def test_pretrained_resnet56_loads_and_classifies(data_root: Path) -> None:
    need_file(data_root, R56)
    need_file(data_root, "images/cifar10-jpg.tar.gz")
    model = get_model("resnet56", pretrained=True, data_dir=data_root)
    assert evaluate_accuracy(model, data_for("resnet56", "test", data_root), limit=200) > 75.0


def test_bad_models_and_weights_fail_clearly(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(InputError, match="unknown model 'resnet21'"):
        get_model("resnet21")
    with pytest.raises(InputError, match="no pretrained weights for 'lenet5'.*resnet20, resnet56.*train_mnist_model"):
        get_model("lenet5", pretrained=True, data_dir=data_root)
    with pytest.raises(InputError, match="none.pt' not found"):
        load_weights(get_model("lenet5"), tmp_path / "none.pt")
    torch.save(get_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(InputError, match=r"missing keys \d+ \(layer1.3.conv1.weight"):
        load_weights(get_model("resnet56"), tmp_path / "r20.pt")
    state = get_model("lenet5").state_dict()
    state["fc1.weight"] = torch.zeros(400, 800)
    torch.save(state, tmp_path / "lenet.pt")
    with pytest.raises(InputError, match=r"shape mismatches 1 \(fc1.weight: file \(400, 800\) vs model \(500, 800\)"):
        load_weights(get_model("lenet5"), tmp_path / "lenet.pt")
    assert isinstance(load_weights(get_model("resnet20"), tmp_path / "r20.pt"), torch.nn.Module)
    for spec, message in (("nocolon", "package.module:factory"), ("a:b:c", "package.module:factory"),
                          ("math:nothing", "no attribute"), ("no_such_module_xyz:f", "could not be imported"),
                          ("math:pi", "not callable"), ("builtins:dict", "expected an nn.Module"),
                          ("devicefit.models.cifar_resnet:cifar_resnet", "failed when called with no arguments")):
        with pytest.raises(InputError, match=message):
            load_factory(spec)
    assert isinstance(load_factory("devicefit.models.lenet:LeNet5"), torch.nn.Module)
    assert load_factory("devicefit.models.rnn:gru_classifier").cell == "gru"


def test_mnist_parts_are_the_two_disjoint_slices_of_the_test_set(data_root: Path) -> None:
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    train, test = mnist_split("train8k", data_root), mnist_split("test2k", data_root)
    assert (len(train), len(test)) == (8000, 2000) and "first 8,000" in train.description
    assert "last 2,000 of the official test set" in test.description and "official test set" in describe("lstm")
    digests = {hashlib.sha1(im.tobytes()).digest() for im in train.x}
    assert not any(hashlib.sha1(im.tobytes()).digest() in digests for im in test.x)
    assert set(np.unique(train.y)) == set(np.unique(test.y)) == set(range(10))
    x, y = next(train.batches(64))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5  # normalised
    assert data_for("gru", "train", data_root).part == "train8k"
    with pytest.raises(InputError, match="train8k.*test2k"):
        mnist_split("train", data_root)
    with pytest.raises(InputError, match="train8k, test2k"):
        load_images("mnist", "train", data_root)
    a, b = test.subset(100), test.subset(100)
    assert len(a) == 100 and np.array_equal(a.y, b.y) and np.array_equal(a.x, b.x)
    assert set(map(bytes, a.x)) <= set(map(bytes, test.subset(200).x))  # a larger slice extends a smaller one
    with pytest.raises(InputError, match="limit"):
        test.subset(0)


def test_calibration_batches(data_root: Path) -> None:
    need_file(data_root, "images/cifar10_train_aug_960.npz")
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    c = calibration_batch("cifar10", 64, data_root)
    assert c.shape == (64, 3, 32, 32) and abs(float(c.mean())) < 0.5
    m = calibration_batch("mnist", 32, data_root)
    assert m.shape == (32, 1, 28, 28)
    test = {bytes(im) for im in mnist_split("test2k", data_root).x}
    train_x = mnist_split("train8k", data_root).subset(32).x
    assert not any(bytes(im) in test for im in train_x)
    with pytest.raises(InputError, match="1..960"):
        calibration_batch("cifar10", 961, data_root)
    with pytest.raises(InputError, match="unknown data set 'imagenet'"):
        calibration_batch("imagenet", 8, data_root)


def test_evaluate_accuracy_counts_and_checks_its_inputs() -> None:
    x = torch.zeros(10, 3)
    x[:6, 0] = 1.0  # a "model" that predicts class 0 for the first 6 and class 1 for the rest
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
        model.bias.copy_(torch.tensor([0.0, 0.5]))
    model.train()
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert evaluate_accuracy(model, TensorData(x, y), batch_size=3) == pytest.approx(90.0)
    assert model.training  # mode restored
    with pytest.raises(InputError, match="DataSource"):
        evaluate_accuracy(model, [(x, y)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="logits"):
        evaluate_accuracy(torch.nn.Flatten(0), TensorData(x, y))


def test_train_mnist_model_trains_once_and_then_loads_the_cache(data_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    from devicefit.compression import train as training

    monkeypatch.setitem(training.MNIST_TRAINING, "lenet5", {"epochs": 0.05, "lr": 0.05, "batch_size": 64,
                                                      "augment": False})
    path = tmp_path / "cache" / "lenet5.pt"
    trained = train_mnist_model("lenet5", path, data_dir=data_root, progress=False)
    assert path.is_file() and evaluate_accuracy(trained, mnist_split("test2k", data_root), limit=500) > 30.0
    monkeypatch.setitem(training.MNIST_TRAINING, "lenet5", {"epochs": -1.0})  # would fail if it trained again
    cached = train_mnist_model("lenet5", path, data_dir=data_root, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(cached.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(InputError, match="trains lenet5, lstm, gru, not 'resnet20'"):
        train_mnist_model("resnet20", path)
