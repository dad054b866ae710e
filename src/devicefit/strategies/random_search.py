"""Random search, with the zero-cost warm-up of Abdelfattah et al. (arXiv 2101.08134).

Without warm-up: candidates drawn with ``space.sample``. With warm-up (the reference notebook
``nas_examples.ipynb`` of SamsungLabs/zero-cost-nas): the warm-up pool (N random candidates scored by a
proxy) sorted by score, best first, is evaluated first, then random samples follow. Candidates whose key
was already asked are skipped, so a budget of N evaluations is N distinct candidates (the reference
samples with replacement; a repeat there costs an evaluation for nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import C, Strategy, Trial

#: Draws before giving up on finding an unseen candidate (a nearly exhausted space).
MAX_DRAWS = 100_000


class RandomSearch(Strategy[C]):
    name = "random"

    def __init__(self, space: Any, seed: int = 0) -> None:
        super().__init__(space, seed)
        self.queue: list[C] = []  # warm-up candidates, best proxy score first

    def warm_up(self, candidates: Sequence[C], scores: Sequence[float]) -> None:
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        self.queue = [candidates[i] for i in order]

    def ask(self, n: int = 1) -> list[C]:
        out: list[C] = []
        while len(out) < n:
            c = self._next()
            if c is None:
                break
            out.append(c)
        return out

    def _next(self) -> C | None:
        while self.queue:
            c = self.queue.pop(0)
            if self._claim(c):
                return c
        for _ in range(MAX_DRAWS):
            c = self.space.sample(self.rng)
            if self._claim(c):
                return c
        return None

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        """Random search learns nothing from results."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "queue": self._to_json(self.queue), "seen": sorted(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.queue = self._from_json(state["queue"])
        self.seen = set(state["seen"])
