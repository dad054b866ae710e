"""``apply_policy``: the one way to compress a model with a policy, with a replayable history and the exact cost.

Each transform is one file that registers the action it implements (``@register_transform(LowRank)``, from
:mod:`.registry`, re-exported here). A transform is ``fn(root, name, module, action) -> details`` and may
also declare keyword arguments that ``apply_policy`` then passes: ``example_input`` (the example batch),
``data`` (the caller's calibration batches, at most :data:`MAX_DATA_BATCHES`, or None) and ``recorded``
(the details the history recorded for this layer, when replaying; None otherwise).

Order of work:

1. Checks, before any change: every layer name exists (a module, or one matrix of an LSTM/GRU); every action
   has a transform; an action whose definition cannot hold on its layer is refused (PatDNN patterns on a
   non-3x3 kernel); for channel pruning, the coupled groups are found (Torch-Pruning, on a copy) and the
   policy's layers in one group must agree (one ``ChannelPrune`` action, no ``Keep``), the kept channel
   count must exist (``round_to``), and data-driven importances need ``data``. Errors are
   :class:`~devicefit.errors.InputError` naming the layer and what was expected.
2. Channel pruning, one coupled group at a time (in the order of their first policy layer), since it
   changes the shapes the other transforms see;
3. every other action, layer by layer in name order.

A layer an action does not handle (a grouped convolution for low rank, a BatchNorm for pruning, a group
Torch-Pruning cannot prune through, the classifier's outputs) is skipped and reported with the reason,
never crashed on. The model's output shape must not change (a transform that changed it is an error).

The history is plain JSON: one record per transform with the module, the action, what was done (ranks,
channels removed, masks kept...), the layer's output shape and the example's input shape;
:func:`replay_history` rebuilds the same model from the original (the transforms are deterministic, and the
channels removed are taken from the record, so a data-driven choice replays without the data).
"""

from __future__ import annotations

import copy as copy_module
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import InputError
from .policy import Action, ChannelPrune, Keep, Policy, action_from_dict
from .registry import TRANSFORMS, Skip, register_transform

__all__ = ["CompressionResult", "apply_policy", "compressed_cost", "finalize", "register_transform",
           "replay_history"]

#: Calibration batches passed to transforms (channel importance, int8 calibration).
MAX_DATA_BATCHES = 8
_EXTRAS = ("example_input", "data", "recorded")


def _load_transforms() -> None:
    from . import bits, channel, int8, lowrank, masks  # noqa: F401  # importing registers them


@dataclass
class CompressionResult:
    """The compressed model, what was done to each layer, the layers skipped (with why), and the cost."""

    model: nn.Module
    history: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    cost: dict[str, Any] = field(default_factory=dict)


def _forward_check(model: nn.Module, example: torch.Tensor) -> None:
    """The model must run on the example (in eval mode, modes restored: no BatchNorm statistic changes)."""
    from ..hardware.counting import eval_mode

    try:
        with eval_mode(model):
            _model_output_shape(model, example)
    except Exception as exc:
        raise InputError(f"the model's forward failed on example_input of shape {tuple(example.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc


def _model_output_shape(model: nn.Module, example: torch.Tensor) -> list[list[int]]:
    with torch.no_grad():
        out = model(example)
    leaves = out if isinstance(out, (tuple, list)) else (out,)
    return [list(t.shape) for t in leaves if isinstance(t, torch.Tensor)]


def _shapes_of(root: nn.Module, names: Sequence[str], example: torch.Tensor) -> dict[str, list[int] | None]:
    """The output shape of each named module when ``root`` runs on ``example`` (None if it does not run), and
    the model's output shapes under the key ``""``: one forward pass for all of them."""
    seen: dict[str, list[int] | None] = dict.fromkeys(names)

    def hook(name: str) -> Any:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            t = out[0] if isinstance(out, tuple) else out
            if isinstance(t, torch.Tensor) and seen[name] is None:
                seen[name] = list(t.shape)

        return record

    handles = [root.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        seen[""] = _model_output_shape(root, example)  # type: ignore[assignment]
    finally:
        for h in handles:
            h.remove()
    return seen


def _call(fn: Any, root: nn.Module, name: str, module: nn.Module, action: Action, extras: dict[str, Any]) -> Any:
    params = inspect.signature(fn).parameters
    return fn(root, name, module, action, **{k: v for k, v in extras.items() if k in params})


def apply_policy(
    model: nn.Module,
    policy: Policy,
    example_input: torch.Tensor,
    *,
    data: Iterable[Any] | None = None,
    copy: bool = True,
) -> CompressionResult:
    """Apply every action of ``policy`` to (a deep copy of) ``model``; see the module docstring.

    ``data``: batches (``(inputs, labels)`` pairs) for the transforms that need them (channel importance
    ``taylor``, ``snip``, ``fisher``; int8 calibration); the first :data:`MAX_DATA_BATCHES` are used.
    ``copy=False`` changes ``model`` in place (the checks still come before any change).
    """
    return _apply(model, policy, example_input, data=data, copy=copy, recorded=None)


def _check_inputs(model: Any, policy: Any, example_input: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(policy, Policy):
        raise InputError(f"policy must be a devicefit Policy, got {type(policy).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise InputError(f"example_input must be a batch tensor, got {type(example_input).__name__}")


def _apply(model: nn.Module, policy: Policy, example_input: torch.Tensor, *, data: Iterable[Any] | None,
           copy: bool, recorded: dict[str, dict[str, Any]] | None) -> CompressionResult:
    from .analysis import check_action, compressible_layers, resolve_layer

    _load_transforms()
    _check_inputs(model, policy, example_input)
    unknown = []
    for name, action in policy.items():
        try:
            module, param = resolve_layer(model, name)
        except InputError:
            unknown.append(name)
            continue
        check_action(name, module, param, action)
    if unknown:
        known = list(compressible_layers(model))
        raise InputError(f"policy names layer(s) the model does not have: {', '.join(unknown[:5])}; its layers: "
                         f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''}")
    missing = sorted({type(a).__name__ for a in policy.values() if type(a) not in TRANSFORMS and
                      not isinstance(a, Keep)})
    if missing:
        raise InputError(f"no transform is registered for {', '.join(missing)}")
    _forward_check(model, example_input)
    batches = list(islice(data, MAX_DATA_BATCHES)) if data is not None else None
    groups = _channel_groups(model, policy, example_input, batches, recorded)

    out = copy_module.deepcopy(model) if copy else model
    was_training = out.training
    out.eval()
    try:
        order = [(members[0], members) for members in groups]
        order += [(n, [n]) for n, a in policy.items() if not isinstance(a, (Keep, ChannelPrune))]
        watched = {name: name if resolve_layer(out, name)[1] is None else name.rpartition(".")[0]  # an RNN matrix:
                   for name, _ in order}  # watch the RNN
        before = _shapes_of(out, sorted(set(watched.values())), example_input)
        history: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        extras_base = {"example_input": example_input, "data": batches}
        for name, members in order:
            action = policy[name]
            module, param = resolve_layer(out, name)
            extras = {**extras_base, "recorded": None if recorded is None else recorded.get(name)}
            try:
                details = _call(TRANSFORMS[type(action)], out, name, module, action, extras)
            except Skip as why:
                skipped += [{"module": n, "action": action.tag, "reason": str(why)} for n in members]
                continue
            history.append({"module": name, "action": action.to_dict(), "details": details,
                            "input_shape": list(example_input.shape)})
        try:
            after = _shapes_of(out, sorted(set(watched.values())), example_input)
        except Exception as exc:
            done = ", ".join(f"{h['action']['action']} on {h['module']!r}" for h in history[:6])
            raise InputError(f"the compressed model's forward failed ({type(exc).__name__}: {exc}) after {done}"
                             ) from exc
        if after[""] != before[""]:
            raise InputError(f"the policy changed the model's output shape {before['']} -> {after['']}")
        for h in history:
            w = watched[h["module"]]
            h["output_shape_before"], h["output_shape"] = before[w], after[w]
            if before[w] != after[w] and h["action"]["action"] != "channel":
                raise InputError(f"{h['action']['action']} on {h['module']!r} changed its output shape "
                                 f"{before[w]} -> {after[w]}")
    finally:
        out.train(was_training)
    return CompressionResult(out, history, skipped, compressed_cost(out, example_input, history))


def _channel_groups(model: nn.Module, policy: Policy, example: torch.Tensor, data: list[Any] | None,
                    recorded: dict[str, dict[str, Any]] | None) -> list[list[str]]:
    """The policy's channel-pruned layers by coupled group (named members, first first), checked."""
    named = [n for n, a in policy.items() if isinstance(a, ChannelPrune)]
    if not named:
        return []
    from .analysis import dependency_graph
    from .channel import DATA_IMPORTANCES, kept_channels

    work = copy_module.deepcopy(model).eval()
    info = dependency_graph(work, example)
    group_of = {m: g for g in info.groups for m in g.members}
    by_group: dict[int, list[str]] = {}
    singles: list[list[str]] = []
    for name in named:
        g = group_of.get(name)
        if g is None:
            singles.append([name])  # not a Conv/Linear on the forward path: its transform reports why
        else:
            by_group.setdefault(g.id, []).append(name)
    for gid, members in by_group.items():
        group = info.groups[gid]
        actions = {policy[m] for m in members}
        if len(actions) > 1:
            raise InputError(f"layers {', '.join(members)} are coupled (their output channels are pruned together) "
                             f"but have different actions: {', '.join(sorted(map(repr, actions)))}")
        action = policy[members[0]]
        assert isinstance(action, ChannelPrune)
        if not group.blocked:
            keeps = [m for m in group.members if isinstance(policy.get(m), Keep)]
            if keeps:
                raise InputError(f"{keeps[0]!r} is Keep but is coupled to {members[0]!r}, whose channels are pruned "
                                 f"with it; give the group one action")
            kept_channels(group.channels, action, repr(members[0]))
            replaying = recorded is not None and members[0] in recorded
            if action.importance in DATA_IMPORTANCES and not data and not replaying:
                raise InputError(f"ChannelPrune importance {action.importance!r} on {members[0]!r} needs data: give "
                                 "apply_policy data=[(inputs, labels), ...]")
    return sorted(by_group.values(), key=lambda ms: ms[0]) + singles


def compressed_cost(model: nn.Module, example_input: torch.Tensor,
                    history: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """:func:`~devicefit.hardware.count_model` of ``model`` on ``example_input``'s shape (its fields), plus the
    weight bytes at each layer's precision: ``bytes`` (every stored weight: 1 byte in the layers the history
    quantised to int8, ``bits / 8`` for the weights of a ``WeightBits`` layer, whole bytes per tensor, 4
    elsewhere), ``bytes_nonzero`` (the non-zero ones, as a sparse format would store them), and the same at fp32
    (``bytes_fp32``, ``bytes_nonzero_fp32``)."""
    from ..hardware import count_model
    from .bits import weight_bytes

    cost = count_model(model, tuple(example_input.shape[1:]), batch_size=int(example_input.shape[0])).to_dict()
    int8 = [h["module"] for h in history if h.get("action", {}).get("action") == "int8"]
    narrow = {h["module"]: int(h["action"]["bits"]) for h in history if h.get("action", {}).get("action") == "bits"}
    total = nonzero = total_q = nonzero_q = 0
    stored = stored_nonzero = 0
    with torch.no_grad():
        for mname, module in model.named_modules():
            quantised = any(mname == q or mname.startswith(q + ".") for q in int8)
            for pname, p in module.named_parameters(recurse=False):
                masked = pname.endswith("_orig") and hasattr(module, pname[: -len("_orig")] + "_mask")
                t = getattr(module, pname[: -len("_orig")]) if masked else p
                n, nz = t.numel(), int(torch.count_nonzero(t))
                total, nonzero = total + n, nonzero + nz
                if quantised:
                    total_q, nonzero_q = total_q + n, nonzero_q + nz
                    stored, stored_nonzero = stored + n, stored_nonzero + nz
                elif mname in narrow and pname in ("weight", "weight_orig"):
                    stored += weight_bytes(n, narrow[mname])
                    stored_nonzero += weight_bytes(nz, narrow[mname])
                else:
                    stored, stored_nonzero = stored + 4 * n, stored_nonzero + 4 * nz
    cost.update({"bytes": stored, "bytes_nonzero": stored_nonzero, "bytes_fp32": 4 * total,
                 "bytes_nonzero_fp32": 4 * nonzero, "int8_params": total_q})
    return cost


def replay_history(model: nn.Module, history: Sequence[dict[str, Any]],
                   example_input: torch.Tensor | None = None) -> nn.Module:
    """Rebuild the compressed model from the original ``model`` and a result's ``history`` (on a copy).

    ``example_input`` defaults to zeros of the shape the history recorded."""
    try:
        policy = Policy({h["module"]: action_from_dict(h["action"], f"history entry {h['module']!r}")
                         for h in history})
        recorded = {h["module"]: h["details"] for h in history}
        if example_input is None:
            shapes = {tuple(h["input_shape"]) for h in history}
            if len(shapes) > 1:
                raise InputError(f"the history was recorded with several input shapes: {sorted(shapes)}")
            example_input = torch.zeros(*next(iter(shapes), (1,)))
    except (KeyError, TypeError) as exc:
        raise InputError(f"a compression history is a list of {{'module', 'action', 'details', 'input_shape', ...}} "
                         f"records: missing {exc}") from None
    result = _apply(model, policy, example_input, data=None, copy=True, recorded=recorded)
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
