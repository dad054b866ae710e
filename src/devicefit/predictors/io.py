"""Plain-file storage of fitted predictors and transfer trunks: ``<name>.npz`` (arrays) + ``<name>.json`` (metadata).

No pickled Python objects anywhere: the arrays are read with ``numpy.load(allow_pickle=False)``, torch
weights are stored as their ``state_dict`` tensors converted to arrays. The JSON holds what the file is
(``kind``: a predictor kind or ``transfer-trunk``), the space, device, unit, normalisation, training-set
size, hyper-parameters and metrics, and two SHA-256 digests:

- ``weights_sha256``: of the ``.npz`` bytes, so weights and metadata of different fits are refused;
- ``metadata_sha256``: of the canonical JSON of all other metadata (``weights_sha256`` included), so an
  edit of the ``.json`` (a unit, a normalisation constant) is refused too instead of silently changing
  the predictions.

These detect accidents and stale or mixed-up files, not tampering: anyone can recompute a digest.
Files are written to a temporary name and renamed, so a crash never leaves half a file behind.
Format version 2 added ``metadata_sha256``; version-1 files (metadata unchecked) are refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomic
from ..errors import InputError

FORMAT = "devicefit-predictor"
FORMAT_VERSION = 2


class PredictorFileError(InputError):
    """A saved predictor that is missing, corrupt, edited, or whose weights and metadata do not match."""


def paths_of(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights.npz, metadata.json)`` of a predictor file given as ``x``, ``x.npz`` or ``x.json``."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def metadata_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, compact) of ``record`` without its ``metadata_sha256``."""
    body = {k: v for k, v in record.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_writable(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The two file paths of ``path``, or an :class:`InputError` when they cannot be written there."""
    npz, js = paths_of(path)
    for p in (Path(path), npz, js):
        if p.is_dir():
            raise InputError(
                f"output {str(path)!r}: {str(p)!r} is a directory; give a file name (writes NAME.npz + NAME.json)"
            )
    folder = npz.parent
    existing = next((f for f in (folder, *folder.parents) if f.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"output {str(path)!r}: {str(existing)!r} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"output {str(path)!r}: folder {str(existing)!r} is not writable")
    return npz, js


def save_arrays(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays and the metadata (atomically, each); returns the ``.npz`` path."""
    npz, js = check_writable(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "weights_file": npz.name,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "arrays": {k: list(np.shape(v)) for k, v in arrays.items()},
    }
    record = json.loads(json.dumps(record))  # as it will read back (lists, str keys) before it is hashed
    record["metadata_sha256"] = metadata_digest(record)
    write_atomic(npz, data)
    write_atomic(js, (json.dumps(record, indent=2) + "\n").encode())
    return npz




def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a saved file: metadata dict and arrays; :class:`PredictorFileError` naming the bad file."""
    npz, js = paths_of(path)
    if not js.is_file():
        raise PredictorFileError(f"predictor metadata {str(js)!r} not found (saved predictors are a .npz + .json pair)")
    if not npz.is_file():
        raise PredictorFileError(f"predictor weights {str(npz)!r} not found (saved predictors are a .npz + .json pair)")
    try:
        meta = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PredictorFileError(f"predictor metadata {str(js)!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PredictorFileError(f"{str(js)!r} is not a devicefit predictor file (expected format {FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        hint = (
            "an older devicefit wrote it, without a checksum of the metadata; fit and save it again"
            if isinstance(version, int) and version < FORMAT_VERSION
            else "a newer devicefit wrote it"
        )
        raise PredictorFileError(
            f"{str(js)!r} has format version {version!r}; this devicefit reads version {FORMAT_VERSION} ({hint})"
        )
    if meta.get("metadata_sha256") != metadata_digest(meta):
        raise PredictorFileError(
            f"predictor metadata {str(js)!r} was changed after it was saved (its SHA-256 differs from the one "
            "recorded in it); refit or restore the file"
        )
    data = npz.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise PredictorFileError(
            f"predictor weights {str(npz)!r} do not match the metadata {str(js)!r} (SHA-256 differs): "
            "the files belong to different fits or one was changed"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise PredictorFileError(f"predictor weights {str(npz)!r} are not a readable .npz: {exc}") from exc
    expected = meta.get("arrays", {})
    if set(expected) != set(arrays) or any(list(arrays[k].shape) != list(s) for k, s in expected.items()):
        raise PredictorFileError(f"predictor weights {str(npz)!r} do not hold the arrays its metadata lists")
    return meta, arrays


__all__ = ["FORMAT", "FORMAT_VERSION", "PredictorFileError", "check_writable", "load_arrays", "paths_of",
           "save_arrays"]
