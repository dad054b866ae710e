"""MLP baseline on the one-hot cell encoding (6 edges x 5 ops), as BRP-NAS's MLP comparison
(arXiv 2007.08668, Table 1; eagle ``predictors/mlp``). Same target normalisation (standardised
log-cost), L1 loss and AdamW training loop as the GCN predictor.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from ..spaces.nb201 import NUM_EDGES, NUM_OPS, NB201Cell
from ._nn import TrainConfig
from .neural import NeuralPredictor

MLP_TRAIN = TrainConfig(max_epochs=300, batch_size=32, lr=1e-3, weight_decay=5e-4, lr_patience=10, es_patience=30)


def _mlp(hidden: int, layers: int, dropout: float) -> nn.Sequential:
    dims = [NUM_EDGES * NUM_OPS] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    mods.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*mods)


def one_hot(cells: list[NB201Cell]) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.one_hot() for c in cells]))


class MLPPredictor(NeuralPredictor):
    name = "mlp"
    min_train = 2
    default_train = MLP_TRAIN

    def __init__(
        self, hidden: int = 256, layers: int = 3, dropout: float = 0.0, train: TrainConfig | None = None
    ) -> None:
        super().__init__(hidden, layers, dropout, train)

    def build(self) -> nn.Module:
        return _mlp(self.hidden, self.layers, self.dropout)

    def encode(self, cells: list[NB201Cell]) -> tuple[torch.Tensor, ...]:
        return (one_hot(cells),)

    def forward(self, encoding: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
        return self.model(encoding[0][index])

    def encoding_params(self) -> dict[str, Any]:
        return {"encoding": "one-hot 6x5"}
