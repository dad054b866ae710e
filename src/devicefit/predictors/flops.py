"""FLOPs baseline: linear regression of the cost on the network's MACs and parameter count.

The BRP-NAS paper (arXiv 2007.08668) and HELP (arXiv 2106.08630) compare learned latency predictors
with FLOPs as a proxy; here the proxy is turned into a predictor in ms by least squares
``cost ~ a + b * MACs + c * params`` on the training cells.

NB201 only: MACs and parameters of the NB201 CIFAR network (:func:`devicefit.spaces.build_nb201`, C=16,
N=5, 10 classes, 32x32 input) are computed in closed form, so that the whole space costs nothing to
count: a fixed part (stem, two residual reduction blocks, last BN, classifier) plus, for every cell of
every stage, each convolution edge. Pooling, skip and BatchNorm do no multiply-accumulates (as counted by
``torch.utils.flop_counter``, which the tests check this against). Dangling edges are counted: the built
network computes them.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import InputError
from ..spaces import EncodableSpace, NB201Space
from ..spaces.nb201 import CONV1, CONV3, NB201Cell
from .base import Predictor, describe

#: (channels, height = width) of the three stages of the NB201 CIFAR network.
STAGES = ((16, 32), (32, 16), (64, 8))
CELLS_PER_STAGE = 5
NUM_CLASSES = 10


def _fixed_macs_params() -> tuple[int, int]:
    c0, h0 = STAGES[0]
    macs = 3 * c0 * 9 * h0 * h0  # stem conv
    params = 3 * c0 * 9 + 2 * c0  # stem conv + BN
    for (c_in, _), (c_out, h_out) in itertools.pairwise(STAGES):
        hw = h_out * h_out
        macs += 9 * c_in * c_out * hw + 9 * c_out * c_out * hw + c_in * c_out * hw  # conv_a, conv_b, 1x1 shortcut
        params += 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out
    c_last = STAGES[-1][0]
    macs += c_last * NUM_CLASSES
    params += 2 * c_last + c_last * NUM_CLASSES + NUM_CLASSES
    return macs, params


FIXED_MACS, FIXED_PARAMS = _fixed_macs_params()


def cell_macs_params(cell: NB201Cell) -> tuple[int, int]:
    """Multiply-accumulates and parameters of the whole NB201 CIFAR-10 network of ``cell``."""
    macs, params = FIXED_MACS, FIXED_PARAMS
    for op in cell.ops:
        if op not in (CONV1, CONV3):
            continue
        k2 = 1 if op == CONV1 else 9
        for c, h in STAGES:
            macs += CELLS_PER_STAGE * k2 * c * c * h * h
            params += CELLS_PER_STAGE * (k2 * c * c + 2 * c)
    return macs, params


def macs_params(cells: list[NB201Cell]) -> np.ndarray:
    """``(n, 2)`` array of (MACs, params) in millions."""
    return np.array([cell_macs_params(c) for c in cells], dtype=np.float64) / 1e6


def require_nb201(space: EncodableSpace[Any], kind: str, why: str) -> NB201Space:
    """``space`` when it is NB201, else an :class:`InputError` saying why ``kind`` needs NB201."""
    if not isinstance(space, NB201Space):
        raise InputError(f"the {kind} predictor works on the nb201 space only ({why}); got space {space.name!r}")
    return space


def nb201_cells(space: EncodableSpace[Any], candidates: list[Any]) -> list[NB201Cell]:
    """The candidates, checked to be NB201 cells."""
    for c in candidates:
        if not isinstance(c, NB201Cell):
            raise InputError(f"nb201 candidate must be an NB201Cell or an arch string, got {describe(space, c)}")
    return candidates


class FlopsPredictor(Predictor):
    """``cost = a + b * MMACs + c * Mparams``, least squares (minimum-norm when the two are collinear)."""

    name = "flops"
    min_train = 3

    def __init__(self, *, space: EncodableSpace[Any] | None = None) -> None:
        super().__init__(space=space)
        require_nb201(self.space, self.name, "MACs and parameters in closed form")
        self.coef = np.zeros(3)

    def _features(self, candidates: list[Any]) -> np.ndarray:
        cells = nb201_cells(self.space, candidates)
        return np.hstack([np.ones((len(cells), 1)), macs_params(cells)])

    def _fit(self, candidates: list[Any], y: np.ndarray, seed: int) -> None:
        self.coef = np.linalg.lstsq(self._features(candidates), y, rcond=None)[0]

    def _predict(self, candidates: list[Any]) -> np.ndarray:
        return self._features(candidates) @ self.coef

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"features": ["1", "MMACs", "Mparams"]}, {"coef": self.coef}

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        require_nb201(self.space, self.name, "MACs and parameters in closed form")
        self.coef = np.asarray(arrays["coef"], dtype=np.float64).reshape(3)
