"""The one interface of every cost predictor: ``fit(candidates, values)``, ``predict(candidates)``, save/load.

Candidates are :class:`~devicefit.spaces.NB201Cell`; values and predictions are in the table's unit
(milliseconds for latency, millijoules for energy), never normalised on the outside: each predictor
keeps its own input/target normalisation and stores it with its weights.
"""

from __future__ import annotations

import math
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data.latency_table import LatencyTable
from ..errors import InputError, UnknownNameError
from ..spaces.nb201 import NB201Cell
from .io import PredictorFileError, load_arrays, save_arrays

UNITS = ("ms", "mJ")


class NotFittedError(RuntimeError):
    """``predict`` or ``save`` called before ``fit``."""


def as_cells(candidates: Iterable[NB201Cell | str], what: str = "candidates") -> list[NB201Cell]:
    """Cells from cells or arch strings; a wrong type is named."""
    out = []
    for c in candidates:
        if isinstance(c, NB201Cell):
            out.append(c)
        elif isinstance(c, str):
            out.append(NB201Cell.from_str(c))
        else:
            raise TypeError(f"{what} must be NB201Cell or arch strings, got {type(c).__name__}: {c!r}")
    return out


def check_training_set(
    candidates: Iterable[NB201Cell | str], values: Sequence[float] | np.ndarray, minimum: int, model: str
) -> tuple[list[NB201Cell], np.ndarray]:
    """Validated ``(cells, values)``: same length, finite positive values, at least ``minimum`` cells."""
    cells = as_cells(candidates)
    y = np.asarray(values, dtype=np.float64).ravel()
    if len(cells) != y.size:
        raise InputError(f"{model} predictor: {len(cells)} candidates but {y.size} values")
    if len(cells) < minimum:
        raise InputError(f"{model} predictor needs at least {minimum} training cells, got {len(cells)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        bad = int(np.flatnonzero(~np.isfinite(y) | (y <= 0))[0])
        raise InputError(
            f"{model} predictor: training value for {cells[bad].to_str()} is {y[bad]!r}; "
            "latencies/energies must be finite and > 0 (drop missing cells before fitting)"
        )
    return cells, y


class Predictor(ABC):
    """A fitted map from NB201 cells to a device cost (ms or mJ)."""

    #: registry name (``flops``, ``layerwise``, ``mlp``, ``gcn``, ``transfer``)
    name: ClassVar[str]
    #: the fewest training cells ``fit`` accepts
    min_train: ClassVar[int] = 2

    def __init__(self) -> None:
        self.device: str = ""
        self.unit: str = "ms"
        self.n_train: int = 0
        self.metrics: dict[str, Any] = {}
        self.fit_seconds: float = math.nan

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, cells: list[NB201Cell], y: np.ndarray, seed: int) -> None: ...

    @abstractmethod
    def _predict(self, cells: list[NB201Cell]) -> np.ndarray: ...

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able hyper-parameters/normalisation and the arrays to save."""

    @abstractmethod
    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...

    # -- public API -----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.n_train > 0

    def fit(
        self,
        candidates: Iterable[NB201Cell | str],
        values: Sequence[float] | np.ndarray,
        *,
        device: str = "",
        unit: str = "ms",
        seed: int = 0,
    ) -> Predictor:
        """Fit on cells and their measured cost (``unit``: "ms" latency or "mJ" energy)."""
        import time

        if unit not in UNITS:
            raise InputError(f"unit must be one of {UNITS}, got {unit!r}")
        cells, y = check_training_set(candidates, values, self.min_train, self.name)
        start = time.perf_counter()
        self._fit(cells, y, seed)
        self.fit_seconds = time.perf_counter() - start
        self.device, self.unit, self.n_train = device, unit, len(cells)
        return self

    def fit_table(self, table: LatencyTable, cells: Iterable[NB201Cell] | None = None, *, seed: int = 0) -> Predictor:
        """Fit on (a subset of) a device table; cells absent from the table are an error naming the cell."""
        cells = table.cells() if cells is None else list(cells)
        return self.fit(cells, table.array(cells), device=table.device, unit=table.unit, seed=seed)

    def predict(self, candidates: Iterable[NB201Cell | str]) -> np.ndarray:
        """Predicted cost of each candidate, in :attr:`unit` (float64 array)."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} predictor is not fitted; call fit() or load() first")
        cells = as_cells(candidates)
        if not cells:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict(cells), dtype=np.float64).ravel()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>.npz`` + ``<path>.json``; returns the ``.npz`` path."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} predictor is not fitted; nothing to save")
        params, arrays = self._state()
        meta = {
            "model": self.name,
            "device": self.device,
            "unit": self.unit,
            "n_train": self.n_train,
            "fit_seconds": self.fit_seconds,
            "metrics": self.metrics,
            "params": params,
        }
        return save_arrays(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Predictor:
        meta, arrays = load_arrays(path)
        if cls is not Predictor and meta.get("model") != cls.name:
            raise PredictorFileError(f"{str(path)!r} holds a {meta.get('model')!r} predictor, not {cls.name!r}")
        return _from_meta(meta, arrays, path)


def _from_meta(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Predictor:
    from . import PREDICTORS

    kind = meta.get("model")
    if kind not in PREDICTORS:
        raise PredictorFileError(f"{str(path)!r}: unknown predictor kind {kind!r}; known: {', '.join(PREDICTORS)}")
    try:
        pred = PREDICTORS[kind].__new__(PREDICTORS[kind])
        Predictor.__init__(pred)
        pred._restore(dict(meta["params"]), arrays)
        pred.device = str(meta["device"])
        pred.unit = str(meta["unit"])
        pred.n_train = int(meta["n_train"])
        pred.fit_seconds = float(meta.get("fit_seconds", math.nan))
        pred.metrics = dict(meta.get("metrics", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PredictorFileError(f"{str(path)!r}: metadata does not fit a {kind} predictor: {exc!r}") from exc
    if pred.n_train < 1:
        raise PredictorFileError(f"{str(path)!r}: n_train must be >= 1, got {pred.n_train}")
    return pred


def load_predictor(path: str | os.PathLike[str]) -> Predictor:
    """Load any saved predictor (the kind is read from its metadata)."""
    return Predictor.load(path)


def split_table(table: LatencyTable, n_train: int, seed: int) -> tuple[list[NB201Cell], list[NB201Cell]]:
    """``n_train`` random cells of the table (fixed by ``seed``) and all the others, in table order."""
    cells = sorted(table.cells())
    if not 1 <= n_train < len(cells):
        raise InputError(
            f"device {table.device!r} has {len(cells)} cells; the training set must be 1..{len(cells) - 1} "
            f"cells, got {n_train}"
        )
    train = random.Random(seed).sample(cells, n_train)
    chosen = set(train)
    return train, [c for c in cells if c not in chosen]


def evaluate(predictor: Predictor, table: LatencyTable, cells: Iterable[NB201Cell] | None = None) -> dict[str, float]:
    """``devicefit.ranking.regression_report`` of the predictor on ``cells`` (default: the whole table).

    Every cell must have a true value in the table; the error names the first one that has none.
    """
    from ..ranking import regression_report

    cells = table.cells() if cells is None else as_cells(cells)
    missing = [c for c in cells if c not in table]
    if missing:
        raise UnknownNameError(
            f"{len(missing)} of the {len(cells)} cells to evaluate have no {table.unit} value on device "
            f"{table.device!r}, e.g. {missing[0].to_str()}; evaluate only on measured cells"
        )
    if predictor.unit != table.unit:
        raise InputError(f"predictor is in {predictor.unit!r} but table {table.device!r} is in {table.unit!r}")
    return regression_report(predictor.predict(cells), table.array(cells))
