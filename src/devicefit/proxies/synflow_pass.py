"""SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
flow", arXiv 2006.05467) as the zero-cost proxies reference computes it (arXiv 2101.08134,
SamsungLabs/zero-cost-nas ``measures/synflow.py``, registered with ``bn=False``).

On a copy of the network: every BatchNorm layer replaced by identity (the reference disables BN for
synflow; for an arbitrary model we copy it and swap each ``nn.BatchNorm1d/2d/3d``/``SyncBatchNorm`` for
``nn.Identity``), every parameter and buffer replaced by its absolute value, everything in float64, one
all-ones input of the minibatch's per-example shape (batch 1), R = sum of the outputs, and

    synflow = sum over Conv/Linear weights of |W * dR/dW|.

The score does not depend on the data (only on the input shape) nor on BatchNorm statistics. The copy is
put in eval mode so that dropout, if any, is off (the reference network has no dropout, so this changes
nothing there). The user's model is not modified.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import scored_layers
from .result import ProxyResult


def _without_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)


def synflow(model: nn.Module, input_shape: tuple[int, ...] | torch.Size, *, copy_model: bool = True) -> ProxyResult:
    """SynFlow of ``model`` for inputs of per-example shape ``input_shape`` (e.g. (3, 32, 32)).

    ``copy_model=False`` scores ``model`` itself and leaves it changed (no BN, float64, absolute values): for
    a network built only to be scored, where the copy would cost more than the pass."""
    try:
        net = copy.deepcopy(model) if copy_model else model
    except Exception as exc:
        return ProxyResult.failed("synflow", f"synflow failed: cannot copy the model ({exc})")
    _without_batchnorm(net)
    net = net.double().eval()
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.is_floating_point():
                t.abs_()
    layers = scored_layers(net)
    if not layers:
        return ProxyResult.failed("synflow", "synflow failed: the model has no Conv or Linear layer to score")
    for p in net.parameters():
        p.requires_grad_(False)
    weights = [m.weight.requires_grad_(True) for m in layers]
    x = torch.ones((1, *tuple(input_shape)), dtype=torch.float64)
    try:
        out = net(x)
        grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    except RuntimeError as exc:
        return ProxyResult.failed("synflow", f"synflow failed: {exc}")
    with torch.no_grad():
        score = sum(float((w * g).abs().sum()) for w, g in zip(weights, grads) if g is not None)
    return ProxyResult.of("synflow", score)
