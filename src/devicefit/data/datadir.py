"""The one data-directory setting: an explicit path (``--data-dir``) or ``DEVICEFIT_DATA``.

Only an unset (or empty) setting means "no data directory". A setting that names a folder that does
not exist, or a file, is an error everywhere, also where the data is optional (``devicefit info``,
``devices``, ``demo``): a typo must not silently turn into "no data".
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

ENV_VAR = "DEVICEFIT_DATA"


class DataFileError(InputError):
    """A data file or directory that is missing, corrupt or not in the expected format."""


def data_dir(explicit: str | os.PathLike[str] | None = None, *, required: bool = True) -> Path | None:
    """Resolve the data directory: ``explicit`` (the ``--data-dir`` flag) first, then ``$DEVICEFIT_DATA``.

    Raises :class:`DataFileError` naming the setting when it names no existing directory. When neither
    is set: :class:`DataFileError` if ``required``, else ``None``.
    """
    if explicit is not None and str(explicit) != "":
        raw, origin = str(explicit), "--data-dir"
    else:
        raw, origin = os.environ.get(ENV_VAR, ""), ENV_VAR
    if raw == "":
        if not required:
            return None
        raise DataFileError(f"no data directory: pass --data-dir or set {ENV_VAR} to the folder of the public data")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataFileError(f"data directory {str(path)!r} (from {origin}) does not exist")
    if not path.is_dir():
        raise DataFileError(f"data directory {str(path)!r} (from {origin}) is not a directory")
    return path


def data_file(relative: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """A file inside the data directory; a clear error names it when it is absent."""
    root = data_dir(explicit)
    assert root is not None
    path = root / relative
    if not path.is_file():
        raise DataFileError(f"data file {str(path)!r} not found (expected {relative!r} inside the data directory)")
    return path


__all__ = ["ENV_VAR", "DataFileError", "data_dir", "data_file"]
