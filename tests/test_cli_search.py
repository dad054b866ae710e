"""``devicefit search`` on the real NB201 tables: a constrained search, resume, and refusals before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devicefit.cli import app

from .conftest import need_file

runner = CliRunner()


@pytest.fixture
def tables(data_root: Path) -> Path:
    need_file(data_root, "nb201/nb201_accuracy.csv")
    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    return data_root


def test_constrained_search_resumes_and_reports_test_accuracy(tables: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    args = ["search", "--strategy", "evolution", "--budget", "80", "--device", "pixel3", "--max-latency", "15",
            "--store", str(store), "--data-dir", str(tables), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert out["evaluations"] == 80 and out["rejected"] > 0
    best = out["best"]["values"]
    assert best["pixel3_latency"] <= 15 and 85 < best["c10_val_200ep"] <= 100
    assert set(out["best_test"]) == {"c10_test_200ep"}
    assert list(out["best_at"]) == ["10", "25", "50"] or list(out["best_at"]) == [10, 25, 50]
    again = runner.invoke(app, args)  # everything from the store: the same answer
    assert json.loads(again.output)["best"] == out["best"]
    other = runner.invoke(app, [*args[:-1], "--seed", "3"])
    assert other.exit_code == 2 and "seed=3" in other.output


def test_strategy_options_reach_the_strategy(tables: Path, tmp_path: Path) -> None:
    """Evolution's population of 64 cannot run in 12 evaluations; --option makes it 8 (tournaments of 3)."""
    args = ["search", "--strategy", "evolution", "--budget", "12", "--store", str(tmp_path / "s.sqlite"),
            "--data-dir", str(tables), "--json"]
    assert runner.invoke(app, args).exit_code == 2
    res = runner.invoke(app, [*args, "--option", "population=8", "--option", "tournament=3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["evaluations"] == 12
    assert out["settings"]["strategy"] == {"name": "evolution", "population": 8, "tournament": 3}


@pytest.mark.parametrize(("extra", "message"), [
    (["--objective", "c10_best"], "no column 'c10_best'"),
    (["--device", "pixel9", "--max-latency", "3"], "unknown device 'pixel9'"),
    (["--device", "pixel3", "--max-latency", "0.01"], "distinct cells of pixel3 meet"),
    (["--budget", "10"], "initial population"),
    (["--device", "pixel3"], "--device needs a latency budget"),
    (["--max-latency", "12"], "needs --device"),
    (["--multi-objective"], "give --device"),
    (["--sampler", "nsga2"], "needs --strategy optuna"),
    (["--strategy", "random", "--move"], "random has none"),
    (["--option", "iterations"], "KEY=VALUE"),
    (["--option", "generations=5"], "bad options"),
])
def test_bad_settings_fail_before_any_work(tables: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    store = tmp_path / "s.sqlite"
    res = runner.invoke(app, ["search", "--store", str(store), "--data-dir", str(tables), *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not store.exists()


def test_multi_objective_search_gives_a_true_pareto_front_and_the_best_as_onnx(tables: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    import devicefit
    from devicefit.study.pareto import hypervolume_2d

    result = devicefit.search(objective="c100_val_200ep", strategy="optuna", strategy_options={"sampler": "nsga2"},
                              multi_objective=True, device="pixel3", max_latency_ms=30.0, budget=60,
                              store=tmp_path / "s.sqlite", data_dir=tables, progress=False)
    assert result.settings["strategy"]["n_objectives"] == 2  # NSGA-II was told both objectives
    evaluated = [t for t in result.trials if t.evaluated and t.feasible]
    assert len(evaluated) == 60 and all(t.values["pixel3_latency"] is not None for t in evaluated)
    front = result.pareto()
    assert front and result.cost_name() == "pixel3_latency"
    lat = [t.values["pixel3_latency"] for t in front]  # on the front, more latency buys more accuracy
    assert lat == sorted(lat) and [t.objective for t in front] == sorted(t.objective for t in front)
    for t in evaluated:  # every evaluated cell is matched or beaten by a front cell at no more latency
        assert any(f.values["pixel3_latency"] <= t.values["pixel3_latency"] and f.objective >= t.objective
                   for f in front)
    worst = min(t.objective for t in evaluated)
    assert result.hypervolume() == pytest.approx(hypervolume_2d(
        [t.values["pixel3_latency"] for t in evaluated], [t.objective for t in evaluated], 30.0, worst))
    assert result.hypervolume() > 0
    assert result.best is not None and result.best.objective == max(t.objective for t in evaluated)
    summary = result.summary()
    assert summary["pareto"]["cost"] == "pixel3_latency" and len(summary["pareto"]["points"]) == len(front)

    model = result.model().eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model().state_dict().values()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        expected = expected[1] if isinstance(expected, tuple) else expected
    assert expected.shape == (2, 100)  # CIFAR-100's head
    path = tmp_path / "best.onnx"
    assert result.export_onnx(path) == path.stat().st_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1].numpy()})[-1]
                          for i in range(2)])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
    # read back from its store, the result builds the same CIFAR-100 network
    from devicefit.study import SearchResult

    again = SearchResult.from_store(tmp_path / "s.sqlite")
    assert again.build_options == {"num_classes": 100} and again.input_shape == (3, 32, 32)
    assert again.best is not None and again.best.candidate == result.best.candidate
    with torch.no_grad():
        out = again.model().eval()(x)
    assert (out[1] if isinstance(out, tuple) else out).shape == (2, 100)


def test_a_predicted_budget_is_rechecked_and_the_answer_meets_the_true_one(tables: Path, tmp_path: Path) -> None:
    import devicefit
    from devicefit.data import load_device_table
    from devicefit.predictors import make_predictor, split_table

    pixel3 = load_device_table("pixel3", tables)
    train, _ = split_table(pixel3, 200, seed=0)
    path = make_predictor("flops").fit_table(pixel3, train).save(tmp_path / "flops")  # a rough predictor
    limit = 10.68
    result = devicefit.search(objective="c10valid_valid_200ep", strategy="evolution", budget=80, device="pixel3",
                              max_latency_ms=limit, latency_from="predictor", predictor=path,
                              store=tmp_path / "s.sqlite", data_dir=tables, progress=False,
                              strategy_options={"population": 20, "tournament": 5})
    report = result.extra["feasibility"]
    check = report["predicted_pixel3_ms"]
    judged = [t for t in result.trials if t.evaluated and t.feasible]
    truly = [t for t in judged if pixel3[result.space.from_identity(t.candidate)] <= limit]
    assert check["predicted_feasible"] == len(judged) and check["truly_feasible"] == len(truly)
    assert check["truly_feasible"] < check["predicted_feasible"]  # a rough predictor lets some through
    assert report["answer"]["confirmed"] and result.best is not None
    assert pixel3[result.best_candidate] <= limit  # the answer meets the true budget
    assert result.best.objective == max(t.objective for t in truly)  # and is the best that does
