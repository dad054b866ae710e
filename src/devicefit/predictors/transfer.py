"""Few-shot transfer: a GCN pre-trained on many source devices, adapted to a new device from 10-50 cells.

Goal (HELP, Lee et al., arXiv 2106.08630): a user with a new device measures ~20 cells, not 900.
HELP meta-learns a predictor conditioned on a hardware embedding (the device's latencies of 10 fixed
reference cells). This predictor keeps the BRP-NAS GCN (arXiv 2007.08668) and makes the same idea
plain regression:

1. Pre-train (:meth:`TransferPredictor.pretrain`): one GCN trunk (4 x 600, global-node readout) with
   one linear output per *source* device, on standardised log-latencies (per-device z-score of
   ``log(ms)``, so a 0.5 ms GPU and a 3 s phone weigh the same), L1 loss, missing cells masked.
   The S outputs of a cell are "how slow is this cell on each known device, relative to that device".
2. Adapt (:meth:`fit`, the few target samples): ridge regression of the target's ``log(value)`` on those
   S source predictions (+ intercept), the ridge strength picked by exact leave-one-out error among
   a log grid. The target device is thus written as a learned mix of source devices; with 10-20
   samples only S+1 numbers are fitted, and the trunk stays frozen. Cells whose output is
   disconnected from the input are kept out of the ridge fit: some devices' pipelines drop such dead
   networks (HELP's raspi4 times them at a median 0.14 ms, against 26 ms for connected cells) and
   others run them, so the sources disagree wildly on them; two such cells among 20 samples wrecked
   the fit (measured: raspi4 Spearman 0.49 for one seed, also with an indicator feature). If the
   samples contain disconnected cells, those are predicted at the mean of their log-values;
   otherwise the ridge predicts them like any cell.

Why not fine-tuning: 20 samples cannot move 1.1 M weights without over-fitting, and a closed-form
head needs no epochs, so adapting costs milliseconds. Why log: latencies combine multiplicatively
across devices (a faster clock scales all cells), so a linear mix of log-latencies is the natural
family, and L1 on log is the relative error that +-10 % measures.

Evaluation must never pre-train on the target device: :func:`device_family` groups settings of one
chip (batch sizes, precisions, ``-large`` variants), and :func:`sources_for` leaves the target's whole
family out. Devices of a family are near-duplicates (titan_rtx_1 vs titan_rtx_32), so leaving only the
target device out would make transfer look easier than it is for a genuinely new chip.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..data.latency_table import LatencyTable
from ..errors import InputError
from ..spaces.nb201 import NB201Cell, all_cells
from ._nn import TrainConfig, arrays_to_state, predict_batched, state_to_arrays, train_network
from .base import Predictor
from .gcn import GCN, MAX_NODES, NODE_LABELS, graph_tensors

PRETRAIN = TrainConfig(max_epochs=80, batch_size=32, lr=1e-3, weight_decay=5e-4, lr_patience=7, es_patience=10)
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))

_FAMILY_RULES: tuple[tuple[str, str], ...] = (
    # LatBench: the "gtx-1080ti" file is near-identical to the i7 CPU one (see the data README), so both
    # go with the 1080 Ti family of HELP.
    (r"^desktop-(cpu-core-i7-7820x|gpu-gtx-1080ti)", "1080ti"),
    (r"^embedded-gpu-jetson-nano", "jetson-nano"),
    (r"^embedded-tpu-edge", "edge-tpu"),
    (r"^mobile-(cpu|gpu|dsp)-snapdragon-(\d+)", r"snapdragon-\2"),
    (r"^(1080ti|2080ti|titan_rtx|titanx)_\d+$", r"\1"),
)


def device_family(device: str) -> str:
    """The chip a device setting runs on: ``titan_rtx_256`` -> ``titan_rtx``, LatBench SoCs by SoC."""
    for pattern, family in _FAMILY_RULES:
        m = re.match(pattern, device)
        if m:
            return m.expand(family)
    return device


def sources_for(target: str, tables: Mapping[str, LatencyTable], *, leave: str = "family") -> dict[str, LatencyTable]:
    """The source tables for ``target``: all others minus its family (``leave="family"``) or minus itself."""
    if leave not in ("family", "device"):
        raise InputError(f"leave must be 'family' or 'device', got {leave!r}")
    fam = device_family(target)
    return {
        name: t
        for name, t in tables.items()
        if name != target and (leave == "device" or device_family(name) != fam) and len(t) > 0
    }


def ridge_loo(
    x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS
) -> tuple[np.ndarray, float, float]:
    """Ridge regression with intercept; ``alpha`` by exact leave-one-out squared error. -> (w, b, alpha)."""
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    n, d = xc.shape
    best = (np.inf, 0.0, np.zeros(d))
    for a in alphas:
        k = xc.T @ xc + a * np.eye(d)
        w = np.linalg.solve(k, xc.T @ yc)
        h = xc @ np.linalg.solve(k, xc.T) + 1.0 / n  # hat matrix, intercept included
        resid = yc - xc @ w
        loo = np.mean((resid / np.clip(1.0 - np.diag(h), 1e-9, None)) ** 2)
        if loo < best[0]:
            best = (loo, a, w)
    _, alpha, w = best
    return w, float(ym - xm @ w), float(alpha)


class TransferPredictor(Predictor):
    """Pre-train on source devices (:meth:`pretrain`), then ``fit`` on a few cells of the target device."""

    name = "transfer"
    min_train = 3

    def __init__(
        self,
        pretrain_cells: int = 1000,
        hidden: int = 600,
        layers: int = 4,
        dropout: float = 0.002,
        train: TrainConfig | None = None,
    ) -> None:
        super().__init__()
        self.pretrain_cells, self.hidden, self.layers, self.dropout = pretrain_cells, hidden, layers, dropout
        self.train_config = train or PRETRAIN
        self.model: GCN | None = None
        self.sources: list[str] = []
        self.source_norm: dict[str, list[float]] = {}
        self.pretrain_info: dict[str, Any] = {}
        self.w = np.zeros(0)
        self.b = 0.0
        self.alpha = 0.0
        self._all_features: np.ndarray | None = None  # frozen trunk -> outputs of all cells, computed once
        self.disconnected_log: float | None = None

    @property
    def is_pretrained(self) -> bool:
        return self.model is not None

    def pretrain(self, sources: Mapping[str, LatencyTable], *, seed: int = 0) -> TransferPredictor:
        """Fit the multi-device GCN on ``pretrain_cells`` random cells of the source tables."""
        if len(sources) < 2:
            raise InputError(f"transfer pre-training needs at least 2 source devices, got {len(sources)}")
        names = sorted(sources)
        pool = sorted(set().union(*(sources[n].values.keys() for n in names)))
        rng = random.Random(seed)
        cells = rng.sample(pool, min(self.pretrain_cells, len(pool)))
        y = np.full((len(cells), len(names)), np.nan)
        for j, n in enumerate(names):
            y[:, j] = [sources[n].get(c) or np.nan for c in cells]
        logy = np.log(y)
        mean, std = np.nanmean(logy, 0), np.nanstd(logy, 0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (logy - mean) / std
        mask = np.isfinite(z)
        torch.manual_seed(seed)
        self.model = GCN(self.hidden, self.layers, self.dropout, outputs=len(names))
        adj, feat = graph_tensors(cells)
        target = torch.from_numpy(np.nan_to_num(z)).float()
        model = self.model
        weights = torch.from_numpy(mask).float()
        info = train_network(model, lambda i: model(adj[i], feat[i]), target, self.train_config, seed, mask=weights)
        self._all_features = None
        self.sources = names
        self.source_norm = {n: [float(mean[j]), float(std[j])] for j, n in enumerate(names)}
        self.pretrain_info = {**info, "cells": len(cells), "seed": seed}
        return self

    def source_features(self, cells: list[NB201Cell]) -> np.ndarray:
        """``(n, S)``: the pre-trained trunk's standardised log-latency of each cell on each source device."""
        if self.model is None:
            raise InputError("transfer predictor is not pre-trained: call pretrain(source_tables) first")
        if self._all_features is not None or len(cells) > 2000:  # many cells: embed the whole space once
            if self._all_features is None:
                self._all_features = self._features(all_cells())
            return self._all_features[[c.ops_index for c in cells]]
        return self._features(cells)

    def _features(self, cells: list[NB201Cell]) -> np.ndarray:
        assert self.model is not None
        adj, feat = graph_tensors(cells)
        self.model.eval()
        model = self.model
        return predict_batched(lambda i: model(adj[i], feat[i]), len(cells)).astype(np.float64)

    def _fit(self, cells: list[NB201Cell], y: np.ndarray, seed: int) -> None:
        flag = np.array([c.is_disconnected() for c in cells])
        fit_on = ~flag if (~flag).sum() >= 3 else np.ones_like(flag)
        x = self.source_features([c for c, keep in zip(cells, fit_on) if keep])
        self.w, self.b, self.alpha = ridge_loo(x, np.log(y[fit_on]))
        self.disconnected_log = float(np.mean(np.log(y[flag]))) if flag.any() else None

    def _predict(self, cells: list[NB201Cell]) -> np.ndarray:
        logy = self.source_features(cells) @ self.w + self.b
        if self.disconnected_log is not None:
            logy[[c.is_disconnected() for c in cells]] = self.disconnected_log
        return np.exp(logy)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        assert self.model is not None
        params = {
            "hidden": self.hidden, "layers": self.layers, "dropout": self.dropout,
            "node_labels": list(NODE_LABELS), "max_nodes": MAX_NODES, "pretrain_cells": self.pretrain_cells,
            "sources": self.sources, "source_normalisation": {"kind": "log-standardize", **self.source_norm},
            "pretrain": self.train_config.to_json(), "pretrain_info": self.pretrain_info,
            "head": {
                "kind": "ridge on source outputs -> log(value); disconnected cells: mean log of their samples",
                "disconnected_log": self.disconnected_log,
                "alpha": self.alpha,
                "intercept": self.b,
            },
        }
        return params, {**state_to_arrays(self.model), "head_w": self.w}

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if list(params["node_labels"]) != list(NODE_LABELS) or params["max_nodes"] != MAX_NODES:
            raise InputError("graph encoding of the saved transfer predictor differs from this version's")
        self.hidden, self.layers, self.dropout = int(params["hidden"]), int(params["layers"]), float(params["dropout"])
        self.pretrain_cells = int(params["pretrain_cells"])
        self.train_config = TrainConfig(**params["pretrain"])
        self.sources = list(params["sources"])
        norm = dict(params["source_normalisation"])
        norm.pop("kind", None)
        self.source_norm = norm
        self.pretrain_info = dict(params.get("pretrain_info", {}))
        self.model = GCN(self.hidden, self.layers, self.dropout, outputs=len(self.sources))
        self._all_features = None
        arrays_to_state(self.model, {k: v for k, v in arrays.items() if k != "head_w"})
        self.model.eval()
        self.w = np.asarray(arrays["head_w"], dtype=np.float64).reshape(len(self.sources))
        d = params["head"]["disconnected_log"]
        self.disconnected_log = None if d is None else float(d)
        self.b = float(params["head"]["intercept"])
        self.alpha = float(params["head"]["alpha"])
