"""Recovery training: it learns, masks stay zero, distillation's loss is Hinton's, a killed run resumes exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devicefit.compression import FinetuneConfig, Policy, Unstructured, apply_policy, finetune
from devicefit.compression.train import distillation_loss
from devicefit.errors import InputError
from devicefit.models import LabelledImages


def _task(n: int = 256) -> LabelledImages:
    """A learnable task: the label is which quarter of the image is brightest."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 4, size=n)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 14 * r:14 * r + 14, 14 * c:14 * c + 14] += 120
    return LabelledImages("mnist", "train8k", x, y.astype(np.int64), "synthetic quarters")


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 6 * 6, 4)
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _small(seed: int = 0) -> Small:
    torch.manual_seed(seed)
    return Small()


def test_it_learns_and_masks_stay_zero() -> None:
    data = _task()
    model = apply_policy(_small(), Policy({"fc": Unstructured(0.6)}), torch.zeros(1, 1, 28, 28)).model
    zero = model.fc.weight == 0
    history = finetune(model, data, FinetuneConfig(epochs=4, lr=0.05, batch_size=32), eval_data=data,
                       progress=False)
    assert history.loss_per_epoch[-1] < 0.6 * history.loss_per_epoch[0]
    assert history.accuracy is not None and history.accuracy > 60.0
    assert torch.equal(model.fc.weight == 0, zero)  # weight decay and momentum never revive a pruned weight


def test_distillation_loss_is_hintons() -> None:
    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.5, 0.5, -2.0]])
    y = torch.tensor([2])
    p_t, p_s = F.softmax(t / 2.0, 1), F.softmax(s / 2.0, 1)
    kl = float((p_t * (p_t.log() - p_s.log())).sum())
    ce = float(F.cross_entropy(s, y))
    assert float(distillation_loss(s, t, y, 2.0, 0.7)) == pytest.approx(0.7 * 4.0 * kl + 0.3 * ce, rel=1e-5)
    teacher = _small(1)
    history = finetune(_small(), _task(64), FinetuneConfig(epochs=1, batch_size=32), teacher=teacher, progress=False)
    assert history.steps == 2


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data, config = _task(), FinetuneConfig(epochs=2, batch_size=32, checkpoint_every=3)
    straight = _small()
    finetune(straight, data, config, progress=False)
    killed = _small()
    killed.fail_at = 8  # dies in the 8th step, after the checkpoint of step 6
    with pytest.raises(KeyboardInterrupt):
        finetune(killed, data, config, checkpoint=tmp_path / "ck.pt", progress=False)
    again = _small()  # a new process: fresh weights, everything else from the checkpoint
    history = finetune(again, data, config, checkpoint=tmp_path / "ck.pt", progress=False)
    assert history.resumed_from_step == 6 and history.steps == 16
    for a, b in zip(again.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="other settings: lr=0.01 there, 0.02 now"):
        finetune(_small(), data, FinetuneConfig(epochs=2, batch_size=32, checkpoint_every=3, lr=0.02),
                 checkpoint=tmp_path / "ck.pt", progress=False)


def test_bad_settings_are_refused() -> None:
    for kwargs, message in (({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"),
                            ({"alpha": 2.0}, "alpha"), ({"seed": -1}, "seed")):
        with pytest.raises(InputError, match=message):
            FinetuneConfig(**kwargs)
    assert copy.deepcopy(FinetuneConfig()) == FinetuneConfig()
