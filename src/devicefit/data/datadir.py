"""The one data-directory setting: an explicit path (``--data-dir``) or ``DEVICEFIT_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

ENV_VAR = "DEVICEFIT_DATA"


class DataFileError(InputError):
    """A data file or directory that is missing, corrupt or not in the expected format."""


def data_dir(explicit: str | os.PathLike[str] | None = None, *, required: bool = True) -> Path | None:
    """Resolve the data directory: ``explicit`` first, then ``$DEVICEFIT_DATA``.

    Raises :class:`DataFileError` when none is set or the directory does not exist (unless
    ``required`` is false, then returns ``None``).
    """
    raw = explicit if explicit is not None else os.environ.get(ENV_VAR)
    if raw is None or str(raw) == "":
        if not required:
            return None
        raise DataFileError(f"no data directory: pass --data-dir or set {ENV_VAR} to the folder of the public data")
    path = Path(raw).expanduser()
    if not path.is_dir():
        if not required:
            return None
        raise DataFileError(
            f"data directory {str(path)!r} (from {'--data-dir' if explicit else ENV_VAR}) does not exist"
        )
    return path


def data_file(relative: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """A file inside the data directory; a clear error names it when it is absent."""
    root = data_dir(explicit)
    assert root is not None
    path = root / relative
    if not path.is_file():
        raise DataFileError(f"data file {str(path)!r} not found (expected {relative!r} inside the data directory)")
    return path
