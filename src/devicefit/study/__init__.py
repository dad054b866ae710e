"""Studies: the results store (and later strategies, executors and Pareto fronts)."""

from .store import ResultStore

__all__ = ["ResultStore"]
