"""Regularized (aging) evolution, Real et al., AAAI 2019 (arXiv 1802.01548), as the NB201 baseline, with the
zero-cost warm-up and move of Abdelfattah et al. (arXiv 2101.08134).

Settings of the zero-cost reference notebook (SamsungLabs/zero-cost-nas ``nas_examples.ipynb``): a
population of 64, tournaments of 10 drawn without replacement, the best of the tournament mutated, the
child appended and the oldest member removed. The initial population is random, or with warm-up the 64
best-scored candidates of the warm-up pool. Mutation: one uniformly chosen neighbour (``space.mutate``);
with zero-cost move: the neighbour with the best proxy score, or with probability 0.25 a random neighbour.
Children whose key was already asked are mutated again (up to 100 tries, then a random candidate is
drawn), so the budget buys distinct candidates; the reference evaluates repeats again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..spaces.base import MutableSpace
from .base import C, Strategy, Trial

RANDOM_MOVE_PROBABILITY = 0.25
MAX_RETRIES = 100


class AgingEvolution(Strategy[C]):
    name = "evolution"

    def __init__(self, space: MutableSpace[C], seed: int = 0, population: int = 64, tournament: int = 10,
                 move: bool = False) -> None:
        if not isinstance(space, MutableSpace):
            raise InputError(f"aging evolution needs a space with mutations; {space.name!r} has none")
        if not 2 <= tournament <= population:
            raise InputError(f"tournament size must be in 2..population ({population}), got {tournament}")
        super().__init__(space, seed)
        self.population_size, self.tournament, self.move = population, tournament, move
        self.population: list[tuple[C, float]] = []  # oldest first
        self.initial: list[C] = []  # warm-up candidates still to evaluate, best first
        self.pending = 0  # asked, not yet told

    def warm_up(self, candidates: Sequence[C], scores: Sequence[float]) -> None:
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        self.initial = [candidates[i] for i in order][: self.population_size]

    def ask(self, n: int = 1) -> list[C]:
        return [self._one() for _ in range(n)]

    def _one(self) -> C:
        filling = len(self.population) + self.pending < self.population_size
        self.pending += 1
        if filling:
            while self.initial:
                c = self.initial.pop(0)
                if self._claim(c):
                    return c
            return self._fresh(lambda: self.space.sample(self.rng))
        sample = self.rng.sample(range(len(self.population)), self.tournament)
        parent = max(sample, key=lambda i: (self.population[i][1], -i))  # ties: the older wins
        return self._fresh(lambda: self._mutate(self.population[parent][0]))

    def _mutate(self, parent: C) -> C:
        if not self.move or self.scorer is None:
            return self.space.mutate(parent, self.rng)
        options = self.space.neighbours(parent)
        scores = self.scorer(options)
        best = max(range(len(options)), key=lambda i: (float("-inf") if scores[i] is None else scores[i], -i))
        if self.rng.random() < RANDOM_MOVE_PROBABILITY:
            return self.rng.choice(options)
        return options[best]

    def _fresh(self, draw: Any) -> C:
        """A candidate not asked before: ``draw()`` up to 100 times, then (a crowded neighbourhood) random
        samples; a repeat only when those fail too (a nearly exhausted space)."""
        for _ in range(MAX_RETRIES):
            c = draw()
            if self._claim(c):
                return c
        for _ in range(MAX_RETRIES * 10):
            c = self.space.sample(self.rng)
            if self._claim(c):
                return c
        return c

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        for t in trials:
            self.pending = max(0, self.pending - 1)
            self.population.append((t.candidate, t.fitness))
            if len(self.population) > self.population_size:
                self.population.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [[self.space.to_json(c), f] for c, f in self.population],
                "initial": self._to_json(self.initial), "seen": sorted(self.seen), "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = [(self.space.from_json(c), float(f)) for c, f in state["population"]]
        self.initial = self._from_json(state["initial"])
        self.seen = set(state["seen"])
        self.pending = int(state["pending"])
