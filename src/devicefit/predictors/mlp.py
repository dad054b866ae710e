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
from ._nn import LogStandardizer, TrainConfig, arrays_to_state, predict_batched, state_to_arrays, train_network
from .base import Predictor

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


class MLPPredictor(Predictor):
    name = "mlp"
    min_train = 2

    def __init__(
        self, hidden: int = 256, layers: int = 3, dropout: float = 0.0, train: TrainConfig | None = None
    ) -> None:
        super().__init__()
        self.hidden, self.layers, self.dropout = hidden, layers, dropout
        self.train_config = train or MLP_TRAIN
        self.model = _mlp(hidden, layers, dropout)
        self.norm = LogStandardizer(np.zeros(1), np.ones(1))
        self.train_info: dict[str, Any] = {}

    def _fit(self, cells: list[NB201Cell], y: np.ndarray, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = _mlp(self.hidden, self.layers, self.dropout)
        self.norm = LogStandardizer.fit(y)
        x = one_hot(cells)
        target = torch.from_numpy(self.norm.transform(y)).float().unsqueeze(1)
        self.train_info = train_network(self.model, lambda i: self.model(x[i]), target, self.train_config, seed)

    def _predict(self, cells: list[NB201Cell]) -> np.ndarray:
        x = one_hot(cells)
        self.model.eval()
        return self.norm.inverse(predict_batched(lambda i: self.model(x[i]), len(cells))[:, 0])

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "hidden": self.hidden, "layers": self.layers, "dropout": self.dropout, "encoding": "one-hot 6x5",
            "target_normalisation": self.norm.to_json(), "train": self.train_config.to_json(),
            "train_info": self.train_info,
        }
        return params, state_to_arrays(self.model)

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.hidden, self.layers, self.dropout = int(params["hidden"]), int(params["layers"]), float(params["dropout"])
        self.train_config = TrainConfig(**params["train"])
        self.train_info = dict(params.get("train_info", {}))
        self.model = _mlp(self.hidden, self.layers, self.dropout)
        arrays_to_state(self.model, arrays)
        self.model.eval()
        self.norm = LogStandardizer.from_json(params["target_normalisation"])
