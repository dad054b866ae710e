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


@pytest.mark.parametrize(("extra", "message"), [
    (["--objective", "c10_best"], "no column 'c10_best'"),
    (["--device", "pixel9", "--max-latency", "3"], "unknown device 'pixel9'"),
    (["--device", "pixel3", "--max-latency", "0.01"], "distinct cells of pixel3 meet"),
    (["--budget", "10"], "initial population"),
    (["--device", "pixel3"], "both --device and --max-latency"),
    (["--strategy", "random", "--move"], "random has none"),
])
def test_bad_settings_fail_before_any_work(tables: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    store = tmp_path / "s.sqlite"
    res = runner.invoke(app, ["search", "--store", str(store), "--data-dir", str(tables), *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not store.exists()
