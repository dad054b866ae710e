"""Image data sets as uint8 arrays (N, H, W, C) and int64 labels, plus the few transforms we need.

Readers: the CIFAR-10 image-folder tarball (``train/<class>/*.jpg``), the npz batches (``x``, ``y``),
and MNIST IDX files (gzipped or raw). Each returns exactly what the file holds or raises
:class:`DataFileError` naming the file: labels are non-negative (and index ``classes`` where the file
names them), an image folder lists each path once and every image under ``<split>/`` sits in a class
folder. Transforms (torchvision is not used): to a normalized float tensor, and the standard CIFAR
training augmentation (random crop with 4-pixel zero padding, horizontal flip). torch is imported by
:func:`to_tensor` only.
"""

from __future__ import annotations

import gzip
import io
import lzma
import math
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from .datadir import DataFileError

if TYPE_CHECKING:
    import torch

#: Per-channel normalization (mean, std) as used by NB201 and the zero-cost proxies reference code.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet16": (
        (122.68 / 255, 116.66 / 255, 104.01 / 255),
        (63.22 / 255, 61.26 / 255, 65.09 / 255),
    ),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ImageSet:
    """Images ``x`` (uint8, N x H x W x C, C 1 or 3), labels ``y`` (int64, N, >= 0) and class names.

    When ``classes`` is given, every label indexes it (``0 <= y < len(classes)``).
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[-1] not in (1, 3) or x.dtype != np.uint8:
            raise DataFileError(f"images must be uint8 (N, H, W, C) with C in (1, 3), got {_describe(x)}")
        if x.shape[1] < 1 or x.shape[2] < 1:
            raise DataFileError(f"images must be at least 1 x 1 pixels, got {x.shape[1]} x {x.shape[2]}")
        if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise DataFileError(f"labels must be int64 of shape ({x.shape[0]},), got {_describe(y)}")
        if y.size and int(y.min()) < 0:
            raise DataFileError(f"labels must be >= 0, found {int(y.min())}")
        if self.classes and y.size and int(y.max()) >= len(self.classes):
            raise DataFileError(f"label {int(y.max())} out of range for {len(self.classes)} classes")

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _describe(a: object) -> str:
    return f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__


def _image_set(what: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...] = ()) -> ImageSet:
    try:
        return ImageSet(x=x, y=y, classes=classes)
    except DataFileError as exc:
        raise DataFileError(f"{what}: {exc}") from None


# -- image-folder tarballs ---------------------------------------------------------------------------
def load_image_folder_tarball(
    path: str | os.PathLike[str], split: str = "train", limit_per_class: int | None = None
) -> ImageSet:
    """Read ``<split>/<class>/<file>.jpg|png`` members of a tar(.gz) into memory (classes sorted by name).

    Members outside ``<split>/`` and files that are not images are skipped; an image under ``<split>/``
    that is not in a class folder, a path listed twice, an image that does not decode and images of
    different sizes are errors. ``limit_per_class`` keeps the first images of each class, in archive order.
    """
    from PIL import Image  # local import: only this reader needs Pillow

    p = Path(path)
    what = f"image tarball {str(p)!r}"
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if limit_per_class is not None and (
        isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int) or limit_per_class < 1
    ):
        raise InputError(f"limit_per_class must be a positive int or None, got {limit_per_class!r}")
    images: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(p, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.normpath(member.name)
                if name in seen:
                    raise DataFileError(f"{what} lists {member.name!r} twice")
                seen.add(name)
                parts = Path(name).parts
                if split not in parts or not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
                    continue
                parts = parts[parts.index(split) :]
                if len(parts) != 3:
                    raise DataFileError(f"{what}: image {member.name!r} is not in a '{split}/<class>/' folder")
                bucket = images.setdefault(parts[1], [])
                if limit_per_class is not None and len(bucket) >= limit_per_class:
                    continue
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
                try:
                    with Image.open(io.BytesIO(data)) as img:
                        bucket.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
                except Exception as exc:  # Pillow fails on a corrupt image in many types (OSError, SyntaxError...)
                    raise DataFileError(f"{what}: image {member.name!r} does not decode: {exc}") from None
            if not _archive_ends_well(p, tar):
                raise DataFileError(f"{what} ends without the tar end-of-archive marker: the file was cut short")
    except FileNotFoundError:
        raise DataFileError(f"{what} not found") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DataFileError(f"{what} is corrupt or not a tar archive: {exc}") from None
    if not any(images.values()):
        raise DataFileError(f"{what} has no images under '{split}/<class>/'")
    classes = tuple(sorted(images))
    shapes = {a.shape for v in images.values() for a in v}
    if len(shapes) != 1:
        raise DataFileError(f"{what}: images of different sizes {sorted(shapes)[:3]}")
    x = np.stack([a for c in classes for a in images[c]])
    y = np.concatenate([np.full(len(images[c]), i, dtype=np.int64) for i, c in enumerate(classes)])
    return _image_set(what, x, y, classes)


def _archive_ends_well(path: Path, tar: tarfile.TarFile) -> bool:
    """True when the archive ends as it should where ``tarfile`` stopped reading members.

    ``tarfile`` reads an archive cut at a member boundary, or with a damaged header, as a shorter archive
    without a word. An uncompressed tar must have its end-of-archive (zero) block there; a compressed one
    is read to its end, where the codec checks its trailer (gzip's CRC and length, bzip2's and xz's).
    """
    with path.open("rb") as f:
        compressed = f.read(6).startswith((_GZIP_MAGIC, b"BZh", b"\xfd7zXZ\x00"))
        if not compressed:
            f.seek(tar.offset)
            return f.read(512) == bytes(512)
    while tar.fileobj is not None and tar.fileobj.read(1 << 20):
        pass
    return True


# -- npz batches -----------------------------------------------------------------------------------
def load_npz_images(path: str | os.PathLike[str]) -> ImageSet:
    """Read an npz with ``x`` (uint8 N,H,W,C) and ``y`` (non-negative integer labels)."""
    p = Path(path)
    what = f"npz file {str(p)!r}"
    try:
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataFileError(f"{what} is a single array (.npy), not an npz archive with 'x' and 'y'")
        with z:
            if "x" not in z.files or "y" not in z.files:
                raise DataFileError(f"{what} must hold arrays 'x' and 'y', found {z.files}")
            x, y = z["x"], z["y"]
    except DataFileError:
        raise
    except FileNotFoundError:
        raise DataFileError(f"{what} not found") from None
    # RuntimeError: zipfile's 'encrypted, password required' (and NotImplementedError, its subclass, for flags
    # it cannot read), which a flipped bit in a member's flags triggers
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError) as exc:
        raise DataFileError(f"{what} is corrupt or not an npz archive: {exc}") from None
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFileError(f"{what}: labels 'y' must be integers, got {y.dtype}")
    if y.size and np.issubdtype(y.dtype, np.unsignedinteger) and int(y.max()) > np.iinfo(np.int64).max:
        raise DataFileError(f"{what}: label {int(y.max())} does not fit in int64")
    return _image_set(what, x, y.astype(np.int64))


# -- MNIST IDX -------------------------------------------------------------------------------------
def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    what = f"IDX file {str(path)!r}"
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataFileError(f"{what} not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{what} is corrupt: {exc}") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != expected_magic:
        raise DataFileError(f"{what}: bad magic number, expected {expected_magic} (0x{expected_magic:08x})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataFileError(f"{what} is truncated: header of {ndim} dimensions incomplete")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = len(raw) - 4 - 4 * ndim
    if size != math.prod(dims):
        raise DataFileError(f"{what}: {size} values, header says {' x '.join(map(str, dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> ImageSet:
    """Read MNIST IDX image/label files (gzipped or raw, told apart by content) as (N, rows, cols, 1) uint8,
    labels 0..9."""
    x = _read_idx(Path(images_path), 2051)
    y = _read_idx(Path(labels_path), 2049).astype(np.int64)
    what = f"MNIST files {str(images_path)!r} and {str(labels_path)!r}"
    if x.shape[0] != y.shape[0]:
        raise DataFileError(f"{what}: {x.shape[0]} images but {y.shape[0]} labels")
    return _image_set(what, x[..., None].copy(), y, tuple(str(i) for i in range(10)))


# -- transforms ------------------------------------------------------------------------------------
def to_tensor(x: np.ndarray, dataset: str = "cifar10") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) normalized with ``dataset``'s mean and std."""
    import torch

    if dataset not in NORMALIZATION:
        raise InputError(f"unknown normalization {dataset!r}; expected one of {', '.join(NORMALIZATION)}")
    mean, std = NORMALIZATION[dataset]
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean[: t.shape[1]]).view(1, -1, 1, 1)
    s = torch.tensor(std[: t.shape[1]]).view(1, -1, 1, 1)
    return (t - m) / s


def random_crop_flip(x: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Standard CIFAR training augmentation on uint8 (N, H, W, C): zero-pad, random crop, random flip."""
    if x.ndim != 4:
        raise InputError(f"random_crop_flip needs images (N, H, W, C), got shape {x.shape}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"padding must be a non-negative int, got {padding!r}")
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


__all__ = [
    "NORMALIZATION",
    "ImageSet",
    "load_image_folder_tarball",
    "load_mnist_idx",
    "load_npz_images",
    "random_crop_flip",
    "to_tensor",
]
