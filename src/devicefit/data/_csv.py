"""Strict reading of the CSV tables (NB201 accuracies, HELP-layout latencies): what the file says, or an error.

Why the ``csv`` module and not pandas: ``pandas.read_csv`` renames a repeated column (``dev``, ``dev.1``),
pads a line cut short with NaN, reads ``NA``, ``null`` or ``nan`` as missing, and takes ~0.25 s to import
(the command line should start at once). These tables are small (15,625 rows): the ``csv`` module reads
one in ~50 ms and every rule is here:

- the header is non-empty and its names are distinct and non-blank; every other line has exactly as
  many fields as the header (blank lines are skipped);
- a number is ASCII, finite, written without ``_`` (``float()`` would take ``1_0`` as 10); an empty
  field, or one of ASCII spaces only, is a missing value; ``nan``, ``inf``, words and control characters
  (``str.strip`` would take the separator ``\\x1c`` as a space) are errors;
- an integer index is written as an integer (``3``) or an integral decimal (``3.0``, as tools that store
  the column as floats write it); ``3.5`` and ``3e0`` are errors.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .datadir import DataFileError

if TYPE_CHECKING:
    import numpy as np

# The whitespace ``float()`` strips: ASCII only (``str.strip`` and ``re``'s ``\s`` also take ``\x1c``-``\x1f``).
_SPACE = " \t\n\r\v\f"
_INDEX = re.compile(rf"[{re.escape(_SPACE)}]*\+?([0-9]+)(?:\.0*)?[{re.escape(_SPACE)}]*")


@dataclass(frozen=True)
class CsvRows:
    """The header and the data rows of a CSV file; ``lines[i]`` is the file line on which ``rows[i]`` ends."""

    path: Path
    what: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> int:
        return self.header.index(name)

    def where(self, i: int) -> str:
        """``"<what> '<path>' line <n>"``: where row ``i`` is, for messages."""
        return f"{self.what} {str(self.path)!r} line {self.lines[i]}"

    def error(self, message: str) -> DataFileError:
        return DataFileError(f"{self.what} {str(self.path)!r}: {message}")


def read_rows(path: str | os.PathLike[str], what: str) -> CsvRows:
    """Read ``path`` (UTF-8, an optional byte-order mark) with the checks of the module docstring."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            rows: list[list[str]] = []
            lines: list[int] = []
            if header is not None:
                width = len(header)
                for row in reader:
                    if len(row) != width:
                        if not row or (len(row) == 1 and not row[0].strip()):
                            continue  # a blank line
                        raise DataFileError(
                            f"{what} {str(p)!r} line {reader.line_num}: {len(row)} fields where the header has "
                            f"{width} (a line cut short or a stray comma?)"
                        )
                    rows.append(row)
                    lines.append(reader.line_num)
    except FileNotFoundError:
        raise DataFileError(f"{what} {str(p)!r} not found") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataFileError(f"{what} {str(p)!r} is not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise DataFileError(f"{what} {str(p)!r} cannot be read: {exc}") from None
    if header is None:
        raise DataFileError(f"{what} {str(p)!r} is empty: no header line")
    if not any(h.strip() for h in header):
        raise DataFileError(f"{what} {str(p)!r}: the first line, where the header belongs, is blank")
    blank = [i for i, h in enumerate(header) if not h.strip()]
    if blank:
        raise DataFileError(f"{what} {str(p)!r}: header column {blank[0] + 1} has no name")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataFileError(f"{what} {str(p)!r}: column(s) {repeated} appear more than once in the header")
    return CsvRows(p, what, header, rows, lines)


def number_column(table: CsvRows, name: str) -> np.ndarray:
    """Column ``name`` as float64, NaN where the field is empty; any other non-number is an error."""
    import numpy as np

    j = table.column(name)
    texts = [row[j] for row in table.rows]
    joined = "".join(texts)
    if "_" not in joined and joined.isascii():
        try:
            values = np.array([float(s) for s in texts], dtype=np.float64)
        except ValueError:  # empty fields (missing values) or a bad one: the careful pass below
            pass
        else:
            if np.isfinite(values).all():
                return values
    values = np.empty(len(texts), dtype=np.float64)
    for i, s in enumerate(texts):
        if not s.strip(_SPACE):
            values[i] = math.nan
            continue
        v = _number(s)
        if v is None:
            raise DataFileError(
                f"{table.where(i)}: column {name!r} has {s!r}, expected a finite number (or an empty field "
                f"for a missing value)"
            )
        values[i] = v
    return values


def _number(text: str) -> float | None:
    if "_" in text or not text.isascii():
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def index_column(table: CsvRows, name: str) -> list[int]:
    """Column ``name`` as non-negative ints (``3`` or ``3.0``; empty fields, ``3.5``, ``-1`` are errors)."""
    j = table.column(name)
    out: list[int] = []
    for i, row in enumerate(table.rows):
        m = _INDEX.fullmatch(row[j])
        if m is None:
            raise DataFileError(f"{table.where(i)}: column {name!r} has {row[j]!r}, expected a non-negative integer")
        out.append(int(m.group(1)))
    return out


__all__ = ["CsvRows", "index_column", "number_column", "read_rows"]
