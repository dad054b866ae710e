"""Models: the built-in models of the compression benchmarks (CIFAR ResNets with pretrained weights, LeNet-5,
row-MNIST LSTM/GRU) and their data, a user's model file loaded safely, and checks of what a model accepts.

Names are imported on first use (module ``__getattr__``): ``import devicefit.models`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

if TYPE_CHECKING:
    from .evaluate import (
        DataSource,
        LabelledImages,
        TensorData,
        calibration_batch,
        cifar10_split,
        data_for,
        evaluate_accuracy,
        evaluate_onnx_accuracy,
        held_out_indices,
        load_images,
        mnist_split,
    )
    from .files import (
        MODEL_FILE_KINDS,
        STATE_DICT_KEYS,
        check_model_input,
        load_model_file,
        model_file_kind,
        proxy_limitation,
    )
    from .zoo import (
        MODEL_NAMES,
        MODELS,
        ModelSpec,
        describe,
        get_model,
        load_factory,
        load_weights,
        model_spec,
    )

_EXPORTS: dict[str, str] = {
    "DataSource": "evaluate",
    "LabelledImages": "evaluate",
    "TensorData": "evaluate",
    "calibration_batch": "evaluate",
    "cifar10_split": "evaluate",
    "data_for": "evaluate",
    "evaluate_accuracy": "evaluate",
    "evaluate_onnx_accuracy": "evaluate",
    "held_out_indices": "evaluate",
    "load_images": "evaluate",
    "mnist_split": "evaluate",
    "MODEL_NAMES": "zoo",
    "MODELS": "zoo",
    "ModelSpec": "zoo",
    "describe": "zoo",
    "get_model": "zoo",
    "load_factory": "zoo",
    "load_weights": "zoo",
    "model_spec": "zoo",
    "MODEL_FILE_KINDS": "files",
    "STATE_DICT_KEYS": "files",
    "check_model_input": "files",
    "load_model_file": "files",
    "model_file_kind": "files",
    "proxy_limitation": "files",
}

__all__ = [
    "MODELS",
    "MODEL_FILE_KINDS",
    "MODEL_NAMES",
    "STATE_DICT_KEYS",
    "DataSource",
    "LabelledImages",
    "ModelSpec",
    "TensorData",
    "calibration_batch",
    "check_model_input",
    "cifar10_split",
    "data_for",
    "describe",
    "evaluate_accuracy",
    "evaluate_onnx_accuracy",
    "get_model",
    "held_out_indices",
    "load_factory",
    "load_images",
    "load_model_file",
    "load_weights",
    "mnist_split",
    "model_file_kind",
    "model_spec",
    "proxy_limitation",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
