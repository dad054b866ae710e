"""Recovery training after compression: one loop for fine-tuning and knowledge distillation, resumable.

SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule to zero over the run (the usual CIFAR recipe),
cross-entropy on the labels, and, with a teacher (the original model), Hinton et al.'s distillation
(arXiv 1503.02531): ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE``.
Masks of ``torch.nn.utils.prune`` are respected by construction: the forward uses ``weight_orig *
weight_mask``, so a pruned weight gets no gradient and stays exactly zero in the effective weight (weight
decay moves only ``weight_orig``).

With ``checkpoint=PATH`` the model, optimizer, schedule, step and random states are saved atomically every
``checkpoint_every`` steps and at the end (plain tensors, loaded with ``weights_only=True``); a rerun with
the same settings continues from it and ends with the same weights as an uninterrupted run; a checkpoint
made with other settings is refused with the differing setting named.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.evaluate import LabelledImages, evaluate_accuracy


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 1.0  # fractions allowed: 0.2 is a fifth of the training set
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    augment: bool = True
    temperature: float = 4.0  # distillation, with a teacher
    alpha: float = 0.9
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise InputError(f"finetune {name} must be a positive number, got {v!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"finetune alpha must be in [0, 1], got {self.alpha!r}")
        for name in ("batch_size", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"finetune {name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"finetune seed must be a non-negative integer, got {self.seed!r}")


@dataclass
class FinetuneHistory:
    steps: int
    loss_per_epoch: list[float] = field(default_factory=list)
    accuracy: float | None = None  # on eval_data at the end, %
    resumed_from_step: int = 0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                      alpha: float) -> torch.Tensor:
    """Hinton et al.: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)``."""
    soft = F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


def finetune(
    model: nn.Module,
    train: LabelledImages,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    teacher: nn.Module | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    eval_data: LabelledImages | None = None,
    progress: bool = True,
) -> FinetuneHistory:
    """Train ``model`` in place on ``train`` (see the module docstring); its accuracy on ``eval_data`` at the end."""
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = max(1, round(config.epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    settings = {**asdict(config), "train": train.description, "train_images": len(train),
                "teacher": teacher is not None, "model": type(model).__name__,
                "parameters": [list(p.shape) for p in params]}
    step, losses, epoch_loss = 0, [], [0.0, 0]
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and path.exists():
        step, losses, epoch_loss = _restore(path, settings, model, opt, sched)
    resumed = step
    if teacher is not None:
        teacher.eval()
    torch.manual_seed(config.seed)
    bar = _bar(progress, total, step)
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            rng = np.random.default_rng([config.seed, epoch])  # one shuffle per epoch: resumable at any step
            batches = train.batches(config.batch_size, shuffle=True, augment=config.augment, rng=rng)
            for i, (x, y) in enumerate(batches):
                if i < offset:
                    continue  # already trained before the restart
                if step >= total:
                    break
                with torch.random.fork_rng():
                    torch.manual_seed(config.seed * 1_000_003 + step)  # dropout etc.: a function of the step
                    model.train()
                    out = model(x)
                    if teacher is None:
                        loss = F.cross_entropy(out, y)
                    else:
                        with torch.no_grad():
                            target = teacher(x)
                        loss = distillation_loss(out, target, y, config.temperature, config.alpha)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                step += 1
                epoch_loss = [epoch_loss[0] + float(loss.detach()), epoch_loss[1] + 1]
                if step % steps_per_epoch == 0 or step == total:
                    losses.append(epoch_loss[0] / epoch_loss[1])
                    epoch_loss = [0.0, 0]
                if path is not None and (step % config.checkpoint_every == 0 or step == total):
                    _save(path, settings, model, opt, sched, step, losses, epoch_loss)
                bar(step)
    finally:
        bar(None)
    model.eval()
    acc = None if eval_data is None else evaluate_accuracy(model, eval_data)
    return FinetuneHistory(step, losses, acc, resumed)


def _save(path: Path, settings: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
          step: int, losses: list[float], epoch_loss: list[float]) -> None:
    state = {"settings": repr(sorted(settings.items())), "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "step": step, "losses": losses, "epoch_loss": epoch_loss}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _restore(path: Path, settings: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer,
             sched: Any) -> tuple[int, list[float], list[float]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}: {exc})") from None
    saved = dict(_literal(state.get("settings", "[]")))
    differ = [k for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
    if differ:
        k = differ[0]
        raise InputError(f"checkpoint {str(path)!r} was made with other settings: {k}={saved.get(k)!r} there, "
                         f"{settings.get(k)!r} now ({len(differ)} difference(s)); use another checkpoint path")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"]), list(state["losses"]), list(state["epoch_loss"])


def _literal(text: str) -> Any:
    import ast

    return ast.literal_eval(text)


def _bar(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return lambda step: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]fine-tuning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    bar.start()
    task = bar.add_task("steps", total=total, completed=start)

    def update(step: int | None) -> None:
        if step is None:
            bar.stop()
        else:
            bar.update(task, completed=step)

    return update
