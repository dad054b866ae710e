"""Training settings of the neural predictors, as plain frozen dataclasses (no torch needed to make one)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (BRP-NAS, arXiv 2007.08668: AdamW, L1 loss, plateau LR schedule, early stopping).

    With at least ``min_cells_for_val`` training rows, ``val_fraction`` of them are held out for the LR
    schedule (halved after ``lr_patience`` epochs without improvement) and early stopping (after
    ``es_patience``); with fewer, all rows train for ``max_epochs``.
    """

    max_epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    lr_patience: int = 10
    es_patience: int = 25
    val_fraction: float = 0.1
    min_cells_for_val: int = 50

    def __post_init__(self) -> None:
        for name, low in (("max_epochs", 1), ("batch_size", 1), ("lr_patience", 0), ("es_patience", 1),
                          ("min_cells_for_val", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"TrainConfig.{name} must be an int >= {low}, got {v!r}")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf), ("val_fraction", 0.0, 1.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or not (low < v if name == "lr" else low <= v) or not v < high:
                bounds = "> 0" if name == "lr" else (">= 0" if high == math.inf else "in [0, 1)")
                raise InputError(f"TrainConfig.{name} must be a finite number {bounds}, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrainConfig:
        """Back from :meth:`to_json`; unknown or missing fields are an :class:`InputError`."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise InputError(f"training settings must be a dict with the fields {sorted(names)}, got {data!r}")
        return cls(**data)


__all__ = ["TrainConfig"]
