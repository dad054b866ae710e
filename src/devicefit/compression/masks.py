"""Weight masks that stay through training: ``torch.nn.utils.prune`` keeps ``weight_orig`` and ``weight_mask``
and computes ``weight = weight_orig * weight_mask`` before every forward, so fine-tuning updates only the kept
weights' originals and the pruned ones stay exactly zero; :func:`~devicefit.compression.finalize` makes them
permanent for export.

Unstructured magnitude pruning (Han et al., arXiv 1506.02626): per layer, the ``sparsity`` fraction of weights
with the smallest magnitude is masked (``prune.l1_unstructured``). For ``nn.LSTM``/``nn.GRU`` every weight
matrix (input and recurrent, each layer) is pruned at that sparsity; biases are kept.

On a dense runtime masks save no time: what they save is size, once stored sparse.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from .policy import Unstructured
from .registry import Skip, register_transform


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The 0/1 mask keeping the ``1 - sparsity`` fraction of largest-magnitude entries (ties: lower index)."""
    k = round(sparsity * weight.numel())  # as torch's prune: the number of entries removed
    mask = torch.ones_like(weight)
    if k:
        idx = torch.topk(weight.detach().abs().flatten(), k, largest=False).indices
        mask.view(-1)[idx] = 0
    return mask


def _weights(module: nn.Module) -> list[str]:
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        return [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return ["weight"]
    return []


@register_transform(Unstructured)
def prune_unstructured(root: nn.Module, name: str, module: nn.Module, action: Unstructured) -> dict[str, Any]:
    weights = _weights(module)
    if not weights:
        raise Skip(f"{type(module).__name__} has no weight matrix to prune (Linear, Conv and LSTM/GRU have)")
    kept = total = 0
    for w in weights:
        if prune.is_pruned(module) and hasattr(module, f"{w}_mask"):
            raise Skip(f"{name}.{w} is already masked")
        mask = unstructured_mask(getattr(module, w), action.sparsity)
        prune.custom_from_mask(module, w, mask)
        kept += int(mask.sum())
        total += mask.numel()
    return {"weights": weights, "kept": kept, "total": total}
