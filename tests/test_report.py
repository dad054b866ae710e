"""The search report: Markdown and one self-contained HTML page, checked against the store and rendered in
a real headless browser (Debian's chromium; skipped where it is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devicefit.cli import app

from .conftest import need_file

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    import devicefit

    need_file(data_root, "nb201/nb201_accuracy.csv")
    need_file(data_root, "latency/help/help_nb201_latency_ms.csv")
    store = tmp_path_factory.mktemp("report") / "s.sqlite"
    result = devicefit.search(objective="c10_val_200ep", strategy="evolution", budget=40, device="pixel3",
                              max_latency_ms=12.0, store=store, data_dir=data_root, progress=False,
                              strategy_options={"population": 10, "tournament": 3})
    return store, result


def test_the_report_says_what_the_store_holds(searched, data_root: Path, tmp_path: Path) -> None:
    from devicefit.report import search_report

    store, result = searched
    paths = search_report(store, tmp_path, data_dir=data_root)
    md = paths.markdown.read_text()
    best = result.best
    assert best is not None
    arch = result.space.to_json(result.best_candidate)
    assert f"| candidate | `{arch.replace('|', chr(92) + '|')}` |" in md
    assert f"| c10_val_200ep | {best.objective:.4g} |" in md
    assert f"| pixel3_latency | {best.values['pixel3_latency']:.4g} |" in md
    assert "c10_test_200ep (reported, not searched on)" in md
    assert f"| evaluations | {result.evaluations} |" in md and "pixel3_latency <= 12" in md
    front = result.pareto()
    assert f"{len(front)} of {result.evaluations} evaluated candidates are on the front" in md
    assert f"Hypervolume {result.hypervolume():.4g}" in md
    row = re.search(r"\| pixel3 \| help \| ([0-9.]+) \| ms \| faster than ([0-9.]+) %", md)
    assert row and float(row.group(1)) == pytest.approx(best.values["pixel3_latency"], rel=1e-3)
    assert len(paths.figures) == 2 and all(f.stat().st_size > 1000 for f in paths.figures)
    for f in paths.figures:
        assert f"]({f.name})" in md


def test_the_html_page_is_self_contained(searched, data_root: Path, tmp_path: Path) -> None:
    from devicefit.report import search_report

    page = search_report(searched[0], tmp_path, data_dir=data_root).html.read_text()
    assert page.count("<svg") == 2 and "<img" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", page)  # no file, no network: only fragments
    assert not re.search(r"<link|<script|@import|url\((?!#)", page)


def test_the_plots_render_in_a_real_browser(searched, data_root: Path, tmp_path: Path) -> None:
    from devicefit.report import search_report

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    page = search_report(searched[0], tmp_path, data_dir=data_root).html
    probe = tmp_path / "probe.html"  # the page plus a script that measures each rendered figure
    probe.write_text(page.read_text().replace("</body>", """<script>
addEventListener("load", () => {
  const sizes = [...document.querySelectorAll("figure svg")].map(s => {
    const b = s.getBoundingClientRect(); return [b.width, b.height, s.querySelectorAll("path,use,text").length]; });
  const p = document.createElement("pre"); p.id = "render-check"; p.textContent = JSON.stringify(sizes);
  document.body.appendChild(p); });
</script></body>"""))
    out = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="render-check">([^<]*)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    sizes = json.loads(found.group(1))
    assert len(sizes) == 2
    for width, height, drawn in sizes:
        assert width > 200 and height > 150 and drawn > 30


def test_report_cli_and_its_errors(searched, data_root: Path, tmp_path: Path) -> None:
    store = searched[0]
    res = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "r"), "--data-dir", str(data_root),
                              "--json"])
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.output)["html"]).is_file()
    missing = runner.invoke(app, ["report", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    other = runner.invoke(app, ["report", str(store), "--study", "nope", "--out", str(tmp_path / "x")])
    assert other.exit_code == 2 and "no finished study 'nope'" in other.output and "search" in other.output
    (tmp_path / "file").write_text("")
    clash = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "file")])
    assert clash.exit_code == 2 and "is a file" in clash.output
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_text("not a database")
    bad = runner.invoke(app, ["report", str(foreign)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
