"""The device tables of a data directory: which there are, one cell's value on each, or all of them.

A data directory holds device tables in three places (each device name in one place only):

- ``latency/latbench/<device>.pickle``: LatBench (:mod:`.latbench`), milliseconds;
- ``latency/help/help_nb201_latency_ms.csv``: HELP, one column per device, all 15,625 cells;
- ``latency/tables/*.csv``: tables of your own in the same layout (``arch_str`` and one column per
  device, any subset of the cells), milliseconds, e.g. this machine's from
  ``benchmarks/local_latency_nb201.py``.

:func:`device_catalog` (``devicefit devices``) and :func:`device_values` (``devicefit info``) read and
check every file as :func:`load_device_tables` does, but build no :class:`LatencyTable`: with the 36
public tables they take about a quarter of the time. A corrupt file is refused by all three alike.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UnknownNameError
from ..spaces.nb201 import NB201Cell
from .datadir import DataFileError, data_dir
from .latbench import LATBENCH_DIR, load_latbench, read_latbench_ms
from .latency_table import HELP_CSV, LatencyTable, read_latency_columns

OWN_TABLES_DIR = "latency/tables"
_KEY_COLUMNS = ("arch_str", "nb201_index")


@dataclass(frozen=True)
class DeviceTableInfo:
    """One device table of the data directory: name, source (``latbench``, ``help``, ``csv``), how many
    cells have a value, the unit of the values, and the file."""

    name: str
    source: str
    cells: int
    unit: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass(frozen=True)
class _Source:
    name: str
    source: str
    path: Path


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataFileError(f"latency CSV {str(path)!r} cannot be read: {exc}") from None


def _sources(root: Path) -> dict[str, _Source]:
    """Every device name of ``root`` and where its table is (from file names and CSV headers only)."""
    found: list[_Source] = [_Source(p.stem, "latbench", p) for p in sorted((root / LATBENCH_DIR).glob("*.pickle"))]
    csvs = [(root / HELP_CSV, "help")] if (root / HELP_CSV).is_file() else []
    csvs += [(p, "csv") for p in sorted((root / OWN_TABLES_DIR).glob("*.csv"))]
    for path, source in csvs:
        found += [_Source(name, source, path) for name in _header(path) if name not in _KEY_COLUMNS]
    by_name: dict[str, _Source] = {}
    for s in found:
        other = by_name.setdefault(s.name, s)
        if other is not s:
            raise DataFileError(
                f"device {s.name!r} has two tables in the data directory: {str(other.path)!r} and {str(s.path)!r}"
            )
    return dict(sorted(by_name.items()))


def _root(data_dir_path: str | os.PathLike[str] | None) -> Path:
    root = data_dir(data_dir_path)
    assert root is not None
    return root


def _csv_files(sources: dict[str, _Source]) -> dict[Path, str]:
    return {s.path: s.source for s in sources.values() if s.source != "latbench"}


def device_catalog(data_dir: str | os.PathLike[str] | None = None) -> list[DeviceTableInfo]:
    """Every device table of the data directory, by name, with its cell count (each file read and checked)."""
    sources = _sources(_root(data_dir))
    counts: dict[str, int] = {}
    for path, source in _csv_files(sources).items():
        read = read_latency_columns(path, complete=source == "help")
        counts.update({name: read.count(name) for name in read.values})
    out = []
    for name, s in sources.items():
        cells = counts[name] if s.source != "latbench" else len(read_latbench_ms(s.path))
        out.append(DeviceTableInfo(name=name, source=s.source, cells=cells, unit="ms", path=s.path))
    return out


def device_values(cell: NB201Cell, data_dir: str | os.PathLike[str] | None = None) -> dict[str, float | None]:
    """The value (ms) of ``cell`` on every device of the data directory, None where its table lacks it."""
    sources = _sources(_root(data_dir))
    values: dict[str, float | None] = {}
    for path, source in _csv_files(sources).items():
        read = read_latency_columns(path, complete=source == "help")
        i = read.row(cell)
        for name, col in read.values.items():
            v = None if i is None else float(col[i])
            values[name] = None if v is None or v != v else v
    for name, s in sources.items():
        if s.source == "latbench":
            values[name] = read_latbench_ms(s.path).get(cell.ops)
    return {name: values[name] for name in sources}


def load_device_tables(data_dir_path: str | os.PathLike[str] | None = None) -> dict[str, LatencyTable]:
    """Every device table of the data directory (LatBench pickles, the HELP CSV, your own CSVs), by device."""
    sources = _sources(_root(data_dir_path))
    tables: dict[str, LatencyTable] = {}
    for path, source in _csv_files(sources).items():
        read = read_latency_columns(path, complete=source == "help")
        tables.update({name: read.table(name, source=source) for name in read.values})
    for name, s in sources.items():
        if s.source == "latbench":
            tables[name] = load_latbench(s.path)
    return {name: tables[name] for name in sources}


def load_device_table(device: str, data_dir_path: str | os.PathLike[str] | None = None) -> LatencyTable:
    """One device table by name, from the data directory; an unknown name lists the known ones."""
    root = _root(data_dir_path)
    sources = _sources(root)
    if device not in sources:
        raise UnknownNameError(f"unknown device {device!r}; devices in {str(root)!r}: {', '.join(sources)}")
    s = sources[device]
    if s.source == "latbench":
        return load_latbench(s.path)
    return read_latency_columns(s.path, complete=s.source == "help").table(device, source=s.source)


__all__ = [
    "OWN_TABLES_DIR",
    "DeviceTableInfo",
    "device_catalog",
    "device_values",
    "load_device_table",
    "load_device_tables",
]
