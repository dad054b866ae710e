"""BRP-NAS with zero-cost warm-up: which of eagle's settings gets to the optimum in fewer evaluations.

The search benchmark (``search_nb201.py``) runs BRP as eagle does (M = 100 evaluations in 5 rounds, the
predictor pre-trained on 256 of the 3,000 synflow-ranked warm-up cells); its goal, within 0.1 point of the
optimum in under 50 evaluations (median), is missed there. This script runs variants of that configuration,
each a :func:`devicefit.search` with ``strategy_options``, on the same stores (synflow scores cached there):

- ``eagle``: the search benchmark's configuration and runs (``brp-w3000-m0-free``; more seeds run here the same
  way, which the search benchmark reads back);
- ``rank``: round 0 from the proxy ranking itself, the predictor untrained (eagle's ``--foresight_simple``);
- ``pretrain-3000``: the predictor pre-trained on all 3,000 warm-up cells instead of 256;
- ``rounds-10``, ``rounds-20``: 10 rounds of 10 or 20 of 5 instead of 5 of 20 (the predictor retrained 2x or
  4x as often; the search benchmark's ``brp + warm-up (10 rounds)`` and ``(20 rounds)`` rows, the same runs);
- ``batch-8``, ``batch-4``: 8 or 4 candidates per optimiser step instead of 32 (56 or 12 pairs a step, as
  eagle's 64 pairs growing from 12): 4x or 8x the optimiser steps, as many as eagle takes in its early rounds.

Each run goes through the search benchmark's ``one_run`` (study ``<config job>/seed<N>``, wall time kept
beside the store), so a variant's runs are the search benchmark's runs of the same configuration.

Reports, per data set and variant, the evaluations each run needed to come within 0.1 point of the optimum
(validation accuracy, as the search benchmark), their median, and the share of runs that got there in 100.
Resumable: each run is a study in the data set's store, read back when it is there.

    DEVICEFIT_DATA=/work/shared/data python benchmarks/brp_variants_nb201.py --datasets cifar10,cifar100 --runs 10

A run of ``pretrain-3000`` takes about 6 minutes here (100 epochs over 3,000 cells before round 0), the others
0.5-1.5 minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results
from search_nb201 import (
    BRP_BUDGET,
    WARMUP,
    WITHIN,
    Config,
    evaluations_to,
    median_evaluations,
    one_run,
    optimum,
    seconds_text,
)

NAME = "brp_variants_nb201"
#: variant -> the brp strategy options it changes; ``eagle`` is the search benchmark's ``brp + warm-up``
VARIANTS: dict[str, dict[str, Any]] = {
    "eagle": {},
    "rank": {"zero_cost": "rank"},
    "pretrain-3000": {"warmup_points": 3000},
    "rounds-10": {"iterations": 10},
    "rounds-20": {"iterations": 20},
    "batch-8": {"batch_size": 8},
    "batch-4": {"batch_size": 4},
}


def run_variant(dataset: str, variant: str, runs: int, read_only: bool = False) -> dict[str, Any]:
    options = VARIANTS[variant]
    config = Config("brp", WARMUP, options=tuple(options.items()))
    opt = optimum(dataset, None)
    hits: list[int | None] = []
    seconds: list[float] = []
    for seed in range(runs):
        r = one_run(dataset, config, seed, None, read_only)
        if r is None:
            break  # read-only: as many as were made
        if r["seconds"] is not None:
            seconds.append(r["seconds"])
        hits.append(evaluations_to(r["curve"], opt))
        print(dataset, variant, seed, hits[-1], flush=True)
    return {"options": options, "runs": len(hits), "evaluations_to_optimum": hits, "median": median_evaluations(hits),
            "reached_share": sum(h is not None for h in hits) / len(hits) if hits else None,
            "job": config.job, "mean_run_seconds": statistics.fmean(seconds) if seconds else None,
            "timed_runs": len(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--read-only", action="store_true", help="tabulate the runs in the stores, start none")
    args = ap.parse_args()
    data: dict[str, Any] = {"budget": BRP_BUDGET, "warmup": WARMUP, "within": WITHIN, "datasets": {}}
    rows = []
    for d in [x for x in args.datasets.split(",") if x]:
        data["datasets"][d] = {"optimum": optimum(d, None), "variants": {}}
        for v in [x for x in args.variants.split(",") if x]:
            r = run_variant(d, v, args.runs, args.read_only)
            data["datasets"][d]["variants"][v] = r
            if not r["runs"]:
                continue  # not run for this data set (read-only)
            each = ", ".join("-" if h is None else str(h) for h in r["evaluations_to_optimum"])
            rows.append([d, v, r["runs"], r["median"] if r["median"] is not None else "-", r["reached_share"],
                         seconds_text(r, 0), each])
    body = "\n".join([
        f"BRP-NAS with zero-cost warm-up ({WARMUP} synflow-scored cells), {BRP_BUDGET} evaluations per run, "
        f"NAS-Bench-201 validation accuracy; evaluations until the run's best is within {WITHIN} point of the "
        "optimum (\"-\": not within the run). `eagle`: the search benchmark's configuration and runs (M = 100 in "
        "5 rounds, predictor pre-trained on 256 warm-up cells); the others change one setting (see the script).", "",
        markdown_table(["data set", "variant", "runs", "median evaluations", "share reached", "s / run", "each run"],
                       rows),
        ""])
    write_results(NAME, "BRP-NAS variants on NAS-Bench-201", body, data)


if __name__ == "__main__":
    main()
