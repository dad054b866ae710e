"""The per-layer policy space of one model: exact budgets without building, the Space protocol, bad input."""

from __future__ import annotations

import random

import pytest
import torch

from devicefit.compression import compressed_cost
from devicefit.compression.policy_space import PolicySpace
from devicefit.errors import InputError
from devicefit.models import get_model

SHAPES = {"resnet20": (3, 32, 32), "lstm": (1, 28, 28), "lenet5": (1, 28, 28), "gru": (1, 28, 28)}


def _space(name: str, method: str, **kw: object) -> PolicySpace:
    torch.manual_seed(0)
    return PolicySpace(get_model(name), torch.zeros(1, *SHAPES[name]), method, model_name=name, **kw)


@pytest.mark.parametrize(("name", "method"), [("resnet20", "lowrank"), ("resnet20", "channel"),
                                              ("resnet20", "unstructured"), ("lstm", "lowrank"),
                                              ("gru", "unstructured"), ("lenet5", "channel")])
def test_budgets_equal_the_compressed_models_cost(name: str, method: str) -> None:
    sp = _space(name, method)
    rng = random.Random(1)
    candidates = [sp.sample(rng) for _ in range(3)] + [sp.uniform(min(sp.ratios)), sp.uniform(1.0)]
    for c in candidates:
        measured = compressed_cost(sp.build(c), sp.example_input)
        assert sp.cost(c) == {k: measured[k] for k in sp.metrics}, (name, method, c)
    assert sp.cost(sp.uniform(1.0)) == sp.original_cost
    saved = "nonzero_params" if method == "unstructured" else "params"  # masks keep the stored parameters
    assert sp.cost(sp.uniform(min(sp.ratios)))[saved] < 0.6 * sp.original_cost[saved]


def test_channel_decisions_are_coupled_groups_and_the_protocol_holds() -> None:
    sp = _space("resnet20", "channel")
    stage1 = next(d for d in sp.decisions if "conv1" in d)
    assert "layer1.0.conv2" in stage1 and "layer1.2.conv2" in stage1  # the residual stage is one decision
    assert all("linear" not in d for d in sp.decisions)  # the classifier's outputs are the model's
    c = sp.sample(random.Random(0))
    assert sp.from_json(sp.to_json(c)) == c and sp.from_identity(sp.identity(c)) == c
    assert sp.from_choices(sp.to_choices(c)) == c and len(sp.choices) == len(sp.decisions)
    for n in sp.neighbours(c):
        assert sum(a != b for a, b in zip(n, c)) == 1
        i = next(i for i, (a, b) in enumerate(zip(n, c)) if a != b)
        assert abs(sp.ratios.index(n[i]) - sp.ratios.index(c[i])) == 1
    policy = sp.policy(c)
    assert all(policy[name].keep == r for names, r in zip(sp.decisions, c) if r < 1 for name in names)
    assert sp.settings()["weights"] == _space("resnet20", "channel").settings()["weights"]


def test_bad_input_is_refused() -> None:
    sp = _space("lenet5", "lowrank")
    for bad, message in (([0.5], "list of"), ([0.33] * len(sp.decisions), "not one of the space's ratios"),
                         ("x", "list of")):
        with pytest.raises(InputError, match=message):
            sp.cost(bad)  # type: ignore[arg-type]
    model = get_model("lenet5")
    for kwargs, message in (({"method": "int4"}, "must be one of"), ({"method": "channel", "importance": "taylor"},
                                                                       "data-free importance"),
                            ({"ratios": [0.0, 0.5]}, r"in \(0, 1\]"), ({"layers": ["conv9"]}, "not compressible")):
        with pytest.raises(InputError, match=message):
            PolicySpace(model, torch.zeros(1, 1, 28, 28), **kwargs)  # type: ignore[arg-type]
    assert 1.0 in PolicySpace(model, torch.zeros(1, 1, 28, 28), ratios=[0.5]).ratios  # "keep" is always a choice


@pytest.mark.parametrize(("name", "method"), [("resnet20", "channel"), ("resnet20", "lowrank"),
                                              ("lenet5", "unstructured")])
def test_energy_budgets_equal_the_energy_models_count(name: str, method: str, data_root) -> None:
    """ECC's bilinear energy of a policy, without building it, equals the fitted model's energy of the built
    model (channels: every weight counts; masks: zero weights are free)."""
    from .conftest import need_file

    need_file(data_root, "fbnet/fbnet_cached_metrics.json")
    from devicefit.hardware import fit_energy_model

    energy = fit_energy_model("eyeriss", data_dir=data_root)
    sp = PolicySpace(get_model(name), torch.zeros(1, *SHAPES[name]), method, energy=energy)
    assert "energy_mj" in sp.metrics and sp.settings()["energy"]["device"] == "eyeriss"
    rng = random.Random(2)
    for c in [sp.sample(rng) for _ in range(3)]:
        built = energy.model_energy(sp.build(c), sp.example_input, sparse=method == "unstructured").total_mj
        assert sp.cost(c)["energy_mj"] == pytest.approx(built, rel=1e-12)
        assert sp.cost(c)["energy_mj"] < sp.original_cost["energy_mj"]


def test_bit_width_budgets_equal_the_applied_policys_cost() -> None:
    from devicefit.compression import apply_policy

    sp = _space("lenet5", "bits")
    assert sp.ratios[0] == 2 / 32 and sp.policy(sp.uniform(4 / 32))[sp.decisions[0][0]].bits == 4
    rng = random.Random(2)
    for c in [sp.sample(rng) for _ in range(3)] + [sp.uniform(2 / 32), sp.uniform(1.0)]:
        applied = apply_policy(sp.model, sp.policy(c), sp.example_input)
        assert sp.cost(c) == {k: applied.cost[k] for k in sp.metrics}, c
    two = sp.cost(sp.uniform(2 / 32))
    assert two["params"] == sp.original_cost["params"] and two["macs"] == sp.original_cost["macs"]
    assert two["bytes"] < sp.original_cost["bytes"] / 10  # 2-bit weights; the float biases stay


def test_low_rank_candidates_reuse_each_layers_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    sp = _space("lenet5", "lowrank")
    calls = []
    real = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = sp.build(sp.uniform(0.25))
    sp.build(sp.uniform(0.5))
    sp.build(sp.sample(random.Random(3)))
    assert len(calls) == 0  # the space's cost tables already decomposed every layer once
    from devicefit.compression import LowRank, Policy, apply_policy

    uncached = apply_policy(sp.model, Policy.uniform([d[0] for d in sp.decisions], LowRank(rank_fraction=0.25)),
                            sp.example_input).model
    assert len(calls) == len(sp.decisions)  # outside the cache every build decomposes again
    x = torch.randn(2, *SHAPES["lenet5"])
    assert torch.equal(first.eval()(x), uncached.eval()(x))


@pytest.mark.parametrize(("method", "metric"), [("lowrank", "params"), ("channel", "macs")])
def test_a_budgeted_view_repairs_samples_to_a_tight_budget(method: str, metric: str) -> None:
    sp = _space("resnet20", method)
    smallest = sp.cost(sp.uniform(min(sp.ratios)))[metric]
    limit = smallest + 0.15 * (sp.original_cost[metric] - smallest)
    rng = random.Random(0)
    raw = [sp.sample(rng) for _ in range(40)]
    assert sum(sp.cost(c)[metric] <= limit for c in raw) < 4  # random policies almost never fit
    view = sp.within(metric, limit)
    for c in raw:
        fixed = view.repair(c)
        cost = sp.cost(fixed)[metric]
        assert cost <= limit, (c, fixed)
        if sp.cost(c)[metric] <= limit:
            assert fixed == c
        else:  # every decision at or below its sampled ratio, and no decision can go one step up
            assert all(f <= r for f, r in zip(fixed, c))
            for d, r in enumerate(fixed):
                i = sp.ratios.index(r)
                if r < c[d]:
                    up = (*fixed[:d], sp.ratios[i + 1], *fixed[d + 1:])
                    assert sp.cost(up)[metric] > limit, (d, fixed)
    assert all(sp.cost(view.sample(rng))[metric] <= limit for _ in range(20))
    choices = [len(sp.ratios) - 1] * len(sp.decisions)
    assert sp.cost(view.from_choices(choices))[metric] <= limit and sp.from_choices(choices) == sp.uniform(1.0)
    assert view.settings() == sp.settings()  # evaluations are shared: accuracy does not depend on the budget
    with pytest.raises(InputError, match="impossible budget"):
        sp.within(metric, 0.01 * sp.original_cost[metric])
    with pytest.raises(InputError, match="exact budget"):
        sp.within("latency_ms", 1.0)
