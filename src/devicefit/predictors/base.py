"""The one interface of every cost predictor: ``fit(candidates, values)``, ``predict(candidates)``, save/load.

A predictor works on the candidates of one encodable space (:class:`~devicefit.spaces.EncodableSpace`,
default :class:`~devicefit.spaces.NB201Space`), given as candidates or as the space's JSON text (an NB201
arch string), and encodes them through the space. Values and predictions are in the table's unit
(milliseconds for latency, millijoules for energy), never normalised on the outside: each predictor keeps
its own input/target normalisation and stores it with its weights, and a saved file records the space's
settings, so that it is never applied to another space's candidates.
"""

from __future__ import annotations

import json
import math
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import InputError, UnknownNameError
from ..spaces import EncodableSpace, NB201Space, get_space
from .io import PredictorFileError, load_arrays, save_arrays
from .kinds import UNITS

if TYPE_CHECKING:
    from ..data.latency_table import LatencyTable


class NotFittedError(RuntimeError):
    """``predict`` or ``save`` called before ``fit``."""


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` if it is a non-negative int (the toolkit's rule for every seed), else an :class:`InputError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{what} must be a non-negative int, got {seed!r}")
    return seed


def check_space(space: object | None) -> EncodableSpace[Any]:
    """The space a predictor works on: ``space``, or NB201 when None; it must be encodable."""
    if space is None:
        return NB201Space()
    if not isinstance(space, EncodableSpace):
        raise InputError(
            f"predictors need an encodable space (vector and graph encodings), got {type(space).__name__}: {space!r}"
        )
    return space


def describe(space: EncodableSpace[Any], candidate: Any) -> str:
    """A candidate as text for messages: its identity, cut to 200 characters."""
    try:
        text = space.identity(candidate)
    except (InputError, TypeError, ValueError, AttributeError):
        text = repr(candidate)
    return text if len(text) <= 200 else text[:197] + "..."


def as_candidates(space: EncodableSpace[Any], candidates: Iterable[Any], what: str = "candidates") -> list[Any]:
    """The candidates as a list; strings are read with ``space.from_json`` (an NB201 arch string)."""
    if isinstance(candidates, (str, bytes)):
        raise InputError(f"{what} must be a list of candidates, got a single {type(candidates).__name__}: "
                         f"{candidates[:200]!r}")
    return [space.from_json(c) if isinstance(c, str) else c for c in candidates]


def ordered(candidates: Iterable[Any]) -> list[Any]:
    """Candidates in their natural order (NB201 cells by op tuple), or by ``repr`` when they have none."""
    items = list(candidates)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


class Predictor(ABC):
    """A fitted map from the candidates of a space to a device cost (ms or mJ)."""

    #: registry name (``flops``, ``layerwise``, ``mlp``, ``gcn``, ``transfer``)
    name: ClassVar[str]
    #: the fewest training candidates ``fit`` accepts
    min_train: ClassVar[int] = 2

    def __init__(self, *, space: EncodableSpace[Any] | None = None) -> None:
        self.space: EncodableSpace[Any] = check_space(space)
        self.device: str = ""
        self.unit: str = "ms"
        self.n_train: int = 0
        self.metrics: dict[str, Any] = {}
        self.fit_seconds: float = math.nan

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, candidates: list[Any], y: np.ndarray, seed: int) -> None: ...

    @abstractmethod
    def _predict(self, candidates: list[Any]) -> np.ndarray: ...

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
        candidates: Iterable[Any],
        values: Sequence[float] | np.ndarray,
        *,
        device: str = "",
        unit: str = "ms",
        seed: int = 0,
    ) -> Predictor:
        """Fit on candidates and their measured cost (``unit``: "ms" latency or "mJ" energy)."""
        import time

        if unit not in UNITS:
            raise InputError(f"unit must be one of {UNITS}, got {unit!r}")
        check_seed(seed)
        cands, y = self._training_set(candidates, values)
        start = time.perf_counter()
        self._fit(cands, y, seed)
        self.fit_seconds = time.perf_counter() - start
        self.device, self.unit, self.n_train = device, unit, len(cands)
        return self

    def fit_table(self, table: LatencyTable, candidates: Iterable[Any] | None = None, *, seed: int = 0) -> Predictor:
        """Fit on (a subset of) a device table; candidates absent from the table are an error naming one."""
        cands = table.cells() if candidates is None else as_candidates(self.space, candidates)
        return self.fit(cands, table.array(cands), device=table.device, unit=table.unit, seed=seed)

    def predict(self, candidates: Iterable[Any]) -> np.ndarray:
        """Predicted cost of each candidate, in :attr:`unit` (float64 array)."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} predictor is not fitted; call fit() or load() first")
        cands = as_candidates(self.space, candidates)
        if not cands:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict(cands), dtype=np.float64).ravel()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>.npz`` + ``<path>.json``; returns the ``.npz`` path."""
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} predictor is not fitted; nothing to save")
        params, arrays = self._state()
        meta = {
            "kind": self.name,
            "space": self.space.settings(),
            "device": self.device,
            "unit": self.unit,
            "n_train": self.n_train,
            "fit_seconds": self.fit_seconds,
            "metrics": self.metrics,
            "params": params,
        }
        return save_arrays(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, space: EncodableSpace[Any] | None = None) -> Predictor:
        """Read a saved predictor of this kind; ``space`` (default: rebuilt from the file) must be the one it was
        fitted on. :func:`devicefit.predictors.load_predictor` reads any kind."""
        if cls is Predictor:
            raise InputError("Predictor.load needs a concrete predictor class; use load_predictor(path) for any kind")
        meta, arrays = load_arrays(path)
        if meta.get("kind") != cls.name:
            raise PredictorFileError(f"{str(path)!r} holds a {meta.get('kind')!r} predictor, not {cls.name!r}")
        return cls.from_saved(meta, arrays, path, space)

    @classmethod
    def from_saved(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str | os.PathLike[str],
        space: EncodableSpace[Any] | None,
    ) -> Predictor:
        """A predictor of this class from a checked file's metadata and arrays."""
        pred = cls.__new__(cls)
        Predictor.__init__(pred, space=space_from_settings(meta.get("space"), space, path))
        try:
            pred._restore(dict(meta["params"]), arrays)
            pred.device = str(meta["device"])
            pred.unit = str(meta["unit"])
            pred.n_train = int(meta["n_train"])
            pred.fit_seconds = float(meta.get("fit_seconds", math.nan))
            pred.metrics = dict(meta.get("metrics", {}))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise PredictorFileError(f"{str(path)!r}: metadata does not fit a {cls.name} predictor: {exc!r}") from exc
        if pred.n_train < 1 or pred.unit not in UNITS:
            raise PredictorFileError(f"{str(path)!r}: n_train must be >= 1 and unit one of {UNITS}, got "
                                     f"{pred.n_train} and {pred.unit!r}")
        return pred

    # -- shared checks ----------------------------------------------------------------------------
    def _training_set(
        self, candidates: Iterable[Any], values: Sequence[float] | np.ndarray
    ) -> tuple[list[Any], np.ndarray]:
        """Validated ``(candidates, values)``: same length, finite positive values, at least ``min_train``."""
        cands = as_candidates(self.space, candidates)
        y = np.asarray(values, dtype=np.float64).ravel()
        if len(cands) != y.size:
            raise InputError(f"{self.name} predictor: {len(cands)} candidates but {y.size} values")
        if len(cands) < self.min_train:
            raise InputError(
                f"{self.name} predictor needs at least {self.min_train} training candidates, got {len(cands)}"
            )
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            bad = int(np.flatnonzero(~np.isfinite(y) | (y <= 0))[0])
            raise InputError(
                f"{self.name} predictor: training value for {describe(self.space, cands[bad])} is {y[bad]!r}; "
                "latencies/energies must be finite and > 0 (drop missing candidates before fitting)"
            )
        return cands, y


def space_from_settings(
    settings: object, given: EncodableSpace[Any] | None, path: str | os.PathLike[str]
) -> EncodableSpace[Any]:
    """The space a saved file was fitted on: ``given`` when its settings match, else rebuilt by name."""
    if not isinstance(settings, dict) or not isinstance(settings.get("space"), str):
        raise PredictorFileError(f"{str(path)!r}: no space settings recorded (expected e.g. {{'space': 'nb201'}})")
    if given is not None:
        check_space(given)
        if json.loads(json.dumps(given.settings())) != settings:
            raise PredictorFileError(
                f"{str(path)!r} was fitted on space {settings}, not on the given space {given.settings()}"
            )
        return given
    try:
        return check_space(get_space(settings["space"], **{k: v for k, v in settings.items() if k != "space"}))
    except InputError as exc:
        raise PredictorFileError(
            f"{str(path)!r}: its space {settings} cannot be rebuilt ({exc}); pass the space it was fitted on"
        ) from exc


def split_table(table: LatencyTable, n_train: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``n_train`` random candidates of the table (fixed by ``seed``) and all the others, in table order."""
    check_seed(seed)
    cands = ordered(table.cells())
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 1 <= n_train < len(cands):
        raise InputError(
            f"device {table.device!r} has {len(cands)} candidates; the training set must be 1..{len(cands) - 1} "
            f"of them, got {n_train!r}"
        )
    train = random.Random(seed).sample(cands, n_train)
    chosen = set(train)
    return train, [c for c in cands if c not in chosen]


def evaluate(predictor: Predictor, table: LatencyTable, candidates: Iterable[Any] | None = None) -> dict[str, float]:
    """``devicefit.ranking.regression_report`` of the predictor on ``candidates`` (default: the whole table).

    Every candidate must have a true value in the table; the error names the first one that has none.
    """
    from ..ranking import regression_report

    cands = table.cells() if candidates is None else as_candidates(predictor.space, candidates)
    missing = [c for c in cands if c not in table]
    if missing:
        raise UnknownNameError(
            f"{len(missing)} of the {len(cands)} candidates to evaluate have no {table.unit} value on device "
            f"{table.device!r}, e.g. {describe(predictor.space, missing[0])}; evaluate only on measured candidates"
        )
    if predictor.unit != table.unit:
        raise InputError(f"predictor is in {predictor.unit!r} but table {table.device!r} is in {table.unit!r}")
    return regression_report(predictor.predict(cands), table.array(cands))
