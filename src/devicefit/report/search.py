"""The report of a search study, read back from its store: settings, the answer, the search curve, the
Pareto front of the objective against the constrained cost, the answer's cost on every known device, and
the re-check of a predicted constraint.

    paths = search_report("runs/pixel3.sqlite", "runs/report")      # or: devicefit report runs/pixel3.sqlite
    paths.markdown, paths.html                                        # the HTML page is one self-contained file

Nothing is searched again: the trials and settings come from the store. The data directory, when there is
one, adds what the store cannot know: the answer's NB201 index and test accuracy (the test column that
goes with a validation objective, never searched on), its latency on every device table (LatBench, HELP,
tables of your own) with its rank among all cells there, and the true latency of the candidates a
predictor judged feasible (read from the store when the search re-checked them, else looked up now).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..study.study import SearchResult, TrialRecord
from .document import Document, ReportPaths
from .plots import FrontPoint, curve_figure, front_figure, recheck_figure

#: The device tables published with LatBench (BRP-NAS) and HELP: listed in the report when absent here.
PUBLISHED_DEVICE_TABLES: dict[str, tuple[str, ...]] = {
    "latbench": (
        "desktop-cpu-core-i7-7820x-fp32", "desktop-gpu-gtx-1080ti-fp32", "desktop-gpu-gtx-1080ti-large",
        "embedded-gpu-jetson-nano-fp16", "embedded-gpu-jetson-nano-fp32", "embedded-tpu-edge-tpu-int8",
        "embedded-tpu-edgetpu-large", "mobile-cpu-snapdragon-450-cortex-a53-int8",
        "mobile-cpu-snapdragon-675-kryo-460-int8", "mobile-cpu-snapdragon-855-kryo-485-int8",
        "mobile-dsp-snapdragon-675-hexagon-685-int8", "mobile-dsp-snapdragon-855-hexagon-690-int8",
        "mobile-gpu-snapdragon-450-adreno-506-int8", "mobile-gpu-snapdragon-675-adreno-612-int8",
        "mobile-gpu-snapdragon-855-adreno-640-int8",
    ),
    "help": (
        "1080ti_1", "1080ti_256", "1080ti_32", "2080ti_1", "2080ti_256", "2080ti_32", "eyeriss", "fpga",
        "gold_6226", "gold_6240", "pixel2", "pixel3", "raspi4", "samsung_a50", "silver_4114", "titan_rtx_1",
        "titan_rtx_256", "titan_rtx_32", "titanx_1", "titanx_256", "titanx_32",
    ),
}
#: The name of the cost axis when a study has no cost of its own (no constraint, no minimised objective).
COUNTED_PARAMS = "params"
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Recheck:
    """A predicted constraint checked against its truth on every evaluated candidate the prediction let through."""

    constraint: str
    truth: str
    upper: float | None
    lower: float | None
    unit: str
    predicted: dict[str, float]  # candidate identity -> predicted value
    true: dict[str, float | None]  # candidate identity -> true value (None: the truth has no value)
    from_store: int  # how many true values the store already held (the rest were looked up now)

    def holds(self, value: float | None) -> bool:
        return value is not None and (self.upper is None or value <= self.upper) and (
            self.lower is None or value >= self.lower)


@dataclass
class _Context:
    result: SearchResult
    store: Path
    study: str
    data_root: Path | None
    units: dict[str, str]
    table: Any = None  # the NB201 accuracy table, when the data directory has it
    rechecks: list[Recheck] = field(default_factory=list)
    best: TrialRecord | None = None  # the answer: the study's best, confirmed by the re-checks if any
    checked_in_order: int | None = None  # with re-checks: how many of the best candidates were checked
    notes: list[str] = field(default_factory=list)

    def label(self, name: str) -> str:
        """``name (unit)``: the unit of a value the study recorded, or % for an accuracy column of the table."""
        from ..data.nb201_table import is_accuracy_column

        unit = self.units.get(name) or ("%" if is_accuracy_column(name) else "")
        return f"{name} ({unit})" if unit else name


def search_report(
    store: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    study: str = "search",
    data_dir: str | os.PathLike[str] | None = None,
    stem: str = "report",
) -> ReportPaths:
    """Write ``<out_dir>/<stem>.md`` (with PNG figures beside it) and ``<out_dir>/<stem>.html`` (one file, the
    figures inline as SVG) for ``study`` in ``store``; ``data_dir`` (default ``$DEVICEFIT_DATA``, optional)
    adds test accuracy and the cost on every device table."""
    from ..data import data_dir as resolve

    path = Path(store)
    _check_store_file(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {str(out)!r} is a file, expected a folder")
    result = SearchResult.from_store(path, study)
    ctx = _Context(result, path, study, resolve(data_dir, required=False), _units(result.settings))
    if result.settings["space"].get("space") == "nb201" and ctx.data_root is not None:
        ctx.table = _nb201_table(ctx.data_root)
    ctx.rechecks = _rechecks(ctx)
    _confirm(ctx)
    doc = Document(f"Search report: {study}")
    doc.paragraph(f"Study `{study}` of the results store `{path}`: {len(result.trials)} trials, "
                  f"{result.evaluations} objective evaluations.", note=True)
    _settings(doc, ctx)
    _answer(doc, ctx)
    _curve(doc, ctx)
    _front(doc, ctx)
    _recheck_section(doc, ctx)
    if result.settings["space"].get("space") == "nb201" and ctx.best is not None:
        _devices(doc, ctx)
    for note in ctx.notes:
        doc.paragraph(note, note=True)
    md, page, figures = doc.write(out, stem)
    return ReportPaths(md, page, tuple(figures))


# -- reading ---------------------------------------------------------------------------------------------
def _check_store_file(path: Path) -> None:
    """A clear message for what is not a store at all (the store itself refuses foreign SQLite files)."""
    if not path.exists():
        raise InputError(f"store {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"store {str(path)!r} is not a file (expected the SQLite file of devicefit search --store)")
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise InputError(f"{str(path)!r} is not a devicefit results store ("
                         f"{'an empty file' if not head else 'not a SQLite database'})")


def _unit_of(described: dict[str, Any]) -> str:
    """The unit of an objective's or a constraint's values, from its estimator's kind and settings."""
    from ..data.nb201_table import is_accuracy_column

    kind, settings, name = described.get("kind"), described.get("settings") or {}, str(described["name"])
    if kind == "table":
        return "%" if is_accuracy_column(str(settings.get("column", name))) else ""
    if kind in ("device-table", "measured"):
        return "ms"
    if kind == "predictor":
        return str(settings.get("unit", ""))
    if kind == "proxies":
        return "score"
    if kind == "count":
        return {"macs": "MACs", "flops": "FLOPs", "params": "parameters", "nonzero_params": "parameters"}.get(
            name.rpartition(".")[2], "bytes")
    return ""


def _units(settings: dict[str, Any]) -> dict[str, str]:
    described = [settings["objective"], *settings.get("secondary", []), *settings.get("constraints", [])]
    units = {str(d["name"]): _unit_of(d) for d in described}
    for c in settings.get("constraints", []):
        if c.get("truth"):
            units[c["truth"]["name"]] = units[c["name"]]
    return units | {COUNTED_PARAMS: "millions"}


def _nb201_table(root: Path) -> Any:
    from ..data import load_nb201_table
    from ..data.nb201_table import RELATIVE_PATH

    return load_nb201_table(root / RELATIVE_PATH) if (root / RELATIVE_PATH).is_file() else None


def _test_columns(objective: str) -> list[str]:
    """The test-accuracy column that goes with a validation column (``_val_`` -> ``_test_``,
    ``valid_valid`` -> ``valid_test``)."""
    return [objective.replace(a, b) for a, b in (("_val_", "_test_"), ("valid_valid", "valid_test"))
            if a in objective]


def _rechecks(ctx: _Context) -> list[Recheck]:
    """Each predicted constraint against its truth (a device table): the store's values where the search
    stored them (``devicefit search`` re-checks at the end), the table looked up now for the rest."""
    from ..study.estimator import EstimatorFailure
    from ..study.estimators import DeviceTableLatency
    from ..study.store import Store

    r = ctx.result
    passed = [t for t in r.trials if t.evaluated and t.feasible]
    out = []
    for c in r.settings.get("constraints", []):
        truth = c.get("truth")
        if not truth:
            continue
        device = (c.get("settings") or {}).get("device")
        if truth.get("kind") != "device-table" or not device:
            ctx.notes.append(f"{c['name']} was predicted; its truth ({truth.get('name')}, {truth.get('kind')}) "
                             "cannot be read back here, so the feasibility was not re-checked.")
            continue
        if ctx.data_root is None:
            ctx.notes.append(f"{c['name']} was predicted; without a data directory its truth ({truth['name']}) "
                             "cannot be looked up, so the feasibility was not re-checked.")
            continue
        try:
            est = DeviceTableLatency(device, ctx.data_root)
        except InputError as exc:
            ctx.notes.append(f"{c['name']} was not re-checked: {exc}")
            continue
        ids = [t.candidate for t in passed]
        with Store(ctx.store, readonly=True) as db:
            stored = {e.candidate: e for e in db.evaluations(est.fingerprint(r.space), ids)}
        true: dict[str, float | None] = {}
        for t in passed:
            e = stored.get(t.candidate)
            if e is not None:
                true[t.candidate] = float(e.value["value"]) if e.ok else None
                continue
            try:
                true[t.candidate] = float(est.evaluate(r.space, r.space.from_identity(t.candidate))["value"])
            except EstimatorFailure:
                true[t.candidate] = None
        predicted = {t.candidate: float(v) for t in passed if (v := t.values.get(c["name"])) is not None}
        out.append(Recheck(c["name"], truth["name"], c["upper"], c["lower"], ctx.units.get(c["name"], ""),
                           predicted, true, len(stored)))
    return out


def _confirm(ctx: _Context) -> None:
    """The answer. Without a predicted constraint: the study's best feasible trial. With one: the best
    candidate the truth confirms, checked in order of objective as one would measure the top candidates on
    the device, stopping at the first that meets every re-checked constraint (as ``devicefit search`` does)."""
    ctx.best = ctx.result.best
    if ctx.rechecks:
        ctx.best, ctx.checked_in_order = ctx.result.confirmed_best(
            lambda candidate: all(rc.holds(rc.true.get(candidate)) for rc in ctx.rechecks))


# -- sections --------------------------------------------------------------------------------------------
def _bounds(c: dict[str, Any]) -> str:
    parts = ([f"<= {c['upper']:g}"] if c["upper"] is not None else []) + (
        [f">= {c['lower']:g}"] if c["lower"] is not None else [])
    return " and ".join(parts)


def _settings(doc: Document, ctx: _Context) -> None:
    r, s = ctx.result, ctx.result.settings
    constraints = "; ".join(
        f"{ctx.label(c['name'])} {_bounds(c)}"
        + (f" (predicted; re-checked against {c['truth']['name']})" if c.get("truth") else "")
        for c in s.get("constraints", [])) or "none"
    options = ", ".join(f"{k}={v}" for k, v in s["strategy"].items() if k != "name")
    space = ", ".join(f"{k}={v}" for k, v in s["space"].items() if k != "space")
    repeats = sum(t.repeat_of is not None for t in r.trials)
    rows: list[list[Any]] = [
        ["space", s["space"]["space"] + (f" ({space})" if space else "")],
        ["objective", f"{ctx.label(r.objective.name)}, {'maximised' if r.objective.maximize else 'minimised'}"],
        ["more objectives", ", ".join(f"{ctx.label(o['name'])}, {'maximised' if o['maximize'] else 'minimised'}"
                                      for o in s.get("secondary", [])) or "none"],
        ["constraints", constraints],
        ["strategy", s["strategy"]["name"] + (f" ({options})" if options else "")],
        ["seed", s["seed"]],
        ["zero-cost warm-up", f"{s['warmup']} random cells scored" if s.get("warmup") else "no"],
        ["zero-cost move", "yes" if s.get("move") else "no"],
        ["proxy of warm-up and move", s["proxy"]["name"] if s.get("proxy") else "none"],
        ["candidates asked per step", s.get("batch", 1)],
        ["budget used (objective evaluations)", r.evaluations],
        ["rejected by the constraints before evaluation", len(r.trials) - r.evaluations - repeats],
        ["repeats of a candidate already evaluated", repeats],
    ]
    doc.heading("Settings")
    doc.table(["setting", "value"], rows)


def _answer(doc: Document, ctx: _Context) -> None:
    r, best = ctx.result, ctx.best
    doc.heading("The answer")
    if ctx.rechecks and r.best is not None:
        doc.paragraph(
            f"The search's best candidate by the prediction was trial {r.best.number}. The answer is the best "
            "candidate whose true value meets the budget, checking the candidates in order of "
            f"{r.objective.name}: " + ("none of them does." if best is None else
                                       f"the {_ordinal(ctx.checked_in_order or 0)} checked, trial {best.number}."))
    if best is None:
        if not ctx.rechecks:
            doc.paragraph("No evaluated candidate met the constraints: there is no answer.")
        return
    cell = r.space.from_identity(best.candidate)
    rows: list[list[Any]] = [["candidate", f"`{r.space.to_json(cell)}`"]]
    if ctx.table is not None:
        rows.append(["NB201 index", ctx.table.index_of(cell)])
    rows.append(["trial", best.number])
    rows += [[ctx.label(name), value] for name, value in best.values.items()]
    if ctx.table is not None:
        for column in _test_columns(r.objective.name):
            if column in ctx.table.columns:
                rows.append([f"{ctx.label(column)}, from the table (reported, never searched on)",
                             ctx.table.value(cell, column)])
    for rc in ctx.rechecks:
        v = rc.true.get(best.candidate)
        verdict = "no value" if v is None else ("within" if rc.holds(v) else "OUTSIDE") + " the budget"
        rows.append([f"{ctx.label(rc.truth)}, re-check of {rc.constraint}", f"{_num(v)} ({verdict})"])
    doc.table(["", "value"], rows)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:.4g}"


def _curve(doc: Document, ctx: _Context) -> None:
    r = ctx.result
    if not any(v is not None for v in r.best_so_far):
        return
    evaluated = [t for t in r.trials if t.evaluated]  # the study's count: objective evaluations only
    each = [t.objective if t.feasible else None for t in evaluated]
    fig = curve_figure(each, r.best_so_far, ctx.label(r.objective.name), r.objective.maximize)
    doc.heading("Search curve")
    at = {n: v for n, v in r.best_at((10, 25, 50, 100, 200, 500, 1000)).items() if v is not None}
    last = r.best_so_far[-1]
    if len(r.best_so_far) not in at:
        at[len(r.best_so_far)] = last
    doc.paragraph(f"Best feasible {r.objective.name} after " + ", ".join(
        f"{n} evaluations: {_num(v)}" for n, v in at.items()) + ".")
    doc.figure("curve", fig, f"Each evaluation's {r.objective.name} and the best feasible so far, against the "
                             "number of objective evaluations.")


def _cost_values(ctx: _Context) -> tuple[str, str, dict[int, float]]:
    """(cost name, how it was obtained, {trial number: cost}) of the Pareto plot: the study's cost (a
    minimised objective or the first bounded constraint), else the counted parameters of each evaluated
    candidate's network (built as :meth:`SearchResult.model` builds it)."""
    r = ctx.result
    name = r.cost_name()
    if name is not None:
        return name, "recorded by the search", {
            t.number: float(v) for t in r.trials if (v := t.values.get(name)) is not None}
    counted: dict[str, float] = {}
    values = {}
    for t in r.trials:
        if t.evaluated:
            if t.candidate not in counted:
                net = r.space.build(r.space.from_identity(t.candidate), **r.build_options)
                counted[t.candidate] = sum(p.numel() for p in net.parameters()) / 1e6
            values[t.number] = counted[t.candidate]
    built = ", ".join(f"{k}={v}" for k, v in r.build_options.items()) or "the space's default options"
    return COUNTED_PARAMS, f"counted in each candidate's network, built with {built} (the study has no cost of its " \
        "own)", values


def _front(doc: Document, ctx: _Context) -> None:
    import numpy as np

    from ..study.pareto import hypervolume_2d, pareto_front

    r = ctx.result
    cost, how, costs = _cost_values(ctx)
    pts: list[TrialRecord] = [t for t in r.trials if t.evaluated and t.objective is not None and t.number in costs]
    if not pts:
        return
    sign = 1.0 if r.objective.maximize else -1.0
    c = np.array([costs[t.number] for t in pts])
    v = np.array([sign * float(t.objective) for t in pts])  # type: ignore[arg-type]
    on_front = {pts[i].number for i in pareto_front(c, v)}
    budget = next((float(x["upper"]) for x in r.settings.get("constraints", [])
                   if x["name"] == cost and x["upper"] is not None), None)
    feasible = np.array([t.feasible for t in pts])
    ref_cost = budget if budget is not None else float(c[feasible].max()) if feasible.any() else 0.0
    ref_value = float(v[feasible].min()) if feasible.any() else 0.0
    hv = hypervolume_2d(c[feasible], v[feasible], ref_cost, ref_value) if feasible.any() else 0.0
    best = None if ctx.best is None else ctx.best.number
    points = [FrontPoint(costs[t.number], float(t.objective), t.feasible, t.number in on_front,  # type: ignore[arg-type]
                         t.number == best) for t in pts]
    rejected = [costs[t.number] for t in r.trials
                if not t.evaluated and t.repeat_of is None and t.number in costs]
    budget_label = "" if budget is None else f"budget: {cost} <= {budget:g}"
    fig = front_figure(points, rejected, ctx.label(cost), ctx.label(r.objective.name), r.objective.maximize,
                       budget, budget_label)
    front = sorted((t for t in pts if t.number in on_front), key=lambda t: costs[t.number])
    doc.heading(f"Pareto front: {r.objective.name} against {cost}")
    infeasible = sum(not t.feasible for t in pts)
    doc.paragraph(
        f"{len(front)} of the {len(pts)} evaluated candidates with both values are on the front"
        + (f" ({infeasible} of the {len(pts)} infeasible)" if infeasible else "") + f"; the cost is {cost}, {how}."
        + (f" {len(rejected)} candidates were rejected by the constraints before evaluation: their {cost} are the "
           "ticks along the bottom." if rejected else "")
        + f" Hypervolume of the feasible front: {hv:.4g} {_hv_unit(ctx, cost)}, reference point ({cost} = "
        + (f"the budget {ref_cost:g}" if budget is not None else f"the largest feasible {ref_cost:.4g}")
        + f", {r.objective.name} = the worst feasible {sign * ref_value:.4g}).")
    doc.figure("pareto", fig, f"{r.objective.name} against {cost}: every evaluated candidate, the Pareto front, "
                              "the answer (star)" + (" and the budget (dashed)" if budget is not None else "")
               + ".")
    doc.table([ctx.label(cost), ctx.label(r.objective.name), "feasible", "trial", "candidate"],
              [[costs[t.number], t.objective, t.feasible, t.number,
                f"`{r.space.to_json(r.space.from_identity(t.candidate))}`"] for t in front])


def _hv_unit(ctx: _Context, cost: str) -> str:
    a, b = ctx.units.get(cost, ""), ctx.units.get(ctx.result.objective.name, "")
    return f"({a} x {b})" if a and b else ""


def _recheck_section(doc: Document, ctx: _Context) -> None:
    r = ctx.result
    for n, rc in enumerate(ctx.rechecks, 1):
        doc.heading(f"Re-check of the predicted {rc.constraint} against {rc.truth}")
        known = {i: v for i, v in rc.true.items() if v is not None}
        ok = [i for i, v in known.items() if rc.holds(v)]
        over = [100.0 * (v / rc.upper - 1.0) for v in known.values() if rc.upper and not rc.holds(v)]
        predicted_best = None if r.best is None else r.best.candidate
        rows: list[list[Any]] = [
            ["judged feasible by the prediction (evaluated)", len(rc.true)],
            ["truly feasible", len(ok)],
            ["share truly feasible (%)", 100.0 * len(ok) / len(rc.true) if rc.true else None],
            ["without a true value", len(rc.true) - len(known)],
            ["worst violation of the budget (%)", max(over) if over else 0.0],
            ["the predicted best truly feasible",
             None if predicted_best not in known else rc.holds(known[predicted_best])],
            ["candidates checked in order of objective to find the answer", ctx.checked_in_order],
            ["true values read from the store / looked up now", f"{rc.from_store} / {len(rc.true) - rc.from_store}"],
        ]
        doc.table(["", "value"], rows)
        pairs = [(rc.predicted[i], v) for i, v in known.items() if i in rc.predicted]
        if pairs and rc.upper is not None:
            fig = recheck_figure([p for p, _ in pairs], [t for _, t in pairs], rc.upper, rc.unit)
            doc.figure(f"recheck{n}", fig, f"Predicted {rc.constraint} against the true {rc.truth} "
                       "of each candidate the prediction let through; crosses were wrongly judged feasible.")


def _devices(doc: Document, ctx: _Context) -> None:
    """The answer's latency on every device table of the data directory, with its rank among all cells."""
    import numpy as np

    from ..data import load_device_tables

    doc.heading("The answer on every known device")
    if ctx.data_root is None:
        doc.paragraph("No data directory (--data-dir or DEVICEFIT_DATA): the device tables (LatBench, HELP) would "
                      "show the answer's latency on 36 devices.", note=True)
        return
    assert ctx.best is not None
    cell = ctx.result.space.from_identity(ctx.best.candidate)
    tables = load_device_tables(ctx.data_root)
    units = {t.unit for t in tables.values()}
    unit = units.pop() if len(units) == 1 else None
    rows, absent = [], []
    for name, table in sorted(tables.items(), key=lambda kv: (kv[1].source, kv[0])):
        v = table.get(cell)
        value = v if unit else (None if v is None else f"{v:.4g} {table.unit}")
        if v is None:
            absent.append(name)
            rows.append([name, table.source, value, f"no value for this cell (of {len(table):,})", None])
            continue
        all_cells = np.fromiter(table.values.values(), dtype=np.float64, count=len(table))
        rank = 1 + int((all_cells < v).sum())
        rows.append([name, table.source, value, f"{rank:,} of {len(table):,}",
                     round(100.0 * float((all_cells > v).sum()) / len(table), 1)])
    doc.paragraph("The answer's latency in each device table of the data directory, its rank among the table's "
                  "cells (1 = the fastest) and the share of cells that are slower.")
    doc.table(["device", "source", f"latency ({unit})" if unit else "latency", "rank (1 = fastest)",
               "slower cells (%)"], rows)
    missing = [n for names in PUBLISHED_DEVICE_TABLES.values() for n in names if n not in tables]
    if missing:
        doc.paragraph(f"Published tables not in this data directory ({len(missing)}): "
                      + ", ".join(f"`{n}`" for n in missing) + ".", note=True)
    if absent:
        doc.paragraph(f"No value for this cell in {len(absent)} table(s): " + ", ".join(f"`{n}`" for n in absent)
                      + ".", note=True)
