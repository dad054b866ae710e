"""The data the built-in models are trained, calibrated and tested on, in batches, and top-1 accuracy.

- CIFAR-10 (:func:`cifar10_split`): the 50,000 training and 10,000 test images of ``images/cifar10-jpg.tar.gz``
  (JPEG, quality about 75: the pretrained ResNet-20 scores about 81 % here against 91.7 % on the original
  pixels, so compare relative figures), normalised as the CIFAR ResNets expect
  (:data:`devicefit.models.cifar_resnet.INPUT_NORMALIZATION`); training augmentation is the standard random
  crop (4-pixel zero padding) and horizontal flip.
- MNIST (:func:`mnist_split`): only the official *test* set is in the data directory, so ``train8k`` is its
  first 8,000 images and ``test2k`` its last 2,000 (disjoint; every MNIST figure of this toolkit says so).
  No augmentation.
- Calibration batches (:func:`calibration_batch`, e.g. for int8): the lossless 960-image npz for CIFAR-10,
  a fixed slice of ``train8k`` for MNIST.

A :class:`DataSource` is anything that yields normalised float batches ``(x, y)``: :class:`LabelledImages`
(uint8 images in memory, normalised per batch) and :class:`TensorData` (inputs that are already tensors, such
as synthetic images). ``limit=N`` / ``subset(N)`` keeps the first N of a fixed permutation (seed 0), so a
held-out slice is the same for every caller (policy evaluations of an AutoML search compare on it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..errors import InputError

#: The parts of each data set, and which of them trains and which tests.
PARTS: dict[str, tuple[str, str]] = {"cifar10": ("train", "test"), "mnist": ("train8k", "test2k")}
#: Files of the data directory each data set is read from.
CIFAR10_TARBALL = "images/cifar10-jpg.tar.gz"
CIFAR10_CALIBRATION = "images/cifar10_train_aug_960.npz"
MNIST_IMAGES = "images/t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "images/t10k-labels-idx1-ubyte.gz"
MNIST_TRAIN = 8000  # the first 8,000 of the 10,000 official test images train; the last 2,000 test


def _normalization(dataset: str) -> str:
    """The key of :data:`devicefit.data.images.NORMALIZATION` the built-in models of ``dataset`` expect."""
    if dataset == "cifar10":
        from .cifar_resnet import INPUT_NORMALIZATION
    else:
        from .lenet import INPUT_NORMALIZATION
    return INPUT_NORMALIZATION


def held_out_indices(n: int, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` of a fixed permutation (seed 0) of ``range(n)``, sorted; all when None."""
    if limit is None:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 1 <= limit <= n:
        raise InputError(f"limit must be an integer in 1..{n} (the size of the data), got {limit!r}")
    return np.sort(np.random.default_rng(0).permutation(n)[: int(limit)])


@runtime_checkable
class DataSource(Protocol):
    """Labelled inputs in normalised float batches: what :func:`evaluate_accuracy` and
    :func:`devicefit.compression.finetune` read.

    ``batches`` yields ``(x, y)``: float inputs as the model takes them and int64 class labels. With
    ``shuffle`` the order is a permutation drawn from ``rng``; ``augment`` applies the source's training
    augmentation if it has one (CIFAR-10's crop and flip), drawing from the same ``rng``, so a fixed
    generator gives the same batches. ``subset(limit)`` is the fixed held-out slice (:func:`held_out_indices`).
    """

    description: str

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def subset(self, limit: int | None) -> DataSource: ...


def _order(n: int, batch_size: int, shuffle: bool, rng: np.random.Generator | None) -> np.ndarray:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not shuffle:
        return np.arange(n)
    return (rng if rng is not None else np.random.default_rng(0)).permutation(n)


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """uint8 images ``x`` (N, H, W, C) and int64 labels ``y`` of one part of a data set, normalised per batch
    with ``normalization`` (a key of :data:`devicefit.data.images.NORMALIZATION`)."""

    dataset: str  # "cifar10" or "mnist": decides the augmentation (crop and flip for cifar10 only)
    part: str
    x: np.ndarray
    y: np.ndarray
    normalization: str
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise InputError(f"images must be a uint8 array (N, H, W, C), got {getattr(self.x, 'shape', self.x)!r}")
        if not isinstance(self.y, np.ndarray) or self.y.shape != (len(self.x),) or self.y.dtype != np.int64:
            raise InputError(f"labels must be an int64 array of shape ({len(self.x)},), got "
                             f"{getattr(self.y, 'dtype', type(self.y).__name__)} {getattr(self.y, 'shape', '')}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, limit: int | None) -> LabelledImages:
        """The first ``limit`` images of a fixed permutation (all of them when ``limit`` is None)."""
        if limit is None:
            return self
        idx = held_out_indices(len(self), limit)
        return LabelledImages(self.dataset, self.part, self.x[idx], self.y[idx], self.normalization,
                              f"{self.description}, first {limit} of a fixed permutation")

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from ..data import random_crop_flip, to_tensor

        rng = rng if rng is not None else np.random.default_rng(0)
        order = _order(len(self), batch_size, shuffle, rng)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            if augment and self.dataset == "cifar10":
                x = random_crop_flip(x, rng, padding=4)
            yield to_tensor(x, self.normalization), torch.from_numpy(self.y[idx])


@dataclass(frozen=True, eq=False)
class TensorData:
    """Inputs that are already model-ready float tensors ``x`` (N, ...) with int64 labels ``y`` (N,): synthetic
    images, sequences, a user's preprocessed data. It has no augmentation (``augment`` changes nothing)."""

    x: torch.Tensor
    y: torch.Tensor
    description: str = "tensors"

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not self.x.is_floating_point() or self.x.ndim < 2:
            raise InputError(f"x must be a float tensor (N, ...), got {getattr(self.x, 'dtype', type(self.x))}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.shape != (len(self.x),):
            raise InputError(f"y must be an int64 tensor of shape ({len(self.x)},), got "
                             f"{getattr(self.y, 'dtype', type(self.y).__name__)} {tuple(getattr(self.y, 'shape', ()))}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, limit: int | None) -> TensorData:
        if limit is None:
            return self
        idx = torch.from_numpy(held_out_indices(len(self), limit))
        return TensorData(self.x[idx], self.y[idx], f"{self.description}, first {limit} of a fixed permutation")

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.from_numpy(_order(len(self), batch_size, shuffle, rng))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield self.x[idx], self.y[idx]


def _root(data_dir: str | os.PathLike[str] | None) -> str:
    from ..data import data_dir as resolve

    root = resolve(data_dir)
    assert root is not None
    return str(root)


def cifar10_split(split: str, data_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) from the JPEG tarball; decoded once per process."""
    if split not in PARTS["cifar10"]:
        raise InputError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    return _cifar10(split, _root(data_dir))


def mnist_split(part: str, data_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """MNIST ``train8k`` / ``test2k``: the first 8,000 / last 2,000 of the official test set (the only MNIST in
    the data directory)."""
    if part not in PARTS["mnist"]:
        raise InputError(f"MNIST part must be 'train8k' (first 8,000 of the official test set) or 'test2k' "
                         f"(its last 2,000), got {part!r}")
    return _mnist(part, _root(data_dir))


def load_images(dataset: str, part: str, data_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """One part of a data set by name: ``cifar10`` train/test, ``mnist`` train8k/test2k."""
    if dataset not in PARTS:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(PARTS)}")
    if part not in PARTS[dataset]:
        raise InputError(f"{dataset} has parts {', '.join(PARTS[dataset])}, not {part!r}")
    return cifar10_split(part, data_dir) if dataset == "cifar10" else mnist_split(part, data_dir)


def data_for(model_name: str, part: str = "test", data_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """The ``train`` or ``test`` part of the data set of built-in model ``model_name`` (for MNIST models:
    ``train8k`` or ``test2k``)."""
    from .zoo import model_spec

    dataset = model_spec(model_name).dataset
    if part not in ("train", "test"):
        raise InputError(f"part must be 'train' or 'test', got {part!r}")
    return load_images(dataset, PARTS[dataset][0 if part == "train" else 1], data_dir)


def calibration_batch(dataset: str, n: int, data_dir: str | os.PathLike[str] | None = None) -> torch.Tensor:
    """``n`` normalised inputs (n, C, H, W) for calibration: the first ``n`` of the lossless 960-image CIFAR-10
    npz, or the first ``n`` of a fixed permutation of MNIST ``train8k`` (never the test part)."""
    if dataset not in PARTS:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(PARTS)}")
    if dataset == "cifar10":
        from ..data import data_file, load_npz_images, to_tensor

        images = load_npz_images(data_file(CIFAR10_CALIBRATION, data_dir))
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(images):
            raise InputError(f"n must be an integer in 1..{len(images)} (the calibration images of cifar10), "
                             f"got {n!r}")
        return to_tensor(images.x[:n], _normalization("cifar10"))
    train = mnist_split("train8k", data_dir)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(train):
        raise InputError(f"n must be an integer in 1..{len(train)} (the MNIST train8k images), got {n!r}")
    return next(train.subset(n).batches(n))[0]


@lru_cache(maxsize=2)
def _cifar10(split: str, root: str) -> LabelledImages:
    from ..data import data_file, load_image_folder_tarball

    s = load_image_folder_tarball(data_file(CIFAR10_TARBALL, root), split)
    return LabelledImages("cifar10", split, s.x, s.y, _normalization("cifar10"),
                          f"CIFAR-10 {split} ({len(s)} JPEG images, quality ~75)")


@lru_cache(maxsize=1)
def _mnist_all(root: str) -> tuple[np.ndarray, np.ndarray]:
    from ..data import data_file, load_mnist_idx

    s = load_mnist_idx(data_file(MNIST_IMAGES, root), data_file(MNIST_LABELS, root))
    return s.x, s.y


def _mnist(part: str, root: str) -> LabelledImages:
    x, y = _mnist_all(root)
    keep = slice(0, MNIST_TRAIN) if part == "train8k" else slice(MNIST_TRAIN, len(y))
    what = f"first {MNIST_TRAIN:,}" if part == "train8k" else f"last {len(y) - MNIST_TRAIN:,}"
    return LabelledImages("mnist", part, x[keep], y[keep], _normalization("mnist"),
                          f"MNIST {part}: the {what} of the official test set")


def evaluate_accuracy(model: nn.Module, data: DataSource, *, batch_size: int = 256, limit: int | None = None,
                      progress: bool = False) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode, without gradients, on ``data`` or its fixed ``limit``-input
    slice (:func:`held_out_indices`). The model's train/eval mode is restored."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, DataSource):
        raise InputError(f"data must be a DataSource (LabelledImages, TensorData, ...), got {type(data).__name__}")
    part = data.subset(limit)
    was_training = model.training
    model.eval()
    correct = 0
    bar = _Bar(progress, "evaluating", len(part))
    try:
        with torch.no_grad():
            for x, y in part.batches(batch_size):
                out = model(x)
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(y):
                    raise InputError(f"the model must return logits (batch, classes); for a batch of {len(y)} it "
                                     f"returned {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
                correct += int((out.argmax(1) == y).sum())
                bar.advance(len(y))
    finally:
        bar.close()
        model.train(was_training)
    return 100.0 * correct / len(part)


class _Bar:
    """A rich progress bar on stderr, or nothing when disabled (as in :mod:`devicefit.study.study`)."""

    def __init__(self, enabled: bool, description: str, total: int, completed: int = 0) -> None:
        self._bar = self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=completed)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def evaluate_onnx_accuracy(onnx_model: bytes | str | os.PathLike[str], data: DataSource, *, batch_size: int = 256,
                           limit: int | None = None, threads: int = 0) -> float:
    """Top-1 accuracy (%) of an ONNX model (bytes or a file) in ONNX Runtime on ``data`` or its fixed ``limit``
    slice: what a device running the exported file would get (int8 models included). A model exported with a
    fixed batch of one is run one input at a time."""
    import onnxruntime as ort

    if not isinstance(data, DataSource):
        raise InputError(f"data must be a DataSource (LabelledImages, TensorData, ...), got {type(data).__name__}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"ONNX Runtime cannot load the model: {type(exc).__name__}: {exc}") from exc
    feed = session.get_inputs()[0]
    step = 1 if feed.shape and feed.shape[0] == 1 else batch_size
    part = data.subset(limit)
    correct = 0
    for x, y in part.batches(batch_size):
        xs = x.numpy()
        out = np.concatenate([session.run(None, {feed.name: xs[i:i + step]})[0] for i in range(0, len(xs), step)])
        correct += int((out.argmax(1) == y.numpy()).sum())
    return 100.0 * correct / len(part)
