"""Compression policies (all actions, JSON, uniform), layer analysis (costs, coupled groups, barriers) and the
checks apply_policy makes before any change."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from devicefit.compression import Policy, apply_policy
from devicefit.compression.analysis import analyze_layers, compressible_layers
from devicefit.compression.policy import (
    IMPORTANCES,
    Block,
    ChannelPrune,
    Int8,
    Keep,
    LowRank,
    Pattern,
    Unstructured,
)
from devicefit.errors import InputError
from devicefit.hardware import count_model


class ResidualNet(nn.Module):
    """stem -> two residual blocks (identity shortcuts) -> a 1x1 conv and a grouped conv -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.a1, self.abn1 = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.a2, self.abn2 = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b1, self.bbn1 = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.b2, self.bbn2 = nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.point = nn.Conv2d(8, 12, 1)
        self.grouped = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.abn2(self.a2(F.relu(self.abn1(self.a1(x))))))
        x = F.relu(x + self.bbn2(self.b2(F.relu(self.bbn1(self.b1(x))))))
        x = F.relu(self.grouped(F.relu(self.point(x))))
        return self.fc(x.mean((2, 3)))


class ChannelPad(nn.Module):
    """A weightless module that pads channels (as akamaster's lambda shortcut): Torch-Pruning cannot see it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 2, 2))


class PaddedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pad = ChannelPad()
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c3(F.relu(self.c2(self.pad(F.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


class ChannelScale(nn.Module):
    """A custom layer with weights (a learned per-channel scale) Torch-Pruning has no pruner for."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class LinearGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 10)
        self.rnn = nn.GRU(10, 12, batch_first=True)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        return self.fc(out[:, -1])


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))


_actions = st.one_of(
    st.just(Keep()),
    st.builds(LowRank, st.floats(0.01, 1.0), st.sampled_from(["auto", "linear", "channel", "spatial"])),
    st.builds(ChannelPrune, st.floats(0.01, 1.0), st.sampled_from(IMPORTANCES), st.integers(1, 64)),
    st.builds(Unstructured, st.floats(0.0, 0.99)),
    st.builds(Block, st.floats(0.0, 0.99), st.tuples(st.integers(1, 64), st.integers(1, 64)),
              st.sampled_from(["rows", "columns"])),
    st.builds(Pattern, st.floats(0.0, 0.99), st.integers(1, 56)),
    st.builds(Int8, st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["stem", "a1", "layer1.0.conv2", "rnn.weight_hh_l0", "fc"]), _actions))
def test_every_action_round_trips_through_json(actions) -> None:
    policy = Policy(actions)
    text = policy.to_json()
    again = Policy.from_json(text)
    assert again == policy and hash(again) == hash(policy)
    assert Policy.from_json(json.dumps(json.loads(text))) == policy  # plain JSON, nothing Python-specific
    for name, action in policy.items():
        assert json.loads(text)["layers"][name]["action"] == action.tag


def test_actions_are_validated_naming_the_field_and_its_range() -> None:
    cases = [
        (lambda: ChannelPrune(keep=0.0), r"ChannelPrune.keep must be a number in \(0, 1\]"),
        (lambda: ChannelPrune(importance="random"), "ChannelPrune.importance must be one of l1, l2, bn_scale"),
        (lambda: ChannelPrune(round_to=0), "ChannelPrune.round_to must be an integer 1 or more"),
        (lambda: ChannelPrune(round_to=2.0), "round_to"),
        (lambda: Block(sparsity=1.0), r"Block.sparsity must be a number in \[0, 1\)"),
        (lambda: Block(block=(0, 4)), "Block.block rows must be an integer 1 or more"),
        (lambda: Block(block=(4,)), r"Block.block must be \(rows, cols\)"),
        (lambda: Block(prune="diagonal"), "Block.prune must be one of rows, columns"),
        (lambda: Pattern(patterns=57), r"Pattern.patterns must be an integer 1\.\.56"),
        (lambda: Pattern(connectivity=1.0), "Pattern.connectivity"),
        (lambda: Int8(per_channel="yes"), "Int8.per_channel must be true or false"),
    ]
    for make, message in cases:
        with pytest.raises(InputError, match=message):
            make()
    assert Block(block=[2, 3]).block == (2, 3)  # JSON lists become the tuple again
    for text, message in (
        ('{"format": "devicefit-policy", "version": 1, "layers": {"fc": {"action": "block", "size": 3}}}',
         "action 'block' has no field"),
        ('{"format": "devicefit-policy", "version": 1, "layers": {}, "extra": 1}', "has no field"),
        ('{"format": "devicefit-policy", "version": 2, "layers": {}}', "version 2 is not supported"),
        ('{"format": "devicefit-policy", "version": 1, "layers": {"fc": {"action": "channel", "keep": 2}}}',
         "ChannelPrune.keep"),
    ):
        with pytest.raises(InputError, match=message):
            Policy.from_json(text)


def test_uniform_picks_the_layers_that_support_the_action() -> None:
    net = ResidualNet()
    assert list(Policy.uniform(net, Pattern())) == sorted(["stem", "a1", "a2", "b1", "b2", "grouped"])
    assert "grouped" not in Policy.uniform(net, LowRank(0.5))  # grouped convs are not factorised
    assert set(Policy.uniform(net, ChannelPrune(0.5))) == set(compressible_layers(net))
    rnn = LinearGRU()
    assert set(Policy.uniform(rnn, LowRank(0.5))) == {"embed", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "fc"}
    assert set(Policy.uniform(rnn, ChannelPrune(0.5))) == {"embed", "fc"}  # RNN matrices have no channels
    assert set(Policy.uniform(rnn, Int8())) == {"embed", "rnn", "fc"}  # int8 takes the whole RNN
    assert list(Policy.uniform(net, Unstructured(0.5), layers=["a1", "fc"])) == ["a1", "fc"]
    with pytest.raises(InputError, match="does not support pattern"):
        Policy.uniform(net, Pattern(), layers=["point"])
    with pytest.raises(InputError, match="has no layer 'nope'"):
        Policy.uniform(net, Keep(), layers=["nope"])
    assert list(Policy.uniform(["x", "y"], Keep())) == ["x", "y"]


def test_analysis_costs_add_up_to_the_models() -> None:
    net = ResidualNet().eval()
    layers = analyze_layers(net, _x())
    cost = count_model(net, (3, 10, 10))
    assert [layer.name for layer in layers] == list(compressible_layers(net))
    assert sum(layer.macs for layer in layers) == cost.macs  # every MAC of this net is in a conv or linear
    assert sum(layer.macs_share for layer in layers) == pytest.approx(1.0)
    by = {layer.name: layer for layer in layers}
    assert by["a1"].macs == 6 * 8 * 9 * 100 and by["a1"].params == 6 * 8 * 9
    assert by["point"].params == 8 * 12 + 12 and by["fc"].macs == 12 * 5
    assert by["grouped"].kind == "Conv2d 3x3 groups=3" and "lowrank" not in by["grouped"].supports
    assert "pattern" not in by["point"].supports
    # BatchNorm parameters are the model's but no layer's
    assert sum(layer.params_share for layer in layers) == pytest.approx(1 - 2 * (8 + 6 + 8 + 6 + 8) / cost.params)


def test_analysis_finds_the_residual_groups_and_the_classifier() -> None:
    by = {layer.name: layer for layer in analyze_layers(ResidualNet(), _x())}
    assert by["stem"].group == by["a2"].group == by["b2"].group  # coupled through the two residual adds
    assert len({by[n].group for n in ("stem", "a1", "b1", "point", "grouped")}) == 5
    assert "channel" in by["stem"].supports and by["stem"].note == ""
    assert "channel" not in by["fc"].supports and by["fc"].note == "its output channels are the model's outputs"


def test_resnet20_stages_are_separate_groups_through_the_padding_shortcuts() -> None:
    from devicefit.models import get_model

    by = {layer.name: layer for layer in analyze_layers(get_model("resnet20"), torch.zeros(1, 3, 32, 32))}
    stage = {s: {by[f"layer{s}.{b}.conv2"].group for b in range(3)} for s in (1, 2, 3)}
    assert all(len(groups) == 1 for groups in stage.values())
    assert stage[1] == {by["conv1"].group} and len(stage[1] | stage[2] | stage[3]) == 3
    assert len({by[f"layer{s}.{b}.conv1"].group for s in (1, 2, 3) for b in range(3)}) == 9
    assert all("channel" in by[f"layer3.{b}.conv2"].supports for b in range(3))
    assert by["layer2.0.conv1"].macs == 32 * 16 * 9 * 16 * 16
    assert sum(layer.macs for layer in by.values()) == count_model(get_model("resnet20"), (3, 32, 32)).macs


def test_layers_torch_pruning_cannot_handle_are_listed_and_left_alone() -> None:
    by = {layer.name: layer for layer in analyze_layers(PaddedNet(), _x())}
    assert "coupled to pad: ChannelPad (changes dimension 1 from 4 to 8" in by["c1"].note
    assert by["c2"].note == by["c3"].note == "" and "channel" in by["c2"].supports  # after the padding: fine
    net = PaddedNet()
    res = apply_policy(net, Policy.uniform(net, ChannelPrune(0.5)), _x())
    assert [h["module"] for h in res.history] == ["c2", "c3"]
    reasons = {s["module"]: s["reason"] for s in res.skipped}
    assert "ChannelPad" in reasons["c1"] and "model's outputs" in reasons["fc"] and len(reasons) == 2
    assert res.model.c1.out_channels == 4 and res.model.c2.in_channels == 8
    scaled = nn.Sequential(nn.Conv2d(3, 4, 3), ChannelScale(4), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    scaled(_x())
    by = {layer.name: layer for layer in analyze_layers(scaled, _x())}
    assert "coupled to 1: ChannelScale (a layer with weights Torch-Pruning has no pruner for)" == by["0"].note
    assert by["2"].note == ""  # conv -> flatten -> linear is a reshape Torch-Pruning maps
    rnn = {layer.name: layer for layer in analyze_layers(LinearGRU(), torch.randn(2, 7, 6))}
    assert "GRU (recurrent layers are not channel-pruned)" in rnn["embed"].note
    # an RNN matrix's MACs per sequence: steps x rows x cols
    assert rnn["rnn.weight_hh_l0"].macs == 7 * 36 * 12 and rnn["rnn.weight_ih_l0"].params == 36 * 10 + 36


def test_bad_policies_fail_before_any_change() -> None:
    torch.manual_seed(0)
    net = ResidualNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = _x()
    data = [(x, torch.tensor([0, 1]))]
    for policy, message in (
        (Policy({"stem": ChannelPrune(0.5), "nope": Keep()}), "does not have: nope"),
        (Policy({"point": Pattern()}), "PatDNN patterns are 4-of-9 shapes of 3x3 kernels, this convolution's kernel "
                                       "is 1x1"),
        (Policy({"a1": ChannelPrune(0.5, round_to=8)}), "its 6 channels hold no non-zero multiple of 8"),
        (Policy({"stem": ChannelPrune(0.5), "a2": ChannelPrune(0.75)}), "are coupled .* different actions"),
        (Policy({"stem": ChannelPrune(0.5), "b2": Keep()}), "'b2' is Keep but is coupled to 'stem'"),
        (Policy({"a1": ChannelPrune(0.5, "taylor")}), "importance 'taylor' on 'a1' needs data"),
        (Policy({"rnn.weight_ih_l0": LowRank(0.5)}), "does not have: rnn.weight_ih_l0"),
    ):
        with pytest.raises(InputError, match=message):
            apply_policy(net, policy, x, copy=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [n for n, _ in net.named_modules()] == [n for n, _ in ResidualNet().named_modules()]
    # the same layer with data is fine
    assert apply_policy(net, Policy({"a1": ChannelPrune(0.5, "taylor")}), x, data=data).history[0]["details"][
        "kept"] == 3
    with pytest.raises(InputError, match=r"forward failed on example_input of shape \(2, 5, 10, 10\)"):
        apply_policy(net, Policy({"a1": LowRank(0.5)}), torch.zeros(2, 5, 10, 10))
    with pytest.raises(InputError, match="policy must be a devicefit Policy"):
        apply_policy(net, {"a1": Keep()}, x)  # type: ignore[arg-type]


def test_weight_bits_rounds_to_symmetric_levels_keeps_zeros_and_matches_int8_at_8_bits() -> None:
    from devicefit.compression import WeightBits
    from devicefit.compression.bits import quantize_to_bits
    from devicefit.compression.int8 import quantize_weight

    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    w[0, 0] = 0.0
    for bits in (2, 3, 4):
        q = quantize_to_bits(w, bits)
        for row in q.reshape(6, -1):
            assert len(torch.unique(row)) <= 2 ** bits - 1  # levels -qmax..qmax
        assert torch.all(q[0, 0] == 0)
        assert (q - w).abs().max() <= w.abs().max() / (2 ** (bits - 1) - 1) / 2 + 1e-6
    assert torch.allclose(quantize_to_bits(w, 8), quantize_weight(w, per_channel=True), atol=1e-6)
    with pytest.raises(InputError, match="WeightBits.bits"):
        WeightBits(bits=1)
    assert WeightBits(bits=3) == Policy.from_json(Policy({"a": WeightBits(bits=3)}).to_json())["a"]
