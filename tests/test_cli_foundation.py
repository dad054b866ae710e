"""The foundation CLI commands (info, measure, devices, demo) through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devicefit.cli import app
from devicefit.data import resolve_arch
from devicefit.demo import run_demo
from devicefit.spaces import NB201Cell, sample_unique_cells

from .conftest import need_file

runner = CliRunner()
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _fails(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("error:") and "\n" not in message and expected in message, message


def test_the_cli_imports_no_torch_pandas_or_scipy() -> None:
    """`devicefit --help` answers at once: the command modules import heavy libraries inside commands only."""
    code = "import sys, devicefit.cli; print(sorted(m for m in ('torch', 'pandas', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_runtime_choices_are_the_measurable_runtimes() -> None:
    from devicefit.cli.foundation import Runtime
    from devicefit.hardware.measure import RUNTIMES

    assert typing.get_args(Runtime) == RUNTIMES
    result = runner.invoke(app, ["measure", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "torch|onnxruntime" in result.output


def test_info_without_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    out = _json(["info", ARCH, "--json"])
    assert out["arch_str"] == ARCH and out["nb201_index"] is None
    assert out["cost"]["flops"] == 2 * out["cost"]["macs"] > 0
    assert out["accuracy_pct"] == {} and out["latency_ms"] == {}
    assert out["cost"]["how"] == "closed form" and out["cost"]["peak_activation_bytes"] is None
    counted = _json(["info", ARCH, "--json", "--memory"])["cost"]
    assert counted["how"] == "counted" and counted["peak_activation_bytes"] > 0
    assert (counted["macs"], counted["params"]) == (out["cost"]["macs"], out["cost"]["params"])


def test_info_by_index_with_data(data_root: Path, nb201_table) -> None:
    out = _json(["info", "nb201:6111", "--json", "--data-dir", str(data_root)])
    cell = nb201_table.cell_at(6111)
    assert out["arch_str"] == cell.to_str() and out["nb201_index"] == 6111
    assert out["accuracy_pct"]["c10_test_200ep"] == pytest.approx(94.37, abs=0.01)  # the published optimum
    # Parameter count of the built network equals the benchmark's params_M (stored to 6 significant digits).
    assert out["cost"]["params"] / 1e6 == pytest.approx(nb201_table.value(cell, "params_M"), rel=1e-5)  # 6 digits
    latencies = out["latency_ms"]
    assert len(latencies) > 10 and all(v is None or v > 0 for v in latencies.values())


def test_resolve_arch_by_index_and_string(data_root: Path, nb201_table) -> None:
    cell, index = resolve_arch("nb201:0", data_root)
    assert index == 0 and cell == nb201_table.cell_at(0)
    assert resolve_arch(cell.to_str(), data_root) == (cell, 0)


def test_measure_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    out = _json(["measure", ARCH, "--runtime", "torch", "--repeats", "3", "--warmup", "1", "--json"])
    lat = out["latency_ms"]
    assert 0 < lat["p25"] <= lat["median"] <= lat["p75"]
    assert 0 < out["cpu_time_ms"]["median"]
    assert out["macs"] > 0 and out["params"] > 0
    assert out["protocol"]["runtime"] == "torch" and out["protocol"]["repeats"] == 3
    result = runner.invoke(app, ["measure", ARCH, "--runtime", "torch", "--repeats", "2", "--warmup", "0"])
    assert result.exit_code == 0 and "torch on " in result.output and "0 warm-up + 2 timed runs" in result.output


def test_devices_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    out = _json(["devices", "--json"])
    assert [d["name"] for d in out] == ["local-cpu"]
    _fails(["devices", "--data-dir", str(tmp_path / "nowhere")], "does not exist")


def test_devices_with_data(data_root: Path) -> None:
    out = _json(["devices", "--json", "--data-dir", str(data_root)])
    assert out[0]["name"] == "local-cpu" and len(out) > 10
    assert all(d["cells"] > 0 and d["unit"] == "ms" and d["source"] in ("latbench", "help") for d in out[1:])


def test_a_data_setting_that_names_no_folder_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVICEFIT_DATA", str(tmp_path / "typo"))
    for args in (["info", ARCH], ["devices"], ["demo", "--out", str(tmp_path / "o")]):
        _fails(args, "(from DEVICEFIT_DATA) does not exist")
    _fails(["info", ARCH, "--data-dir", str(tmp_path / "other")], "other' (from --data-dir) does not exist")


def test_bad_input_gives_one_line_error(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    _fails(["info", "|nor_conv_3x3~0|+|bogus~0|"], "arch string")
    _fails(["info", "nb201:99999", "--data-dir", str(data_root)], "99999")
    _fails(["info", "nb201:-1", "--data-dir", str(data_root)], "out of range 0..15624")
    _fails(["info", "nb201:3.5", "--data-dir", str(data_root)], "integer INDEX")
    _fails(["info", "nb201:abc", "--data-dir", str(data_root)], "integer INDEX")
    _fails(["measure", ARCH, "--runtime", "tvm"], "'tvm' is not one of 'torch', 'onnxruntime'")
    for option, value, expected in (("--repeats", "0", "greater than or equal to 1"),
                                    ("--threads", "0", "greater than or equal to 1"),
                                    ("--batch-size", "-2", "greater than or equal to 1"),
                                    ("--warmup", "-1", "greater than or equal to 0"),
                                    ("--repeats", "many", "integer")):
        _fails(["measure", ARCH, option, value], f"'{option}'")
        _fails(["measure", ARCH, option, value], expected)
    _fails(["measure", ARCH, "--bogus"], "No such option: --bogus (see 'devicefit measure --help')")
    _fails(["nonsense"], "No such command 'nonsense'")
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    _fails(["info", "nb201:5"], "no data directory")


def test_sample_unique_cells() -> None:
    cells = sample_unique_cells(40, seed=3)
    assert len({c.canonical_key() for c in cells}) == 40
    assert not any(c.is_disconnected() for c in cells)
    assert sample_unique_cells(10, seed=3) == cells[:10]
    with pytest.raises(ValueError, match="6461"):
        sample_unique_cells(7000)


def test_demo_without_data_searches_on_measured_latency_and_resumes(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from devicefit.study import Store

    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    first = run_demo(tmp_path, strategy="random", budget=4, sample=3, progress=False)
    assert first.mode == "no-data" and first.device == "local" and first.optimum is None
    best = first.search["best"]["values"]
    assert best["local_onnxruntime_ms"] <= first.latency_budget_ms and best["proxies.scores.synflow"] > 0
    assert first.onnx is not None and first.onnx.is_file() and first.best_local_ms > 0
    assert "No data directory" in first.notes[0]
    with Store(tmp_path / "search.sqlite", readonly=True) as store:
        measured = store.count()
    again = run_demo(tmp_path, strategy="random", budget=4, sample=3, progress=False)
    assert again.search["best"] == first.search["best"] and again.latency_budget_ms == first.latency_budget_ms
    with Store(tmp_path / "search.sqlite", readonly=True) as store:
        assert store.count() == measured  # everything came from the store


def test_demo_with_data_meets_the_device_budget(data_root: Path, tmp_path: Path, nb201_table) -> None:
    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    out = _json(["demo", "--out", str(tmp_path), "--data-dir", str(data_root), "--strategy", "random", "--budget",
                 "25", "--warmup", "0", "--json"])
    assert out["mode"] == "tables" and out["device"] == "pixel3"
    best = out["search"]["best"]
    assert best["values"]["pixel3_latency"] <= out["latency_budget_ms"]
    cell = NB201Cell.from_str(best["candidate"])
    assert best["values"]["c10valid_valid_200ep"] == pytest.approx(nb201_table.value(cell, "c10valid_valid_200ep"))
    opt = out["optimum"]  # the true best under the budget, checked by brute force on the table
    assert opt["accuracy"] >= best["values"]["c10valid_valid_200ep"]
    assert opt["accuracy"] == pytest.approx(nb201_table.value(NB201Cell.from_str(opt["arch"]), "c10valid_valid_200ep"))
    assert Path(out["onnx"]).is_file() and (tmp_path / "demo_summary.json").is_file()
    assert Path(out["report"]["html"]).is_file() and "Pareto front" in Path(out["report"]["markdown"]).read_text()


def test_only_input_errors_become_exit_code_2() -> None:
    import typer

    from devicefit.cli.common import clean_errors
    from devicefit.errors import InputError, OutOfRangeError, UnknownNameError

    def failing(exc: Exception):
        @clean_errors
        def job() -> None:
            raise exc

        return job

    for exc in (InputError("bad --train"), UnknownNameError("unknown device 'x'"), OutOfRangeError("index 99")):
        with pytest.raises(typer.Exit) as info:
            failing(exc)()
        assert info.value.exit_code == 2
    assert isinstance(UnknownNameError("k"), KeyError) and str(UnknownNameError("no 'x'")) == "no 'x'"
    for bug in (ValueError("shapes do not broadcast"), KeyError("internal"), ZeroDivisionError()):
        with pytest.raises(type(bug)):  # a bug keeps its traceback
            failing(bug)()
