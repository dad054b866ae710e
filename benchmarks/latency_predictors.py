"""Latency predictors on every device table: FLOPs, layer-wise, MLP, BRP-NAS GCN, few-shot transfer.

For each device (LatBench + HELP from the data directory, plus this machine's table
``benchmarks/results/local_latency_nb201.csv`` when it exists), each predictor is trained on N random
cells of the device's table (900, 100, 20; transfer: 10, 20) and evaluated on *all* remaining cells
with ``devicefit.ranking.regression_report``. Each (device, predictor, N, seed) is one task of the
evaluation loop (:func:`devicefit.study.evaluate_all` over a :class:`devicefit.study.TaskGrid`, the
experiment as an estimator): results go to the store as they finish, so the run resumes, and
``--executor process|ray`` spreads the grid over processes or a Ray cluster; the tables are re-written
from whatever has finished.

Work is ordered so that the headline numbers land first (see PHASES). Transfer protocol: the six HELP
test devices share one pre-trained trunk whose sources exclude all six devices' families (HELP's own
meta-train/meta-test split style); any other device gets a trunk pre-trained without its family
(leave-family-out). The trunk is pre-trained once (seed 0) per held-out group; the seeds vary the
target's few-shot sample.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/latency_predictors.py [--executor process --workers 2]
    DEVICEFIT_DATA=/work/shared/data python benchmarks/latency_predictors.py --report-only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

from devicefit.data import LatencyTable, load_device_tables, read_latency_csv
from devicefit.predictors import (
    TransferPredictor,
    TransferTrunk,
    cached_trunk,
    device_family,
    evaluate,
    make_predictor,
    measurement_ceiling,
    sources_for,
    split_table,
)
from devicefit.study import EXECUTORS, Estimator, Store, TaskGrid, evaluate_all, file_sha256, make_executor

NAME = "latency_predictors"
LOCAL_CSV = RESULTS_DIR / "local_latency_nb201.csv"
TRUNK_CACHE = RESULTS_DIR / ".trunks"
HELP6 = ("raspi4", "eyeriss", "fpga", "pixel2", "gold_6226", "titan_rtx_256")
BASELINES = ("flops", "layerwise", "mlp", "gcn")
SIZES = (900, 100, 20)
TRANSFER_SIZES = (10, 20)
SEEDS = (0, 1, 2)
# Is a device's within +-10 % short of its noise bracket for want of data or of model? Cheap predictors only.
CURVE_SIZES = (3000, 8000)
CURVE_MODELS = ("layerwise", "mlp")
CURVE_EXTRA = ("desktop-cpu-core-i7-7820x-fp32", "embedded-gpu-jetson-nano-fp16",
               "mobile-gpu-snapdragon-450-adreno-506-int8", "2080ti_1", "titan_rtx_1", "samsung_a50")
# Published Spearman rho (HELP, arXiv 2106.08630, Table 3: BRP-NAS GCN with 900 samples, re-measured).
PUBLISHED_BRP_900 = {"raspi4": 0.847, "eyeriss": 0.811, "fpga": 0.801, "pixel2": 0.666, "gold_6226": 0.796,
                     "titan_rtx_256": 0.814}
PUBLISHED = {"brp_nas_gcn_900_mean": 0.789, "flops_mean": 0.787, "help_10_mean": 0.932,
             "nn_meter_within_10pct": 0.99}


TRUNK_FIELDS = ("sources", "pretrain_seconds", "pretrain_info")


GRID = TaskGrid(NAME)


def key(task: tuple[str, str, int, int]) -> str:
    return "/".join(map(str, task))


def load_tables(data_dir: str | None) -> dict[str, LatencyTable]:
    tables = load_device_tables(data_dir)
    if LOCAL_CSV.is_file():
        for name, t in read_latency_csv(LOCAL_CSV, source="local").items():
            if not name.endswith("-wall"):  # the wall-clock columns repeat the same measurement
                tables[f"local:{name}"] = t
    return tables


def phases(tables: dict[str, LatencyTable]) -> list[tuple[str, list[tuple[str, str, int, int]]]]:
    help6 = [d for d in HELP6 if d in tables]
    local = [d for d in tables if d.startswith("local:")]
    first = help6 + local
    rest = [d for d in tables if d not in first]
    return [
        ("900 cells, seed 0, HELP six + local", [(d, m, 900, 0) for d in first for m in BASELINES]),
        ("transfer, HELP six + local", [(d, "transfer", n, s) for d in first for s in SEEDS for n in TRANSFER_SIZES]),
        ("100/20 cells, seed 0, HELP six + local", [(d, m, n, 0) for n in (100, 20) for d in first for m in BASELINES]),
        ("baselines, 900 cells, seed 0, other devices", [(d, m, 900, 0) for d in rest for m in BASELINES[:3]]),
        ("GCN, 900 cells, seed 0, other devices", [(d, "gcn", 900, 0) for d in rest]),
        ("seeds 1-2, HELP six + local",
         [(d, m, n, s) for s in SEEDS[1:] for n in SIZES for d in first for m in BASELINES]),
        ("baselines, 100/20 cells, seed 0, other devices",
         [(d, m, n, 0) for n in (100, 20) for d in rest for m in BASELINES]),
        ("transfer, other devices", [(d, "transfer", n, s) for d in rest for s in SEEDS for n in TRANSFER_SIZES]),
        ("seeds 1-2, other devices", [(d, m, n, s) for s in SEEDS[1:] for n in SIZES for d in rest for m in BASELINES]),
        ("learning curve beyond 900 cells",
         [(d, m, n, 0) for n in CURVE_SIZES for d in first + [d for d in CURVE_EXTRA if d in tables]
          for m in CURVE_MODELS]),
    ]


class Trunks:
    """Pre-trained transfer trunks, one per held-out group of families, from the trunk cache (pre-trained on first
    use and saved, so every worker process and every later run reuses it)."""

    def __init__(self, tables: dict[str, LatencyTable]) -> None:
        self.tables = tables
        self.cache: dict[frozenset[str], tuple[TransferTrunk, float]] = {}

    def held_out(self, device: str) -> frozenset[str]:
        if device.startswith("local:"):  # this machine: not in the data directory, one trunk for all its tables
            return frozenset({"local"})
        fams = {device_family(device)}
        if device in HELP6:
            fams |= {device_family(d) for d in HELP6}
        return frozenset(fams)

    def get(self, device: str) -> tuple[TransferTrunk, float]:
        group = self.held_out(device)
        if group not in self.cache:
            sources = {n: t for n, t in sources_for(device, self.tables).items()
                       if device_family(n) not in group and not n.startswith("local:")}
            start = time.perf_counter()
            trunk, path, pretrained = cached_trunk(sources, seed=0, cache_dir=TRUNK_CACHE)
            self.cache[group] = (trunk, float(trunk.info.get("seconds", time.perf_counter() - start)))
            print(f"  transfer trunk without {sorted(group)} on {len(sources)} sources: "
                  f"{'pre-trained' if pretrained else 'read'} {path.name}", flush=True)
        return self.cache[group]


def run_one(tables: dict[str, LatencyTable], trunks: Trunks, device: str, model: str, n: int, seed: int
            ) -> dict[str, Any] | None:
    table = tables[device]
    if n >= len(table):
        return None
    train, test = split_table(table, n, seed)
    extra: dict[str, Any] = {}
    if model == "transfer":
        trunk, pretrain_s = trunks.get(device)
        predictor = TransferPredictor(trunk=trunk)  # the trunk is frozen; only the head is fitted
        extra = {"pretrain_seconds": pretrain_s, "sources": trunk.sources, "pretrain_info": trunk.info}
    else:
        predictor = make_predictor(model)
    try:
        predictor.fit_table(table, train, seed=seed)
    except ValueError as exc:  # e.g. layerwise with fewer cells than terms
        return {"error": str(exc), "n_train": n}
    start = time.perf_counter()
    report = evaluate(predictor, table, test)
    extra["train_info"] = getattr(predictor, "train_info", None)
    return {**report, "n_train": n, "n_test": len(test), "fit_seconds": predictor.fit_seconds,
            "eval_seconds": time.perf_counter() - start, **extra}


@dataclass
class PredictorExperiment(Estimator):
    """One task (device, predictor, N, seed): fit on N cells, evaluate on the rest (``run_one``)."""

    data_dir: str | None = None
    tables_sha256: dict[str, str] = field(default_factory=dict)
    kind = "predictor-experiment"

    def __post_init__(self) -> None:
        self._tables = load_tables(self.data_dir)
        paths = sorted({str(t.meta["path"]) for t in self._tables.values()})
        self.tables_sha256 = {Path(p).name: file_sha256(p) for p in paths}

    def settings(self) -> dict[str, Any]:
        return {"tables_sha256": self.tables_sha256, "held_out": list(HELP6), "trunk_seed": 0}

    def prepare(self) -> None:
        if getattr(self, "_tables", None) is None:
            self._tables = load_tables(self.data_dir)
        self._trunks = Trunks(self._tables)

    def evaluate(self, space: Any, task: Any) -> dict[str, Any]:
        device, model, n, seed = task
        rec = run_one(self._tables, self._trunks, device, model, int(n), int(seed))
        if rec is None:
            raise ValueError(f"device {device} has no more than {n} cells")
        return rec


NOTES = """## Notes

- **Protocol.** N random cells (seeded) of a device table train the predictor; *all* other cells of that
  table are the test set. The GCN and MLP hold out 10 % of the N cells for the LR schedule and early
  stopping (N >= 50), so N counts every measured cell (BRP-NAS used 900 train + 100 validation).
  Metrics: `devicefit.ranking.regression_report`.
- **Published BRP-NAS figures** (0.789 mean Spearman over the six devices) are HELP's re-measurement
  (arXiv 2106.08630), not BRP-NAS's own. Our GCN at 900 cells ranks far better on the same tables. We do
  not know the settings of HELP's re-run; the differences of ours from eagle are: standardised
  log-latency targets (the L1 loss becomes a relative error), dangling ops kept in the graph (the NB201
  network computes them, so they cost time; eagle's pruned graph hides them), minibatches of 32 and
  <= 100 epochs (eagle: batch 1, <= 250 epochs). In one pilot on raspi4 (900 cells, not a controlled
  ablation: early stopping ended it at 58 epochs, against 118), the pruned graph scored Spearman 0.897 and
  the unpruned one 0.968. Below 200 cells the GCN trains on all N cells for at least 1,500 optimiser
  steps (no validation split: 10 validation cells at N = 100 stopped training after a few epochs and
  gave Spearman 0.57 on raspi4, against 0.92 with the fixed budget).
- **The tables are close to additive.** The layer-wise model (25 least-squares terms) is within +-10 % on
  100 % of cells for titan_rtx_256, eyeriss and fpga from 100 cells: these HELP/HW-NAS-Bench tables are
  (near-)sums of per-(edge, op) costs (eyeriss and fpga are HW-NAS-Bench *estimates*, not measurements).
  There a learned predictor has little to add, and the GCN lands slightly below the linear model.
- **How much within +-10 % the measurements allow (last column of the N = 900 table).** NB201 has 1,500
  pairs of *twin* cells, one network under two arch strings (edge 1->2 `none`, nodes 1 and 2 swapped:
  `NB201Cell.twin`; a test checks that both compute the same outputs from the same weights), so the two
  measured values of a pair differ by noise alone: timer jitter, thermal state, drift along the
  measurement order, whole-millisecond rounding (the HELP phones). `devicefit.predictors.measurement_ceiling`
  turns the pairs into a bracket for the share within +-10 % that *any* predictor can reach: the low end is
  what re-measuring reaches (one twin predicting the other); the high end, sqrt(P(|log(y1/y2)| <= 2 a))
  with a = -log(0.9), holds for independent noise, since a prediction within +-10 % of both twins
  puts them within 2a of each other. Where the high end is below 0.95, the issue's 95 % goal is out of
  reach of every predictor: raspi4 (<= 0.92), pixel2 (<= 0.85, values in whole ms), pixel3 (<= 0.91),
  the LatBench edge TPU "large" setting (<= 0.89) and the Snapdragon 675 CPU (<= 0.94). HELP's raspi4
  also times most of the 341 disconnected cells near zero (median 0.14 ms, against 26 ms for the connected
  cells), which makes its MAPE large. nn-Meter's 99 % within +-10 % is for its kernel-level predictors on
  its own measurements of other models, not on these tables.
- **900 cells, not the model, hold the GCN and MLP below 95 % where the noise allows it.** On the devices
  whose noise bracket reaches past 0.95, the MLP goes from 0.84 / 0.88 / 0.78 within +-10 % at 900 cells
  to 0.96 / 0.96 / 0.92 at 3,000 and 0.98 / 0.98 / 0.96 at 8,000 (desktop i7, Jetson Nano fp16,
  Snapdragon 450 GPU; section "More training cells"), while the additive layer-wise model stays flat
  (0.50 / 0.70 / 0.55): these tables have interactions between operations that 900 samples do not pin
  down. On raspi4 the MLP rises from 0.54 to 0.69 at 8,000 cells, near re-measurement (0.71). On the
  near-additive tables (gold_6226, 2080ti_1, samsung_a50, titan_rtx_1) more cells change little, and
  the predictors already sit inside the noise bracket.
- **Transfer protocol.** For the six HELP devices one trunk is pre-trained on 28 sources: every device
  outside the six devices' families (HELP: 1080ti, 2080ti, titanx at batch 1/32/256, gold_6240,
  silver_4114, pixel3, samsung_a50; LatBench: all 15 settings). Devices of the same family (titan_rtx_1/32
  for titan_rtx_256) are *excluded*, but related chips stay in the pool, as in HELP's meta-training set:
  gold_6240 for gold_6226 (same Xeon generation), pixel3 for pixel2, titanx/2080ti for titan_rtx. Other
  devices get a trunk without their own family (leave-family-out); this machine's tables get a trunk on
  all data-directory devices. The trunk is pre-trained once (seed 0) per group; the three seeds vary the
  few target cells. The head is a ridge fit of log-latency on the 28 source outputs over the connected
  sample cells; disconnected sample cells, if any, give the prediction for all disconnected cells. (Fitting
  all 20 cells, raspi4 seed 2, whose sample holds two disconnected cells timed at 0.01 and 0.06 ms, scored
  Spearman 0.495; with an indicator feature in the ridge 0.545; with the split, 0.926.)
- **Against HELP.** HELP's 0.932 is with 10 samples; the transfer predictor scores 0.923 with 10 and
  0.940 with 20 on the same six devices (mean of 3 samples each); over all 38 tables, 0.909 and 0.924.
  Few-shot fits are fragile to the sample: one 20-cell sample (seed 2) gives Spearman 0.42 and 0.53 on
  the two Snapdragon 450 tables (against 0.92-0.95 for the other seeds), with leave-one-out choosing
  almost no ridge penalty on 20 points and 28 features. The edge TPU "large" setting does not transfer
  (0.56): no source device behaves like it. The FLOPs regression, with no learning
  beyond a scale, reaches 0.86 from 20 cells (HELP quotes 0.787 for FLOPs).
- **Energy.** The predictors fit `unit="mJ"` tables the same way; no NB201 energy table is in the data
  directory (LatBench and HELP are latency only; the HW-NAS-Bench energy data here is the FBNet space).
"""


def mean_cell(recs: list[dict[str, Any]]) -> str:
    """``spearman / within+-10 %`` averaged over seeds, ``(k)`` when fewer than 3 seeds finished."""
    if not recs:
        return ""
    sp = statistics.mean(r["spearman"] for r in recs)
    w10 = statistics.mean(r["within_10pct"] for r in recs)
    return f"{sp:.3f} / {w10:.3f}" + (f" ({len(recs)})" if len(recs) < 3 else "")


def goal_check(
    res: dict[tuple[str, str, int], list[dict[str, Any]]], ceilings: dict[str, Any], devices: list[str]
) -> str:
    """The issue's goal for the GCN at 900 cells, device by device, against what the noise allows."""
    met, rank_only, impossible, short = [], [], [], []
    for d in devices:
        recs = res.get((d, "gcn", 900), [])
        if not recs:
            continue
        sp = statistics.mean(r["spearman"] for r in recs)
        w10 = statistics.mean(r["within_10pct"] for r in recs)
        c = ceilings.get(d)
        if sp >= 0.95 and w10 >= 0.95:
            met.append(d)
        elif c is not None and c.upper_bound < 0.95:
            impossible.append(f"{d} (<= {c.upper_bound:.2f})")
        elif sp >= 0.95:
            rank_only.append(d)
        else:
            short.append(f"{d} ({sp:.3f})")
    run = sum(1 for d in devices if res.get((d, "gcn", 900)))
    return (
        f"**Goal (GCN, 900 cells: Spearman >= 0.95 and >= 95 % within +-10 %).** Met on {len(met)} of {run} "
        f"devices: {', '.join(met) or '-'}. Out of reach of any predictor, because the twins show that the "
        f"noise caps within +-10 % below 95 %, on {len(impossible)}: {', '.join(impossible) or '-'}. "
        f"Spearman >= 0.95 but within +-10 % short of 95 % (reachable by the noise bound) on {len(rank_only)}: "
        f"{', '.join(rank_only) or '-'}. Spearman below 0.95 (noise bound >= 0.95) on {len(short)}: "
        f"{', '.join(short) or '-'}."
    )


def stored_results(store_path: str, experiment: PredictorExperiment) -> dict[str, dict[str, Any]]:
    """``{"device/model/N/seed": record}`` of every finished task in the store (nothing is computed)."""
    if not Path(store_path).is_file():
        return {}
    with Store(store_path, readonly=True) as store:
        return {key(GRID.from_identity(e.candidate)): e.value
                for e in store.evaluations(experiment.fingerprint(GRID)) if e.ok}


def report(items: dict[str, dict[str, Any]], tables: dict[str, LatencyTable], ran_for_s: float | None) -> None:
    res: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    errors: dict[tuple[str, int], str] = {}
    for k, rec in items.items():
        device, model, n, _ = k.split("/")
        if "error" in rec:
            errors[(model, int(n))] = rec["error"]
        else:
            res[(device, model, int(n))].append(rec)
    devices = [d for d in HELP6 if d in tables] + [d for d in tables if d.startswith("local:")]
    devices += [d for d in tables if d not in devices]
    body = [
        "Each predictor is trained on N random cells of a device table and evaluated on **all other** cells of that "
        "table (about 14,400-15,600). Cells: `spearman / within+-10 %` (BRP-NAS definition: truth within 10 % of "
        "the prediction), mean over the seeds that finished (`(k)` = k seeds when fewer than 3). Empty = not run "
        "(budget) ; `n/a` = the predictor cannot be fitted from N cells. Rows in order: the six HELP test devices, "
        "this machine's table (if present), then the rest. Reproduce: "
        "`DEVICEFIT_DATA=/work/shared/data .venv/bin/python benchmarks/latency_predictors.py`.",
        "",
    ]
    data: dict[str, Any] = {
        "published": {"brp_nas_gcn_900_spearman": PUBLISHED_BRP_900, **PUBLISHED},
        # each result without its transfer trunk's details, which repeat for every seed and size of a device
        "results": {k: {f: x for f, x in v.items() if f not in TRUNK_FIELDS} for k, v in items.items()},
        "transfer_trunks": {
            k.split("/")[0]: {f: v[f] for f in TRUNK_FIELDS if f in v}
            for k, v in items.items()
            if "/transfer/" in k and "sources" in v
        },
        "help6": list(HELP6),
    }
    ceilings = {d: measurement_ceiling(t) for d, t in tables.items()}
    data["measurement_ceiling"] = {d: c.as_dict() for d, c in ceilings.items() if c is not None}
    models_by_size = {900: BASELINES, 100: BASELINES, 20: (*BASELINES, "transfer"), 10: ("transfer",)}
    summary: dict[str, Any] = {}
    for n, models in models_by_size.items():
        header = ["device", *models] + (
            ["BRP-NAS GCN 900 (published)", "within+-10 % allowed by the noise (twins)"] if n == 900 else []
        )
        rows = []
        means: dict[str, dict[str, list[float]]] = {m: {"all": [], "help6": [], "help6_w": [], "all_w": []}
                                                    for m in models}
        for d in devices:
            row: list[Any] = [d]
            for m in models:
                recs = res.get((d, m, n), [])
                if not recs:
                    row.append("n/a" if (m, n) in errors else "")
                    continue
                sp = statistics.mean(r["spearman"] for r in recs)
                w10 = statistics.mean(r["within_10pct"] for r in recs)
                row.append(mean_cell(recs))
                means[m]["all"].append(sp)
                means[m]["all_w"].append(w10)
                if d in HELP6:
                    means[m]["help6"].append(sp)
                    means[m]["help6_w"].append(w10)
            if n == 900:
                row.append(f"{PUBLISHED_BRP_900[d]:.3f}" if d in PUBLISHED_BRP_900 else "")
                c = ceilings.get(d)
                row.append(f"{c.twin_agreement:.3f} - {c.upper_bound:.3f}" if c else "")
            if any(v not in ("", d) for v in row[1:]):
                rows.append(row)
        for label, sel, selw in (("mean, HELP six", "help6", "help6_w"), ("mean, all devices run", "all", "all_w")):
            row = [f"**{label}**"]
            for m in models:
                vals, w = means[m][sel], means[m][selw]
                full = sel == "all" or len(vals) == len(HELP6)
                row.append(f"{statistics.mean(vals):.3f} / {statistics.mean(w):.3f} [{len(vals)} dev]"
                           + ("" if full else " (incomplete)") if vals else "")
            if n == 900:
                row += [f"{PUBLISHED['brp_nas_gcn_900_mean']:.3f}" if sel == "help6" else "", ""]
            rows.append(row)
            summary[f"{n}/{sel}"] = {m: {"spearman": statistics.mean(means[m][sel]) if means[m][sel] else None,
                                         "within_10pct": statistics.mean(means[m][selw]) if means[m][selw] else None,
                                         "devices": len(means[m][sel])} for m in models}
        body += [f"## N = {n} training cells", "", markdown_table(header, rows), ""]
        if n == 900:
            body += [goal_check(res, ceilings, devices), ""]
    data["summary"] = summary
    curve_rows = []
    for d in devices:
        for m in CURVE_MODELS:
            cells = [res.get((d, m, n), []) for n in (900, *CURVE_SIZES)]
            if any(cells[1:]):
                c = ceilings.get(d)
                curve_rows.append([d, m, *(mean_cell(r) for r in cells),
                                   f"{c.twin_agreement:.3f} - {c.upper_bound:.3f}" if c else ""])
    if curve_rows:
        body += ["## More training cells (seed 0): data or model?", "",
                 "The same predictors trained on 3,000 and 8,000 cells of the HELP six, this machine's tables and six "
                 "devices whose noise allows 95 % within +-10 %, "
                 "against the noise bracket of each table (within +-10 %). Where the share keeps rising with "
                 "cells, 900 cells, not the model, limit it.", "",
                 markdown_table(["device", "predictor", "900 (mean over seeds)", "3000", "8000",
                                 "noise bracket"], curve_rows), ""]
    # timing
    trows = []
    for m in (*BASELINES, "transfer"):
        for n in (900, 100, 20, 10):
            fs = [r["fit_seconds"] for (d, mm, nn), recs in res.items() if mm == m and nn == n for r in recs]
            if fs:
                trows.append([m, n, len(fs), statistics.median(fs), max(fs)])
    pre = sorted({(tuple(r.get("sources", [])), r.get("pretrain_seconds")) for (_, mm, _), recs in res.items()
                  if mm == "transfer" for r in recs}, key=str)
    body += ["## Training time on this machine (seconds, one thread, shared 2-core box)", "",
             markdown_table(["predictor", "N", "fits", "median fit s", "max fit s"], trows), "",
             f"Transfer trunks pre-trained: {len(pre)}; pre-training seconds: "
             + ", ".join(f"{p[1]:.0f}" for p in pre if p[1] is not None)
             + ". Adapting a trunk to a device (the `transfer` fit time above) is a closed-form ridge fit.", ""]
    if errors:
        body += ["Not applicable: " + "; ".join(f"{m} at N={n}: {e}" for (m, n), e in sorted(errors.items())), ""]
    body += [NOTES, f"Finished results: {len(items)} (device/predictor/N/seed)."
             + (f" This invocation ran {ran_for_s / 60:.0f} min." if ran_for_s else "")]
    write_results(NAME, "Latency predictors: BRP-NAS GCN, baselines and few-shot transfer", "\n".join(body), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--store", default=str(RESULTS_DIR / f"{NAME}.sqlite"))
    ap.add_argument("--executor", choices=EXECUTORS, default="inline",
                    help="inline, a process pool (--workers) or Ray (--workers, --ray-address)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--phases", type=int, default=None, help="run only the first K phases (headline numbers first)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    experiment = PredictorExperiment(args.data_dir)
    tables = experiment._tables
    start = time.perf_counter()
    if not args.report_only:
        executor = make_executor(args.executor, workers=args.workers, address=args.ray_address)
        for title, tasks in phases(tables)[: args.phases]:
            tasks = [t for t in tasks if t[2] < len(tables[t[0]])]
            print(f"== {title}: {len(tasks)} tasks", flush=True)
            evaluate_all(GRID, tasks, [experiment], args.store, executor=executor, description=title)
            report(stored_results(args.store, experiment), tables, time.perf_counter() - start)
    report(stored_results(args.store, experiment), tables, time.perf_counter() - start)


if __name__ == "__main__":
    main()
