"""Compression policies and transforms: SVD, factorised layers, masks, apply/replay, bad policies."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from devicefit.compression import (
    Keep,
    LowRank,
    Policy,
    Unstructured,
    apply_policy,
    finalize,
    replay_history,
    svd_factors,
    unstructured_mask,
)
from devicefit.errors import InputError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.grouped(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_svd_reconstructs_at_full_rank_and_has_the_requested_rank() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 4, generator=g) @ torch.randn(4, 9, generator=g)  # rank 4
    b, a = svd_factors(w, 4)
    assert torch.allclose(b @ a, w, atol=1e-5)
    for r in (1, 2, 3):
        b, a = svd_factors(w, r)
        assert b.shape == (6, r) and a.shape == (r, 9)
        assert int(torch.linalg.matrix_rank(b @ a)) == r
        # Eckart-Young: the error is the norm of the dropped singular values
        s = torch.linalg.svdvals(w)
        assert float(torch.linalg.norm(w - b @ a)) == pytest.approx(float(s[r:].norm()), rel=1e-4)
    with pytest.raises(InputError, match="rank must be an integer in 1..4"):
        svd_factors(w[:, :4], 5)


@pytest.mark.parametrize("form", ["channel", "spatial"])
def test_factorised_layers_keep_shapes_and_at_full_rank_the_outputs(form: str) -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = _x()
    full = apply_policy(net, Policy({"conv": LowRank(1.0, form), "fc": LowRank(1.0)}), x)
    with torch.no_grad():
        assert torch.allclose(full.model.eval()(x), net(x), atol=1e-4)
    half = apply_policy(net, Policy({"conv": LowRank(0.75, form), "fc": LowRank(0.4)}), x)
    ranks = {h["module"]: h["details"]["rank"] for h in half.history}
    # full ranks: fc min(5, 8) = 5; conv channel min(8, 3*3*3) = 8, spatial min(3*3, 8*3) = 9
    assert ranks["fc"] == 2 and ranks["conv"] == (6 if form == "channel" else 7)
    with torch.no_grad():
        assert half.model.eval()(x).shape == (2, 5)
    # exact parameter counts: conv -> r*(3*3*3) + 8*r + 8 (channel) or r*3*3 + 8*r*3 + 8 (spatial); fc -> 8*2 + 2*5 + 5
    conv = 6 * 27 + 8 * 6 + 8 if form == "channel" else 7 * 9 + 8 * 7 * 3 + 8
    assert half.cost["params"] == sum(p.numel() for p in net.parameters()) - (216 + 8) + conv - 45 + 31


def test_unsupported_layers_are_skipped_and_reported() -> None:
    res = apply_policy(Net(), Policy({"grouped": LowRank(0.5), "bn": Unstructured(0.5), "fc": Keep()}), _x())
    assert not res.history
    reasons = {s["module"]: s["reason"] for s in res.skipped}
    assert "grouped convolution" in reasons["grouped"] and "no weight matrix" in reasons["bn"]


def test_unstructured_masks_persist_through_training_and_finalize() -> None:
    torch.manual_seed(0)
    net = Net()
    res = apply_policy(net, Policy({"conv": Unstructured(0.75), "fc": Unstructured(0.5)}), _x())
    model = res.model
    assert res.cost["nonzero_params"] < res.cost["params"]
    zero = model.conv.weight == 0
    assert int(zero.sum()) == round(0.75 * model.conv.weight.numel())
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(_x()).square().mean().backward()
        opt.step()
    assert torch.equal(model.conv.weight == 0, zero)  # pruned weights stay exactly zero
    finalize(model)
    assert not hasattr(model.conv, "weight_orig") and torch.equal(model.conv.weight == 0, zero)


def test_unstructured_pruning_of_lstm_matrices() -> None:
    from devicefit.models.rnn import RowRNN

    torch.manual_seed(0)
    rnn = RowRNN("lstm", hidden=16).eval()
    x = torch.randn(3, 1, 28, 28)
    res = apply_policy(rnn, Policy({"rnn": Unstructured(0.5)}), x)
    pruned = res.model.rnn
    assert res.history[0]["details"]["weights"] == ["weight_ih_l0", "weight_hh_l0"]
    for w in ("weight_ih_l0", "weight_hh_l0"):
        assert float((getattr(pruned, w) == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():
        manual = rnn.rnn
        manual.weight_ih_l0.data = pruned.weight_ih_l0.detach().clone()
        manual.weight_hh_l0.data = pruned.weight_hh_l0.detach().clone()
        assert torch.allclose(res.model(x), rnn(x), atol=1e-6)  # the forward really uses the masked weights


def test_unstructured_mask_keeps_the_largest() -> None:
    w = torch.tensor([[0.1, -3.0], [2.0, -0.5]])
    assert unstructured_mask(w, 0.5).tolist() == [[0.0, 1.0], [1.0, 0.0]]


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["conv", "fc", "grouped", "a.b"]), st.one_of(
    st.builds(LowRank, st.floats(0.01, 1.0), st.sampled_from(["auto", "linear", "channel", "spatial"])),
    st.builds(Unstructured, st.floats(0.0, 0.99)), st.just(Keep()))))
def test_policies_round_trip_through_json(actions) -> None:
    policy = Policy(actions)
    assert Policy.from_json(policy.to_json()) == policy
    assert json.loads(policy.to_json())["format"] == "devicefit-policy"


def test_history_replays_to_the_same_model() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    res = apply_policy(net, Policy({"conv": LowRank(0.5, "spatial"), "fc": Unstructured(0.4)}), _x())
    history = json.loads(json.dumps(res.history))  # plain JSON
    again = replay_history(net, history, _x())
    with torch.no_grad():
        assert torch.equal(again.eval()(_x()), res.model.eval()(_x()))


def test_bad_policies_fail_before_any_change() -> None:
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InputError, match="does not have: convv"):
        apply_policy(net, Policy({"convv": LowRank(0.5)}), _x())
    for make, message in ((lambda: LowRank(0.0), r"rank_fraction must be a number in \(0, 1\]"),
                          (lambda: LowRank(1.5), "rank_fraction"), (lambda: Unstructured(1.0), r"sparsity .* \[0, 1\)"),
                          (lambda: LowRank(0.5, "diagonal"), "form must be")):
        with pytest.raises(InputError, match=message):
            make()
    for text, message in (('{"format": "devicefit-policy", "version": 1, "layers": {"fc": {"action": "int4"}}}',
                           "unknown action 'int4'"),
                          ('{"format": "devicefit-policy", "version": 1, "layers": {"fc": {"action": "lowrank", '
                           '"rank": 3}}}', "no field"),
                          ('{"format": "other"}', "not a devicefit policy"), ("{", "must be JSON")):
        with pytest.raises(InputError, match=message):
            Policy.from_json(text)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
