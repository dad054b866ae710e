"""Weight masks that stay through training: unstructured, block-based and pattern pruning.

Masks are ``torch.nn.utils.prune`` pruning methods: the module keeps ``weight_orig`` and ``weight_mask`` and
computes ``weight = weight_orig * weight_mask`` before every forward, so fine-tuning updates only the kept
weights' originals and the pruned ones stay exactly zero; :func:`~devicefit.compression.finalize` makes them
permanent for export. The masks themselves are pure functions of a weight (:func:`unstructured_mask`,
:func:`block_mask`, :func:`pattern_library`, :func:`pattern_mask`), so that ADMM training can use them as its
Euclidean projections.

- Unstructured magnitude pruning (Han et al., arXiv 1506.02626): per layer, the ``sparsity`` fraction of the
  weights with the smallest magnitude is masked.
- Block-based structured pruning (arXiv 2001.08357; for LSTM/GRU matrices RTMobile's block-based
  structured pruning, arXiv 2002.11474): the weight as its GEMM matrix (out, in*kh*kw) is cut into blocks of
  ``(rows, cols)`` (smaller at the right and bottom edges); inside every block the same fraction ``sparsity``
  of its rows (or columns) is masked, smallest L2 norm first, so that each block keeps a dense sub-matrix
  and the blocks stay balanced for parallel execution.
- Pattern pruning (PatDNN, arXiv 2001.00138) of 3x3 kernels: every kernel keeps 4 of its 9 weights in one
  shape of a small library. The library is the ``patterns`` shapes that occur most often in the layer as
  "the centre plus the 3 largest of the 8 others" (PatDNN always keeps the central weight); each kernel then
  takes the library shape that keeps the most of its energy (sum of squares: the Euclidean projection).
  Connectivity pruning removes the ``connectivity`` fraction of whole kernels, smallest L2 norm first.

For ``nn.LSTM``/``nn.GRU`` a policy may name the module (every weight matrix, input and recurrent, is
pruned at the same setting) or one matrix (``"rnn.weight_hh_l0"``); biases are kept. On a dense runtime
masks save no time: what they save is size, once stored sparse (patterns and blocks also let a compiler
skip the zeros, as PatDNN's and RTMobile's code generators do).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import InputError
from .policy import Block, Pattern, Unstructured
from .registry import Skip, register_transform

RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
_CENTRE = 4


# --- masks as pure functions --------------------------------------------------------------------------


def unstructured_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The 0/1 mask keeping the ``1 - sparsity`` fraction of largest-magnitude entries (ties: lower index)."""
    k = round(sparsity * weight.numel())  # as torch's prune: the number of entries removed
    mask = torch.ones_like(weight)
    if k:
        idx = torch.topk(weight.detach().abs().flatten(), k, largest=False).indices
        mask.view(-1)[idx] = 0
    return mask


def block_mask(weight2d: torch.Tensor, block: tuple[int, int], sparsity: float, prune: str = "columns") -> torch.Tensor:
    """0/1 mask of a matrix: in every ``block = (rows, cols)`` block, ``round(sparsity * n)`` of its ``n`` rows
    (``prune="rows"``) or columns (``"columns"``) with the smallest L2 norm are masked (ties: lower index)."""
    if weight2d.ndim != 2:
        raise InputError(f"block_mask needs a matrix, got shape {tuple(weight2d.shape)}")
    br, bc = block
    if prune not in ("rows", "columns"):
        raise InputError(f"prune must be 'rows' or 'columns', got {prune!r}")
    if not (isinstance(br, int) and isinstance(bc, int) and br >= 1 and bc >= 1):
        raise InputError(f"block must be two integers >= 1, got {block!r}")
    if not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity!r}")
    rows, cols = weight2d.shape
    nr, nc = math.ceil(rows / br), math.ceil(cols / bc)
    w = torch.zeros(nr * br, nc * bc, dtype=torch.float64)
    w[:rows, :cols] = weight2d.detach().double()
    tiles = w.view(nr, br, nc, bc).permute(0, 2, 1, 3)  # (nr, nc, br, bc)
    if prune == "columns":
        norms = tiles.pow(2).sum(2)  # (nr, nc, bc): one per column segment
        real = torch.tensor([min(bc, cols - j * bc) for j in range(nc)]).expand(nr, nc)
        unit = torch.arange(bc).expand(nr, nc, bc)
    else:
        norms = tiles.pow(2).sum(3)  # (nr, nc, br): one per row segment
        real = torch.tensor([min(br, rows - i * br) for i in range(nr)])[:, None].expand(nr, nc)
        unit = torch.arange(br).expand(nr, nc, br)
    norms = norms.masked_fill(unit >= real[..., None], math.inf)  # padding units are never pruned
    k = torch.round(real.double() * sparsity).long()
    order = torch.sort(norms, dim=-1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order).contiguous())
    keep = (rank >= k[..., None]).to(weight2d.dtype)  # (nr, nc, units)
    tile_mask = keep[:, :, None, :].expand(nr, nc, br, bc) if prune == "columns" else \
        keep[:, :, :, None].expand(nr, nc, br, bc)
    mask = tile_mask.permute(0, 2, 1, 3).reshape(nr * br, nc * bc)[:rows, :cols]
    return mask.contiguous().to(device=weight2d.device)


def _codes(masks: torch.Tensor) -> torch.Tensor:
    """9-bit integer code of each (.., 9) 0/1 pattern: bit i is position i (row-major) of the 3x3 kernel."""
    return (masks.long() << torch.arange(9, device=masks.device)).sum(-1)


def _decode(codes: torch.Tensor) -> torch.Tensor:
    return ((codes[:, None] >> torch.arange(9)) & 1).float().reshape(-1, 3, 3)


def _all_patterns() -> torch.Tensor:
    """The 56 codes of 4-of-9 patterns that keep the centre, ascending."""
    return torch.tensor(sorted(c for c in range(512) if bin(c).count("1") == 4 and c >> _CENTRE & 1))


def _check_3x3(weight: torch.Tensor, what: str) -> None:
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise InputError(f"{what} needs 3x3 kernels (out, in, 3, 3), got shape {tuple(weight.shape)}")


def pattern_library(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most frequent patterns (k, 3, 3) of a 3x3 convolution weight: each kernel's natural pattern is
    its centre plus its 3 largest other weights; ties in frequency go to the lower code, and if fewer than ``k``
    patterns occur the library is completed with the unused ones in code order."""
    _check_3x3(weight, "pattern_library")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 56:
        raise InputError(f"the number of patterns must be an integer in 1..56, got {k!r}")
    mags = weight.detach().abs().reshape(-1, 9).double()
    mags[:, _CENTRE] = math.inf
    top = torch.topk(mags, 4, dim=1).indices
    natural = torch.zeros_like(mags, dtype=torch.long).scatter_(1, top, 1)
    codes, counts = torch.unique(_codes(natural), return_counts=True)
    ranked = sorted(zip(counts.tolist(), codes.tolist()), key=lambda t: (-t[0], t[1]))
    chosen = [c for _, c in ranked][:k]
    chosen += [c for c in _all_patterns().tolist() if c not in chosen][: k - len(chosen)]
    return _decode(torch.tensor(chosen))


def pattern_mask(weight: torch.Tensor, library: torch.Tensor, connectivity: float = 0.0) -> torch.Tensor:
    """0/1 mask of a 3x3 convolution weight: each kernel takes the library pattern keeping the largest sum of
    squares (ties: the earlier pattern); then the ``connectivity`` fraction of kernels with the smallest L2
    norm (of the whole kernel) is removed (ties: lower index)."""
    _check_3x3(weight, "pattern_mask")
    if library.ndim != 3 or tuple(library.shape[1:]) != (3, 3) or library.shape[0] < 1:
        raise InputError(f"library must be (k, 3, 3) 0/1 patterns, got shape {tuple(library.shape)}")
    if not 0.0 <= connectivity < 1.0:
        raise InputError(f"connectivity must be in [0, 1), got {connectivity!r}")
    energy = weight.detach().double().reshape(-1, 9).pow(2)
    lib = library.reshape(-1, 9).to(energy)
    best = torch.argmax(energy @ lib.T, dim=1)  # argmax returns the first maximum
    mask = lib[best].clone()
    removed = round(connectivity * mask.shape[0])
    if removed:
        idx = torch.topk(energy.sum(1), removed, largest=False).indices
        mask[idx] = 0
    return mask.reshape(weight.shape).to(dtype=weight.dtype, device=weight.device)


# --- torch.nn.utils.prune methods ---------------------------------------------------------------------


class BlockPruning(prune.BasePruningMethod):
    """``torch.nn.utils.prune`` method of :func:`block_mask` on the weight's GEMM matrix (out, in*kh*kw)."""

    PRUNING_TYPE = "unstructured"  # combines element-wise with earlier masks

    def __init__(self, sparsity: float, block: tuple[int, int], prune: str) -> None:
        self.sparsity, self.block, self.prune = sparsity, tuple(block), prune

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        matrix = (t * default_mask).reshape(t.shape[0], -1)
        return block_mask(matrix, self.block, self.sparsity, self.prune).reshape(t.shape) * default_mask


class PatternPruning(prune.BasePruningMethod):
    """``torch.nn.utils.prune`` method of :func:`pattern_mask` with a given library."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, library: torch.Tensor, connectivity: float) -> None:
        self.library, self.connectivity = library, connectivity

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return pattern_mask(t * default_mask, self.library, self.connectivity) * default_mask


# --- the transforms -----------------------------------------------------------------------------------


def _weights(name: str, module: nn.Module) -> list[str]:
    """The weight tensors a mask action prunes on the layer ``name`` (a module, or one matrix of an RNN)."""
    if isinstance(module, RNN_TYPES):
        matrices = [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
        matrices = [n[: -len("_orig")] if n.endswith("_orig") else n for n in matrices]
        last = name.rpartition(".")[2]
        return [last] if last in matrices else matrices
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return ["weight"]
    return []


def _masked(module: nn.Module, weight: str) -> bool:
    return hasattr(module, f"{weight}_mask")


def _apply_masks(name: str, module: nn.Module, make: Any) -> dict[str, Any]:
    weights = _weights(name, module)
    if not weights:
        raise Skip(f"{type(module).__name__} has no weight matrix to prune (Linear, Conv and LSTM/GRU have)")
    for w in weights:
        if _masked(module, w):
            raise Skip(f"{name}.{w} is already masked")
    kept = total = 0
    for w in weights:
        make(module, w)
        mask = getattr(module, f"{w}_mask")
        kept += int(mask.sum())
        total += mask.numel()
    return {"weights": weights, "kept": kept, "total": total}


@register_transform(Unstructured)
def prune_unstructured(root: nn.Module, name: str, module: nn.Module, action: Unstructured) -> dict[str, Any]:
    return _apply_masks(name, module, lambda m, w: prune.custom_from_mask(
        m, w, unstructured_mask(getattr(m, w), action.sparsity)))


@register_transform(Block)
def prune_blocks(root: nn.Module, name: str, module: nn.Module, action: Block) -> dict[str, Any]:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups != 1:
        raise Skip(f"grouped convolution (groups={module.groups}) has no single GEMM matrix to cut into blocks")
    details = _apply_masks(name, module, lambda m, w: BlockPruning.apply(
        m, w, sparsity=action.sparsity, block=action.block, prune=action.prune))
    return {**details, "block": list(action.block), "prune": action.prune}


@register_transform(Pattern)
def prune_patterns(root: nn.Module, name: str, module: nn.Module, action: Pattern) -> dict[str, Any]:
    if not isinstance(module, nn.Conv2d):
        raise Skip(f"{type(module).__name__} has no 3x3 kernels (patterns are for 3x3 convolutions)")
    library = pattern_library(module.weight, action.patterns)
    details = _apply_masks(name, module, lambda m, w: PatternPruning.apply(
        m, w, library=library, connectivity=action.connectivity))
    codes = _codes(library.reshape(-1, 9)).tolist()
    kernels = module.weight_mask.reshape(-1, 9).sum(1)
    return {**details, "library": codes, "kernels_kept": int((kernels > 0).sum()), "kernels": int(kernels.numel())}
