"""Omni-sparsity (arXiv 2110.08352): nested masks, sub-model sizes, supernet training on LeNet-5, picking, resume."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch

from devicefit.compression.masks import unstructured_mask
from devicefit.compression.omni import OmniSparsity, kept_parameters, nested_masks, pick_sub_models, sub_model
from devicefit.compression.train import FinetuneConfig, TrainingHook, finetune
from devicefit.errors import InputError
from devicefit.models import get_model, load_images
from devicefit.models.evaluate import evaluate_accuracy

LEVELS = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)
CONFIG = FinetuneConfig(epochs=1.0, lr=0.05, batch_size=32, augment=False)


@pytest.fixture(scope="module")
def mnist(data_root: Path):
    try:
        train = load_images("mnist", "train8k", data_root)
    except (InputError, OSError) as exc:
        pytest.skip(f"MNIST train8k not available in {data_root}: {exc}")
    return train.subset(2048), load_images("mnist", "test2k", data_root).subset(400)


def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("lenet5")


@pytest.fixture(scope="module")
def trained(mnist):
    """LeNet-5 trained for the same 64 steps conventionally and as an omni-sparsity supernet."""
    train, _ = mnist
    plain, omni = lenet(), lenet()
    finetune(plain, train, CONFIG, progress=False)
    hook = OmniSparsity(levels=LEVELS, update_every=4)
    finetune(omni, train, CONFIG, hooks=[hook], progress=False)
    hook.remove()
    return plain, omni


def test_masks_are_nested_and_match_unstructured_mask() -> None:
    w = torch.randn(50, 20, 5, 5, generator=torch.Generator().manual_seed(0))
    masks = nested_masks(w, LEVELS)
    ordered = [masks[s] for s in LEVELS]
    for denser, sparser in pairwise(ordered):
        assert bool((sparser <= denser).all())
    for s in LEVELS:
        assert torch.equal(masks[s], unstructured_mask(w, s))  # no ties in random weights
    tied = torch.zeros(10, 10)  # all ties: still nested
    tm = [nested_masks(tied, LEVELS)[s] for s in LEVELS]
    assert all(bool((b <= a).all()) for a, b in pairwise(tm))


def test_sub_model_nonzero_counts_match_levels() -> None:
    model = lenet()
    total = sum(p.numel() for p in model.parameters())
    for s in LEVELS:
        sub = sub_model(model, s)
        nonzero = sum(int((p != 0).sum()) for n, p in sub.named_parameters() if not n.endswith("_orig"))
        nonzero += sum(int((m.weight != 0).sum()) for m in sub.modules() if hasattr(m, "weight_mask"))
        assert nonzero == kept_parameters(model, s)
        for name in ("conv1", "conv2", "fc1", "fc2"):
            layer = getattr(sub, name)
            assert int((layer.weight_mask == 0).sum()) == round(s * layer.weight.numel())
    per_layer = {"conv1": 0.5, "conv2": 0.9, "fc1": 0.98, "fc2": 0.0}
    sub = sub_model(model, per_layer)
    assert float(sub.fc1.weight_mask.mean()) == pytest.approx(0.02, abs=1e-5)
    assert kept_parameters(model, per_layer) < total
    assert not hasattr(model.fc1, "weight_mask")  # the original is untouched
    with pytest.raises(InputError, match="levels must name exactly"):
        sub_model(model, {"conv1": 0.5})
    with pytest.raises(InputError, match="sparsity in"):
        sub_model(model, 1.0)


def test_omni_beats_conventional_at_high_sparsity(trained, mnist) -> None:
    plain, omni = trained
    _, held = mnist
    for s in (0.95, 0.98):
        a_omni = evaluate_accuracy(sub_model(omni, s), held)
        a_plain = evaluate_accuracy(sub_model(plain, s), held)
        assert a_omni > a_plain + 20, (s, a_omni, a_plain)  # 64 steps: about 80 % against near chance
    assert evaluate_accuracy(sub_model(omni, 0.0), held) > 70


def test_pick_respects_budgets(trained, mnist) -> None:
    _, omni = trained
    _, held = mnist
    smallest = kept_parameters(omni, 0.98)
    total = kept_parameters(omni, 0.0)
    budgets = [smallest, 3 * smallest, total // 4, total]
    picked = pick_sub_models(omni, LEVELS, held, budgets, limit=200, max_candidates=40)
    assert set(picked) == set(budgets)
    for b, choice in picked.items():
        assert choice.parameters <= b
        assert choice.parameters == kept_parameters(omni, choice.levels)
        sub = sub_model(omni, choice.levels)
        assert evaluate_accuracy(sub, held, limit=200) == pytest.approx(choice.accuracy)
    accs = [picked[b].accuracy for b in budgets]
    assert accs == sorted(accs)  # a larger budget can only do as well or better
    with pytest.raises(InputError, match=r"budget 10 non-zero parameters is below the smallest sub-model"):
        pick_sub_models(omni, LEVELS, held, [10], limit=50)
    with pytest.raises(InputError, match="budgets must be"):
        pick_sub_models(omni, LEVELS, held, [], limit=50)


class Stop(TrainingHook):
    def __init__(self, at: int | None) -> None:
        self.at = at

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        if step == self.at:
            raise KeyboardInterrupt("killed")


def test_state_dict_round_trip_and_exact_resume(mnist, tmp_path: Path) -> None:
    train = mnist[0].subset(320)
    cfg = FinetuneConfig(epochs=1.0, lr=0.05, batch_size=32, augment=False, checkpoint_every=3)
    ref, ref_hook = lenet(), OmniSparsity(update_every=4)
    finetune(ref, train, cfg, hooks=[ref_hook, Stop(None)], progress=False)
    ckpt = tmp_path / "omni.pt"
    with pytest.raises(KeyboardInterrupt):
        finetune(lenet(), train, cfg, hooks=[OmniSparsity(update_every=4), Stop(7)], checkpoint=ckpt,
                 progress=False)
    resumed, hook = lenet(), OmniSparsity(update_every=4)
    history = finetune(resumed, train, cfg, hooks=[hook, Stop(None)], checkpoint=ckpt, progress=False)
    assert history.resumed_from_step == 6
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    state = hook.state_dict()
    assert state["step"] == ref_hook.state_dict()["step"] == 10
    fresh = OmniSparsity(update_every=4)
    fresh.load_state_dict(state)
    assert fresh.state_dict()["refreshes"] == state["refreshes"]
    assert all(torch.equal(fresh.ranks[k], v) for k, v in state["ranks"].items())
    with pytest.raises(InputError, match="was made with levels"):
        OmniSparsity(levels=(0.0, 0.9), update_every=4).load_state_dict(state)
    with pytest.raises(InputError, match="needs levels"):
        fresh.load_state_dict({"levels": [0.0]})
    hook.remove()
    assert not any(m._forward_pre_hooks for m in resumed.modules())
