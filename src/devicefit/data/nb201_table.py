"""The NAS-Bench-201 accuracy table (``nb201/nb201_accuracy.csv``): one row per cell, official index.

Reference: arXiv 2001.00326. Columns are described in the data README; accuracies are percentages.
Zen-NAS scores of -1e8 (the upstream failure marker) are read as missing (NaN), never as a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import OutOfRangeError, UnknownNameError
from ..spaces.nb201 import ArchStringError, NB201Cell
from .datadir import DataFileError, data_file

RELATIVE_PATH = "nb201/nb201_accuracy.csv"
REQUIRED_COLUMNS = ("nb201_index", "arch_str")
#: The accuracy columns with the benchmark's published optimum (percent), where known.
PUBLISHED_OPTIMA = {"c10_test_200ep": 94.37, "c100_test_200ep": 73.51, "in16_val_200ep": 47.33}
_FAILED_SCORE = -1e8


@dataclass(frozen=True)
class NB201Table:
    """Rows of the NB201 table, aligned: ``cells[i]``, ``nb201_index[i]`` and ``columns[name][i]``."""

    cells: tuple[NB201Cell, ...]
    nb201_index: np.ndarray
    columns: dict[str, np.ndarray]
    path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_row", {c: i for i, c in enumerate(self.cells)})
        object.__setattr__(self, "_row_of_index", {int(k): i for i, k in enumerate(self.nb201_index)})

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def accuracy_columns(self) -> list[str]:
        return [c for c in self.columns if "_test_" in c or "_val" in c or c.endswith("_valid_200ep")]

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
        return None if np.isnan(v) else v

    def values(self, cells: list[NB201Cell], column: str) -> np.ndarray:
        col = self.column(column)
        return np.array([col[self.row(c)] for c in cells], dtype=np.float64)

    def record(self, cell: NB201Cell) -> dict[str, float | int | str | None]:
        i = self.row(cell)
        out: dict[str, float | int | str | None] = {"nb201_index": int(self.nb201_index[i]), "arch_str": cell.to_str()}
        for name, col in self.columns.items():
            v = float(col[i])
            out[name] = None if np.isnan(v) else v
        return out

    def best(self, column: str) -> tuple[NB201Cell, float]:
        col = self.column(column)
        i = int(np.nanargmax(col))
        return self.cells[i], float(col[i])


def load_nb201_table(
    path: str | os.PathLike[str] | None = None, *, data_dir: str | os.PathLike[str] | None = None
) -> NB201Table:
    """Read the NB201 accuracy CSV (``path``, or ``nb201/nb201_accuracy.csv`` in the data directory)."""
    p = Path(path) if path is not None else data_file(RELATIVE_PATH, data_dir)
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFileError(f"NB201 table {str(p)!r} is not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataFileError(f"NB201 table {str(p)!r} lacks column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise DataFileError(f"NB201 table {str(p)!r} has no rows")
    try:
        cells = tuple(NB201Cell.from_str(s) for s in df["arch_str"])
    except ArchStringError as exc:
        raise DataFileError(f"NB201 table {str(p)!r}: {exc}") from exc
    if len(set(cells)) != len(cells):
        raise DataFileError(f"NB201 table {str(p)!r} lists some cells twice")
    index = pd.to_numeric(df["nb201_index"], errors="coerce").to_numpy()
    if np.isnan(index).any() or len(np.unique(index)) != len(index):
        raise DataFileError(f"NB201 table {str(p)!r}: nb201_index must be unique integers")
    columns: dict[str, np.ndarray] = {}
    for name in df.columns:
        if name in REQUIRED_COLUMNS:
            continue
        col = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = df[name].notna().to_numpy() & np.isnan(col)
        if bad.any():
            raise DataFileError(
                f"NB201 table {str(p)!r}: column {name!r} has non-numeric value {df[name][bad].iloc[0]!r}"
            )
        if name.startswith("zen_"):
            col = np.where(col <= _FAILED_SCORE, np.nan, col)
        columns[name] = col
    return NB201Table(cells=cells, nb201_index=index.astype(np.int64), columns=columns, path=p)
