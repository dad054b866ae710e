"""The report of one compression (``devicefit compress``): Markdown and one self-contained HTML page with the
summary table, the measured comparison and its notes, the per-layer table and the per-layer plot.

It renders what :func:`devicefit.compress` measured (its :class:`~devicefit.compression.CompressReport`, or the
``compress_report.json`` of its output folder); nothing is measured again here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .document import Document, ReportPaths

REPORT_JSON = "compress_report.json"


def load_compress_report(path: str | os.PathLike[str]) -> Any:
    """The :class:`~devicefit.compression.CompressReport` of an output folder or of its JSON file."""
    from ..compression.job import CompressReport

    p = Path(path)
    file = p / REPORT_JSON if p.is_dir() else p
    if not file.is_file():
        raise InputError(f"{str(p)!r} holds no {REPORT_JSON}: expected the --out folder of devicefit compress")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(file)!r} is not a readable compress report: {exc}") from None
    return CompressReport.from_dict(data)


def compress_report(report: Any, out_dir: str | os.PathLike[str], *, stem: str = "compress_report") -> ReportPaths:
    """Write ``<out_dir>/<stem>.md`` (PNG figure beside it) and ``<out_dir>/<stem>.html`` of ``report`` (a
    ``CompressReport``, or the folder / JSON file :func:`devicefit.compress` wrote)."""
    from ..compression.job import CompressReport

    if not isinstance(report, CompressReport):
        report = load_compress_report(report)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {str(out)!r} is a file, expected a folder")
    doc = Document(report.title)
    doc.paragraph(f"{report.layers} layers compressed, {len(report.skipped)} skipped. Accuracy: top-1 on "
                  f"{report.data}.", note=True)
    doc.table(["", "original", "compressed"], report.summary_rows())
    acc = report.accuracy
    parts = [f"before recovery {acc['compressed']:.2f} %" if acc.get("compressed") is not None else "",
             f"after recovery {acc['recovered']:.2f} %" if acc.get("recovered") is not None else "",
             f"the int8 ONNX model in ONNX Runtime {acc['deployed']:.2f} %" if acc.get("deployed") is not None
             else ""]
    doc.paragraph("Accuracy of the compressed model: " + "; ".join(p for p in parts if p) + ".")
    _search(doc, report)
    _measurement(doc, report)
    _layers(doc, report)
    if report.skipped:
        doc.heading("Skipped layers")
        doc.table(["layer", "action", "why"], [[s["module"], s["action"], s["reason"]] for s in report.skipped])
    md, page, figures = doc.write(out, stem)
    return ReportPaths(md, page, tuple(figures))


def _measurement(doc: Document, report: Any) -> None:
    doc.heading("Measured here")
    c = report.comparison
    if not c:
        doc.paragraph(f"Speed-up in ONNX Runtime: {report.speedup:.2f}x.")
        return
    rows = [[r["runtime"], r["original"]["median_ms"], r["compressed"]["median_ms"], r["speedup"],
             f"{r['speedup_low']:.2f}-{r['speedup_high']:.2f}"] for r in c["runtimes"]]
    doc.table(["runtime", "original ms", "compressed ms", "speed-up x", "per-round range"], rows)
    t = c["timing"]
    doc.paragraph(f"Batch {c['input_shape'][0]}, {t['threads']} thread(s), {t['warmup']} warm-up runs, then "
                  f"{t['rounds']} rounds of {t['repeats_per_round']} runs of each model, alternating which goes "
                  "first; speed-up = ratio of the medians.", note=True)
    o, k = c["original"], c["compressed"]
    doc.table(["bytes", "original", "compressed"], [["fp32 dense", o["bytes_fp32_dense"], k["bytes_fp32_dense"]],
                                                    ["ONNX file", o["bytes_onnx"], k["bytes_onnx"]],
                                                    ["stored sparse", o["bytes_sparse"], k["bytes_sparse"]]])
    doc.paragraph(f"Stored sparse: {c['sparse_encoding']}.", note=True)
    for note in report.notes:
        doc.paragraph(note)


def _search(doc: Document, report: Any) -> None:
    """How the per-layer policy was chosen: the budget, the estimate it was chosen on, the best uniform ratio
    within the same budget, and the sensitivity curves (greedy) or the search curve (strategies)."""
    s = report.search
    if not s:
        return
    from .plots import curve_figure, sensitivity_figure

    doc.heading("Policy search")
    original = s["original_cost"][s["metric"]]
    doc.paragraph(f"{s['search']} search of per-layer {s['method']} ratios to {s['metric']} <= {s['limit']:,.0f} "
                  f"({s['limit'] / original:.3g} of the original's {original:,}): {s['evaluations']} accuracy "
                  "estimates (no fine-tuning, BatchNorm re-calibrated, a fixed slice of the training images). The "
                  "answer: "
                  f"{s['cost'][s['metric']]:,} ({s['cost'][s['metric']] / original:.3g}), estimated "
                  f"{s['accuracy']:.2f} %.")
    uniform = s.get("uniform") or {}
    if uniform:
        doc.paragraph(f"The largest uniform ratio within the same budget is {uniform['ratio']} "
                      f"({uniform['cost'][s['metric']]:,}).", note=True)
    if s.get("sensitivity"):
        curves = {layer: {float(r): a for r, a in c.items()} for layer, c in s["sensitivity"].items()}
        doc.figure("sensitivity", sensitivity_figure(curves),
                   "Accuracy estimate with one layer (or coupled group) compressed alone, per kept ratio")
    elif s.get("curve"):
        best = s["curve"]
        doc.figure("search", curve_figure(s.get("each") or best, best, "accuracy estimate %", True),
                   "Each evaluated policy's accuracy estimate (grey; over-budget ones left out) and the best "
                   "within the budget so far")


def _action(a: dict[str, Any] | None) -> str:
    if a is None:
        return "(earlier rounds)"
    return a["action"] + "".join(f" {k}={v}" for k, v in a.items() if k != "action")


def _layers(doc: Document, report: Any) -> None:
    rows = [r for r in report.per_layer if r.get("compressed") is not None]
    if not rows:
        return
    doc.heading("Per layer")
    from .plots import layer_figure

    names = [r["layer"] for r in rows]
    doc.figure("layers", layer_figure(names, [
        ("MACs", [r["original"]["macs"] for r in rows], [r["compressed"]["macs"] for r in rows]),
        ("non-zero parameters", [r["original"]["nonzero_params"] for r in rows],
         [r["compressed"]["nonzero_params"] for r in rows])]),
        "MACs and non-zero parameters of each compressed layer, original (grey) against compressed (blue)")
    doc.table(["layer", "action", "MACs", "compressed MACs", "params", "compressed params",
               "compressed non-zero params"],
              [[r["layer"], _action(r["action"]), r["original"]["macs"], r["compressed"]["macs"],
                r["original"]["params"], r["compressed"]["params"], r["compressed"]["nonzero_params"]] for r in rows])
