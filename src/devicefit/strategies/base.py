"""The one interface of every search strategy: ask for candidates, tell their results, save and restore.

A strategy knows candidates only through the :class:`~devicefit.spaces.Space` protocol (the capability it
needs: sampling, mutation or an encoding), so one strategy serves a NAS space and a compression-policy
space alike. It sees results as :class:`Trial` objects: the candidate, its objective (higher is better:
the study flips objectives that are minimised), and whether it met the constraints.

Determinism: a strategy draws every random number from its own ``random.Random(seed)`` (and a seeded torch
generator where it trains a model), so the same seed and the same told results give the same asks. The
study relies on this to resume: a resumed run replays its asks and tells with every value served from
the store, and so continues exactly where the interrupted run stopped. ``state_dict`` /
``load_state_dict`` (plain JSON) carry the same state explicitly, for checkpoints and for tests.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from ..errors import InputError
from ..spaces.base import Space

C = TypeVar("C")

#: Scores candidates with a cheap estimator (a zero-cost proxy): higher is better, None when it failed.
Scorer = Callable[[Sequence[Any]], list[float | None]]


@dataclass(frozen=True)
class Trial(Generic[C]):
    """A told result: ``objective`` (higher is better; None when the evaluation failed) and feasibility.

    ``more``: the further objectives of a multi-objective study (each higher-is-better, in the study's
    order of secondary objectives); strategies that search one objective ignore them.
    """

    candidate: C
    objective: float | None
    feasible: bool = True
    more: tuple[float | None, ...] = ()

    @property
    def fitness(self) -> float:
        """What selection compares: the objective of a feasible, successful trial, else minus infinity."""
        return self.objective if (self.feasible and self.objective is not None) else float("-inf")


class Strategy(ABC, Generic[C]):
    """Ask/tell search. Subclasses define ``name`` and implement :meth:`ask`, :meth:`tell` and the state."""

    name: ClassVar[str]

    def __init__(self, space: Space[C], seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"strategy seed must be a non-negative integer, got {seed!r}")
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.scorer: Scorer | None = None
        self.seen: set[str] = set()  # keys of the candidates asked so far

    @abstractmethod
    def ask(self, n: int = 1) -> list[C]:
        """The next ``n`` candidates to evaluate."""

    @abstractmethod
    def tell(self, trials: Sequence[Trial[C]]) -> None:
        """Results of candidates this strategy asked for (in the order asked)."""

    def warm_up(self, candidates: Sequence[C], scores: Sequence[float]) -> None:
        """Zero-cost warm-up (arXiv 2101.08134): proxy scores (higher is better) of candidates before any
        evaluation. The default ignores them; strategies that the paper warms up override this."""

    def set_scorer(self, scorer: Scorer | None) -> None:
        """A cheap scorer for zero-cost *move* (arXiv 2101.08134): strategies that support it use it to
        choose among local moves; the study supplies it when moves are asked for."""
        self.scorer = scorer

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON state; subclasses extend it with their own."""
        version, internal, gauss = self.rng.getstate()
        return {"strategy": self.name, "seed": self.seed, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != self.name:
            raise InputError(f"state of strategy {state.get('strategy')!r} cannot be loaded into {self.name!r}")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed = int(state["seed"])

    # -- helpers for subclasses ------------------------------------------------------------------------
    def _claim(self, candidate: C) -> bool:
        """True (and remembered) when no candidate with this key was asked before: the budget buys distinct ones."""
        k = self.space.key(candidate)
        if k in self.seen:
            return False
        self.seen.add(k)
        return True

    def _to_json(self, candidates: Sequence[C]) -> list[Any]:
        return [self.space.to_json(c) for c in candidates]

    def _from_json(self, data: Sequence[Any]) -> list[C]:
        return [self.space.from_json(d) for d in data]


__all__ = ["Scorer", "Strategy", "Trial"]
