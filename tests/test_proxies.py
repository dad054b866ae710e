"""Zero-cost proxies on tiny networks, against closed forms and independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devicefit.proxies import (
    PROXIES,
    ProxyResult,
    compute_proxies,
    proxy_metrics,
    sample_nb201_cells,
    synflow,
    vote,
)
from devicefit.spaces import build_nb201, get_space
from devicefit.study import ZeroCostProxies, evaluate_all

from .conftest import need_file


def _batch(n: int = 16, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _linear(d: int = 6, classes: int = 3, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, classes)


def _softmax_regression_terms(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor):
    """Closed forms for a single Linear layer with mean cross-entropy, in numpy float64."""
    W = lin.weight.detach().double().numpy()
    b = lin.bias.detach().double().numpy()
    X = x.double().numpy()
    n = X.shape[0]
    a = X @ W.T + b
    P = np.exp(a - a.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    Y = np.eye(W.shape[0])[y.numpy()]
    dA = (P - Y) / n  # dL/da
    G = dA.T @ X  # dL/dW
    # Hessian-vector product H G: (1/n) sum_n (diag(p) - p p^T)(G x_n) x_n^T
    HG = np.zeros_like(W)
    for i in range(n):
        J = np.diag(P[i]) - np.outer(P[i], P[i])
        HG += np.outer(J @ (G @ X[i]), X[i]) / n
    return W, a, dA, G, HG


def test_single_linear_layer_matches_closed_forms() -> None:
    lin = _linear()
    x, y = _batch()
    W, a, dA, G, HG = _softmax_regression_terms(lin, x, y)
    r = compute_proxies(lin, x, y, ["grad_norm", "snip", "grasp", "fisher", "synflow", "params", "flops"]).results
    assert r["grad_norm"].score == pytest.approx(np.linalg.norm(G), rel=1e-5)
    assert r["snip"].score == pytest.approx(np.abs(W * G).sum(), rel=1e-5)
    assert r["grasp"].score == pytest.approx(-(W * HG).sum(), rel=1e-4)
    g_nk = a * dA  # Linear: one "channel" per output unit, counted once per weight of its row
    assert r["fisher"].score == pytest.approx((0.5 * (g_nk**2).mean(0)).sum() * W.shape[1], rel=1e-5)
    # synflow: |W| applied to ones, R = sum_k (sum_j |W_kj| + |b_k|), dR/dW = 1, so the score is sum |W|
    assert r["synflow"].score == pytest.approx(np.abs(W).sum(), rel=1e-12)
    assert r["params"].score == W.size + W.shape[0]
    assert r["flops"].score == 2 * W.size


class _MLP(nn.Module):
    def __init__(self, d: int = 5, h: int = 40, classes: int = 3) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, h), nn.ReLU(), nn.Linear(h, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_jacob_cov_and_nwot_match_a_direct_numpy_computation() -> None:
    torch.manual_seed(1)
    net = _MLP()
    x, y = _batch(n=12, d=5)
    W1, b1 = net.fc1.weight.detach().double().numpy(), net.fc1.bias.detach().double().numpy()
    W2 = net.fc2.weight.detach().double().numpy()
    X = x.double().numpy()
    h = X @ W1.T + b1
    mask = (h > 0).astype(np.float64)
    jac = (mask * W2.sum(0)) @ W1  # d(sum y)/dx for each image, (N, d)
    corrs = np.corrcoef(jac)
    v = np.linalg.eig(corrs)[0].real  # the reference's eval_score
    expected_jc = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    K = mask @ mask.T + (1 - mask) @ (1 - mask).T
    expected_nwot = np.linalg.slogdet(K)[1]
    r = compute_proxies(net, x, y, ["jacob_cov", "nwot"]).results
    assert r["jacob_cov"].score == pytest.approx(expected_jc, rel=1e-6)
    assert r["nwot"].score == pytest.approx(expected_nwot, rel=1e-9)


def _reference_snip_and_grasp(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The reference's procedure, written independently: snip as |dL/dmask| at mask = 1 on a copy; grasp in
    two passes with .backward() on the Hessian-gradient product."""
    import copy

    net = copy.deepcopy(net).train()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    masks = {m: torch.ones_like(m.weight, requires_grad=True) for m in layers}
    params = {n: p for n, p in net.named_parameters()}
    names = {m: n + ".weight" for n, m in net.named_modules() if m in masks}
    masked = {**params, **{names[m]: m.weight.detach() * masks[m] for m in layers}}
    loss = F.cross_entropy(torch.func.functional_call(net, masked, (x,)), y)
    loss.backward()
    snip = sum(float(masks[m].grad.abs().sum()) for m in layers)
    net.zero_grad()
    weights = [m.weight for m in layers]
    g1 = torch.autograd.grad(F.cross_entropy(net(x), y), weights)
    g2 = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
    sum((a.data * b).sum() for a, b in zip(g1, g2)).backward()
    grasp = sum(float((-w.data * w.grad).sum()) for w in weights)
    return snip, grasp


def test_snip_and_grasp_match_the_reference_procedure_on_a_conv_bn_net() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    snip, grasp = _reference_snip_and_grasp(net, x, y)
    r = compute_proxies(net, x, y, ["snip", "grasp"]).results
    assert r["snip"].score == pytest.approx(snip, rel=1e-5)
    assert r["grasp"].score == pytest.approx(grasp, rel=1e-4, abs=1e-9)


def _tiny_nb201(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(3)
    return build_nb201("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
                       channels=4, cells_per_stage=1, num_classes=num_classes)


def test_synflow_is_data_independent_and_ignores_batchnorm_statistics() -> None:
    net = _tiny_nb201()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s1 = synflow(net, (3, 16, 16)).score
    x, y = torch.randn(8, 3, 16, 16) * 5 + 2, torch.randint(0, 10, (8,))
    s2 = compute_proxies(net, x, y, ["synflow"]).score("synflow")
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 16, 16) * 3)  # changes every BN running statistic
    s3 = synflow(net, (3, 16, 16)).score
    assert s1 is not None and s1 > 0
    assert s1 == s2 == s3
    # the user's model is untouched apart from the running stats we changed on purpose
    for k, v in net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def test_synflow_removes_batchnorm_and_uses_absolute_float64_weights() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    W1, b1 = net[0].weight.detach().double().abs(), net[0].bias.detach().double().abs()
    W2 = net[2].weight.detach().double().abs()
    h = W1 @ torch.ones(3, dtype=torch.float64) + b1
    # R = sum(W2 h + b2): dR/dW2 = h per row, dR/dW1 = (sum_k W2_kj) per input
    expected = float((W2 * h[None, :]).sum() + (W1 * W2.sum(0)[:, None]).sum())
    assert synflow(net, (3,)).score == pytest.approx(expected, rel=1e-12)


def test_compute_proxies_leaves_the_model_as_it_was() -> None:
    net = _tiny_nb201()
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    scores = compute_proxies(net, x, y)
    assert all(r.ok for r in scores.results.values()), scores.results
    assert not net.training and not any(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_scratch_network_gives_the_same_scores_without_the_copy() -> None:
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    kept = compute_proxies(_tiny_nb201(), x, y)
    scratch_net = _tiny_nb201()
    scratch = compute_proxies(scratch_net, x, y, scratch=True)
    assert {n: r.score for n, r in scratch.results.items()} == {n: r.score for n, r in kept.results.items()}
    assert next(scratch_net.parameters()).dtype == torch.float64  # scored in place: the network is spent


def test_shared_pass_gives_the_same_scores_as_each_proxy_alone() -> None:
    net = _tiny_nb201()
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    together = compute_proxies(net, x, y).results
    for name in PROXIES:
        alone = compute_proxies(net, x, y, [name]).results[name]
        assert alone.score == pytest.approx(together[name].score, rel=1e-5), name


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).mean((2, 3))
        return self.fc(h) * float("nan")


def test_a_nan_network_is_reported_as_failed_not_ranked() -> None:
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    r = compute_proxies(_NaNNet(), x, y).results
    for name in ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow"):
        assert not r[name].ok and r[name].score is None, name
        assert name in r[name].error
    assert r["params"].ok  # needs no forward pass
    with pytest.raises(ValueError, match="exactly one"):
        ProxyResult("x", score=1.0, error="both")
    assert not ProxyResult.of("x", float("inf")).ok


def test_constant_output_fails_jacob_cov_with_a_reason() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        net[1].weight.zero_()
    r = compute_proxies(net, torch.randn(5, 3, 2, 2), torch.randint(0, 3, (5,)), ["jacob_cov"]).results
    assert not r["jacob_cov"].ok and "not finite" in r["jacob_cov"].error


def test_vote_is_the_pairwise_majority_with_directions() -> None:
    scores = {"synflow": [3.0, 2.0, 1.0, 0.0], "jacob_cov": [0.0, 2.0, 1.0, 3.0], "snip": [3.0, 1.0, 2.0, 0.0]}
    v = vote(scores)
    assert v.prefers(0, 1) == 1 and v.prefers(1, 2) == 1 and v.prefers(3, 0) == -1
    # brute force wins and pairwise accuracy
    s = np.array(list(scores.values()))
    maj = np.sign(np.sign(s[:, :, None] - s[:, None, :]).sum(0))
    wins = (maj > 0).sum(1) + 0.5 * ((maj == 0).sum(1) - 1)
    np.testing.assert_allclose(v.wins, wins)
    truth = np.array([4.0, 1.0, 2.0, 3.0])
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    expected = np.mean([maj[i, j] == np.sign(truth[i] - truth[j]) for i, j in pairs])
    assert v.pairwise_accuracy(truth) == pytest.approx(expected)
    assert list(v.ranking()[:1]) == [0]
    with pytest.raises(ValueError, match="missing snip"):
        vote({"synflow": [1, 2], "jacob_cov": [1, 2]})
    with pytest.raises(ValueError, match="finite"):
        vote({"synflow": [1, float("nan")], "jacob_cov": [1, 2], "snip": [1, 2]})


def _estimator(data_root, **kw) -> ZeroCostProxies:
    need_file(data_root, "images/cifar10_train_aug_960.npz")
    return ZeroCostProxies(**{"proxies": ("synflow", "params", "grad_norm"), "batch_size": 4, "data_dir": data_root,
                              **kw})


def test_nb201_run_resumes_without_recomputing(tmp_path, data_root) -> None:
    space, est = get_space("nb201"), _estimator(data_root)
    first = evaluate_all(space, sample_nb201_cells(3, 0), [est], tmp_path / "s.sqlite", progress=False)
    assert first.computed == 3
    seen = []
    second = evaluate_all(space, sample_nb201_cells(5, 0), [est], tmp_path / "s.sqlite", progress=False,
                          on_outcome=seen.append)
    assert (second.computed, second.reused, len(seen)) == (2, 3, 2)
    assert all(second.values("proxies")[k] == v for k, v in first.values("proxies").items())
    other = evaluate_all(space, sample_nb201_cells(3, 0), [_estimator(data_root, seed=1)], tmp_path / "s.sqlite",
                         progress=False)
    assert other.computed == 3  # another seed is another estimator: nothing reused


def test_same_cell_same_seed_gives_the_same_record(data_root) -> None:
    space = get_space("nb201")
    cell = sample_nb201_cells(1, 7)[0]
    est = _estimator(data_root, proxies=("grad_norm", "synflow"))
    est.prepare()
    a = est.evaluate(space, cell)["scores"]
    assert a == est.evaluate(space, cell)["scores"]
    other = _estimator(data_root, proxies=("grad_norm", "synflow"), seed=3)
    other.prepare()
    assert other.evaluate(space, cell)["scores"]["grad_norm"] != a["grad_norm"]


class _FakeTable:
    """Stands in for NB201Table.values in proxy_metrics."""

    def __init__(self, truth: dict[str, float]) -> None:
        self.truth = truth

    def values(self, cells, column):
        return np.array([self.truth[c.to_str()] for c in cells])


def test_proxy_metrics_drop_failures_and_follow_directions(monkeypatch) -> None:
    cells = [c.to_str() for c in sample_nb201_cells(6, 0)]
    truth = {a: float(i) for i, a in enumerate(cells)}
    records = {a: {"scores": {"params": float(i), "synflow": float(i), "snip": float(i), "jacob_cov": float(i)},
                   "errors": {}} for i, a in enumerate(cells)}
    del records[cells[2]]["scores"]["synflow"]
    records[cells[2]]["errors"]["synflow"] = "synflow score is nan (not finite)"
    m = proxy_metrics(records, _FakeTable(truth), "c10_test_200ep", ["params", "synflow", "snip", "jacob_cov"])
    assert m["params"]["spearman"] == pytest.approx(1.0)
    assert m["synflow"]["n"] == 5 and m["synflow"]["failures"] == 1
    assert m["vote"]["n"] == 5 and m["vote"]["pairwise"] == pytest.approx(1.0)
    from devicefit.proxies.result import ProxySpec

    monkeypatch.setitem(PROXIES, "params", ProxySpec("params", False, "baseline", "flipped for the test"))
    m = proxy_metrics(records, _FakeTable(truth), "c10_test_200ep", ["params"])
    assert m["params"]["spearman"] == pytest.approx(-1.0)


def test_bad_inputs_get_clear_errors() -> None:
    net = _linear()
    x, y = _batch()
    with pytest.raises(ValueError, match="unknown proxy"):
        compute_proxies(net, x, y, ["vote"])
    with pytest.raises(ValueError, match="targets"):
        compute_proxies(net, x, y[:3])
    with pytest.raises(ValueError, match="sample size"):
        sample_nb201_cells(0, 0)
    with pytest.raises(ValueError, match="dataset"):
        ZeroCostProxies(("snip",), dataset="mnist")
    with pytest.raises(ValueError, match="non-negative"):
        ZeroCostProxies(("snip",), seed=-1)


def _reference_fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The reference's procedure, rewritten: an Identity after every Conv2d/Linear output with an old-style
    module backward hook, per-channel 0.5*mean_n(sum_hw a*g)^2 broadcast to the channel's weights, summed."""
    import copy
    import types
    import warnings

    net = copy.deepcopy(net).train()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def fwd_conv(self, inp):
        self.act = self.dummy(F.conv2d(inp, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                       self.groups))
        return self.act

    def fwd_linear(self, inp):
        self.act = self.dummy(F.linear(inp, self.weight, self.bias))
        return self.act

    def hook_factory(layer):
        def hook(_module, _grad_input, grad_output):
            act, grad = layer.act.detach(), grad_output[0].detach()
            g_nk = (act * grad).sum(list(range(2, act.dim()))) if act.dim() > 2 else act * grad
            layer.fisher = g_nk.pow(2).mean(0).mul(0.5)

        return hook

    for layer in layers:
        layer.fisher, layer.dummy = None, nn.Identity()
        layer.forward = types.MethodType(fwd_conv if isinstance(layer, nn.Conv2d) else fwd_linear, layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.dummy.register_backward_hook(hook_factory(layer))
    F.cross_entropy(net(x), y).backward()
    total = 0.0
    for layer in layers:
        if layer.fisher is not None:
            per_weight = layer.fisher.abs()[:, None].expand(-1, layer.weight[0].numel())
            total += float(per_weight.sum())
    return total


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fisher_matches_the_reference_hook_procedure_on_nb201() -> None:
    net = _tiny_nb201()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    expected = _reference_fisher(net, x, y)
    assert compute_proxies(net, x, y, ["fisher"]).score("fisher") == pytest.approx(expected, rel=1e-5)


def test_reference_model_biases_change_only_fisher_and_synflow() -> None:
    from devicefit.proxies import add_cell_conv_biases

    net = _tiny_nb201()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    before = compute_proxies(net, x, y).results
    with torch.no_grad():
        out_before = net.train()(x)
    add_cell_conv_biases(net)
    convs = [m for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and ".ops." in n]
    assert convs and all(c.bias is not None for c in convs)
    with torch.no_grad():
        torch.testing.assert_close(net(x), out_before, rtol=1e-4, atol=1e-5)  # BN removes the bias
    after = compute_proxies(net, x, y).results
    for name in ("grad_norm", "snip", "grasp", "jacob_cov", "nwot", "flops"):
        assert after[name].score == pytest.approx(before[name].score, rel=1e-3), name
    assert after["fisher"].score != pytest.approx(before["fisher"].score, rel=1e-3)
    assert after["synflow"].score > before["synflow"].score  # |bias| adds to every path
