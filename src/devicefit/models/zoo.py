"""Built-in models of the compression benchmarks, by name, and models from a user's ``module:factory``.

| name | task | input | pretrained weights in the data directory |
|---|---|---|---|
| resnet20, resnet56 | CIFAR-10 | 3x32x32 | ``models/resnet-cifar10/resnet{20,56}-*.th`` (akamaster) |
| resnet32, resnet44, resnet110 | CIFAR-10 | 3x32x32 | none |
| lenet5, lstm, gru | MNIST | 1x28x28 | none: train them (:func:`devicefit.compression.finetune`) |

Weights load through :func:`devicefit.models.load_model_file` (weights only, prefixes unwrapped, every key
and shape checked).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import InputError, UnknownNameError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # "cifar10" or "mnist"
    input_shape: tuple[int, ...]
    build: Callable[[], nn.Module]
    weights: str | None = None  # relative to the data directory
    description: str = ""


def _resnet(depth: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .cifar_resnet import cifar_resnet

        return cifar_resnet(depth)

    return build


def _lenet() -> nn.Module:
    from .mnist_models import LeNet5

    return LeNet5()


def _rnn(cell: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .mnist_models import RowRNN

        return RowRNN(cell)

    return build


_WEIGHTS = {20: "models/resnet-cifar10/resnet20-12fca82f.th", 56: "models/resnet-cifar10/resnet56-4bfd9763.th"}
MODELS: dict[str, ModelSpec] = {
    **{f"resnet{d}": ModelSpec(f"resnet{d}", "cifar10", (3, 32, 32), _resnet(d), _WEIGHTS.get(d),
                               f"CIFAR ResNet-{d} (He et al. 2016, option-A shortcuts)")
       for d in (20, 32, 44, 56, 110)},
    "lenet5": ModelSpec("lenet5", "mnist", (1, 28, 28), _lenet, None, "LeNet-5-Caffe, 431K parameters"),
    "lstm": ModelSpec("lstm", "mnist", (1, 28, 28), _rnn("lstm"), None, "LSTM(128) over the 28 image rows"),
    "gru": ModelSpec("gru", "mnist", (1, 28, 28), _rnn("gru"), None, "GRU(128) over the 28 image rows"),
}
MODEL_NAMES = tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}; built-in models: {', '.join(MODEL_NAMES)} (or give "
                               "'package.module:factory')")
    return MODELS[name]


def get_model(name: str, *, pretrained: bool = False, data_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """A built-in model, freshly initialised or with its pretrained weights from the data directory."""
    spec = model_spec(name)
    model = spec.build()
    if pretrained:
        if spec.weights is None:
            have = ", ".join(n for n, s in MODELS.items() if s.weights)
            raise InputError(f"no pretrained weights for {name!r} in the data directory (there are for {have}); "
                             "train it, or load your own with load_weights")
        from ..data import data_file

        load_weights(model, data_file(spec.weights, data_dir))
    return model


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, trust: bool = False) -> nn.Module:
    """Load a weights file into ``model`` in place (state dicts, also inside checkpoints; every key checked)."""
    from .files import load_model_file

    loaded = load_model_file(Path(path), trust=trust, architecture=model)
    if loaded is not model:
        raise InputError(f"{str(path)!r} holds a whole model, not weights for {type(model).__name__}")
    return model


def load_factory(spec: str) -> nn.Module:
    """The model that ``package.module:factory`` builds (called with no arguments)."""
    from .files import _build_architecture

    return _build_architecture(spec, Path(spec), 0)
