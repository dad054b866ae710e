"""``apply_policy``: the one way to compress a model with a policy, with a replayable history and the exact cost.

Each transform is one file that registers the action it implements (``@register_transform(LowRank)``).
Every name in the policy is checked first (an unknown module is refused with the names that exist), then
the actions run on a deep copy, one layer at a time. A layer an action cannot apply to (a grouped
convolution for low rank, a BatchNorm for pruning) is skipped and reported with the reason, never crashed
on. The history is plain JSON (module, action, what was done, output shape before and after) and
:func:`replay_history` rebuilds the same model from the original (the transforms are deterministic).
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import InputError
from .policy import Keep, Policy, action_from_dict
from .registry import TRANSFORMS, Skip


def _load_transforms() -> None:
    from . import lowrank, masks  # noqa: F401  # importing registers them


@dataclass
class CompressionResult:
    """The compressed model, what was done to each layer, the layers skipped (with why), and the cost."""

    model: nn.Module
    history: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    cost: dict[str, Any] = field(default_factory=dict)


def _shape_of(module: nn.Module, example: torch.Tensor, root: nn.Module) -> list[int] | None:
    """The output shape of ``module`` when ``root`` runs on ``example`` (None if it does not run)."""
    seen: list[list[int]] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        t = out[0] if isinstance(out, tuple) else out
        if isinstance(t, torch.Tensor) and not seen:
            seen.append(list(t.shape))

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            root(example)
    finally:
        handle.remove()
    return seen[0] if seen else None


def apply_policy(
    model: nn.Module, policy: Policy, example_input: torch.Tensor, *, copy: bool = True
) -> CompressionResult:
    """Apply every action of ``policy`` to (a copy of) ``model``; see the module docstring."""
    _load_transforms()
    if not isinstance(policy, Policy):
        raise InputError(f"policy must be a devicefit Policy, got {type(policy).__name__}")
    modules = dict(model.named_modules())
    unknown = [n for n in policy if n not in modules]
    if unknown:
        known = [n for n, m in modules.items() if n and not list(m.children())]
        raise InputError(f"policy names module(s) the model does not have: {', '.join(unknown[:5])}; its layers: "
                         f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''}")
    missing = sorted({type(a).__name__ for a in policy.values() if type(a) not in TRANSFORMS and
                      not isinstance(a, Keep)})
    if missing:
        raise InputError(f"no transform is registered for {', '.join(missing)}")
    out = copy_module.deepcopy(model) if copy else model
    was_training = out.training
    out.eval()
    history: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name, action in policy.items():
        if isinstance(action, Keep):
            continue
        module = out.get_submodule(name)
        before = _shape_of(module, example_input, out)
        try:
            details = TRANSFORMS[type(action)](out, name, module, action)
        except Skip as why:
            skipped.append({"module": name, "action": action.tag, "reason": str(why)})
            continue
        after = _shape_of(out.get_submodule(name), example_input, out)
        if before != after:
            raise InputError(f"{action.tag} on {name!r} changed its output shape {before} -> {after}")
        history.append({"module": name, "action": action.to_dict(), "details": details, "output_shape": after})
    out.train(was_training)
    return CompressionResult(out, history, skipped, compressed_cost(out, example_input))


def compressed_cost(model: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """Params, MACs, non-zero params and bytes (dense fp32, and the non-zero values alone) of ``model``."""
    from ..hardware import count_model
    from ..hardware.counting import count_nonzero_params

    cost = count_model(model, tuple(example_input.shape[1:]), batch_size=int(example_input.shape[0]))
    params = cost.params  # a masked weight counts once (its mask is a buffer)
    nonzero = count_nonzero_params(model)
    return {"params": params, "macs": cost.macs, "nonzero_params": nonzero, "bytes_fp32": 4 * params,
            "bytes_nonzero_fp32": 4 * nonzero}


def replay_history(model: nn.Module, history: Sequence[dict[str, Any]], example_input: torch.Tensor) -> nn.Module:
    """Rebuild the compressed model from the original ``model`` and a result's ``history``."""
    try:
        policy = Policy({h["module"]: action_from_dict(h["action"], f"history entry {h['module']!r}")
                         for h in history})
    except (KeyError, TypeError) as exc:
        raise InputError(f"a compression history is a list of {{'module', 'action', ...}} records: {exc}") from None
    result = apply_policy(model, policy, example_input)
    got = {h["module"]: h["details"] for h in result.history}
    for h in history:
        if got.get(h["module"]) != h["details"]:
            raise InputError(f"replaying {h['module']!r} gave {got.get(h['module'])}, the history says "
                             f"{h['details']}: a different model or library version")
    return result.model


def finalize(model: nn.Module) -> nn.Module:
    """Make every ``torch.nn.utils.prune`` mask permanent (in place): plain weights with zeros, for export."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model
