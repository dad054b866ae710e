"""A toy space and estimators for the evaluation-loop tests (importable by spawned workers and Ray actors)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devicefit.errors import InputError
from devicefit.spaces.base import CategoricalSpace, MutableSpace, Space
from devicefit.study import Estimator, EstimatorFailure


class IntSpace(Space[int]):
    """The integers 0..size-1; ``x`` and ``x + size // 2`` are "equivalent" (share a key)."""

    name = "toy-int"

    def __init__(self, size: int = 100) -> None:
        self.size = size

    def sample(self, rng: random.Random) -> int:
        return rng.randrange(self.size)

    def key(self, candidate: int) -> str:
        return str(candidate % (self.size // 2))

    def to_json(self, candidate: int) -> Any:
        return candidate

    def from_json(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data < self.size:
            raise InputError(f"toy candidate must be an integer in 0..{self.size - 1}, got {data!r}")
        return data

    def build(self, candidate: int, **options: Any):
        from torch import nn

        return nn.Linear(4, candidate + 1)

    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "size": self.size}


@dataclass
class Square(Estimator):
    """``x * x``; logs each computation to ``log`` (one line per call) when given; sleeps ``delay_s``."""

    log: str | None = None
    delay_s: float = 0.0
    fail_odd: bool = False
    kind = "square"

    @property
    def name(self) -> str:
        return "square"

    def settings(self) -> dict[str, Any]:
        return {"fail_odd": self.fail_odd}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{candidate} {os.getpid()}\n")
        if self.fail_odd and candidate % 2:
            raise EstimatorFailure(f"{candidate} is odd")
        return {"value": candidate * candidate}


@dataclass
class Pid(Estimator):
    """The worker's process id (shows where an evaluation ran)."""

    kind = "pid"

    def settings(self) -> dict[str, Any]:
        return {}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        return {"pid": os.getpid()}


class BitSpace(MutableSpace[tuple], CategoricalSpace[tuple]):
    """Tuples of ``n`` bits; neighbours flip one bit; the vector is the bits; categorical: 2 options per bit."""

    name = "toy-bits"

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def sample(self, rng: random.Random) -> tuple:
        return tuple(rng.randrange(2) for _ in range(self.n))

    def key(self, candidate: tuple) -> str:
        return "".join(map(str, candidate))

    def to_json(self, candidate: tuple) -> Any:
        return list(candidate)

    def from_json(self, data: Any) -> tuple:
        if not isinstance(data, list) or len(data) != self.n or any(b not in (0, 1) or isinstance(b, bool)
                                                                    for b in data):
            raise InputError(f"toy candidate must be a list of {self.n} bits, got {data!r}")
        return tuple(data)

    def build(self, candidate: tuple, **options: Any):
        from torch import nn

        return nn.Linear(self.n, 1)

    def neighbours(self, candidate: tuple) -> list[tuple]:
        return [tuple(1 - b if j == i else b for j, b in enumerate(candidate)) for i in range(self.n)]

    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "n": self.n}

    @property
    def choices(self) -> tuple[int, ...]:
        return (2,) * self.n

    def to_choices(self, candidate: tuple) -> tuple[int, ...]:
        return tuple(candidate)

    def from_choices(self, choices: Sequence[int]) -> tuple:
        return self.from_json([int(c) for c in choices])


@dataclass
class Weighted(Estimator):
    """A synthetic objective on bits: sum of bit i times (i + 1), optimum all ones; ``cost`` = number of ones."""

    kind = "weighted"

    @property
    def name(self) -> str:
        return "weighted"

    def settings(self) -> dict[str, Any]:
        return {}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        return {"value": float(sum((i + 1) * b for i, b in enumerate(candidate))), "cost": float(sum(candidate))}


@dataclass
class NoisyProxy(Estimator):
    """A cheap proxy that ranks like ``Weighted`` (for warm-up and move tests)."""

    kind = "toy-proxy"

    @property
    def name(self) -> str:
        return "toy_proxy"

    def settings(self) -> dict[str, Any]:
        return {}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        return {"value": float(sum((i + 1) * b for i, b in enumerate(candidate))) + 0.5 * candidate[0]}
