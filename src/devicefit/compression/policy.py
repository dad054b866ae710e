"""A compression policy is plain data: a mapping from layer name to an action, round-tripping through JSON.

Actions are frozen dataclasses, validated when made (an impossible ratio is refused, naming the field and
its allowed range, before any model is touched). ``Policy.to_json`` writes a tagged, versioned document;
``Policy.from_json`` refuses unknown tags and fields by name. The same type is what the AutoML search
explores, one decision per layer.

A layer name is a module name as in ``model.named_modules()`` or, for ``nn.LSTM``/``nn.GRU``, one of its
matrices: ``"rnn.weight_ih_l0"`` (input) or ``"rnn.weight_hh_l0"`` (recurrent), so that each matrix can take
its own rank or sparsity (ShrinkML, RTMobile); naming the RNN module itself applies the action to all of them.

Ratios say what is *kept* for ranks and channels and what is *removed* for sparsities:
``LowRank(rank_fraction=0.5)`` keeps half of each layer's full rank, ``ChannelPrune(keep=0.7)`` keeps 70 % of
the output channels, ``Unstructured(sparsity=0.8)`` zeroes 80 % of the weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InputError

if TYPE_CHECKING:
    from torch import nn

FORMAT_VERSION = 1
#: Importance criteria of channel pruning (see :mod:`.channel`).
IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "snip", "fisher")
#: Distinct 4-of-9 patterns of a 3x3 kernel that keep its centre (PatDNN): C(8, 3).
MAX_PATTERNS = 56


def _fraction(value: Any, what: str, low_open: bool, high_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    v = float(value) if ok else float("nan")
    lo_ok = v > 0.0 if low_open else v >= 0.0
    hi_ok = v < 1.0 if high_open else v <= 1.0
    if not (ok and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise InputError(f"{what} must be a number in {interval}, got {value!r}")
    return v


def _integer(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = f"..{high}" if high is not None else " or more"
        raise InputError(f"{what} must be an integer {low}{upper}, got {value!r}")
    return value


def _choice(value: Any, what: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Action:
    """Base of the actions; ``tag`` names the action in JSON."""

    tag: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """``{"action": tag, field: value, ...}`` with JSON types (tuples as lists)."""
        return {"action": self.tag, **{f.name: _plain(getattr(self, f.name)) for f in fields(self)}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Keep(Action):
    """Leave the layer as it is."""

    tag: ClassVar[str] = "keep"


@dataclass(frozen=True)
class LowRank(Action):
    """Truncated-SVD factorisation keeping ``rank_fraction`` of the layer's full rank (at least rank 1).

    ``form``: ``linear`` (Linear into two Linears; also each LSTM/GRU matrix), ``channel`` (a k x k conv with
    r outputs, then 1x1), ``spatial`` (k x 1 then 1 x k, Jaderberg et al.), or ``auto`` (linear for Linear and
    RNN matrices, channel for Conv2d)."""

    rank_fraction: float = 0.5
    form: str = "auto"
    tag: ClassVar[str] = "lowrank"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank_fraction", _fraction(self.rank_fraction, "LowRank.rank_fraction", True, False))
        _choice(self.form, "LowRank.form", ("auto", "linear", "channel", "spatial"))


@dataclass(frozen=True)
class ChannelPrune(Action):
    """Remove output channels (filters, neurons) for real, with every coupled layer (Torch-Pruning's groups).

    ``keep``: fraction of the channels kept; ``importance``: how channels are ranked (``l1``/``l2`` group
    weight norms, ``bn_scale`` BatchNorm scales, ``taylor`` first-order Taylor, ``snip``, ``fisher``; the
    last three need data); ``round_to``: the kept count is a multiple of it (hardware-friendly widths)."""

    keep: float = 0.5
    importance: str = "l1"
    round_to: int = 1
    tag: ClassVar[str] = "channel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", _fraction(self.keep, "ChannelPrune.keep", True, False))
        _choice(self.importance, "ChannelPrune.importance", IMPORTANCES)
        _integer(self.round_to, "ChannelPrune.round_to", 1)


@dataclass(frozen=True)
class Unstructured(Action):
    """Magnitude pruning of single weights: the smallest ``sparsity`` fraction of the layer's weights is masked."""

    sparsity: float = 0.5
    tag: ClassVar[str] = "unstructured"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", _fraction(self.sparsity, "Unstructured.sparsity", False, True))


@dataclass(frozen=True)
class Block(Action):
    """Block-based structured pruning (arXiv 2001.08357; RTMobile 2002.11474 for LSTM/GRU matrices): the weight
    as its GEMM matrix (out, in*k*k) is cut into ``block = (rows, cols)`` blocks, and inside each block whole
    ``prune`` ("rows" or "columns") of the block are masked, smallest L2 norm first, to ``sparsity``."""

    sparsity: float = 0.5
    block: tuple[int, int] = (16, 16)
    prune: str = "columns"
    tag: ClassVar[str] = "block"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", _fraction(self.sparsity, "Block.sparsity", False, True))
        b = self.block
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise InputError(f"Block.block must be (rows, cols), two integers >= 1, got {b!r}")
        rows, cols = _integer(b[0], "Block.block rows", 1), _integer(b[1], "Block.block cols", 1)
        object.__setattr__(self, "block", (rows, cols))
        _choice(self.prune, "Block.prune", ("rows", "columns"))


@dataclass(frozen=True)
class Pattern(Action):
    """PatDNN pattern and connectivity pruning of 3x3 convolutions (arXiv 2001.00138): every kept kernel keeps
    4 of its 9 weights, in one of the ``patterns`` most frequent shapes of the layer (the centre always kept),
    and the ``connectivity`` fraction of whole kernels with the smallest L2 norm is removed."""

    connectivity: float = 0.0
    patterns: int = 8
    tag: ClassVar[str] = "pattern"

    def __post_init__(self) -> None:
        object.__setattr__(self, "connectivity", _fraction(self.connectivity, "Pattern.connectivity", False, True))
        _integer(self.patterns, "Pattern.patterns", 1, MAX_PATTERNS)


@dataclass(frozen=True)
class Int8(Action):
    """8-bit integer weights (and activations where the runtime quantises them), per output channel or per
    tensor; implemented with onnxruntime.quantization (see :mod:`.int8`)."""

    per_channel: bool = True
    tag: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise InputError(f"Int8.per_channel must be true or false, got {self.per_channel!r}")


@dataclass(frozen=True)
class WeightBits(Action):
    """Weight-only quantization to ``bits`` (2..8) per weight: symmetric, uniform, per output channel (or per
    tensor), each weight replaced by its nearest level (``2**(bits-1) - 1`` levels each side of 0; zeros stay
    zero, so masks survive) and stored at ``bits`` bits; biases stay float32. The storage side of mixed
    precision (the per-layer bit widths that policy search chooses); it runs in float, so it saves size, not
    time (for a faster int8 model use ``Int8``)."""

    bits: int = 4
    per_channel: bool = True
    tag: ClassVar[str] = "bits"

    def __post_init__(self) -> None:
        _integer(self.bits, "WeightBits.bits", 2, 8)
        if not isinstance(self.per_channel, bool):
            raise InputError(f"WeightBits.per_channel must be true or false, got {self.per_channel!r}")


ACTIONS: dict[str, type[Action]] = {a.tag: a for a in (Keep, LowRank, ChannelPrune, Unstructured, Block, Pattern,
                                                       Int8, WeightBits)}


def action_from_dict(data: Any, where: str = "action") -> Action:
    """The action of a ``{"action": tag, field: value, ...}`` record (unknown tags and fields refused by name)."""
    if not isinstance(data, Mapping) or "action" not in data:
        raise InputError(f"{where} must be an object with an 'action' tag, got {data!r:.200}")
    tag = data["action"]
    if not isinstance(tag, str) or tag not in ACTIONS:
        raise InputError(f"{where}: unknown action {tag!r}; expected one of {', '.join(ACTIONS)}")
    cls = ACTIONS[tag]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed - {"action"})
    if unknown:
        raise InputError(f"{where}: action {tag!r} has no field(s) {', '.join(map(str, unknown))}; its fields: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    return cls(**{k: v for k, v in data.items() if k != "action"})


class Policy(Mapping[str, Action]):
    """An immutable mapping: layer name (see the module docstring) -> action. Equal policies hash alike."""

    def __init__(self, actions: Mapping[str, Action] | None = None) -> None:
        if actions is not None and not isinstance(actions, Mapping):
            raise InputError(f"a policy is made from a mapping of layer name -> action, got {type(actions).__name__}")
        items = dict(actions or {})
        for name, action in items.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"policy keys must be non-empty layer names, got {name!r}")
            if not isinstance(action, Action):
                raise InputError(f"policy entry {name!r} must be an Action, got {type(action).__name__}")
        self._actions = dict(sorted(items.items()))

    def __getitem__(self, name: str) -> Action:
        return self._actions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._actions == other._actions

    def __hash__(self) -> int:
        return hash(tuple(self._actions.items()))

    def __repr__(self) -> str:
        return f"Policy({self._actions!r})"

    @classmethod
    def uniform(cls, model: nn.Module | Iterable[str], action: Action, layers: Iterable[str] | None = None) -> Policy:
        """The same ``action`` on many layers.

        ``model`` an ``nn.Module``: every layer of it that supports the action (by its type and shape, see
        :func:`~devicefit.compression.analysis.supported_actions`), or only the names in ``layers`` (each must
        exist and support it). ``model`` an iterable of names: exactly those names.
        """
        if not isinstance(action, Action):
            raise InputError(f"action must be an Action, got {type(action).__name__}")
        from torch import nn

        if not isinstance(model, nn.Module):
            if layers is not None:
                raise InputError("Policy.uniform takes layers= only with a model")
            if isinstance(model, str):
                raise InputError(f"Policy.uniform needs a model or a list of layer names, got the string {model!r}")
            return cls(dict.fromkeys(model, action))
        from .analysis import compressible_layers, resolve_layer, supported_actions

        candidates = compressible_layers(model)
        if layers is None:
            names = []
            for n, (m, p) in candidates.items():
                if action.tag in supported_actions(m, p):
                    names.append(n)
                elif p is not None and action.tag in supported_actions(m):  # e.g. int8: the whole RNN
                    rnn = n.rpartition(".")[0]
                    names += [] if rnn in names else [rnn]
        else:
            if isinstance(layers, str):
                raise InputError(f"layers must be a list of layer names, got the string {layers!r}")
            names = list(layers)
            for n in names:
                module, param = resolve_layer(model, n)
                if action.tag not in supported_actions(module, param):
                    raise InputError(f"layer {n!r} ({type(module).__name__}) does not support {action.tag}")
        return cls(dict.fromkeys(names, action))

    def to_json(self) -> str:
        return json.dumps({"format": "devicefit-policy", "version": FORMAT_VERSION,
                           "layers": {n: a.to_dict() for n, a in self._actions.items()}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Policy:
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a policy must be JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != "devicefit-policy":
            raise InputError("not a devicefit policy (expected {'format': 'devicefit-policy', ...})")
        if doc.get("version") != FORMAT_VERSION:
            raise InputError(f"policy format version {doc.get('version')!r} is not supported (expected "
                             f"{FORMAT_VERSION})")
        unknown = sorted(set(doc) - {"format", "version", "layers"})
        if unknown:
            raise InputError(f"a policy document has no field(s) {', '.join(unknown)}; its fields: format, "
                             "version, layers")
        layers = doc.get("layers")
        if not isinstance(layers, dict):
            raise InputError("a policy's 'layers' must be an object of layer name -> action")
        return cls({n: action_from_dict(a, f"policy layer {n!r}") for n, a in layers.items()})
