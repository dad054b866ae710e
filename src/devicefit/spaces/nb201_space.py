"""NAS-Bench-201 as a :class:`~devicefit.spaces.base.Space`: sample, key, JSON, build, neighbours, encodings.

The cells themselves (arch strings, the op tuple, keys, graphs) are :mod:`.nb201`; the network is
:mod:`.nb201_model`, imported on first :meth:`NB201Space.build`, so this module imports neither torch nor
numpy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .base import CategoricalSpace, EncodableSpace, LabelledGraph, MutableSpace
from .nb201 import (
    EDGES,
    GRAPH_LABELS,
    MAX_GRAPH_NODES,
    NUM_EDGES,
    NUM_OPS,
    ArchStringError,
    NB201Cell,
    cell_graph,
    sample_cell,
)

if TYPE_CHECKING:
    import numpy as np

    from .nb201_model import NB201Network


class NB201Space(MutableSpace[NB201Cell], EncodableSpace[NB201Cell], CategoricalSpace[NB201Cell]):
    """NAS-Bench-201 as a :class:`~devicefit.spaces.base.Space`: candidates are :class:`NB201Cell`.

    - ``sample``: uniform over all 15,625 cells (:func:`sample_cell`), duplicates and disconnected
      cells included, as NB201's random search samples;
    - ``key``: NB201's ``to_unique_str`` (:func:`canonical_key`, 6,466 keys);
    - ``to_json`` / ``from_json``: the official arch string, and only an arch string back;
    - ``build``: the benchmark's CIFAR network (:func:`~devicefit.spaces.build_nb201`);
    - ``neighbours``: the 24 cells one edge away; ``mutate`` one of them at random (NB201's REA);
    - ``encode_vector``: the 6 x 5 one-hot (30 floats); ``encode_graph``: the operations-on-nodes DAG
      of :func:`cell_graph`.

    ``prune_graph`` (recorded in :meth:`settings`): ``False`` (default) keeps dangling ops in the graph,
    because the network still computes them and they cost time on a device (what the latency predictors
    use); ``True`` gives eagle's pruned graph, which shows only what reaches the output.
    """

    name = "nb201"

    def __init__(self, *, prune_graph: bool = False) -> None:
        if not isinstance(prune_graph, bool):
            raise InputError(f"nb201 space option prune_graph must be true or false, got {prune_graph!r}")
        self.prune_graph = prune_graph

    def __repr__(self) -> str:
        return f"NB201Space(prune_graph={self.prune_graph})"

    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "prune_graph": self.prune_graph}

    # -- Space -------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> NB201Cell:
        return sample_cell(rng)

    def key(self, candidate: NB201Cell) -> str:
        return _cell(candidate).canonical_key()

    def to_json(self, candidate: NB201Cell) -> str:
        return _cell(candidate).to_str()

    def from_json(self, data: Any) -> NB201Cell:
        if not isinstance(data, str):
            raise ArchStringError(
                f"nb201 candidate data must be an arch string, got {type(data).__name__}: {data!r:.200}"
            )
        return NB201Cell.from_str(data)

    def build(
        self, candidate: NB201Cell, *, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5
    ) -> NB201Network:
        from .nb201_model import build_nb201

        cell = _cell(candidate)
        return build_nb201(cell, channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes)

    # -- MutableSpace --------------------------------------------------------------------------------
    def neighbours(self, candidate: NB201Cell) -> list[NB201Cell]:
        return _cell(candidate).neighbours()

    # -- EncodableSpace ------------------------------------------------------------------------------
    @property
    def vector_size(self) -> int:
        return NUM_EDGES * NUM_OPS

    def encode_vector(self, candidate: NB201Cell) -> np.ndarray:
        return _cell(candidate).one_hot()

    @property
    def node_labels(self) -> tuple[str, ...]:
        return GRAPH_LABELS

    @property
    def max_nodes(self) -> int:
        return MAX_GRAPH_NODES

    def encode_graph(self, candidate: NB201Cell) -> LabelledGraph:
        return cell_graph(_cell(candidate).ops, prune=self.prune_graph)

    # -- CategoricalSpace ----------------------------------------------------------------------------
    @property
    def choices(self) -> tuple[int, ...]:
        return (NUM_OPS,) * NUM_EDGES

    def to_choices(self, candidate: NB201Cell) -> tuple[int, ...]:
        return _cell(candidate).ops

    def from_choices(self, choices: Sequence[int]) -> NB201Cell:
        return NB201Cell(tuple(choices))

    @property
    def decision_names(self) -> tuple[str, ...]:
        return tuple(f"edge_{a}_{b}" for a, b in EDGES)


def _cell(candidate: object) -> NB201Cell:
    if not isinstance(candidate, NB201Cell):
        raise InputError(f"nb201 candidate must be an NB201Cell, got {type(candidate).__name__}: {candidate!r:.200}")
    return candidate
