"""Weight-only quantization to a few bits per weight (the ``WeightBits`` action): the per-layer bit widths of
mixed-precision storage, as HAQ (arXiv 1811.08886) and AutoML size budgets choose them.

Symmetric uniform quantization with ``2**(bits-1) - 1`` levels on each side of zero (``bits = 8``: -127..127, the
int8 weight range of ONNX Runtime), scale ``max|w| / qmax`` per output channel (axis 0) or per tensor. The
quantized values are written into the weight (``weight_orig`` of a pruned layer, so its mask still applies),
which keeps the model a plain float model that every runtime and export takes; zeros stay exactly zero. Biases
stay float32. :func:`~devicefit.compression.compressed_cost` counts the layer's weights at ``bits`` bits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .policy import WeightBits
from .registry import Skip, register_transform

#: The layers whose weights are quantized.
QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def quantize_to_bits(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """``weight`` rounded to its nearest of the symmetric ``bits``-bit levels (and back to float)."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    if per_channel and w.dim() > 1:
        peak = w.abs().reshape(w.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        peak = w.abs().amax()
    scale = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
    return (torch.clamp(torch.round(w / scale), -qmax, qmax) * scale).to(weight.dtype)


def weight_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` weights stored at ``bits`` bits each (whole bytes per tensor)."""
    return math.ceil(count * bits / 8)


@register_transform(WeightBits)
def quantize_layer_bits(root: nn.Module, name: str, module: nn.Module, action: WeightBits, **_: Any
                        ) -> dict[str, Any]:
    if not isinstance(module, QUANTIZABLE):
        raise Skip(f"{type(module).__name__} weights are not quantized (bits covers Conv1d/2d/3d and Linear)")
    stored = module.weight_orig if hasattr(module, "weight_orig") else module.weight
    with torch.no_grad():
        stored.copy_(quantize_to_bits(stored, action.bits, action.per_channel))
    return {"bits": action.bits, "weights": int(stored.numel())}
