"""Recovery training after compression: the one loop for fine-tuning, distillation and noisy training, with
plug-in regularisers (:class:`TrainingHook`) and exact resume.

- **Optimiser**: SGD (momentum 0.9, no Nesterov, weight decay 5e-4) with a cosine schedule from ``lr`` to zero
  over the run, the usual CIFAR recipe. ``epochs`` may be a fraction (0.2 = a fifth of the training set);
  ``max_steps`` caps the run (the schedule spans the capped run).
- **Loss**: cross-entropy on the labels, or with ``distill=True`` and a ``teacher`` (the original model, in eval
  mode), Hinton et al.'s knowledge distillation (arXiv 1503.02531): ``alpha * T^2 * KL(softmax(t/T) ||
  softmax(s/T)) + (1 - alpha) * CE(s, y)`` (:func:`distillation_loss`; the ``T^2`` keeps the soft term's
  gradients on the scale of the hard one). Plus the hooks' ``extra_loss``.
- **Noisy training** (Wang et al. 2021, "Noisy Training Improves E2E ASR for the Edge", arXiv 2107.04677): noise
  in the parameter space during training makes the trained model smoother and generalise better, for dense and
  for pruned models. Here, exactly: at every training step, before the forward, every weight tensor of two or
  more dimensions (conv kernels, linear and recurrent matrices; not biases nor normalisation parameters) gets
  i.i.d. Gaussian noise of standard deviation ``noise_std * std(W)``, ``std(W)`` taken over that tensor's
  unpruned entries at that step; the loss and gradients are computed at the noisy weights, then the clean
  weights are put back exactly and the optimiser updates them. The noise is fresh each step and never present
  in eval mode or after training. (The per-layer relative scale is our choice of units, following the brief;
  the paper's text we could read does not fix it.)
- **Masks** of ``torch.nn.utils.prune`` are respected by construction: the forward uses ``weight_orig *
  weight_mask``, so a pruned weight stays exactly zero in the effective weight whatever weight decay, momentum,
  noise or a hook do to ``weight_orig``.
- **Hooks** (:class:`TrainingHook`): ADMM, reweighted group lasso and other regularisers plug in without a loop
  of their own: ``on_start``, ``extra_loss`` (evaluated at the clean weights), ``after_step`` (e.g. projections
  and dual updates), ``after_epoch``, and ``state_dict``/``load_state_dict`` for resume.
- **Resume**: with ``checkpoint=PATH`` the model, optimiser, schedule, step, losses and the hooks' states are
  saved atomically (temporary file, then ``os.replace``) every ``checkpoint_every`` steps and at the end, as
  plain tensors, lists and numbers (loaded with ``weights_only=True``). Every random draw is a function of
  ``(seed, step)`` (shuffle and augmentation of ``(seed, epoch)``, dropout and noise of ``(seed, step)``), so the
  random state needs no saving: a rerun with the same arguments continues from the checkpoint and ends with the
  same weights, bit for bit, as an uninterrupted run. A checkpoint made with other settings is refused, naming
  the first differing setting. The same seed gives the same run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._files import torch_save_atomic
from ..errors import InputError
from ..models.evaluate import DataSource, _Bar, evaluate_accuracy

__all__ = ["FinetuneConfig", "FinetuneHistory", "TrainingHook", "distillation_loss", "finetune", "noisy_weights"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (see the module docstring for what each does)."""

    epochs: float = 1.0  # fractions allowed: 0.2 is a fifth of the training set
    lr: float = 0.01  # SGD, cosine to zero over the run
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    augment: bool = True  # the data's training augmentation (CIFAR-10: crop 4 + flip; MNIST: none)
    distill: bool = False  # knowledge distillation from the teacher given to finetune (arXiv 1503.02531)
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the distillation term; (1 - alpha) on the labels
    noise_std: float = 0.0  # noisy training (arXiv 2107.04677): relative std of the weight noise, 0 = off
    max_steps: int | None = None
    clip_grad_norm: float | None = None  # the gradients' global L2 norm is clipped to this (RNNs), None = off
    checkpoint_every: int = 50  # steps between checkpoints (when finetune is given a checkpoint path)

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "temperature"):
            _number(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "noise_std"):
            _number(name, getattr(self, name), positive=False)
        _number("momentum", self.momentum, positive=False)
        if not self.momentum < 1:
            raise InputError(f"finetune momentum must be in [0, 1), got {self.momentum!r}")
        _number("alpha", self.alpha, positive=False)
        if not self.alpha <= 1:
            raise InputError(f"finetune alpha must be in [0, 1], got {self.alpha!r}")
        for name in ("batch_size", "checkpoint_every"):
            _integer(name, getattr(self, name), minimum=1)
        _integer("seed", self.seed, minimum=0)
        if self.max_steps is not None:
            _integer("max_steps", self.max_steps, minimum=1)
        if self.clip_grad_norm is not None:
            _number("clip_grad_norm", self.clip_grad_norm, positive=True)
        for name in ("augment", "distill"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"finetune {name} must be True or False, got {getattr(self, name)!r}")


def _number(name: str, value: Any, *, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise InputError(f"finetune {name} must be a {'positive' if positive else 'non-negative'} number, "
                         f"got {value!r}")


def _integer(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive" if minimum == 1 else "a non-negative"
        raise InputError(f"finetune {name} must be {what} integer, got {value!r}")


class TrainingHook:
    """A plug-in of :func:`finetune` (ADMM, reweighted regularisation, ...). Subclass it and override what you
    need; every method is a no-op by default. The loop calls, in order:

    ``on_start(model)``
        once per call of :func:`finetune`, after a checkpoint's weights are restored and before the hook's own
        saved state is loaded (so a resumed hook gets ``on_start`` and then ``load_state_dict``).
    ``extra_loss(model)``
        each step, after the task loss's backward and with the clean (noise-free) weights in place; a scalar
        tensor added to the loss (its gradient joins the task gradient before the optimiser step), or None.
    ``after_step(model, step)``
        after each optimiser step; ``step`` counts the steps done (1 after the first).
    ``after_epoch(model, epoch)``
        after each pass over the data (``epoch`` from 0), and after the last, partial pass of a fractional run.
    ``on_end(model)``
        once when :func:`finetune` returns or fails: take off what ``on_start`` put on the model (forward hooks).
    ``state_dict()`` / ``load_state_dict(state)``
        what the hook must keep across a resume; plain tensors, lists, dicts, numbers and strings only (the
        checkpoint is read with ``weights_only=True``).
    """

    def on_start(self, model: nn.Module) -> None:
        return None

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        return None

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        return None

    def on_end(self, model: nn.Module) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class FinetuneHistory:
    """What a :func:`finetune` call did: steps trained in all (also those before a resume), mean training loss
    per pass over the data (the task loss plus the hooks' extra loss), top-1 accuracy (%) on ``eval_data`` at
    the end, and the step a resumed run started from (0 for a fresh run)."""

    steps: int
    loss_per_epoch: list[float] = field(default_factory=list)
    accuracy: float | None = None
    resumed_from_step: int = 0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                      alpha: float) -> torch.Tensor:
    """Hinton et al.: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)``, the
    KL divergence averaged over the batch."""
    soft = F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


def noisy_weights(model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor | None]]:
    """The tensors noisy training perturbs: ``(name, parameter, prune mask or None)`` for every trainable
    parameter of two or more dimensions (a pruned ``weight_orig`` comes with its ``weight_mask``)."""
    found = []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and p.ndim >= 2:
                mask = getattr(module, name[: -len("_orig")] + "_mask", None) if name.endswith("_orig") else None
                found.append((f"{module_name}.{name}" if module_name else name, p, mask))
    return found


class _Noise:
    """Adds the step's weight noise in place, and puts the clean weights back exactly."""

    def __init__(self, model: nn.Module, relative_std: float) -> None:
        self.relative_std = relative_std
        self.weights = noisy_weights(model) if relative_std > 0 else []
        self._clean: list[torch.Tensor] = []

    def add(self) -> None:
        with torch.no_grad():
            self._clean = [p.detach().clone() for _, p, _ in self.weights]
            for _, p, mask in self.weights:
                kept = p if mask is None else p[mask.bool()]
                scale = float(kept.std()) if kept.numel() > 1 else 0.0
                p.add_(torch.randn_like(p) * (self.relative_std * scale))

    def remove(self) -> None:
        with torch.no_grad():
            for (_, p, _), clean in zip(self.weights, self._clean):
                p.copy_(clean)
        self._clean = []


def finetune(
    model: nn.Module,
    train: DataSource,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    teacher: nn.Module | None = None,
    hooks: Sequence[TrainingHook] = (),
    checkpoint: str | os.PathLike[str] | None = None,
    eval_data: DataSource | None = None,
    progress: bool = True,
) -> FinetuneHistory:
    """Train ``model`` in place on ``train`` (see the module docstring); its accuracy on ``eval_data`` at the end.

    ``teacher`` is required exactly when ``config.distill`` is set. The model's and the teacher's train/eval
    modes are restored at the end.
    """
    _check_arguments(model, train, config, teacher, hooks, eval_data)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = max(1, math.floor(config.epochs * steps_per_epoch + 0.5))  # rounded half up
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                          nesterov=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    settings = _settings(model, train, config, hooks, params)
    step, losses, epoch_loss = 0, [], [0.0, 0]
    path = None if checkpoint is None else Path(checkpoint)
    saved_hooks: list[dict[str, Any]] | None = None
    if path is not None and path.exists():
        step, losses, epoch_loss, saved_hooks = _restore(path, settings, model, opt, sched)
    resumed = step
    for hook in hooks:
        hook.on_start(model)
    if saved_hooks is not None:
        for hook, state in zip(hooks, saved_hooks):
            hook.load_state_dict(state)
    modes = [(m, m.training) for m in (model, teacher) if m is not None]
    if teacher is not None:
        teacher.eval()
    noise = _Noise(model, config.noise_std)
    bar = _Bar(progress, "fine-tuning", total, completed=step)
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            rng = np.random.default_rng([config.seed, epoch])  # one shuffle per epoch: resumable at any step
            seen = 0
            for seen, (x, y) in enumerate(
                    train.batches(config.batch_size, shuffle=True, augment=config.augment, rng=rng), 1):
                if seen > steps_per_epoch:
                    break  # reported below
                if seen <= offset:
                    continue  # trained before the restart (the batches are still drawn, to replay the rng)
                loss = _step(model, x, y, config, teacher, hooks, noise, opt, step)
                sched.step()
                step += 1
                for hook in hooks:
                    hook.after_step(model, step)
                epoch_loss = [epoch_loss[0] + loss, epoch_loss[1] + 1]
                if step % steps_per_epoch == 0 or step == total:
                    losses.append(epoch_loss[0] / epoch_loss[1])
                    epoch_loss = [0.0, 0]
                    for hook in hooks:
                        hook.after_epoch(model, epoch)
                if path is not None and (step % config.checkpoint_every == 0 or step == total):
                    _save(path, settings, model, opt, sched, step, losses, epoch_loss, hooks)
                bar.advance()
                if step >= total:
                    break
            if step < total and seen != steps_per_epoch:
                count = f"more than {steps_per_epoch}" if seen > steps_per_epoch else str(seen)
                raise InputError(f"train data yielded {count} batches of {config.batch_size} in a pass over its "
                                 f"{len(train)} items; expected {steps_per_epoch}")
    finally:
        bar.close()
        for m, was_training in modes:
            m.train(was_training)
        for hook in hooks:
            hook.on_end(model)
    accuracy = None if eval_data is None else evaluate_accuracy(model, eval_data, progress=False)
    return FinetuneHistory(step, losses, accuracy, resumed)


def _check_arguments(model: nn.Module, train: DataSource, config: FinetuneConfig, teacher: nn.Module | None,
                     hooks: Sequence[TrainingHook], eval_data: DataSource | None) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, FinetuneConfig):
        raise InputError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    for name, data in (("train", train), ("eval_data", eval_data)):
        if data is not None and not isinstance(data, DataSource):
            raise InputError(f"{name} must be a DataSource (LabelledImages, TensorData, ...), got "
                             f"{type(data).__name__}")
    if len(train) == 0:
        raise InputError("train data is empty")
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("model has no trainable parameters")
    if config.distill and teacher is None:
        raise InputError("config.distill is set but no teacher was given: pass teacher=<the original model>")
    if teacher is not None and not config.distill:
        raise InputError("a teacher was given but config.distill is False: set FinetuneConfig(distill=True) to "
                         "distil from it, or give no teacher")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise InputError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    for i, hook in enumerate(hooks):
        if not isinstance(hook, TrainingHook):
            raise InputError(f"hooks[{i}] must be a TrainingHook (subclass it), got {type(hook).__name__}")


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: FinetuneConfig, teacher: nn.Module | None,
          hooks: Sequence[TrainingHook], noise: _Noise, opt: torch.optim.Optimizer, step: int) -> float:
    """One optimiser step; its random draws (dropout, weight noise) are a function of (seed, step)."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed * 1_000_003 + step)
        model.train()
        opt.zero_grad(set_to_none=True)
        noise.add()
        try:
            out = model(x)
            if teacher is None:
                loss = F.cross_entropy(out, y)
            else:
                with torch.no_grad():
                    target = teacher(x)
                loss = distillation_loss(out, target, y, config.temperature, config.alpha)
            loss.backward()
        finally:
            noise.remove()
        value = float(loss.detach())
        extras = []
        for hook in hooks:
            extra = hook.extra_loss(model)
            if extra is None:
                continue
            if not isinstance(extra, torch.Tensor) or extra.numel() != 1:
                raise InputError(f"{type(hook).__name__}.extra_loss must return a scalar tensor or None, got "
                                 f"{type(extra).__name__} {tuple(getattr(extra, 'shape', ()))}")
            extras.append(extra.reshape(()))
        if extras:
            extra_total = torch.stack(extras).sum()
            if extra_total.requires_grad:
                extra_total.backward()
            value += float(extra_total.detach())
        if not math.isfinite(value):
            raise InputError(f"the training loss is {value} at step {step + 1}: lower lr (now {config.lr})")
        if config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.clip_grad_norm)
        opt.step()
    return value


def _settings(model: nn.Module, train: DataSource, config: FinetuneConfig, hooks: Sequence[TrainingHook],
              params: list[nn.Parameter]) -> dict[str, Any]:
    """What a checkpoint must have been made with to be continued (checkpoint_every is free to change)."""
    settings: dict[str, Any] = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"
                                and (k != "clip_grad_norm" or v is not None)}  # older checkpoints lack it
    settings.update(train=train.description, train_items=len(train), model=type(model).__name__,
                    parameters=[list(p.shape) for p in params], hooks=[type(h).__name__ for h in hooks])
    return settings


def _save(path: Path, settings: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
          step: int, losses: list[float], epoch_loss: list[float], hooks: Sequence[TrainingHook]) -> None:
    state = {"settings": json.dumps(settings, sort_keys=True), "model": model.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "losses": losses,
             "epoch_loss": epoch_loss, "hooks": [h.state_dict() for h in hooks]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(state, path)


def _restore(path: Path, settings: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
             sched: Any) -> tuple[int, list[float], list[float], list[dict[str, Any]]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["settings"])
    except Exception as exc:
        raise InputError(f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc}); delete it "
                         "to start afresh") from None
    now = json.loads(json.dumps(settings))  # the same JSON round trip as the saved settings
    differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if differ:
        k = differ[0]
        raise InputError(f"checkpoint {str(path)!r} was made with other settings: {k}={saved.get(k)!r} there, "
                         f"{now.get(k)!r} now ({len(differ)} difference(s)); use another checkpoint path")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except Exception as exc:
        raise InputError(f"checkpoint {str(path)!r} does not fit the model ({type(exc).__name__}: {exc}); was the "
                         "model compressed the same way before training?") from None
    return int(state["step"]), list(state["losses"]), list(state["epoch_loss"]), list(state["hooks"])


#: Recovery-loop settings that train the MNIST models from scratch on train8k.
MNIST_TRAINING: dict[str, dict[str, Any]] = {
    "lenet5": {"epochs": 10.0, "lr": 0.05, "batch_size": 64, "augment": False},
    "lstm": {"epochs": 20.0, "lr": 0.1, "batch_size": 64, "augment": False},
    "gru": {"epochs": 20.0, "lr": 0.1, "batch_size": 64, "augment": False},
}


def train_mnist_model(name: str, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None,
                      seed: int = 0, progress: bool = True) -> nn.Module:
    """LeNet-5, the LSTM or the GRU trained on MNIST ``train8k`` with the recovery loop (settings
    :data:`MNIST_TRAINING`, SGD + cosine), cached as a state dict at ``path``: when ``path`` exists it is loaded
    (checked against the architecture) instead of training."""
    if name not in MNIST_TRAINING:
        raise InputError(f"train_mnist_model trains {', '.join(MNIST_TRAINING)}, not {name!r}")
    import torch

    from ..models import get_model, load_weights, mnist_split

    target = Path(path)
    model = get_model(name)
    if target.exists():
        return load_weights(model, target)
    torch.manual_seed(seed)
    model = get_model(name)  # initialised from the seed
    finetune(model, mnist_split("train8k", data_dir), FinetuneConfig(seed=seed, **MNIST_TRAINING[name]),
             progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(model.state_dict(), target)
    return model.eval()
