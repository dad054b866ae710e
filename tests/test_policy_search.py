"""AutoML compression: per-layer policies searched to a budget on a trained LeNet-5 (MNIST train8k)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from devicefit.cli import app
from devicefit.errors import InputError

from .conftest import need_file

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def lenet(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """LeNet-5 trained for one epoch on train8k (about 97 %), and its weights file."""
    need_file(data_root, "images/t10k-images-idx3-ubyte.gz")
    from devicefit.compression import FinetuneConfig, finetune
    from devicefit.models import get_model, load_images

    torch.manual_seed(0)
    model = get_model("lenet5")
    finetune(model, load_images("mnist", "train8k", data_root), FinetuneConfig(epochs=1, lr=0.05, augment=False),
             progress=False)
    path = tmp_path_factory.mktemp("lenet") / "lenet5.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _evaluations(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return int(db.execute("select count(*) from evaluations").fetchone()[0])


def test_greedy_meets_the_budget_and_resumes_without_reevaluating(lenet, data_root: Path, tmp_path: Path) -> None:
    from devicefit.compression import compressed_cost
    from devicefit.study import PolicyAccuracy, search_policy

    model, _ = lenet
    store = tmp_path / "s.sqlite"
    kwargs = {"method": "lowrank", "metric": "params", "fraction": 0.3, "search": "greedy", "store": store,
              "dataset": "mnist", "images": 300, "data_dir": data_root, "progress": False}
    found = search_policy(model, EXAMPLE, **kwargs)
    sp = found.space
    assert found.cost["params"] <= found.limit == pytest.approx(0.3 * sp.original_cost["params"])
    assert compressed_cost(sp.build(found.candidate), EXAMPLE)["params"] == found.cost["params"]
    assert set(found.sensitivity) == {d[0] for d in sp.decisions}
    assert all(len(c) == len(sp.ratios) - 1 for c in found.sensitivity.values())
    # fc1 holds 93 % of the weights and low rank barely hurts it; the classifier fc2 is the sensitive layer
    assert found.accuracy > 85.0 and found.candidate[-1] > min(sp.ratios)
    assert found.accuracy > PolicyAccuracy("mnist", 300, data_dir=str(data_root)).evaluate(
        sp, sp.uniform(found.uniform["ratio"]))["value"]  # better than the uniform ratio of the same budget
    again = PolicyAccuracy("mnist", 300, data_dir=str(data_root))
    assert again.evaluate(sp, found.candidate)["value"] == found.accuracy
    n = _evaluations(store)
    assert n == found.evaluations  # the uncompressed model, every single-layer policy and the answer
    resumed = search_policy(model, EXAMPLE, **kwargs)
    assert _evaluations(store) == n and resumed.candidate == found.candidate  # nothing computed twice
    uniform = found.uniform
    assert uniform and sp.cost(sp.uniform(uniform["ratio"]))["params"] <= found.limit


def test_strategies_search_the_policy_space_within_the_budget(lenet, data_root: Path, tmp_path: Path) -> None:
    from devicefit.study import search_policy

    model, _ = lenet
    for search in ("evolution", "optuna", "rl"):
        found = search_policy(model, EXAMPLE, method="channel", metric="macs", fraction=0.5, search=search,
                              evaluations=6, store=tmp_path / f"{search}.sqlite", dataset="mnist", images=200,
                              data_dir=data_root, progress=False, seed=1)
        assert found.evaluations == 6 and found.cost["macs"] <= found.limit
        assert found.accuracy == max(v for v in found.curve if v is not None)
        assert len(found.each) == 6 and found.accuracy == max(v for v in found.each if v is not None)


def test_strategies_meet_a_budget_random_policies_almost_never_meet(lenet, data_root: Path, tmp_path: Path) -> None:
    """Near the smallest policy's cost no random policy fits (the study used to give up after 200 rejections);
    the searched space repairs samples to the budget, so every strategy runs its evaluations within it."""
    from devicefit.compression.policy_space import PolicySpace
    from devicefit.study import search_policy

    model, _ = lenet
    sp = PolicySpace(model, EXAMPLE, "lowrank")
    smallest, original = sp.cost(sp.uniform(min(sp.ratios)))["params"], sp.original_cost["params"]
    limit = smallest + 0.01 * (original - smallest)  # 42 of 4,096 policies fit: 1 % of random ones
    for search in ("random", "evolution", "optuna", "rl"):
        found = search_policy(model, EXAMPLE, method="lowrank", metric="params", limit=limit, search=search,
                              evaluations=8, store=tmp_path / "tight.sqlite", dataset="mnist", images=100,
                              data_dir=data_root, progress=False)
        assert found.evaluations == 8 and found.cost["params"] <= limit, search


def test_impossible_or_pointless_budgets_fail_before_any_work(lenet, data_root: Path, tmp_path: Path) -> None:
    from devicefit.study import search_policy

    model, _ = lenet
    store = tmp_path / "never.sqlite"
    for kwargs, message in (({"fraction": 0.001}, "impossible budget"), ({"fraction": 1.0}, "already meets"),
                            ({"limit": 10.0, "fraction": 0.5}, "either as limit"),
                            ({"fraction": 0.5, "search": "annealing"}, "must be one of"),
                            ({"fraction": 0.5, "metric": "latency"}, "cost metric must be one of")):
        with pytest.raises(InputError, match=message):
            search_policy(model, EXAMPLE, **{"method": "lowrank", "metric": "params", "store": store,
                                             "dataset": "mnist", "data_dir": data_root, **kwargs})
    assert not store.exists()


def test_cli_compresses_to_a_searched_policy_with_its_report(lenet, data_root: Path, tmp_path: Path) -> None:
    _, weights = lenet
    out = tmp_path / "out"
    args = ["compress", "lenet5", "--weights", str(weights), "--method", "lowrank", "--target-params", "0.25",
            "--store", str(tmp_path / "s.sqlite"), "--search-images", "200", "--eval-limit", "300", "--out",
            str(out), "--data-dir", str(data_root), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["search"]["search"] == "greedy"
    assert report["cost"]["compressed"]["params"] <= 0.25 * report["cost"]["original"]["params"]
    assert report["cost"]["compressed"]["params"] == report["search"]["cost"]["params"]  # the budget is exact
    page = Path(report["files"]["html"]).read_text()
    assert "Policy search" in page and page.count("<svg") >= 2  # sensitivity curves and per-layer plot
    bad = CliRunner().invoke(app, [*args[:8], "--ratio", "0.5", "--target-macs", "0.5", "--out", str(out),
                                   "--data-dir", str(data_root)])
    assert bad.exit_code == 2 and "give one target" in bad.output


def test_cli_energy_target_on_a_device(lenet, data_root: Path, tmp_path: Path) -> None:
    need_file(data_root, "fbnet/fbnet_cached_metrics.json")
    _, weights = lenet
    res = CliRunner().invoke(app, ["compress", "lenet5", "--weights", str(weights), "--method", "channel",
                                   "--target-energy-mj", "0.03", "--device", "eyeriss", "--store",
                                   str(tmp_path / "e.sqlite"), "--search-images", "200", "--eval-limit", "200",
                                   "--out", str(tmp_path / "out"), "--data-dir", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    search = json.loads(res.output)["search"]
    assert search["metric"] == "energy_mj" and search["cost"]["energy_mj"] <= 0.03 < search["original_cost"][
        "energy_mj"]
    res = CliRunner().invoke(app, ["compress", "lenet5", "--weights", str(weights), "--method", "channel",
                                   "--target-energy-mj", "0.03", "--store", str(tmp_path / "e.sqlite"), "--out",
                                   str(tmp_path / "out"), "--data-dir", str(data_root)])
    assert res.exit_code == 2 and "go together" in res.output


def test_iterative_rounds_reach_what_one_shot_cannot_and_resume(lenet, data_root: Path, tmp_path: Path) -> None:
    """Low rank of LeNet-5 to 10x fewer parameters: one shot cannot (every layer at the smallest rank fraction
    still keeps 20 %); two rounds of search + fine-tuning, the second on the factorised model, can."""
    from devicefit.compression import FinetuneConfig, compressed_cost
    from devicefit.models import evaluate_accuracy, load_images
    from devicefit.study import search_policy
    from devicefit.study.policy_search import iterative_compress

    model, _ = lenet
    with pytest.raises(InputError, match="impossible budget"):
        search_policy(model, EXAMPLE, method="lowrank", metric="params", fraction=0.1, store=tmp_path / "o.sqlite",
                      dataset="mnist", data_dir=data_root)
    kwargs = {"rounds": 2, "fraction": 0.1, "method": "lowrank", "metric": "params", "store": tmp_path / "i.sqlite",
              "dataset": "mnist", "images": 200, "checkpoint_dir": tmp_path / "rounds", "data_dir": data_root,
              "recovery": FinetuneConfig(epochs=0.25, lr=0.02, augment=False, distill=True), "progress": False}
    result = iterative_compress(model, EXAMPLE, **kwargs)
    start = compressed_cost(model, EXAMPLE)["params"]
    assert [r["round"] for r in result.rounds] == [1, 2]
    assert result.rounds[0]["cost"]["params"] <= start * 0.1 ** 0.5 and result.rounds[1]["cost"]["params"] <= 0.1 * start
    assert compressed_cost(result.model, EXAMPLE)["params"] == result.rounds[1]["cost"]["params"]
    accuracy = evaluate_accuracy(result.model, load_images("mnist", "test2k", data_root))
    assert accuracy > 60.0  # chance is 10 %; a quarter epoch per round recovers most of it
    n = _evaluations(tmp_path / "i.sqlite")
    again = iterative_compress(model, EXAMPLE, **kwargs)  # both rounds read back from the checkpoints
    assert _evaluations(tmp_path / "i.sqlite") == n and again.rounds == result.rounds
    assert evaluate_accuracy(again.model, load_images("mnist", "test2k", data_root)) == accuracy


def test_cli_iterative_compression_is_reported_against_the_original(lenet, data_root: Path, tmp_path: Path) -> None:
    _, weights = lenet
    out = tmp_path / "it"
    res = CliRunner().invoke(app, ["compress", "lenet5", "--weights", str(weights), "--method", "lowrank",
                                   "--target-params", "0.1", "--iterative", "2", "--finetune-epochs", "0.25",
                                   "--distill", "--store", str(tmp_path / "s.sqlite"), "--search-images", "200",
                                   "--eval-limit", "300", "--out", str(out), "--data-dir", str(data_root), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    o, c = report["cost"]["original"], report["cost"]["compressed"]
    assert o["params"] == 431_080 and c["params"] <= 0.1 * o["params"]  # against the real original
    assert [r["round"] for r in report["search"]["rounds"]] == [1, 2]
    assert report["accuracy"]["original"] > report["accuracy"]["compressed"] > 50.0
    assert (out / "rounds" / "round2.pt").exists() and "iterative (2 rounds of greedy)" in Path(
        report["files"]["report"]).read_text()


def test_a_measured_latency_budget(lenet, data_root: Path, tmp_path: Path) -> None:
    """Latency measured here (ONNX Runtime), each policy once, cached: the answer's stored latency meets the
    budget and a rerun measures nothing again."""
    from devicefit.study import search_policy

    model, _ = lenet
    store = tmp_path / "lat.sqlite"
    kwargs = {"method": "channel", "metric": "latency_ms", "fraction": 0.7, "store": store, "dataset": "mnist",
              "images": 200, "data_dir": data_root, "progress": False}
    found = search_policy(model, EXAMPLE, **kwargs)
    assert found.cost["latency_ms"] <= found.limit and found.metric == "latency_ms"
    assert found.cost["macs"] < found.space.original_cost["macs"]
    n = _evaluations(store)
    again = search_policy(model, EXAMPLE, **kwargs)
    assert _evaluations(store) == n and again.candidate == found.candidate
