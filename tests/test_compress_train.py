"""The recovery loop: it learns, masks stay zero, distillation's loss is Hinton's, weight noise is there in
training and gone in eval, hooks are called and their loss counts, and a killed run resumes exactly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from devicefit.compression.train import (
    FinetuneConfig,
    TrainingHook,
    distillation_loss,
    finetune,
    noisy_weights,
)
from devicefit.errors import InputError
from devicefit.models import LabelledImages, TensorData, evaluate_accuracy, get_model, mnist_split

from .conftest import need_file


def _task(n: int = 256) -> LabelledImages:
    """A learnable task: the label is which quarter of the image is brightest."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 4, size=n)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 14 * r : 14 * r + 14, 14 * c : 14 * c + 14] += 120
    return LabelledImages("mnist", "quarters", x, y.astype(np.int64), "mnist", "synthetic quarters")


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 6 * 6, 4)
        self.calls = 0
        self.fail_at: int | None = None
        self.seen: list[torch.Tensor] = []  # fc weight as each training forward saw it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        if self.training:
            self.seen.append(self.fc.weight.detach().clone())
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _small(seed: int = 0) -> Small:
    torch.manual_seed(seed)
    return Small()


class Counter(TrainingHook):
    """Records what the loop calls, keeps a state across resume, and pulls fc's weights towards zero."""

    def __init__(self, strength: float = 0.0) -> None:
        self.strength = strength
        self.calls: list[tuple[str, int]] = []
        self.total_steps = 0

    def on_start(self, model: nn.Module) -> None:
        self.calls.append(("start", 0))

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return self.strength * model.fc.weight.pow(2).sum() if self.strength else None

    def after_step(self, model: nn.Module, step: int) -> None:
        self.calls.append(("step", step))
        self.total_steps += 1

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        self.calls.append(("epoch", epoch))

    def state_dict(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_steps = state["total_steps"]


def test_it_learns_and_pruned_weights_stay_exactly_zero_under_decay_and_noise() -> None:
    data = _task()
    model = _small()
    prune.l1_unstructured(model.fc, "weight", amount=0.6)
    prune.l1_unstructured(model.conv, "weight", amount=0.3)
    zero_fc, zero_conv = model.fc.weight == 0, model.conv.weight == 0
    history = finetune(model, data, FinetuneConfig(epochs=4, lr=0.05, batch_size=32, noise_std=0.05),
                       eval_data=data, progress=False)
    assert len(history.loss_per_epoch) == 4 and history.steps == 32
    assert history.loss_per_epoch[-1] < 0.6 * history.loss_per_epoch[0]
    assert history.accuracy is not None and history.accuracy > 60.0
    assert torch.equal(model.fc.weight == 0, zero_fc) and torch.equal(model.conv.weight == 0, zero_conv)
    assert not torch.equal(model.fc.weight_orig == 0, zero_fc)  # weight_orig moved, the effective weight did not
    assert [name for name, _, mask in noisy_weights(model) if mask is not None] == ["conv.weight_orig",
                                                                                    "fc.weight_orig"]


def test_lenet_loss_falls_on_512_mnist_images(data_root: Path) -> None:
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    data = mnist_split("train8k", data_root).subset(512)
    torch.manual_seed(0)
    model = get_model("lenet5")
    history = finetune(model, data, FinetuneConfig(epochs=3, lr=0.05, batch_size=64, augment=False),
                       progress=False)
    assert history.steps == 24 and history.loss_per_epoch[-1] < 0.5 * history.loss_per_epoch[0]


def test_rnn_classifier_trains_in_the_same_loop() -> None:
    torch.manual_seed(0)
    model = get_model("gru")
    history = finetune(model, _task(128), FinetuneConfig(epochs=2, lr=0.1, batch_size=32, noise_std=0.05),
                       progress=False)
    assert history.steps == 8 and all(np.isfinite(history.loss_per_epoch))
    assert [name for name, _, _ in noisy_weights(model)] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "fc.weight"]


def test_distillation_loss_is_hintons() -> None:
    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.5, 0.5, -2.0]])
    y = torch.tensor([2])
    p_t, p_s = F.softmax(t / 2.0, 1), F.softmax(s / 2.0, 1)
    kl = float((p_t * (p_t.log() - p_s.log())).sum())
    ce = -float(F.log_softmax(s, 1)[0, 2])
    assert float(distillation_loss(s, t, y, 2.0, 0.7)) == pytest.approx(0.7 * 4.0 * kl + 0.3 * ce, rel=1e-6)
    # a student equal to its teacher has no soft loss: alpha = 1 leaves exactly zero
    assert float(distillation_loss(t, t, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_runs_and_needs_the_flag_and_the_teacher() -> None:
    data, teacher = _task(64), _small(1).eval()
    student = _small()
    before = copy.deepcopy(teacher.state_dict())
    history = finetune(student, data, FinetuneConfig(epochs=2, batch_size=32, distill=True, alpha=1.0),
                       teacher=teacher, progress=False)
    assert history.steps == 4 and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), before.values()))
    with pytest.raises(InputError, match="no teacher"):
        finetune(_small(), data, FinetuneConfig(distill=True), progress=False)
    with pytest.raises(InputError, match="distill is False"):
        finetune(_small(), data, FinetuneConfig(), teacher=teacher, progress=False)


def test_weight_noise_is_relative_in_training_and_off_in_eval() -> None:
    data = _task(64)
    model = _small()
    w0 = model.fc.weight.detach().clone()
    finetune(model, data, FinetuneConfig(epochs=1, batch_size=64, noise_std=0.2, augment=False), progress=False)
    noise = model.seen[0] - w0  # the first forward saw the initial weights plus noise
    assert float(noise.std() / w0.std()) == pytest.approx(0.2, rel=0.1)
    final = model.fc.weight.detach().clone()
    assert model.training  # mode restored (a fresh module trains)
    model.eval()
    x, _ = next(data.batches(64))
    with torch.no_grad():
        clean = model.fc(torch.relu(model.conv(x)).flatten(1))
        assert torch.equal(model(x), clean) and torch.equal(model(x), clean)  # no noise, deterministic
    assert torch.equal(model.fc.weight, final)
    quiet = _small()
    finetune(quiet, data, FinetuneConfig(epochs=1, batch_size=64, augment=False), progress=False)
    assert torch.equal(quiet.seen[0], w0)  # noise_std=0: the forward sees the weights themselves


def test_hooks_are_called_in_order_and_their_loss_counts() -> None:
    data, hook = _task(96), Counter()
    finetune(_small(), data, FinetuneConfig(epochs=1.5, batch_size=32), hooks=[hook], progress=False)
    assert hook.calls == [("start", 0), ("step", 1), ("step", 2), ("step", 3), ("epoch", 0), ("step", 4),
                          ("step", 5), ("epoch", 1)]
    # one SGD step: the extra loss's gradient (2 * strength * w, at the clean weights) joins the task gradient
    free, pulled = _small(), _small()
    w0 = free.fc.weight.detach().clone()
    config = FinetuneConfig(batch_size=32, max_steps=1, noise_std=0.1)
    h_free = finetune(free, data, config, progress=False)
    h_pulled = finetune(pulled, data, config, hooks=[Counter(0.5)], progress=False)
    step = pulled.fc.weight.detach() - free.fc.weight.detach()
    torch.testing.assert_close(step, -0.01 * 2 * 0.5 * w0, rtol=1e-4, atol=1e-7)
    assert torch.equal(pulled.conv.weight, free.conv.weight)
    extra = 0.5 * float(w0.pow(2).sum())
    assert h_pulled.loss_per_epoch[0] == pytest.approx(h_free.loss_per_epoch[0] + extra, rel=1e-5)

    class Bad(TrainingHook):
        def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
            return torch.ones(3)

    with pytest.raises(InputError, match="Bad.extra_loss must return a scalar"):
        finetune(_small(), data, FinetuneConfig(max_steps=1), hooks=[Bad()], progress=False)


def test_same_seed_same_run_and_max_steps_caps_it() -> None:
    data, config = _task(), FinetuneConfig(epochs=2, batch_size=32, noise_std=0.1, max_steps=5)
    a, b = _small(), _small()
    ha, hb = finetune(a, data, config, progress=False), finetune(b, data, config, progress=False)
    assert ha.steps == 5 and ha == hb
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = _small()
    finetune(c, data, FinetuneConfig(epochs=2, batch_size=32, noise_std=0.1, max_steps=5, seed=1), progress=False)
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = _task()
    config = FinetuneConfig(epochs=2, batch_size=32, checkpoint_every=3, noise_std=0.05)
    straight, hook = _small(), Counter(0.01)
    finetune(straight, data, config, hooks=[hook], progress=False)
    killed = _small()
    killed.fail_at = 8  # dies in the 8th step, after the checkpoint of step 6
    with pytest.raises(KeyboardInterrupt):
        finetune(killed, data, config, hooks=[Counter(0.01)], checkpoint=tmp_path / "ck.pt", progress=False)
    again, again_hook = _small(), Counter(0.01)  # a new process: fresh weights, everything else from the checkpoint
    history = finetune(again, data, config, hooks=[again_hook], checkpoint=tmp_path / "ck.pt", progress=False)
    assert history.resumed_from_step == 6 and history.steps == 16 and len(history.loss_per_epoch) == 2
    assert again_hook.total_steps == hook.total_steps == 16  # the hook's state came back
    for a, b in zip(again.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "ck.pt.tmp").exists()
    with pytest.raises(InputError, match="other settings: lr=0.01 there, 0.02 now"):
        finetune(_small(), data, FinetuneConfig(epochs=2, batch_size=32, checkpoint_every=3, noise_std=0.05,
                                                lr=0.02), hooks=[Counter(0.01)], checkpoint=tmp_path / "ck.pt",
                 progress=False)
    with pytest.raises(InputError, match="other settings: hooks="):
        finetune(_small(), data, config, checkpoint=tmp_path / "ck.pt", progress=False)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt' could not be read"):
        finetune(_small(), data, config, checkpoint=tmp_path / "bad.pt", progress=False)


def test_tensor_data_trains_and_evaluates() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    y = (x[:, 0, :14].mean((1, 2)) > x[:, 0, 14:].mean((1, 2))).long()
    data = TensorData(x, y, "random halves")
    model = _small()
    finetune(model, data, FinetuneConfig(epochs=5, lr=0.05, batch_size=16), progress=False)
    assert evaluate_accuracy(model, data) > 75.0
    assert len(data.subset(10)) == 10 and torch.equal(data.subset(10).y, data.subset(10).y)


def test_bad_settings_and_inputs_are_refused() -> None:
    for kwargs, message in (({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"),
                            ({"alpha": 2.0}, "alpha"), ({"seed": -1}, "seed"), ({"momentum": 1.0}, "momentum"),
                            ({"noise_std": -0.1}, "noise_std"), ({"max_steps": 0}, "max_steps"),
                            ({"distill": 1}, "distill"), ({"lr": float("nan")}, "lr")):
        with pytest.raises(InputError, match=message):
            FinetuneConfig(**kwargs)
    assert copy.deepcopy(FinetuneConfig()) == FinetuneConfig()
    with pytest.raises(InputError, match="train must be a DataSource"):
        finetune(_small(), [(torch.zeros(1, 1, 28, 28), torch.zeros(1))], progress=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="hooks\\[0\\] must be a TrainingHook"):
        finetune(_small(), _task(32), hooks=[object()], progress=False)  # type: ignore[list-item]

    class Short(TensorData):
        def batches(self, batch_size: int, **kwargs: Any) -> Any:
            yield from list(super().batches(batch_size, **kwargs))[:1]

    with pytest.raises(InputError, match="yielded 1 batches .* expected 4"):
        finetune(_small(), Short(torch.zeros(64, 1, 28, 28), torch.zeros(64, dtype=torch.int64)),
                 FinetuneConfig(epochs=2, batch_size=16), progress=False)


def _quarters16(n: int, seed: int) -> LabelledImages:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, 16, 16, 1), dtype=np.uint8)
    y = rng.integers(0, 4, size=n)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] += 120
    return LabelledImages("mnist", "quarters16", x, y.astype(np.int64), "mnist", f"quarters 16x16 seed {seed}")


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Linear(8 * 16, 4))


def test_distillation_on_synthetic_images_transfers_what_noise_does_not() -> None:
    from devicefit.compression.distill import bn_statistics_loss, synthetic_images

    torch.manual_seed(0)
    teacher = _bn_net()
    test = _quarters16(256, 1)
    finetune(teacher, _quarters16(512, 0), FinetuneConfig(epochs=3, lr=0.05, batch_size=32), progress=False)
    assert evaluate_accuracy(teacher, test) > 95.0
    synthetic = synthetic_images(teacher, 128, (1, 16, 16), steps=150, batch_size=64, progress=False)
    assert synthetic.x.shape == (128, 1, 16, 16) and torch.bincount(synthetic.y, minlength=4).min() >= 16
    noise = TensorData(torch.randn(128, 1, 16, 16, generator=torch.Generator().manual_seed(0)), synthetic.y)
    # the synthetic inputs match the BatchNorm statistics the teacher kept of its (real) training data
    assert bn_statistics_loss(teacher, synthetic.x) < 0.1 * bn_statistics_loss(teacher, noise.x)
    config = FinetuneConfig(epochs=10, lr=0.05, batch_size=32, distill=True, alpha=1.0)
    accuracy = {}
    for name, data in (("synthetic", synthetic), ("noise", noise)):
        torch.manual_seed(1)
        student = _bn_net()
        finetune(student, data, config, teacher=teacher, progress=False)
        accuracy[name] = evaluate_accuracy(student, test)  # on real images the student never saw
    assert accuracy["synthetic"] > 90.0 and accuracy["synthetic"] > accuracy["noise"] + 20.0
    again = synthetic_images(teacher, 8, (1, 16, 16), steps=3, batch_size=4, progress=False)
    assert torch.equal(again.x, synthetic_images(teacher, 8, (1, 16, 16), steps=3, batch_size=4, progress=False).x)
    assert teacher.training  # mode restored
    with pytest.raises(InputError, match="shape"):
        synthetic_images(teacher, 8, (3, 16, 16), steps=1, progress=False)
    with pytest.raises(InputError, match="n must be a positive integer"):
        synthetic_images(teacher, 0, (1, 16, 16), progress=False)


def test_gradient_clipping_bounds_each_step() -> None:
    """With plain SGD (no momentum, no decay) at lr 1, a clipped step moves the parameters by at most the clip
    norm; unclipped, the same first step moves them further."""
    moved = {}
    for clip in (None, 1e-3):
        model = _small()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        finetune(model, _task(64), FinetuneConfig(epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, batch_size=64,
                                                 augment=False, clip_grad_norm=clip), progress=False)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved[clip] = float((after - before).norm())
    assert moved[1e-3] <= 1e-3 * (1 + 1e-4) < moved[None]
    with pytest.raises(InputError, match="clip_grad_norm"):
        FinetuneConfig(clip_grad_norm=0.0)
