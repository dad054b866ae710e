"""Plain-file storage of fitted predictors: ``<name>.npz`` (arrays only) + ``<name>.json`` (metadata).

No pickled Python objects anywhere: the arrays are read with ``numpy.load(allow_pickle=False)``, torch
weights are stored as their ``state_dict`` tensors converted to arrays. The JSON holds the predictor kind,
device, unit, input normalisation, training-set size, hyper-parameters, metrics, and the SHA-256 of the
``.npz`` so a weights file and a metadata file that do not belong together are refused.
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

from ..errors import InputError

FORMAT = "devicefit-predictor"
FORMAT_VERSION = 1


class PredictorFileError(InputError):
    """A saved predictor that is missing, corrupt, or whose weights and metadata do not match."""


def paths_of(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights.npz, metadata.json)`` of a predictor file given as ``x``, ``x.npz`` or ``x.json``."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def save_arrays(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays and the metadata; returns the ``.npz`` path."""
    npz, js = paths_of(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    npz.write_bytes(data)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "weights_file": npz.name,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "arrays": {k: list(np.shape(v)) for k, v in arrays.items()},
    }
    js.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return npz


def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a saved predictor: metadata dict and arrays; :class:`PredictorFileError` if bad."""
    npz, js = paths_of(path)
    if not js.is_file():
        raise PredictorFileError(f"predictor metadata {str(js)!r} not found (saved predictors are a .npz + .json pair)")
    if not npz.is_file():
        raise PredictorFileError(f"predictor weights {str(npz)!r} not found (saved predictors are a .npz + .json pair)")
    try:
        meta = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PredictorFileError(f"predictor metadata {str(js)!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PredictorFileError(f"{str(js)!r} is not a devicefit predictor file (expected format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PredictorFileError(
            f"{str(js)!r} has format version {meta.get('format_version')!r}; this devicefit reads {FORMAT_VERSION}"
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
