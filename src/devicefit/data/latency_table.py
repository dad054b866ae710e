"""Per-device cost tables of NB201 cells behind one type, :class:`LatencyTable`.

Sources and upstream formats:
- LatBench (BRP-NAS, arXiv 2007.08668, SamsungLabs/eagle): a pickled ``{tuple of 6 op ids: seconds}``
  per device; read with a restricted unpickler (plain containers and numpy scalars only) and
  converted to milliseconds.
- HELP (arXiv 2106.08630, HayeonLee/HELP): one CSV, ``nb201_index, arch_str`` and a column per
  device setting, in milliseconds.
- devicefit's own tables (e.g. this machine's, from ``benchmarks/local_latency_nb201.py``): the same
  CSV layout as HELP, ``arch_str`` plus one column per device.

A missing cell is absent from the table, never a sentinel value.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, UnknownNameError
from ..spaces.nb201 import ArchStringError, NB201Cell
from .datadir import DataFileError, data_dir

LATBENCH_DIR = "latency/latbench"
HELP_CSV = "latency/help/help_nb201_latency_ms.csv"
_SECONDS_TO_MS = 1000.0


@dataclass(frozen=True)
class LatencyTable:
    """Cost of NB201 cells on one device: ``values[cell]`` in ``unit`` ("ms" for latency, "mJ" for energy)."""

    device: str
    unit: str
    values: Mapping[NB201Cell, float]
    source: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for cell, v in self.values.items():
            if not isinstance(cell, NB201Cell):
                raise TypeError(f"latency table {self.device!r}: keys must be NB201Cell, got {type(cell).__name__}")
            if not (math.isfinite(v) and v > 0):
                raise DataFileError(f"latency table {self.device!r}: cell {cell.to_str()} has invalid value {v!r}")

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, cell: object) -> bool:
        return cell in self.values

    def __iter__(self) -> Iterator[NB201Cell]:
        return iter(self.values)

    def __getitem__(self, cell: NB201Cell) -> float:
        try:
            return self.values[cell]
        except KeyError:
            raise UnknownNameError(f"cell {cell.to_str()} has no {self.unit} value on device {self.device!r}") from None

    def get(self, cell: NB201Cell) -> float | None:
        return self.values.get(cell)

    def cells(self) -> list[NB201Cell]:
        return list(self.values)

    def array(self, cells: Iterable[NB201Cell]) -> np.ndarray:
        """Values of ``cells`` in order; raises KeyError naming the first missing cell."""
        return np.array([self[c] for c in cells], dtype=np.float64)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write as ``arch_str,<device>`` (HELP layout), one row per cell."""
        write_latency_csv(path, [self])


# -- LatBench pickles -----------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy scalars allowed")


def load_latbench(path: str | os.PathLike[str], device: str | None = None) -> LatencyTable:
    """Read one LatBench pickle (``{op-id tuple: seconds}``) as a table in milliseconds."""
    p = Path(path)
    name = device or p.stem
    try:
        raw = _SafeUnpickler(io.BytesIO(p.read_bytes())).load()
    except FileNotFoundError:
        raise DataFileError(f"LatBench file {str(p)!r} not found") from None
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataFileError(f"LatBench file {str(p)!r} is not a readable LatBench pickle: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise DataFileError(f"LatBench file {str(p)!r}: expected a non-empty dict of op tuples to seconds")
    values: dict[NB201Cell, float] = {}
    for key, seconds in raw.items():
        try:
            cell = NB201Cell(tuple(key))
            v = float(seconds) * _SECONDS_TO_MS
        except (ArchStringError, TypeError, ValueError) as exc:
            raise DataFileError(f"LatBench file {str(p)!r}: bad entry {key!r}: {seconds!r} ({exc})") from exc
        values[cell] = v
    return LatencyTable(device=name, unit="ms", values=values, source="latbench", meta={"path": str(p)})


# -- HELP-layout CSVs -------------------------------------------------------------------------------
def read_latency_csv(
    path: str | os.PathLike[str], *, unit: str = "ms", source: str = "csv", columns: Iterable[str] | None = None
) -> dict[str, LatencyTable]:
    """Read a CSV with an ``arch_str`` column and one value column per device (empty = missing)."""
    p = Path(path)
    try:
        df = pd.read_csv(p)
    except FileNotFoundError:
        raise DataFileError(f"latency CSV {str(p)!r} not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFileError(f"latency CSV {str(p)!r} is not a readable CSV: {exc}") from exc
    if "arch_str" not in df.columns:
        raise DataFileError(f"latency CSV {str(p)!r} lacks the 'arch_str' column; found {list(df.columns)}")
    try:
        cells = [NB201Cell.from_str(s) for s in df["arch_str"]]
    except ArchStringError as exc:
        raise DataFileError(f"latency CSV {str(p)!r}: {exc}") from exc
    wanted = [c for c in df.columns if c not in ("arch_str", "nb201_index")]
    if columns is not None:
        columns = list(columns)
        unknown = [c for c in columns if c not in wanted]
        if unknown:
            raise DataFileError(f"latency CSV {str(p)!r} has no device column(s) {unknown}; devices: {wanted}")
        wanted = columns
    if not wanted:
        raise DataFileError(f"latency CSV {str(p)!r} has no device columns besides arch_str")
    tables = {}
    for name in wanted:
        col = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = df[name].notna().to_numpy() & ~np.isfinite(col)
        if bad.any():
            raise DataFileError(
                f"latency CSV {str(p)!r}: column {name!r} has non-numeric value {df[name][bad].iloc[0]!r}"
            )
        values = {c: float(v) for c, v in zip(cells, col) if not np.isnan(v)}
        tables[name] = LatencyTable(device=name, unit=unit, values=values, source=source, meta={"path": str(p)})
    return tables


def write_latency_csv(path: str | os.PathLike[str], tables: list[LatencyTable]) -> None:
    """Write tables of one unit side by side as ``arch_str,<device>...``; missing cells are empty."""
    if not tables:
        raise InputError("write_latency_csv needs at least one table")
    units = {t.unit for t in tables}
    if len(units) != 1:
        raise InputError(f"tables to write together must share a unit, got {sorted(units)}")
    cells = sorted(set().union(*(t.values.keys() for t in tables)))
    df = pd.DataFrame({"arch_str": [c.to_str() for c in cells]})
    for t in tables:
        df[t.device] = [t.values.get(c, np.nan) for c in cells]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")


def load_help(
    path: str | os.PathLike[str] | None = None, *, data_dir_path: str | os.PathLike[str] | None = None
) -> dict[str, LatencyTable]:
    """All device columns of the HELP NB201 latency CSV (milliseconds)."""
    if path is None:
        root = data_dir(data_dir_path)
        assert root is not None
        path = root / HELP_CSV
    return read_latency_csv(path, unit="ms", source="help")


# -- all tables of a data directory ----------------------------------------------------------------
def load_device_tables(data_dir_path: str | os.PathLike[str] | None = None) -> dict[str, LatencyTable]:
    """Every device table found in the data directory (LatBench pickles and the HELP CSV), by device."""
    root = data_dir(data_dir_path)
    assert root is not None
    tables: dict[str, LatencyTable] = {}
    for pkl in sorted((root / LATBENCH_DIR).glob("*.pickle")):
        tables[pkl.stem] = load_latbench(pkl)
    help_csv = root / HELP_CSV
    if help_csv.is_file():
        tables.update(load_help(help_csv))
    return tables


def load_device_table(device: str, data_dir_path: str | os.PathLike[str] | None = None) -> LatencyTable:
    """One device table by name, from the data directory; an unknown name lists the known ones."""
    root = data_dir(data_dir_path)
    assert root is not None
    pkl = root / LATBENCH_DIR / f"{device}.pickle"
    if pkl.is_file():
        return load_latbench(pkl)
    help_csv = root / HELP_CSV
    if help_csv.is_file():
        header = pd.read_csv(help_csv, nrows=0).columns
        if device in header and device not in ("arch_str", "nb201_index"):
            return read_latency_csv(help_csv, source="help", columns=[device])[device]
    known = sorted(load_device_tables(root))
    raise UnknownNameError(f"unknown device {device!r}; devices in {str(root)!r}: {', '.join(known)}")
