"""Inputs synthesised from a trained model alone, to distil it when its training data may not be shared.

The brief for this module names arXiv 2003.06513 (compression by distillation on synthetic data, for privacy);
we could not read that paper's method in this session, so what is here is the standard data-free synthesis it
builds on, DeepInversion (Yin et al., "Dreaming to Distill", arXiv 1912.08795), as the reference code
NVlabs/DeepInversion does it for CIFAR (``cifar10/deepinversion_cifar10.py``), without its optional "adaptive"
student-competition term: starting from Gaussian noise, a batch of inputs ``x`` with target classes ``y``
(0, 1, ..., C-1 repeated) is optimised with Adam (lr 0.1, 2,000 iterations) to minimise

    CE(teacher(x'), y) + bn_weight * sum_l (||mu_l(x') - running_mean_l||_2 + ||var_l(x') - running_var_l||_2)
                       + tv_weight * TV(x') + l2_weight * ||x'||_2

where ``x'`` is ``x`` rolled by a random jitter of up to 2 pixels each step, ``mu_l``/``var_l`` are the batch
mean and (biased) variance of the input of the teacher's BatchNorm layer ``l`` (the statistics of the private
training data the teacher kept), and TV sums the L2 norms of the differences between neighbouring pixels
(4 directions). The reference's defaults: ``bn_weight`` 100, ``tv_weight`` 2.5e-5, ``l2_weight`` 0. The last
iterate is returned (the reference means to keep the lowest-loss one, but it stores ``inputs.data``, a view that
the optimiser keeps updating, so it returns the last too). The teacher stays in eval mode and its weights get
no gradient.

A teacher without BatchNorm (LeNet-5, the RNNs) has no statistics to match: the objective is then the class
and smoothness terms alone ("class impressions"), which are much weaker data; say so when you use them.

:func:`synthetic_images` returns a :class:`~devicefit.models.TensorData` whose labels are the teacher's own
predictions on the synthesised inputs, so :func:`~devicefit.compression.finetune` can distil on it directly
(``FinetuneConfig(distill=True, alpha=...)`` with the teacher).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.evaluate import TensorData, _Bar

__all__ = ["bn_statistics_loss", "synthetic_images"]


class _BatchNormStatistics:
    """Forward hooks on every BatchNorm of a model: the distance of each one's input statistics to its running
    statistics, summed (DeepInversion's feature-distribution regulariser)."""

    def __init__(self, model: nn.Module) -> None:
        self.losses: list[torch.Tensor] = []
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.running_mean is not None and m.running_var is not None]
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        x = inputs[0]
        dims = [d for d in range(x.ndim) if d != 1]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self.losses.append(torch.linalg.vector_norm(var - module.running_var.to(var.dtype))
                           + torch.linalg.vector_norm(mean - module.running_mean.to(mean.dtype)))

    def take(self, like: torch.Tensor) -> torch.Tensor:
        total = torch.stack(self.losses).sum() if self.losses else like.new_zeros(())
        self.losses = []
        return total

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def bn_statistics_loss(teacher: nn.Module, x: torch.Tensor) -> float:
    """DeepInversion's BatchNorm term for inputs ``x``: sum over the teacher's BatchNorm layers of the L2
    distances of the batch mean and variance of their inputs to their running statistics (eval mode, no grad).
    0.0 for a teacher without BatchNorm."""
    stats = _BatchNormStatistics(teacher)
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            teacher(x)
        return float(stats.take(x))
    finally:
        stats.close()
        teacher.train(was_training)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """The reference's TV: L2 norms of horizontal, vertical and both diagonal neighbour differences, summed."""
    if x.ndim < 4:
        return x.new_zeros(())
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))  # type: ignore[return-value]


def synthetic_images(
    teacher: nn.Module,
    n: int,
    shape: Sequence[int],
    *,
    steps: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 0.1,
    bn_weight: float = 100.0,
    tv_weight: float = 2.5e-5,
    l2_weight: float = 0.0,
    jitter: int = 2,
    progress: bool = True,
) -> TensorData:
    """``n`` inputs of ``shape`` (one sample, e.g. ``(3, 32, 32)``) synthesised from ``teacher`` alone, in the
    teacher's input space (normalised), labelled with the teacher's predictions (see the module docstring).

    Inputs are made in batches of ``batch_size``, each optimised for ``steps`` Adam steps; batch ``b`` starts
    from noise drawn with seed ``(seed, b)``, so the same arguments give the same images.
    """
    if not isinstance(teacher, nn.Module):
        raise InputError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    for name, value in (("n", n), ("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise InputError(f"jitter must be a non-negative integer (pixels), got {jitter!r}")
    for name, value in (("lr", lr), ("bn_weight", bn_weight), ("tv_weight", tv_weight), ("l2_weight", l2_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a non-negative number, got {value!r}")
    try:
        sample = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be the shape of one input, like (3, 32, 32), got {shape!r}") from None
    if not sample or any(s < 1 for s in sample):
        raise InputError(f"shape must be positive sizes like (3, 32, 32), got {tuple(shape)}")
    was_training = teacher.training
    teacher.eval()
    stats = _BatchNormStatistics(teacher)
    bar = _Bar(progress, "synthesising inputs", math.ceil(n / batch_size) * steps)
    try:
        classes = _classes(teacher, sample)
        stats.take(torch.zeros(()))  # drop the probe's statistics
        images, labels = [], []
        for b, start in enumerate(range(0, n, batch_size)):
            size = min(batch_size, n - start)
            x = _invert_batch(teacher, stats, size, sample, classes, seed, b, steps, lr, bn_weight, tv_weight,
                              l2_weight, jitter, bar)
            with torch.no_grad():
                labels.append(teacher(x).argmax(1))
            stats.take(x)
            images.append(x)
    finally:
        bar.close()
        stats.close()
        teacher.train(was_training)
    return TensorData(torch.cat(images), torch.cat(labels),
                      f"{n} inputs synthesised from {type(teacher).__name__} (DeepInversion, {steps} steps, "
                      f"seed {seed})")


def _classes(teacher: nn.Module, sample: tuple[int, ...]) -> int:
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(2, *sample))
    except Exception as exc:
        raise InputError(f"the teacher does not accept inputs of shape {sample} "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 2:
        raise InputError(f"the teacher must return class logits (batch, classes), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


def _invert_batch(teacher: nn.Module, stats: _BatchNormStatistics, size: int, sample: tuple[int, ...],
                  classes: int, seed: int, batch: int, steps: int, lr: float, bn_weight: float, tv_weight: float,
                  l2_weight: float, jitter: int, bar: _Bar) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + batch)
    x = torch.randn((size, *sample), generator=gen).requires_grad_(True)
    targets = torch.arange(size) % classes
    opt = torch.optim.Adam([x], lr=lr)
    spatial = (x.ndim - 2, x.ndim - 1) if x.ndim >= 4 else ()
    for _ in range(steps):
        moved = x
        if jitter and spatial:
            shifts = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
            moved = torch.roll(x, shifts=shifts, dims=spatial)
        loss = F.cross_entropy(teacher(moved), targets)
        loss = loss + bn_weight * stats.take(loss) + tv_weight * _total_variation(moved)
        if l2_weight:
            loss = loss + l2_weight * torch.linalg.vector_norm(moved)
        (grad,) = torch.autograd.grad(loss, [x])  # the teacher's weights get no gradient
        opt.zero_grad(set_to_none=True)
        x.grad = grad
        opt.step()
        bar.advance()
    return x.detach()
