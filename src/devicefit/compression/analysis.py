"""Layer analysis: what each compressible layer costs, which layers are coupled, and which actions each takes.

``analyze_layers(model, example_input)`` lists every compressible layer (``Conv2d``, ``Linear``, and each
``weight_ih_l{k}`` / ``weight_hh_l{k}`` matrix of an ``nn.LSTM``/``nn.GRU`` as its own entry) with its MACs
and parameters and their share of the model's, for one sample: Conv/Linear MACs from PyTorch's
``FlopCounterMode`` per module, as :func:`devicefit.hardware.count_model` counts them; RNN matrices
analytically, ``T * rows * cols`` per sequence of ``T`` steps, which is what the counter counts for the
whole RNN module (GRU as matrix products, LSTM through :func:`~devicefit.hardware.counting.flop_counter`'s
formula for the fused layer).

Coupled layers come from Torch-Pruning's ``DependencyGraph`` (DepGraph, arXiv 2301.12900): layers whose
output channels must be removed together, such as every ``conv2`` of a ResNet stage through the residual
additions, share a ``group`` id. Torch-Pruning traces the autograd graph and treats any operation it does
not know as element-wise, which is wrong for an operation that changes the channel count. So, before
tracing:

- the zero-padding shortcut of the CIFAR ResNets (option A, :class:`devicefit.models.cifar_resnet.PadShortcut`)
  is read as a :class:`ChannelScatter` (the same function written as a channel gather, with its own pruner),
  so that the stages on both sides of it are separate groups and each can be pruned;
- leaf modules Torch-Pruning cannot handle become barriers: modules with weights it has no pruner for
  (``nn.GRU``, ``nn.RNN``, ``nn.LSTM`` whose pruner is single-layer only, the factorised RNN of
  :mod:`.lowrank`, any custom layer), and weightless modules that change the size of dimension 1 and the
  number of elements (a channel padding or slicing written as a module). A group that reaches a barrier, a
  grouped (not depthwise) convolution, or the model's output (the classifier), is not channel-pruned; its
  layers say why in ``note``.

The analysis runs on a copy; the model is not changed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError

RNN_TYPES: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU)
#: Actions by layer kind (a grouped conv is not factorised; patterns need 3x3 kernels).
_CONV_ACTIONS = ("keep", "lowrank", "channel", "unstructured", "block", "pattern", "int8", "bits")
_LINEAR_ACTIONS = ("keep", "lowrank", "channel", "unstructured", "block", "int8", "bits")
_RNN_MATRIX_ACTIONS = ("keep", "lowrank", "unstructured", "block")
_RNN_MODULE_ACTIONS = ("keep", "lowrank", "unstructured", "block", "int8")


class ChannelScatter(nn.Module):
    """``y[:, j] = x[:, source[j], ::stride, ::stride]``, or zeros where ``source[j] == -1``.

    The option-A shortcut ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))`` is the case ``source = [-1]*p +
    [0..C-1] + [-1]*p``; unlike a padding, it stays exact when input or output channels are removed. Written
    with operations Torch-Pruning maps channel by channel (a stride-``s`` 1x1 max-pool is the subsampling,
    one zero channel is padded at the end) and a gather; exports to ONNX (MaxPool, Pad, Gather)."""

    def __init__(self, source: Sequence[int], in_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.stride = int(stride)
        self.register_buffer("source", torch.tensor(list(source), dtype=torch.long))

    @property
    def out_channels(self) -> int:
        return int(self.source.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = nn.functional.max_pool2d(x, 1, self.stride)
        z = nn.functional.pad(x, (0, 0, 0, 0, 0, 1))  # channel in_channels is zero
        gather = torch.where(self.source >= 0, self.source, torch.full_like(self.source, self.in_channels))
        return z.index_select(1, gather)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}"


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer (see the module docstring); MACs and params are of one sample."""

    name: str  # the policy key: a module name, or "<rnn>.weight_ih_l0" for an RNN matrix
    kind: str  # "Conv2d 3x3", "Linear", "LSTM input matrix", ...
    weight_shape: tuple[int, ...]
    macs: int
    params: int  # the weight and its bias
    macs_share: float
    params_share: float
    group: int | None  # coupled-channel group id (same id: output channels pruned together)
    supports: tuple[str, ...]  # action tags this layer takes
    note: str = ""  # why it is not channel-prunable, when it is not

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class CoupledGroup:
    """Layers whose output channels are removed together; ``blocked`` says why the group cannot be, if so."""

    id: int
    members: tuple[str, ...]  # Conv2d/Linear layers whose output channels belong to the group
    channels: int
    blocked: str = ""
    touched: tuple[str, ...] = field(default=())  # every module the group prunes (outputs or inputs)
    inputs: tuple[str, ...] = field(default=())  # Conv2d/Linear layers whose input channels are the group's


def compressible_layers(model: nn.Module) -> dict[str, tuple[nn.Module, str | None]]:
    """Layer name -> (module, RNN matrix name or None), in module order: Conv2d, Linear, RNN matrices."""
    out: dict[str, tuple[nn.Module, str | None]] = {}
    for name, m in model.named_modules():
        if not name:
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = (m, None)
        elif isinstance(m, RNN_TYPES):
            for p in rnn_matrices(m):
                out[f"{name}.{p}"] = (m, p)
    return out


def rnn_matrices(module: nn.Module) -> list[str]:
    """The input and recurrent weight matrices of an LSTM/GRU, in parameter order."""
    return [n for n, _ in module.named_parameters(recurse=False) if n.startswith(("weight_ih_", "weight_hh_"))]


def resolve_layer(model: nn.Module, name: str) -> tuple[nn.Module, str | None]:
    """The module of a layer name and, for an RNN matrix, the matrix's parameter name."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name], None
    parent, _, param = name.rpartition(".")
    if parent in modules and isinstance(modules[parent], RNN_TYPES) and param in rnn_matrices(modules[parent]):
        return modules[parent], param
    known = list(compressible_layers(model))
    raise InputError(f"the model has no layer {name!r}; its compressible layers: {', '.join(known[:12])}"
                     f"{', ...' if len(known) > 12 else ''}")


def supported_actions(module: nn.Module, param: str | None = None) -> tuple[str, ...]:
    """Action tags a layer takes by its type and shape (coupling is checked when channels are pruned)."""
    if param is not None:
        return _RNN_MATRIX_ACTIONS
    if isinstance(module, RNN_TYPES):
        return _RNN_MODULE_ACTIONS
    if isinstance(module, nn.Conv2d):
        acts = [a for a in _CONV_ACTIONS if (a != "lowrank" or module.groups == 1)]
        return tuple(a for a in acts if a != "pattern" or tuple(module.kernel_size) == (3, 3))
    if isinstance(module, nn.Linear):
        return _LINEAR_ACTIONS
    return ("keep",)


def check_action(name: str, module: nn.Module, param: str | None, action: Any) -> None:
    """Refuse an action whose definition cannot hold on this layer (PatDNN patterns need 3x3 kernels)."""
    if action.tag == "pattern" and isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (3, 3):
        raise InputError(f"Pattern on {name!r}: PatDNN patterns are 4-of-9 shapes of 3x3 kernels, this "
                         f"convolution's kernel is {module.kernel_size[0]}x{module.kernel_size[1]}")


# --- Torch-Pruning ------------------------------------------------------------------------------------


def scatter_pruner() -> Any:
    """Torch-Pruning's pruner of a :class:`ChannelScatter`: give it as ``customized_pruners={ChannelScatter:
    scatter_pruner()}`` to run Torch-Pruning's own pruners on a model :func:`convert_pad_shortcuts` converted."""
    import torch_pruning as tp

    class ScatterPruner(tp.pruner.BasePruningFunc):
        """Input and output channels of a :class:`ChannelScatter` are pruned independently."""

        def prune_out_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
            drop = set(idxs)
            layer.source = torch.tensor([s for j, s in enumerate(layer.source.tolist()) if j not in drop],
                                        dtype=torch.long)
            return layer

        def prune_in_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
            drop = set(idxs)
            new_index = {}
            for c in range(layer.in_channels):
                if c not in drop:
                    new_index[c] = len(new_index)
            layer.source = torch.tensor([new_index.get(s, -1) for s in layer.source.tolist()], dtype=torch.long)
            layer.in_channels = len(new_index)
            return layer

        def get_out_channels(self, layer: ChannelScatter) -> int:
            return layer.out_channels

        def get_in_channels(self, layer: ChannelScatter) -> int:
            return layer.in_channels

    return ScatterPruner()


def _barrier_pruner() -> Any:
    import torch_pruning as tp

    class BarrierPruner(tp.pruner.BasePruningFunc):
        """A layer Torch-Pruning cannot prune through: groups that reach it are blocked, never pruned."""

        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            raise RuntimeError(f"{type(layer).__name__} cannot be channel-pruned")

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            raise RuntimeError(f"{type(layer).__name__} cannot be channel-pruned")

        def get_out_channels(self, layer: nn.Module) -> None:
            return None

        def get_in_channels(self, layer: nn.Module) -> None:
            return None

    return BarrierPruner()


def convert_pad_shortcuts(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Replace every option-A :class:`~devicefit.models.cifar_resnet.PadShortcut` of ``model`` (in place) by the
    equal :class:`ChannelScatter`; returns their names."""
    from ..models.cifar_resnet import PadShortcut

    pads = {n: m for n, m in model.named_modules() if isinstance(m, PadShortcut)}
    if not pads:
        return []
    channels = _input_channels(model, example_input, pads)
    for name, m in pads.items():
        if name not in channels:
            continue  # not on the forward path: left as it is
        c = channels[name]
        source = [-1] * m.pad + list(range(c)) + [-1] * m.pad
        _replace(model, name, ChannelScatter(source, c, stride=2))
    return sorted(channels)


def _input_channels(model: nn.Module, example: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, int]:
    seen: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(_m: nn.Module, i: Any, _o: Any) -> None:
            seen.setdefault(name, int(i[0].shape[1]))

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _barrier_types(model: nn.Module, example: torch.Tensor) -> dict[type[nn.Module], str]:
    """Leaf module types Torch-Pruning cannot prune through, with the reason (see the module docstring)."""
    import torch_pruning as tp

    known = tuple(tp.ops.type2class(t) for t in tp.pruner.function.PrunerBox if tp.ops.type2class(t) is not None)
    barriers: dict[type[nn.Module], str] = {}
    for m in model.modules():
        if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) or getattr(m, "recurrent", False):
            barriers[type(m)] = f"{type(m).__name__} (recurrent layers are not channel-pruned)"
    shapes: dict[nn.Module, tuple[torch.Size, torch.Size]] = {}

    def hook(m: nn.Module, i: Any, o: Any) -> None:
        if i and isinstance(i[0], torch.Tensor) and isinstance(o, torch.Tensor) and m not in shapes:
            shapes[m] = (i[0].shape, o.shape)

    leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, (*known, ChannelScatter))]
    for m in leaves:
        if any(True for _ in m.parameters(recurse=False)):
            barriers.setdefault(type(m), f"{type(m).__name__} (a layer with weights Torch-Pruning has no pruner for)")
    hooks = [m.register_forward_hook(hook) for m in leaves if not isinstance(m, tuple(barriers))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    for m, (i, o) in shapes.items():
        if len(i) > 1 and len(o) > 1 and i[1] != o[1] and i.numel() != o.numel():
            barriers.setdefault(type(m), f"{type(m).__name__} (changes dimension 1 from {i[1]} to {o[1]} without "
                                         "weights; Torch-Pruning would treat it as element-wise)")
    return barriers


@dataclass
class DependencyInfo:
    """A Torch-Pruning graph of a (converted) model, its barriers and its coupled groups."""

    graph: Any
    barriers: dict[type[nn.Module], str]
    groups: list[CoupledGroup]


class _Opaque(torch.autograd.Function):
    """Ties a barrier's outputs to its inputs by one autograd node, hiding the operations inside it from
    Torch-Pruning's trace (which only reads the graph; this backward is never run)."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, ...]:
        return (None,) * len(ctx.needs_input_grad)


def _opaque_forward(module: nn.Module) -> Any:
    original = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            out = original(*args, **kwargs)
        inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

        def tie(t: Any) -> Any:
            return _Opaque.apply(t, *inputs) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        return tuple(tie(t) for t in out) if isinstance(out, tuple) else tie(out)

    return forward


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> DependencyInfo:
    """Build Torch-Pruning's graph of ``model`` (converted in place: see :func:`convert_pad_shortcuts`) and its
    coupled groups, each with the Conv2d/Linear layers whose output channels it holds and why it is blocked."""
    import torch_pruning as tp

    convert_pad_shortcuts(model, example_input)
    barriers = _barrier_types(model, example_input)
    modes = {m: m.training for m in model.modules()}
    hidden = [m for m in model.modules() if type(m) in barriers]
    for m in hidden:
        m.forward = _opaque_forward(m)  # type: ignore[method-assign]
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False,
                customized_pruners={ChannelScatter: scatter_pruner(), **dict.fromkeys(barriers, _barrier_pruner())})
    except Exception as exc:
        raise InputError(f"Torch-Pruning could not trace the model on an input of shape "
                         f"{tuple(example_input.shape)}: {type(exc).__name__}: {exc}") from exc
    finally:
        for m in hidden:
            del m.forward
        for m, mode in modes.items():
            m.training = mode
    return DependencyInfo(graph, barriers, _groups(graph, model, barriers))


def _groups(graph: Any, model: nn.Module, barriers: dict[type[nn.Module], str]) -> list[CoupledGroup]:
    """Torch-Pruning's groups rooted at each Conv2d/Linear (as ``get_all_groups``, one failing group reported,
    not raised), ordered by their first layer."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    visited: set[nn.Module] = set()
    raw = []
    for root in list(graph.module2node):
        if not isinstance(root, (nn.Conv2d, nn.Linear)) or root in visited:
            continue
        pruner = graph.get_pruner_of_module(root)
        channels = int(pruner.get_out_channels(root))
        members, touched, inputs, blocked = [names[root]], [], [], ""
        try:
            group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))
        except Exception as exc:  # a graph Torch-Pruning cannot map: this layer's channels stay
            visited.add(root)
            raw.append(([names[root]], channels, f"Torch-Pruning could not build its group: {type(exc).__name__}: "
                                                 f"{exc}", [names[root]], []))
            continue
        for dep, _ in group:
            module, node = dep.target.module, dep.target
            if module in names:
                touched.append(names[module])
            out_fn = graph.is_out_channel_pruning_fn(dep.handler)
            if out_fn and isinstance(module, (nn.Conv2d, nn.Linear)):
                members.append(names[module])
                visited.add(module)
            elif graph.is_in_channel_pruning_fn(dep.handler) and isinstance(module, (nn.Conv2d, nn.Linear)):
                inputs.append(names[module])
            depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels
            if not blocked and isinstance(module, nn.Conv2d) and module.groups > 1 and not depthwise:
                blocked = (f"coupled to {names[module]}, a grouped convolution (groups={module.groups}) whose channels "
                           "would have to go evenly from every group")
            if not blocked and type(module) in barriers:
                blocked = f"coupled to {names.get(module, '?')}: {barriers[type(module)]}"
            if not blocked and (isinstance(module, tp.ops._OutputOp) or (out_fn and not node.outputs)):
                blocked = "its output channels are the model's outputs"
        members = sorted(set(members), key=order.__getitem__)
        raw.append((members, channels, blocked, sorted(set(touched), key=order.__getitem__),
                    sorted(set(inputs), key=order.__getitem__)))
    raw.sort(key=lambda r: order[r[0][0]])
    return [CoupledGroup(i, tuple(m), c, b, tuple(t), tuple(n)) for i, (m, c, b, t, n) in enumerate(raw)]


# --- the analysis -------------------------------------------------------------------------------------


def _module_macs(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, int], int, dict[str, int]]:
    """MACs per module name (the shared flop counter), their total, and each RNN module's sequence length."""
    from ..hardware.counting import flop_counter

    steps: dict[str, int] = {}
    rnns = {n: m for n, m in model.named_modules() if isinstance(m, RNN_TYPES)}

    def hook(name: str) -> Any:
        def record(m: nn.Module, i: Any, _o: Any) -> None:
            x = i[0]
            if isinstance(x, torch.Tensor):  # (N, T, I) batch-first, (T, N, I), or one sequence (T, I)
                steps.setdefault(name, int(x.shape[1] if x.dim() == 3 and m.batch_first else x.shape[0]))

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in rnns.items()]
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(example)
    except Exception as exc:
        raise InputError(f"the model's forward failed on an input of shape {tuple(example.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        for h in hooks:
            h.remove()
    prefix = type(model).__name__ + "."
    per_module = {k[len(prefix):]: int(sum(v.values())) // 2 for k, v in counter.get_flop_counts().items()
                  if k.startswith(prefix)}
    return per_module, int(counter.get_total_flops()) // 2, steps


def analyze_layers(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """Every compressible layer of ``model`` with its cost, coupled group and supported actions (one sample
    of ``example_input``; see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise InputError("example_input must be a batch tensor (N, ...), got "
                         f"{getattr(example_input, 'shape', type(example_input).__name__)}")
    work = copy.deepcopy(model).eval()
    x = example_input[:1]
    per_module, total_macs, steps = _module_macs(work, x)
    layers = compressible_layers(work)
    rnn_macs = {name: steps.get(name.rpartition(".")[0], 0) * m.get_parameter(p).numel()
                for name, (m, p) in layers.items() if p is not None}
    total_params = sum(p.numel() for p in work.parameters())
    info = dependency_graph(work, x)
    group_of = {n: g for g in info.groups for n in g.members}
    out: list[LayerInfo] = []
    for name, (m, p) in layers.items():
        if p is None:
            weight = m.weight
            params = weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            macs = per_module.get(name, 0)
        else:
            weight = m.get_parameter(p)
            bias = p.replace("weight", "bias", 1)
            params = weight.numel() + (m.get_parameter(bias).numel() if hasattr(m, bias) else 0)
            macs = rnn_macs[name]
        supports = supported_actions(m, p)
        g = group_of.get(name)
        note = ""
        if "channel" in supports:
            if g is None:
                note = "not reached by the forward pass"
            elif g.blocked:
                note = g.blocked
            if note:
                supports = tuple(a for a in supports if a != "channel")
        out.append(LayerInfo(name, _kind(m, p), tuple(weight.shape), macs, params,
                             macs / total_macs if total_macs else 0.0, params / total_params if total_params else 0.0,
                             None if g is None else g.id, supports, note))
    return out


def _kind(module: nn.Module, param: str | None) -> str:
    if param is not None:
        return f"{type(module).__name__} {'input' if param.startswith('weight_ih') else 'recurrent'} matrix"
    if isinstance(module, nn.Conv2d):
        k = f"{module.kernel_size[0]}x{module.kernel_size[1]}"
        return f"Conv2d {k}" + (f" groups={module.groups}" if module.groups != 1 else "")
    return type(module).__name__


def _matrix_tensors(module: nn.Module, param: str) -> list[torch.Tensor]:
    """An RNN matrix and its bias as the forward uses them (a pruning mask applied)."""
    bias = param.replace("weight", "bias", 1)
    return [getattr(module, p) for p in (param, bias) if hasattr(module, p)]


def layer_costs(model: nn.Module, example_input: torch.Tensor, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """MACs, parameters and non-zero parameters of each of the named layers of ``model``, for one sample.

    A name is a layer of the original model (a policy key); in a compressed model it names whatever replaced the
    layer (a low-rank pair is a module under the same name, a low-rank RNN matrix too). Module MACs are the flop
    counter's, everything inside the module included; a dense RNN matrix costs its elements once per step, as
    :func:`analyze_layers` counts it. Names the model lacks are left out."""
    from ..hardware.counting import count_nonzero_params

    work = copy.deepcopy(model).eval()
    per_module, _, steps = _module_macs(work, example_input[:1])
    modules = dict(work.named_modules())
    out: dict[str, dict[str, int]] = {}
    with torch.no_grad():
        for name in names:
            if name in modules and name:
                m = modules[name]
                out[name] = {"macs": per_module.get(name, 0), "params": sum(p.numel() for p in m.parameters()),
                             "nonzero_params": count_nonzero_params(m)}
                continue
            parent, _, param = name.rpartition(".")
            m = modules.get(parent)
            if m is None or not hasattr(m, param):
                continue
            tensors = _matrix_tensors(m, param)
            out[name] = {"macs": steps.get(parent, 0) * tensors[0].numel(), "params": sum(t.numel() for t in tensors),
                         "nonzero_params": sum(int(torch.count_nonzero(t)) for t in tensors)}
    return out
