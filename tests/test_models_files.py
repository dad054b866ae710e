"""devicefit.models: a user's model file loaded safely (TorchScript, torch.export, state dicts, trusted
pickles), malicious pickles refused without running them, and check_model_input."""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devicefit.errors import InputError
from devicefit.hardware import count_model, eval_mode
from devicefit.models import (
    MODEL_FILE_KINDS,
    check_model_input,
    load_model_file,
    model_file_kind,
    proxy_limitation,
)
from devicefit.proxies import compute_proxies

from .conftest import need_file

SHAPE = (3, 8, 8)


def tiny_net() -> nn.Module:
    """The architecture factory of the state-dict tests ("tests.test_models_files:tiny_net")."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def not_a_module() -> str:
    return "a string"


def _trained_like() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_net()
    with torch.no_grad():  # non-trivial BN statistics, so that a wrong load would show
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    model = _trained_like()
    x = torch.randn(2, *SHAPE)
    f = {k: d / name for k, name in {
        "script": "script.pt", "traced": "traced.bin", "export": "program.pt2", "state": "weights.pt",
        "legacy": "legacy.pth", "checkpoint": "checkpoint.tar", "full": "model.pt",
    }.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(model), f["script"])
        torch.jit.save(torch.jit.trace(model, x), f["traced"])
    torch.export.save(torch.export.export(model, (x,)), f["export"])
    torch.save(model.state_dict(), f["state"])
    torch.save(model.state_dict(), f["legacy"], _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, f["checkpoint"])
    torch.save(model, f["full"])
    return f


def _same_function(loaded: nn.Module, batch: int = 2) -> None:
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), eval_mode(loaded):  # a state dict goes into a fresh architecture, in train mode
        np.testing.assert_allclose(loaded(x).numpy(), _trained_like()(x).numpy(), rtol=1e-5, atol=1e-6)


def test_every_format_is_recognised_by_content_and_loads_without_trust_except_full_pickles(
    files: dict[str, Path],
) -> None:
    kinds = {k: model_file_kind(p) for k, p in files.items()}
    assert kinds == {"script": "torchscript", "traced": "torchscript", "export": "exported_program",
                     "state": "state_dict", "legacy": "state_dict", "checkpoint": "state_dict",
                     "full": "full_pickle"}
    assert set(kinds.values()) == set(MODEL_FILE_KINDS)
    for key in ("script", "traced", "export"):
        _same_function(load_model_file(files[key]))  # no trust, no architecture
    for key in ("state", "legacy", "checkpoint"):
        _same_function(load_model_file(files[key], architecture=tiny_net()))
        _same_function(load_model_file(files[key], architecture="tests.test_models_files:tiny_net"))
    with pytest.raises(InputError, match="full pickle.*trust=True.*--trust-model-file"):
        load_model_file(files["full"])
    _same_function(load_model_file(files["full"], trust=True))


def test_malicious_pickles_are_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Opener:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = {
        "torch_save.pt": lambda p: torch.save(Shell(), p),
        "in_checkpoint.pt": lambda p: torch.save({"state_dict": tiny_net().state_dict(), "hook": Opener()}, p),
        "legacy.pth": lambda p: torch.save(Opener(), p, _use_new_zipfile_serialization=False),
        "plain.pkl": lambda p: p.write_bytes(pickle.dumps(Shell(), protocol=2)),
    }
    for name, write in evil.items():
        path = tmp_path / name
        write(path)
        assert model_file_kind(path) == "full_pickle"
        with pytest.raises(InputError, match=r"full pickle.*\((posix\.system|nt\.system|io\.open)\)"):
            load_model_file(path, architecture=tiny_net())
        assert not marker.exists(), name


def test_trusted_pickle_of_a_checkpoint_dict_is_loaded_as_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "with_args.pt"
    # argparse.Namespace is not allowed by weights_only: the file needs trust although it holds weights.
    torch.save({"args": argparse.Namespace(lr=0.1), "model_state_dict": _trained_like().state_dict()}, path)
    assert model_file_kind(path) == "full_pickle"
    with pytest.raises(InputError, match="argparse.Namespace"):
        load_model_file(path, architecture=tiny_net())
    _same_function(load_model_file(path, trust=True, architecture=tiny_net()))


def test_state_dicts_need_a_fitting_architecture(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="state dict \\(9 tensors\\) but no architecture"):
        load_model_file(files["state"])
    wider = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 5), nn.Linear(5, 2))
    with pytest.raises(InputError) as info:
        load_model_file(files["checkpoint"], architecture=wider)
    message = str(info.value)
    assert "missing keys 2 (6.weight, 6.bias)" in message
    assert "0.weight: file (4, 3, 3, 3) vs model (6, 3, 3, 3)" in message and "weights.pt" not in message
    for bad, match in (("tiny_net", "'package.module:factory'"),
                       ("no_such_package_xyz:f", "could not be imported"),
                       ("tests.test_models_files:missing", "has no attribute"),
                       ("tests.test_models_files:not_a_module", "returned a str"),
                       (42, "nn.Module or a 'package.module:factory'")):
        with pytest.raises(InputError, match=match):
            load_model_file(files["state"], architecture=bad)  # type: ignore[arg-type]
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "no_weights.pt")
    with pytest.raises(InputError, match="neither a state dict.*'state_dict', 'model_state_dict', 'model'"):
        load_model_file(tmp_path / "no_weights.pt", architecture=tiny_net())


def test_bad_files_are_input_errors_naming_the_path(tmp_path: Path, files: dict[str, Path]) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    data = files["state"].read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    cases = {
        "missing.pt": "not found",
        "": "is not a file",  # the directory itself
        "empty.pt": "is empty",
        "text.pt": "neither a zip archive nor a pickle",
        "truncated.pt": "truncated or corrupt zip",
        "list.pt": "holds a list",
        "tensor.pt": "holds a Tensor",
    }
    for name, match in cases.items():
        path = tmp_path / name
        for call in (model_file_kind, load_model_file):
            with pytest.raises(InputError, match=match) as info:
                call(path)
            assert str(path) in str(info.value)


def test_pretrained_cifar_resnet20_checkpoint_loads_and_classifies(data_root: Path) -> None:
    path = need_file(data_root, "models/resnet-cifar10/resnet20-12fca82f.th")
    images = np.load(need_file(data_root, "images/cifar10_train_aug_960.npz"))
    assert model_file_kind(path) == "state_dict"  # {"best_prec1", "state_dict"}, keys "module.*", CUDA tensors
    model = load_model_file(path, architecture=ResNet20())
    assert count_model(model, (3, 32, 32)).params == 269_722
    x = torch.from_numpy(images["x"][:128]).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        accuracy = float((model.eval()(x).argmax(1).numpy() == images["y"][:128]).mean())
    assert accuracy > 0.9  # training images: the pretrained weights are really in place (random: ~0.1)


def test_check_model_input_turns_any_forward_failure_into_an_input_error() -> None:
    class Picky(nn.Module):
        def __init__(self, exc: type[Exception]) -> None:
            super().__init__()
            self.exc = exc
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] != 4:
                raise self.exc(f"wants 4 features, got {x.shape[-1]}")
            return self.fc(x)

    for exc in (ValueError, AssertionError, IndexError, RuntimeError, KeyError):
        model = Picky(exc).train()
        with pytest.raises(InputError, match=r"inputs of shape \(2, 5\).*wants 4 features"):
            check_model_input(model, (5,))
        assert model.training  # mode restored after the failure
    model = Picky(ValueError).train()
    out = check_model_input(model, (4,), batch=3, expect_logits=True)
    assert out.shape == (3, 3) and model.training
    with pytest.raises(InputError, match=r"logits of shape \(2, classes\).*\(2, 4, 8, 8\)"):
        check_model_input(nn.Conv2d(3, 4, 3, padding=1), SHAPE, expect_logits=True)
    with pytest.raises(InputError, match="returned a tuple"):
        check_model_input(nn.LSTM(4, 2, batch_first=True), (3, 4), expect_logits=True)
    assert check_model_input(nn.Linear(4, 2).half(), (4,)).dtype == torch.float16
    for bad in ((), (3, 0), "abc"):
        with pytest.raises(InputError, match="input_shape"):
            check_model_input(nn.Linear(4, 2), bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="batch"):
        check_model_input(nn.Linear(4, 2), (4,), batch=0)


def test_what_scripted_and_exported_modules_allow_the_proxies(files: dict[str, Path]) -> None:
    """The measured facts behind proxy_limitation (module docstring): a torch upgrade that changes them
    fails here."""
    x = torch.randn(2, *SHAPE)
    y = torch.tensor([0, 1])
    assert proxy_limitation("state_dict") is None and proxy_limitation("full_pickle") is None
    scripted = load_model_file(files["script"])
    assert "RecursiveScriptModule" in proxy_limitation("torchscript")  # type: ignore[operator]
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        scripted.register_forward_hook(lambda *a: None)
    scripted(x).sum().backward()
    assert all(p.grad is not None for p in scripted.parameters())  # parameter gradients work
    copy.deepcopy(scripted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synflow's .double() reads .grad of scripted parameters
        scores = compute_proxies(scripted, x, y, ["params", "flops", "jacob_cov", "snip", "synflow"]).results
    assert scores["params"].ok and scores["flops"].ok and scores["jacob_cov"].ok
    assert not scores["snip"].ok and not scores["synflow"].ok

    exported = load_model_file(files["export"])
    assert "NotImplementedError" in proxy_limitation("exported_program")  # type: ignore[operator]
    with pytest.raises(NotImplementedError):
        exported.train()
    assert count_model(exported, SHAPE, batch_size=2).macs == count_model(_trained_like(), SHAPE).macs * 2
    with pytest.raises(InputError, match=r"inputs of shape \(3, 3, 8, 8\)"):
        check_model_input(exported, SHAPE, batch=3)  # shapes are those of the export
    scores = compute_proxies(exported, x, y, ["params", "snip"]).results
    assert scores["params"].ok and not scores["snip"].ok
    with pytest.raises(InputError, match="not one of"):
        proxy_limitation("onnx")


# ---------------------------------------------------------------------------------------------------------------
# The CIFAR ResNet-20 of akamaster/pytorch_resnet_cifar10 (option-A shortcuts), for its pretrained weights.


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pad = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if not self.pad else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(*[_Block(16, 16, 1) for _ in range(3)])
        self.layer2 = nn.Sequential(_Block(16, 32, 2), _Block(32, 32, 1), _Block(32, 32, 1))
        self.layer3 = nn.Sequential(_Block(32, 64, 2), _Block(64, 64, 1), _Block(64, 64, 1))
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))
