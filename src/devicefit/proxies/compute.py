"""Score one network with any set of proxies, sharing passes: the entry point of the Python API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError
from .baselines import flops, params
from .gradient_pass import GRADIENT_PROXIES, gradient_pass
from .result import PROXIES, ProxyResult, check_proxy_names
from .synflow_pass import synflow


@dataclass(frozen=True)
class ProxyScores:
    """The results of one network, by proxy name, and the seconds each pass took."""

    results: dict[str, ProxyResult]
    seconds: dict[str, float] = field(default_factory=dict)

    def score(self, name: str) -> float | None:
        return self.results[name].score

    def to_record(self) -> dict[str, object]:
        return {
            "scores": {n: r.score for n, r in self.results.items() if r.ok},
            "errors": {n: r.error for n, r in self.results.items() if not r.ok},
            "seconds": self.seconds,
        }


def compute_proxies(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    names: list[str] | tuple[str, ...] = tuple(PROXIES),
    *,
    scratch: bool = False,
) -> ProxyScores:
    """Compute the proxies ``names`` of ``model`` on one minibatch ``inputs`` (N, ...) with labels ``targets``.

    gradient proxies share one forward (see :mod:`.gradient_pass`); synflow runs on a BN-free float64
    copy with an all-ones input (the batch only gives the input shape); params and flops need no data.
    The model is left as it was (mode, buffers, gradients), unless ``scratch`` says it is a throwaway network:
    then synflow, run last, works on it in place instead of on a copy. An exception inside a pass is reported
    as the failure of that pass's proxies, with the reason.
    """
    names = check_proxy_names(list(names))
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        got = getattr(inputs, "shape", inputs)
        raise InputError(f"inputs must be a tensor (N, ...) with a batch dimension, got {got}")
    if not isinstance(targets, torch.Tensor) or targets.shape != inputs.shape[:1]:
        got = getattr(targets, "shape", targets)
        raise InputError(f"targets must be a tensor of shape ({inputs.shape[0]},), got {got}")
    results: dict[str, ProxyResult] = {}
    seconds: dict[str, float] = {}
    shape = tuple(inputs.shape[1:])

    grad_names = [n for n in names if n in GRADIENT_PROXIES]
    if grad_names:
        t = time.perf_counter()
        try:
            results.update(gradient_pass(model, inputs, targets, grad_names))
        except RuntimeError as exc:
            results.update({n: ProxyResult.failed(n, f"{n} failed: {exc}") for n in grad_names})
        seconds["gradient"] = time.perf_counter() - t
    if "params" in names:
        results["params"] = params(model)
    if "flops" in names:
        t = time.perf_counter()
        results["flops"] = flops(model, shape)
        seconds["flops"] = time.perf_counter() - t
    if "synflow" in names:  # last: on a scratch network it changes the model (BN removed, |weights|, float64)
        t = time.perf_counter()
        results["synflow"] = synflow(model, shape, copy_model=not scratch)
        seconds["synflow"] = time.perf_counter() - t
    return ProxyScores({n: results[n] for n in names}, seconds)
