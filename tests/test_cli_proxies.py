"""``devicefit proxies``: tiny runs (few cells, small batches, cheap proxies) on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from devicefit.cli import app

from .conftest import need_file

runner = CliRunner()
CHEAP = ["--proxies", "grad_norm,snip,synflow,jacob_cov,params", "--batch-size", "8"]


def test_nb201_run_resumes_and_ranks(data_root: Path, tmp_path: Path) -> None:
    need_file(data_root, "images/cifar10_train_aug_960.npz")
    need_file(data_root, "nb201/nb201_accuracy.csv")
    out = tmp_path / "p.sqlite"
    args = ["proxies", "--space", "nb201", "--seed", "1", "--store", str(out), "--data-dir", str(data_root), "--json",
            *CHEAP]
    first = runner.invoke(app, [*args, "--sample", "3"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["computed"] == 3
    second = runner.invoke(app, [*args, "--sample", "5"])
    assert second.exit_code == 0, second.output
    res = json.loads(second.output)
    assert (res["computed"], res["resumed"], res["cells"]) == (2, 3, 5)
    assert res["truth"] == "c10_test_200ep"
    assert set(res["metrics"]) == {"grad_norm", "snip", "synflow", "jacob_cov", "params", "vote"}
    assert all(-1 <= m["spearman"] <= 1 and m["n"] <= 5 for m in res["metrics"].values())
    changed = runner.invoke(app, [*args[:-4], "--proxies", "synflow", "--batch-size", "8", "--sample", "5"])
    assert changed.exit_code == 2 and "proxies=[\"synflow\"] (the store's run:" in changed.output
    paper = runner.invoke(app, [*args, "--sample", "5", "--truth", "c10valid_test_200ep"])
    assert paper.exit_code == 0 and json.loads(paper.output)["computed"] == 0
    pool = runner.invoke(app, [*args, "--sample", "7", "--executor", "process", "--workers", "2"])
    assert pool.exit_code == 0 and (json.loads(pool.output)["computed"], json.loads(pool.output)["resumed"]) == (2, 5)
    bad = runner.invoke(app, [*args, "--sample", "5", "--truth", "c10_best"])
    assert bad.exit_code == 2 and "no column 'c10_best'" in bad.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_own_model_file_and_bad_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    path = tmp_path / "m.pt"
    torch.save(model, path)
    base = ["proxies", "--input-shape", "3,8,8", "--batch-size", "8", "--json", "--data-dir", str(tmp_path)]
    res = runner.invoke(app, [*base, "--model", str(path)])
    assert res.exit_code == 2 and "--trust-model-file" in res.output  # unpickling runs code: not without trust
    res = runner.invoke(app, [*base, "--model", str(path), "--trust-model-file"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert "random normal" in out["inputs"]
    assert set(out["scores"]) == {"grad_norm", "snip", "grasp", "fisher", "jacob_cov", "nwot", "synflow", "params",
                                  "flops"}
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    res = runner.invoke(app, [*base, "--model", str(tmp_path / "sd.pt")])
    assert res.exit_code == 2 and "--architecture" in res.output
    res = runner.invoke(app, [*base, "--model", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["proxies", "--model", str(path), "--input-shape", "3,x"])
    assert res.exit_code == 2 and "--input-shape" in res.output
    res = runner.invoke(app, ["proxies", "--space", "nb201", "--sample", "2"])
    assert res.exit_code == 2 and "--store" in res.output
    res = runner.invoke(app, ["proxies", "--space", "nb201", "--store", str(tmp_path / "x"), "--proxies", "vote"])
    assert res.exit_code == 2 and "unknown proxy" in res.output
    res = runner.invoke(app, ["proxies", "--space", "nb201", "--store", str(tmp_path / "x"), "--seed", "-1"])
    assert res.exit_code == 2 and "--seed" in res.output
    res = runner.invoke(app, ["proxies", "--space", "nb201", "--store", str(tmp_path), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2
