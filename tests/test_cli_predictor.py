"""``devicefit predictor`` fit / evaluate / pretrain / predict, on a tiny data directory made in the test."""

from __future__ import annotations

import ast
import json
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from devicefit.cli import app
from devicefit.data import LatencyTable, write_latency_csv
from devicefit.predictors import TrainConfig, TrunkSettings
from devicefit.spaces import all_cells

runner = CliRunner()
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
#: Two settings of one chip (the titan_rtx family) and two other chips.
DEVICES = ("titan_rtx_1", "titan_rtx_32", "pixel2", "raspi4")


def _additive(name: str, cells: list, seed: int) -> LatencyTable:
    cost = np.random.default_rng(seed).uniform(0.2, 3.0, (6, 5))
    cost[:, 0] = 0
    return LatencyTable(name, "ms", {c: 1.0 + sum(cost[e, o] for e, o in enumerate(c.ops)) for c in cells})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data directory of LatBench-format pickles ({op tuple: seconds}): four additive devices on 400 cells."""
    root = tmp_path_factory.mktemp("data")
    (root / "latency" / "latbench").mkdir(parents=True)
    cells = random.Random(0).sample(all_cells(), 400)
    for k, name in enumerate(DEVICES):
        seconds = {c.ops: v / 1000 for c, v in _additive(name, cells, k).values.items()}
        (root / "latency" / "latbench" / f"{name}.pickle").write_bytes(pickle.dumps(seconds))
    return root


def invoke(*args: str):
    return runner.invoke(app, ["predictor", *args])


def test_fit_then_predict(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lw"
    r = invoke("fit", "--device", "pixel2", "--kind", "layerwise", "--train", "100", "--out", str(out),
               "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["kind"] == "layerwise" and summary["n_train"] == 100 and summary["n_test"] == 300
    assert summary["within_1pct"] == 1.0 and summary["saved"] == str(out) + ".npz"
    r = invoke("predict", str(out) + ".npz", ARCH, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["space"] == {"space": "nb201", "prune_graph": False} and result["kind"] == "layerwise"
    assert result["predictions"][0]["candidate"] == ARCH and result["predictions"][0]["value"] > 1.0
    r = invoke("predict", str(out), ARCH)
    assert r.exit_code == 0 and r.stdout.split()[1:] == ["ms", ARCH]


def test_evaluate_json(data_dir: Path) -> None:
    r = invoke("evaluate", "--device", "raspi4", "--kind", "flops", "--train", "50", "--seed", "1",
               "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_test"] == 350 and set(report) >= {"spearman", "kendall", "within_10pct", "mape"}
    r = invoke("evaluate", "--device", "raspi4", "--kind", "flops", "--train", "50", "--data-dir", str(data_dir))
    assert r.exit_code == 0 and "spearman" in r.stdout


def test_user_table_in_energy_units(data_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "mine.csv"
    write_latency_csv(csv, [_additive("board", random.Random(1).sample(all_cells(), 300), 7)])
    r = invoke("fit", "--device", "board", "--kind", "layerwise", "--train", "0", "--table", str(csv),
               "--unit", "mJ", "--out", str(tmp_path / "e"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["unit"] == "mJ" and json.loads(r.stdout)["n_train"] == 300


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--device", "nope", "--kind", "flops", "--train", "10"], "unknown device 'nope'"),
        (["evaluate", "--device", "pixel2", "--kind", "oracle"], "Invalid value for '--kind'"),
        (["evaluate", "--device", "pixel2", "--kind", "layerwise", "--train", "10"], "at least 25 training candidates"),
        (["evaluate", "--device", "pixel2", "--kind", "flops", "--train", "5000"], "evaluate needs held-out"),
        (["evaluate", "--device", "pixel2", "--kind", "flops", "--train", "0"], "evaluate needs held-out"),
        (["evaluate", "--device", "pixel2", "--seed", "-1"], "Invalid value for '--seed'"),
        (["evaluate", "--device", "pixel2", "--train", "-3"], "Invalid value for '--train'"),
        (["fit", "--device", "pixel2", "--train", "5000", "--out", "x"], "exceeds the 400 candidates"),
        (["evaluate", "--device", "pixel2", "--model", "gcn"], "No such option: --model"),
        (["evaluate", "--device", "pixel2", "--unit", "mJ"], "--unit applies to a --table"),
        (["evaluate", "--device", "pixel2", "--unit", "s"], "Invalid value for '--unit'"),
        (["evaluate", "--device", "pixel2", "--kind", "flops", "--train", "20", "--exclude", "raspi4"],
         "to kind 'transfer' only"),
        (["evaluate", "--device", "pixel2", "--kind", "transfer", "--train", "20", "--exclude", "raspi5"],
         "unknown device(s) 'raspi5'"),
    ],
)
def test_clear_errors(data_dir: Path, args: list[str], message: str) -> None:
    r = invoke(*args, "--data-dir", str(data_dir))
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_help_lists_the_choices_and_the_cache_folder() -> None:
    r = invoke("evaluate", "--help")
    text = " ".join(r.stdout.replace("│", " ").split())
    assert "flops|layerwise|mlp|gcn|t" in text and "ms|mJ" in text and "--model" not in text
    assert ".devicefit-cache in the current directory" in text and "$DEVICEFIT_CACHE" in text


def test_out_must_be_a_writable_file_name(data_dir: Path, tmp_path: Path) -> None:
    args = ["fit", "--device", "pixel2", "--kind", "flops", "--train", "20", "--data-dir", str(data_dir)]
    r = invoke(*args, "--out", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr
    (tmp_path / "plain").write_text("")
    r = invoke(*args, "--out", str(tmp_path / "plain" / "pred"))
    assert r.exit_code == 2 and "is a file, not a folder" in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_out_in_a_read_only_folder(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        r = invoke("fit", "--device", "pixel2", "--kind", "flops", "--train", "20", "--data-dir", str(data_dir),
                   "--out", str(folder / "pred"))
        assert r.exit_code == 2 and "is not writable" in r.stderr
    finally:
        folder.chmod(0o700)


def test_predict_rejects_bad_files_and_archs(data_dir: Path, tmp_path: Path) -> None:
    r = invoke("predict", str(tmp_path / "missing.npz"), ARCH)
    assert r.exit_code == 2 and "not found" in r.stderr
    out = tmp_path / "f"
    r = invoke("fit", "--device", "pixel2", "--kind", "flops", "--train", "20", "--out", str(out),
               "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    r = invoke("predict", str(out) + ".json", "|bogus~0|")
    assert r.exit_code == 2 and "malformed NB201 arch string" in r.stderr
    meta = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".json").write_text(json.dumps({**meta, "unit": "mJ"}))
    r = invoke("predict", str(out), ARCH)
    assert r.exit_code == 2 and "was changed after it was saved" in r.stderr


SMALL_TRAIN = TrainConfig(max_epochs=3)


@dataclass(frozen=True)
class SmallTrunk(TrunkSettings):
    """The default trunk settings, shrunk so that the command's pre-training takes a second."""

    pretrain_cells: int = 150
    hidden: int = 16
    train: TrainConfig = SMALL_TRAIN


def test_pretrain_once_then_transfer_with_the_trunk(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import devicefit.predictors.trunk as trunk_module

    monkeypatch.setattr(trunk_module, "TrunkSettings", SmallTrunk)  # what `pretrain` uses by default
    r = invoke("pretrain", "--out", str(tmp_path / "all"), "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sources"] == sorted(DEVICES)
    r = invoke("pretrain", "--out", str(tmp_path / "no-titan"), "--exclude", "titan_rtx_1, titan_rtx_32",
               "--data-dir", str(data_dir), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sources"] == ["pixel2", "raspi4"]

    args = ["evaluate", "--device", "titan_rtx_32", "--kind", "transfer", "--train", "20", "--data-dir", str(data_dir)]
    r = invoke(*args, "--trunk", str(tmp_path / "all"))
    assert r.exit_code == 2 and "pre-trained on titan_rtx_1, titan_rtx_32, which must be left out" in r.stderr
    r = invoke(*args, "--trunk", str(tmp_path / "no-titan.npz"), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["trunk_sources"] == ["pixel2", "raspi4"] and report["trunk_excluded_family"] == "titan_rtx"
    assert report["trunk_pretrained"] is False and report["n_test"] == 380
    assert "transfer trunk: reused" in r.stderr

    r = invoke("pretrain", "--out", str(tmp_path / "x"), "--exclude", "titan", "--data-dir", str(data_dir))
    assert r.exit_code == 2 and "cannot exclude unknown device(s) 'titan'" in r.stderr


def test_cli_module_imports_no_heavy_library_at_module_level() -> None:
    import devicefit.cli.predictor as module

    tree = ast.parse(Path(module.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
    assert not names & {"torch", "numpy", "pandas", "scipy", "rich"}, names
    ours = {n.module for n in top if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert ours <= {"errors", "predictors.kinds", None, "common"}, ours


def test_real_device_flops_evaluate(data_root) -> None:
    r = invoke("evaluate", "--device", "raspi4", "--kind", "flops", "--train", "100", "--json",
               "--data-dir", str(data_root))
    if r.exit_code == 2 and "unknown device" in r.stderr:
        pytest.skip("the data directory has no HELP raspi4 table")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["spearman"] > 0.5
    # raspi4 measures both cells of all 1,500 twin pairs: the noise bracket comes with the metrics
    assert out["twin_pairs"] == 1500
    assert 0 < out["ceiling_within_10pct_low"] <= out["ceiling_within_10pct_high"] <= 1
