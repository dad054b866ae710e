"""One NB201 cell from what a user types: an arch string, or ``nb201:INDEX`` (the official index)."""

from __future__ import annotations

import os
import re

from ..errors import InputError, OutOfRangeError
from ..spaces.nb201 import NUM_CELLS, NB201Cell
from ._cells import cell_from_str
from .datadir import data_dir as _data_dir
from .nb201_table import RELATIVE_PATH, NB201Table, load_nb201_table

INDEX_PREFIX = "nb201:"
_INDEX = re.compile(r"[+-]?[0-9]+")


def resolve_arch(
    text: str, data_dir: str | os.PathLike[str] | None = None, table: NB201Table | None = None
) -> tuple[NB201Cell, int | None]:
    """An NB201 cell and its official index from an arch string or ``nb201:INDEX``.

    ``nb201:INDEX`` (an integer in 0..15624) is looked up in the NB201 table, which it needs: ``table``
    when given, else the one of the data directory (``data_dir`` or ``$DEVICEFIT_DATA``). For an arch
    string the index is ``None`` when there is no data directory or it holds no NB201 table; a table
    that is there but corrupt is an error, as everywhere. Raises :class:`InputError` (a malformed
    string, an index that is not an integer or out of range) or :class:`DataFileError`.
    """
    if not isinstance(text, str):
        raise InputError(f"architecture must be a str, got {type(text).__name__}: {text!r:.100}")
    stripped = text.strip()
    if stripped.lower().startswith(INDEX_PREFIX):
        raw = stripped[len(INDEX_PREFIX) :].strip()
        if not _INDEX.fullmatch(raw):
            raise InputError(f"architecture {text!r}: expected nb201:INDEX with an integer INDEX, got {raw!r}")
        index = int(raw)
        if not 0 <= index < NUM_CELLS:
            raise OutOfRangeError(f"architecture {text!r}: NB201 index {index} out of range 0..{NUM_CELLS - 1}")
        if table is None:
            table = load_nb201_table(data_dir=data_dir)
        return table.cell_at(index), index
    cell = cell_from_str(stripped)
    if table is None:
        root = _data_dir(data_dir, required=False)
        if root is None or not (root / RELATIVE_PATH).is_file():
            return cell, None
        table = load_nb201_table(root / RELATIVE_PATH)
    try:
        return cell, table.index_of(cell)
    except KeyError:
        return cell, None


__all__ = ["INDEX_PREFIX", "resolve_arch"]
