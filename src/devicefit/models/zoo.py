"""Built-in models of the compression benchmarks, by name, and models from a user's ``module:factory``.

| name | data set | input | parameters | pretrained weights in the data directory |
|---|---|---|---|---|
| resnet20, resnet56 | CIFAR-10 | 3x32x32 | 269,722 / 853,018 | ``models/resnet-cifar10/resnet{20,56}-*.th`` |
| resnet32, resnet44, resnet110 | CIFAR-10 | 3x32x32 | 464,154 / 658,586 / 1,727,962 | none |
| lenet5 | MNIST | 1x28x28 | 431,080 | none: ``devicefit.compression.train_mnist_model`` |
| lstm, gru | MNIST (28 rows of 28) | 1x28x28 | 82,186 / 61,962 | none: ``train_mnist_model`` |

MNIST here is the official *test* set split in two (``train8k``: its first 8,000 images, ``test2k``: its last
2,000; see :mod:`devicefit.models.evaluate`), the only MNIST in the data directory. Weights load through
:func:`devicefit.models.load_model_file` (weights only, prefixes unwrapped, every key and shape checked).
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
    """A built-in model: its data set (``cifar10`` or ``mnist``), input shape of one sample, parameter count,
    where its pretrained weights are (relative to the data directory) and what it is."""

    name: str
    dataset: str
    input_shape: tuple[int, ...]
    parameters: int
    build: Callable[[], nn.Module]
    weights: str | None = None
    description: str = ""


def _resnet(depth: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .cifar_resnet import cifar_resnet

        return cifar_resnet(depth)

    return build


def _lenet() -> nn.Module:
    from .lenet import LeNet5

    return LeNet5()


def _rnn(cell: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from .rnn import RowRNN

        return RowRNN(cell)

    return build


_WEIGHTS = {20: "models/resnet-cifar10/resnet20-12fca82f.th", 56: "models/resnet-cifar10/resnet56-4bfd9763.th"}
_RESNET_PARAMETERS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
MODELS: dict[str, ModelSpec] = {
    **{f"resnet{d}": ModelSpec(f"resnet{d}", "cifar10", (3, 32, 32), n, _resnet(d), _WEIGHTS.get(d),
                               f"CIFAR ResNet-{d} (He et al. 2016, option-A shortcuts, akamaster's layout)")
       for d, n in _RESNET_PARAMETERS.items()},
    "lenet5": ModelSpec("lenet5", "mnist", (1, 28, 28), 431_080, _lenet, None,
                        "LeNet-5-Caffe (conv 20 - pool - conv 50 - pool - fc 500 - fc 10)"),
    "lstm": ModelSpec("lstm", "mnist", (1, 28, 28), 82_186, _rnn("lstm"), None,
                      "LSTM(128) over the 28 image rows, linear head on the last hidden state"),
    "gru": ModelSpec("gru", "mnist", (1, 28, 28), 61_962, _rnn("gru"), None,
                     "GRU(128) over the 28 image rows, linear head on the last hidden state"),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
_DATA = {"cifar10": "CIFAR-10 (JPEG train 50,000 / test 10,000)",
         "mnist": "MNIST (train8k / test2k: the first 8,000 / last 2,000 of the official test set)"}



def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a built-in model."""
    if name not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}; built-in models: {', '.join(MODEL_NAMES)} (or give "
                               "'package.module:factory')")
    return MODELS[name]


def describe(name: str) -> str:
    """One line on a built-in model: what it is, its input, data set and parameters, and its weights."""
    spec = model_spec(name)
    weights = "pretrained weights in the data directory" if spec.weights else "no pretrained weights"
    return (f"{name}: {spec.description}; input {'x'.join(map(str, spec.input_shape))}; {_DATA[spec.dataset]}; "
            f"{spec.parameters:,} parameters; {weights}")


def get_model(name: str, *, pretrained: bool = False, data_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """A built-in model, freshly initialised, or with its pretrained weights from the data directory."""
    spec = model_spec(name)
    model = spec.build()
    if pretrained:
        if spec.weights is None:
            have = ", ".join(n for n, s in MODELS.items() if s.weights)
            how = "train it with train_mnist_model" if spec.dataset == "mnist" else "train it"
            raise InputError(f"no pretrained weights for {name!r} in the data directory (there are for {have}); "
                             f"{how}, or load your own with load_weights")
        from ..data import data_file

        load_weights(model, data_file(spec.weights, data_dir))
    return model


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, trust: bool = False) -> nn.Module:
    """Load a weights file into ``model`` in place and return it: a state dict, also inside a checkpoint dict
    (``state_dict``/``model_state_dict``/``model``) or with ``module.`` prefixes; every key and shape is checked
    and a mismatch names the keys (:func:`devicefit.models.load_model_file`)."""
    from .files import load_model_file

    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    loaded = load_model_file(Path(path), trust=trust, architecture=model)
    if loaded is not model:
        raise InputError(f"{str(path)!r} holds a whole model, not weights for {type(model).__name__}; load it "
                         "with load_model_file")
    return model


def load_factory(spec: str) -> nn.Module:
    """The model that ``package.module:factory`` builds, the factory called with no arguments (the CLI's MODEL
    argument). A malformed spec, a module that does not import, a missing attribute, a factory that fails or
    does not return an ``nn.Module`` raise :class:`InputError`."""
    from .files import build_from_factory

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InputError(f"model must be a built-in name ({', '.join(MODEL_NAMES)}) or 'package.module:factory', "
                         f"got {spec!r}")
    return build_from_factory(spec)
