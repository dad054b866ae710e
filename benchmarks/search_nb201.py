"""Search strategies on NAS-Bench-201 through the Study: curves, evaluations to the optimum, overhead.

For each data set (CIFAR-10: ``c10valid_valid_200ep`` as the signal, the cifar10-valid setting whose maximum
91.61 is the oracle of the NB201 paper, test accuracy reported; CIFAR-100 and ImageNet16-120: validation
accuracy), every strategy with and without zero-cost warm-up (3000 synflow-scored cells, the zero-cost
paper's setting, arXiv 2101.08134) and move, R runs of 300 evaluations each, each run one
:func:`devicefit.search` (one Study) into the data set's store: mean best accuracy after 10, 25, 50, 100, 200
and 300 evaluations with its spread, median evaluations to come within 0.1 point of the space's optimum,
and the same for one latency-constrained setting per data set (pixel3 at the median latency of its table;
the optimum is then the best cell under that latency).

Everything is resumable: a finished run's trials are in the store and are read back, not rerun; proxy scores
are computed once per cell (``--precompute``: synflow of all 15,625 cells through :func:`evaluate_all` on a
process pool) and then served from the store to every run. Runs go config by config, cheap strategies first,
and the tables are rewritten after each config, so a partial run leaves a consistent partial table.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/search_nb201.py --datasets cifar10 --precompute
    DEVICEFIT_DATA=/work/shared/data python benchmarks/search_nb201.py --datasets cifar10 --runs 100
    DEVICEFIT_DATA=/work/shared/data python benchmarks/search_nb201.py --overhead

``--overhead`` times the strategies' own ask/tell (driven directly on the table, no store) per evaluation,
and BRP's predictor training per iteration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, write_results

import devicefit
from devicefit.data import data_dir, load_nb201_table
from devicefit.spaces import get_space
from devicefit.study import Store, evaluate_all, make_executor
from devicefit.study.search_job import proxy_objective
from devicefit.study.store import StoreError

NAME = "search_nb201"
STORES = RESULTS_DIR / "search_nb201"
POINTS = (10, 25, 50, 100, 200, 300)
BUDGET = 300
#: BRP runs stop at eagle's NB201 budget M = 100 (5 rounds of 20; eagle walks down its final ranking after
#: that): on this CPU its GCN (4 x 600) costs minutes a run, so @200 / @300 stay blank for BRP.
BRP_BUDGET = 100
WARMUP = 3000
WITHIN = 0.1  # points of accuracy
DEVICE = "pixel3"

#: data set -> (objective column, test columns reported for the answer)
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("c10valid_valid_200ep", ("c10valid_test_200ep", "c10_test_200ep")),
    "cifar100": ("c100_val_200ep", ("c100_test_200ep",)),
    "imagenet16": ("in16_val_200ep", ()),
}

#: Published curves (the zero-cost paper's Fig. 4, read off the plot: approximate) and exact references.
REFERENCES = {
    "cifar10": "exact random-search expectation on cifar10-valid: 91.02 at 100, 91.25 at 300 (oracle 91.61)",
    "cifar100": "zero-cost paper (2101.08134, Fig. 4): ~73.2 within ~50 evaluations with warm-up; aging evolution "
                "alone needs ~200",
    "imagenet16": "zero-cost paper (2101.08134, Fig. 4): the same ordering; oracle 47.33",
}


#: BRP rounds beyond eagle's 5 (``brp_variants_nb201.py``: more, smaller rounds got to the optimum sooner)
ROUNDS = (10, 20)


@dataclass(frozen=True)
class Config:
    strategy: str
    warmup: int = 0
    move: bool = False
    constrained: bool = False
    #: strategy options other than the defaults, as (name, value) pairs (``strategy_options`` of the search)
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        parts = [self.strategy] + (["warm-up"] if self.warmup else []) + (["move"] if self.move else [])
        extra = ", ".join(f"{v} rounds" if k == "iterations" else f"{k}={v}" for k, v in self.options)
        return " + ".join(parts) + (f" ({extra})" if extra else "")

    @property
    def job(self) -> str:
        setting = "free" if not self.constrained else "lat-cheapmove" if self.move else "lat"  # moves that respect
        return (f"{self.strategy}-w{self.warmup}-m{int(self.move)}-{setting}"  # the budget (a later fix)
                + "".join(f"-{k}{v}" for k, v in self.options))


def configs(constrained: bool) -> list[Config]:
    """Cheap strategies first, BRP (a GCN trained each iteration) last."""
    plain = [Config(s, constrained=constrained) for s in ("random", "evolution", "reinforce", "optuna")]
    warm = [Config(s, WARMUP, constrained=constrained) for s in ("random", "evolution", "reinforce")]
    move = [Config(s, WARMUP, True, constrained) for s in ("evolution", "reinforce")]
    brp = [Config("brp", constrained=constrained), Config("brp", WARMUP, constrained=constrained),
           *(Config("brp", WARMUP, constrained=constrained, options=(("iterations", r),)) for r in ROUNDS)]
    return plain + warm + move + brp


def store_path(dataset: str) -> Path:
    return STORES / f"{dataset}.sqlite"


def precompute(dataset: str, workers: int) -> dict[str, Any]:
    """Synflow of every NB201 cell on the data set's images, into its store (once; resumable)."""
    space = get_space("nb201")
    table = load_nb201_table(data_dir() / "nb201" / "nb201_accuracy.csv")
    cells = table.cells
    proxy = proxy_objective("synflow", dataset)
    start = time.perf_counter()
    res = evaluate_all(space, cells, [proxy.estimator], store_path(dataset),
                       executor=make_executor("process" if workers > 1 else "inline", workers=workers))
    return {"cells": len(cells), "seconds": time.perf_counter() - start,
            "failed": sum(not e.ok for e in res.evaluations[proxy.estimator.name].values())}


def latency_budget(dataset: str) -> float:
    from devicefit.study.estimators import DeviceTableLatency

    values = list(DeviceTableLatency(DEVICE)._table.values.values())
    return float(np.median(values))


def optimum(dataset: str, limit_ms: float | None) -> float:
    """The best objective value in the space (under the latency limit, if any)."""
    from devicefit.study.estimators import DeviceTableLatency

    table = load_nb201_table(data_dir() / "nb201" / "nb201_accuracy.csv")
    column = table.column(DATASETS[dataset][0])
    if limit_ms is None:
        return float(np.nanmax(column))
    lat = DeviceTableLatency(DEVICE)._table.values
    return float(max(v for c, v in zip(table.cells, column) if c in lat and lat[c] <= limit_ms and np.isfinite(v)))


def curve_of(trials: list[dict[str, Any]]) -> list[float | None]:
    """Best feasible objective after each evaluation (what the study counts: evaluated trials only)."""
    best: float | None = None
    out: list[float | None] = []
    for t in trials:
        if not t["evaluated"]:
            continue
        if t["feasible"] and t["objective"] is not None:
            best = t["objective"] if best is None else max(best, t["objective"])
        out.append(best)
    return out


def stored_trials(dataset: str, job: str) -> list[dict[str, Any]] | None:
    path = store_path(dataset)
    if not path.exists():
        return None
    try:
        with Store(path, readonly=True) as s:
            return s.trials(f"study:{job}") or None
    except StoreError:
        return None


def one_run(dataset: str, config: Config, seed: int, limit_ms: float | None,
            read_only: bool = False) -> dict[str, Any] | None:
    """Seed ``seed`` of ``config``: read back from the store when finished, else run (a run cut short is
    resumed by the same search); None when ``read_only`` and the run is not finished."""
    job = f"{config.job}/seed{seed}"
    budget = BRP_BUDGET if config.strategy == "brp" else BUDGET
    trials = stored_trials(dataset, job)
    finished = trials is not None and sum(t["evaluated"] for t in trials) >= budget
    if not finished and read_only:
        return None
    timings = STORES / f"{dataset}.seconds.json"  # each run's wall time, kept for the runs read back later
    known = json.loads(timings.read_text()) if timings.exists() else {}
    seconds = known.get(job)
    if not finished:
        start = time.perf_counter()
        devicefit.search(objective=DATASETS[dataset][0], strategy=config.strategy, budget=budget,
                         store=store_path(dataset), seed=seed, warmup=config.warmup, move=config.move,
                         device=DEVICE if limit_ms is not None else None, max_latency_ms=limit_ms, name=job,
                         progress=False, strategy_options=dict(config.options) or None)
        if trials is None:  # a resumed run's time would be its remainder only: left untimed
            seconds = time.perf_counter() - start
            known = json.loads(timings.read_text()) if timings.exists() else {}
            timings.write_text(json.dumps({**known, job: seconds}))
        trials = stored_trials(dataset, job)
        assert trials is not None
    curve = curve_of(trials)
    best = max((t for t in trials if t["evaluated"] and t["feasible"] and t["objective"] is not None),
               key=lambda t: t["objective"])
    return {"seed": seed, "curve": curve, "best_candidate": best["candidate"], "seconds": seconds}


def evaluations_to(curve: list[float | None], opt: float) -> int | None:
    """Evaluations until the best so far is within WITHIN of ``opt`` (None: not within the run)."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= opt - WITHIN - 1e-9), None)


def median_evaluations(hits: list[int | None]) -> float | None:
    """Median of ``evaluations_to`` over runs, a run that never got there counting as worse than all (None when
    half the runs did not get there, or there are no runs)."""
    med = statistics.median([float("inf") if h is None else h for h in hits]) if hits else None
    return None if med is None or med == float("inf") else med


def summarize(runs: list[dict[str, Any]], opt: float, tests: dict[str, list[float]]) -> dict[str, Any]:
    at: dict[str, Any] = {}
    for n in POINTS:
        vals = [r["curve"][n - 1] for r in runs if len(r["curve"]) >= n and r["curve"][n - 1] is not None]
        if vals:
            at[str(n)] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
                          "p25": float(np.percentile(vals, 25)), "p75": float(np.percentile(vals, 75))}
    hits = [evaluations_to(r["curve"], opt) for r in runs]
    secs = [r["seconds"] for r in runs if r["seconds"] is not None]  # resumed or older runs: untimed
    return {"runs": len(runs), "timed_runs": len(secs), "at": at,
            "median_evals_to_optimum": median_evaluations(hits),
            "reached_share": sum(h is not None for h in hits) / len(hits) if hits else None,
            "test_of_best": {k: statistics.fmean(v) for k, v in tests.items() if v},
            "mean_run_seconds": statistics.fmean(secs) if secs else None}


def run_dataset(dataset: str, runs: int, brp_runs: int, constrained_runs: int, constrained_brp_runs: int,
                constrained_too: bool, only: list[str] | None, data: dict[str, Any], save: Any,
                read_only: bool = False) -> None:
    table = load_nb201_table(data_dir() / "nb201" / "nb201_accuracy.csv")
    space = get_space("nb201")
    settings = [False, True] if constrained_too else [False]
    for constrained in settings:
        limit = latency_budget(dataset) if constrained else None
        opt = optimum(dataset, limit)
        section = data.setdefault(dataset, {}).setdefault("constrained" if constrained else "free", {
            "latency_limit_ms": limit, "device": DEVICE if constrained else None, "optimum": opt, "configs": {}})
        for config in configs(constrained):
            if only and config.label not in only:
                continue
            if config.strategy == "brp":
                n = constrained_brp_runs if constrained else brp_runs
            else:
                n = constrained_runs if constrained else runs
            if n == 0:
                continue
            done = []
            tests: dict[str, list[float]] = {c: [] for c in DATASETS[dataset][1]}
            for seed in range(n):
                r = one_run(dataset, config, seed, limit, read_only)
                if r is None:
                    break  # read-only: as many runs as the store has
                done.append(r)
                cell = space.from_identity(r["best_candidate"])
                for c in tests:
                    v = table.value(cell, c)
                    if v is not None:
                        tests[c].append(v)
            if not done:
                continue
            section["configs"][config.label] = {**summarize(done, opt, tests), "job": config.job,
                                                "curves_mean": _mean_curve(done)}
            print(dataset, "constrained" if constrained else "free", config.label,
                  json.dumps(section["configs"][config.label]["at"].get("300")), flush=True)
            save()


def _mean_curve(runs: list[dict[str, Any]]) -> list[list[float]]:
    """Per evaluation: mean, 25th and 75th percentile of the best so far (for the plot)."""
    out = []
    for i in range(BUDGET):
        vals = [r["curve"][i] for r in runs if len(r["curve"]) > i and r["curve"][i] is not None]
        if vals:
            out.append([i + 1, *(round(v, 3) for v in (statistics.fmean(vals), float(np.percentile(vals, 25)),
                                                        float(np.percentile(vals, 75))))])
    return out


def exact_random_expectation(dataset: str, points: tuple[int, ...] = (100, 300)) -> dict[str, float]:
    """E[best of n cells drawn uniformly with replacement] of the objective: sum over sorted values."""
    table = load_nb201_table(data_dir() / "nb201" / "nb201_accuracy.csv")
    v = np.sort(table.column(DATASETS[dataset][0])[np.isfinite(table.column(DATASETS[dataset][0]))])
    m = len(v)
    out = {}
    for n in points:
        cdf = (np.arange(1, m + 1) / m) ** n
        prev = np.concatenate([[0.0], cdf[:-1]])
        out[str(n)] = float(np.sum(v * (cdf - prev)))
    return out


# -- strategy overhead ---------------------------------------------------------------------------------------
def overhead(evaluations: int = 300) -> dict[str, Any]:
    """Per-evaluation time of each strategy's ask + tell, driven directly on the CIFAR-10 table (no store),
    BRP's predictor training per iteration listed apart."""
    from devicefit.strategies import Trial, make_strategy

    table = load_nb201_table(data_dir() / "nb201" / "nb201_accuracy.csv")
    space = get_space("nb201")
    column = DATASETS["cifar10"][0]
    rows = {}
    for name in ("random", "evolution", "reinforce", "rl", "optuna", "brp"):
        opts = {"budget": BRP_BUDGET} if name == "brp" else {}  # as the Study gives it: eagle's M
        strat = make_strategy(name, space, seed=0, **opts)
        spent = 0.0
        told = 0
        while told < evaluations:
            t0 = time.perf_counter()
            asked = strat.ask(1)
            t1 = time.perf_counter()
            trials = [Trial(c, table.value(c, column)) for c in asked]
            t2 = time.perf_counter()
            strat.tell(trials)
            spent += (t1 - t0) + (time.perf_counter() - t2)
            told += len(asked)
        train = list(getattr(strat, "train_seconds", []))
        rank = [r["rank_seconds"] for r in getattr(strat, "rounds", [])]
        net = spent - sum(train) - sum(rank)
        rows[name] = {"ms_per_evaluation": 1e3 * net / told, "ms_per_evaluation_total": 1e3 * spent / told,
                      "predictor_train_s": train, "rank_s": rank}
        print(name, rows[name]["ms_per_evaluation"], flush=True)
    rows["optuna TPE alone (no devicefit)"] = _raw_optuna(evaluations, table, column)
    return {"evaluations": evaluations, "strategies": rows}


def _raw_optuna(evaluations: int, table: Any, column: str) -> dict[str, Any]:
    """Optuna's own TPE on the six NB201 edges (ask, tell), the lower bound of the ``optuna`` strategy's time."""
    import optuna

    from devicefit.spaces.nb201 import OPS, NB201Cell

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    spent = 0.0
    for _ in range(evaluations):
        t0 = time.perf_counter()
        trial = study.ask()
        ops = [trial.suggest_categorical(f"edge{i}", list(range(len(OPS)))) for i in range(6)]
        t1 = time.perf_counter()
        value = table.value(NB201Cell(tuple(ops)), column)
        t2 = time.perf_counter()
        study.tell(trial, value if value is not None else float("nan"))
        spent += (t1 - t0) + (time.perf_counter() - t2)
    ms = 1e3 * spent / evaluations
    return {"ms_per_evaluation": ms, "ms_per_evaluation_total": ms, "predictor_train_s": [], "rank_s": []}


# -- output ----------------------------------------------------------------------------------------------
def plot(data: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset, sections in data.items():
        if dataset not in DATASETS:
            continue
        for kind, sec in sections.items():
            fig, ax = plt.subplots(figsize=(7, 4.5))
            ax.set_prop_cycle(color=plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2])
            for label, cfg in sec["configs"].items():
                c = np.array(cfg["curves_mean"])
                if not len(c):
                    continue
                line, = ax.plot(c[:, 0], c[:, 1], label=f"{label} ({cfg['runs']} runs)")
                ax.fill_between(c[:, 0], c[:, 2], c[:, 3], color=line.get_color(), alpha=0.12)
            ax.axhline(sec["optimum"], color="k", lw=0.8, ls="--", label="optimum")
            ax.set_xscale("log")
            ax.set_xlabel("evaluations")
            ax.set_ylabel(f"best {DATASETS[dataset][0]} (%)")
            lo = sec["optimum"] - (3.0 if dataset != "imagenet16" else 6.0)
            ax.set_ylim(lo, sec["optimum"] + 0.3)
            title = f"NB201 {dataset}" + (f", {DEVICE} <= {sec['latency_limit_ms']:.3g} ms" if kind == "constrained"
                                          else "")
            ax.set_title(title + " (mean, 25-75 % band)")
            ax.legend(fontsize=7, loc="lower right")
            fig.tight_layout()
            name = f"{NAME}_{dataset}_{kind}.png"
            fig.savefig(RESULTS_DIR / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def seconds_text(row: dict[str, Any], digits: int = 1) -> str:
    """A row's mean wall time per run, and of how many runs when some are untimed (resumed, or made before
    the timings were kept)."""
    mean, timed = row["mean_run_seconds"], row.get("timed_runs")
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" + (f" ({timed} timed)" if timed is not None and timed < row["runs"] else "")


def markdown(data: dict[str, Any]) -> str:
    body = ["Each run is one `devicefit.search` (a Study on the data set's store); 300 evaluations of distinct cells; "
            f"BRP runs stop at {BRP_BUDGET} evaluations (eagle's NB201 budget M, 5 rounds of 20; *R rounds*: R rounds "
            f"of {BRP_BUDGET} / R), so their @200 and @300 are blank; "
            f"warm-up: {WARMUP} cells scored with synflow (cached once per cell); move: evolution mutates to the "
            "best-scored of the 24 one-edge neighbours (a random one with p = 0.25), reinforce takes the best of 10 "
            "policy samples. Spread: mean ± standard deviation over runs. *to opt.* = median evaluations until the "
            f"best so far is within {WITHIN} point of the optimum (blank: not reached by half the runs).", ""]
    for dataset in DATASETS:
        if dataset not in data:
            continue
        exact = data.get("exact_random", {}).get(dataset)
        body += [f"## {dataset}", "", f"Reference: {REFERENCES[dataset]}."]
        if exact:
            body += ["Exact expectation of random search with replacement on this table: "
                     + ", ".join(f"{v:.2f} at {n}" for n, v in exact.items()) + "."]
        body.append("")
        for kind, sec in data[dataset].items():
            head = ("Unconstrained" if kind == "free" else
                    f"Under {DEVICE} latency <= {sec['latency_limit_ms']:.4g} ms (the table's median)")
            body += [f"### {head}; optimum {sec['optimum']:.2f}", "",
                     f"![{dataset} {kind}]({NAME}_{dataset}_{kind}.png)", ""]
            tests = sorted({k for c in sec["configs"].values() for k in c["test_of_best"]})
            header = ["strategy", "runs", *[f"@{n}" for n in POINTS], "to opt.", *[f"test ({t})" for t in tests],
                      "s/run"]
            rows = []
            for label, c in sec["configs"].items():
                cells = [f"{c['at'][str(n)]['mean']:.2f} ± {c['at'][str(n)]['std']:.2f}" if str(n) in c["at"] else ""
                         for n in POINTS]
                rows.append([label, c["runs"], *cells, c["median_evals_to_optimum"],
                             *[c["test_of_best"].get(t) for t in tests], seconds_text(c)])
            body += [markdown_table(header, rows), ""]
    if "overhead" in data:
        o = data["overhead"]
        body += ["## Strategy overhead", "",
                 f"Each strategy driven directly (ask 1, tell 1) for {o['evaluations']} evaluations on the CIFAR-10 "
                 "table, no store: milliseconds of ask + tell per evaluation, without BRP's predictor training and "
                 "ranking (listed apart). Goal: under 1 ms. The last row is Optuna's TPE driven directly: the "
                 "optuna strategy's time is the sampler's own.", "",
                 markdown_table(["strategy", "ms / evaluation", "ms / evaluation incl. training",
                                 "predictor training s per iteration", "ranking s per iteration"],
                                [[k, r["ms_per_evaluation"], r["ms_per_evaluation_total"],
                                  ", ".join(f"{s:.2f}" for s in r["predictor_train_s"]),
                                  ", ".join(f"{s:.2f}" for s in r["rank_s"])]
                                 for k, r in o["strategies"].items()]), ""]
    return "\n".join(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--brp-runs", type=int, default=10, help="runs of the brp configs (a GCN trained per iteration)")
    ap.add_argument("--constrained-runs", type=int, default=None, help="runs of constrained configs (default: --runs)")
    ap.add_argument("--constrained-brp-runs", type=int, default=3, help="runs of the constrained brp configs")
    ap.add_argument("--no-constrained", action="store_true", help="skip the latency-constrained setting")
    ap.add_argument("--precompute", action="store_true", help="synflow of all cells into each data set's store")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated strategy labels to run (e.g. 'random,brp + warm-up')")
    ap.add_argument("--read-only", action="store_true",
                    help="tabulate the runs in the stores (up to the counts asked), start none")
    args = ap.parse_args()
    STORES.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{NAME}.json"
    data: dict[str, Any] = {}
    if out.exists():
        data = {k: v for k, v in json.loads(out.read_text()).items() if k not in ("machine",)}
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"unknown data set {d!r}; expected {', '.join(DATASETS)}")
    data.setdefault("exact_random", {})
    for d in datasets:
        data["exact_random"][d] = exact_random_expectation(d)

    def save() -> None:  # merged with what other processes (other data sets) wrote meanwhile
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged.pop("machine", None)
        merged.pop("figures", None)
        for d in datasets:
            if d in data:
                merged[d] = data[d]
        merged.setdefault("exact_random", {}).update(data["exact_random"])
        if args.overhead and "overhead" in data:  # this process's own, not the copy it read at its start
            merged["overhead"] = data["overhead"]
        for d in DATASETS:  # curves to 0.001 point (rows written before rounding included): the file stays small
            for sec in merged.get(d, {}).values():
                for cfg in sec["configs"].values():
                    cfg["curves_mean"] = [[int(p[0]), *(round(v, 3) for v in p[1:])] for p in cfg["curves_mean"]]
        figures = plot(merged)
        write_results(NAME, "Search strategies on NAS-Bench-201", markdown(merged), {**merged, "figures": figures},
                      indent=None)

    if args.overhead:
        data["overhead"] = overhead()
        save()
    for d in datasets:
        if args.precompute:
            print(d, "precompute", precompute(d, args.workers), flush=True)
            continue
        for k in ("free", "constrained"):  # recomputed from the stores (runs already done are read back)
            if not args.only:  # --only recomputes its configs and keeps the others' rows
                data.get(d, {}).pop(k, None)
        run_dataset(d, args.runs, args.brp_runs, args.constrained_runs or args.runs, args.constrained_brp_runs,
                    not args.no_constrained,
                    [x.strip() for x in args.only.split(",") if x.strip()] or None, data, save, args.read_only)
    save()


if __name__ == "__main__":
    main()
