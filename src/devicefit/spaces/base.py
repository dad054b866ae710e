"""The ``Space`` protocol: what a search strategy, a predictor or the evaluation loop may ask of candidates.

Split by capability, as Archai's ``discrete_search/api`` splits ``DiscreteSearchSpace`` /
``EvolutionarySearchSpace`` / ``BayesOptSearchSpace``, so that each consumer asks only for what it uses:

- :class:`Space` (every space): ``sample``, a stable ``key`` shared by duplicates and by equivalent
  (isomorphic) candidates, ``to_json`` / ``from_json`` (plain JSON, no pickles), and ``build`` (the
  ``nn.Module``). ``identity`` is the exact JSON text of a candidate: two candidates that the space
  tells apart (two arch strings of one isomorphism class) have different identities and the same key.
- :class:`MutableSpace`: ``mutate`` and ``neighbours`` (evolution, local search, zero-cost move).
- :class:`EncodableSpace`: a fixed-length vector (MLP predictors) and a labelled DAG (graph predictors
  such as the BRP-NAS GCN).
- :class:`CategoricalSpace`: a candidate is a fixed sequence of categorical decisions (one op per edge,
  one ratio per layer): what a policy-gradient controller (REINFORCE) or an Optuna sampler needs.

NAS spaces (NB201 first) and the per-layer policy space of one model (compression) implement the same
classes; nothing here knows of either. Why both ``key`` and ``identity``: equivalent candidates compute
the same function, so a strategy should not spend an evaluation on the second one (``key``), but a
benchmark table measured them separately and holds a different value for each (NB201 trains both
arch strings of a pair with their own seeds), so a cached value belongs to the exact candidate
(``identity``).
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:  # keep ``import devicefit.spaces`` free of torch
    import numpy as np
    from torch import nn

C = TypeVar("C")
#: What ``to_json`` returns: a value made of str, int, float, bool, None, lists and dicts with str keys.
JSONValue = Any


class Space(ABC, Generic[C]):
    """A set of candidates that can be sampled, named, stored as JSON and built."""

    #: short registry name (``nb201``); also recorded in stores and predictor files
    name: ClassVar[str]

    @abstractmethod
    def sample(self, rng: random.Random) -> C:
        """One candidate drawn from the space's sampling distribution (uniform unless documented)."""

    @abstractmethod
    def key(self, candidate: C) -> str:
        """Stable text shared by equal and by equivalent (isomorphic) candidates, and by no others."""

    @abstractmethod
    def to_json(self, candidate: C) -> JSONValue:
        """The candidate as plain JSON data; ``from_json(to_json(c)) == c``."""

    @abstractmethod
    def from_json(self, data: JSONValue) -> C:
        """The candidate back from :meth:`to_json`'s data; :class:`~devicefit.errors.InputError` if malformed."""

    @abstractmethod
    def build(self, candidate: C, **options: Any) -> nn.Module:
        """The candidate's network (fresh weights unless the space documents otherwise)."""

    def settings(self) -> dict[str, JSONValue]:
        """What defines this space (recorded with every stored evaluation); a space with options adds them."""
        return {"space": self.name}

    def identity(self, candidate: C) -> str:
        """The exact JSON text of the candidate (compact, sorted keys): what a cache stores it under."""
        return json.dumps(self.to_json(candidate), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def from_identity(self, text: str) -> C:
        """The candidate back from :meth:`identity` (malformed JSON is an :class:`InputError` naming it)."""
        from ..errors import InputError

        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{self.name} candidate {text[:200]!r} is not JSON: {exc}") from None
        return self.from_json(data)

    def contains(self, candidate: object) -> bool:
        """True when ``candidate`` is a candidate of this space (it round-trips through JSON unchanged)."""
        from ..errors import InputError

        try:
            return self.from_json(self.to_json(candidate)) == candidate  # type: ignore[arg-type]
        except (InputError, TypeError, ValueError, KeyError, AttributeError):
            return False


class MutableSpace(Space[C]):
    """A space with local moves: the neighbours of a candidate and a random one of them."""

    @abstractmethod
    def neighbours(self, candidate: C) -> list[C]:
        """Every candidate one elementary change away (one edge, one layer's setting), in a fixed order."""

    def mutate(self, candidate: C, rng: random.Random) -> C:
        """A uniformly random neighbour (the aging-evolution mutation)."""
        return rng.choice(self.neighbours(candidate))


@dataclass(frozen=True)
class LabelledGraph:
    """A candidate as a DAG with labelled nodes: ``adjacency[i, j] = 1`` for an edge i -> j.

    Node 0 is the input and the last node the output; ``labels[i]`` is one of the space's
    :attr:`EncodableSpace.node_labels`.
    """

    labels: tuple[str, ...]
    adjacency: np.ndarray


class EncodableSpace(Space[C]):
    """A space whose candidates have a fixed-length vector and a labelled-graph encoding."""

    @property
    @abstractmethod
    def vector_size(self) -> int:
        """Length of :meth:`encode_vector`."""

    @abstractmethod
    def encode_vector(self, candidate: C) -> np.ndarray:
        """A float32 vector of length :attr:`vector_size` (e.g. one-hot choices)."""

    @property
    @abstractmethod
    def node_labels(self) -> tuple[str, ...]:
        """Every label a node of :meth:`encode_graph` can carry, ``input`` and ``output`` included."""

    @property
    @abstractmethod
    def max_nodes(self) -> int:
        """The most nodes any candidate's graph has."""

    @abstractmethod
    def encode_graph(self, candidate: C) -> LabelledGraph:
        """The candidate as a :class:`LabelledGraph`."""

    def encode_vectors(self, candidates: Sequence[C]) -> np.ndarray:
        """``(n, vector_size)`` float32 array of :meth:`encode_vector`."""
        import numpy as np

        out = np.zeros((len(candidates), self.vector_size), dtype=np.float32)
        for i, c in enumerate(candidates):
            out[i] = self.encode_vector(c)
        return out


class CategoricalSpace(Space[C]):
    """A space whose candidates are a fixed sequence of categorical decisions (every sequence is a candidate)."""

    @property
    @abstractmethod
    def choices(self) -> tuple[int, ...]:
        """The number of options of each decision."""

    @abstractmethod
    def to_choices(self, candidate: C) -> tuple[int, ...]:
        """The candidate as one option index per decision."""

    @abstractmethod
    def from_choices(self, choices: Sequence[int]) -> C:
        """The candidate of these option indices (:class:`InputError` when one is out of range)."""

    @property
    def decision_names(self) -> tuple[str, ...]:
        """A name per decision (parameter names for Optuna); ``d0``, ``d1``, ... unless a space says better."""
        return tuple(f"d{i}" for i in range(len(self.choices)))


__all__ = ["C", "CategoricalSpace", "EncodableSpace", "JSONValue", "LabelledGraph", "MutableSpace", "Space"]
