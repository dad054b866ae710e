"""Pareto fronts of candidates scored on several objectives (e.g. accuracy up, latency down).

A point dominates another when it is no worse on every objective and strictly better on at least one;
the front is the set of points no other point dominates (ties are all kept). NaN objectives are
rejected: drop failed evaluations first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError


def _objectives(objectives: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    x = np.asarray(objectives, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"objectives must be a 2-D array (points x objectives), got shape {x.shape}")
    if x.shape[1] != len(maximize):
        raise InputError(f"objectives have {x.shape[1]} columns but maximize has {len(maximize)} entries")
    if not np.isfinite(x).all():
        raise InputError("objectives must be finite; drop failed (NaN/inf) evaluations first")
    # Flip to "lower is better" on every column.
    return np.where(np.asarray(maximize, dtype=bool), -x, x)


def pareto_mask(objectives: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``objectives`` (``maximize[j]``: higher is better on j)."""
    x = _objectives(objectives, maximize)
    n = len(x)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        # Rows that i dominates are off the front.
        dominated = np.all(x[i] <= x, axis=1) & np.any(x[i] < x, axis=1)
        mask[dominated] = False
    return mask


def pareto_front(cost: Sequence[float] | np.ndarray, value: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the points with the best ``value`` (higher better) for their ``cost`` (lower better),
    sorted by increasing cost: the accuracy-latency trade-off curve."""
    c = np.asarray(cost, dtype=np.float64).ravel()
    v = np.asarray(value, dtype=np.float64).ravel()
    if c.shape != v.shape:
        raise InputError(f"cost and value must have the same length, got {c.size} and {v.size}")
    idx = np.flatnonzero(pareto_mask(np.column_stack([c, v]), (False, True)))
    return idx[np.lexsort((-v[idx], c[idx]))]


def hypervolume_2d(
    cost: Sequence[float] | np.ndarray, value: Sequence[float] | np.ndarray, ref_cost: float, ref_value: float
) -> float:
    """Area dominated by the points and bounded by the reference point (``ref_cost`` worse than every
    cost, ``ref_value`` worse than every value): the usual 2-objective hypervolume indicator."""
    c = np.asarray(cost, dtype=np.float64).ravel()
    v = np.asarray(value, dtype=np.float64).ravel()
    keep = (c < ref_cost) & (v > ref_value)
    if not keep.any():
        return 0.0
    c, v = c[keep], v[keep]
    front = pareto_front(c, v)
    area = 0.0
    for k, i in enumerate(front):
        next_cost = c[front[k + 1]] if k + 1 < len(front) else ref_cost
        area += (next_cost - c[i]) * (v[i] - ref_value)
    return float(area)
