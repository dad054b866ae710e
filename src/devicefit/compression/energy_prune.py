"""Energy-constrained pruning: projected SGD onto an energy budget by weighted sparse projection.

Yang, Zhu, Liu, "Energy-Constrained Compression for Deep Neural Networks via Weighted Sparse Projection and Layer
Input Masking" (ICLR 2019, arXiv 1806.04321) trains ``min loss(W) s.t. E(W) <= budget`` by projected gradient
descent: SGD steps, and every ``k`` steps the weights are projected onto the energy constraint set, the budget
lowered step by step from the model's energy to the target (their reference code decays it over the run).

**Energy of a pruned model.** With the fitted device model of :mod:`devicefit.hardware.energy`, a conv/linear
layer ``l`` with ``nnz_l`` non-zero weights takes ``E_l = cost_l * nnz_l + fixed_l``: ``cost_l = e_mac[type] *
P_out + e_weight`` is the marginal energy of one non-zero weight (its ``P_out`` MACs and its access, on hardware
that skips zero weights), ``fixed_l`` the activations' and the per-layer energy. The model's energy is linear
in the non-zeros: ``E(W) = sum_l fixed_l + sum_l cost_l ||W_l||_0``. (The paper's energy also falls with the
*input* non-zeros and has a cache-capacity term; see "Left out".)

**Weighted sparse projection.** ``P(W) = argmin ||W' - W||^2 s.t. E(W') <= budget`` keeps a subset S of the
weights unchanged and zeroes the rest, S maximising ``sum_{i in S} w_i^2`` subject to ``sum_{i in S} cost_i <=
budget - sum fixed``: a 0-1 knapsack with values ``w_i^2`` and costs ``cost_i``, as the paper shows. The paper
solves it greedily, sorting the weights by ``w_i^2 / cost_i`` and keeping the longest prefix that fits, and
bounds the error. That is **not exact** when layers differ in cost: the first weight that does not fit may
leave room that cheaper weights further down could use, and ``argmin`` may prefer a different set altogether.
:func:`weighted_sparse_projection` keeps the paper's prefix and then fills the remaining budget, in the same
order, with every later weight that still fits (never worse than the prefix). It is exact when every weight
costs the same (one layer, or equal costs: the top-k by magnitude), and in general within one weight of the
optimum: ``OPT - value <= w_b^2``, ``w_b`` the first weight the prefix could not take (the fractional knapsack's
bound, since ``OPT <= prefix + w_b^2``); each projection reports that bound as ``gap_bound``. On trained
LeNet-5 at 50 / 25 / 10 % of its eyeriss energy the bound is under 1e-4 of the kept ``sum w^2`` in every
projection. The exact :func:`~devicefit.compression.knapsack.knapsack_01` is not used: it needs integer costs,
and with the energy costs rounded up to 1/20 of the cheapest weight's (table of 4 x 4-8 million cells) it kept
2-3e-5 *less* than this greedy at 50 and 25 % (rounding up wastes budget) and took 20 to 75 times as long.

**Procedure** (:func:`prune_to_energy`): projected SGD with :class:`EnergyProjection` as a
:class:`~devicefit.compression.train.TrainingHook` of :func:`~devicefit.compression.finetune` (a projection every
``project_every`` steps and at the last one; the budget decreases linearly from the model's energy to the target
over the first ``ramp_fraction`` of the steps, then stays there), a last projection at the exact budget, then
``torch.nn.utils.prune`` masks of the kept weights, and optionally masked recovery fine-tuning, which cannot add
non-zeros. The final energy is at most the budget by construction (checked, with the same float arithmetic as
:meth:`~devicefit.hardware.energy.BilinearEnergyModel.model_energy`).

**Left out.** The paper's layer input masking (learning masks on layer inputs to cut input non-zeros) and its
energy model's dependence on input sparsity (we count every input as non-zero, which over-estimates energy
after ReLU); its cache-overflow term (weights beyond a layer's on-chip cache cost more), which has no counterpart
in a model fitted to a lookup table; its distillation loss (available through ``FinetuneConfig(distill=True)``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InputError
from ..hardware.energy import BilinearEnergyModel, LayerShape, effective_weight, layer_shapes
from ..models.evaluate import DataSource, evaluate_accuracy
from .train import FinetuneConfig, TrainingHook, finetune

__all__ = [
    "EnergyLayerReport",
    "EnergyProjection",
    "EnergyPruneReport",
    "EnergyTerm",
    "ProjectionResult",
    "energy_terms",
    "prune_to_energy",
    "total_energy",
    "weighted_sparse_projection",
]

_SAFETY = 1e-12  # relative margin below the capacity, against rounding in the cumulative sums


@dataclass(frozen=True)
class EnergyTerm:
    """One conv/linear layer's energy as a function of its non-zero weights: ``cost_mj * nnz + fixed_mj``."""

    name: str
    shape: LayerShape
    numel: int
    cost_mj: float  # marginal energy of one non-zero weight
    fixed_mj: float  # activations and the per-layer constant
    prunable: bool = True

    def energy(self, nonzero: int) -> float:
        """The layer's energy (mJ) with ``nonzero`` non-zero weights."""
        return self.cost_mj * float(nonzero) + self.fixed_mj


def energy_terms(model: nn.Module, example_input: torch.Tensor, energy_model: BilinearEnergyModel,
                 layers: Sequence[str] | None = None) -> list[EnergyTerm]:
    """The energy terms of every conv/linear layer of ``model`` that runs on ``example_input``; those named in
    ``layers`` (default: all) are prunable, the others keep their weights."""
    if not isinstance(energy_model, BilinearEnergyModel):
        raise InputError(f"energy_model must be a BilinearEnergyModel (fit_energy_model), got "
                         f"{type(energy_model).__name__}")
    shapes = layer_shapes(model, example_input)
    if not shapes:
        raise InputError("the model has no Conv or Linear layer that runs on the example input; nothing to prune")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
            raise InputError(f"layers must be a non-empty list of layer names, got {layers!r}")
        unknown = sorted(set(layers) - set(shapes))
        if unknown:
            raise InputError(f"layers {unknown} are not conv/linear layers that run on the example input; expected "
                             f"some of {', '.join(shapes)}")
    modules = dict(model.named_modules())
    return [EnergyTerm(name, shape, int(effective_weight(modules[name]).numel()), energy_model.weight_cost(shape),
                       energy_model.fixed_energy(shape), layers is None or name in layers)
            for name, shape in shapes.items()]


def total_energy(terms: Sequence[EnergyTerm], nonzero: Sequence[int]) -> float:
    """The model's energy (mJ) with these non-zero weight counts, summed as ``model_energy`` sums it."""
    return math.fsum(t.energy(n) for t, n in zip(terms, nonzero))


def _nonzero(model: nn.Module, terms: Sequence[EnergyTerm]) -> list[int]:
    modules = dict(model.named_modules())
    with torch.no_grad():
        return [int(torch.count_nonzero(effective_weight(modules[t.name]))) for t in terms]


# --- the projection ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionResult:
    """One weighted sparse projection: per-item keep masks, their cost and value, the capacity, and ``gap_bound``,
    the most the optimum's kept value can exceed this one's (``w_b^2`` of the first item the prefix could not
    take; 0 when everything fits). ``exact`` is True when the bound proves the result optimal."""

    keep: list[np.ndarray]
    cost: float
    value: float
    capacity: float
    gap_bound: float

    @property
    def exact(self) -> bool:
        return self.gap_bound == 0.0


def weighted_sparse_projection(values: Sequence[np.ndarray], costs: Sequence[float],
                               capacity: float) -> ProjectionResult:
    """Keep the items (weights) maximising ``sum value`` subject to ``sum cost <= capacity``: ``values[l]`` holds
    the values (``w^2``) of group ``l``, all of cost ``costs[l]`` > 0. The paper's greedy by ``value / cost``,
    then filled with every later item that still fits (see the module docstring for how close to exact it is).
    Items of value 0 are never kept."""
    if len(values) != len(costs) or not values:
        raise InputError(f"weighted_sparse_projection needs one cost per group of values, got {len(values)} groups "
                         f"and {len(costs)} costs")
    cost_arr = np.asarray(costs, dtype=np.float64)
    if not np.all(np.isfinite(cost_arr)) or np.any(cost_arr <= 0):
        raise InputError(f"costs must be finite and > 0, got {list(costs)}")
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not math.isfinite(capacity) \
            or capacity < 0:
        raise InputError(f"capacity must be a finite number >= 0, got {capacity!r}")
    flat = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if any(np.any(~np.isfinite(v)) or np.any(v < 0) for v in flat):
        raise InputError("values must be finite and >= 0 (squared weights)")
    sizes = [v.size for v in flat]
    value = np.concatenate(flat)
    cost = np.repeat(cost_arr, sizes)
    chosen, gap = _greedy_fill(value, cost, float(capacity))
    keep = np.zeros(value.size, dtype=bool)
    keep[chosen] = True
    return ProjectionResult(np.split(keep, np.cumsum(sizes)[:-1]), float(cost[chosen].sum()),
                            float(value[chosen].sum()), float(capacity), gap)


def _greedy_fill(value: np.ndarray, cost: np.ndarray, capacity: float) -> tuple[np.ndarray, float]:
    """Indices kept, in the order taken (prefix of the density order, then the fill), and the gap bound."""
    candidates = np.flatnonzero(value > 0)
    order = candidates[np.argsort(-(value[candidates] / cost[candidates]), kind="stable")]
    cum = np.cumsum(cost[order])
    n = int(np.searchsorted(cum, capacity, side="right"))
    taken = [order[:n]]
    gap = float(value[order[n]]) if n < order.size else 0.0
    left = capacity - (float(cum[n - 1]) if n else 0.0)
    rest = order[n:]
    while rest.size:  # the fill: at most one round per distinct cost, as each round rules out the blocking cost
        rest = rest[cost[rest] <= left]
        if not rest.size:
            break
        cum = np.cumsum(cost[rest])
        n = int(np.searchsorted(cum, left, side="right"))
        taken.append(rest[:n])
        left -= float(cum[n - 1])
        rest = rest[n:]
    return np.concatenate(taken), gap


# --- the training hook -------------------------------------------------------------------------------------


class EnergyProjection(TrainingHook):
    """Projected SGD onto ``energy <= budget`` as a hook of :func:`~devicefit.compression.finetune`: after every
    ``project_every`` steps (and at step ``total_steps``) the prunable weights of ``terms`` are projected
    (:meth:`project`) onto the budget of that step. With ``total_steps``, the budget falls linearly from the
    model's energy at the start to ``budget_mj`` over the first ``ramp_fraction`` of the steps; without, it is
    ``budget_mj`` from the first projection."""

    def __init__(self, terms: Sequence[EnergyTerm], budget_mj: float, *, project_every: int = 10,
                 total_steps: int | None = None, ramp_fraction: float = 0.5) -> None:
        self.terms = list(terms)
        if not self.terms or not all(isinstance(t, EnergyTerm) for t in self.terms):
            raise InputError("EnergyProjection needs the model's energy terms (energy_terms(model, x, energy_model))")
        if not any(t.prunable for t in self.terms):
            raise InputError("EnergyProjection: no layer is prunable")
        self.budget_mj = positive_number(budget_mj, "EnergyProjection budget_mj")
        self.minimum_mj = total_energy(self.terms, [0 if t.prunable else t.numel for t in self.terms])
        if self.budget_mj < self.minimum_mj:
            raise InputError(f"energy budget {self.budget_mj:.6g} mJ is below {self.minimum_mj:.6g} mJ, what the "
                             "model takes with every prunable weight zero (activations, per-layer constants and the "
                             "layers not pruned); expected a budget above that")
        for name, v in (("project_every", project_every), ("total_steps", total_steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"EnergyProjection {name} must be a positive integer (steps), got {v!r}")
        if isinstance(ramp_fraction, bool) or not isinstance(ramp_fraction, (int, float)) \
                or not 0 <= ramp_fraction <= 1:
            raise InputError(f"EnergyProjection ramp_fraction must be in [0, 1], got {ramp_fraction!r}")
        self.project_every = project_every
        self.total_steps = total_steps
        self.ramp_fraction = float(ramp_fraction)
        self.start_mj: float | None = None
        self.projections = 0
        self.worst_gap = 0.0  # the largest gap_bound / kept value over the projections made
        self.last: ProjectionResult | None = None

    def on_start(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for t in self.terms:
            m = modules.get(t.name)
            if m is None or not isinstance(getattr(m, "weight", None), torch.Tensor):
                raise InputError(f"EnergyProjection: the model has no layer {t.name!r} with a weight")
            if t.prunable and hasattr(m, "weight_mask"):
                raise InputError(f"EnergyProjection: {t.name!r} is already masked; project before masking")
        if self.start_mj is None:
            self.start_mj = self.energy(model)

    def energy(self, model: nn.Module) -> float:
        """The model's energy (mJ) now, from its non-zero weights."""
        return total_energy(self.terms, _nonzero(model, self.terms))

    def budget_at(self, step: int) -> float:
        """The budget (mJ) of a projection after ``step`` steps."""
        start = self.budget_mj if self.start_mj is None else max(self.start_mj, self.budget_mj)
        if self.total_steps is None:
            return self.budget_mj
        ramp = self.ramp_fraction * self.total_steps
        if ramp <= 0 or step >= ramp:
            return self.budget_mj
        return start - (start - self.budget_mj) * step / ramp

    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.project_every == 0 or step == self.total_steps:
            self.project(model, self.budget_at(step))

    def project(self, model: nn.Module, budget_mj: float | None = None) -> ProjectionResult:
        """Zero the prunable weights outside the weighted sparse projection onto ``budget_mj`` (default: the
        target); afterwards the model's energy is at most the budget."""
        budget = self.budget_mj if budget_mj is None else positive_number(budget_mj, "projection budget_mj")
        budget = max(budget, self.budget_mj)
        modules = dict(model.named_modules())
        targets = [t for t in self.terms if t.prunable]
        fixed = total_energy(self.terms, [0 if t.prunable else t.numel for t in self.terms])
        with torch.no_grad():
            weights = [modules[t.name].weight for t in targets]
            values = [w.detach().double().pow(2).flatten().cpu().numpy() for w in weights]
            capacity = max(0.0, (budget - fixed) * (1 - _SAFETY))
            result = weighted_sparse_projection(values, [t.cost_mj for t in targets], capacity)
            keep = self._within_budget(result.keep, values, targets, budget)
            for w, k in zip(weights, keep):
                w.mul_(torch.from_numpy(k).to(device=w.device, dtype=w.dtype).view_as(w))
        self.projections += 1
        self.last = result
        if result.value > 0:
            self.worst_gap = max(self.worst_gap, result.gap_bound / result.value)
        return result

    def _within_budget(self, keep: list[np.ndarray], values: list[np.ndarray], targets: list[EnergyTerm],
                       budget: float) -> list[np.ndarray]:
        """Drop the least dense kept weights while the energy, summed exactly as reported, exceeds the budget
        (only rounding can make it; normally returns at once)."""
        keep = [k.copy() for k in keep]
        nnz = {t.name: int(k.sum()) for t, k in zip(targets, keep)}
        while total_energy(self.terms, [nnz[t.name] if t.prunable else t.numel for t in self.terms]) > budget:
            density = [np.where(k, v / t.cost_mj, np.inf) for k, v, t in zip(keep, values, targets)]
            layer = int(np.argmin([d.min() if d.size else np.inf for d in density]))
            keep[layer][int(np.argmin(density[layer]))] = False
            nnz[targets[layer].name] -= 1
        return keep

    def state_dict(self) -> dict[str, Any]:
        return {"start_mj": self.start_mj, "projections": self.projections, "worst_gap": self.worst_gap}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            start = state["start_mj"]
            self.start_mj = None if start is None else float(start)
            self.projections = int(state["projections"])
            self.worst_gap = float(state["worst_gap"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"an EnergyProjection state needs start_mj, projections and worst_gap: {exc}") from None


def positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number (mJ), got {value!r}")
    return float(value)


# --- the procedure -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyLayerReport:
    """One layer of :class:`EnergyPruneReport`: weights, non-zeros and energy (mJ) before and after."""

    name: str
    weights: int
    nonzero_before: int
    nonzero_after: int
    cost_mj: float
    energy_before_mj: float
    energy_after_mj: float
    prunable: bool


@dataclass(frozen=True)
class EnergyPruneReport:
    """What :func:`prune_to_energy` did: device, budget, energy before and after (mJ per sample), the least
    reachable energy (every prunable weight zero), per-layer figures, projections made, the largest ``gap_bound``
    of a projection relative to its kept value (how far from the optimal projection any was at most), training
    steps (projected, recovery) and top-1 (%) on ``eval_data``."""

    device: str
    budget_mj: float
    energy_before_mj: float
    energy_after_mj: float
    minimum_mj: float
    layers: list[EnergyLayerReport] = field(default_factory=list)
    projections: int = 0
    relative_gap_bound: float = 0.0
    steps: int = 0
    recovery_steps: int = 0
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _example(train_data: DataSource) -> torch.Tensor:
    try:
        x, _ = next(iter(train_data.batches(1)))
    except StopIteration:
        raise InputError("train_data is empty; an energy estimate needs one example input") from None
    return x


def _total_steps(train_data: DataSource, config: FinetuneConfig) -> int:
    """The steps :func:`finetune` will make with ``config`` (its rounding of fractional epochs)."""
    total = max(1, math.floor(config.epochs * math.ceil(len(train_data) / config.batch_size) + 0.5))
    return total if config.max_steps is None else min(total, config.max_steps)


def _budget(budget_mj: float | None, budget_ratio: float | None, energy_before: float) -> float:
    if (budget_mj is None) == (budget_ratio is None):
        raise InputError("give exactly one of budget_mj (mJ per sample) and budget_ratio (of the model's energy)")
    if budget_ratio is not None:
        ratio = positive_number(budget_ratio, "budget_ratio")
        if ratio > 1:
            raise InputError(f"budget_ratio must be in (0, 1], a fraction of the model's energy, got {budget_ratio!r}")
        return ratio * energy_before
    return positive_number(budget_mj, "budget_mj")


def prune_to_energy(
    model: nn.Module,
    train_data: DataSource,
    energy_model: BilinearEnergyModel,
    *,
    budget_mj: float | None = None,
    budget_ratio: float | None = None,
    example_input: torch.Tensor | None = None,
    layers: Sequence[str] | None = None,
    config: FinetuneConfig = FinetuneConfig(epochs=1.0, lr=0.01),
    recovery: FinetuneConfig | None = None,
    project_every: int = 10,
    ramp_fraction: float = 0.5,
    eval_data: DataSource | None = None,
    progress: bool = False,
) -> tuple[nn.Module, EnergyPruneReport]:
    """Prune a copy of ``model`` to an energy budget on ``energy_model``'s device (see the module docstring):
    ``budget_mj`` per sample, or ``budget_ratio`` of the model's energy as given. Projected SGD on ``train_data``
    with ``config``, masks, then masked ``recovery`` fine-tuning if given. ``example_input`` (default: the first
    training input) fixes the layers' geometry. Returns the masked model and the report; ``model`` is unchanged."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    example = _example(train_data) if example_input is None else example_input
    terms = energy_terms(model, example, energy_model, layers)
    before = _nonzero(model, terms)
    energy_before = total_energy(terms, before)
    budget = _budget(budget_mj, budget_ratio, energy_before)
    hook = EnergyProjection(terms, budget, project_every=project_every, total_steps=_total_steps(train_data, config),
                            ramp_fraction=ramp_fraction)
    steps = 0
    if energy_before > budget:
        steps = finetune(model, train_data, config, hooks=[hook], progress=progress).steps
    hook.project(model, budget)  # the last word: exactly within the budget
    modules = dict(model.named_modules())
    for t in terms:
        if t.prunable:
            w = modules[t.name].weight
            torch_prune.custom_from_mask(modules[t.name], "weight", (w.detach() != 0).to(w.dtype))
    recovery_steps = 0 if recovery is None else finetune(model, train_data, recovery, progress=progress).steps
    after = _nonzero(model, terms)
    energy_after = total_energy(terms, after)
    if energy_after > budget:  # cannot happen: masks keep the projected support
        raise AssertionError(f"energy {energy_after} mJ after pruning exceeds the budget {budget} mJ")
    report = EnergyPruneReport(
        device=energy_model.device, budget_mj=budget, energy_before_mj=energy_before, energy_after_mj=energy_after,
        minimum_mj=hook.minimum_mj,
        layers=[EnergyLayerReport(t.name, t.numel, b, a, t.cost_mj, t.energy(b), t.energy(a), t.prunable)
                for t, b, a in zip(terms, before, after)],
        projections=hook.projections, relative_gap_bound=hook.worst_gap, steps=steps, recovery_steps=recovery_steps,
        accuracy=None if eval_data is None else evaluate_accuracy(model, eval_data, progress=False))
    return model, report
