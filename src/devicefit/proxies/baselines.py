"""The two baselines the zero-cost proxies paper compares against (arXiv 2101.08134, Table 1):
number of parameters and FLOPs.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one input of the minibatch's
per-example shape, in eval mode, without gradients: 2 x multiply-accumulates of convolutions and
matrix products (normalisation, activations and pooling are not counted). NAS-Bench-201 reports MACs, so
its "FLOPs" are half of these; rankings are the same.
"""

from __future__ import annotations

import torch
from torch import nn

from .result import ProxyResult


def params(model: nn.Module) -> ProxyResult:
    """Number of parameters (all of them, trainable or not)."""
    return ProxyResult.of("params", sum(p.numel() for p in model.parameters()))


def flops(model: nn.Module, input_shape: tuple[int, ...] | torch.Size) -> ProxyResult:
    """FLOPs of one forward pass of one example of shape ``input_shape``."""
    from ..hardware.counting import eval_mode, flop_counter

    try:
        x = torch.zeros((1, *tuple(input_shape)), dtype=next(iter(model.parameters()), torch.zeros(())).dtype)
        counter = flop_counter()
        with eval_mode(model), torch.no_grad(), counter:
            model(x)
        return ProxyResult.of("flops", counter.get_total_flops())
    except RuntimeError as exc:
        return ProxyResult.failed("flops", f"flops failed: {exc}")
