"""Predictor kinds by name, imported on first use (so that ``import devicefit.predictors`` stays light)."""

from __future__ import annotations

import inspect
import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UnknownNameError
from .kinds import PREDICTOR_KINDS, TRUNK_KIND, UNITS

if TYPE_CHECKING:
    from ..spaces import EncodableSpace
    from .base import Predictor

_CLASSES = {
    "flops": ("flops", "FlopsPredictor"),
    "layerwise": ("layerwise", "LayerwisePredictor"),
    "mlp": ("mlp", "MLPPredictor"),
    "gcn": ("gcn", "GCNPredictor"),
    "transfer": ("transfer", "TransferPredictor"),
}


def predictor_class(kind: str) -> type[Predictor]:
    """The class of a predictor kind; an unknown kind lists the known ones."""
    if kind not in _CLASSES:
        raise UnknownNameError(f"unknown predictor kind {kind!r}; expected one of {', '.join(PREDICTOR_KINDS)}")
    module, name = _CLASSES[kind]
    return getattr(import_module(f".{module}", __package__), name)


def make_predictor(kind: str, *, space: EncodableSpace[Any] | None = None, **options: Any) -> Predictor:
    """A fresh predictor of ``kind`` on ``space`` (default NB201), with its constructor ``options``
    (e.g. ``make_predictor("gcn", hidden=64, train=TrainConfig(max_epochs=20))``)."""
    cls = predictor_class(kind)
    accepted = [p for p in inspect.signature(cls).parameters if p != "space"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"predictor {kind!r} has no option(s) {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(accepted) or 'none'}"
        )
    return cls(space=space, **options)


def load_predictor(path: str | os.PathLike[str], *, space: EncodableSpace[Any] | None = None) -> Predictor:
    """Load any saved predictor: the kind and the space are read from its metadata (``space``, when given, must
    be the one it was fitted on); see :meth:`devicefit.predictors.Predictor.load`."""
    from .io import PredictorFileError, load_arrays

    meta, arrays = load_arrays(path)
    kind = meta.get("kind")
    if kind == TRUNK_KIND:
        raise PredictorFileError(
            f"{str(path)!r} is a pre-trained transfer trunk, not a predictor: use it with load_trunk() or --trunk"
        )
    if kind not in PREDICTOR_KINDS:
        raise PredictorFileError(f"{str(path)!r}: unknown predictor kind {kind!r}; known: {', '.join(PREDICTOR_KINDS)}")
    return predictor_class(kind).from_saved(meta, arrays, path, space)


__all__ = ["PREDICTOR_KINDS", "TRUNK_KIND", "UNITS", "load_predictor", "make_predictor", "predictor_class"]
