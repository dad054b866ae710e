"""Joint pruning and quantization to a target model size (Yang et al., "Automatic Neural Network Compression by
Sparsity-Quantization Joint Learning: A Constrained Optimization-based Approach", CVPR 2020, arXiv 1910.05897).

**Problem.** ``min loss(W)  s.t.  size(W) <= budget`` (bits). As in the paper and its code, the size is that of the
stored non-zero weights of the compressed layers: ``size = sum over layers of nnz_l * b_l``, each non-zero weight
of layer ``l`` a ``b_l``-bit index into the layer's codebook of ``2**b_l`` non-zero levels (``b_l`` in
``bit_choices``, 1..8 by default); pruned weights are zeros, outside the codebook. **Not counted**, as in the
paper: the positions of the non-zeros (the sparse index), the codebooks themselves (``2**b_l`` float32 levels per
layer: reported apart, and counted in the constraint with ``count_codebook=True``, the switch the authors' code
calls ``include_dict``), and the biases, which stay float32. The compression ratio is ``32 * (weights of the
compressed layers) / size``, the paper's ratio of the weights data. The user gives the budget (``target_bits``) or
the ratio (``target_ratio``); the per-layer sparsities and bit widths are outputs, not settings.

**ADMM phase** (:class:`JointSparseQuantization` as a hook of :func:`~.train.finetune`, as the paper's
``train.py``): the weights W are kept sparse by projection and tied by ADMM to a quantized duplicate V, with a
scaled dual U:

- every step, SGD on ``loss(W) + rho/2 * ||W - V + U||^2`` (the penalty's gradient, as :class:`~.admm.AdmmPruning`
  does, where the authors' code takes a proximal step after SGD);
- every update (after each epoch by default, the code's default; or every ``update_every`` steps), three exact
  projections (:mod:`.knapsack`; the paper solves the knapsacks greedily):

  1. pruning: W keeps the weights an exact 0-1 knapsack keeps (value ``w**2``, cost the bit width ``b_l`` of its
     layer, capacity the budget); the others are set to zero in place;
  2. quantization: for every layer and candidate width ``b``, a k-means codebook of ``2**b`` levels plus the fixed
     level 0 is fitted to ``W + U`` (the paper's quantizer: Lloyd's algorithm from a uniform grid between the
     extreme values, at most 100 iterations); the widths are the multiple-choice knapsack's choice (value minus
     the squared error, cost ``nnz_l * b`` with ``nnz_l`` from step 1); V is ``W + U`` on those codebooks;
  3. ``U = U + W - V``.

  The first update comes after the first step (the paper's code projects a pretrained model after its first
  batch). It needs bit widths for the pruning: the paper takes one width as an input (3 bits for LeNet-5 at
  2,000x); here it is the uniform width whose projection (pruning at that width, then codebooks of that width on
  the kept weights) is closest to the weights, unless ``initial_bits`` is given. The multiple-choice knapsack can
  only trade bits between layers: the pruning fills the budget at the current widths, so from every layer at the
  smallest width no layer can be raised and the widths stay there. On LeNet-5 the automatic choice is 1 bit at
  every ratio from 100x to 2,000x (``benchmarks/joint_lenet5.py``); with ``initial_bits=3`` at 2,000x the widths
  moved to 4/2/2/3 bits, for the same accuracy (test2k top-1 98.00 % against 97.95 %, 60 + 20 epochs, rho 0.01).

**Hard projection** (:meth:`JointSparseQuantization.finalize`): pruning and width selection on W alone, alternated
until the widths stop changing (at most 10 rounds); the pruned weights are masked with ``torch.nn.utils.prune``
masks (which later training keeps) and every kept weight is replaced by the nearest level of its layer's codebook
(``2**b`` non-zero levels fitted to the kept weights).

**Masked fine-tuning with quantized weights** (the authors' ``finetune.py``): the same hook, after ``finalize``,
puts the codebook levels in the forward pass with the gradient passed straight through to the float weights, and
refits the codebooks (Lloyd from the current levels) after every epoch (or every ``update_every`` steps).
:meth:`JointSparseQuantization.finish` writes the levels into the weights and takes the quantization out of the
forward pass: the model keeps its masks, and each compressed layer's effective weight has at most ``nnz_l``
non-zeros taking at most ``2**b_l`` distinct values. :func:`compress_to_size` runs the whole schedule.

Every step of it is deterministic, and the hook's state (V, U, widths, non-zeros, codebooks, phase, counters) is in
``state_dict``: a :func:`finetune` resumed from its checkpoint continues exactly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InputError
from ..models.evaluate import DataSource, evaluate_accuracy
from .admm import WeightTarget, check_state_tensor, positive_number, weight_targets
from .analysis import compressible_layers, resolve_layer
from .knapsack import knapsack_01, multiple_choice_knapsack
from .train import FinetuneConfig, FinetuneHistory, TrainingHook, finetune

__all__ = ["BitChoice", "JointResult", "JointSparseQuantization", "LayerSize", "SizeReport", "compress_to_size",
           "kmeans_1d", "prune_to_budget", "select_bit_widths", "size_budget"]

FLOAT_BITS = 32  # a dense weight, and a codebook level
DEFAULT_BITS = tuple(range(1, 9))
PHASES = ("admm", "finetune", "done")
_ROUNDS = 10  # alternations of the hard projection
_ITERATIONS = 100  # Lloyd iterations (the authors' code: 100)
_WHAT = "JointSparseQuantization"
#: The ADMM penalty. The paper's LeNet-5 run uses 0.05 with a proximal step; with the penalty's gradient, on LeNet-5
#: at 2,000x (60 + 20 epochs, test2k top-1): 0.05 gave 96.35 %, 0.01 gave 97.95 %, 0.002 gave 97.65 %.
RHO = 0.01


# --- sizes --------------------------------------------------------------------------------------------


def codebook_bits(bits: int) -> int:
    """Bits of a layer's codebook: ``2**bits`` float32 levels."""
    return (2**bits) * FLOAT_BITS


@dataclass(frozen=True)
class LayerSize:
    """One compressed layer: weight entries, kept (non-zero) weights, bits per kept weight, the bits of its
    codebook, and ``size_bits``: what the budget counts for it (``nnz * bits``, plus the codebook if counted)."""

    name: str
    weights: int
    nnz: int
    bits: int
    codebook_bits: int
    size_bits: int

    @property
    def bytes(self) -> int:
        return math.ceil(self.size_bits / 8)


@dataclass(frozen=True)
class SizeReport:
    """Per-layer sizes, the budget, and the totals (see the module docstring for what is counted)."""

    layers: tuple[LayerSize, ...]
    budget_bits: int
    count_codebook: bool

    @property
    def total_bits(self) -> int:
        """The constrained size: sum of the layers' ``size_bits`` (never above ``budget_bits``)."""
        return sum(layer.size_bits for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return math.ceil(self.total_bits / 8)

    @property
    def dense_bits(self) -> int:
        """The same layers' weights in float32."""
        return FLOAT_BITS * sum(layer.weights for layer in self.layers)

    @property
    def ratio(self) -> float:
        """Compression ratio of the weights against float32 (the paper's)."""
        return self.dense_bits / self.total_bits if self.total_bits else math.inf

    @property
    def codebook_total_bits(self) -> int:
        return sum(layer.codebook_bits for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"budget_bits": self.budget_bits, "total_bits": self.total_bits, "total_bytes": self.total_bytes,
                "dense_bits": self.dense_bits, "ratio": self.ratio, "count_codebook": self.count_codebook,
                "codebook_bits": self.codebook_total_bits,
                "layers": [{"name": x.name, "weights": x.weights, "nnz": x.nnz, "bits": x.bits,
                            "size_bits": x.size_bits, "bytes": x.bytes, "codebook_bits": x.codebook_bits}
                           for x in self.layers]}


def _layer_size(nnz: int, bits: int, count_codebook: bool) -> int:
    return nnz * bits + (codebook_bits(bits) if count_codebook else 0)


# --- one-dimensional k-means --------------------------------------------------------------------------


class _Sorted:
    """Values sorted once, with prefix sums of x and x**2: a Lloyd iteration costs O(levels log n)."""

    def __init__(self, values: np.ndarray) -> None:
        self.x = np.sort(np.asarray(values, dtype=np.float64).ravel())
        self.s1 = np.concatenate([[0.0], np.cumsum(self.x)])
        self.s2 = np.concatenate([[0.0], np.cumsum(self.x**2)])

    def edges(self, centres: np.ndarray) -> np.ndarray:
        """Cluster boundaries in the sorted values for sorted centres (a value on a midpoint goes to the lower
        centre, as :func:`_nearest`)."""
        mids = (centres[1:] + centres[:-1]) / 2
        return np.concatenate([[0], np.searchsorted(self.x, mids, side="right"), [len(self.x)]])

    def error(self, centres: np.ndarray) -> float:
        """Sum of squared distances of the values to their nearest centre."""
        e = self.edges(centres)
        n, s1, s2 = np.diff(e), np.diff(self.s1[e]), np.diff(self.s2[e])
        return float(max(0.0, (s2 - 2 * centres * s1 + n * centres**2).sum()))


def _with_zero(free: np.ndarray, zero_level: bool) -> tuple[np.ndarray, np.ndarray]:
    """All centres, sorted, and which of them is the fixed 0."""
    if not zero_level:
        return free, np.zeros(len(free), dtype=bool)
    at = int(np.searchsorted(free, 0.0))
    fixed = np.zeros(len(free) + 1, dtype=bool)
    fixed[at] = True
    return np.insert(free, at, 0.0), fixed


def _lloyd(data: _Sorted, levels: int, zero_level: bool, init: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """``levels`` free centres (sorted) of Lloyd's algorithm, with a fixed centre 0 when ``zero_level``, and the
    squared error. Starts from ``init`` or a uniform grid between the extreme (non-zero) values; stops when no
    value changes cluster, after at most 100 iterations; an empty cluster keeps its centre."""
    x = data.x
    if len(x) == 0:
        return np.zeros(levels), 0.0
    if init is None:
        base = x[x != 0] if zero_level and (x != 0).any() else x
        free = np.linspace(base[0], base[-1], levels)
    else:
        free = np.sort(np.asarray(init, dtype=np.float64))
    edges = None
    for _ in range(_ITERATIONS):
        centres, fixed = _with_zero(free, zero_level)
        now = data.edges(centres)
        if edges is not None and np.array_equal(now, edges):
            break
        edges = now
        count, sums = np.diff(edges), np.diff(data.s1[edges])
        means = np.where(count > 0, sums / np.maximum(count, 1), centres)
        free = np.sort(means[~fixed])
    return free, data.error(_with_zero(free, zero_level)[0])


def kmeans_1d(values: Any, levels: int, *, zero_level: bool = False) -> tuple[np.ndarray, float]:
    """The paper's scalar quantizer: ``levels`` k-means centres of ``values`` (sorted), plus a fixed centre at 0
    when ``zero_level`` (pruned weights stay zero at no cost), and the sum of squared errors."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise InputError(f"levels must be a positive integer, got {levels!r}")
    return _lloyd(_Sorted(np.asarray(values, dtype=np.float64)), levels, zero_level)


def _nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Every entry of ``x`` replaced by its nearest centre (``centres`` sorted; a midpoint goes to the lower)."""
    c = centres.to(dtype=x.dtype, device=x.device)
    return c[torch.bucketize(x, (c[1:] + c[:-1]) / 2)]


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized weight exactly; backward: the gradient to the float weight unchanged."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


# --- the two projections --------------------------------------------------------------------------------


def prune_to_budget(weights: Sequence[torch.Tensor], bits: Sequence[int], capacity: int) -> list[torch.Tensor]:
    """The pruning projection: boolean masks (shaped like ``weights``) of the weights an exact 0-1 knapsack keeps,
    value ``w**2``, cost the bit width of the weight's layer, total cost at most ``capacity`` bits. It keeps the
    most squared magnitude (the Euclidean projection), and no pruned non-zero weight would still fit."""
    if len(weights) != len(bits):
        raise InputError(f"prune_to_budget needs one bit width per weight tensor: {len(weights)} tensors, "
                         f"{len(bits)} widths")
    values = np.concatenate([w.detach().double().flatten().cpu().numpy() ** 2 for w in weights])
    costs = np.concatenate([np.full(w.numel(), int(b), dtype=np.int64) for w, b in zip(weights, bits)])
    keep = torch.from_numpy(knapsack_01(values, costs, capacity))
    out, start = [], 0
    for w in weights:
        out.append(keep[start:start + w.numel()].reshape(w.shape).to(w.device))
        start += w.numel()
    return out


@dataclass(frozen=True)
class BitChoice:
    """The quantization projection's choice: bits per layer, its codebook (sorted non-zero levels; the fixed 0 is
    not listed) and squared quantization error."""

    bits: list[int]
    codebooks: list[np.ndarray]
    errors: list[float]


def select_bit_widths(values: Sequence[Any], nnz: Sequence[int], capacity: int,
                      bit_choices: Sequence[int] = DEFAULT_BITS, *, zero_level: bool,
                      count_codebook: bool = False) -> BitChoice:
    """The quantization projection: for every layer (``values[l]``, the numbers to quantize) and every width b,
    a k-means codebook of ``2**b`` levels (plus 0 when ``zero_level``); the widths are those of an exact
    multiple-choice knapsack: least total squared error with ``sum nnz_l * b_l`` (plus the codebooks' bits when
    ``count_codebook``) at most ``capacity``."""
    if len(values) != len(nnz):
        raise InputError(f"select_bit_widths needs one nnz per layer: {len(values)} layers, {len(nnz)} nnz")
    books: list[list[np.ndarray]] = []
    errors: list[list[float]] = []
    for v in values:
        data = _Sorted(np.asarray(v, dtype=np.float64))
        fits = [_lloyd(data, 2**b, zero_level) for b in bit_choices]
        books.append([f[0] for f in fits])
        errors.append([f[1] for f in fits])
    costs = [[_layer_size(int(n), b, count_codebook) for b in bit_choices] for n in nnz]
    picks = multiple_choice_knapsack([-np.asarray(e) for e in errors], costs, capacity)
    return BitChoice([int(bit_choices[p]) for p in picks], [books[i][p] for i, p in enumerate(picks)],
                     [errors[i][p] for i, p in enumerate(picks)])


# --- the hook -----------------------------------------------------------------------------------------


def _bit_choices(bit_choices: Any) -> tuple[int, ...]:
    ok = (not isinstance(bit_choices, (str, bytes)) and isinstance(bit_choices, Sequence) and len(bit_choices) > 0
          and all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in bit_choices))
    if not ok:
        raise InputError(f"{_WHAT} bit_choices must be a non-empty list of integers in 1..16 (bits per kept weight), "
                         f"got {bit_choices!r}")
    return tuple(sorted(set(bit_choices)))


def _budget_value(budget_bits: Any) -> int:
    if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, np.integer)) or budget_bits < 1:
        raise InputError(f"{_WHAT} budget_bits must be a positive integer (bits), got {budget_bits!r}")
    return int(budget_bits)


class JointSparseQuantization(TrainingHook):
    """Joint pruning and quantization of ``layers`` (policy layer names; all Conv2d, Linear and LSTM/GRU matrices
    when None) to at most ``budget_bits`` (see the module docstring): the ADMM hook of :func:`finetune`, then
    :meth:`finalize`, the masked fine-tuning with quantized weights (the same hook), and :meth:`finish`.

    ``rho``: the ADMM penalty; ``update_every``: steps between projections (None: after every epoch);
    ``bit_choices``: the candidate widths; ``count_codebook``: count the codebooks in the budget;
    ``initial_bits``: the width of the first pruning projection (None: chosen from the weights)."""

    def __init__(self, budget_bits: int, layers: Sequence[str] | None = None, *, rho: float = RHO,
                 update_every: int | None = None, bit_choices: Sequence[int] = DEFAULT_BITS,
                 count_codebook: bool = False, initial_bits: int | None = None) -> None:
        self.budget_bits = _budget_value(budget_bits)
        if layers is not None and (isinstance(layers, str) or not isinstance(layers, Sequence) or not layers
                                   or not all(isinstance(n, str) and n for n in layers)):
            raise InputError(f"{_WHAT} layers must be None (every compressible layer) or a non-empty list of layer "
                             f"names, got {layers!r}")
        self.layers = None if layers is None else list(layers)
        self.rho = positive_number(rho, f"{_WHAT} rho")
        if update_every is not None and (isinstance(update_every, bool) or not isinstance(update_every, int)
                                         or update_every < 1):
            raise InputError(f"{_WHAT} update_every must be a positive integer (steps) or None (every epoch), got "
                             f"{update_every!r}")
        self.update_every = update_every
        self.bit_choices = _bit_choices(bit_choices)
        if not isinstance(count_codebook, bool):
            raise InputError(f"{_WHAT} count_codebook must be True or False, got {count_codebook!r}")
        self.count_codebook = count_codebook
        if initial_bits is not None and initial_bits not in self.bit_choices:
            raise InputError(f"{_WHAT} initial_bits must be None or one of bit_choices {list(self.bit_choices)}, got "
                             f"{initial_bits!r}")
        self.initial_bits = initial_bits
        self.phase = "admm"
        self.started = False  # the first projection was made
        self.updates = 0
        self.bits: dict[str, int] = {}
        self.nnz: dict[str, int] = {}
        self.codebooks: dict[str, torch.Tensor] = {}
        self._v: dict[str, torch.Tensor] = {}
        self._u: dict[str, torch.Tensor] = {}
        self._numel: dict[str, int] = {}
        self._targets: list[WeightTarget] = []
        self._model: nn.Module | None = None
        self._handles: list[Any] = []

    # --- layers -------------------------------------------------------------------------------------

    def _resolve(self, model: nn.Module) -> list[WeightTarget]:
        if self.phase == "admm":
            names = self.layers if self.layers is not None else list(compressible_layers(model))
            if not names:
                raise InputError(f"{_WHAT}: the model has no Conv2d, Linear or LSTM/GRU layer to compress")
            try:
                return weight_targets(model, names, _WHAT)
            except InputError as exc:
                if "already masked" in str(exc):
                    raise InputError(f"{exc} (to resume the masked fine-tuning, use the hook finalize() was called "
                                     "on, or compress_to_size with the same checkpoint_dir)") from None
                raise
        found = []
        for key in self.bits:
            module, param = resolve_layer(model, key)
            param = param or "weight"
            if not hasattr(module, f"{param}_mask"):
                raise InputError(f"{_WHAT} is past finalize() but {key!r} has no prune mask: give it the model "
                                 "finalize() masked")
            found.append(WeightTarget(key, module, param))
        return found

    def _weights(self) -> list[torch.Tensor]:
        """The float weights being trained (``weight_orig`` once masked)."""
        suffix = "" if self.phase == "admm" else "_orig"
        return [getattr(t.module, t.param + suffix) for t in self._targets]

    def _capacity(self, bits: Sequence[int]) -> int:
        """Bits left for the kept weights once the codebooks (if counted) are paid."""
        return self.budget_bits - (sum(codebook_bits(b) for b in bits) if self.count_codebook else 0)

    def _check_budget(self) -> None:
        smallest = min(self.bit_choices)
        needed = len(self._targets) * codebook_bits(smallest) if self.count_codebook else 0
        if self.budget_bits < needed + smallest:
            raise InputError(f"{_WHAT} budget_bits {self.budget_bits} cannot hold a single weight"
                             + (f" beside the codebooks of {len(self._targets)} layers at {smallest} bit(s) "
                                f"({needed} bits)" if self.count_codebook else f" at {smallest} bit(s)")
                             + f"; expected at least {needed + smallest}")

    # --- the hook -----------------------------------------------------------------------------------

    def on_start(self, model: nn.Module) -> None:
        self._model = model
        if self.phase == "done":
            return
        self._targets = self._resolve(model)
        self._numel = {t.key: getattr(t.module, t.param).numel() for t in self._targets}
        if self.phase == "admm":
            self._check_budget()
        else:
            self._install()

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """``rho / 2 * sum ||W - V + U||^2`` during the ADMM phase, once the first projection is made."""
        if self.phase != "admm" or not self.started:
            return None
        terms = [(getattr(t.module, t.param) - self._v[t.key] + self._u[t.key]).pow(2).sum() for t in self._targets]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.phase == "admm" and not self.started:
            self._start()
        elif self.update_every is not None and step % self.update_every == 0:
            self._periodic()

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if self.update_every is None:
            self._periodic()

    def _periodic(self) -> None:
        if self.phase == "admm" and self.started:
            self.update()
        elif self.phase == "finetune":
            self.refit_codebooks()

    # --- ADMM phase ---------------------------------------------------------------------------------

    def _start(self) -> None:
        if not self._targets:
            raise InputError(f"{_WHAT}: call on_start(model) first (finetune does)")
        weights = self._weights()
        width = self.initial_bits if self.initial_bits is not None else self._initial_width(weights)
        self.bits = {t.key: width for t in self._targets}
        self._u = {t.key: torch.zeros_like(w.detach()) for t, w in zip(self._targets, weights)}
        self.started = True
        self.update()

    def _initial_width(self, weights: list[torch.Tensor]) -> int:
        """The uniform width b whose projection (prune at b bits, then b-bit codebooks on the kept weights) leaves
        the least squared error."""
        best: tuple[float, int] | None = None
        for b in self.bit_choices:
            capacity = self._capacity([b] * len(weights))
            if capacity < b:
                continue
            masks = prune_to_budget(weights, [b] * len(weights), capacity)
            error = 0.0
            for w, m in zip(weights, masks):
                w = w.detach().double()
                error += float(w[~m].pow(2).sum())
                error += _lloyd(_Sorted(w[m].cpu().numpy()), 2**b, zero_level=False)[1]
            if best is None or error < best[0]:
                best = (error, b)
        assert best is not None  # _check_budget: the smallest width fits
        return best[1]

    def update(self) -> None:
        """One ADMM update: prune W in place (0-1 knapsack at the current widths), choose the widths and quantize
        V = W + U (multiple-choice knapsack, k-means with a zero level), then ``U = U + W - V``."""
        if self.phase != "admm" or not self.started:
            return
        keys = [t.key for t in self._targets]
        with torch.no_grad():
            weights = self._weights()
            bits = [self.bits[k] for k in keys]
            masks = prune_to_budget(weights, bits, self._capacity(bits))
            for w, m in zip(weights, masks):
                w.mul_(m.to(w.dtype))
            nnz = [int(m.sum()) for m in masks]
            targets = [w.detach() + self._u[k] for w, k in zip(weights, keys)]
            choice = select_bit_widths([x.double().flatten().cpu().numpy() for x in targets], nnz, self.budget_bits,
                                       self.bit_choices, zero_level=True, count_codebook=self.count_codebook)
            for k, w, x, book in zip(keys, weights, targets, choice.codebooks):
                v = _nearest(x, torch.from_numpy(_with_zero(book, True)[0]))
                self._v[k] = v
                self._u[k] = self._u[k] + w.detach() - v
        self.bits = dict(zip(keys, choice.bits))
        self.nnz = dict(zip(keys, nnz))
        self.updates += 1

    def distance(self) -> float:
        """``||W - V|| / ||W||`` over the layers: how far the weights are from their quantized duplicate."""
        if not self.started or self.phase != "admm":
            raise InputError(f"{_WHAT}.distance is defined during the ADMM phase, after the first projection")
        weights = [w.detach() for w in self._weights()]
        num = sum(float((w - self._v[t.key]).pow(2).sum()) for t, w in zip(self._targets, weights))
        den = sum(float(w.pow(2).sum()) for w in weights)
        return math.sqrt(num / den) if den else 0.0

    # --- hard projection and masked fine-tuning ------------------------------------------------------

    def finalize(self, model: nn.Module) -> SizeReport:
        """The hard projection (see the module docstring): masks, widths and codebooks within the budget, kept
        weights on their codebook levels; the hook then runs the masked fine-tuning with quantized weights."""
        if self.phase != "admm":
            raise InputError(f"{_WHAT}.finalize was already applied")
        self._model = model
        self._targets = self._resolve(model)
        self._numel = {t.key: getattr(t.module, t.param).numel() for t in self._targets}
        self._check_budget()
        weights = [w.detach() for w in self._weights()]
        keys = [t.key for t in self._targets]
        bits = [self.bits[k] for k in keys] if self.started else \
            [self.initial_bits or self._initial_width(weights)] * len(keys)
        for _ in range(_ROUNDS):
            masks = prune_to_budget(weights, bits, self._capacity(bits))
            nnz = [int(m.sum()) for m in masks]
            choice = select_bit_widths([w[m].double().cpu().numpy() for w, m in zip(weights, masks)], nnz,
                                       self.budget_bits, self.bit_choices, zero_level=False,
                                       count_codebook=self.count_codebook)
            stable, bits = choice.bits == bits, choice.bits
            if stable:
                break
        with torch.no_grad():
            for t, w, m, book in zip(self._targets, self._weights(), masks, choice.codebooks):
                w.copy_(torch.where(m, _nearest(w, torch.from_numpy(book)), torch.zeros_like(w)))
                torch_prune.custom_from_mask(t.module, t.param, m.to(w.dtype))
        self.bits, self.nnz = dict(zip(keys, choice.bits)), dict(zip(keys, nnz))
        self.codebooks = {k: torch.from_numpy(book).float() for k, book in zip(keys, choice.codebooks)}
        self._v, self._u = {}, {}
        self.phase = "finetune"
        self._targets = self._resolve(model)
        self._install()
        return self.report()

    def _install(self) -> None:
        """Quantize the masked weights in the forward pass (after the prune mask's own pre-hook)."""
        self._remove()
        for t in self._targets:
            self._handles.append(t.module.register_forward_pre_hook(self._quantizer(t.key, t.param)))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _quantizer(self, key: str, param: str) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            w = getattr(module, param)  # weight_orig * weight_mask, set by the prune pre-hook
            q = _nearest(w.detach(), self.codebooks[key]) * getattr(module, f"{param}_mask")
            setattr(module, param, _StraightThrough.apply(w, q))

        return hook

    def refit_codebooks(self) -> None:
        """Lloyd's algorithm from the current levels on each layer's kept float weights."""
        with torch.no_grad():
            for t, w in zip(self._targets, self._weights()):
                kept = w.detach()[getattr(t.module, f"{t.param}_mask").bool()].double().cpu().numpy()
                init = self.codebooks[t.key].double().numpy()
                self.codebooks[t.key] = torch.from_numpy(_lloyd(_Sorted(kept), len(init), False, init)[0]).float()

    def finish(self, model: nn.Module) -> SizeReport:
        """Write the codebook levels into the masked weights and take the quantization out of the forward pass;
        the size report of the result."""
        if self.phase != "finetune":
            raise InputError(f"{_WHAT}.finish needs finalize() first (the phase is {self.phase!r})")
        self._model = model
        self._targets = self._resolve(model)
        with torch.no_grad():
            for t, w in zip(self._targets, self._weights()):
                mask = getattr(t.module, f"{t.param}_mask")
                w.copy_(_nearest(w, self.codebooks[t.key]) * mask)
                setattr(t.module, t.param, w * mask)
        self._remove()
        self.phase = "done"
        return self.report()

    def report(self) -> SizeReport:
        """Sizes at the last projection (the ADMM phase) or of the masked, quantized layers (after finalize)."""
        if not self.nnz:
            raise InputError(f"{_WHAT}.report: nothing projected yet")
        layers = tuple(LayerSize(k, self._numel[k], self.nnz[k], self.bits[k], codebook_bits(self.bits[k]),
                                 _layer_size(self.nnz[k], self.bits[k], self.count_codebook)) for k in self.nnz)
        return SizeReport(layers, self.budget_bits, self.count_codebook)

    # --- state ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"budget_bits": self.budget_bits, "phase": self.phase, "started": self.started,
                "updates": self.updates, "bits": dict(self.bits), "nnz": dict(self.nnz), "numel": dict(self._numel),
                "v": dict(self._v), "u": dict(self._u), "codebooks": dict(self.codebooks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            budget, phase = int(state["budget_bits"]), str(state["phase"])
            started, updates = bool(state["started"]), int(state["updates"])
            bits = {str(k): int(b) for k, b in dict(state["bits"]).items()}
            nnz = {str(k): int(n) for k, n in dict(state["nnz"]).items()}
            numel = {str(k): int(n) for k, n in dict(state["numel"]).items()}
            v, u, books = dict(state["v"]), dict(state["u"]), dict(state["codebooks"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"a {_WHAT} state needs budget_bits, phase, started, updates, bits, nnz, numel, v, u "
                             f"and codebooks: {exc}") from None
        if budget != self.budget_bits:
            raise InputError(f"the {_WHAT} state is for a budget of {budget} bits, this hook's is {self.budget_bits}")
        if phase not in PHASES:
            raise InputError(f"the {_WHAT} state's phase must be one of {', '.join(PHASES)}, got {phase!r}")
        if any(b not in self.bit_choices for b in bits.values()):
            raise InputError(f"the {_WHAT} state has widths {sorted(set(bits.values()))} outside bit_choices "
                             f"{list(self.bit_choices)}")
        if self._targets and phase == "admm" and started:
            keys = [t.key for t in self._targets]
            if set(v) != set(keys) or set(u) != set(keys):
                raise InputError(f"the {_WHAT} state is for layers {sorted(v)}, this hook compresses {sorted(keys)}")
            for t, w in zip(self._targets, self._weights()):
                v[t.key] = check_state_tensor(v[t.key], w, f"v[{t.key!r}]")
                u[t.key] = check_state_tensor(u[t.key], w, f"u[{t.key!r}]")
        for k, book in books.items():
            if not isinstance(book, torch.Tensor) or book.shape != (2 ** bits.get(k, 0),):
                raise InputError(f"state codebooks[{k!r}] must be a tensor of {2 ** bits.get(k, 0)} levels")
        self.phase, self.started, self.updates = phase, started, updates
        self.bits, self.nnz, self._numel = bits, nnz, numel
        self._v, self._u, self.codebooks = v, u, {k: b.detach().float().clone() for k, b in books.items()}
        if self.phase == "finetune" and self._model is not None:
            self._targets = self._resolve(self._model)
            self._install()


# --- the schedule -------------------------------------------------------------------------------------

#: ADMM phase and masked fine-tuning of :func:`compress_to_size`: the settings of LeNet-5 on MNIST train8k in
#: ``benchmarks/joint_lenet5.py`` (the paper: 120 epochs of the 60,000 MNIST training images, lr 0.1, batch 256).
ADMM_CONFIG = FinetuneConfig(epochs=100.0, lr=0.05, batch_size=128)
FINETUNE_CONFIG = FinetuneConfig(epochs=20.0, lr=0.005, batch_size=128)


@dataclass
class JointResult:
    """What :func:`compress_to_size` did: the model (masked, quantized, in place), its size report, the hook (its
    ``bits``, ``nnz``, ``codebooks``), both training histories, and the top-1 % on ``eval_data`` when given."""

    model: nn.Module
    report: SizeReport
    hook: JointSparseQuantization
    admm: FinetuneHistory
    finetune: FinetuneHistory | None
    accuracy: float | None


def size_budget(model: nn.Module, *, target_bits: int | None = None, target_ratio: float | None = None,
                layers: Sequence[str] | None = None) -> int:
    """The budget in bits: ``target_bits``, or ``floor(32 * weights of the layers / target_ratio)``."""
    if (target_bits is None) == (target_ratio is None):
        raise InputError("give exactly one of target_bits (the size in bits) and target_ratio (against float32)")
    if target_bits is not None:
        return _budget_value(target_bits)
    ratio = target_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise InputError(f"target_ratio must be a positive number (float32 size / compressed size), got {ratio!r}")
    names = list(layers) if layers is not None else list(compressible_layers(model))
    if not names:
        raise InputError("the model has no Conv2d, Linear or LSTM/GRU layer to compress")
    weights = sum(getattr(t.module, t.param).numel() for t in weight_targets(model, names, "compress_to_size"))
    budget = math.floor(FLOAT_BITS * weights / ratio)
    if budget < 1:
        raise InputError(f"target_ratio {ratio} leaves less than one bit for {weights} weights")
    return budget


def compress_to_size(model: nn.Module, train_data: DataSource, *, target_bits: int | None = None,
                     target_ratio: float | None = None, layers: Sequence[str] | None = None,
                     admm_config: FinetuneConfig = ADMM_CONFIG,
                     finetune_config: FinetuneConfig | None = FINETUNE_CONFIG, rho: float = RHO,
                     update_every: int | None = None, bit_choices: Sequence[int] = DEFAULT_BITS,
                     count_codebook: bool = False, initial_bits: int | None = None,
                     teacher: nn.Module | None = None, eval_data: DataSource | None = None,
                     checkpoint_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> JointResult:
    """Prune and quantize ``model`` (in place) to at most ``target_bits``, or ``target_ratio`` times smaller than
    float32 weights: the ADMM phase (``admm_config``), the hard projection, the masked fine-tuning with quantized
    weights (``finetune_config``; None skips it), then the levels written into the weights. ``teacher`` (e.g. a
    copy of the uncompressed model) is distilled from in the phases whose config sets ``distill`` (the authors'
    code has the same option, ``--kdtemp``). With ``checkpoint_dir`` both phases checkpoint there (``admm.ckpt``,
    ``finetune.ckpt``) and a rerun with the same arguments continues where it stopped."""
    budget = size_budget(model, target_bits=target_bits, target_ratio=target_ratio, layers=layers)
    wants = [name for name, c in (("admm_config", admm_config), ("finetune_config", finetune_config))
             if c is not None and c.distill]
    if wants and teacher is None:
        raise InputError(f"{' and '.join(wants)} set distill but no teacher was given: pass teacher=<a copy of the "
                         "uncompressed model>")
    if teacher is not None and not wants:
        raise InputError("a teacher was given but neither admm_config nor finetune_config sets distill=True")
    hook = JointSparseQuantization(budget, layers, rho=rho, update_every=update_every, bit_choices=bit_choices,
                                   count_codebook=count_codebook, initial_bits=initial_bits)
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    admm = finetune(model, train_data, admm_config, hooks=[hook], progress=progress,
                    teacher=teacher if admm_config.distill else None,
                    checkpoint=None if folder is None else folder / "admm.ckpt")
    hook.finalize(model)
    tuned = None
    if finetune_config is not None:
        tuned = finetune(model, train_data, finetune_config, hooks=[hook], progress=progress,
                         teacher=teacher if finetune_config.distill else None,
                         checkpoint=None if folder is None else folder / "finetune.ckpt")
    report = hook.finish(model)
    accuracy = None if eval_data is None else evaluate_accuracy(model, eval_data)
    return JointResult(model, report, hook, admm, tuned, accuracy)
