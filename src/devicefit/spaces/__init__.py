"""Search spaces: what a candidate is (parse, enumerate, sample, mutate, encode, build).

The :class:`Space` protocol (:mod:`.base`) and the spaces that implement it, by registry name
(:data:`SPACES`, :func:`get_space`). Importing this package does not import torch: the network
modules (``build_nb201``, ``NB201Network``) are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devicefit._lazy import lazy_exports

from ..errors import InputError, UnknownNameError
from .base import CategoricalSpace, EncodableSpace, LabelledGraph, MutableSpace, Space
from .nb201 import (
    EDGES,
    NUM_CELLS,
    OPS,
    ArchStringError,
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
from .nb201_space import NB201Space

if TYPE_CHECKING:
    from .nb201_model import NB201Network, build_nb201

#: Every space by its registry name (:attr:`Space.name`).
SPACES: dict[str, type[Space[Any]]] = {NB201Space.name: NB201Space}

_LAZY = {"NB201Network": "nb201_model", "build_nb201": "nb201_model"}


def get_space(name: str, **options: Any) -> Space[Any]:
    """A space by registry name, with its constructor options (e.g. ``get_space("nb201", prune_graph=True)``).

    ``get_space(s["space"], **{k: v for k, v in s.items() if k != "space"})`` rebuilds a space from its
    :meth:`Space.settings` ``s``.
    """
    if name not in SPACES:
        raise UnknownNameError(f"unknown search space {name!r}; known spaces: {', '.join(sorted(SPACES))}")
    import inspect

    cls = SPACES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"space {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    return cls(**options)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "EDGES",
    "NUM_CELLS",
    "OPS",
    "SPACES",
    "ArchStringError",
    "CategoricalSpace",
    "EncodableSpace",
    "LabelledGraph",
    "MutableSpace",
    "NB201Cell",
    "NB201Network",
    "NB201Space",
    "Space",
    "all_cells",
    "build_nb201",
    "canonical_key",
    "cell_graph",
    "format_arch_str",
    "get_space",
    "parse_arch_str",
    "sample_cell",
    "sample_unique_cells",
    "space_statistics",
    "twin_pairs",
]
