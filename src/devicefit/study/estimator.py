"""What an estimator is: a named function of one candidate, with a fingerprint of everything it depends on.

An estimator turns a candidate of a space into a JSON value (a dict of named numbers such as
``{"latency_ms": 3.1}``): a benchmark-table look-up, zero-cost proxies, a saved predictor, a measurement on
this machine, or a count of MACs. Its :meth:`Estimator.settings` list every setting its value depends on
(file hashes included); the fingerprint hashes them with the space's settings, so the evaluation cache of
:mod:`devicefit.study.store` is keyed by what the value really depends on and shared by every job that
asks the same question.

Estimators travel to worker processes and Ray actors by pickling their settings only (plain dataclass
fields); heavy resources (an image pool, a table, a predictor's weights) are loaded by :meth:`prepare`
once in each worker and dropped from the pickle.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..spaces.base import Space

#: Bump when an estimator's computation changes in a way its settings do not show (invalidates caches).
ESTIMATOR_VERSION = 1


class EstimatorFailure(Exception):
    """An estimator could not give a value for this candidate (stored as a failure with this message)."""


class Estimator(ABC):
    """A function of one candidate, cached by fingerprint. Subclasses are dataclasses of plain settings."""

    #: the kind, e.g. ``table``, ``proxies``, ``predictor``, ``measured``, ``count``
    kind: ClassVar[str]

    @property
    def name(self) -> str:
        """How reports and objectives refer to it (unique within a job)."""
        return self.kind

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every setting the value depends on, as plain JSON (file contents by hash)."""

    def prepare(self) -> None:  # noqa: B027 (optional hook)
        """Load heavy resources; called once per worker before the first :meth:`evaluate`."""

    @abstractmethod
    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        """The value for ``candidate``: a dict of JSON numbers/strings. Raise on failure (the error is stored)."""

    def fingerprint(self, space: Space) -> str:
        """A short hash of the kind, :meth:`settings`, the space's settings and :data:`ESTIMATOR_VERSION`."""
        text = json.dumps(
            {"kind": self.kind, "settings": self.settings(), "space": space.settings(), "version": ESTIMATOR_VERSION},
            sort_keys=True, separators=(",", ":"), allow_nan=False,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; resources (attributes starting with ``_``) are loaded again by ``prepare``."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def file_sha256(path: Any) -> str:
    """SHA-256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidate_seed(seed: int, identity: str) -> int:
    """A 32-bit seed for one candidate from the job's ``seed`` and the candidate's identity: results do not
    depend on the order, the executor or the number of workers, and a resumed run equals a straight one."""
    import numpy as np

    digest = hashlib.sha256(identity.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])
