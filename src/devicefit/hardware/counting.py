"""Static cost of a model: parameters, MACs/FLOPs, peak activation memory and model size.

Definitions (units are in the field names):

- ``macs``: multiply-accumulates of one forward pass of the whole batch, counted by PyTorch's
  ``torch.utils.flop_counter.FlopCounterMode``. That counter covers matrix products and convolutions
  (``mm``, ``addmm``, ``bmm``, ``convolution``, attention), and counts 2 FLOPs per MAC; so ``macs`` is
  its total divided by two, with one formula PyTorch lacks: the fused LSTM layer of the CPU build
  (``aten.mkldnn_rnn_layer``), counted as the products of its input and recurrent matrices at every step
  (:func:`flop_counter`; GRU already runs as matrix products). Bias additions, BatchNorm, activations,
  pooling and element-wise adds are not counted (the convention of most NAS papers, whose "FLOPs" are in
  fact these MACs). Operations whose input is the constant zero of a ``none`` edge (e.g. a convolution after
  a node with no non-``none`` input in an NB201 cell) run in eager PyTorch and are counted; ONNX Runtime folds them
  away as constants, so such cells run faster there than their MACs suggest.
- ``flops``: exactly the counter's total, ``2 * macs``.
- ``params``: number of parameter elements (``requires_grad`` or not); buffers (BatchNorm running
  statistics) are not parameters.
- ``peak_activation_bytes``: the largest total size of activation tensors alive at the same time during
  one eager forward pass under ``torch.no_grad`` — the input and every tensor an operator produces,
  each storage counted once, freed when the last tensor using it is released; parameters and buffers
  excluded. It is what the eager allocator must hold at its peak, without any memory planning.
- ``model_bytes_fp32`` / ``_fp16`` / ``_int8``: ``params`` times 4, 2 or 1 bytes (weights only; BN is
  assumed folded into the convolutions at deployment, as ONNX Runtime does); :func:`weight_bytes` gives
  the same for any precision of :data:`BYTES_PER_PARAM`.
- ``nonzero_params``: parameter elements that are not exactly zero, as the forward sees them
  (:func:`count_nonzero_params`): for a layer pruned with ``torch.nn.utils.prune`` the masked weight
  ``weight_orig * weight_mask``, for a ``torch.nn.utils.parametrize``-d layer the parametrized weight,
  not the stored original. ``params`` counts stored elements and does not change with masks.

Any ``nn.Module`` can be counted, including TorchScript modules and ``torch.export`` programs'
``.module()`` (whose train/eval mode is fixed at export; see :func:`eval_mode`). A forward that fails on the
given shape, whatever the exception, becomes an :class:`~devicefit.errors.InputError` naming the shape.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InputError

#: Bytes per stored parameter element at each precision (int4: two elements per byte).
BYTES_PER_PARAM: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


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
    nonzero_params: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``input_shape`` as a list)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def count_params(model: nn.Module) -> int:
    """Number of stored parameter elements of ``model`` (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _effective_parameters(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter as the forward uses it: pruning masks and parametrizations applied."""
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its ``original`` tensors are counted through their owner's parametrized attribute
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:  # type: ignore[union-attr]
                yield getattr(module, name)
        for name, p in module.named_parameters(recurse=False):
            masked = name.endswith("_orig") and hasattr(module, name[: -len("_orig")] + "_mask")
            yield getattr(module, name[: -len("_orig")]) if masked else p


def count_nonzero_params(model: nn.Module) -> int:
    """Parameter elements that are not exactly zero, with pruning masks and parametrizations applied
    (see the module docstring): what a sparse format would store."""
    with torch.no_grad():
        return sum(int(torch.count_nonzero(t)) for t in _effective_parameters(model))


def weight_bytes(params: int, precision: str) -> int:
    """Bytes of ``params`` stored weights at ``precision`` (a key of :data:`BYTES_PER_PARAM`), rounded up."""
    if precision not in BYTES_PER_PARAM:
        raise InputError(f"precision {precision!r} is not known; expected one of {', '.join(BYTES_PER_PARAM)}")
    if params < 0:
        raise InputError(f"params must be >= 0, got {params}")
    return math.ceil(params * BYTES_PER_PARAM[precision])


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs to ``model`` should have: that of its first floating parameter (else buffer), else fp32."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode, then restore every submodule's ``training`` flag as it was.

    The module returned by ``torch.export``'s ``ExportedProgram.module()`` has its mode fixed in its graph
    at export time, and its ``train()``/``eval()`` raise ``NotImplementedError``: such a module runs as it
    was exported, and inside this block its ``train()``/``eval()`` are no-ops returning the module, so that
    tools which switch modes (the TorchScript ONNX exporter) can run it.
    """
    flags = [(m, m.training) for m in model.modules()]
    patched: list[tuple[nn.Module, Any, Any]] = []
    try:
        try:
            model.eval()
        except NotImplementedError:
            for m in model.modules():
                if "train" in vars(m) or "eval" in vars(m):
                    patched.append((m, vars(m).get("train"), vars(m).get("eval")))
                    vars(m)["train"] = vars(m)["eval"] = _no_mode_switch(m)
            model.eval()
        yield model
    finally:
        for m, train, eval_ in patched:
            for name, method in (("train", train), ("eval", eval_)):
                if method is None:
                    vars(m).pop(name, None)
                else:
                    vars(m)[name] = method
        for m, flag in flags:
            m.training = flag


def _no_mode_switch(module: nn.Module) -> Any:
    def keep(mode: bool = True) -> nn.Module:
        return module

    return keep


def _forward_failed(exc: BaseException, shape: Sequence[int]) -> InputError:
    return InputError(
        f"the model's forward failed on an input of shape {tuple(int(s) for s in shape)}: {type(exc).__name__}: {exc}"
    )


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
    """Peak bytes of simultaneously live activations in one forward of ``example`` (see module docstring).

    A forward that fails on ``example`` raises :class:`~devicefit.errors.InputError` naming its shape.
    """
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    tracker = _LiveActivationTracker(exclude)
    try:
        with torch.no_grad(), tracker:
            tracker.track(example)
            out = model(example)
            del out
    except Exception as exc:
        raise _forward_failed(exc, example.shape) from exc
    return tracker.peak


def _mkldnn_rnn_layer_flops(input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any,
                            **kwargs: Any) -> int:
    """FLOPs of one fused LSTM layer: per step and sequence, ``x @ W_ih^T`` and ``h @ W_hh^T`` (2 per MAC)."""
    steps_times_batch = math.prod(input_shape[:-1])
    return 2 * steps_times_batch * (math.prod(w_ih) + math.prod(w_hh))


def flop_counter() -> FlopCounterMode:
    """PyTorch's ``FlopCounterMode`` with the formulas it lacks (see the module docstring): the one counter
    every MAC count of devicefit uses."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer_flops})


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """MACs of one forward of ``example``: the FLOPs of :func:`flop_counter` / 2 (convolutions, matrix products,
    RNN layers).

    A forward that fails on ``example`` raises :class:`~devicefit.errors.InputError` naming its shape.
    """
    try:
        with torch.no_grad(), flop_counter() as counter:
            model(example)
    except Exception as exc:
        raise _forward_failed(exc, example.shape) from exc
    return int(counter.get_total_flops()) // 2


def count_model(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), *, batch_size: int = 1) -> ModelCost:
    """Parameters, MACs, FLOPs, peak activation memory, weight bytes and non-zero parameters of ``model``.

    ``input_shape`` is the shape of one sample without the batch dimension (``(3, 32, 32)`` for NB201,
    ``(features,)`` for an MLP); the counted forward uses a batch of ``batch_size`` zeros of the model's
    floating dtype. It runs in eval mode (:func:`eval_mode`); the model's modes are restored afterwards.
    A forward that fails on the shape raises :class:`~devicefit.errors.InputError`.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    try:
        shape = (batch_size, *(int(s) for s in input_shape))
    except (TypeError, ValueError):
        raise InputError(f"input shape must be a sequence of positive integers, got {input_shape!r}") from None
    if any(s < 1 for s in shape):
        raise InputError(f"input shape must have positive sizes, got {tuple(input_shape)}")
    example = torch.zeros(shape, dtype=float_dtype(model))
    params = count_params(model)
    with eval_mode(model):
        macs = count_macs(model, example)
        peak = peak_activation_bytes(model, example)
    return ModelCost(
        params=params,
        macs=macs,
        flops=2 * macs,
        peak_activation_bytes=peak,
        model_bytes_fp32=weight_bytes(params, "fp32"),
        model_bytes_fp16=weight_bytes(params, "fp16"),
        model_bytes_int8=weight_bytes(params, "int8"),
        input_shape=shape,
        nonzero_params=count_nonzero_params(model),
    )
