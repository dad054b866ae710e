"""Per-device cost tables of candidates behind one type, :class:`LatencyTable`, and their CSV layout.

A table holds the cost of candidates of one search space on one device. NAS-Bench-201 is the space with
published tables (LatBench pickles, :mod:`.latbench`; the HELP CSV, :func:`load_help`); a table of any
other space (:class:`~devicefit.spaces.Space`) works the same way, e.g. costs measured here.

CSV layout (HELP's, arXiv 2106.08630, HayeonLee/HELP): one row per candidate, one value column per
device, an empty field for a missing value. NB201 candidates are named by ``arch_str`` (plus an optional
``nb201_index``); other spaces by ``candidate``, the candidate's :meth:`Space.identity` (its JSON).
:func:`read_latency_csv` checks what :mod:`._csv` checks (header, line widths, numbers) and that no
candidate appears twice; a table of your own may hold any subset of the candidates, while the HELP file
(:func:`load_help`) must hold each of the 15,625 NB201 cells once, with the indices 0..15624.

A missing value is absent from the table, never a sentinel; a value is finite and positive.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UnknownNameError
from ..spaces.nb201 import NUM_CELLS, NB201Cell
from ._cells import arch_column, first_repeat
from ._csv import CsvRows, index_column, number_column, read_rows
from .datadir import DataFileError, data_dir

if TYPE_CHECKING:
    import numpy as np

    from ..spaces.base import Space

HELP_CSV = "latency/help/help_nb201_latency_ms.csv"
ARCH_COLUMN = "arch_str"
INDEX_COLUMN = "nb201_index"
CANDIDATE_COLUMN = "candidate"
_KEY_COLUMNS = (ARCH_COLUMN, INDEX_COLUMN, CANDIDATE_COLUMN)
_WHAT = "latency CSV"


def nb201_space() -> Space[Any]:
    """The NB201 space (``devicefit.spaces.get_space("nb201")``), made once per process."""
    global _NB201
    if _NB201 is None:
        from ..spaces import get_space

        _NB201 = get_space("nb201")
    return _NB201


_NB201: Space[Any] | None = None


def _is_nb201(space: Space[Any] | None) -> bool:
    return space is None or getattr(space, "name", None) == "nb201"


@dataclass(frozen=True)
class LatencyTable:
    """Cost of candidates on one device: ``values[candidate]`` in ``unit`` ("ms" for latency, "mJ" for energy).

    ``space`` is the candidates' search space (default: NB201, whose candidates are :class:`NB201Cell`).
    The values are stored as a new dict of floats; the constructor refuses a key that is not a candidate
    of ``space`` (:class:`InputError`) and a value that is not a finite positive number (:class:`DataFileError`).
    """

    device: str
    unit: str
    values: Mapping[Any, float]
    source: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)
    space: Space[Any] = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.space is None:
            object.__setattr__(self, "space", nb201_space())
        keys = list(self.values)
        if _is_nb201(self.space):
            if set(map(type, keys)) - {NB201Cell} and not all(isinstance(c, NB201Cell) for c in keys):
                bad = next(c for c in keys if not isinstance(c, NB201Cell))
                raise InputError(
                    f"latency table {self.device!r}: keys must be NB201Cell, got {type(bad).__name__}: {bad!r:.100}"
                )
        else:
            for c in keys:
                if not self.space.contains(c):
                    raise InputError(
                        f"latency table {self.device!r}: {c!r:.100} is not a candidate of space {self.space.name!r}"
                    )
        raw = list(self.values.values())
        if type(self.values) is dict and set(map(type, raw)) <= {float}:
            self._check_values(keys, raw)
            values = self.values.copy()  # a dict's copy keeps the keys' hashes: no key is hashed again
        else:
            values = dict(zip(keys, self._check_values(keys, raw)))
        object.__setattr__(self, "values", values)

    def _check_values(self, keys: list[Any], raw: list[Any]) -> list[float]:
        """``raw`` as floats; :class:`DataFileError` naming the first that is not a finite positive number."""
        import numpy as np

        fast = set(map(type, raw)) <= {float, int, np.float64, np.float32, np.int64, np.int32}
        try:
            arr = np.array(raw, dtype=np.float64) if fast or all(map(_is_real, raw)) else None
        except (OverflowError, TypeError, ValueError):
            arr = None
        ok = None if arr is None else np.isfinite(arr) & (arr > 0)
        if ok is None or not ok.all():
            i = next(i for i, v in enumerate(raw) if not _is_valid(v))
            raise DataFileError(
                f"latency table {self.device!r}: {self.name_of(keys[i])} has invalid value {raw[i]!r:.100} "
                f"(expected a finite positive number of {self.unit})"
            )
        return arr.tolist()

    def name_of(self, candidate: Any) -> str:
        """How messages and CSV files name a candidate: its arch string (NB201) or :meth:`Space.identity`."""
        if isinstance(candidate, NB201Cell):
            return candidate.to_str()
        try:
            return self.space.identity(candidate)
        except Exception:
            return repr(candidate)[:200]

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, cell: object) -> bool:
        try:
            return cell in self.values
        except TypeError:  # unhashable: not a candidate
            return False

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values)

    def __getitem__(self, cell: Any) -> float:
        try:
            return self.values[cell]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"cell {self.name_of(cell)} has no {self.unit} value on device {self.device!r}"
            ) from None

    def get(self, cell: Any) -> float | None:
        try:
            return self.values.get(cell)
        except TypeError:
            return None

    def cells(self) -> list[Any]:
        return list(self.values)

    def array(self, cells: Iterable[Any]) -> np.ndarray:
        """Values of ``cells`` in order; raises KeyError naming the first missing cell."""
        import numpy as np

        return np.array([self[c] for c in cells], dtype=np.float64)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write as ``arch_str,<device>`` (HELP layout; ``candidate,<device>`` for other spaces)."""
        write_latency_csv(path, [self])


def _is_real(v: object) -> bool:
    import numpy as np

    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_valid(v: object) -> bool:
    try:
        return _is_real(v) and math.isfinite(float(v)) and float(v) > 0  # type: ignore[arg-type]
    except OverflowError:
        return False


# -- HELP-layout CSVs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyColumns:
    """A checked latency CSV before it becomes tables: ``values[device][i]`` belongs to ``candidates[i]``
    (NaN where missing; every other value finite and positive)."""

    path: Path
    candidates: list[Any]
    values: dict[str, np.ndarray]
    space: Space[Any] | None = None

    def count(self, device: str) -> int:
        """How many candidates have a value on ``device``."""
        col = self.values[device]
        return int((col == col).sum())

    def row(self, candidate: Any) -> int | None:
        """The row of ``candidate``, or None."""
        try:
            return self.candidates.index(candidate)
        except ValueError:
            return None

    def table(self, device: str, *, unit: str = "ms", source: str = "csv") -> LatencyTable:
        col = self.values[device].tolist()
        kept = {c: v for c, v in zip(self.candidates, col) if v == v}
        return LatencyTable(device, unit, kept, source=source, meta={"path": str(self.path)}, space=self.space)


def read_latency_columns(
    path: str | os.PathLike[str], *, unit: str = "ms", space: Space[Any] | None = None, complete: bool = False
) -> LatencyColumns:
    """Read and check a HELP-layout CSV (see :func:`read_latency_csv`) without building tables."""
    p = Path(path)
    rows = read_rows(p, _WHAT)
    nb201 = _is_nb201(space)
    key_column = ARCH_COLUMN if nb201 else CANDIDATE_COLUMN
    if key_column not in rows.header:
        raise rows.error(f"lacks the {key_column!r} column; found {rows.header}")
    devices = [c for c in rows.header if c not in _KEY_COLUMNS]
    if not devices:
        raise rows.error(f"has no device columns besides {key_column}")
    candidates = arch_column(rows) if nb201 else _candidate_column(rows, space)
    repeat = first_repeat(candidates)
    if repeat is not None:
        a, b = repeat
        name = rows.rows[b][rows.column(key_column)]
        raise rows.error(f"{name} is listed twice (lines {rows.lines[a]} and {rows.lines[b]})")
    if nb201 and INDEX_COLUMN in rows.header:
        _check_nb201_index(rows)
    elif complete:
        raise rows.error(f"lacks the {INDEX_COLUMN!r} column of the complete NB201 layout")
    if complete and len(candidates) != NUM_CELLS:
        raise rows.error(f"holds {len(candidates):,} of the {NUM_CELLS:,} NB201 cells (a cut or partial file?)")
    values = {}
    for name in devices:
        col = number_column(rows, name)
        bad = [i for i, v in enumerate(col.tolist()) if v <= 0]
        if bad:
            raise DataFileError(
                f"{rows.where(bad[0])}: column {name!r} has {rows.rows[bad[0]][rows.column(name)]!r}, expected a "
                f"positive number of {unit} (or an empty field)"
            )
        values[name] = col
    return LatencyColumns(p, candidates, values, space)


def read_latency_csv(
    path: str | os.PathLike[str],
    *,
    unit: str = "ms",
    source: str = "csv",
    columns: Iterable[str] | None = None,
    space: Space[Any] | None = None,
    complete: bool = False,
) -> dict[str, LatencyTable]:
    """Read a CSV with one value column per device (empty = missing), by device.

    Candidates are named by ``arch_str`` for NB201 (``space`` None or the NB201 space) and by
    ``candidate`` (:meth:`Space.identity`) for other spaces. ``columns`` picks devices (the whole file is
    still checked). ``complete``: every NB201 cell must have a row and ``nb201_index`` must be 0..15624,
    as in the HELP file. Raises :class:`DataFileError` naming the file and the line for anything the
    file does not say plainly: a malformed or repeated candidate, a line cut short, a non-number.
    """
    read = read_latency_columns(path, unit=unit, space=space, complete=complete)
    wanted = list(read.values)
    if columns is not None:
        wanted = list(columns)
        unknown = [c for c in wanted if c not in read.values]
        if unknown:
            raise DataFileError(
                f"{_WHAT} {str(read.path)!r} has no device column(s) {unknown}; devices: {list(read.values)}"
            )
    return {name: read.table(name, unit=unit, source=source) for name in wanted}


def _candidate_column(rows: CsvRows, space: Space[Any] | None) -> list[Any]:
    assert space is not None
    j = rows.column(CANDIDATE_COLUMN)
    out = []
    for i, row in enumerate(rows.rows):
        try:
            out.append(space.from_identity(row[j]))
        except InputError as exc:
            raise DataFileError(f"{rows.where(i)}: {exc}") from None
    return out


def _check_nb201_index(rows: CsvRows) -> None:
    index = index_column(rows, INDEX_COLUMN)
    seen: dict[int, int] = {}
    for i, k in enumerate(index):
        if k >= NUM_CELLS:
            raise DataFileError(f"{rows.where(i)}: {INDEX_COLUMN} {k} out of range 0..{NUM_CELLS - 1}")
        j = seen.setdefault(k, i)
        if j != i:
            raise rows.error(f"{INDEX_COLUMN} {k} is listed twice (lines {rows.lines[j]} and {rows.lines[i]})")


def write_latency_csv(path: str | os.PathLike[str], tables: list[LatencyTable]) -> None:
    """Write tables of one unit and one space side by side (``arch_str`` or ``candidate``, then a column per
    device); missing values are empty, values are written exactly (``repr``: read back bit for bit)."""
    if not tables:
        raise InputError("write_latency_csv needs at least one table")
    units = {t.unit for t in tables}
    if len(units) != 1:
        raise InputError(f"tables to write together must share a unit, got {sorted(units)}")
    names = [t.device for t in tables]
    repeated = sorted({n for n in names if names.count(n) > 1})
    reserved = [n for n in names if n in _KEY_COLUMNS or not n.strip()]
    if repeated or reserved:
        raise InputError(
            f"device names must be distinct, non-blank and none of {list(_KEY_COLUMNS)}; got {repeated or reserved}"
        )
    nb201 = [_is_nb201(t.space) for t in tables]
    settings = {repr(None if n else t.space.settings()) for n, t in zip(nb201, tables)}
    if len(settings) != 1:
        raise InputError("tables to write together must hold candidates of one space")
    first = tables[0]
    candidates: dict[str, Any] = {}
    for t in tables:
        for c in t.values:
            candidates.setdefault(first.name_of(c), c)
    order = sorted(candidates.values()) if nb201[0] else [candidates[k] for k in sorted(candidates)]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([ARCH_COLUMN if nb201[0] else CANDIDATE_COLUMN, *names])
        for c in order:
            row = [first.name_of(c)]
            for t in tables:
                v = t.values.get(c)
                row.append("" if v is None else repr(float(v)))
            w.writerow(row)


def load_help(
    path: str | os.PathLike[str] | None = None, *, data_dir_path: str | os.PathLike[str] | None = None
) -> dict[str, LatencyTable]:
    """All device columns of the HELP NB201 latency CSV (milliseconds): all 15,625 cells, indices 0..15624."""
    if path is None:
        root = data_dir(data_dir_path)
        assert root is not None
        path = root / HELP_CSV
    return read_latency_csv(path, unit="ms", source="help", complete=True)


__all__ = [
    "HELP_CSV",
    "LatencyColumns",
    "LatencyTable",
    "load_help",
    "nb201_space",
    "read_latency_columns",
    "read_latency_csv",
    "write_latency_csv",
]
