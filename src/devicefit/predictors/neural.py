"""What the MLP and GCN predictors share: a network on an encoding of the candidates, trained on standardised
log-cost with the loop of :mod:`._nn`, saved as its hyper-parameters, normalisation and weights.

A subclass says how to encode candidates (:meth:`encode`, through the predictor's space), which network to
build (:meth:`build`), how to run it on a slice of the encoding (:meth:`forward`), and what else identifies
its encoding in a saved file (:meth:`encoding_params`, checked again by :meth:`check_encoding` on load).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from ..spaces import EncodableSpace
from ._nn import LogStandardizer, arrays_to_state, predict_batched, state_to_arrays, train_network
from .base import Predictor
from .config import TrainConfig

Encoding = tuple[torch.Tensor, ...]


class NeuralPredictor(Predictor):
    default_train: TrainConfig

    def __init__(
        self,
        hidden: int,
        layers: int,
        dropout: float,
        train: TrainConfig | None = None,
        *,
        space: EncodableSpace[Any] | None = None,
    ) -> None:
        super().__init__(space=space)
        self.hidden, self.layers, self.dropout = hidden, layers, dropout
        self.train_config = train or self.default_train
        self.model = self.build()
        self.norm = LogStandardizer(np.zeros(1), np.ones(1))
        self.train_info: dict[str, Any] = {}

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> nn.Module: ...

    @abstractmethod
    def encode(self, candidates: list[Any]) -> Encoding: ...

    @abstractmethod
    def forward(self, encoding: Encoding, index: torch.Tensor) -> torch.Tensor: ...

    def encoding_params(self) -> dict[str, Any]:
        return {}

    def check_encoding(self, params: dict[str, Any]) -> None:
        """Raise ValueError when a saved file's encoding differs from this space's."""

    def train_config_for(self, n_candidates: int) -> TrainConfig:
        return self.train_config

    # -- shared -----------------------------------------------------------------------------------
    def _fit(self, candidates: list[Any], y: np.ndarray, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = self.build()
        self.norm = LogStandardizer.fit(y)
        enc = self.encode(candidates)
        target = torch.from_numpy(self.norm.transform(y)).float().unsqueeze(1)
        cfg = self.train_config_for(len(candidates))
        self.train_info = train_network(self.model, lambda i: self.forward(enc, i), target, cfg, seed)

    def _predict(self, candidates: list[Any]) -> np.ndarray:
        enc = self.encode(candidates)
        self.model.eval()
        return self.norm.inverse(predict_batched(lambda i: self.forward(enc, i), len(candidates))[:, 0])

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "hidden": self.hidden, "layers": self.layers, "dropout": self.dropout, **self.encoding_params(),
            "target_normalisation": self.norm.to_json(), "train": self.train_config.to_json(),
            "train_info": self.train_info,
        }
        return params, state_to_arrays(self.model)

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.check_encoding(params)
        self.hidden, self.layers, self.dropout = int(params["hidden"]), int(params["layers"]), float(params["dropout"])
        self.train_config = TrainConfig.from_json(params["train"])
        self.train_info = dict(params.get("train_info", {}))
        self.model = self.build()
        arrays_to_state(self.model, arrays)
        self.model.eval()
        self.norm = LogStandardizer.from_json(params["target_normalisation"])
