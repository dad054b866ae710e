"""Built-in models: they build and run, the pretrained CIFAR ResNets load and classify, data parts are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.errors import InputError
from devicefit.models import MODEL_NAMES, evaluate_accuracy, get_model, load_factory, load_images, load_weights

from .conftest import need_file


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_and_classifies_its_input(name: str) -> None:
    from devicefit.models import model_spec

    spec = model_spec(name)
    model = get_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *spec.input_shape))
    assert out.shape == (2, 10)


def test_parameter_counts_are_the_papers() -> None:
    count = {n: sum(p.numel() for p in get_model(n).parameters()) for n in ("resnet20", "resnet56", "lenet5")}
    assert count == {"resnet20": 269_722, "resnet56": 853_018, "lenet5": 431_080}


def test_pretrained_resnet20_classifies_the_jpeg_test_images(data_root: Path) -> None:
    need_file(data_root, "models/resnet-cifar10/resnet20-12fca82f.th")
    need_file(data_root, "images/cifar10-jpg.tar.gz")
    model = get_model("resnet20", pretrained=True, data_dir=data_root)
    test = load_images("cifar10", "test", data_root)
    assert len(test) == 10_000
    acc = evaluate_accuracy(model, test, limit=500)
    assert 74.0 < acc < 90.0  # ~81 % on these JPEGs (91.7 % on the original pixels)
    untrained = evaluate_accuracy(get_model("resnet20"), test, limit=500)
    assert untrained < 20.0


def test_bad_models_and_weights_fail_clearly(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(InputError, match="unknown model 'resnet21'"):
        get_model("resnet21")
    with pytest.raises(InputError, match="no pretrained weights for 'lenet5'.*resnet20"):
        get_model("lenet5", pretrained=True, data_dir=data_root)
    with pytest.raises(InputError, match="none.pt' not found"):
        load_weights(get_model("lenet5"), tmp_path / "none.pt")
    torch.save(get_model("resnet20").state_dict(), tmp_path / "r20.pt")
    with pytest.raises(InputError, match="does not fit.*shape mismatches|does not fit.*missing keys"):
        load_weights(get_model("resnet56"), tmp_path / "r20.pt")
    loaded = load_weights(get_model("resnet20"), tmp_path / "r20.pt")
    assert isinstance(loaded, torch.nn.Module)
    for spec, message in (("nocolon", "package.module:factory"), ("math:nothing", "no attribute"),
                          ("no_such_module_xyz:f", "could not be imported"), ("math:pi", "not callable"),
                          ("builtins:dict", "expected an nn.Module")):
        with pytest.raises(InputError, match=message):
            load_factory(spec)
    assert isinstance(load_factory("devicefit.models.mnist_models:LeNet5"), torch.nn.Module)


def test_mnist_parts_are_the_two_disjoint_slices_of_the_test_set(data_root: Path) -> None:
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    train, test = load_images("mnist", "train8k", data_root), load_images("mnist", "test2k", data_root)
    assert (len(train), len(test)) == (8000, 2000) and "first 8,000" in train.description
    assert set(np.unique(train.y)) == set(range(10))
    x, _ = next(train.batches(64))
    assert x.shape == (64, 1, 28, 28) and abs(float(x.mean())) < 0.5  # normalised
    with pytest.raises(InputError, match="train8k, test2k"):
        load_images("mnist", "train", data_root)
    assert len(test.subset(100)) == 100 and np.array_equal(test.subset(100).y, test.subset(100).y)
    with pytest.raises(InputError, match="limit"):
        test.subset(0)
