"""Which layers the per-parameter proxies sum over, and how to put a model back the way it was.

The reference (SamsungLabs/zero-cost-nas, ``get_layer_metric_array``) sums over the weights of
``nn.Conv2d`` and ``nn.Linear`` modules; for an arbitrary network we take every ``nn.Conv1d/2d/3d``
and ``nn.Linear`` (found by type, so subclasses count), and never biases or normalisation parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

SCORED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def scored_layers(model: nn.Module) -> list[nn.Module]:
    """The Conv/Linear modules whose weights the proxies score, in ``model.modules()`` order, each once."""
    return [m for m in model.modules() if isinstance(m, SCORED_LAYERS)]


def is_relu(module: nn.Module) -> bool:
    """NASWOT's test: a module whose class name contains 'ReLU' (nn.ReLU, ReLU6, LeakyReLU...)."""
    return "ReLU" in type(module).__name__


@contextmanager
def scoring_state(model: nn.Module, *, train: bool) -> Iterator[None]:
    """Run in train/eval mode with all scored weights requiring grad, then restore the mode, the
    ``requires_grad`` flags and every buffer (BatchNorm running statistics), so scoring leaves the
    user's model as it found it without a deep copy."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        model.train(train)
        for layer in scored_layers(model):
            layer.weight.requires_grad_(True)
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in flags.items():
            p.requires_grad_(flag)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
