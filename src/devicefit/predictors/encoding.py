"""Encodings of candidates of any encodable space for the predictors, cached per space and candidate.

- :func:`vectors`: ``space.encode_vector`` of each candidate, stacked (the MLP input);
- :class:`GraphEncoder`: ``space.encode_graph`` padded for the BRP-NAS GCN (arXiv 2007.08668): node 0 a
  *global* node connected to every node, then the space's graph; one-hot features over
  ``("global", *space.node_labels)``, ``max_nodes + 1`` nodes. It also records whether the graph's
  output is reachable from its input (few-shot transfer keeps unreachable, "disconnected" ones apart).

A graph encoding is computed once per candidate and kept (candidates that are unhashable are keyed by
their :meth:`~devicefit.spaces.Space.identity`), so the 15,625 NB201 cells are encoded once per process
and a whole table predicts in about a second, as the former NB201-only table did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..spaces.base import EncodableSpace, LabelledGraph

GLOBAL_LABEL = "global"
#: The encoders kept at once (one per space class and settings) and the rows each keeps (~576 B/row for NB201).
MAX_ENCODERS = 8
MAX_CACHED_ROWS = 200_000


def space_fingerprint(space: EncodableSpace[Any]) -> str:
    """Class and settings of a space: equal fingerprints encode candidates identically."""
    cls = type(space)
    return f"{cls.__module__}.{cls.__qualname__}:{json.dumps(space.settings(), sort_keys=True)}"


def vectors(space: EncodableSpace[Any], candidates: Sequence[Any]) -> np.ndarray:
    """``(n, vector_size)`` float32 of ``space.encode_vector``; a vector of the wrong shape is an error."""
    size = space.vector_size
    out = np.zeros((len(candidates), size), dtype=np.float32)
    for i, c in enumerate(candidates):
        v = np.asarray(space.encode_vector(c), dtype=np.float32)
        if v.shape != (size,):
            raise InputError(f"space {space.name!r}: encode_vector gave shape {v.shape}, expected ({size},)")
        out[i] = v
    return out


class GraphEncoder:
    """Padded ``(adjacency, features)`` of candidates of one space, for the GCN; see the module docstring.

    As in eagle (SamsungLabs/eagle), the adjacency is not normalised: ``A[i, j] = 1`` for an edge
    i -> j, plus self-loops on the real nodes, and the global node's row is all ones over the real nodes.
    """

    def __init__(self, space: EncodableSpace[Any]) -> None:
        self.space = space
        self.labels: tuple[str, ...] = (GLOBAL_LABEL, *space.node_labels)
        self.max_nodes = space.max_nodes + 1
        self._label_index = {label: i for i, label in enumerate(self.labels)}
        self._clear()

    def _clear(self) -> None:
        self._index: dict[Any, int] = {}
        self._adj = np.zeros((0, self.max_nodes, self.max_nodes), dtype=np.float32)
        self._feat = np.zeros((0, self.max_nodes, len(self.labels)), dtype=np.float32)
        self._reaches = np.zeros(0, dtype=bool)

    def encode(self, candidates: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(adjacency (n, N, N), features (n, N, L))`` float32, N = max_nodes + 1, L = len(labels)."""
        rows = self._rows(candidates)  # first: it may grow (replace) the arrays
        return self._adj[rows], self._feat[rows]

    def reaches_output(self, candidates: Sequence[Any]) -> np.ndarray:
        """Bool per candidate: a path of edges joins the graph's input (first node) to its output (last)."""
        rows = self._rows(candidates)  # first: it may grow (replace) the arrays
        return self._reaches[rows]

    def _rows(self, candidates: Sequence[Any]) -> np.ndarray:
        if len(self._index) + len(candidates) > MAX_CACHED_ROWS:
            self._clear()  # start over rather than grow without bound (rows of one call stay valid)
        rows = np.empty(len(candidates), dtype=np.int64)
        for k, c in enumerate(candidates):
            try:
                key = c
                i = self._index.get(key)
            except TypeError:  # unhashable candidate: its exact JSON text
                key = ("identity", self.space.identity(c))
                i = self._index.get(key)
            if i is None:
                i = self._add(key, c)
            rows[k] = i
        return rows

    def _add(self, key: Any, candidate: Any) -> int:
        adj, feat, reaches = self._encode_one(candidate)
        i = len(self._index)
        if i == len(self._adj):  # grow the row arrays by doubling
            grow = max(64, i)
            self._adj = np.concatenate([self._adj, np.zeros((grow, *self._adj.shape[1:]), np.float32)])
            self._feat = np.concatenate([self._feat, np.zeros((grow, *self._feat.shape[1:]), np.float32)])
            self._reaches = np.concatenate([self._reaches, np.zeros(grow, dtype=bool)])
        self._adj[i], self._feat[i], self._reaches[i] = adj, feat, reaches
        self._index[key] = i
        return i

    def _encode_one(self, candidate: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        g = self.space.encode_graph(candidate)
        check_graph(self.space, g)
        n = len(g.labels)
        adj = np.zeros((self.max_nodes, self.max_nodes), dtype=np.float32)
        feat = np.zeros((self.max_nodes, len(self.labels)), dtype=np.float32)
        adj[1 : n + 1, 1 : n + 1] = g.adjacency
        adj[0, : n + 1] = 1.0  # the global node gathers every node (and itself)
        idx = np.arange(1, n + 1)
        adj[idx, idx] = 1.0
        feat[0, 0] = 1.0
        feat[idx, [self._label_index[label] for label in g.labels]] = 1.0
        return adj, feat, _reaches_output(np.asarray(g.adjacency))


def check_graph(space: EncodableSpace[Any], graph: LabelledGraph) -> None:
    """An :class:`InputError` when a space's graph breaks its own promises (labels, size, square adjacency)."""
    n = len(graph.labels)
    unknown = sorted(set(graph.labels) - set(space.node_labels))
    if unknown:
        raise InputError(f"space {space.name!r}: graph labels {unknown} are not among its node_labels")
    if not 2 <= n <= space.max_nodes or np.shape(graph.adjacency) != (n, n):
        raise InputError(
            f"space {space.name!r}: a graph of {n} labels and adjacency shape {np.shape(graph.adjacency)}; "
            f"expected 2..{space.max_nodes} nodes and a square adjacency"
        )


def _reaches_output(adjacency: np.ndarray) -> bool:
    n = adjacency.shape[0]
    seen, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for j in np.flatnonzero(adjacency[i]):
            if int(j) not in seen:
                seen.add(int(j))
                frontier.append(int(j))
    return n - 1 in seen


_ENCODERS: dict[str, GraphEncoder] = {}


def graph_encoder(space: EncodableSpace[Any]) -> GraphEncoder:
    """The shared :class:`GraphEncoder` of ``space``'s class and settings (a few kept, least recent dropped)."""
    key = space_fingerprint(space)
    encoder = _ENCODERS.pop(key, None) or GraphEncoder(space)
    _ENCODERS[key] = encoder  # most recently used last
    while len(_ENCODERS) > MAX_ENCODERS:
        del _ENCODERS[next(iter(_ENCODERS))]
    return encoder


__all__ = ["GLOBAL_LABEL", "GraphEncoder", "check_graph", "graph_encoder", "space_fingerprint", "vectors"]
