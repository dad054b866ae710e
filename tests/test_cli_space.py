from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from devicefit.cli import app

runner = CliRunner()


def test_space_statistics_json() -> None:
    result = runner.invoke(app, ["space", "nb201", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["cells"], stats["unique"], stats["disconnected"]) == (15_625, 6_466, 341)


def test_bench_reports_published_optima(data_root: Path) -> None:
    result = runner.invoke(app, ["bench", "nb201", "--json", "--data-dir", str(data_root)])
    assert result.exit_code == 0, result.output
    best = {r["column"]: r for r in json.loads(result.output)["best"]}
    for column, published in (("c10_test_200ep", 94.37), ("c100_test_200ep", 73.51), ("in16_val_200ep", 47.33)):
        assert abs(best[column]["best_percent"] - published) < 0.01
    assert best["c10_test_200ep"]["nb201_index"] == 6111


def test_bad_space_and_missing_data_dir(tmp_path: Path) -> None:
    result = runner.invoke(app, ["space", "darts"])
    assert result.exit_code == 2 and result.output.startswith("error:") and "'darts' is not one of 'nb201'" in result.output
    result = runner.invoke(app, ["space", "--help"])
    assert result.exit_code == 0 and "nb201" in result.output  # the choices are listed
    result = runner.invoke(app, ["bench", "nb201", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["bench", "nb201", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "nb201_accuracy.csv" in result.output and "not found" in result.output


def test_space_table_output() -> None:
    result = runner.invoke(app, ["space"])
    assert result.exit_code == 0 and "15,625" in result.output and "6,466" in result.output
