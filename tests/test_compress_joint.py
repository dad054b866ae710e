"""Joint pruning and quantization to a size budget (arXiv 1910.05897): exact knapsacks, projections, the hook."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.compression.joint import (
    JointSparseQuantization,
    compress_to_size,
    kmeans_1d,
    prune_to_budget,
    select_bit_widths,
    size_budget,
)
from devicefit.compression.knapsack import knapsack_01, multiple_choice_knapsack
from devicefit.compression.train import FinetuneConfig, finetune
from devicefit.errors import InputError
from devicefit.models import get_model, load_images

from .conftest import need_file
from .toy_compress import Crash, image_data, tiny_cnn

# --- knapsack solvers ---------------------------------------------------------------------------------


def brute_01(values: np.ndarray, costs: np.ndarray, capacity: int) -> float:
    n = len(values)
    return max(values[list(s)].sum() for r in range(n + 1) for s in itertools.combinations(range(n), r)
               if costs[list(s)].sum() <= capacity)


def item_dp_01(values: np.ndarray, costs: np.ndarray, capacity: int) -> float:
    """The textbook O(n C) DP, item by item."""
    best = np.zeros(capacity + 1)
    for v, c in zip(values, costs):
        if v > 0 and c <= capacity:
            best[c:] = np.maximum(best[c:], best[: capacity + 1 - c] + v)
    return float(best[capacity])


def test_knapsack_01_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(1, 10))
        values = rng.normal(size=n) if trial % 2 else rng.integers(0, 4, size=n).astype(float)  # ties, zeros
        costs = rng.integers(0, 6, size=n) * int(rng.integers(1, 4))  # zero costs, a common divisor
        capacity = int(rng.integers(0, 20))
        chosen = knapsack_01(values, costs, capacity)
        assert chosen.dtype == bool and costs[chosen].sum() <= capacity
        assert values[chosen].sum() == pytest.approx(brute_01(values, costs, capacity), abs=1e-9)
        assert not chosen[values <= 0].any()  # worthless items are never taken


def test_knapsack_01_few_cost_classes_matches_the_item_dp():
    """Hundreds of items in a few cost classes: the per-class divide and conquer against the plain DP."""
    rng = np.random.default_rng(1)
    for _ in range(25):
        n = int(rng.integers(100, 300))
        classes = rng.choice(np.arange(1, 12), size=int(rng.integers(1, 5)), replace=False)
        costs = rng.choice(classes, size=n)
        values = rng.exponential(size=n) * (rng.random(n) > 0.1)
        capacity = int(rng.integers(0, costs.sum()))
        chosen = knapsack_01(values, costs, capacity)
        assert costs[chosen].sum() <= capacity
        assert values[chosen].sum() == pytest.approx(item_dp_01(values, costs, capacity), rel=1e-12)
        room = capacity - costs[chosen].sum()
        assert not ((~chosen) & (values > 0) & (costs <= room)).any()  # nothing left out would still fit


def test_multiple_choice_knapsack_is_optimal_against_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(300):
        groups = int(rng.integers(1, 5))
        values = [rng.normal(size=int(rng.integers(1, 4))) for _ in range(groups)]
        costs = [rng.integers(0, 9, size=len(v)) * 2 for v in values]
        floor = sum(int(c.min()) for c in costs)
        capacity = floor + int(rng.integers(0, 14))
        picks = multiple_choice_knapsack(values, costs, capacity)
        assert len(picks) == groups
        assert sum(int(costs[g][p]) for g, p in enumerate(picks)) <= capacity
        best = max(sum(values[g][o] for g, o in enumerate(opt))
                   for opt in itertools.product(*[range(len(v)) for v in values])
                   if sum(int(costs[g][o]) for g, o in enumerate(opt)) <= capacity)
        assert sum(values[g][p] for g, p in enumerate(picks)) == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: knapsack_01([1.0, 2.0], [1, -1], 3), r"costs must be non-negative integers; entry 1 is -1"),
        (lambda: knapsack_01([1.0, 2.0], [1.5, 1], 3), "non-integral"),
        (lambda: knapsack_01([1.0, 2.0], [1], 3), r"one entry per value \(2\)"),
        (lambda: knapsack_01([1.0, math.nan], [1, 1], 3), "finite"),
        (lambda: knapsack_01([1.0], [1], -1), "capacity must be >= 0"),
        (lambda: knapsack_01([1.0], [1], 2.5), "capacity must be an integer"),
        (lambda: multiple_choice_knapsack([[1.0, 2.0], [0.0]], [[3, 4], [2]], 4),
         r"capacity 4 is below the cheapest choice.*sums to 5"),
        (lambda: multiple_choice_knapsack([[1.0], []], [[1], []], 4), r"values\[1\] is empty"),
        (lambda: multiple_choice_knapsack([[1.0]], [[-2]], 4), r"costs\[0\] must be non-negative"),
        (lambda: multiple_choice_knapsack([[1.0]], [[1], [2]], 4), "costs must be a list of 1 groups"),
        (lambda: multiple_choice_knapsack([], [], 4), "non-empty list of groups"),
    ],
)
def test_impossible_knapsack_inputs_are_refused_by_name(call, message):
    with pytest.raises(InputError, match=message):
        call()


# --- projections --------------------------------------------------------------------------------------


def test_pruning_projection_fills_the_budget_exactly_and_keeps_the_largest():
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(40, 30, generator=g), torch.randn(8, 4, 3, 3, generator=g), torch.randn(500, generator=g)]
    bits = [3, 1, 5]
    for capacity in (1, 7, 199, 1000, 2001):
        masks = prune_to_budget(weights, bits, capacity)
        size = sum(int(m.sum()) * b for m, b in zip(masks, bits))
        assert size <= capacity
        room = capacity - size
        for w, m, b in zip(weights, masks, bits):
            assert m.shape == w.shape and m.dtype == torch.bool
            if (~m).any():
                assert b > room  # no single pruned weight would still fit
            if m.any() and (~m).any():
                assert w[m].abs().min() >= w[~m].abs().max()  # within a layer: the largest magnitudes


def test_kmeans_finds_separated_clusters_and_keeps_zero_fixed():
    values = np.array([-3.0, -3.2, -2.8, 0.01, -0.02, 0.0, 2.0, 2.2, 1.8, 2.0])
    levels, error = kmeans_1d(values, 3)
    assert levels == pytest.approx([-3.0, -0.01 / 3, 2.0])
    assert error == pytest.approx(0.08 + (0.01 + 1 / 300) ** 2 + (0.02 - 1 / 300) ** 2 + (1 / 300) ** 2 + 0.08)
    free, error0 = kmeans_1d(values, 2, zero_level=True)  # 2 levels plus the fixed 0
    assert free == pytest.approx([-3.0, 2.0])
    assert error0 == pytest.approx(0.08 + 0.01**2 + 0.02**2 + 0.08)


def test_bit_widths_go_where_the_error_is_within_the_budget():
    rng = np.random.default_rng(4)
    spread = rng.normal(size=300)  # continuous values: more levels, less error
    coarse = rng.choice([-1.0, 1.0], size=300)  # two values: 1 bit is already exact
    for capacity in (600, 1200, 2400):
        choice = select_bit_widths([spread, coarse], [300, 300], capacity, (1, 2, 3, 4, 5, 6), zero_level=False)
        assert 300 * sum(choice.bits) <= capacity
        assert choice.bits[1] == 1 and choice.errors[1] == pytest.approx(0.0)
        assert choice.bits[0] == min(6, capacity // 300 - 1)  # every spare bit to the layer that needs it
        assert len(choice.codebooks[0]) == 2 ** choice.bits[0]


# --- the hook -----------------------------------------------------------------------------------------


def check_within_budget(model: nn.Module, hook: JointSparseQuantization) -> int:
    """Recount from the model: non-zeros and distinct values of every compressed layer; the size in bits."""
    size = 0
    for key, bits in hook.bits.items():
        module = model.get_submodule(key)
        weight = module.weight_orig * module.weight_mask
        nonzero = weight[weight != 0]
        assert nonzero.numel() <= int(module.weight_mask.sum()) == hook.nnz[key]
        assert torch.unique(nonzero).numel() <= 2**bits
        size += hook.nnz[key] * bits
    assert size <= hook.budget_bits
    return size


CONFIG = FinetuneConfig(epochs=3, lr=0.05, batch_size=32, augment=False)


def test_hook_projects_within_budget_then_masks_quantizes_and_finishes():
    model = tiny_cnn()
    dense = 32 * (8 * 3 * 9 + 8 * 8 * 9 + 4 * 8)
    hook = JointSparseQuantization(dense // 20, rho=0.1)
    finetune(model, image_data(128), CONFIG, hooks=[hook], progress=False)
    assert hook.updates == 1 + 3  # after the first step, then after every epoch
    assert set(hook.bits) == {"0", "2", "6"} and hook.report().total_bits <= hook.budget_bits
    assert 0.0 < hook.distance() < 1.0
    report = hook.finalize(model)
    assert report.total_bits <= report.budget_bits == dense // 20
    assert report.total_bits > report.budget_bits - max(hook.bits.values())  # the budget is filled
    assert check_within_budget(model, hook) == report.total_bits
    x = image_data(8).x
    with torch.no_grad():
        quantized_forward = model(x)
    levels = {k: v.clone() for k, v in hook.codebooks.items()}
    finetune(model, image_data(128), FinetuneConfig(epochs=1, lr=0.01, batch_size=32, augment=False), hooks=[hook],
             progress=False)
    for key, book in hook.codebooks.items():  # refitted after the epoch: every level is its cluster's mean
        assert not torch.equal(book, levels[key])
        layer = model.get_submodule(key)
        kept = layer.weight_orig.detach()[layer.weight_mask.bool()]
        nearest = torch.argmin((kept[:, None] - book[None, :]).abs(), dim=1)
        for i in nearest.unique():
            assert float(kept[nearest == i].mean()) == pytest.approx(float(book[i]), abs=1e-6)
    final = hook.finish(model)
    assert final.total_bits == report.total_bits and hook.phase == "done"
    check_within_budget(model, hook)
    conv = model[0]
    assert len(conv._forward_pre_hooks) == 1  # only the prune mask's: the quantizer is gone
    with torch.no_grad():
        out = model(x)
        manual = model[6](model[5](model[4](model[3](
            nn.functional.conv2d(model[1](nn.functional.conv2d(x, conv.weight_orig * conv.weight_mask, conv.bias,
                                                               padding=1)),
                                 model[2].weight_orig * model[2].weight_mask, model[2].bias, padding=1)))))
    assert torch.allclose(out, manual, atol=1e-5)
    assert not torch.allclose(out, quantized_forward)  # the fine-tuning changed the float weights and levels


def test_the_forward_pass_uses_the_levels_and_the_gradient_passes_through():
    model = nn.Sequential(nn.Linear(6, 3))
    hook = JointSparseQuantization(24, initial_bits=1, bit_choices=(1, 2))
    hook.on_start(model)
    hook.finalize(model)
    layer = model[0]
    w = layer.weight_orig.detach() * layer.weight_mask
    x = torch.randn(5, 6)
    out = model(x)
    levels = hook.codebooks["0"]
    assert set(torch.unique(layer.weight[layer.weight_mask.bool()]).tolist()) <= set(levels.tolist())
    assert torch.equal(w[layer.weight_mask.bool()], layer.weight[layer.weight_mask.bool()])  # finalize quantized
    out.sum().backward()
    assert torch.allclose(layer.weight_orig.grad, (torch.ones(5, 3).T @ x) * layer.weight_mask)


def test_both_phases_resume_exactly_from_a_checkpoint(tmp_path: Path):
    config = FinetuneConfig(epochs=3, lr=0.05, batch_size=32, augment=False, checkpoint_every=1)
    data, budget = image_data(128), 2000

    def run(folder: Path, crash_admm: int | None, crash_tune: int | None) -> tuple[nn.Module, JointSparseQuantization]:
        model = tiny_cnn()
        hook = JointSparseQuantization(budget, rho=0.1, update_every=5)
        for crash in (crash_admm, None):
            try:
                finetune(model, data, config, hooks=[hook, Crash(crash)], checkpoint=folder / "a.ckpt", progress=False)
                break
            except RuntimeError:
                model, hook = tiny_cnn(), JointSparseQuantization(budget, rho=0.1, update_every=5)  # a new process
        hook.finalize(model)
        try:
            finetune(model, data, config, hooks=[hook, Crash(crash_tune)], checkpoint=folder / "b.ckpt", progress=False)
        except RuntimeError:
            model, hook = tiny_cnn(), JointSparseQuantization(budget, rho=0.1, update_every=5)
            finetune(model, data, config, hooks=[hook, Crash(None)], checkpoint=folder / "a.ckpt", progress=False)
            hook.finalize(model)
            history = finetune(model, data, config, hooks=[hook, Crash(None)], checkpoint=folder / "b.ckpt",
                               progress=False)
            assert history.resumed_from_step == 7
        hook.finish(model)
        return model, hook

    straight, hook_a = run(tmp_path / "a", None, None)
    resumed, hook_b = run(tmp_path / "b", 6, 8)
    assert hook_a.updates == hook_b.updates == 1 + 2  # steps 1, 5 and 10 of 12
    assert hook_a.bits == hook_b.bits and hook_a.nnz == hook_b.nnz
    for key in hook_a.codebooks:
        assert torch.equal(hook_a.codebooks[key], hook_b.codebooks[key])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_state_round_trips_through_a_weights_only_checkpoint():
    model = tiny_cnn()
    hook = JointSparseQuantization(1500, rho=0.2, update_every=2)
    finetune(model, image_data(64), FinetuneConfig(epochs=1, lr=0.05, batch_size=16, augment=False), hooks=[hook],
             progress=False)
    buffer = io.BytesIO()
    torch.save(hook.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    again = JointSparseQuantization(1500, rho=0.2, update_every=2)
    again.on_start(model)
    again.load_state_dict(saved)
    assert float(again.extra_loss(model).detach()) == float(hook.extra_loss(model).detach())
    assert again.bits == hook.bits and again.updates == hook.updates == 3  # steps 1, 2 and 4
    other = JointSparseQuantization(1501)
    with pytest.raises(InputError, match="budget of 1500 bits"):
        other.load_state_dict(saved)
    partial = JointSparseQuantization(1500, layers=["0"])
    partial.on_start(tiny_cnn())
    with pytest.raises(InputError, match="is for layers"):
        partial.load_state_dict(saved)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: JointSparseQuantization(0), "budget_bits must be a positive integer"),
        (lambda: JointSparseQuantization(100, bit_choices=[0, 2]), "bit_choices"),
        (lambda: JointSparseQuantization(100, initial_bits=9), "initial_bits"),
        (lambda: JointSparseQuantization(100, rho=0.0), "rho must be a positive number"),
        (lambda: JointSparseQuantization(100, layers="0"), "layers must be None"),
        (lambda: JointSparseQuantization(100, count_codebook=True).on_start(tiny_cnn()),
         r"cannot hold a single weight beside the codebooks of 3 layers.*expected at least 193"),
        (lambda: JointSparseQuantization(100, layers=["1"]).on_start(tiny_cnn()), "is a ReLU"),
        (lambda: size_budget(tiny_cnn()), "exactly one of target_bits"),
        (lambda: size_budget(tiny_cnn(), target_bits=10, target_ratio=2.0), "exactly one of target_bits"),
        (lambda: size_budget(tiny_cnn(), target_ratio=-3.0), "target_ratio must be a positive number"),
        (lambda: size_budget(tiny_cnn(), target_ratio=1e9), "less than one bit"),
        (lambda: JointSparseQuantization(100).finish(tiny_cnn()), "needs finalize"),
        (lambda: compress_to_size(tiny_cnn(), image_data(128), target_bits=500, admm_config=FinetuneConfig(distill=True)),
         "admm_config set distill but no teacher"),
        (lambda: compress_to_size(tiny_cnn(), image_data(128), target_bits=500, teacher=tiny_cnn()),
         "neither admm_config nor finetune_config sets distill"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(InputError, match=message):
        call()


# --- LeNet-5 on MNIST ---------------------------------------------------------------------------------


def test_lenet5_on_mnist_ends_within_the_target_size(data_root: Path):
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    data = load_images("mnist", "train8k", data_root).subset(384)
    torch.manual_seed(0)
    model = get_model("lenet5")
    finetune(model, data, FinetuneConfig(epochs=3, lr=0.05, batch_size=64, augment=False), progress=False)
    result = compress_to_size(model, data, target_ratio=500, admm_config=FinetuneConfig(
        epochs=3, lr=0.02, batch_size=64, augment=False), finetune_config=FinetuneConfig(
        epochs=1, lr=0.005, batch_size=64, augment=False), eval_data=data, progress=False)
    report = result.report
    assert report.budget_bits == 27_552  # 32 x 430,500 weights / 500 (the 580 biases are not compressed)
    assert report.total_bits <= report.budget_bits and report.ratio >= 500
    assert check_within_budget(result.model, result.hook) == report.total_bits
    assert [x.name for x in report.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert result.accuracy is not None and result.accuracy > 50.0  # far above chance (10 %) at 500x
