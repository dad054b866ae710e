"""The report of a search study, read back from its store: settings, the answer, the search curve, the
Pareto front of the objective against the constrained cost, and the answer's cost on every known device.

    paths = search_report("runs/pixel3.sqlite", "runs/report")      # or: devicefit report runs/pixel3.sqlite
    paths.markdown, paths.html                                        # the HTML page is one self-contained file

Nothing is run again: the trials come from the store, the accuracy and device tables (when the data
directory is there) give the answer's test accuracy and its latency on every device table, with its rank
among all cells of that table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..study.study import SearchResult
from .document import Document


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def search_report(
    store: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    study: str = "search",
    data_dir: str | os.PathLike[str] | None = None,
    stem: str = "report",
) -> ReportPaths:
    """Write ``<out_dir>/<stem>.md`` (+ PNG figures) and ``<out_dir>/<stem>.html`` for ``study`` in ``store``."""
    import matplotlib

    matplotlib.use("Agg")
    path = Path(store)
    if not path.is_file():
        raise InputError(f"store {str(path)!r} does not exist")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {str(out)!r} is a file, expected a folder")
    result = SearchResult.from_store(path, study)
    doc = Document(f"Search report: {study}")
    s = result.settings
    _settings(doc, result, path)
    _answer(doc, result, data_dir)
    _curve(doc, result)
    _front(doc, result)
    if s["space"].get("space") == "nb201" and result.best is not None:
        _devices(doc, result, data_dir)
    md, page, figures = doc.write(out, stem)
    return ReportPaths(md, page, tuple(figures))


def _settings(doc: Document, r: SearchResult, store: Path) -> None:
    s = r.settings
    constraints = "; ".join(
        f"{c['name']} {'<= ' + format(c['upper'], '.4g') if c['upper'] is not None else ''}"
        f"{' >= ' + format(c['lower'], '.4g') if c['lower'] is not None else ''}"
        + (f" (predicted, re-checked by {c['truth']['name']})" if c.get("truth") else "")
        for c in s["constraints"]) or "none"
    strategy = ", ".join(f"{k}={v}" for k, v in s["strategy"].items() if k != "name")
    rows = [["store", f"`{store}`"], ["space", s["space"]["space"]],
            ["objective", f"{r.objective.name} ({'maximised' if r.objective.maximize else 'minimised'})"],
            ["more objectives", ", ".join(o["name"] for o in s.get("secondary", [])) or "none"],
            ["constraints", constraints],
            ["strategy", s["strategy"]["name"] + (f" ({strategy})" if strategy else "")],
            ["seed", s["seed"]],
            ["zero-cost warm-up", f"{s['warmup']} cells" if s["warmup"] else "no"],
            ["zero-cost move", "yes" if s["move"] else "no"],
            ["proxy", s["proxy"]["name"] if s.get("proxy") else "none"],
            ["evaluations", r.evaluations],
            ["rejected before evaluation", f"{r.rejected} (constraints checked first, or repeats of a key)"]]
    doc.heading("Settings")
    doc.table(["setting", "value"], rows)


def _test_columns(objective: str) -> list[str]:
    return [objective.replace(a, b) for a, b in (("_val_", "_test_"), ("valid_valid", "valid_test"))
            if a in objective]


def _answer(doc: Document, r: SearchResult, data_dir: str | os.PathLike[str] | None) -> None:
    doc.heading("The answer")
    if r.best is None:
        doc.paragraph("No evaluated candidate met the constraints.")
        return
    cell = r.best_candidate
    rows: list[list[Any]] = [["candidate", f"`{r.space.to_json(cell)}`"], ["trial", r.best.number]]
    rows += [[name, value] for name, value in r.best.values.items()]
    table = _nb201_table(data_dir) if r.settings["space"].get("space") == "nb201" else None
    if table is not None:
        rows.append(["NB201 index", table.index_of(cell)])
        for column in _test_columns(r.objective.name):
            if column in table.columns:
                rows.append([f"{column} (reported, not searched on)", table.value(cell, column)])
    doc.table(["", "value"], rows)


def _curve(doc: Document, r: SearchResult) -> None:
    import matplotlib.pyplot as plt

    xs = [i + 1 for i, v in enumerate(r.best_so_far) if v is not None]
    ys = [v for v in r.best_so_far if v is not None]
    if not ys:
        return
    evaluated = [t for t in r.trials if t.evaluated]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    pts = [(i + 1, t.objective) for i, t in enumerate(evaluated) if t.feasible and t.objective is not None]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=9, color="#9aa5b1", label="each evaluation")
    ax.step(xs, ys, where="post", color="#0969da", lw=2, label="best so far")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(r.objective.name)
    lo = min(ys[len(ys) // 10:] or ys)
    hi = max(ys)
    pad = max(0.5, 0.1 * (hi - lo))
    ax.set_ylim(lo - 3 * pad, hi + pad) if r.objective.maximize else None
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    doc.heading("Search curve")
    at = r.best_at()
    doc.paragraph("Best so far after " + ", ".join(f"{n}: {v:.4g}" for n, v in at.items() if v is not None) + ".")
    doc.figure("curve", fig, f"Best {r.objective.name} against objective evaluations")


def _front(doc: Document, r: SearchResult) -> None:
    import matplotlib.pyplot as plt

    cost = r.cost_name()
    if cost is None:
        return
    evaluated = [t for t in r.trials if t.evaluated and t.objective is not None and t.values.get(cost) is not None]
    if not evaluated:
        return
    front = r.pareto(cost)
    upper = next((c["upper"] for c in r.settings["constraints"] if c["name"] == cost), None)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    ax.scatter([t.values[cost] for t in evaluated], [t.objective for t in evaluated], s=10, color="#9aa5b1",
               label="evaluated")
    fx, fy = [t.values[cost] for t in front], [t.objective for t in front]
    ax.step(fx, fy, where="post", color="#cf222e", lw=1.6, marker="o", ms=4, label="Pareto front")
    if upper is not None:
        ax.axvline(upper, color="k", ls="--", lw=1, label=f"{cost} <= {upper:.4g}")
    if r.best is not None and r.best.values.get(cost) is not None:
        ax.scatter([r.best.values[cost]], [r.best.objective], marker="*", s=160, color="#1a7f37", zorder=5,
                   label="answer")
    ax.set_xlabel(cost)
    ax.set_ylabel(r.objective.name)
    lo = sorted(t.objective for t in evaluated)[len(evaluated) // 10]
    ax.set_ylim(lo - 0.5, max(fy) + 0.3) if r.objective.maximize else None
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    hv = r.hypervolume(cost)
    doc.heading(f"Pareto front: {r.objective.name} against {cost}")
    doc.paragraph(f"{len(front)} of {len(evaluated)} evaluated candidates are on the front. Hypervolume "
                  f"{hv:.4g} (reference: {cost} = {'the constraint ' if upper is not None else 'the largest '}"
                  f"{upper if upper is not None else max(t.values[cost] for t in evaluated):.4g}, "
                  f"{r.objective.name} = the worst evaluated).")
    doc.figure("pareto", fig, f"{r.objective.name} against {cost}: every evaluated candidate, the front, the budget")
    doc.table([cost, r.objective.name, "candidate"],
              [[t.values[cost], t.objective, f"`{r.space.to_json(r.space.from_identity(t.candidate))}`"]
               for t in front])


def _nb201_table(data_dir: str | os.PathLike[str] | None) -> Any:
    from ..data import data_dir as resolve
    from ..data import load_nb201_table

    root = resolve(data_dir, required=False)
    path = None if root is None else root / "nb201" / "nb201_accuracy.csv"
    return None if path is None or not path.is_file() else load_nb201_table(path)


def _devices(doc: Document, r: SearchResult, data_dir: str | os.PathLike[str] | None) -> None:
    """The answer's cost on every device table of the data directory, with its rank among all cells."""
    from ..data import data_dir as resolve
    from ..data import load_device_tables

    root = resolve(data_dir, required=False)
    if root is None:
        doc.heading("Cost on other devices")
        doc.paragraph("No data directory: the device tables (LatBench, HELP) would show the answer's latency on "
                      "~36 devices.", note=True)
        return
    cell = r.best_candidate
    rows = []
    for name, table in sorted(load_device_tables(root).items()):
        v = table.values.get(cell)
        if v is None:
            rows.append([name, table.source, None, None, "no value for this cell"])
            continue
        values = table.values.values()
        share = sum(x < v for x in values) / len(table.values)
        rows.append([name, table.source, float(v), table.unit, f"faster than {100 * (1 - share):.1f} % of "
                     f"{len(table.values):,} cells"])
    doc.heading("Cost on every known device")
    doc.paragraph("The answer's value in each device table of the data directory, and its rank among the table's "
                  "cells (lower latency ranks higher).")
    doc.table(["device", "source", "value", "unit", "rank"], rows)
