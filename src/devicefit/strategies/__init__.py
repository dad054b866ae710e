"""Search strategies behind one ask/tell interface (:class:`Strategy`), one file each.

- ``random``: random search, with zero-cost warm-up (:mod:`.random_search`);
- ``evolution``: aging evolution, with zero-cost warm-up and move (:mod:`.evolution`);
- ``reinforce``: REINFORCE over per-decision categoricals, with zero-cost warm-up and move (:mod:`.reinforce`);
- ``brp``: BRP-NAS, a binary-relation GCN accuracy predictor with iterative data selection (:mod:`.brp`);
- ``rl``: a policy-gradient agent with bounded continuous actions per decision and the marginal policy gradient
  (AMC / ShrinkML's per-layer ratio search, :mod:`.bounded_rl`);
- ``optuna``: any Optuna sampler (TPE, NSGA-II, random) on an in-memory Optuna study (:mod:`.optuna_sampler`).

    strategy = make_strategy("evolution", space, seed=0, move=True)
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .base import Scorer, Strategy, Trial
from .bounded_rl import BoundedPolicyGradient
from .brp import BRPSearch
from .evolution import AgingEvolution
from .optuna_sampler import OptunaSearch
from .random_search import RandomSearch
from .reinforce import ReinforceSearch

STRATEGIES: dict[str, type[Strategy]] = {"random": RandomSearch, "evolution": AgingEvolution,
                                         "reinforce": ReinforceSearch, "brp": BRPSearch, "optuna": OptunaSearch,
                                         "rl": BoundedPolicyGradient}


def make_strategy(name: str, space: Any, seed: int = 0, **options: Any) -> Strategy:
    """A strategy by registry name, on ``space``, with its options (e.g. ``population=64`` for evolution)."""
    if name not in STRATEGIES:
        raise InputError(f"unknown search strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    try:
        strategy = STRATEGIES[name](space, seed, **options)
    except TypeError as exc:
        raise InputError(f"strategy {name!r}: bad options {options}: {exc}") from None
    strategy.options = dict(options)
    return strategy


__all__ = ["STRATEGIES", "AgingEvolution", "BRPSearch", "BoundedPolicyGradient", "OptunaSearch", "RandomSearch",
           "ReinforceSearch", "Scorer", "Strategy", "Trial", "make_strategy"]
