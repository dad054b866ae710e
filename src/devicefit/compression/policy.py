"""A compression policy is plain data: a mapping from module name to an action, round-tripping through JSON.

Actions are frozen dataclasses, validated when made (an impossible ratio is refused before any model is
touched). ``Policy.to_json`` writes a tagged, versioned document; ``Policy.from_json`` refuses unknown tags
and fields by name. The same type is what the AutoML search explores, one decision per layer.

Ratios are fractions *kept*: ``LowRank(rank_fraction=0.5)`` keeps half of each layer's full rank,
``Unstructured(sparsity=0.8)`` zeroes 80 % of its weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from ..errors import InputError

FORMAT_VERSION = 1


def _fraction(value: Any, what: str, low_open: bool, high_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    v = float(value) if ok else float("nan")
    lo_ok = v > 0.0 if low_open else v >= 0.0
    hi_ok = v < 1.0 if high_open else v <= 1.0
    if not (ok and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise InputError(f"{what} must be a number in {interval}, got {value!r}")
    return v


@dataclass(frozen=True)
class Action:
    """Base of the actions; ``tag`` names the action in JSON."""

    tag: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.tag, **asdict(self)}


@dataclass(frozen=True)
class Keep(Action):
    """Leave the layer as it is."""

    tag: ClassVar[str] = "keep"


@dataclass(frozen=True)
class LowRank(Action):
    """Truncated-SVD factorisation keeping ``rank_fraction`` of the layer's full rank (at least rank 1).

    ``form``: ``linear`` (Linear into two Linears), ``channel`` (a k x k conv of rank r outputs, then 1x1),
    ``spatial`` (k x 1 then 1 x k, Jaderberg et al.), or ``auto`` (linear for Linear, channel for Conv2d)."""

    rank_fraction: float = 0.5
    form: str = "auto"
    tag: ClassVar[str] = "lowrank"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank_fraction", _fraction(self.rank_fraction, "LowRank.rank_fraction", True, False))
        if self.form not in ("auto", "linear", "channel", "spatial"):
            raise InputError(f"LowRank.form must be auto, linear, channel or spatial, got {self.form!r}")


@dataclass(frozen=True)
class Unstructured(Action):
    """Magnitude pruning of single weights: the smallest ``sparsity`` fraction of the layer's weights is masked."""

    sparsity: float = 0.5
    tag: ClassVar[str] = "unstructured"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", _fraction(self.sparsity, "Unstructured.sparsity", False, True))


ACTIONS: dict[str, type[Action]] = {a.tag: a for a in (Keep, LowRank, Unstructured)}


def action_from_dict(data: Any, where: str = "action") -> Action:
    if not isinstance(data, Mapping) or "action" not in data:
        raise InputError(f"{where} must be an object with an 'action' tag, got {data!r:.200}")
    tag = data["action"]
    if tag not in ACTIONS:
        raise InputError(f"{where}: unknown action {tag!r}; expected one of {', '.join(ACTIONS)}")
    cls = ACTIONS[tag]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed - {"action"})
    if unknown:
        raise InputError(f"{where}: action {tag!r} has no field(s) {', '.join(unknown)}; its fields: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    return cls(**{k: v for k, v in data.items() if k != "action"})


class Policy(Mapping[str, Action]):
    """An immutable mapping: module name (as in ``model.named_modules()``) -> action."""

    def __init__(self, actions: Mapping[str, Action] | None = None) -> None:
        items = dict(actions or {})
        for name, action in items.items():
            if not isinstance(name, str) or not name:
                raise InputError(f"policy keys must be non-empty module names, got {name!r}")
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
    def uniform(cls, names: Iterator[str] | list[str], action: Action) -> Policy:
        """The same action on every named layer."""
        return cls(dict.fromkeys(names, action))

    def to_json(self) -> str:
        return json.dumps({"format": "devicefit-policy", "version": FORMAT_VERSION,
                           "layers": {n: a.to_dict() for n, a in self._actions.items()}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a policy must be JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != "devicefit-policy":
            raise InputError("not a devicefit policy (expected {'format': 'devicefit-policy', ...})")
        if doc.get("version") != FORMAT_VERSION:
            raise InputError(f"policy format version {doc.get('version')!r} is not supported (expected "
                             f"{FORMAT_VERSION})")
        layers = doc.get("layers")
        if not isinstance(layers, dict):
            raise InputError("a policy's 'layers' must be an object of module name -> action")
        return cls({n: action_from_dict(a, f"policy layer {n!r}") for n, a in layers.items()})
