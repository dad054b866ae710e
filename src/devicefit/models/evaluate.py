"""The images the built-in models are trained and tested on, in batches, and top-1 accuracy.

- CIFAR-10: the 50,000 training and 10,000 test images of ``images/cifar10-jpg.tar.gz`` (JPEG, quality about
  75: a pretrained ResNet-20 scores about 81 % here against 91.7 % on the original pixels, so compare
  relative figures), normalised with the ImageNet statistics the akamaster ResNets were trained with.
- MNIST: only the official *test* set is in the data directory, so ``train8k`` is its first 8,000 images and
  ``test2k`` the last 2,000 (disjoint; every figure on MNIST says so).

``limit=N`` keeps the first N of a fixed permutation (seed 0), so a held-out slice is the same for every
caller (AutoML policy evaluations compare on it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..errors import InputError

PARTS = {"cifar10": ("train", "test"), "mnist": ("train8k", "test2k")}
_NORMALIZATION = {"cifar10": "imagenet", "mnist": "mnist"}


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N, H, W, C) and int64 labels of one part of a data set."""

    dataset: str
    part: str
    x: np.ndarray
    y: np.ndarray
    description: str = ""
    augment: bool = field(default=False)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, limit: int | None) -> LabelledImages:
        """The first ``limit`` images of a fixed permutation (all of them when ``limit`` is None)."""
        if limit is None:
            return self
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= len(self):
            raise InputError(f"limit must be an integer in 1..{len(self)}, got {limit!r}")
        idx = np.sort(np.random.default_rng(0).permutation(len(self))[:limit])
        return LabelledImages(self.dataset, self.part, self.x[idx], self.y[idx],
                              f"{self.description}, first {limit} of a fixed permutation", self.augment)

    def batches(self, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float batches (N, C, H, W); CIFAR-10 training augmentation (crop 4 + flip) on request."""
        from ..data import random_crop_flip, to_tensor

        rng = rng if rng is not None else np.random.default_rng(0)
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = self.x[idx]
            if augment and self.dataset == "cifar10":
                x = random_crop_flip(x, rng, padding=4)
            yield to_tensor(x, _NORMALIZATION[self.dataset]), torch.from_numpy(self.y[idx])


def load_images(dataset: str, part: str, data_dir: str | os.PathLike[str] | None = None) -> LabelledImages:
    """One part of a data set: ``cifar10`` train/test, ``mnist`` train8k/test2k (see the module docstring)."""
    if dataset not in PARTS:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(PARTS)}")
    if part not in PARTS[dataset]:
        raise InputError(f"{dataset} has parts {', '.join(PARTS[dataset])}, not {part!r}")
    from ..data import data_dir as resolve

    root = resolve(data_dir)
    assert root is not None
    return _load(dataset, part, str(root))


@lru_cache(maxsize=4)
def _load(dataset: str, part: str, root: str) -> LabelledImages:
    from ..data import data_file, load_image_folder_tarball, load_mnist_idx

    if dataset == "cifar10":
        s = load_image_folder_tarball(data_file("images/cifar10-jpg.tar.gz", root), part)
        return LabelledImages(dataset, part, s.x, s.y, f"CIFAR-10 {part} images (JPEG, quality ~75)")
    s = load_mnist_idx(data_file("images/t10k-images-idx3-ubyte.gz", root),
                       data_file("images/t10k-labels-idx1-ubyte.gz", root))
    keep = slice(0, 8000) if part == "train8k" else slice(8000, 10000)
    what = "first 8,000" if part == "train8k" else "last 2,000"
    return LabelledImages(dataset, part, s.x[keep], s.y[keep], f"MNIST: the {what} of the official test set")


def evaluate_accuracy(model: nn.Module, data: LabelledImages, *, batch_size: int = 256,
                      limit: int | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode on ``data`` (or its fixed ``limit``-image slice)."""
    part = data.subset(limit)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for x, y in part.batches(batch_size):
                correct += int((model(x).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / len(part)
