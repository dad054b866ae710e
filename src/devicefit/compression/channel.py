"""Channel pruning: output channels (filters, neurons) removed for real, with every layer coupled to them.

Torch-Pruning (DepGraph, Fang et al., arXiv 2301.12900) finds the group of a layer's output channels: the
BatchNorm after it, the next layers' input channels and, through residual additions, the other layers
whose outputs are added to it (every ``conv2`` of a ResNet stage and the stem). A group is pruned once, as
a whole; the analysis (:mod:`.analysis`) says which groups are blocked (the classifier, a layer Torch-Pruning
cannot prune through) and those are skipped with the reason.

The group keeps ``n = min(C, max(round_to, round_to * round(keep * C / round_to)))`` of its ``C`` channels
(a multiple of ``round_to``; a group narrower than ``round_to`` is refused) and removes the ``C - n`` least
important, by one of:

- ``l1``, ``l2``: group weight norms, Torch-Pruning's ``GroupMagnitudeImportance(p)`` (the mean over the
  group's layers of each channel's filter norm, its BatchNorm scale and its consumers' input weights: DepGraph's
  group-level criterion; for a single conv without coupling it is Li et al.'s filter L1 norm, 1608.08710);
- ``bn_scale``: BatchNorm scales, ``BNScaleImportance`` (network slimming, 1708.06519);
- ``taylor``: first-order Taylor ``|w * dL/dw|`` summed per channel over the group, ``GroupTaylorImportance``
  (Molchanov et al., arXiv 1906.10771), the gradients of the cross-entropy over the data batches;
- ``snip`` and ``fisher``: devicefit's zero-cost proxies (:mod:`devicefit.proxies.gradient_pass`) per channel
  instead of summed over the network. ``snip`` is ``|W * dL/dW|`` summed over each output channel's weights;
  ``fisher`` is ``0.5 * mean_n (sum_hw a * dL/da)^2`` of each output channel ``a`` (Theis et al. 1801.05787, the
  proxy's per-channel term before it is summed). Both are summed over the group's Conv/Linear layers whose
  outputs are the group's channels.

Data-driven criteria use the cross-entropy of the model's outputs over the batches ``apply_policy`` got
(``(inputs, labels)`` pairs, at most :data:`MAX_BATCHES`), in eval mode (BatchNorm statistics unchanged);
gradients are cleared afterwards. Ties go to the lower channel index. The history records the removed channel
indices, so a replay removes the same channels without data.

Coupled layers are pruned consistently: a group is pruned with the action of the policy's layers in it;
different ``ChannelPrune`` actions (or a ``Keep``) on layers of one group are refused before any change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .analysis import CoupledGroup, dependency_graph
from .policy import ChannelPrune
from .registry import Skip, register_transform

#: Data batches used for the taylor, snip and fisher criteria.
MAX_BATCHES = 8
DATA_IMPORTANCES = ("taylor", "snip", "fisher")


def kept_channels(channels: int, action: ChannelPrune, where: str) -> int:
    """Channels a group of ``channels`` keeps under ``action`` (see the module docstring)."""
    r = action.round_to
    if channels < r:
        raise InputError(f"ChannelPrune(keep={action.keep}, round_to={r}) on {where}: its {channels} channels hold "
                         f"no non-zero multiple of {r}")
    return min(channels, max(r, r * round(action.keep * channels / r)))


@register_transform(ChannelPrune)
def prune_channels(root: nn.Module, name: str, module: nn.Module, action: ChannelPrune, *,
                   example_input: torch.Tensor, data: Sequence[Any] | None = None,
                   recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Prune the coupled group of layer ``name`` (called once per group by ``apply_policy``)."""
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise Skip(f"{type(module).__name__} has no output channels to prune (Conv2d and Linear have)")
    info = dependency_graph(root, example_input)
    group = next((g for g in info.groups if name in g.members), None)
    if group is None:
        raise Skip("not reached by the forward pass")
    if group.blocked:
        raise Skip(group.blocked)
    graph = info.graph
    first = root.get_submodule(group.members[0])
    prune_out = graph.get_pruner_of_module(first).prune_out_channels
    n_keep = kept_channels(group.channels, action, repr(name))
    if recorded is not None:
        pruned = [int(i) for i in recorded.get("pruned", [])]
        if len(set(pruned)) != len(pruned) or any(not 0 <= i < group.channels for i in pruned):
            raise InputError(f"the history's pruned channels of {name!r} do not fit its {group.channels} channels")
    else:
        full = graph.get_pruning_group(first, prune_out, list(range(group.channels)))
        scores = _importance(root, full, group, action, data)
        order = torch.sort(scores.double(), stable=True).indices
        pruned = sorted(order[: group.channels - n_keep].tolist())
    if pruned:
        graph.get_pruning_group(first, prune_out, pruned).prune(record_history=False)
    return {"group": list(group.members), "channels": group.channels, "kept": group.channels - len(pruned),
            "importance": action.importance, "pruned": pruned}


def _importance(root: nn.Module, full: Any, group: CoupledGroup, action: ChannelPrune,
                data: Sequence[Any] | None) -> torch.Tensor:
    import torch_pruning as tp

    kind = action.importance
    if kind in DATA_IMPORTANCES and not data:
        raise InputError(f"ChannelPrune importance {kind!r} needs data: give apply_policy data=[(inputs, labels), "
                         "...]")
    if kind in ("l1", "l2"):
        scores = tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2, normalizer=None)(full)
    elif kind == "bn_scale":
        scores = tp.importance.BNScaleImportance(normalizer=None)(full)
        if scores is None:
            raise Skip("bn_scale importance needs a BatchNorm in the group; it has none")
    elif kind == "taylor":
        with _gradients(root, data or []):
            scores = tp.importance.GroupTaylorImportance(normalizer=None)(full)
    else:
        scores = _proxy_importance(root, full, kind, data or [])
    if scores is None:
        raise Skip(f"{kind} importance found no weighted layer in the group")
    return scores.detach().flatten()


class _gradients:
    """Cross-entropy gradients of every parameter over the batches (eval mode), cleared on exit."""

    def __init__(self, model: nn.Module, data: Sequence[Any]) -> None:
        self.model, self.data = model, data

    def __enter__(self) -> None:
        self.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for x, y in _pairs(self.data):
                F.cross_entropy(self.model(x), y, reduction="sum").backward()
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def __exit__(self, *exc: object) -> None:
        self.model.zero_grad(set_to_none=True)


def _pairs(data: Sequence[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in list(data)[:MAX_BATCHES]:
        pair = isinstance(batch, (tuple, list)) and len(batch) == 2
        if not (pair and all(isinstance(t, torch.Tensor) for t in batch)):
            raise InputError("data for channel importance must be (inputs, labels) tensor pairs, got "
                             f"{type(batch).__name__}")
        out.append((batch[0], batch[1]))
    return out


def _out_members(full: Any) -> list[tuple[nn.Module, list[int], list[int]]]:
    """(layer, its channel indices, the group's root indices) of every Conv/Linear whose outputs are pruned."""
    import torch_pruning as tp

    fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    return [(item.dep.target.module, list(item.idxs), list(item.root_idxs)) for item in full
            if item.dep.handler in fns and isinstance(item.dep.target.module, (nn.Conv2d, nn.Linear))]


def _proxy_importance(root: nn.Module, full: Any, kind: str, data: Sequence[Any]) -> torch.Tensor:
    members = _out_members(full)
    n_channels = max(max(r) for _, _, r in members) + 1
    total = torch.zeros(n_channels, dtype=torch.float64)
    if kind == "snip":
        with _gradients(root, data):
            for layer, idxs, roots in members:
                per_channel = (layer.weight.detach() * layer.weight.grad).abs().flatten(1).sum(1).double()
                total.index_add_(0, torch.tensor(roots), per_channel[idxs])
        return total
    # fisher: 0.5 * mean_n (sum_hw a * dL/da)^2 per output channel of each member layer
    sums = {layer: torch.zeros(layer.weight.shape[0], dtype=torch.float64) for layer, _, _ in members}
    outputs: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(layer: nn.Module, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        outputs.append((layer, out))

    hooks = [layer.register_forward_hook(keep) for layer in sums]
    count = 0
    try:
        with torch.enable_grad():
            for x, y in _pairs(data):
                outputs.clear()
                F.cross_entropy(root(x), y, reduction="sum").backward()
                count += int(x.shape[0])
                for layer, a in outputs:
                    if a.grad is None:
                        continue
                    g = a.detach() * a.grad
                    if isinstance(layer, nn.Linear):  # features last: sum over any middle dimensions
                        g = g.reshape(g.shape[0], -1, g.shape[-1]).sum(1)
                    elif g.dim() > 2:  # (N, C, H, W): sum over the positions
                        g = g.flatten(2).sum(2)
                    sums[layer] += g.double().pow(2).sum(0)
    finally:
        for h in hooks:
            h.remove()
        root.zero_grad(set_to_none=True)
    for layer, idxs, roots in members:
        total.index_add_(0, torch.tensor(roots), 0.5 * sums[layer][idxs] / max(count, 1))
    return total
