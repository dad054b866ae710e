"""The NAS-Bench-201 accuracy table (``nb201/nb201_accuracy.csv``): one row per cell, official index.

Reference: arXiv 2001.00326. Columns are described in the data README. What the loader checks, so that
nothing is believed that the file does not say:

- every row names a valid cell, each cell once, each official index (``nb201_index``: an integer,
  ``3`` or ``3.0``, never ``3.5``) once; the official table (``complete=True``, the default) holds all
  15,625 cells and exactly the indices 0..15624, so a file cut at a line boundary is refused;
- accuracy columns (:func:`is_accuracy_column`) are percentages in [0, 100] or missing; ``params_M`` is
  positive or missing; score columns (Zen-NAS, NASWOT) and any others are finite or missing.
  Zen-NAS scores of -1e8 (the upstream failure marker) are read as missing (NaN), never as a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, OutOfRangeError, UnknownNameError
from ..spaces.nb201 import NUM_CELLS, NB201Cell
from ._cells import arch_column, first_repeat
from ._csv import CsvRows, index_column, number_column, read_rows
from .datadir import DataFileError, data_file

if TYPE_CHECKING:
    import numpy as np

RELATIVE_PATH = "nb201/nb201_accuracy.csv"
REQUIRED_COLUMNS = ("nb201_index", "arch_str")
#: The accuracy columns with the benchmark's published optimum (percent), where known.
PUBLISHED_OPTIMA = {"c10_test_200ep": 94.37, "c100_test_200ep": 73.51, "in16_val_200ep": 47.33}
_FAILED_SCORE = -1e8
_WHAT = "NB201 table"


def is_accuracy_column(name: str) -> bool:
    """True for an accuracy column (a percentage): ``*_test_*``, ``*_val*`` and ``*_valid_200ep``."""
    return "_test_" in name or "_val" in name or name.endswith("_valid_200ep")


@dataclass(frozen=True)
class NB201Table:
    """Rows of the NB201 table, aligned: ``cells[i]``, ``nb201_index[i]`` and ``columns[name][i]``."""

    cells: tuple[NB201Cell, ...]
    nb201_index: np.ndarray
    columns: dict[str, np.ndarray]
    path: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.cells)
        lengths = {name: len(col) for name, col in self.columns.items() if len(col) != n}
        if len(self.nb201_index) != n or lengths:
            raise InputError(
                f"NB201 table: {n} cells but {len(self.nb201_index)} indices"
                + (f" and columns of length {lengths}" if lengths else "")
            )
        row = {c: i for i, c in enumerate(self.cells)}
        row_of_index = {int(k): i for i, k in enumerate(self.nb201_index)}
        if len(row) != n or len(row_of_index) != n:
            raise InputError("NB201 table: every cell and every nb201_index must appear once")
        object.__setattr__(self, "_row", row)
        object.__setattr__(self, "_row_of_index", row_of_index)

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def accuracy_columns(self) -> list[str]:
        return [c for c in self.columns if is_accuracy_column(c)]

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise UnknownNameError(f"NB201 table has no column {name!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    def row(self, cell: NB201Cell) -> int:
        try:
            return self._row[cell]  # type: ignore[attr-defined]
        except KeyError:
            raise UnknownNameError(f"cell {cell.to_str()} is not in the NB201 table") from None

    def cell_at(self, nb201_index: int) -> NB201Cell:
        """The cell with official NB201 index ``nb201_index``."""
        try:
            return self.cells[self._row_of_index[int(nb201_index)]]  # type: ignore[attr-defined]
        except KeyError:
            raise OutOfRangeError(
                f"NB201 index {nb201_index} out of range: the table has indices "
                f"{int(self.nb201_index.min())}..{int(self.nb201_index.max())}"
            ) from None

    def index_of(self, cell: NB201Cell) -> int:
        return int(self.nb201_index[self.row(cell)])

    def value(self, cell: NB201Cell, column: str) -> float | None:
        """One entry; ``None`` when it is missing."""
        v = float(self.column(column)[self.row(cell)])
        return None if v != v else v

    def values(self, cells: list[NB201Cell], column: str) -> np.ndarray:
        import numpy as np

        col = self.column(column)
        return np.array([col[self.row(c)] for c in cells], dtype=np.float64)

    def record(self, cell: NB201Cell) -> dict[str, float | int | str | None]:
        i = self.row(cell)
        out: dict[str, float | int | str | None] = {"nb201_index": int(self.nb201_index[i]), "arch_str": cell.to_str()}
        for name, col in self.columns.items():
            v = float(col[i])
            out[name] = None if v != v else v
        return out

    def best(self, column: str) -> tuple[NB201Cell, float]:
        import numpy as np

        col = self.column(column)
        if np.isnan(col).all():
            raise UnknownNameError(f"NB201 table column {column!r} has no values")
        i = int(np.nanargmax(col))
        return self.cells[i], float(col[i])


def load_nb201_table(
    path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    complete: bool = True,
) -> NB201Table:
    """Read the NB201 accuracy CSV (``path``, or ``nb201/nb201_accuracy.csv`` in the data directory).

    ``complete`` (default): the file must hold all 15,625 cells with the indices 0..15624, as the
    official table does; ``False`` accepts a subset (each cell and index still at most once).
    Raises :class:`DataFileError` naming the file, and the line where there is one, for anything else.
    """
    import numpy as np

    p = Path(path) if path is not None else data_file(RELATIVE_PATH, data_dir)
    table = read_rows(p, _WHAT)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.header]
    if missing:
        raise table.error(f"lacks column(s) {missing}; found {table.header}")
    if not table.rows:
        raise table.error("has no rows")
    cells = arch_column(table)
    repeat = first_repeat(cells)
    if repeat is not None:
        a, b = repeat
        raise table.error(f"cell {cells[b].to_str()} is listed twice (lines {table.lines[a]} and {table.lines[b]})")
    index = _check_index(table, index_column(table, "nb201_index"), complete)
    columns: dict[str, np.ndarray] = {}
    for name in table.header:
        if name not in REQUIRED_COLUMNS:
            columns[name] = _check_column(table, name, number_column(table, name))
    return NB201Table(cells=tuple(cells), nb201_index=np.array(index, dtype=np.int64), columns=columns, path=p)


def _check_index(table: CsvRows, index: list[int], complete: bool) -> list[int]:
    seen: dict[int, int] = {}
    for i, k in enumerate(index):
        if k >= NUM_CELLS:
            raise DataFileError(f"{table.where(i)}: nb201_index {k} out of range 0..{NUM_CELLS - 1}")
        j = seen.setdefault(k, i)
        if j != i:
            raise table.error(f"nb201_index {k} is listed twice (lines {table.lines[j]} and {table.lines[i]})")
    if complete and len(index) != NUM_CELLS:
        raise table.error(
            f"holds {len(index):,} of the {NUM_CELLS:,} NB201 cells (a cut or partial file?); "
            f"pass complete=False to read a subset"
        )
    return index


def _check_column(table: CsvRows, name: str, col: np.ndarray) -> np.ndarray:
    import numpy as np

    if name.startswith("zen_"):
        return np.where(col <= _FAILED_SCORE, np.nan, col)
    if is_accuracy_column(name):
        bad = ~((col >= 0) & (col <= 100)) & ~np.isnan(col)
        expected = "a percentage in [0, 100]"
    elif name == "params_M":
        bad = ~(col > 0) & ~np.isnan(col)
        expected = "a positive number of millions of parameters"
    else:
        return col
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        text = table.rows[i][table.column(name)]
        raise DataFileError(f"{table.where(i)}: column {name!r} has {text!r}, expected {expected} (or empty)")
    return col


__all__ = ["PUBLISHED_OPTIMA", "RELATIVE_PATH", "NB201Table", "is_accuracy_column", "load_nb201_table"]
