"""Search spaces: what a candidate is (parse, enumerate, sample, mutate, encode, build)."""

from .nb201 import (
    EDGES,
    NUM_CELLS,
    OPS,
    ArchStringError,
    CellGraph,
    NB201Cell,
    all_cells,
    canonical_key,
    cell_graph,
    format_arch_str,
    parse_arch_str,
    sample_cell,
    sample_unique_cells,
    space_statistics,
    twin_pairs,
)
from .nb201_model import NB201Network, build_nb201

__all__ = [
    "EDGES",
    "NUM_CELLS",
    "OPS",
    "ArchStringError",
    "CellGraph",
    "NB201Cell",
    "NB201Network",
    "all_cells",
    "build_nb201",
    "canonical_key",
    "cell_graph",
    "format_arch_str",
    "parse_arch_str",
    "sample_cell",
    "sample_unique_cells",
    "space_statistics",
    "twin_pairs",
]
