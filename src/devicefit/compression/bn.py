"""BatchNorm re-calibration: recompute the running statistics of every BatchNorm layer on a few batches.

After channels are removed or weights are factorised, masked or quantised, the activations a BatchNorm
sees are no longer those its running mean and variance were estimated on; re-estimating them, without any
training, recovers much of the lost accuracy (the "BN calibration" step of EagleEye, arXiv 2007.02491, and of
AMC-style evaluation of candidate policies). Each BatchNorm's statistics are reset and then averaged over
the batches with equal weight (``momentum=None``: PyTorch's cumulative moving average), in train mode and
without gradients; only BatchNorm layers are in train mode meanwhile, so dropout stays off, and the model
goes back to eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import InputError


def _inputs(batch: Any) -> torch.Tensor:
    """The input tensor of a batch: the batch itself or the first item of an ``(inputs, labels)`` pair."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise InputError(f"each batch must be a tensor or an (inputs, labels) pair, got {type(batch).__name__}")
    return x


def recalibrate_batchnorm(model: nn.Module, data: Iterable[Any], *, batches: int = 20) -> int:
    """Re-estimate the running statistics of every BatchNorm of ``model`` (in place) from the first ``batches``
    batches of ``data`` (tensors, or ``(inputs, labels)`` pairs); returns the number of batches used. The model
    is left in eval mode."""
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise InputError(f"batches must be an integer >= 1, got {batches!r}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        model.eval()
        return 0
    saved = [(m, m.momentum) for m in norms]
    stats = {m: {k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms}
    used = 0
    done = False
    try:
        for m in norms:
            if not m.track_running_stats:
                continue
            m.reset_running_stats()
            m.momentum = None
        model.eval()
        for m in norms:
            m.train()
        with torch.no_grad():
            for batch in data:
                if used == batches:
                    break
                model(_inputs(batch))
                used += 1
        if not used:
            raise InputError("recalibrate_batchnorm got no batch from data")
        done = True
    finally:
        for m, momentum in saved:
            m.momentum = momentum
            if not done:  # put the statistics back as they were
                with torch.no_grad():
                    for k, v in m.named_buffers(recurse=False):
                        v.copy_(stats[m][k])
        model.eval()
    return used
