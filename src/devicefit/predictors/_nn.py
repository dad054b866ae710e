"""Shared by the neural predictors: target normalisation, the training loop, weights <-> arrays."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .config import TrainConfig


@dataclass(frozen=True)
class LogStandardizer:
    """``z = (log(y) - mean) / std`` with the mean/std of the training targets (per output column)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray) -> LogStandardizer:
        logy = np.log(np.asarray(y, dtype=np.float64))
        mean = np.nanmean(logy, axis=0)
        std = np.nanstd(logy, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        return cls(np.atleast_1d(mean), np.atleast_1d(std))

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (np.log(y) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z * self.std + self.mean)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "log-standardize", "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LogStandardizer:
        if d.get("kind") != "log-standardize":
            raise InputError(f"unknown target normalisation {d.get('kind')!r}")
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def train_network(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    config: TrainConfig,
    seed: int,
    mask: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fit ``model`` so that ``forward(idx) ~ target[idx]`` (L1 loss, masked where ``mask`` is 0).

    With at least ``min_cells_for_val`` rows, ``val_fraction`` of them (taken from the training rows
    only) are held out for the LR schedule and early stopping, and the best epoch's weights are kept;
    with fewer, all rows are trained on for ``max_epochs``.
    """
    n = target.shape[0]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = round(config.val_fraction * n) if n >= config.min_cells_for_val else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=config.lr_patience)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        err = (forward(idx) - target[idx]).abs()
        if mask is None:
            return err.mean()
        m = mask[idx]
        return (err * m).sum() / m.sum().clamp_min(1.0)

    best_loss, best_state, best_epoch, bad = math.inf, None, 0, 0
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
        for start in range(0, order.numel(), config.batch_size):
            opt.zero_grad()
            loss = loss_of(order[start : start + config.batch_size])
            loss.backward()
            opt.step()
        if n_val:
            model.eval()
            with torch.no_grad():
                val = float(loss_of(val_idx))
            sched.step(val)
            if val < best_loss - 1e-6:
                best_loss, best_state, best_epoch, bad = val, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                bad += 1
                if bad >= config.es_patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "best_epoch": best_epoch if n_val else epoch, "val_l1": best_loss if n_val else None,
            "n_val": n_val}


def state_to_arrays(model: nn.Module, prefix: str = "w.") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def arrays_to_state(model: nn.Module, arrays: dict[str, np.ndarray], prefix: str = "w.") -> None:
    state = {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)


def predict_batched(fn: Callable[[torch.Tensor], torch.Tensor], n: int, batch: int = 4096) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            out.append(fn(torch.arange(start, min(n, start + batch))).cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0,))
