"""NB201 cells for the table readers: arch strings and op tuples to shared :class:`NB201Cell` objects.

Every table of a data directory names the same 15,625 cells; 36 device tables hold ~550,000 entries.
Parsing each arch string (~14 µs) or building each cell (~1 µs) again would be most of the load time,
so each reader looks the text or tuple up in one map built once per process. A string that is not in
the map goes through :meth:`NB201Cell.from_str`, so the accepted strings are exactly the parser's.
Cells are frozen dataclasses: sharing one object between tables is safe.
"""

from __future__ import annotations

from functools import cache

from ..spaces.nb201 import OPS, NB201Cell, all_cells
from ._csv import CsvRows
from .datadir import DataFileError


@cache
def cell_of_ops() -> dict[tuple[int, ...], NB201Cell]:
    """Every cell by its op tuple (plain ints)."""
    return {c.ops: c for c in all_cells()}


#: The official arch string of an op tuple: node j lists its edges from nodes 0..j-1 (as format_arch_str).
_ARCH_FORMAT = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"


@cache
def _cell_of_str() -> dict[str, NB201Cell]:
    return {_ARCH_FORMAT.format(*(OPS[o] for o in ops)): c for ops, c in cell_of_ops().items()}


def cell_from_str(text: str) -> NB201Cell:
    """The cell of an arch string (shared object); :class:`ArchStringError` when it is not one."""
    cell = _cell_of_str().get(text)
    return cell if cell is not None else NB201Cell.from_str(text)


def arch_column(table: CsvRows, name: str = "arch_str") -> list[NB201Cell]:
    """Column ``name`` of ``table`` as cells; a malformed string is a :class:`DataFileError` naming its line."""
    from ..errors import InputError

    j = table.column(name)
    lookup = _cell_of_str()
    cells: list[NB201Cell] = []
    for i, row in enumerate(table.rows):
        cell = lookup.get(row[j])
        if cell is None:
            try:
                cell = NB201Cell.from_str(row[j])
            except InputError as exc:
                raise DataFileError(f"{table.where(i)}: {exc}") from None
        cells.append(cell)
    return cells


def first_repeat(cells: list[NB201Cell]) -> tuple[int, int] | None:
    """Positions ``(first, second)`` of the first cell listed twice, or None."""
    if len(set(cells)) == len(cells):
        return None
    seen: dict[NB201Cell, int] = {}
    for i, c in enumerate(cells):
        j = seen.setdefault(c, i)
        if j != i:
            return j, i
    return None


__all__ = ["arch_column", "cell_from_str", "cell_of_ops", "first_repeat"]
