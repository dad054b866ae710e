"""MLP baseline on the space's vector encoding (for NB201 the one-hot of 6 edges x 5 ops), as BRP-NAS's MLP
comparison (arXiv 2007.08668, Table 1; eagle ``predictors/mlp``). Same target normalisation (standardised
log-cost), L1 loss and AdamW training loop as the GCN predictor.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..spaces import EncodableSpace
from .config import TrainConfig
from .encoding import vectors
from .neural import NeuralPredictor

MLP_TRAIN = TrainConfig(max_epochs=300, batch_size=32, lr=1e-3, weight_decay=5e-4, lr_patience=10, es_patience=30)


def _mlp(inputs: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    dims = [inputs] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    mods.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*mods)


class MLPPredictor(NeuralPredictor):
    name = "mlp"
    min_train = 2
    default_train = MLP_TRAIN

    def __init__(
        self,
        *,
        space: EncodableSpace[Any] | None = None,
        hidden: int = 256,
        layers: int = 3,
        dropout: float = 0.0,
        train: TrainConfig | None = None,
    ) -> None:
        super().__init__(hidden, layers, dropout, train, space=space)

    def build(self) -> nn.Module:
        return _mlp(self.space.vector_size, self.hidden, self.layers, self.dropout)

    def encode(self, candidates: list[Any]) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(vectors(self.space, candidates)),)

    def forward(self, encoding: tuple[torch.Tensor, ...], index: torch.Tensor) -> torch.Tensor:
        return self.model(encoding[0][index])

    def encoding_params(self) -> dict[str, Any]:
        return {"encoding": "space vector", "vector_size": self.space.vector_size}

    def check_encoding(self, params: dict[str, Any]) -> None:
        if params["vector_size"] != self.space.vector_size:
            raise InputError(
                f"the saved MLP takes vectors of {params['vector_size']} numbers; space {self.space.name!r} "
                f"encodes {self.space.vector_size}"
            )
