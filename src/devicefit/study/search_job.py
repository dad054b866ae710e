"""``search(...)``: fit a network to a device — the most accurate NB201 cell under a latency or size budget.

What ``devicefit search`` runs, one call in Python::

    import devicefit
    result = devicefit.search(objective="c10_val_200ep", strategy="evolution", budget=100,
                              device="pixel3", max_latency_ms=12.0, warmup=3000, move=True,
                              store="runs/pixel3.sqlite")
    result.best_candidate, result.best.values, result.pareto(), result.model(), result.export_onnx("best.onnx")

Every setting is checked before any work: the objective column, the device, the strategy and its options,
a constraint no cell can meet (below the fastest cell of the device's table), a budget that cannot cover
the strategy's initial population. The latency constraint is checked before the objective is evaluated
(cheap first); with ``latency_from="predictor"`` a saved predictor judges candidates during the search and
the device table re-checks the answer at the end, and the result says how many predicted-feasible
candidates were truly feasible; the answer is then the best candidate the table confirms (candidates checked
in order of objective, as one measures the top few on the device), so it always meets the true budget.

``objective`` may also be a zero-cost proxy (``synflow``): the search then needs no accuracy table, and with
``proxy_images="noise"`` no data directory at all. ``device="local"`` is this machine: each candidate's latency
is measured here (ONNX Runtime, fp32, batch 1, 1 thread) and cached in the store.

``multi_objective=True`` adds the device latency as a second objective (minimised): every evaluated cell's
latency is recorded, strategies that search several objectives (``optuna`` with NSGA-II or TPE) search both,
and the result's Pareto front and hypervolume trade accuracy against it. The zero-cost proxy scores of the
warm-up are computed with their own seed (``proxy_seed``, default 0), not the search's, so every run of a
benchmark shares one cached score per cell.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .estimators import (
    BenchmarkAccuracy,
    CountedCost,
    DeviceTableLatency,
    MeasuredLatency,
    PredictedCost,
    ZeroCostProxies,
)
from .executors import make_executor
from .study import Constraint, Objective, SearchResult, Study

#: The proxy data set for an objective column: proxies are computed on the objective's images.
_DATASET_OF_PREFIX = {"c10": "cifar10", "c100": "cifar100", "in16": "imagenet16"}
#: The ``device`` name of this machine: latency measured here with ONNX Runtime (fp32, batch 1, 1 thread).
LOCAL = "local"
#: Classes and input shape of each data set's networks.
_TASK = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)), "imagenet16": (120, (3, 16, 16))}


def proxy_dataset(column: str) -> str:
    prefix = column.split("_", 1)[0].replace("valid", "")
    if prefix not in _DATASET_OF_PREFIX:
        raise InputError(f"cannot tell the data set of objective column {column!r} (expected c10*, c100* or in16*)")
    return _DATASET_OF_PREFIX[prefix]


def proxy_objective(proxy: str, dataset: str = "cifar10", seed: int = 0, images: str = "npz",
                    data_dir: str | os.PathLike[str] | None = None) -> Objective:
    """A zero-cost proxy's score (higher is better) on ``dataset``'s images: the score of warm-up and move, or
    the objective itself when there is no accuracy table (``images="noise"`` without the data directory)."""
    est = ZeroCostProxies((proxy,), dataset=dataset, seed=seed, images=images,
                          data_dir=None if data_dir is None else str(data_dir))
    return Objective(est, field=f"scores.{proxy}")


def search(
    space: str = "nb201",
    *,
    objective: str = "c10_val_200ep",
    strategy: str = "evolution",
    budget: int = 100,
    store: str | os.PathLike[str],
    seed: int = 0,
    device: str | None = None,
    max_latency_ms: float | None = None,
    latency_from: str = "table",
    predictor: str | os.PathLike[str] | None = None,
    max_macs: float | None = None,
    max_params: float | None = None,
    warmup: int = 0,
    proxy: str = "synflow",
    move: bool = False,
    proxy_seed: int = 0,
    proxy_images: str = "npz",
    multi_objective: bool = False,
    executor: str = "inline",
    workers: int = 2,
    ray_address: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    strategy_options: dict[str, Any] | None = None,
    name: str = "search",
    progress: bool = True,
) -> SearchResult:
    """Search ``space`` for the best ``objective`` (an NB201 accuracy column) under the given constraints.

    ``latency_from``: ``table`` (the device's measured table), or ``predictor`` (a saved predictor file,
    ``predictor=PATH``, checked against the table at the end). ``warmup``/``proxy``/``move``: zero-cost
    warm-up and move (arXiv 2101.08134). See the module docstring.
    """
    from ..spaces import get_space
    from ..strategies import make_strategy

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    from ..proxies import PROXIES

    sp = get_space(space)
    if objective in PROXIES:  # no accuracy table: search on a proxy's score
        dataset = "cifar10"
        goal = proxy_objective(objective, dataset, proxy_seed, proxy_images, data_dir)
    else:
        dataset = proxy_dataset(objective)
        goal = Objective(BenchmarkAccuracy(objective, data_dir))
    constraints: list[Constraint] = []
    if device is None and max_latency_ms is not None:
        raise InputError("a latency budget (--max-latency) needs --device")
    if device is None and multi_objective:
        raise InputError("multi-objective search trades accuracy against a device's latency: give --device")
    if device is not None and max_latency_ms is None and not multi_objective:
        raise InputError("--device needs a latency budget (--max-latency) or multi-objective search")
    secondary: list[Objective] = []
    if device == LOCAL:  # measured here: nothing to pre-check, nothing to re-check
        if latency_from != "table":
            raise InputError(f"latency on device {LOCAL!r} is measured on this machine; latency_from does not apply")
        local = MeasuredLatency("onnxruntime")
        if max_latency_ms is not None:
            constraints.append(Constraint(local, upper=max_latency_ms))
        if multi_objective:
            secondary.append(Objective(local, maximize=False))
        device = None
    elif device is not None:
        truth = DeviceTableLatency(device, data_dir)
        if multi_objective:
            secondary.append(Objective(truth, maximize=False))
    if device is not None and max_latency_ms is not None:
        latencies = truth._table.values
        meeting = len({sp.key(c) for c, v in latencies.items() if v <= max_latency_ms})  # distinct candidates
        if meeting < budget:
            raise InputError(f"only {meeting} distinct cells of {device} meet --max-latency {max_latency_ms} ms (its "
                             f"fastest takes {min(latencies.values()):.4g} ms), fewer than the budget of {budget} "
                             "evaluations")
        if latency_from == "table":
            constraints.append(Constraint(truth, upper=max_latency_ms))
        elif latency_from == "predictor":
            if predictor is None:
                raise InputError("latency_from='predictor' needs a saved predictor file (--predictor PATH)")
            est = PredictedCost(str(predictor))
            if est.device != device:
                raise InputError(f"predictor {str(predictor)!r} is for device {est.device!r}, not {device!r}")
            constraints.append(Constraint(est, upper=max_latency_ms, truth=truth))
        else:
            raise InputError(f"latency_from must be 'table' or 'predictor', got {latency_from!r}")
    if max_macs is not None or max_params is not None:
        cost = CountedCost()
        if max_macs is not None:
            constraints.append(Constraint(cost, upper=float(max_macs), field="macs"))
        if max_params is not None:
            constraints.append(Constraint(cost, upper=float(max_params), field="params"))
    options = dict(strategy_options or {})
    if multi_objective and strategy == "optuna":
        options.setdefault("n_objectives", 2)
    if move and strategy == "evolution":
        options.setdefault("move", True)
    if strategy == "brp":
        # the paper's M (rounds of M // iterations): eagle's 100 for NB201, or the whole budget when smaller
        from ..strategies.brp import EAGLE_BUDGET

        options.setdefault("budget", min(budget, EAGLE_BUDGET))
    strat = make_strategy(strategy, sp, seed=seed, **options)
    initial = getattr(strat, "population_size", 0)
    if budget < initial:
        raise InputError(f"budget {budget} is below the {initial} evaluations that {strategy}'s initial population "
                         "takes; give a larger --budget or a smaller population")
    if (warmup or move) and strategy not in ("random", "evolution", "reinforce", "brp"):
        raise InputError(f"zero-cost warm-up and move are defined for random, evolution, reinforce and brp, "
                         f"not {strategy}")
    if move and strategy == "random":
        raise InputError("zero-cost move needs a strategy with moves (evolution, reinforce); random has none")
    zc = proxy_objective(proxy, dataset, proxy_seed, proxy_images, data_dir) if (warmup or move) else None
    runner = make_executor(executor, workers=workers, address=ray_address)
    num_classes, input_shape = _TASK[dataset]
    study = Study(sp, goal, strat, budget, Path(store), constraints=constraints, secondary=secondary,
                  executor=runner, warmup=warmup, proxy=zc, move=move, seed=seed, name=name, progress=progress,
                  build_options={"num_classes": num_classes}, input_shape=input_shape)
    result = study.run()
    _add_truth(result, constraints, Path(store), runner)
    test_column = _test_column(objective, goal) if isinstance(goal.estimator, BenchmarkAccuracy) else None
    if test_column and result.best is not None:
        result.extra["best_test"] = {test_column: goal.estimator._table.value(result.best_candidate, test_column)}
    return result


def _test_column(objective: str, goal: Objective) -> str | None:
    """The test-accuracy column that goes with a validation objective (reported, never searched on)."""
    for a, b in (("_val_", "_test_"), ("valid_valid", "valid_test")):
        if a in objective and objective.replace(a, b) in goal.estimator._table.columns:
            return objective.replace(a, b)
    return None


def _add_truth(result: SearchResult, constraints: list[Constraint], store: Path, runner: Any) -> None:
    """Re-check predicted constraints against their truth on every candidate judged feasible."""
    from .loop import evaluate_all

    checked = [c for c in constraints if c.truth is not None]
    if not checked:
        return
    feasible = [t for t in result.trials if t.evaluated and t.feasible]
    cands = [result.space.from_identity(t.candidate) for t in feasible]
    res = evaluate_all(result.space, cands, [c.truth for c in checked], store, executor=runner, progress=False)
    report = {}
    truly_ok = {t.candidate for t in feasible}
    for c in checked:
        assert c.truth is not None
        truth = {t.candidate: res.value(t.candidate, c.truth.name) for t in feasible}
        ok = [i for i, v in truth.items() if c.holds(v)]
        truly_ok &= set(ok)
        over = [100.0 * (float(v["value"]) / c.upper - 1.0) for v in truth.values()
                if v is not None and c.upper is not None and not c.holds(v)]
        report[c.name] = {
            "truth": c.truth.name, "predicted_feasible": len(feasible), "truly_feasible": len(ok),
            "share_truly_feasible": len(ok) / len(feasible) if feasible else None,
            "worst_violation_pct": max(over) if over else 0.0,
            "best_predicted_truly_feasible": None if result.best is None else result.best.candidate in ok,
        }
    # The answer is the best candidate that the truth confirms (SearchResult.confirmed_best).
    best, checked_in_order = result.confirmed_best(truly_ok.__contains__)
    report["answer"] = {"predicted_best": None if result.best is None else result.best.candidate,
                        "checked_in_order": checked_in_order, "confirmed": best is not None}
    result.best = best
    result.extra["feasibility"] = report
