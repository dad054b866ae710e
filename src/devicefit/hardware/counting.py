"""Static cost of a model: parameters, MACs/FLOPs, peak activation memory and model size.

Definitions (units are in the field names):

- ``macs``: multiply-accumulates of one forward pass of the whole batch, counted by PyTorch's
  ``torch.utils.flop_counter.FlopCounterMode``. That counter covers matrix products and convolutions
  (``mm``, ``addmm``, ``bmm``, ``convolution``, attention), and counts 2 FLOPs per MAC; so ``macs`` is
  its total divided by two. Bias additions, BatchNorm, activations, pooling and element-wise adds are
  not counted (the convention of most NAS papers, whose "FLOPs" are in fact these MACs). Operations
  whose input is the constant zero of a ``none`` edge (e.g. a convolution after a node with no
  non-``none`` input in an NB201 cell) run in eager PyTorch and are counted; ONNX Runtime folds them
  away as constants, so such cells run faster there than their MACs suggest.
- ``flops``: exactly the counter's total, ``2 * macs``.
- ``params``: number of parameter elements (``requires_grad`` or not); buffers (BatchNorm running
  statistics) are not parameters.
- ``peak_activation_bytes``: the largest total size of activation tensors alive at the same time during
  one eager forward pass under ``torch.no_grad`` — the input and every tensor an operator produces,
  each storage counted once, freed when the last tensor using it is released; parameters and buffers
  excluded. It is what the eager allocator must hold at its peak, without any memory planning.
- ``model_bytes_fp32`` / ``_fp16`` / ``_int8``: ``params`` times 4, 2 or 1 bytes (weights only; BN is
  assumed folded into the convolutions at deployment, as ONNX Runtime does).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InputError


@dataclass(frozen=True)
class ModelCost:
    """Static cost of one forward pass of a batch of ``input_shape`` (see the module docstring)."""

    params: int
    macs: int
    flops: int
    peak_activation_bytes: int
    model_bytes_fp32: int
    model_bytes_fp16: int
    model_bytes_int8: int
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _LiveActivationTracker(TorchDispatchMode):
    """Tracks the bytes of live tensor storages produced by operators (plus the registered input)."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude  # storage pointers of parameters and buffers
        self.live: dict[int, list[int]] = {}  # storage pointer -> [nbytes, number of live tensors]
        self.current = 0
        self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or storage.nbytes() == 0:
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def peak_activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Peak bytes of simultaneously live activations in one forward of ``example`` (see module docstring)."""
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    tracker = _LiveActivationTracker(exclude)
    with torch.no_grad(), tracker:
        tracker.track(example)
        out = model(example)
        del out
    return tracker.peak


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of one forward of ``example``: FlopCounterMode's FLOPs / 2 (convolutions and matmuls only)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops()) // 2


def count_model(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), *, batch_size: int = 1) -> ModelCost:
    """Parameters, MACs, FLOPs, peak activation memory and weight bytes of ``model``.

    ``input_shape`` is the shape of one sample without the batch dimension (``(3, 32, 32)`` for NB201,
    ``(features,)`` for an MLP); the counted forward uses a batch of ``batch_size``. The model is put
    in eval mode.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    shape = (batch_size, *(int(s) for s in input_shape))
    if any(s < 1 for s in shape):
        raise InputError(f"input shape must have positive sizes, got {tuple(input_shape)}")
    model.eval()
    example = torch.zeros(shape)
    params = count_params(model)
    macs = count_macs(model, example)
    return ModelCost(
        params=params,
        macs=macs,
        flops=2 * macs,
        peak_activation_bytes=peak_activation_bytes(model, example),
        model_bytes_fp32=4 * params,
        model_bytes_fp16=2 * params,
        model_bytes_int8=params,
        input_shape=shape,
    )
