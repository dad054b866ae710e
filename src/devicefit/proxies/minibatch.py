"""Minibatches for the proxies: one random training minibatch per network, with the train transforms.

The reference (SamsungLabs/zero-cost-nas ``nasbench2_pred.py``) draws ``next(iter(train_loader))`` for
each architecture from a shuffled loader: a new random batch of 64 augmented training images per network
(random crop with padding 4 + horizontal flip + normalisation for CIFAR; NB201's ImageNet16 transform is
crop with padding 2 + flip). Here each network gets its own batch from a generator seeded by
``(seed, network id)``, so results do not depend on the order or the number of worker processes.

Image pools (in the data directory):

- ``npz`` (default): ``images/cifar10_train_aug_960.npz`` / ``cifar100_train_aug_960.npz``: 960 training
  images each, lossless, *already* augmented (about 45 % have a zero top row from the padded crop, as a
  crop with padding 4 gives 4/9 of the time), so they are used as they are: cropping again would shift
  images by up to 8 pixels. Chosen as closest to the reference: the reference's pixels are lossless and
  the pool size (960 rather than 50,000) does not change the distribution a batch is drawn from.
- ``jpeg`` (CIFAR-10 only): the full 50,000 training images of ``images/cifar10-jpg.tar.gz`` (JPEG,
  quality about 75), with :func:`devicefit.data.random_crop_flip` applied per batch. Closer in pool size,
  but every pixel carries JPEG error.
- ``noise``: no file: 960 images of uniform random pixels with uniform random labels (seeded), for
  searching without the data directory. Data-free proxies (synflow) score the same networks as on real
  images; data-dependent ones lose their meaning (they are defined on real minibatches).
- ImageNet16-120: ``images/imagenet16_960.npz`` holds ImageNet16 images with labels 1..1000; NB201's
  ImageNet16-120 keeps labels 1..120 and maps them to 0..119, which leaves 106 images here; crop
  (padding 2) and flip are applied per batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data import data_file, load_image_folder_tarball, load_npz_images, random_crop_flip, to_tensor
from ..data.datadir import DataFileError
from ..errors import InputError
from .datasets import DATASETS, DEFAULT_BATCH_SIZE, NUM_CLASSES


@dataclass(frozen=True)
class ImagePool:
    """Training images (uint8 N,H,W,3) and labels to draw minibatches from."""

    dataset: str
    source: str
    x: np.ndarray
    y: np.ndarray
    crop_padding: int  # 0: the images are already augmented

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (int(self.x.shape[3]), int(self.x.shape[1]), int(self.x.shape[2]))

    def sample(
        self, rng: np.random.Generator, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random minibatch (without replacement), train-transformed and normalised."""
        if not 2 <= batch_size <= len(self.x):
            raise InputError(f"batch size must be in 2..{len(self.x)} for the {self.dataset} pool, got {batch_size}")
        idx = np.sort(rng.choice(len(self.x), size=batch_size, replace=False))
        x = self.x[idx]
        if self.crop_padding:
            x = random_crop_flip(x, rng, padding=self.crop_padding)
        return to_tensor(x, self.dataset), torch.from_numpy(self.y[idx])


#: Where the images of a pool come from.
IMAGE_SOURCES = ("npz", "jpeg", "noise")
#: Images in the ``noise`` pool.
NOISE_IMAGES = 960


def image_pool_file(
    dataset: str, source: str = "npz", data_dir: str | os.PathLike[str] | None = None
) -> os.PathLike[str] | None:
    """The data file that :func:`load_image_pool` reads for ``dataset`` and ``source`` (checked to exist);
    None for the ``noise`` source, which reads nothing."""
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if source not in IMAGE_SOURCES:
        raise InputError(f"image source must be one of {', '.join(IMAGE_SOURCES)}, got {source!r}")
    if source == "noise":
        return None
    if source == "jpeg":
        if dataset != "cifar10":
            raise InputError(f"the JPEG image source exists only for cifar10, not {dataset!r}; use source='npz'")
        return data_file("images/cifar10-jpg.tar.gz", data_dir)
    if dataset == "imagenet16":
        return data_file("images/imagenet16_960.npz", data_dir)
    return data_file(f"images/{dataset}_train_aug_960.npz", data_dir)


def load_image_pool(
    dataset: str, *, source: str = "npz", data_dir: str | os.PathLike[str] | None = None
) -> ImagePool:
    """The training images of ``dataset`` (cifar10, cifar100 or imagenet16) from the data directory."""
    path = image_pool_file(dataset, source, data_dir)
    if path is None:  # noise
        rng = np.random.default_rng(0)
        side = 16 if dataset == "imagenet16" else 32
        x = rng.integers(0, 256, size=(NOISE_IMAGES, side, side, 3), dtype=np.uint8)
        return ImagePool(dataset, source, x, rng.integers(0, NUM_CLASSES[dataset], NOISE_IMAGES), crop_padding=0)
    if source == "jpeg":
        s = load_image_folder_tarball(path, "train")
        return ImagePool(dataset, source, s.x, s.y, crop_padding=4)
    if dataset == "imagenet16":
        s = load_npz_images(path)
        keep = (s.y >= 1) & (s.y <= 120)
        if keep.sum() < 2:
            raise DataFileError("imagenet16_960.npz has fewer than 2 images of ImageNet16-120 classes (labels 1..120)")
        return ImagePool(dataset, source, s.x[keep], s.y[keep] - 1, crop_padding=2)
    s = load_npz_images(path)
    if s.y.min() < 0 or s.y.max() >= NUM_CLASSES[dataset]:
        raise DataFileError(
            f"{dataset} images have labels {s.y.min()}..{s.y.max()}, expected 0..{NUM_CLASSES[dataset] - 1}"
        )
    return ImagePool(dataset, source, s.x, s.y, crop_padding=0)


def model_minibatch(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    *,
    dataset: str = "cifar10",
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_classes: int | None = None,
    seed: int = 0,
    source: str = "npz",
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A minibatch for a user's own model: ``(inputs, labels, where they came from)``.

    Training images of ``dataset`` when its pool has the model's input shape (per-example
    ``input_shape``), otherwise standard-normal inputs; labels from the images when they fit the model's
    classes, otherwise uniform random ones. The model is run once on two examples to check that it takes
    the shape and returns ``(N, classes)`` logits (any exception becomes an InputError naming the shape).
    """
    from ..models import check_model_input

    rng = np.random.default_rng(seed)
    pool = None
    try:
        pool = load_image_pool(dataset, source=source, data_dir=data_dir)
    except DataFileError:
        pass
    out = check_model_input(model, input_shape, expect_logits=True)
    if pool is not None and pool.input_shape == tuple(input_shape):
        x, y = pool.sample(rng, batch_size)
        origin = f"{dataset} training images"
    else:
        torch.manual_seed(seed)
        x = torch.randn((batch_size, *input_shape))
        y = None
        origin = "random normal inputs (no image data of this shape)"
    classes = num_classes or int(out.shape[1])
    if classes > out.shape[1]:
        raise InputError(f"--num-classes {classes} exceeds the model's {out.shape[1]} outputs")
    if y is None or int(y.max()) >= classes:
        y = torch.from_numpy(rng.integers(0, classes, size=batch_size))
        origin += ", random labels"
    return x, y, origin
