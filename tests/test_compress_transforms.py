"""The compression transforms: truncated SVD (Linear, Conv2d, LSTM/GRU), channel pruning through coupled groups,
block and pattern masks, BatchNorm re-calibration; replay and cost of apply_policy's result."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

from devicefit.compression import Policy, apply_policy, finalize, replay_history, svd_factors
from devicefit.compression.analysis import ChannelScatter
from devicefit.compression.apply import compressed_cost
from devicefit.compression.bn import recalibrate_batchnorm
from devicefit.compression.lowrank import LowRankRNN
from devicefit.compression.masks import block_mask, pattern_library, pattern_mask
from devicefit.compression.policy import Block, ChannelPrune, Keep, LowRank, Pattern, Unstructured
from devicefit.errors import InputError
from devicefit.hardware import count_model

from .test_compress_policy import ResidualNet, _x

DEAD = [3, 5]  # channels of the stem's group that are exactly zero everywhere in _dead_net


def _dead_net() -> ResidualNet:
    """A ResidualNet whose stem-group channels DEAD are zero everywhere: removing them changes nothing."""
    torch.manual_seed(0)
    net = ResidualNet()
    with torch.no_grad():
        for conv in (net.stem, net.a2, net.b2):
            conv.weight[DEAD] = 0
        for bn in (net.bn, net.abn2, net.bbn2):
            bn.weight[DEAD] = 0
            bn.bias[DEAD] = 0
        for consumer in (net.a1, net.b1, net.point):
            consumer.weight[:, DEAD] = 0
        for bn in net.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# --- low rank -------------------------------------------------------------------------------------------


def test_svd_of_a_known_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(7, 5, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(6, 5, generator=g, dtype=torch.float64))
    s = torch.tensor([9.0, 5.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    w = u @ torch.diag(s) @ v.T
    w_before = w.clone()
    b, a = svd_factors(w, 5)
    assert torch.allclose(b @ a, w, atol=1e-10)
    for r in range(1, 5):
        b, a = svd_factors(w, r)
        assert b.shape == (7, r) and a.shape == (r, 6)
        assert int(torch.linalg.matrix_rank(b @ a)) == r
        assert torch.allclose(b @ a, u[:, :r] @ torch.diag(s[:r]) @ v[:, :r].T, atol=1e-10)
        assert float(torch.linalg.norm(w - b @ a)) == pytest.approx(float(s[r:].norm()), rel=1e-9)
    assert torch.equal(w, w_before)  # a pure function
    with pytest.raises(InputError, match="needs a matrix"):
        svd_factors(torch.ones(2, 2, 2), 1)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn_at_full_rank_computes_the_same_recurrence(cell: type[nn.Module], batch_first: bool) -> None:
    torch.manual_seed(0)
    rnn = cell(5, 8, num_layers=2, batch_first=batch_first).eval()
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    mine = LowRankRNN(rnn).eval()
    with torch.no_grad():
        (ref, ref_state), (out, state) = rnn(x), mine(x)
        assert torch.allclose(out, ref, atol=1e-5)
        for a, b in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(ref_state)):
            assert torch.allclose(a, b, atol=1e-5)
        h0 = torch.randn(2, 3, 8)
        given = (h0, torch.randn(2, 3, 8)) if cell is nn.LSTM else h0
        assert torch.allclose(mine(x, given)[0], rnn(x, given)[0], atol=1e-5)
        single = x[0] if batch_first else x[:, 0]  # one unbatched sequence
        assert torch.allclose(mine(single)[0], rnn(single)[0], atol=1e-5)


class SeqNet(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(6, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_rnn_matrices_are_factorised_one_by_one(cell: type[nn.Module]) -> None:
    torch.manual_seed(0)
    net = SeqNet(cell).eval()
    x = torch.randn(2, 9, 6)
    full = apply_policy(net, Policy({"rnn": LowRank(1.0)}), x)
    assert torch.allclose(_run(full.model, x), _run(net, x), atol=1e-5)
    gates = 4 if cell is nn.LSTM else 3
    res = apply_policy(net, Policy({"rnn.weight_ih_l0": LowRank(0.5), "rnn.weight_hh_l0": LowRank(0.25)}), x)
    assert isinstance(res.model.rnn, LowRankRNN)
    # ranks: ih min(64 or 48, 6) = 6 -> 3; hh min(., 16) = 16 -> 4
    ih, hh = gates * 16, gates * 16
    rnn_params = (6 * 3 + 3 * ih + ih) + (16 * 4 + 4 * hh + hh)
    assert res.cost["params"] == rnn_params + 16 * 4 + 4
    assert _run(res.model, x).shape == (2, 4)
    again = replay_history(net, json.loads(json.dumps(res.history)))
    assert torch.equal(_run(again, x), _run(res.model, x))
    with pytest.raises(InputError, match="does not have: rnn.weight_xx_l0; its layers: rnn.weight_ih_l0, rnn.weight_hh_l0"):
        apply_policy(net, Policy({"rnn.weight_xx_l0": LowRank(0.5)}), x)


@pytest.mark.parametrize("form", ["channel", "spatial"])
def test_merging_factorised_layers_gives_the_same_function_in_the_original_layers(form: str) -> None:
    from devicefit.compression.lowrank import Factorized, merge_factorized

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 5)).eval()
    x = torch.randn(2, 3, 32, 32)
    res = apply_policy(net, Policy({"0": LowRank(0.5, form=form), "3": LowRank(0.25)}), x)
    assert isinstance(res.model[0], Factorized) and isinstance(res.model[3], Factorized)
    merged = merge_factorized(res.model)
    assert type(merged[0]) is nn.Conv2d and type(merged[3]) is nn.Linear
    assert merged[0].weight.shape == net[0].weight.shape and merged[0].stride == net[0].stride
    again = apply_policy(net, Policy({"0": LowRank(0.5, form=form), "3": LowRank(0.25)}), x).model
    assert torch.allclose(_run(merged, x), _run(again, x), atol=1e-5)
    # keeping the rank of a merged layer is exact: a rank-r matrix truncated at rank r is itself
    kept = apply_policy(merged, Policy({"3": LowRank(0.25)}), x).model
    assert torch.allclose(_run(kept, x), _run(again, x), atol=1e-4)
    assert torch.linalg.matrix_rank(merged[3].weight) == 1  # 0.25 of rank 5 -> 1


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_merging_a_factorised_rnn_gives_back_the_fused_module(cell: type[nn.Module]) -> None:
    from devicefit.compression.lowrank import merge_factorized

    torch.manual_seed(0)
    net = SeqNet(cell).eval()
    x = torch.randn(2, 9, 6)
    res = apply_policy(net, Policy({"rnn": LowRank(0.5)}), x)
    merged = merge_factorized(res.model)
    assert type(merged.rnn) is cell and merged.rnn.batch_first
    assert torch.allclose(_run(merged, x), _run(res.model, x), atol=1e-5)


# --- channel pruning ------------------------------------------------------------------------------------
# --- channel pruning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor", "snip", "fisher"])
def test_coupled_channels_are_pruned_together(importance: str) -> None:
    net = _dead_net()
    x = _x()
    data = [(torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(i)), torch.tensor([0, 1, 2, 3]))
            for i in range(2)]
    res = apply_policy(net, Policy({"stem": ChannelPrune(0.75, importance)}), x, data=data)
    (record,) = res.history
    assert record["details"]["group"] == ["stem", "a2", "b2"]
    assert record["details"]["pruned"] == DEAD and record["details"]["kept"] == 6
    kept = [c for c in range(8) if c not in DEAD]
    m = res.model
    for name in ("stem", "a2", "b2"):  # every residual-coupled conv keeps the same channels
        assert torch.equal(m.get_submodule(name).weight, net.get_submodule(name).weight[kept])
    for name in ("bn", "abn2", "bbn2"):
        assert torch.equal(m.get_submodule(name).running_mean, net.get_submodule(name).running_mean[kept])
    for name in ("a1", "b1", "point"):  # and their consumers lose the same input channels
        assert torch.equal(m.get_submodule(name).weight, net.get_submodule(name).weight[:, kept])
    assert torch.allclose(_run(m, x), _run(net, x), atol=1e-6)  # dead channels: the same function
    assert torch.equal(_run(replay_history(net, res.history), x), _run(m, x))  # replays without the data


def test_keep_one_changes_nothing_and_round_to_rounds() -> None:
    net = _dead_net()
    x = _x()
    res = apply_policy(net, Policy.uniform(net, ChannelPrune(1.0)), x)
    assert torch.equal(_run(res.model, x), _run(net, x))
    assert all(h["details"]["pruned"] == [] for h in res.history)
    # the classifier's outputs are the model's; point and grouped are coupled to a grouped convolution
    assert {s["module"] for s in res.skipped} == {"fc", "point", "grouped"}
    res = apply_policy(net, Policy.uniform(net, ChannelPrune(0.7, round_to=4)), x)
    kept = {h["module"]: h["details"]["kept"] for h in res.history}
    # stem group (stem, a2, b2) 8 -> round(5.6 / 4) * 4 = 4; a1, b1 6 -> 4; point and grouped: see above
    assert kept == {"a2": 4, "a1": 4, "b1": 4}  # a group is recorded under its first layer by name
    reasons = {s["module"]: s["reason"] for s in res.skipped}
    assert "grouped convolution (groups=3)" in reasons["point"] and "grouped convolution" in reasons["grouped"]
    assert _run(res.model, x).shape == (2, 5)
    assert res.cost == {**count_model(res.model, (3, 10, 10), batch_size=2).to_dict(),
                        **{k: res.cost[k] for k in ("bytes", "bytes_nonzero", "bytes_fp32", "bytes_nonzero_fp32",
                                                     "int8_params")}}


def test_depthwise_convolutions_follow_their_input_channels() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    x = _x()
    res = apply_policy(net, Policy({"0": ChannelPrune(0.5)}), x)
    assert res.history[0]["details"]["group"] == ["0", "2"]
    m = res.model
    assert (m[0].out_channels, m[2].in_channels, m[2].out_channels, m[2].groups, m[5].in_channels) == (4, 4, 4, 4, 4)
    kept = [c for c in range(8) if c not in res.history[0]["details"]["pruned"]]
    assert torch.equal(m[2].weight, net[2].weight[kept]) and torch.equal(m[5].weight, net[5].weight[:, kept])
    assert _run(m, x).shape == (2, 4)


def test_resnet20_channel_pruning_through_the_padding_shortcuts() -> None:
    from devicefit.models import get_model
    from devicefit.models.cifar_resnet import PadShortcut

    torch.manual_seed(0)
    net = get_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    same = apply_policy(net, Policy.uniform(net, ChannelPrune(1.0)), x)
    assert isinstance(same.model.layer2[0].shortcut, ChannelScatter)
    assert isinstance(net.layer2[0].shortcut, PadShortcut)  # the original is untouched
    assert torch.equal(_run(same.model, x), _run(net, x))
    res = apply_policy(net, Policy.uniform(net, ChannelPrune(0.5)), x)
    records = {h["module"]: h["details"] for h in res.history}
    stage2 = records["layer2.0.conv2"]
    assert stage2["group"] == ["layer2.0.conv2", "layer2.1.conv2", "layer2.2.conv2"] and stage2["kept"] == 16
    kept = [c for c in range(32) if c not in stage2["pruned"]]
    for b in range(3):
        assert torch.equal(res.model.layer2[b].conv2.weight, net.layer2[b].conv2.weight[kept][:, (
            [c for c in range(32) if c not in records[f"layer2.{b}.conv1"]["pruned"]])])
    assert res.model.layer3[0].shortcut.in_channels == 16 and res.model.layer3[0].shortcut.out_channels == 32
    assert _run(res.model, x).shape == (2, 10)
    assert torch.equal(_run(replay_history(net, res.history), x), _run(res.model, x))


# --- masks ----------------------------------------------------------------------------------------------


def _block_reference(w: torch.Tensor, block: tuple[int, int], sparsity: float, prune: str) -> torch.Tensor:
    """A plain loop over blocks and rows/columns: the definition the vectorised block_mask must follow."""
    mask = torch.ones_like(w)
    br, bc = block
    for i, j in itertools.product(range(0, w.shape[0], br), range(0, w.shape[1], bc)):
        tile = w[i:i + br, j:j + bc]
        units = tile.T if prune == "columns" else tile
        norms = [float(u.double().norm()) for u in units]
        drop = sorted(range(len(norms)), key=lambda k: (norms[k], k))[: round(sparsity * len(norms))]
        for k in drop:
            if prune == "columns":
                mask[i:i + br, j + k] = 0
            else:
                mask[i + k, j:j + bc] = 0
    return mask


@pytest.mark.parametrize("prune", ["rows", "columns"])
@pytest.mark.parametrize(("shape", "block", "sparsity"), [((8, 12), (4, 4), 0.5), ((7, 10), (3, 4), 0.3),
                                                          ((5, 9), (8, 2), 0.75), ((6, 6), (1, 1), 0.4)])
def test_block_mask_follows_its_definition(shape, block, sparsity, prune) -> None:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    mask = block_mask(w, block, sparsity, prune)
    assert torch.equal(mask, _block_reference(w, block, sparsity, prune))
    with pytest.raises(InputError, match="needs a matrix"):
        block_mask(w[None], block, sparsity, prune)


def test_block_mask_by_hand() -> None:
    w = torch.tensor([[1.0, 5.0, 2.0, 9.0], [1.0, 5.0, 2.0, 9.0], [3.0, 1.0, 8.0, 0.5], [3.0, 1.0, 8.0, 0.5]])
    # 2x2 blocks, half the columns of each block: the smaller column of each pair goes
    assert block_mask(w, (2, 2), 0.5, "columns").tolist() == [[0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0]]


def _kernels(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, 9)


def test_pattern_masks_keep_four_weights_from_the_library() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=g)
    favourite = torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 1, 0]])  # centre + (0,0), (0,1), (2,1)
    w[:10] = w[:10].abs() * 0.1 + favourite * 5  # 80 kernels whose natural pattern is the favourite
    lib = pattern_library(w, 4)
    assert lib.shape == (4, 3, 3) and torch.equal(lib[0], favourite)
    assert all(int(p.sum()) == 4 and p[1, 1] == 1 for p in lib) and len({tuple(p.flatten().tolist()) for p in lib}) == 4
    mask = pattern_mask(w, lib)
    library = {tuple(p.flatten().tolist()) for p in lib}
    energy = w.reshape(-1, 9).pow(2)
    for kernel, e in zip(_kernels(mask), energy):
        assert int(kernel.sum()) == 4 and tuple(kernel.tolist()) in library
        assert float((kernel * e).sum()) == pytest.approx(max(float((p.flatten() * e).sum()) for p in lib))
    pruned = pattern_mask(w, lib, connectivity=0.25)
    empty = _kernels(pruned).sum(1) == 0
    assert int(empty.sum()) == round(0.25 * 128)
    norms = energy.sum(1)
    assert float(norms[empty].max()) <= float(norms[~empty].min())
    assert torch.equal(_kernels(pruned)[~empty], _kernels(mask)[~empty])
    with pytest.raises(InputError, match="needs 3x3 kernels"):
        pattern_mask(torch.randn(4, 4, 1, 1), lib)


def test_masks_persist_through_training_and_finalize() -> None:
    torch.manual_seed(0)
    net = ResidualNet()
    x = _x()
    policy = Policy({"a1": Pattern(connectivity=0.25, patterns=6), "point": Block(0.5, (4, 4), "rows"),
                     "fc": Unstructured(0.5)})
    res = apply_policy(net, policy, x)
    model = res.model
    before_training = _run(model, x)
    zeros = {n: (model.get_submodule(n).weight == 0).clone() for n in policy}
    details = {h["module"]: h["details"] for h in res.history}
    assert len(details["a1"]["library"]) == 6 and details["a1"]["kernels_kept"] == 48 - 12
    assert details["point"]["kept"] == 48
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert all(torch.equal(model.get_submodule(n).weight == 0, zeros[n]) for n in policy)
    finalize(model)
    assert not hasattr(model.a1, "weight_orig")
    counts = set(_kernels(model.a1.weight != 0).sum(1).tolist())
    assert counts <= {0, 4} and 4 in counts
    assert torch.equal(_run(replay_history(net, res.history), x), before_training)


def test_layers_an_action_does_not_handle_are_skipped_and_reported() -> None:
    net = ResidualNet()
    res = apply_policy(net, Policy({"bn": Block(0.5), "fc": Pattern(), "grouped": LowRank(0.5), "a1": Keep()}), _x())
    assert not res.history
    reasons = {s["module"]: s["reason"] for s in res.skipped}
    assert "no weight matrix" in reasons["bn"] and "3x3 convolutions" in reasons["fc"]
    assert "grouped convolution" in reasons["grouped"] and "a1" not in reasons


# --- BatchNorm, cost ------------------------------------------------------------------------------------


def test_batchnorm_recalibration_averages_the_batches() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.Dropout(0.5), nn.ReLU())
    bn = net[1]
    batches = [torch.randn(5, 3, 8, 8) * (i + 1) + i for i in range(4)]
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda _m, i, _o: seen.append(i[0].detach()))
    used = recalibrate_batchnorm(net, [(b, torch.zeros(5)) for b in batches], batches=3)
    handle.remove()
    assert used == 3 and len(seen) == 3 and not net.training and not bn.training and bn.momentum == 0.3
    means = torch.stack([s.mean((0, 2, 3)) for s in seen])
    variances = torch.stack([s.transpose(0, 1).flatten(1).var(1, unbiased=True) for s in seen])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    before = bn.running_mean.clone()
    with pytest.raises(InputError, match="got no batch"):
        recalibrate_batchnorm(net, [])
    assert torch.equal(bn.running_mean, before)  # statistics kept when nothing could be measured


def test_cost_is_count_model_of_the_result_with_bytes_at_each_precision() -> None:
    net = ResidualNet()
    x = _x()
    res = apply_policy(net, Policy({"stem": LowRank(0.5), "a1": Unstructured(0.5)}), x)
    counted = count_model(res.model, (3, 10, 10), batch_size=2).to_dict()
    assert {k: res.cost[k] for k in counted} == counted
    assert res.cost["bytes"] == res.cost["bytes_fp32"] == 4 * counted["params"]
    assert res.cost["bytes_nonzero"] == 4 * counted["nonzero_params"] < res.cost["bytes"]
    history = [{"module": "fc", "action": {"action": "int8", "per_channel": True}}]
    cost = compressed_cost(net, x, history)
    assert cost["int8_params"] == 12 * 5 + 5
    assert cost["bytes"] == 4 * cost["params"] - 3 * (12 * 5 + 5)
    assert math.isclose(cost["bytes_fp32"], 4 * cost["params"])
