"""Exact knapsack solvers: the two projections of joint pruning and quantization to a model-size budget.

Yang et al., "Automatic Neural Network Compression by Sparsity-Quantization Joint Learning: A Constrained
Optimization-based Approach" (CVPR 2020, arXiv 1910.05897) project the weights onto ``size <= budget`` by two
knapsack problems (see :mod:`.joint`):

- pruning, a **0-1 knapsack** (:func:`knapsack_01`): an item is one weight, its value its squared magnitude,
  its cost the bit width of its layer, the capacity the budget in bits (keeping the most energy is the
  Euclidean projection);
- bit widths, a **multiple-choice knapsack** (:func:`multiple_choice_knapsack`): a group is one layer, with one
  option per candidate bit width, value minus the quantization error, cost (non-zeros of the layer) x (bits).

The paper and its code solve both greedily, by value per unit of cost (for the multiple-choice problem, along
the convex hull of each group). That is optimal for the LP relaxations, but the integer solutions can leave
budget unused or choose a worse set. Both solvers here are exact dynamic programs over the integer capacity,
vectorised with numpy:

- **0-1**: items of equal cost differ only in value, so an optimal set takes the most valuable items of every
  cost class first; what is left to choose is how many items each class gets. A class's value is then a concave
  function of its count (prefix sums of its values sorted in decreasing order), and the DP over the capacity adds
  one class at a time by a max-plus convolution with that concave function. The arg max of
  ``best[j] + F(i - j)`` is monotone in ``i`` (the matrix is Monge because F is concave), so divide and conquer
  finds every row's maximum in O(C log C) per cost class, against O(n C) for the item-by-item DP. The pruning
  projection has as many cost classes as distinct bit widths (at most 8), whatever the number of weights.
- **multiple-choice**: the textbook DP, O(options x C) per group (8 options per layer for bit widths 1..8).

Costs are first reduced (the cheapest option of every group is subtracted, then all costs are divided by their
greatest common divisor). Values are floats: the solutions are exact up to the rounding of their sums. The choice
tables take (classes or groups) x (capacity + 1) integers, limited to :data:`MAX_TABLE_CELLS` (an error says so
rather than exhausting memory).

Why hand-written rather than ``scipy.optimize.milp`` (HiGHS)? milp is exact only with a zero relative MIP gap and
within its floating-point feasibility tolerances, and the 0-1 problem needs one binary variable per weight
(430,500 for LeNet-5). Measured on this project's 2-core machine (scipy 1.17, ``mip_rel_gap=0``), on LeNet-5's
layer sizes with bit widths 5/3/2/4: a hundredth of them (4,305 weights) took milp 5 s against 2 ms here, a tenth
(43,050) did not finish within 300 s (its ``time_limit`` of 60 s notwithstanding), while this DP solves the full
430,500 weights in 0.08 s at the 2,000x budget and 0.16 s at 100x. The DPs are exact by construction,
deterministic, and need nothing beyond numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["MAX_TABLE_CELLS", "knapsack_01", "multiple_choice_knapsack"]

#: The most integers the DP choice tables may hold ((classes or groups) x (reduced capacity + 1)).
MAX_TABLE_CELLS = 100_000_000


# --- input checks ---------------------------------------------------------------------------------------


def _capacity(capacity: Any) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise InputError(f"capacity must be an integer (cost units), got {capacity!r}")
    if capacity < 0:
        raise InputError(f"capacity must be >= 0, got {capacity}")
    return int(capacity)


def _values(values: Any, what: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be real numbers, got {values!r}") from None
    if out.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise InputError(f"{what} must be finite numbers; entry {int(np.argmin(np.isfinite(out)))} is "
                         f"{out[np.argmin(np.isfinite(out))]}")
    return out


def _costs(costs: Any, length: int, what: str) -> np.ndarray:
    raw = np.asarray(costs)
    if raw.dtype == bool or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise InputError(f"{what} must be non-negative integers, got dtype {raw.dtype}")
    if raw.shape != (length,):
        raise InputError(f"{what} must have one entry per value ({length}), got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.floating) and not (np.isfinite(raw).all() and (raw == np.round(raw)).all()):
        raise InputError(f"{what} must be non-negative integers, got non-integral entries such as "
                         f"{raw[~(np.isfinite(raw) & (raw == np.round(raw)))][0]!r}")
    out = raw.astype(np.int64)
    if (out < 0).any():
        i = int(np.argmax(out < 0))
        raise InputError(f"{what} must be non-negative integers; entry {i} is {out[i]}")
    return out


def _check_table(rows: int, capacity: int) -> None:
    if rows * (capacity + 1) > MAX_TABLE_CELLS:
        raise InputError(f"the exact DP would need {rows} x {capacity + 1:,} choice cells (more than "
                         f"{MAX_TABLE_CELLS:,}): the reduced capacity {capacity:,} is too large; use coarser cost "
                         "units (e.g. bytes instead of bits)")


# --- 0-1 knapsack -------------------------------------------------------------------------------------


def knapsack_01(values: Any, costs: Any, capacity: int) -> np.ndarray:
    """The items of an optimal 0-1 knapsack: a boolean mask maximising ``sum(values[mask])`` subject to
    ``sum(costs[mask]) <= capacity``. ``costs`` are non-negative integers; items of value <= 0 are never taken,
    items of cost 0 and positive value always. Exact (see the module docstring); among items of equal cost and
    equal value the lower index is taken first."""
    v = _values(values, "values")
    c = _costs(costs, len(v), "costs")
    cap = _capacity(capacity)
    chosen = np.zeros(len(v), dtype=bool)
    chosen[(v > 0) & (c == 0)] = True
    useful = np.flatnonzero((v > 0) & (c > 0) & (c <= cap))
    if len(useful) == 0:
        return chosen
    if int(c[useful].sum()) <= cap:
        chosen[useful] = True
        return chosen
    classes = np.unique(c[useful])
    unit = math.gcd(*classes.tolist())
    steps, cap_units = classes // unit, cap // unit
    _check_table(len(classes), cap_units)
    members, takes = [], []
    best = np.zeros(cap_units + 1)
    for cost, step in zip(classes, steps):
        idx = useful[c[useful] == cost]
        idx = idx[np.argsort(-v[idx], kind="stable")][: cap_units // step]  # most valuable first
        members.append(idx)
        gains = np.concatenate([[0.0], np.cumsum(v[idx])])
        if not takes:  # the first class alone: as many as fit
            take = np.minimum(np.arange(cap_units + 1) // step, len(idx))
            best = gains[take]
        else:
            best, take = _maxplus_concave(best, gains, int(step))
        takes.append(take)
    room = cap_units
    for idx, step, take in zip(reversed(members), reversed(steps), reversed(takes)):
        k = int(take[room])
        chosen[idx[:k]] = True
        room -= k * int(step)
    return _fill(chosen, v, c, cap)


def _fill(chosen: np.ndarray, values: np.ndarray, costs: np.ndarray, capacity: int) -> np.ndarray:
    """Add, most valuable first, the left-out items of positive value that still fit. An optimal set has none in
    exact arithmetic; in floats a value too small to change a large sum ties with leaving it out."""
    room = capacity - int(costs[chosen].sum())
    left = np.flatnonzero(~chosen & (values > 0) & (costs <= room))
    for i in left[np.argsort(-values[left], kind="stable")]:
        if costs[i] <= room:
            chosen[i] = True
            room -= int(costs[i])
    return chosen


def _maxplus_concave(best: np.ndarray, gains: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``out[c] = max over k of best[c - k * step] + gains[k]`` (``0 <= k <= len(gains) - 1``, ``k * step <= c``)
    and the k of each maximum (the largest k among ties: more items), for concave ``gains``.

    Each residue of ``c`` modulo ``step`` is its own sequence ``a[i] = best[r + i * step]`` with
    ``out[i] = max_j a[j] + gains[i - j]`` over the band ``i - K <= j <= i``; the smallest maximising j is
    non-decreasing in i, so the rows are solved by divide and conquer (middle row first, its arg max splitting the
    columns of the rows above and below), one level of all sequences at a time."""
    size, top_k = len(best), len(gains) - 1
    residues = np.arange(min(step, size))
    lengths = (size - 1 - residues) // step + 1
    width = int(lengths.max())
    position = residues[:, None] + step * np.arange(width)[None, :]
    valid = position < size
    grid = np.zeros(position.shape)
    grid[valid] = best[position[valid]]
    out, arg = np.zeros(position.shape), np.zeros(position.shape, dtype=np.int64)
    seq, rlo, rhi = residues.copy(), np.zeros_like(residues), lengths - 1
    clo, chi = np.zeros_like(residues), lengths - 1
    while len(seq):
        mid = (rlo + rhi) // 2
        lo, hi = np.maximum(clo, mid - top_k), np.minimum(chi, mid)  # never empty (see the docstring)
        count = hi - lo + 1
        start = np.cumsum(count) - count
        owner = np.repeat(np.arange(len(seq)), count)
        col = lo[owner] + np.arange(int(count.sum())) - start[owner]
        vals = grid[seq[owner], col] + gains[mid[owner] - col]
        peak = np.maximum.reduceat(vals, start)
        pick = np.minimum.reduceat(np.where(vals == peak[owner], col, size), start)
        out[seq, mid], arg[seq, mid] = peak, pick
        left, right = rlo < mid, mid < rhi
        seq, rlo, rhi, clo, chi = (np.concatenate([seq[left], seq[right]]),
                                   np.concatenate([rlo[left], mid[right] + 1]),
                                   np.concatenate([mid[left] - 1, rhi[right]]),
                                   np.concatenate([clo[left], pick[right]]),
                                   np.concatenate([pick[left], chi[right]]))
    flat_out, flat_k = np.empty(size), np.empty(size, dtype=np.int64)
    flat_out[position[valid]] = out[valid]
    flat_k[position[valid]] = (np.arange(width)[None, :] - arg)[valid]
    return flat_out, flat_k


# --- multiple-choice knapsack -------------------------------------------------------------------------


def multiple_choice_knapsack(values: Sequence[Any], costs: Sequence[Any], capacity: int) -> np.ndarray:
    """One option per group maximising the total value subject to ``total cost <= capacity``: the index of the
    chosen option of every group. ``values[g]`` and ``costs[g]`` are group g's options (costs non-negative
    integers). Exact (the DP over the capacity); among options of equal total value the lower index wins.
    Raises :class:`InputError` when even the cheapest option of every group exceeds ``capacity``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise InputError(f"values must be a non-empty list of groups (one array of option values each), got "
                         f"{type(values).__name__}")
    if isinstance(costs, (str, bytes)) or not isinstance(costs, Sequence) or len(costs) != len(values):
        raise InputError(f"costs must be a list of {len(values)} groups, like values, got "
                         f"{len(costs) if isinstance(costs, Sequence) else type(costs).__name__}")
    cap = _capacity(capacity)
    vals = [_values(v, f"values[{g}]") for g, v in enumerate(values)]
    for g, v in enumerate(vals):
        if len(v) == 0:
            raise InputError(f"values[{g}] is empty: every group needs at least one option")
    cost = [_costs(c, len(v), f"costs[{g}]") for g, (c, v) in enumerate(zip(costs, vals))]
    floor = sum(int(c.min()) for c in cost)
    if floor > cap:
        raise InputError(f"capacity {cap} is below the cheapest choice: the smallest cost of every group sums to "
                         f"{floor}; expected a capacity of at least {floor}")
    extra = [c - c.min() for c in cost]
    unit = math.gcd(*[int(x) for c in extra for x in np.unique(c) if x > 0]) or 1
    room = (cap - floor) // unit
    _check_table(len(vals), room)
    best = np.zeros(room + 1)
    tables = []
    for v, c in zip(vals, extra):
        steps = c // unit
        new, choice = np.full(room + 1, -np.inf), np.zeros(room + 1, dtype=np.int32)
        for option in np.flatnonzero(steps <= room):
            s = int(steps[option])
            cand = best[: room + 1 - s] + v[option]
            better = cand > new[s:]
            new[s:][better] = cand[better]
            choice[s:][better] = option
        best = new
        tables.append((choice, steps))
    picks = np.zeros(len(vals), dtype=np.int64)
    for g in range(len(vals) - 1, -1, -1):
        choice, steps = tables[g]
        picks[g] = choice[room]
        room -= int(steps[picks[g]])
    return picks
