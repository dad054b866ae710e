"""``devicefit predictor`` fit / evaluate / predict, on a tiny data directory made in the test."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from devicefit.cli import app
from devicefit.data import LatencyTable, write_latency_csv
from devicefit.spaces import all_cells

runner = CliRunner()
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data directory with a HELP-layout CSV of three additive devices on 400 cells."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    cells = random.Random(0).sample(all_cells(), 400)
    tables = []
    for name in ("dev_a", "dev_b", "dev_c"):
        cost = rng.uniform(0.2, 3.0, (6, 5))
        cost[:, 0] = 0
        tables.append(LatencyTable(name, "ms", {c: 1.0 + sum(cost[e, o] for e, o in enumerate(c.ops)) for c in cells}))
    write_latency_csv(root / "latency/help/help_nb201_latency_ms.csv", tables)
    return root


def test_fit_then_predict(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lw"
    r = runner.invoke(app, ["predictor", "fit", "--device", "dev_a", "--model", "layerwise", "--train", "100",
                            "--out", str(out), "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["n_train"] == 100 and summary["n_test"] == 300 and summary["within_1pct"] == 1.0
    r = runner.invoke(app, ["predictor", "predict", str(out) + ".npz", ARCH, "--json"])
    assert r.exit_code == 0, r.output
    pred = json.loads(r.stdout)["predictions"]
    assert pred[0]["arch"] == ARCH and pred[0]["value"] > 1.0


def test_evaluate_json(data_dir: Path) -> None:
    r = runner.invoke(app, ["predictor", "evaluate", "--device", "dev_b", "--model", "flops", "--train", "50",
                            "--seed", "1", "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_test"] == 350 and set(report) >= {"spearman", "kendall", "within_10pct", "mape"}


def test_user_table_in_energy_units(data_dir: Path, tmp_path: Path) -> None:
    csv = data_dir / "latency/help/help_nb201_latency_ms.csv"
    r = runner.invoke(app, ["predictor", "fit", "--device", "dev_c", "--model", "layerwise", "--train", "0",
                            "--table", str(csv), "--unit", "mJ", "--out", str(tmp_path / "e"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["unit"] == "mJ" and json.loads(r.stdout)["n_train"] == 400


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--device", "nope", "--model", "flops", "--train", "10"], "unknown device 'nope'"),
        (["evaluate", "--device", "dev_a", "--model", "oracle", "--train", "10"], "unknown predictor 'oracle'"),
        (["evaluate", "--device", "dev_a", "--model", "layerwise", "--train", "10"], "at least 25 training cells"),
        (["evaluate", "--device", "dev_a", "--model", "flops", "--train", "5000"], "exceeds the 400 cells"),
    ],
)
def test_clear_errors(data_dir: Path, args: list[str], message: str) -> None:
    r = runner.invoke(app, ["predictor", *args, "--data-dir", str(data_dir)])
    assert r.exit_code == 2
    assert message in r.stderr


def test_predict_rejects_bad_files_and_archs(data_dir: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["predictor", "predict", str(tmp_path / "missing.npz"), ARCH])
    assert r.exit_code == 2 and "not found" in r.stderr
    out = tmp_path / "f"
    runner.invoke(app, ["predictor", "fit", "--device", "dev_a", "--model", "flops", "--train", "20",
                        "--out", str(out), "--data-dir", str(data_dir)])
    r = runner.invoke(app, ["predictor", "predict", str(out) + ".json", "|bogus~0|"])
    assert r.exit_code == 2 and "malformed NB201 arch string" in r.stderr


def test_real_device_flops_evaluate(data_root) -> None:
    r = runner.invoke(app, ["predictor", "evaluate", "--device", "raspi4", "--model", "flops", "--train", "100",
                            "--json", "--data-dir", str(data_root)])
    if r.exit_code == 2 and "unknown device" in r.stderr:
        pytest.skip("the data directory has no HELP raspi4 table")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["spearman"] > 0.5
    # raspi4 measures both cells of all 1,500 twin pairs: the noise bracket comes with the metrics
    assert out["twin_pairs"] == 1500
    assert 0 < out["ceiling_within_10pct_low"] <= out["ceiling_within_10pct_high"] <= 1
