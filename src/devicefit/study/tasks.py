"""Plain tasks as candidates: what :func:`evaluate_all` needs of a space, for a grid of experiments.

The loop asks a space only for ``name``, ``settings()``, ``identity(c)`` and ``from_identity(text)``. A
benchmark grid (device x predictor x training size x seed) is not a search space, but it is a list of
candidates to evaluate durably on any executor; :class:`TaskGrid` gives such tasks (tuples of plain JSON
values) an identity, so benchmarks run through the same loop, store and executors as every job.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InputError


class TaskGrid:
    """Tasks that are tuples of JSON values (str, int, float, bool, None); ``name`` and ``version`` scope them."""

    def __init__(self, name: str, version: int = 1) -> None:
        self.name, self.version = name, version

    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "version": self.version}

    def identity(self, task: tuple[Any, ...]) -> str:
        return json.dumps(list(task), separators=(",", ":"), allow_nan=False)

    def from_identity(self, text: str) -> tuple[Any, ...]:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{self.name} task {text!r} is not JSON: {exc}") from None
        if not isinstance(data, list):
            raise InputError(f"{self.name} task {text!r} must be a JSON list")
        return tuple(data)
