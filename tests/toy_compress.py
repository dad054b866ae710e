"""A tiny CNN, a learnable synthetic image task and a crashing hook, shared by the training-time compression
tests."""

from __future__ import annotations

import torch
from torch import nn

from devicefit.compression.train import TrainingHook
from devicefit.models.evaluate import TensorData


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def image_data(n: int = 256) -> TensorData:
    """The label says which of the first two channels are brighter than average (4 classes)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return TensorData(x, y, "synthetic images")


class Crash(TrainingHook):
    """Raises after step ``at_step`` (None: never): a run killed in the middle."""

    def __init__(self, at_step: int | None) -> None:
        self.at_step = at_step

    def after_step(self, model: nn.Module, step: int) -> None:
        if step == self.at_step:
            raise RuntimeError("simulated crash")
