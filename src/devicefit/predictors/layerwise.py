"""Layer-wise (additive lookup-table) predictor, the "layer-wise predictor" baseline of BRP-NAS.

BRP-NAS (arXiv 2007.08668, Sec. 3) sums per-layer latencies measured in isolation. In NB201 every
cell of every stage is the same, so the network's cost is, under an additive model,
``base + sum over edges e of t(e, op_e)`` where ``t`` absorbs the 15 copies of the edge (5 cells in
each of 3 stages): a per-stage term cannot be told apart from the per-edge one, since an op on edge
``e`` is present in all stages at once. The 6 x 4 per-(edge, op) terms (``none`` is the zero
reference) and the base are fitted by least squares on the training cells, so at least 25 cells that
show every op on every edge are needed. Like a lookup table, it ignores interactions between layers.

NB201 only: the terms are NB201's edges and operations, and the rank check that every term is
determined needs to know which one-hot columns are a reference (``none``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..spaces import EncodableSpace
from ..spaces.nb201 import NUM_EDGES, NUM_OPS, OPS, NB201Cell
from .base import Predictor
from .flops import nb201_cells, require_nb201

NUM_TERMS = 1 + NUM_EDGES * (NUM_OPS - 1)  # base + (edge, op) for op != none
_WHY = "one term per NB201 edge and operation"


def design_matrix(cells: list[NB201Cell]) -> np.ndarray:
    """``(n, 25)``: a column of ones, then the indicator of each non-``none`` op on each edge."""
    x = np.zeros((len(cells), NUM_TERMS), dtype=np.float64)
    x[:, 0] = 1.0
    for i, c in enumerate(cells):
        for e, op in enumerate(c.ops):
            if op:
                x[i, 1 + e * (NUM_OPS - 1) + op - 1] = 1.0
    return x


class LayerwisePredictor(Predictor):
    name = "layerwise"
    min_train = NUM_TERMS

    def __init__(self, *, space: EncodableSpace[Any] | None = None) -> None:
        super().__init__(space=space)
        require_nb201(self.space, self.name, _WHY)
        self.coef = np.zeros(NUM_TERMS)

    def _fit(self, candidates: list[Any], y: np.ndarray, seed: int) -> None:
        x = design_matrix(nb201_cells(self.space, candidates))
        rank = np.linalg.matrix_rank(x)
        if rank < NUM_TERMS:
            raise InputError(
                f"layerwise predictor: the {len(candidates)} training cells determine only {rank} of its "
                f"{NUM_TERMS} terms (base + each non-none op on each edge); add cells that use every op on every edge"
            )
        self.coef = np.linalg.lstsq(x, y, rcond=None)[0]

    def _predict(self, candidates: list[Any]) -> np.ndarray:
        return design_matrix(nb201_cells(self.space, candidates)) @ self.coef

    def lookup_table(self) -> dict[str, float]:
        """The fitted per-(edge, op) contributions and the base, in the predictor's unit."""
        table = {"base": float(self.coef[0])}
        for e in range(NUM_EDGES):
            for op in range(1, NUM_OPS):
                table[f"edge{e}:{OPS[op]}"] = float(self.coef[1 + e * (NUM_OPS - 1) + op - 1])
        return table

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"terms": NUM_TERMS}, {"coef": self.coef}

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        require_nb201(self.space, self.name, _WHY)
        self.coef = np.asarray(arrays["coef"], dtype=np.float64).reshape(NUM_TERMS)
