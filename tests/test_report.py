"""The search report: Markdown and one self-contained HTML page, checked against the store and the data
tables, rendered in a real headless browser (Debian's chromium; skipped where it is absent), and the
command's errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from devicefit.cli import app

from .conftest import need_file

runner = CliRunner()
SMALL_EVOLUTION = {"population": 10, "tournament": 3}


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


@pytest.fixture(scope="module")
def searched(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real table-based search: the most accurate NB201 cell under 12 ms on pixel3, 40 evaluations."""
    import devicefit

    need_file(data_root, "nb201/nb201_accuracy.csv")
    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    store = tmp_path_factory.mktemp("report") / "s.sqlite"
    result = devicefit.search(objective="c10_val_200ep", strategy="evolution", budget=40, device="pixel3",
                              max_latency_ms=12.0, store=store, data_dir=data_root, progress=False,
                              strategy_options=SMALL_EVOLUTION)
    return store, result


@pytest.fixture(scope="module")
def report(searched, data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from devicefit.report import search_report

    return search_report(searched[0], tmp_path_factory.mktemp("out"), data_dir=data_root)


def test_the_report_says_what_the_store_holds(searched, report, data_root: Path, nb201_table) -> None:
    from devicefit.data import load_device_table

    _, result = searched
    md = report.markdown.read_text()
    best = result.best
    assert best is not None
    cell = result.best_candidate
    assert f"| candidate | `{_md_cell(result.space.to_json(cell))}` |" in md
    assert f"| NB201 index | {nb201_table.index_of(cell)} |" in md
    assert f"| trial | {best.number} |" in md
    assert f"| c10_val_200ep (%) | {best.objective:.4g} |" in md
    assert f"| pixel3_latency (ms) | {best.values['pixel3_latency']:.4g} |" in md
    test_acc = result.extra["best_test"]["c10_test_200ep"]
    assert test_acc == nb201_table.value(cell, "c10_test_200ep")
    assert f"| c10_test_200ep (%), from the table (reported, never searched on) | {test_acc:.4g} |" in md
    repeats = sum(t.repeat_of is not None for t in result.trials)
    assert f"| budget used (objective evaluations) | {result.evaluations} |" in md and result.evaluations == 40
    assert f"| rejected by the constraints before evaluation | {result.rejected - repeats} |" in md
    assert "| constraints | pixel3_latency (ms) <= 12 |" in md
    assert f"after 10 evaluations: {result.best_so_far[9]:.4g}" in md
    assert f"40 evaluations: {result.best_so_far[-1]:.4g}" in md
    # the front and the hypervolume, computed here from the trials, equal the study's own
    front = result.pareto()
    assert f"{len(front)} of the {result.evaluations} evaluated candidates with both values are on the front" in md
    assert f"Hypervolume of the feasible front: {result.hypervolume():.4g} (ms x %)" in md
    assert "reference point (pixel3_latency = the budget 12" in md
    rows = re.findall(r"^\| ([0-9.]+) \| ([0-9.]+) \| yes \| (\d+) \| `", md, flags=re.M)
    assert [int(n) for _, _, n in rows] == [t.number for t in front]
    # the answer on the device tables: value and rank taken again from the tables themselves
    pixel3 = load_device_table("pixel3", data_root)
    v = pixel3[cell]
    row = re.search(r"^\| pixel3 \| help \| ([0-9.]+) \| ([0-9,]+) of ([0-9,]+) \| ([0-9.]+) \|$", md, flags=re.M)
    assert row, md
    all_cells = np.array(list(pixel3.values.values()))
    assert float(row.group(1)) == pytest.approx(v, rel=1e-3) == pytest.approx(best.values["pixel3_latency"], rel=1e-3)
    assert int(row.group(2).replace(",", "")) == 1 + int((all_cells < v).sum())
    assert int(row.group(3).replace(",", "")) == len(pixel3)
    assert float(row.group(4)) == pytest.approx(100 * (all_cells > v).mean(), abs=0.05)
    assert "Published tables not in this data directory" not in md  # the shared data has all 36
    assert [f.name for f in report.figures] == ["report_curve.png", "report_pareto.png"]
    for f in report.figures:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000
        assert f"]({f.name})" in md


def test_the_html_page_is_self_contained(report) -> None:
    page = report.html.read_text()
    assert page.count("<svg") == len(report.figures) == 2 and "<img" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", page)  # no file, no network: only fragments
    assert not re.search(r"<link|<script|<iframe|<object|<embed|@import|url\((?!#)", page)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # two figures, glyphs named alike in both: every id is scoped
    assert set(re.findall(r'(?:href="#|url\(#)([^")]+)', page)) <= set(ids)  # every reference resolves
    assert "<th>c10_val_200ep (%)</th>" in page and "<th>latency (ms)</th>" in page


def test_the_plots_render_in_a_real_browser(report, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    probe = tmp_path / "probe.html"  # the page plus a script that measures what the browser drew
    probe.write_text(report.html.read_text().replace("</body>", """<script>
addEventListener("load", () => {
  const figures = [...document.querySelectorAll("figure svg")].map(s => {
    const box = s.getBoundingClientRect(), drawn = s.getBBox(), view = s.viewBox.baseVal;
    const marks = [...s.querySelectorAll("path,use")].filter(e => {
      const b = e.getBoundingClientRect(); return b.width > 0 || b.height > 0; }).length;
    return [box.width, box.height, drawn.width / view.width, drawn.height / view.height, marks]; });
  const images = [...document.images].map(i => [i.complete, i.naturalWidth]);
  const p = document.createElement("pre"); p.id = "render-check";
  p.textContent = JSON.stringify({figures, images, width: document.body.scrollWidth});
  document.body.appendChild(p); });
</script></body>"""))
    out = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1200,900",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="render-check">([^<]*)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    seen = json.loads(found.group(1))
    assert len(seen["figures"]) == 2 and seen["images"] == []
    for width, height, drawn_w, drawn_h, marks in seen["figures"]:
        assert width > 300 and height > 150  # laid out at a readable size
        assert drawn_w > 0.8 and drawn_h > 0.8  # the drawing fills its box
        assert marks > 50  # points, lines and glyphs actually painted
    assert seen["width"] <= 1200  # no table or figure runs off the page


def test_missing_device_tables_are_listed(searched, data_root: Path, tmp_path: Path) -> None:
    """A data directory with the accuracy table and HELP but no LatBench: the report lists what is absent."""
    from devicefit.report import PUBLISHED_DEVICE_TABLES, search_report

    part = tmp_path / "data"
    for rel in ("nb201/nb201_accuracy.csv", "latency/help/help_nb201_latency_ms.csv"):
        (part / rel).parent.mkdir(parents=True, exist_ok=True)
        (part / rel).symlink_to(data_root / rel)
    md = search_report(searched[0], tmp_path / "out", data_dir=part).markdown.read_text()
    listed = re.search(r"Published tables not in this data directory \((\d+)\): (.*)\.$", md, flags=re.M)
    assert listed and int(listed.group(1)) == len(PUBLISHED_DEVICE_TABLES["latbench"])
    assert set(re.findall(r"`([^`]+)`", listed.group(2))) == set(PUBLISHED_DEVICE_TABLES["latbench"])
    assert "| pixel3 | help |" in md and "| latbench |" not in md


def test_without_a_data_directory(searched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devicefit.report import search_report

    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    md = search_report(searched[0], tmp_path).markdown.read_text()
    assert "NB201 index" not in md and "from the table" not in md
    assert "No data directory" in md and "Pareto front" in md


@pytest.mark.slow  # about 8 s: fits a predictor, searches, writes two reports
def test_a_predicted_budget_is_rechecked(data_root: Path, tmp_path: Path) -> None:
    """With a predicted latency budget the answer is the best candidate the device table confirms, as
    ``devicefit search`` decides it; the true values come from the store, or from the table when absent."""
    import devicefit
    from devicefit.predictors import fit_on_device
    from devicefit.report import search_report
    from devicefit.study import Store
    from devicefit.study.estimators import DeviceTableLatency
    from devicefit.study.study import SearchResult

    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    predictor = fit_on_device("pixel3", "layerwise", 200, 0, data_dir=data_root).predictor.save(tmp_path / "p")
    store = tmp_path / "s.sqlite"
    # seed 3: the best candidate by the prediction is over the budget on the device, so the answer differs
    result = devicefit.search(objective="c10_val_200ep", strategy="evolution", budget=40, device="pixel3",
                              max_latency_ms=8.0, latency_from="predictor", predictor=predictor, store=store,
                              seed=3, data_dir=data_root, progress=False, strategy_options=SMALL_EVOLUTION)
    check = result.extra["feasibility"]
    (name,) = [k for k in check if k != "answer"]
    predicted_best = SearchResult.from_store(store).best
    assert predicted_best is not None and result.best is not None
    assert check["answer"]["checked_in_order"] > 1 and predicted_best.number != result.best.number

    def read(md: str, label: str) -> str:
        found = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|$", md, flags=re.M)
        assert found, label
        return found.group(1)

    paths = search_report(store, tmp_path / "r", data_dir=data_root)
    md = paths.markdown.read_text()
    assert f"trial {predicted_best.number}" in md
    assert f"checked, trial {result.best.number}." in md and f"| trial | {result.best.number} |" in md
    assert f"| candidate | `{_md_cell(result.space.to_json(result.best_candidate))}` |" in md
    assert int(read(md, "truly feasible")) == check[name]["truly_feasible"]
    assert int(read(md, "judged feasible by the prediction (evaluated)")) == check[name]["predicted_feasible"]
    assert float(read(md, "worst violation of the budget (%)")) == pytest.approx(
        check[name]["worst_violation_pct"], rel=1e-3)
    assert read(md, "the predicted best truly feasible") == "no"
    assert int(read(md, "candidates checked in order of objective to find the answer")) == \
        check["answer"]["checked_in_order"]
    n = check[name]["predicted_feasible"]
    assert read(md, "true values read from the store / looked up now") == f"{n} / 0"
    assert [f.name for f in paths.figures] == ["report_curve.png", "report_pareto.png", "report_recheck1.png"]
    # without the stored truth (a study run by hand), the table is looked up: the same report
    truth = DeviceTableLatency("pixel3", data_root).fingerprint(result.space)
    with Store(store) as db:
        assert sum(db.delete(t.candidate, truth) for t in result.trials if t.evaluated) == n
    again = search_report(store, tmp_path / "r2", data_dir=data_root).markdown.read_text()
    assert read(again, "true values read from the store / looked up now") == f"0 / {n}"
    assert again.replace(f"0 / {n}", "") == md.replace(f"{n} / 0", "").replace(str(tmp_path / "r"), str(tmp_path / "r2"))


def test_without_a_cost_the_front_counts_parameters(data_root: Path, tmp_path: Path) -> None:
    """No constraint and no second objective: the front trades the objective against counted parameters."""
    import devicefit
    from devicefit.report import search_report
    from devicefit.study.pareto import pareto_front

    need_file(data_root, "nb201/nb201_accuracy.csv")
    store = tmp_path / "s.sqlite"
    result = devicefit.search(objective="c10_val_200ep", strategy="random", budget=15, store=store,
                              data_dir=data_root, progress=False)
    md = search_report(store, tmp_path / "r", data_dir=data_root).markdown.read_text()
    assert "## Pareto front: c10_val_200ep against params" in md and "counted in each candidate's network" in md
    evaluated = [t for t in result.trials if t.evaluated]
    params = [sum(p.numel() for p in result.space.build(result.space.from_identity(t.candidate)).parameters()) / 1e6
              for t in evaluated]
    front = [evaluated[i] for i in pareto_front(params, [t.objective for t in evaluated])]
    rows = re.findall(r"^\| ([0-9.e+-]+) \| ([0-9.]+) \| yes \| (\d+) \| `", md, flags=re.M)
    assert [int(n) for _, _, n in rows] == [t.number for t in front]
    by_number = dict(zip((t.number for t in evaluated), params))
    assert [float(p) for p, _, _ in rows] == [pytest.approx(by_number[t.number], rel=1e-3) for t in front]


def test_report_cli_and_its_errors(searched, data_root: Path, tmp_path: Path) -> None:
    store = searched[0]
    res = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "r"), "--data-dir", str(data_root),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert Path(out["html"]).is_file() and Path(out["markdown"]).is_file() and len(out["figures"]) == 2

    def error(*args: str) -> str:
        res = runner.invoke(app, ["report", *args])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
        return res.output

    assert "does not exist" in error(str(tmp_path / "none.sqlite"))
    other = error(str(store), "--study", "nope", "--out", str(tmp_path / "x"))
    assert "no finished study 'nope'" in other and "it has: search" in other
    (tmp_path / "text.sqlite").write_text("not a database")
    assert "is not a devicefit results store (not a SQLite database)" in error(str(tmp_path / "text.sqlite"))
    (tmp_path / "empty.sqlite").write_bytes(b"")
    assert "is not a devicefit results store (an empty file)" in error(str(tmp_path / "empty.sqlite"))
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    assert "another program's SQLite database (tables: songs), not a devicefit store" in error(str(foreign))
    (tmp_path / "file").write_text("")
    assert "is a file, expected a folder" in error(str(store), "--out", str(tmp_path / "file"))
    assert "cannot be written" in error(str(store), "--out", str(tmp_path / "file" / "sub"))
    assert not list(tmp_path.glob("file*/**/*.tmp"))


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder(searched, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = runner.invoke(app, ["report", str(searched[0]), "--out", str(locked)])
    finally:
        locked.chmod(0o700)
    assert res.exit_code == 2 and "cannot be written" in res.output


def test_importing_the_package_imports_no_plotting() -> None:
    code = "import sys, devicefit.report; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
