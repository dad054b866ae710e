"""Image data sets as uint8 arrays (N, H, W, 3) and int64 labels, plus the few transforms we need.

Readers: the CIFAR-10 image-folder tarball (``train/<class>/*.jpg``), the npz batches (``x``, ``y``),
and MNIST IDX files. Transforms (torchvision is not used): to a normalized float tensor, and the
standard CIFAR training augmentation (random crop with 4-pixel zero padding, horizontal flip).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .datadir import DataFileError

#: Per-channel normalization (mean, std) as used by NB201 and the zero-cost proxies reference code.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet16": (
        (122.68 / 255, 116.66 / 255, 104.01 / 255),
        (63.22 / 255, 61.26 / 255, 65.09 / 255),
    ),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ImageSet:
    """Images ``x`` (uint8, N x H x W x 3), labels ``y`` (int64, N) and class names."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[-1] not in (1, 3) or self.x.dtype != np.uint8:
            raise DataFileError(
                f"images must be uint8 (N, H, W, C) with C in (1, 3), got {self.x.dtype} {self.x.shape}"
            )
        if self.y.shape != (self.x.shape[0],):
            raise DataFileError(f"labels must have shape ({self.x.shape[0]},), got {self.y.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_image_folder_tarball(
    path: str | os.PathLike[str], split: str = "train", limit_per_class: int | None = None
) -> ImageSet:
    """Read ``<split>/<class>/<file>.jpg|png`` members of a tar(.gz) into memory (classes sorted by name)."""
    from PIL import Image  # local import: only this reader needs Pillow

    p = Path(path)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    images: dict[str, list[np.ndarray]] = {}
    try:
        with tarfile.open(p, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = Path(member.name).parts
                parts = parts[parts.index(split) :] if split in parts else ()
                if len(parts) != 3 or not parts[2].lower().endswith((".jpg", ".jpeg", ".png")):
                    continue
                cls = parts[1]
                bucket = images.setdefault(cls, [])
                if limit_per_class is not None and len(bucket) >= limit_per_class:
                    continue
                f = tar.extractfile(member)
                assert f is not None
                with Image.open(io.BytesIO(f.read())) as img:
                    bucket.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except FileNotFoundError:
        raise DataFileError(f"image tarball {str(p)!r} not found") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFileError(f"image tarball {str(p)!r} is corrupt or not a tar archive: {exc}") from exc
    if not images:
        raise DataFileError(f"image tarball {str(p)!r} has no images under '{split}/<class>/'")
    classes = tuple(sorted(images))
    shapes = {a.shape for v in images.values() for a in v}
    if len(shapes) != 1:
        raise DataFileError(f"image tarball {str(p)!r}: images of different sizes {sorted(shapes)[:3]}")
    x = np.stack([a for c in classes for a in images[c]])
    y = np.concatenate([np.full(len(images[c]), i, dtype=np.int64) for i, c in enumerate(classes)])
    return ImageSet(x=x, y=y, classes=classes)


def load_npz_images(path: str | os.PathLike[str]) -> ImageSet:
    """Read an npz with ``x`` (uint8 N,H,W,3) and ``y`` (integer labels)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise DataFileError(f"npz file {str(p)!r} must hold arrays 'x' and 'y', found {list(z.keys())}")
            x, y = z["x"], z["y"]
    except FileNotFoundError:
        raise DataFileError(f"npz file {str(p)!r} not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"npz file {str(p)!r} is corrupt or not an npz archive: {exc}") from exc
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFileError(f"npz file {str(p)!r}: labels 'y' must be integers, got {y.dtype}")
    return ImageSet(x=x, y=y.astype(np.int64))


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"IDX file {str(path)!r} not found") from None
    except (OSError, EOFError) as exc:
        raise DataFileError(f"IDX file {str(path)!r} is corrupt: {exc}") from exc
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != expected_magic:
        raise DataFileError(f"IDX file {str(path)!r}: bad magic number, expected {expected_magic}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"IDX file {str(path)!r} is truncated: header of {ndim} dimensions incomplete")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataFileError(f"IDX file {str(path)!r}: {data.size} values, header says {dims}")
    return data.reshape(dims)


def load_mnist_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> ImageSet:
    """Read MNIST IDX image/label files (optionally gzipped) as (N, 28, 28, 1) uint8."""
    x = _read_idx(Path(images_path), 2051)
    y = _read_idx(Path(labels_path), 2049).astype(np.int64)
    if x.shape[0] != y.shape[0]:
        raise DataFileError(f"MNIST: {x.shape[0]} images but {y.shape[0]} labels")
    return ImageSet(x=x[..., None].copy(), y=y, classes=tuple(str(i) for i in range(10)))


def to_tensor(x: np.ndarray, dataset: str = "cifar10") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) normalized with ``dataset``'s mean and std."""
    if dataset not in NORMALIZATION:
        raise InputError(f"unknown normalization {dataset!r}; expected one of {', '.join(NORMALIZATION)}")
    mean, std = NORMALIZATION[dataset]
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean[: t.shape[1]]).view(1, -1, 1, 1)
    s = torch.tensor(std[: t.shape[1]]).view(1, -1, 1, 1)
    return (t - m) / s


def random_crop_flip(x: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Standard CIFAR training augmentation on uint8 (N, H, W, C): zero-pad, random crop, random flip."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.empty_like(x)
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    flip = rng.random(n) < 0.5
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out
