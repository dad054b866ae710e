"""Training-time pruning as hooks of :func:`~devicefit.compression.finetune`: ADMM and reweighted group lasso.

**ADMM** (:class:`AdmmPruning`; Zhang et al., arXiv 1804.03294; PatDNN, arXiv 2001.00138): pruning is the
constrained problem ``min f(W) s.t. W in S`` (S: the weights a mask of the given kind allows), split with an
auxiliary ``Z in S`` and a scaled dual ``U``. Training minimises the augmented loss
``f(W) + rho/2 * ||W - Z + U||^2`` by SGD; every ``update_every`` steps (by default once per epoch, as the
reference code does) ``Z = proj_S(W + U)`` (Euclidean projection: keep what the mask of ``W + U`` keeps) and
``U = U + W - Z``. Initially ``Z = proj_S(W)``, ``U = 0``. The weights are drawn towards S while the task loss
keeps them accurate; :meth:`AdmmPruning.prune` then applies the hard mask (a ``torch.nn.utils.prune`` mask, so
masked fine-tuning keeps it) and the usual recipe fine-tunes after. The projections are the mask functions of
:mod:`.masks`: unstructured magnitude (``Unstructured``), block-based rows/columns (``Block``, also LSTM/GRU
matrices) and PatDNN patterns with connectivity (``Pattern``). For patterns, as PatDNN, the library of
``patterns`` shapes is chosen once from the weights at the start, and pattern and connectivity are two
constraints with their own ``Z`` and ``U`` (pattern: each kernel to its best library pattern; connectivity:
the ``connectivity`` fraction of kernels with the smallest norm removed); the final mask is both.

**Reweighted group lasso** (:class:`ReweightedGroupLasso`; BLK-REW, arXiv 2001.08357): the groups are the units
of block-based pruning (in every block of the weight's GEMM matrix, each column, or each row, segment), the
penalty is ``lam * sum_g alpha_g * ||W_g||^2`` with ``alpha_g = 1 / (||W_g||^2 + eps)`` held fixed between
reweightings and recomputed from the current weights every ``reweight_every`` epochs: a group that shrinks
gets a larger weight and is pushed to zero, a large group is barely penalised (the effect of an l0-like
penalty with the gradients of a quadratic one). :meth:`ReweightedGroupLasso.prune` then removes, in every
block, the ``sparsity`` fraction of groups with the smallest norm (:func:`~.masks.block_mask`). The default
``lam`` and ``eps`` are ours (the paper's text we could read does not fix them): ``eps`` = 1e-3 is small
against a typical group's squared norm, ``lam`` = 1e-4 makes the penalty, about ``lam`` per group after a
reweighting, of the order of the task loss for a CIFAR ResNet.

Both keep their state (``Z``, ``U``, the pattern library, the ``alpha``\\ s, counters) in ``state_dict`` so that
a resumed :func:`finetune` continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InputError
from .analysis import resolve_layer
from .masks import BlockPruning, PatternPruning, block_mask, pattern_library, pattern_mask, unstructured_mask
from .policy import Block, Pattern, Unstructured
from .train import TrainingHook

__all__ = ["AdmmPruning", "ReweightedGroupLasso", "group_norms2"]

RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
_ALL_ONES = torch.ones(1, 3, 3)  # a "library" that keeps every weight: pattern_mask then prunes connectivity only


@dataclass(frozen=True)
class WeightTarget:
    key: str  # the policy-style layer name: "conv1", or "rnn.weight_hh_l0" for an RNN matrix
    module: nn.Module
    param: str  # "weight", or the RNN matrix's name


def weight_targets(model: nn.Module, layers: Sequence[str], what: str) -> list[WeightTarget]:
    """Each weight tensor the hook prunes: Conv/Linear weights, LSTM/GRU matrices (all of a named RNN)."""
    out: list[WeightTarget] = []
    for name in layers:
        module, param = resolve_layer(model, name)
        if param is not None:
            out.append(WeightTarget(name, module, param))
        elif isinstance(module, RNN_TYPES):
            out += [WeightTarget(f"{name}.{p}", module, p) for p, _ in module.named_parameters(recurse=False)
                    if p.startswith(("weight_ih_", "weight_hh_"))]
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out.append(WeightTarget(name, module, "weight"))
        else:
            raise InputError(f"{what}: layer {name!r} is a {type(module).__name__}; expected Conv, Linear or "
                             "LSTM/GRU layers")
    for t in out:
        if hasattr(t.module, f"{t.param}_mask"):
            raise InputError(f"{what}: {t.key!r} is already masked; train before masking, or finalize the mask")
        if not isinstance(getattr(t.module, t.param), nn.Parameter):
            raise InputError(f"{what}: {t.key!r}.{t.param} is not a trainable parameter")
    keys = [t.key for t in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"{what}: a layer is named twice (directly and through its RNN): {sorted(keys)}")
    return out


def _check_layers(layers: Any, what: str) -> list[str]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers or \
            not all(isinstance(n, str) and n for n in layers):
        raise InputError(f"{what} layers must be a non-empty list of layer names, got {layers!r}")
    return list(layers)


def positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _matrix(w: torch.Tensor) -> torch.Tensor:
    """The GEMM matrix (out, in * kernel) of a weight."""
    return w.reshape(w.shape[0], -1)


def check_state_tensor(value: Any, like: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        raise InputError(f"state {what} must be a tensor of shape {tuple(like.shape)}, got "
                         f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    return value.detach().to(dtype=like.dtype, device=like.device).clone()


class AdmmPruning(TrainingHook):
    """ADMM pruning of ``layers`` (policy layer names) towards the masks of ``projection`` (see the module
    docstring). ``update_every``: steps between Z/U updates; None updates after every epoch."""

    def __init__(self, layers: Sequence[str], projection: Unstructured | Block | Pattern, rho: float = 1e-3,
                 update_every: int | None = None) -> None:
        self.layers = _check_layers(layers, "AdmmPruning")
        if not isinstance(projection, (Unstructured, Block, Pattern)):
            raise InputError(f"AdmmPruning projection must be an Unstructured, Block or Pattern action, got "
                             f"{type(projection).__name__}")
        self.projection = projection
        self.rho = positive_number(rho, "AdmmPruning rho")
        if update_every is not None and (isinstance(update_every, bool) or not isinstance(update_every, int)
                                         or update_every < 1):
            raise InputError(f"AdmmPruning update_every must be a positive integer (steps) or None (every epoch), "
                             f"got {update_every!r}")
        self.update_every = update_every
        self.updates = 0  # Z/U updates done
        self.pruned = False
        self._targets: list[WeightTarget] = []
        self._z: dict[str, dict[str, torch.Tensor]] = {}
        self._u: dict[str, dict[str, torch.Tensor]] = {}
        self._library: dict[str, torch.Tensor] = {}

    # --- projections -----------------------------------------------------------------------------------

    def _constraints(self, key: str) -> dict[str, Any]:
        """Constraint name -> mask function of one weight tensor."""
        p = self.projection
        if isinstance(p, Unstructured):
            return {"unstructured": lambda w: unstructured_mask(w, p.sparsity)}
        if isinstance(p, Block):
            return {"block": lambda w: block_mask(_matrix(w), p.block, p.sparsity, p.prune).reshape(w.shape)}
        library = self._library[key]
        found = {"pattern": lambda w: pattern_mask(w, library, 0.0)}
        if p.connectivity > 0:
            found["connectivity"] = lambda w: pattern_mask(w, _ALL_ONES, p.connectivity)
        return found

    def final_mask(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        """The hard mask :meth:`prune` applies to ``weight`` (all constraints at once)."""
        p = self.projection
        if isinstance(p, Pattern):
            return pattern_mask(weight, self._library[key], p.connectivity)
        (mask_of,) = self._constraints(key).values()
        return mask_of(weight)

    # --- the hook ---------------------------------------------------------------------------------------

    def on_start(self, model: nn.Module) -> None:
        if self.pruned:
            return  # masked fine-tuning after prune(): nothing left to do
        self._targets = weight_targets(model, self.layers, "AdmmPruning")
        if isinstance(self.projection, Pattern):
            for t in self._targets:
                w = getattr(t.module, t.param)
                if not isinstance(t.module, nn.Conv2d) or tuple(w.shape[2:]) != (3, 3):
                    raise InputError(f"AdmmPruning with Pattern needs 3x3 convolutions; {t.key!r} is a "
                                     f"{type(t.module).__name__} of weight shape {tuple(w.shape)}")
        if self._z and set(self._z) == {t.key for t in self._targets}:
            return  # continuing (a second finetune call with the same hook, or state already loaded)
        with torch.no_grad():
            for t in self._targets:
                w = getattr(t.module, t.param).detach()
                if isinstance(self.projection, Pattern):
                    self._library[t.key] = pattern_library(w, self.projection.patterns)
                self._z[t.key] = {c: w * mask_of(w) for c, mask_of in self._constraints(t.key).items()}
                self._u[t.key] = {c: torch.zeros_like(w) for c in self._z[t.key]}

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """``rho / 2 * sum ||W - Z + U||^2`` over the layers and constraints."""
        if self.pruned or not self._targets:
            return None
        terms = []
        for t in self._targets:
            w = getattr(t.module, t.param)
            for c, z in self._z[t.key].items():
                terms.append((w - z + self._u[t.key][c]).pow(2).sum())
        return 0.5 * self.rho * torch.stack(terms).sum()

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.update_every is not None and step % self.update_every == 0:
            self.update()

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if self.update_every is None:
            self.update()

    def update(self) -> None:
        """One ADMM update of every layer: ``Z = proj(W + U)``, then ``U = U + W - Z``."""
        if self.pruned or not self._targets:
            return
        with torch.no_grad():
            for t in self._targets:
                w = getattr(t.module, t.param).detach()
                for c, mask_of in self._constraints(t.key).items():
                    v = w + self._u[t.key][c]
                    z = v * mask_of(v)
                    self._z[t.key][c] = z
                    self._u[t.key][c] = self._u[t.key][c] + w - z
        self.updates += 1

    def constraint_distance(self, model: nn.Module) -> dict[str, float]:
        """Per layer, ``||W - W * mask(W)|| / ||W||``: how far the weights are from the constraint set."""
        targets = self._targets or weight_targets(model, self.layers, "AdmmPruning")
        out = {}
        with torch.no_grad():
            for t in targets:
                w = getattr(t.module, t.param).detach()
                if isinstance(self.projection, Pattern) and t.key not in self._library:
                    raise InputError("constraint_distance of a Pattern projection needs the library: run on_start")
                removed = w * (1 - self.final_mask(t.key, w))
                out[t.key] = float(removed.norm() / w.norm().clamp_min(1e-12))
        return out

    def prune(self, model: nn.Module) -> dict[str, float]:
        """Apply the hard masks (``torch.nn.utils.prune``, kept through later fine-tuning) to ``model``; the
        fraction of weights kept per layer. The hook does nothing afterwards."""
        if self.pruned:
            raise InputError("AdmmPruning.prune was already applied")
        targets = weight_targets(model, self.layers, "AdmmPruning")
        if isinstance(self.projection, Pattern) and any(t.key not in self._library for t in targets):
            raise InputError("AdmmPruning.prune with a Pattern projection needs the library chosen at on_start: "
                             "train with the hook first (finetune(..., hooks=[hook]))")
        p = self.projection
        kept = {}
        for t in targets:
            if isinstance(p, Block):
                BlockPruning.apply(t.module, t.param, sparsity=p.sparsity, block=p.block, prune=p.prune)
            elif isinstance(p, Pattern):
                PatternPruning.apply(t.module, t.param, library=self._library[t.key], connectivity=p.connectivity)
            else:
                torch_prune.custom_from_mask(t.module, t.param, unstructured_mask(getattr(t.module, t.param),
                                                                                  p.sparsity))
            mask = getattr(t.module, f"{t.param}_mask")
            kept[t.key] = float(mask.mean())
        self.pruned = True
        return kept

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "updates": self.updates, "pruned": self.pruned,
                "z": {k: dict(v) for k, v in self._z.items()}, "u": {k: dict(v) for k, v in self._u.items()},
                "library": dict(self._library)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            z, u, library = dict(state["z"]), dict(state["u"]), dict(state["library"])
            rho, updates, pruned = float(state["rho"]), int(state["updates"]), bool(state["pruned"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"an AdmmPruning state needs z, u, library, rho, updates and pruned: {exc}") from None
        if self._targets:
            keys = {t.key for t in self._targets}
            if set(z) != keys or set(u) != keys:
                raise InputError(f"the AdmmPruning state is for layers {sorted(z)}, this hook prunes {sorted(keys)}")
            for t in self._targets:
                w = getattr(t.module, t.param)
                if set(z[t.key]) != set(self._constraints_names()) or set(u[t.key]) != set(z[t.key]):
                    raise InputError(f"the AdmmPruning state of {t.key!r} has constraints {sorted(z[t.key])}, "
                                     f"expected {sorted(self._constraints_names())}")
                z[t.key] = {c: check_state_tensor(v, w, f"z[{t.key!r}][{c!r}]") for c, v in z[t.key].items()}
                u[t.key] = {c: check_state_tensor(v, w, f"u[{t.key!r}][{c!r}]") for c, v in u[t.key].items()}
        self._z, self._u, self._library = z, u, {k: v.clone() for k, v in library.items()}
        self.rho, self.updates, self.pruned = rho, updates, pruned

    def _constraints_names(self) -> list[str]:
        p = self.projection
        if isinstance(p, Pattern):
            return ["pattern", "connectivity"] if p.connectivity > 0 else ["pattern"]
        return ["unstructured" if isinstance(p, Unstructured) else "block"]


def group_norms2(weight: torch.Tensor, block: tuple[int, int], prune: str) -> torch.Tensor:
    """Squared L2 norms of the groups of block-based pruning of ``weight`` (as its GEMM matrix): for every block
    of ``block = (rows, cols)``, one per column segment (``prune="columns"``) or row segment (``"rows"``);
    shape (row blocks, column blocks, units per block). Differentiable; padding units past the edges are 0."""
    w = _matrix(weight)
    rows, cols = w.shape
    br, bc = block
    nr, nc = math.ceil(rows / br), math.ceil(cols / bc)
    tiles = F.pad(w, (0, nc * bc - cols, 0, nr * br - rows)).reshape(nr, br, nc, bc).permute(0, 2, 1, 3)
    return tiles.pow(2).sum(2) if prune == "columns" else tiles.pow(2).sum(3)


class ReweightedGroupLasso(TrainingHook):
    """Reweighted group-lasso regularisation of block-based pruning (BLK-REW) on ``layers``, with the groups and
    target sparsity of ``block`` (see the module docstring); ``alpha`` recomputed every ``reweight_every``
    epochs."""

    def __init__(self, layers: Sequence[str], block: Block, lam: float = 1e-4, eps: float = 1e-3,
                 reweight_every: int = 1) -> None:
        self.layers = _check_layers(layers, "ReweightedGroupLasso")
        if not isinstance(block, Block):
            raise InputError(f"ReweightedGroupLasso groups come from a Block action (sparsity, block, prune), got "
                             f"{type(block).__name__}")
        self.block = block
        self.lam = positive_number(lam, "ReweightedGroupLasso lam")
        self.eps = positive_number(eps, "ReweightedGroupLasso eps")
        if isinstance(reweight_every, bool) or not isinstance(reweight_every, int) or reweight_every < 1:
            raise InputError(f"ReweightedGroupLasso reweight_every must be a positive integer (epochs), got "
                             f"{reweight_every!r}")
        self.reweight_every = reweight_every
        self.reweights = 0
        self.pruned = False
        self._targets: list[WeightTarget] = []
        self.alpha: dict[str, torch.Tensor] = {}

    def on_start(self, model: nn.Module) -> None:
        if self.pruned:
            return
        self._targets = weight_targets(model, self.layers, "ReweightedGroupLasso")
        if self.alpha and set(self.alpha) == {t.key for t in self._targets}:
            return
        self.reweight()

    def reweight(self) -> None:
        """``alpha_g = 1 / (||W_g||^2 + eps)`` from the current weights."""
        with torch.no_grad():
            for t in self._targets:
                norms2 = group_norms2(getattr(t.module, t.param).detach(), self.block.block, self.block.prune)
                self.alpha[t.key] = 1.0 / (norms2 + self.eps)
        self.reweights += 1

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``lam * sum_g alpha_g * ||W_g||^2`` over the layers (alpha held fixed)."""
        targets = self._targets or weight_targets(model, self.layers, "ReweightedGroupLasso")
        terms = [(self.alpha[t.key] * group_norms2(getattr(t.module, t.param), self.block.block,
                                                   self.block.prune)).sum() for t in targets]
        return self.lam * torch.stack(terms).sum()

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if self.pruned or not self._targets:
            return None
        return self.penalty(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if not self.pruned and (epoch + 1) % self.reweight_every == 0:
            self.reweight()

    def prune(self, model: nn.Module) -> dict[str, float]:
        """In every block, mask the ``block.sparsity`` fraction of groups with the smallest norm (a
        ``torch.nn.utils.prune`` mask); the fraction of weights kept per layer."""
        if self.pruned:
            raise InputError("ReweightedGroupLasso.prune was already applied")
        b = self.block
        kept = {}
        for t in weight_targets(model, self.layers, "ReweightedGroupLasso"):
            BlockPruning.apply(t.module, t.param, sparsity=b.sparsity, block=b.block, prune=b.prune)
            kept[t.key] = float(getattr(t.module, f"{t.param}_mask").mean())
        self.pruned = True
        return kept

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": dict(self.alpha), "reweights": self.reweights, "pruned": self.pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            alpha, reweights, pruned = dict(state["alpha"]), int(state["reweights"]), bool(state["pruned"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"a ReweightedGroupLasso state needs alpha, reweights and pruned: {exc}") from None
        if self._targets:
            keys = {t.key for t in self._targets}
            if set(alpha) != keys:
                raise InputError(f"the ReweightedGroupLasso state is for layers {sorted(alpha)}, this hook "
                                 f"regularises {sorted(keys)}")
            for t in self._targets:
                like = group_norms2(getattr(t.module, t.param).detach(), self.block.block, self.block.prune)
                alpha[t.key] = check_state_tensor(alpha[t.key], like, f"alpha[{t.key!r}]")
        self.alpha, self.reweights, self.pruned = alpha, reweights, pruned
