"""The NAS-Bench-201 cell search space.

Reference: Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020 (arXiv 2001.00326), code D-X-Y/NAS-Bench-201.

A cell is a DAG on four nodes (0 is the input, 3 the output); each of its six edges i->j (i < j) carries
one of five operations. Here a cell is the tuple of six operation indices in arch-string edge order
(0->1, 0->2, 1->2, 0->3, 1->3, 2->3), the same order and indices as the LatBench pickles (BRP-NAS,
arXiv 2007.08668): 0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3.

The space as a :class:`~devicefit.spaces.base.Space` is :class:`~.nb201_space.NB201Space`; the network is
:mod:`.nb201_model`. Importing this module imports neither torch nor numpy (the command line starts fast).
"""

from __future__ import annotations

import functools
import itertools
import operator
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError, OutOfRangeError
from .base import LabelledGraph

if TYPE_CHECKING:
    import numpy as np


OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_OPS = len(OPS)
NUM_NODES = 4
#: (source, target) of each edge, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_EDGES = len(EDGES)
NUM_CELLS = NUM_OPS**NUM_EDGES  # 15,625

_OP_INDEX = {name: i for i, name in enumerate(OPS)}
#: Every valid op tuple, mapped to itself (equal tuples of numpy ints map to the plain-int one).
_OPS_TUPLES: dict[tuple[int, ...], tuple[int, ...]] = {
    ops: ops for ops in itertools.product(range(NUM_OPS), repeat=NUM_EDGES)
}
_PLAIN_INTS = frozenset({int})
NONE, SKIP, CONV1, CONV3, POOL = range(NUM_OPS)


class ArchStringError(InputError):
    """An architecture string that is not a valid NAS-Bench-201 cell."""


@dataclass(frozen=True, order=True)
class NB201Cell:
    """One NAS-Bench-201 cell: six operation indices in arch-string edge order.

    ``ops`` may be any sequence of six integers in 0..4 (Python or numpy integers); it is stored as a
    tuple of plain ints. Booleans are refused although Python counts ``True`` as the int 1: a mask or
    flag passed by mistake must not silently become ``skip_connect``.
    """

    ops: tuple[int, ...]

    def __post_init__(self) -> None:
        raw = self.ops
        try:
            canonical = _OPS_TUPLES.get(raw) if type(raw) is tuple else None
            # fast path: loaders build hundreds of thousands of cells (True == 1 hashes alike: check the types)
            if canonical is not None and (canonical is raw or _PLAIN_INTS.issuperset(map(type, raw))):
                object.__setattr__(self, "ops", canonical)
                return
            if any(isinstance(o, bool) for o in raw):
                raise TypeError("bools are not operation indices")
            ops = tuple(operator.index(o) for o in raw)  # numpy ints yes; floats, str, numpy bools no
        except TypeError:
            ops = ()
        if len(ops) != NUM_EDGES or any(not 0 <= o < NUM_OPS for o in ops):
            raise ArchStringError(
                f"NB201 cell {raw!r}: expected {NUM_EDGES} operation indices (ints, not bools) in 0..{NUM_OPS - 1}"
            )
        object.__setattr__(self, "ops", _OPS_TUPLES[ops])

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def from_str(cls, arch_str: str) -> NB201Cell:
        """Parse an official arch string such as ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|``."""
        return cls(parse_arch_str(arch_str))

    @classmethod
    def from_index(cls, ops_index: int) -> NB201Cell:
        """The cell at position ``ops_index`` of :func:`all_cells` (NOT the official NB201 index)."""
        if isinstance(ops_index, bool) or not isinstance(ops_index, int):
            raise InputError(f"NB201 enumeration index must be an int, got {type(ops_index).__name__}: {ops_index!r}")
        if not 0 <= ops_index < NUM_CELLS:
            raise OutOfRangeError(f"NB201 enumeration index {ops_index} out of range 0..{NUM_CELLS - 1}")
        digits = []
        for _ in range(NUM_EDGES):
            ops_index, d = divmod(ops_index, NUM_OPS)
            digits.append(d)
        return cls(tuple(reversed(digits)))

    @property
    def ops_index(self) -> int:
        """Position in :func:`all_cells` (base-5 number of the op tuple)."""
        value = 0
        for o in self.ops:
            value = value * NUM_OPS + o
        return value

    def to_str(self) -> str:
        return format_arch_str(self.ops)

    def __str__(self) -> str:
        return self.to_str()

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(OPS[o] for o in self.ops)

    # -- structure ---------------------------------------------------------------------------
    def is_disconnected(self) -> bool:
        """True when no path of non-``none`` edges joins the input to the output."""
        return not _reaches_output(self.ops)

    def canonical_key(self) -> str:
        """NB201's key for equivalent cells (``to_unique_str(consider_zero=True)``), see :func:`canonical_key`."""
        return canonical_key(self.ops)

    def twin(self) -> NB201Cell | None:
        """The other cell that runs exactly the same computation, or None when there is none.

        With edge 1->2 ``none``, nodes 1 and 2 both read only the input, so swapping them (edges 0->1 with
        0->2, and 1->3 with 2->3) gives a different arch string for the same operations on the same tensor
        shapes: the same network, only listed in another order. Two such cells measured on a device differ
        by measurement noise alone, which :func:`devicefit.predictors.measurement_ceiling` uses. None when
        edge 1->2 is not ``none`` or the swap gives this cell back.
        """
        a01, a02, a12, a03, a13, a23 = self.ops
        if a12 != NONE or (a01, a13) == (a02, a23):
            return None
        return NB201Cell((a02, a01, NONE, a03, a23, a13))

    def neighbours(self) -> list[NB201Cell]:
        """The 24 cells that differ from this one in exactly one edge."""
        out = []
        for e in range(NUM_EDGES):
            for o in range(NUM_OPS):
                if o != self.ops[e]:
                    ops = list(self.ops)
                    ops[e] = o
                    out.append(NB201Cell(tuple(ops)))
        return out

    def mutate(self, rng: random.Random) -> NB201Cell:
        """A uniformly random one-edge neighbour (the aging-evolution mutation of NB201)."""
        return rng.choice(self.neighbours())

    def one_hot(self) -> np.ndarray:
        """Flat one-hot encoding, shape (6 * 5,), float32."""
        import numpy as np

        x = np.zeros((NUM_EDGES, NUM_OPS), dtype=np.float32)
        x[np.arange(NUM_EDGES), self.ops] = 1.0
        return x.reshape(-1)

    def to_graph(self, prune: bool = True) -> LabelledGraph:
        """The operations-on-nodes graph, see :func:`cell_graph` (pruned of dangling ops by default)."""
        return cell_graph(self.ops, prune=prune)


def parse_arch_str(arch_str: str) -> tuple[int, ...]:
    """Official NB201 arch string -> six op indices; raises :class:`ArchStringError` naming the problem.

    Only the official form is accepted (surrounding whitespace aside): node ``j`` lists its ``j`` incoming
    edges ``op~i`` from ``i = 0, 1, ..., j-1`` in that order, sources written as plain ASCII digits. So a
    string parses exactly when it is :func:`format_arch_str` of its cell, and one cell has one string.
    """
    if not isinstance(arch_str, str):
        raise ArchStringError(f"NB201 arch string must be a str, got {type(arch_str).__name__}: {arch_str!r}")
    s = arch_str.strip()
    nodes = s.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ArchStringError(
            f"malformed NB201 arch string {arch_str!r}: expected {NUM_NODES - 1} nodes separated by '+', "
            f"found {len(nodes)}"
        )
    ops: list[int] = []
    for target, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|") and len(node) > 2):
            raise ArchStringError(
                f"malformed NB201 arch string {arch_str!r}: node {target} part {node!r} must look like '|op~i|...|'"
            )
        edges = node[1:-1].split("|")
        if len(edges) != target:
            raise ArchStringError(
                f"malformed NB201 arch string {arch_str!r}: node {target} must have {target} incoming edges, "
                f"found {len(edges)} in {node!r}"
            )
        for position, edge in enumerate(edges):
            name, sep, src = edge.partition("~")
            # isdigit() alone is True for '²' or '٣', which int() rejects or reads as another number
            if not sep or not (src.isascii() and src.isdigit()):
                raise ArchStringError(f"malformed NB201 arch string {arch_str!r}: edge {edge!r} must look like 'op~i'")
            if name not in _OP_INDEX:
                raise ArchStringError(
                    f"NB201 arch string {arch_str!r}: unknown operation {name!r}; expected one of {', '.join(OPS)}"
                )
            if src != str(position):
                sources = [str(i) for i in range(target)]
                where = "is out of order" if src in sources else f"must come from a node < {target}"
                raise ArchStringError(
                    f"NB201 arch string {arch_str!r}: edge {edge!r} into node {target} {where}; node {target} "
                    f"lists its edges from nodes 0..{target - 1} in order ({'|'.join('op~' + i for i in sources)})"
                )
            ops.append(_OP_INDEX[name])
    return tuple(ops)


def format_arch_str(ops: tuple[int, ...]) -> str:
    """Six op indices -> official arch string (the inverse of :func:`parse_arch_str`)."""
    parts = []
    k = 0
    for target in range(1, NUM_NODES):
        edges = []
        for source in range(target):
            edges.append(f"{OPS[ops[k]]}~{source}")
            k += 1
        parts.append("|" + "|".join(edges) + "|")
    return "+".join(parts)


def all_cells() -> list[NB201Cell]:
    """All 15,625 cells, in base-5 order of the op tuple (not the official NB201 index order)."""
    return list(iter_cells())


def iter_cells() -> Iterator[NB201Cell]:
    for ops in _OPS_TUPLES:  # insertion order: itertools.product, base-5 order
        yield NB201Cell(ops)


@functools.cache
def twin_pairs() -> tuple[tuple[NB201Cell, NB201Cell], ...]:
    """All 1,500 unordered pairs of cells that are the same computation (see :meth:`NB201Cell.twin`)."""
    return tuple((cell, twin) for cell in iter_cells() if (twin := cell.twin()) is not None and cell < twin)


def sample_cell(rng: random.Random) -> NB201Cell:
    return NB201Cell(tuple(rng.randrange(NUM_OPS) for _ in range(NUM_EDGES)))


#: Canonical keys of the cells whose output is connected (6,466 keys in all, 5 of them disconnected ones).
UNIQUE_CONNECTED_CELLS = 6461


def sample_unique_cells(n: int, seed: int = 0) -> list[NB201Cell]:
    """``n`` random NB201 cells with distinct canonical keys and none disconnected, in sampling order.

    ``seed`` is a non-negative int, as everywhere in the toolkit. The sample for ``n`` is a prefix of the
    sample for any larger ``n`` with the same seed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= UNIQUE_CONNECTED_CELLS:
        raise InputError(
            f"sample size must be an int in 1..{UNIQUE_CONNECTED_CELLS} (unique connected NB201 cells), got {n!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    rng = random.Random(seed)
    seen: set[str] = set()
    cells: list[NB201Cell] = []
    while len(cells) < n:
        cell = sample_cell(rng)
        key = cell.canonical_key()
        if cell.is_disconnected() or key in seen:
            continue
        seen.add(key)
        cells.append(cell)
    return cells


def _reaches_output(ops: tuple[int, ...]) -> bool:
    reached = {0}
    for (src, dst), op in zip(EDGES, ops):  # edges are in topological order of their targets
        if op != NONE and src in reached:
            reached.add(dst)
    return NUM_NODES - 1 in reached


@functools.lru_cache(maxsize=NUM_CELLS)  # 15,625 strings: searches ask for keys all the time
def canonical_key(ops: tuple[int, ...]) -> str:
    """Isomorphism-aware key of a cell, exactly NB201's ``CellStructure.to_unique_str(consider_zero=True)``.

    Each node is written as the sorted sum of its inputs' terms; ``skip_connect`` passes its input's
    term on, a convolution or pooling wraps it as ``(term)@op``, and ``none`` (or an input whose term is
    exactly ``#``) is the zero term ``#``. This reproduces the published 6,466 unique cells of 15,625.
    Like the reference, it does not reduce a node whose inputs are all zero (``#+#``) to ``#``; doing
    so would merge a few more equivalent cells (6,285 classes) but would no longer match the benchmark.
    Because zero terms stay in the sums (node 2 of ``|x~0|+|y~0|none~1|+...`` is ``#+(0)@y``), the key
    also tells apart most :meth:`NB201Cell.twin` pairs, which are one network under two arch strings.
    """
    terms = {0: "0"}
    k = 0
    for target in range(1, NUM_NODES):
        inputs = []
        for source in range(target):
            op = ops[k]
            k += 1
            t = terms[source]
            if op == NONE or t == "#":
                inputs.append("#")
            elif op == SKIP:
                inputs.append(t)
            else:
                inputs.append(f"({t})@{OPS[op]}")
        terms[target] = "+".join(sorted(inputs))
    return terms[NUM_NODES - 1]


def cell_graph(ops: tuple[int, ...], prune: bool = True) -> LabelledGraph:
    """Operations-on-nodes DAG of a cell, as used by BRP-NAS graph predictors (arXiv 2007.08668).

    ``labels[i]`` is ``"input"``, ``"output"`` or an op name; ``adjacency[i, j] = 1`` for an edge i -> j.
    Node 0 is the input, the last node the output, op nodes in arch-string edge order between.
    ``none`` edges are removed and (by default) op nodes not on an input-to-output path are pruned; a
    disconnected cell is then the two nodes input and output with no edge. ``prune=False`` keeps the
    dangling ops: they do not change the function, but the NB201 network still computes them, so they
    cost time on a device.
    """
    import numpy as np

    op_edges = [(e, EDGES[e], op) for e, op in enumerate(ops) if op != NONE]
    # Reachability over op-nodes: an op on edge (i, j) follows any op on an edge (h, i).
    from_input = {e for e, (src, _), _ in op_edges if src == 0}
    changed = True
    while changed:
        changed = False
        for e, (src, _), _ in op_edges:
            if e not in from_input and any(EDGES[f][1] == src for f in from_input):
                from_input.add(e)
                changed = True
    to_output = {e for e, (_, dst), _ in op_edges if dst == NUM_NODES - 1}
    changed = True
    while changed:
        changed = False
        for e, (_, dst), _ in op_edges:
            if e not in to_output and any(EDGES[f][0] == dst for f in to_output):
                to_output.add(e)
                changed = True
    kept = [(e, edge, op) for e, edge, op in op_edges if not prune or (e in from_input and e in to_output)]
    n = len(kept) + 2
    adj = np.zeros((n, n), dtype=np.float32)
    position = {e: i + 1 for i, (e, _, _) in enumerate(kept)}
    for e, (src, dst), _ in kept:
        if src == 0:
            adj[0, position[e]] = 1
        if dst == NUM_NODES - 1:
            adj[position[e], n - 1] = 1
        for f, (src2, _), _ in kept:
            if src2 == dst:
                adj[position[e], position[f]] = 1
    labels = ("input", *(OPS[op] for _, _, op in kept), "output")
    return LabelledGraph(labels=labels, adjacency=adj)


def space_statistics() -> dict[str, int]:
    """Size of the space: all cells, unique cells up to isomorphism, cells with a disconnected output."""
    cells = all_cells()
    return {
        "cells": len(cells),
        "unique": len({c.canonical_key() for c in cells}),
        "disconnected": sum(c.is_disconnected() for c in cells),
        "operations": NUM_OPS,
        "edges": NUM_EDGES,
    }


#: Node labels of :meth:`NB201Space.encode_graph`, in the order of the BRP-NAS GCN's one-hot features.
GRAPH_LABELS: tuple[str, ...] = ("input", "output", *OPS[1:])
#: Nodes of the largest cell graph: input, six op nodes, output.
MAX_GRAPH_NODES = NUM_EDGES + 2
