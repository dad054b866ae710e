"""Omni-sparsity (Shangguan et al., "Omni-sparsity DNN: Fast Sparsity Optimization for On-Device Streaming E2E
ASR via Supernet", arXiv 2110.08352): train ONE set of weights so that its magnitude-pruned sub-models at many
sparsity levels are all accurate without retraining, then pick, per budget, the best sub-model.

- **Supernet**: the sub-models are nested unstructured magnitude masks. Per layer, the weights are ranked by
  magnitude once per mask refresh; level ``s`` keeps the ``1 - s`` fraction with the largest magnitude
  (``round(s * n)`` removed, as :func:`~.masks.unstructured_mask`), so a sparser level's kept set is a subset of
  every denser level's (nested by construction, ties included). A sub-model is a choice of level per layer.
- **Training** (:class:`OmniSparsity`, a :class:`~.train.TrainingHook` of :func:`~.train.finetune`): forward
  pre-hooks on the pruned Conv/Linear layers make the layer see ``W * mask`` for the current sub-model (so the
  kept weights get their gradient straight through and the masked ones none). Each step follows the sandwich
  rule of supernet training (Yu et al., slimmable / BigNAS, which the paper builds on): the densest sub-model
  (every layer at the lowest level) is trained on the labels by the loop's own forward; the sparsest sub-model
  (every layer at the highest level) and one random sub-model (an independent level per layer, uniform over
  ``levels``, drawn from ``(seed, step)``) are trained through ``extra_loss`` by in-place distillation from the
  densest one's detached output (the hook does not see the labels: KL at temperature 1, weight
  ``distill_weight`` each). Masks are recomputed from the current magnitudes every ``update_every`` steps.
- **After training**: :func:`sub_model` returns a copy of the model with ``torch.nn.utils.prune`` masks at given
  per-layer (or uniform) levels, no retraining; :func:`pick_sub_models` evaluates candidates (every uniform
  level, plus per-layer combinations: all of them when there are at most ``max_candidates``, else a seeded random
  sample of that many) on a held-out slice and returns, for each budget of non-zero parameters, the most
  accurate candidate within it.

Faithful: weight-shared nested magnitude masks, per-layer sparsity configurations sampled during training, one
training run for every level, selection of sub-models without retraining. Simplified: the paper trains a
streaming Emformer/RNN-T ASR model with a gradual sparsity schedule and searches per-layer configurations with
an evolutionary search on WER; here the levels are fixed from the first step, the search is exhaustive or random
sampling on top-1 accuracy, the sandwich rule with in-place distillation is our reading of the supernet recipe
(we could not check the paper's exact sampling), and only Conv/Linear weights are masked (not LSTM/GRU).

The hook's state (the magnitude ranks of the last refresh, the step, the settings) is plain numbers, lists and
tensors, so a resumed :func:`~.train.finetune` continues exactly.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InputError
from ..models.evaluate import DataSource, evaluate_accuracy
from .admm import WeightTarget, check_state_tensor, weight_targets
from .train import TrainingHook

__all__ = ["DEFAULT_LEVELS", "OmniSparsity", "SubModelChoice", "kept_parameters", "nested_masks", "pick_sub_models",
           "sub_model"]

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)
_MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
Levels = float | Mapping[str, float]


# --- nested masks ----------------------------------------------------------------------------------------


def magnitude_rank(weight: torch.Tensor) -> torch.Tensor:
    """Each entry's position (0 = smallest magnitude) in a stable sort of ``|weight|``, shaped as the weight."""
    order = torch.sort(weight.detach().abs().flatten(), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank.view(weight.shape)


def _removed(level: float, n: int) -> int:
    return round(level * n)  # as unstructured_mask and torch's prune


def mask_from_rank(rank: torch.Tensor, level: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0/1 mask of sparsity ``level``: the ``round(level * n)`` smallest-magnitude entries removed."""
    return (rank >= _removed(level, rank.numel())).to(dtype)


def nested_masks(weight: torch.Tensor, levels: Sequence[float]) -> dict[float, torch.Tensor]:
    """The masks of ``weight`` at every level, from one ranking: each sparser mask is inside each denser one."""
    rank = magnitude_rank(weight)
    return {float(s): mask_from_rank(rank, s, weight.dtype) for s in _check_levels(levels)}


def _check_level(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise InputError(f"{what} must be a sparsity in [0, 1), got {value!r}")
    return float(value)


def _check_levels(levels: Any) -> list[float]:
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
        raise InputError(f"levels must be a non-empty list of sparsities in [0, 1), got {levels!r}")
    out = sorted({_check_level(s, "each level") for s in levels})
    return out


def _targets(model: nn.Module, layers: Sequence[str] | None, what: str) -> list[WeightTarget]:
    """The Conv/Linear weights to mask: ``layers`` by name, or every Conv/Linear layer of the model."""
    if layers is None:
        layers = [n for n, m in model.named_modules() if isinstance(m, _MASKABLE)]
        if not layers:
            raise InputError(f"{what}: the model has no Conv or Linear layer to mask")
    elif isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"{what} layers must be a non-empty list of layer names or None (all Conv/Linear), "
                         f"got {layers!r}")
    found = weight_targets(model, list(layers), what)
    for t in found:
        if not isinstance(t.module, _MASKABLE) or t.param != "weight":
            raise InputError(f"{what}: {t.key!r} is a {type(t.module).__name__}; only Conv and Linear weights "
                             "are supported")
    return found


def _per_layer(levels: Any, keys: Sequence[str], what: str) -> dict[str, float]:
    """A uniform level or a mapping layer -> level, as a level for each of ``keys``."""
    if isinstance(levels, Mapping):
        if set(levels) != set(keys):
            raise InputError(f"{what} levels must name exactly the layers {sorted(keys)}, got {sorted(levels)}")
        return {k: _check_level(levels[k], f"{what} level of {k!r}") for k in keys}
    level = _check_level(levels, f"{what} level")
    return dict.fromkeys(keys, level)


# --- the training hook ------------------------------------------------------------------------------------


class _MaskPre:
    """Forward pre-hook: the layer's ``weight`` attribute becomes ``weight * mask`` for this forward."""

    def __init__(self, owner: OmniSparsity, key: str) -> None:
        self.owner, self.key = owner, key

    def __call__(self, module: nn.Module, args: Any) -> None:
        mask = self.owner.current_mask(self.key)
        if mask is not None:
            object.__setattr__(module, "weight", module._parameters["weight"] * mask)


class _MaskPost:
    """Forward hook (always called): the parameter is the layer's ``weight`` again."""

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        module.__dict__.pop("weight", None)


class _Capture:
    """Forward hooks of the whole model: the input and the detached logits of the step's own forward."""

    def __init__(self, owner: OmniSparsity) -> None:
        self.owner = owner

    def pre(self, module: nn.Module, args: Any) -> None:
        if not self.owner.inner:
            self.owner.batch = args

    def post(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self.owner.inner and isinstance(output, torch.Tensor):
            self.owner.teacher = output.detach()


class OmniSparsity(TrainingHook):
    """Omni-sparsity supernet training of ``layers`` (Conv/Linear names; None: all of them) at ``levels`` (see
    the module docstring). ``update_every``: steps between mask refreshes from the current magnitudes;
    ``distill_weight``: weight of each extra sub-model's distillation loss; ``seed``: the sub-model draws.
    :func:`finetune` takes the hooks off when it ends (``on_end``); :meth:`remove` does it by hand."""

    def __init__(self, layers: Sequence[str] | None = None, levels: Sequence[float] = DEFAULT_LEVELS, *,
                 update_every: int = 10, distill_weight: float = 1.0, seed: int = 0) -> None:
        self.layers = None if layers is None else list(layers)
        self.levels = _check_levels(levels)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise InputError(f"OmniSparsity update_every must be a positive integer (steps), got {update_every!r}")
        if isinstance(distill_weight, bool) or not isinstance(distill_weight, (int, float)) or \
                not math.isfinite(distill_weight) or distill_weight < 0:
            raise InputError(f"OmniSparsity distill_weight must be a non-negative number, got {distill_weight!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"OmniSparsity seed must be a non-negative integer, got {seed!r}")
        self.update_every, self.distill_weight, self.seed = update_every, float(distill_weight), seed
        self.step = 0  # optimiser steps done
        self.refreshes = 0
        self.ranks: dict[str, torch.Tensor] = {}
        self.config: dict[str, float] = {}  # the sub-model the layers see now
        self.inner = False  # inside the hook's own extra forwards
        self.batch: Any = None
        self.teacher: torch.Tensor | None = None
        self._targets: list[WeightTarget] = []
        self._handles: list[Any] = []

    # --- sub-models ---------------------------------------------------------------------------------------

    def uniform(self, level: float) -> dict[str, float]:
        return {t.key: level for t in self._targets}

    def sample(self, step: int) -> dict[str, float]:
        """The random sub-model of step ``step`` (0-based): a level per layer, uniform, from ``(seed, step)``."""
        rng = np.random.default_rng([self.seed, step])
        return {t.key: self.levels[int(rng.integers(len(self.levels)))] for t in self._targets}

    def current_mask(self, key: str) -> torch.Tensor | None:
        level = self.config.get(key, 0.0)
        if level == 0.0:
            return None
        return mask_from_rank(self.ranks[key], level)

    def refresh(self) -> None:
        """Re-rank every layer's weights by their current magnitude (the nested masks follow)."""
        with torch.no_grad():
            self.ranks = {t.key: magnitude_rank(t.module.weight) for t in self._targets}
        self.refreshes += 1

    # --- the hook -----------------------------------------------------------------------------------------

    def on_start(self, model: nn.Module) -> None:
        self.remove()
        self._targets = _targets(model, self.layers, "OmniSparsity")
        keys = {t.key for t in self._targets}
        if set(self.ranks) != keys:
            self.refresh()
        for t in self._targets:
            self._handles.append(t.module.register_forward_pre_hook(_MaskPre(self, t.key)))
            self._handles.append(t.module.register_forward_hook(_MaskPost(), always_call=True))
        capture = _Capture(self)
        self._handles.append(model.register_forward_pre_hook(capture.pre))
        self._handles.append(model.register_forward_hook(capture.post))
        self.config = self.uniform(self.levels[0])

    def on_end(self, model: nn.Module) -> None:
        """:func:`finetune` is done (or failed): the model is the plain dense model again."""
        self.remove()

    def remove(self) -> None:
        """Take the hook's forward hooks off the model: it is the plain dense model again."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.config, self.batch, self.teacher = {}, None, None

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """The sandwich's other sub-models (sparsest, one random) distilled from the densest one's output."""
        if not self._handles or self.batch is None or self.teacher is None or self.distill_weight == 0:
            return None
        target = F.log_softmax(self.teacher, 1)
        terms = []
        self.inner = True
        try:
            for config in (self.uniform(self.levels[-1]), self.sample(self.step)):
                self.config = config
                out = model(*self.batch)
                terms.append(F.kl_div(F.log_softmax(out, 1), target, reduction="batchmean", log_target=True))
        finally:
            self.inner = False
            self.config = self.uniform(self.levels[0])
            self.batch, self.teacher = None, None
        return self.distill_weight * torch.stack(terms).sum()

    def after_step(self, model: nn.Module, step: int) -> None:
        self.step = step
        if step % self.update_every == 0:
            self.refresh()

    def state_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "update_every": self.update_every, "seed": self.seed,
                "distill_weight": self.distill_weight, "step": self.step, "refreshes": self.refreshes,
                "ranks": dict(self.ranks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            levels, ranks = [float(s) for s in state["levels"]], dict(state["ranks"])
            step, refreshes = int(state["step"]), int(state["refreshes"])
            settings = (int(state["update_every"]), int(state["seed"]), float(state["distill_weight"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"an OmniSparsity state needs levels, ranks, step, refreshes, update_every, seed and "
                             f"distill_weight: {exc}") from None
        if levels != self.levels or settings != (self.update_every, self.seed, self.distill_weight):
            raise InputError(f"the OmniSparsity state was made with levels {levels}, (update_every, seed, "
                             f"distill_weight) {settings}; this hook has {self.levels}, "
                             f"{(self.update_every, self.seed, self.distill_weight)}")
        if self._targets:
            keys = {t.key for t in self._targets}
            if set(ranks) != keys:
                raise InputError(f"the OmniSparsity state is for layers {sorted(ranks)}, this hook masks "
                                 f"{sorted(keys)}")
            for t in self._targets:
                ranks[t.key] = check_state_tensor(ranks[t.key], self.ranks[t.key], f"ranks[{t.key!r}]")
        self.ranks, self.step, self.refreshes = ranks, step, refreshes


# --- sub-models after training ----------------------------------------------------------------------------


@contextmanager
def _hooks_off(model: nn.Module) -> Iterator[None]:
    """Temporarily take OmniSparsity's forward hooks off ``model`` (so that a deep copy does not carry them)."""
    taken: list[tuple[dict[int, Any], int, Any]] = []
    for m in model.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for hid, fn in list(hooks.items()):
                owner = getattr(fn, "__self__", None)
                if isinstance(fn, (_MaskPre, _MaskPost)) or isinstance(owner, _Capture):
                    taken.append((hooks, hid, fn))
                    del hooks[hid]
    try:
        yield
    finally:
        for hooks, hid, fn in taken:
            hooks[hid] = fn


def _clean_copy(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with _hooks_off(model):
        return copy.deepcopy(model)


def kept_parameters(model: nn.Module, levels: Levels, layers: Sequence[str] | None = None) -> int:
    """The parameters of ``model`` that a sub-model at ``levels`` keeps (all parameters, less the masked
    weights; an exactly-zero kept weight is counted as kept)."""
    targets = _targets(model, layers, "kept_parameters")
    per_layer = _per_layer(levels, [t.key for t in targets], "kept_parameters")
    total = sum(p.numel() for p in model.parameters())
    return total - sum(_removed(per_layer[t.key], t.module.weight.numel()) for t in targets)


def sub_model(model: nn.Module, levels: Levels, layers: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` with ``torch.nn.utils.prune`` masks at ``levels`` (one sparsity for every layer, or
    ``{layer: sparsity}``), the nested magnitude masks of the current weights, in eval mode; no retraining."""
    copied = _clean_copy(model)
    targets = _targets(copied, layers, "sub_model")
    per_layer = _per_layer(levels, [t.key for t in targets], "sub_model")
    for t in targets:
        w = t.module.weight
        torch_prune.custom_from_mask(t.module, "weight", mask_from_rank(magnitude_rank(w), per_layer[t.key],
                                                                        w.dtype))
    return copied.eval()


@dataclass(frozen=True)
class SubModelChoice:
    """A sub-model picked for a budget: its per-layer levels, parameters kept, and held-out top-1 (%)."""

    budget: int
    levels: dict[str, float]
    parameters: int
    accuracy: float


def _candidates(keys: list[str], levels: list[float], max_candidates: int, seed: int) -> list[dict[str, float]]:
    uniform = [dict.fromkeys(keys, s) for s in levels]
    if len(keys) == 1:
        return uniform
    count = len(levels) ** len(keys)
    if count <= max_candidates:
        combos = [dict(zip(keys, c)) for c in itertools.product(levels, repeat=len(keys))]
        return uniform + [c for c in combos if len(set(c.values())) > 1]
    rng = np.random.default_rng(seed)
    drawn = [dict(zip(keys, (levels[i] for i in rng.integers(len(levels), size=len(keys)))))
             for _ in range(max_candidates)]
    seen = {tuple(c.values()) for c in uniform}
    out = list(uniform)
    for c in drawn:
        if tuple(c.values()) not in seen:
            seen.add(tuple(c.values()))
            out.append(c)
    return out


def _check_budgets(budgets: Any) -> list[int]:
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or not budgets or any(
            isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in budgets):
        raise InputError(f"budgets must be a non-empty list of positive integers (non-zero parameters), "
                         f"got {budgets!r}")
    return [int(b) for b in budgets]


def pick_sub_models(model: nn.Module, levels: Sequence[float], data: DataSource, budgets: Sequence[int], *,
                    layers: Sequence[str] | None = None, limit: int | None = None, max_candidates: int = 200,
                    seed: int = 0) -> dict[int, SubModelChoice]:
    """For each budget (non-zero parameters), the most accurate sub-model within it, top-1 on ``data`` (its
    fixed ``limit`` slice): candidates are every uniform level and per-layer combinations of ``levels`` (all when
    at most ``max_candidates``, else that many drawn with ``seed``). Ties go to the fewer parameters. A budget
    below the sparsest candidate's size is refused."""
    level_list = _check_levels(levels)
    wanted = _check_budgets(budgets)
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
        raise InputError(f"max_candidates must be a positive integer, got {max_candidates!r}")
    work = _clean_copy(model)
    targets = _targets(work, layers, "pick_sub_models")
    keys = [t.key for t in targets]
    candidates = _candidates(keys, level_list, max_candidates, seed)
    sizes = [kept_parameters(work, c, keys) for c in candidates]
    smallest = min(sizes)
    too_small = [b for b in wanted if b < smallest]
    if too_small:
        raise InputError(f"budget {too_small[0]:,} non-zero parameters is below the smallest sub-model "
                         f"({smallest:,} at sparsity {level_list[-1]} in every layer); give budgets >= {smallest:,}")
    if not isinstance(data, DataSource):
        raise InputError(f"data must be a DataSource (LabelledImages, TensorData, ...), got {type(data).__name__}")
    part = data.subset(limit)
    ranks = {t.key: magnitude_rank(t.module.weight) for t in targets}
    clean = {t.key: t.module.weight.detach().clone() for t in targets}
    scores = []
    with torch.no_grad():
        for config in candidates:
            for t in targets:
                t.module.weight.copy_(clean[t.key] * mask_from_rank(ranks[t.key], config[t.key], clean[t.key].dtype))
            scores.append(evaluate_accuracy(work, part))
    picked = {}
    for b in wanted:
        best = max((i for i, n in enumerate(sizes) if n <= b), key=lambda i: (scores[i], -sizes[i]))
        picked[b] = SubModelChoice(b, candidates[best], sizes[best], scores[best])
    return picked
