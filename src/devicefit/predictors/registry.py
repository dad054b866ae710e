"""Predictor kinds by name, imported on first use (so that ``import devicefit.predictors`` stays light)."""

from __future__ import annotations

import inspect
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UnknownNameError

if TYPE_CHECKING:
    from ..spaces import EncodableSpace
    from .base import Predictor

#: Registry names of the predictor kinds, in order of sophistication.
PREDICTOR_KINDS: tuple[str, ...] = ("flops", "layerwise", "mlp", "gcn", "transfer")
#: The ``kind`` of a saved transfer trunk file (not a predictor).
TRUNK_KIND = "transfer-trunk"
#: Units of the values a predictor is fitted on: latency in milliseconds, energy in millijoules.
UNITS: tuple[str, ...] = ("ms", "mJ")
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


__all__ = ["PREDICTOR_KINDS", "TRUNK_KIND", "UNITS", "make_predictor", "predictor_class"]
