"""AutoML compression: the per-layer policy of one trained model searched to a cost budget.

    from devicefit.study import search_policy
    found = search_policy(model, torch.zeros(1, 3, 32, 32), method="lowrank", metric="macs", fraction=0.5,
                          search="greedy", store="runs/r56.sqlite", dataset="cifar10")
    found.policy, found.accuracy, found.cost

The space is :class:`~devicefit.compression.policy_space.PolicySpace` (one kept ratio per layer or coupled
group); the budget is an upper bound on one of its exact cost metrics (MACs, params, bytes, non-zero params or
bytes, or energy under a fitted :class:`~devicefit.hardware.BilinearEnergyModel` given as ``energy``) or the
ONNX Runtime latency of the compressed model measured here (``latency_ms``: batch 1, 1 thread, the median of 50
runs, each candidate measured once and cached in the store; a measured budget holds up to the measurement's
noise), checked for every candidate **before** its accuracy is estimated; the objective is
:class:`~devicefit.study.policy_estimators.PolicyAccuracy` (no fine-tuning, BatchNorm re-calibrated, a fixed
slice of the training images, as AMC). Every evaluation goes through the store, so an interrupted search
resumes without evaluating anything twice.

``iterative_compress`` runs rounds of search, compress and fine-tune, each to a tighter budget (the
geometric schedule ``original * fraction ** (k / rounds)``), as the iterative AutoML low-rank compression of
arXiv 2008.02897 does to reach high compression; ``rounds=1`` is the one-shot search it is compared with.

Searches:

- ``greedy``: AIMET's greedy compression-ratio selection (per-layer sensitivity, then one accuracy threshold
  for all layers, searched to the budget): each decision alone at each ratio gives a sensitivity curve; for a
  threshold ``t`` every decision takes its smallest ratio whose accuracy alone is at least ``t``; the cost of
  that policy falls as ``t`` falls, and the answer is the policy of the highest threshold within the budget.
  Its evaluations: the uncompressed model, one per decision and ratio below 1, and the answer (distinct ones).
- ``rl``: the bounded-action policy-gradient agent of AMC / ShrinkML (:mod:`devicefit.strategies.bounded_rl`);
- ``random``, ``evolution``, ``reinforce``, ``optuna`` (TPE by default): the search strategies of
  :mod:`devicefit.strategies` on the policy space, in a :class:`~devicefit.study.Study` with the budget as its
  constraint, for ``evaluations`` accuracy estimates; on an exact budget their samples are repaired to it
  (:meth:`~devicefit.compression.policy_space.PolicySpace.within`, AMC's bounded actions). Aging evolution's
  population is scaled to the budget (``evaluations // 4``, 8 to 64; tournaments of a quarter of it) unless
  ``strategy_options`` say otherwise: Real et al.'s 64 would leave a 60-estimate search all initial population,
  i.e. random search.

A budget that even the smallest policy (every decision at the smallest ratio) exceeds is refused before any
work; one that the uncompressed model meets needs no search and is refused too (nothing to compress to).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .estimators import MeasuredLatency
from .executors import Executor
from .loop import evaluate_all
from .policy_estimators import PolicyAccuracy, PolicyCost
from .study import Constraint, Objective, Study

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The measured budget: ONNX Runtime latency of the compressed model on this machine (batch 1, 1 thread, ms).
LATENCY = "latency_ms"
SEARCHES = ("greedy", "rl", "random", "evolution", "reinforce", "optuna")


@dataclass
class PolicySearchResult:
    """The answer of :func:`search_policy`: the best policy within the budget, its accuracy estimate (training-image
    slice, no fine-tuning) and exact cost; the curve of the best feasible accuracy after each evaluation."""

    space: Any  # PolicySpace
    search: str
    metric: str
    limit: float
    candidate: tuple[float, ...]
    accuracy: float
    cost: dict[str, int]
    evaluations: int
    curve: list[float | None] = field(default_factory=list)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # greedy: decision -> ratio -> acc
    each: list[float | None] = field(default_factory=list)  # each evaluation's estimate (None: over budget, failed)
    uniform: dict[str, Any] = field(default_factory=dict)  # the best uniform ratio within the budget, for reference

    @property
    def policy(self) -> Any:
        return self.space.policy(self.candidate)

    def to_dict(self) -> dict[str, Any]:
        return {"search": self.search, "method": self.space.method, "metric": self.metric, "limit": self.limit,
                "original_cost": self.space.original_cost, "candidate": list(self.candidate),
                "decisions": [list(d) for d in self.space.decisions], "accuracy": self.accuracy, "cost": self.cost,
                "evaluations": self.evaluations, "curve": self.curve, "each": self.each,
                "sensitivity": self.sensitivity,
                "uniform": self.uniform, "policy": json_policy(self.policy)}


def json_policy(policy: Any) -> dict[str, Any]:
    return {n: a.to_dict() for n, a in policy.items()}


def search_policy(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    method: str = "lowrank",
    metric: str = "macs",
    limit: float | None = None,
    fraction: float | None = None,
    search: str = "greedy",
    evaluations: int = 100,
    store: str | os.PathLike[str],
    dataset: str = "cifar10",
    images: int = 1000,
    ratios: Sequence[float] | None = None,
    seed: int = 0,
    model_name: str = "",
    energy: Any = None,
    name: str | None = None,
    strategy_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> PolicySearchResult:
    """Search the per-layer policy of ``model`` within ``metric <= limit`` (or ``<= fraction`` of the original's);
    see the module docstring."""
    from ..compression.policy_space import PolicySpace

    if search not in SEARCHES:
        raise InputError(f"policy search must be one of {', '.join(SEARCHES)}, got {search!r}")
    space = PolicySpace(model, example_input, method, ratios, model_name=model_name, energy=energy)
    if metric == LATENCY:
        cost_est: Any = MeasuredLatency(input_shape=tuple(int(d) for d in example_input.shape[1:]))
    else:
        cost_est = PolicyCost(metric)
        if metric not in space.metrics:
            raise InputError(f"a {method} policy's budget can be one of {', '.join(space.metrics)} or {LATENCY}, "
                             f"got {metric!r}")
    costs = _Costs(space, metric, cost_est, store, executor)
    limit = _limit(costs, metric, limit, fraction)
    smallest = space.uniform(min(space.ratios))
    if costs.of(smallest) > limit:
        raise InputError(f"impossible budget: {metric} <= {limit:,.6g}, but the smallest {method} policy (every "
                         f"layer at ratio {min(space.ratios)}) has {costs.of(smallest):,.6g}")
    if costs.original <= limit:
        raise InputError(f"the uncompressed model already meets {metric} <= {limit:,.6g} "
                         f"({costs.original:,.6g}): nothing to search")
    accuracy = PolicyAccuracy(dataset, images, data_dir=None if data_dir is None else os.fspath(data_dir))
    if search == "greedy":
        result = _greedy(space, accuracy, costs, limit, store, executor, progress)
    else:
        options = dict(strategy_options or {})
        if search == "evolution" and "population" not in options:
            options["population"] = min(64, max(8, evaluations // 4))
            options.setdefault("tournament", max(2, options["population"] // 4))
        named = "".join(f"-{k}{v}" for k, v in sorted(options.items()) if isinstance(v, (int, float, str)))
        searched = space if metric == LATENCY else space.within(metric, limit)  # samples repaired to the budget
        result = _study(searched, accuracy, cost_est, limit, search, evaluations, store, seed, options,
                        executor, progress, name or f"policy-{search}-{seed}{named}")
    if metric == LATENCY:
        result.cost = {**result.cost, LATENCY: costs.of(result.candidate)}
    result.uniform = _best_uniform(space, costs, limit)
    return result


class _Costs:
    """The budget's metric of candidates: exact from the space, or measured here (cached in the store)."""

    def __init__(self, space: Any, metric: str, estimator: Any, store: Any, executor: Any) -> None:
        self.space, self.metric, self.estimator, self.store, self.executor = space, metric, estimator, store, executor
        self.original = self.of(space.uniform(1.0))

    def of(self, candidate: tuple[float, ...]) -> float:
        if self.metric != LATENCY:
            return self.space.cost(candidate)[self.metric]
        res = evaluate_all(self.space, [candidate], [self.estimator], self.store, executor=self.executor,
                           progress=False)
        value = res.value(self.space.identity(candidate), self.estimator.name)
        if value is None:
            raise InputError(f"the latency of {candidate} could not be measured: {res.failures(self.estimator.name)}")
        return float(value["value"])


def _limit(costs: _Costs, metric: str, limit: float | None, fraction: float | None) -> float:
    if (limit is None) == (fraction is None):
        raise InputError("give the budget either as limit= (in the metric's unit) or as fraction= of the original")
    value = limit if limit is not None else fraction
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"the budget must be a positive number, got {value!r}")
    if fraction is not None:
        if fraction > 1:
            raise InputError(f"fraction is the share of the original {metric} kept, in (0, 1]; got {fraction!r}")
        return float(fraction) * costs.original
    return float(value)


def _best_uniform(space: Any, costs: _Costs, limit: float) -> dict[str, Any]:
    """The largest uniform ratio within the budget (what a uniform method would pick)."""
    for r in sorted(space.ratios, reverse=True):
        cost = costs.of(space.uniform(r))
        if cost <= limit:
            return {"ratio": r, "cost": {**space.cost(space.uniform(r)), costs.metric: cost}}
    return {}


def _greedy(space: Any, accuracy: PolicyAccuracy, costs: _Costs, limit: float, store: Any, executor: Any,
            progress: bool) -> PolicySearchResult:
    base = space.uniform(1.0)
    singles: dict[tuple[int, float], tuple[float, ...]] = {}
    for d in range(len(space.decisions)):
        for r in space.ratios:
            if r < 1.0:
                singles[d, r] = (*base[:d], r, *base[d + 1:])
    res = evaluate_all(space, [base, *singles.values()], [accuracy], store, executor=executor, progress=progress,
                       description="sensitivity")
    failed = res.failures(accuracy.name)
    if failed:
        first = next(iter(failed.items()))
        raise InputError(f"{len(failed)} sensitivity evaluations failed, e.g. {first[0]}: {first[1]}")

    def acc(c: tuple[float, ...]) -> float:
        return float(res.value(space.identity(c), accuracy.name)["value"])

    curves = {d: {r: acc(c) for (dd, r), c in singles.items() if dd == d} for d in range(len(space.decisions))}

    def pick(threshold: float) -> tuple[float, ...]:
        return tuple(min([r for r, a in curves[d].items() if a >= threshold] + [1.0])
                     for d in range(len(space.decisions)))

    thresholds = sorted({a for curve in curves.values() for a in curve.values()}, reverse=True)
    chosen = next((c for t in thresholds if costs.of(c := pick(t)) <= limit), None)
    if chosen is None:  # the lowest threshold takes every decision's most accurate... fall back to the smallest
        chosen = space.uniform(min(space.ratios))
    final = evaluate_all(space, [chosen], [accuracy], store, executor=executor, progress=False)
    value = final.value(space.identity(chosen), accuracy.name)
    if value is None:
        raise InputError(f"the chosen policy could not be evaluated: {final.failures(accuracy.name)}")
    sensitivity = {space.decisions[d][0]: {str(r): a for r, a in sorted(curve.items())} for d, curve in curves.items()}
    return PolicySearchResult(space, "greedy", costs.metric, limit, chosen, float(value["value"]), space.cost(chosen),
                              len({base, chosen, *singles.values()}), [], sensitivity)


def _study(space: Any, accuracy: PolicyAccuracy, cost: Any, limit: float, search: str, evaluations: int,
           store: Any, seed: int, options: dict[str, Any], executor: Any, progress: bool, name: str
           ) -> PolicySearchResult:
    from ..strategies import make_strategy

    strategy = make_strategy(search, space, seed, **options)
    study = Study(space, Objective(accuracy), strategy, evaluations, store, constraints=[Constraint(cost, upper=limit)],
                  executor=executor, seed=seed, name=name, progress=progress,
                  input_shape=tuple(space.example_input.shape[1:]))
    result = study.run()
    if result.best is None:
        raise InputError(f"{search} found no policy within {cost.name} <= {limit:,.6g} in {evaluations} evaluations")
    best = space.from_identity(result.best.candidate)
    each = [t.objective if t.feasible else None for t in result.trials if t.evaluated]
    return PolicySearchResult(space, search, getattr(cost, "metric", LATENCY), limit, best,
                              float(result.best.objective), space.cost(best), result.evaluations,
                              list(result.best_so_far), each=each)


@dataclass
class IterativeResult:
    """The model after the last round (compressed, fine-tuned) and what each round searched and reached."""

    model: Any
    rounds: list[dict[str, Any]]


def iterative_compress(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    rounds: int,
    fraction: float,
    method: str = "lowrank",
    metric: str = "params",
    search: str = "greedy",
    evaluations: int = 100,
    store: str | os.PathLike[str],
    dataset: str = "cifar10",
    images: int = 1000,
    recovery: Any = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> IterativeResult:
    """``rounds`` rounds of :func:`search_policy` to ``original * fraction ** (k / rounds)``, each followed by
    BatchNorm re-calibration and recovery training (``recovery``: a :class:`~devicefit.compression.FinetuneConfig`,
    distilling from the original when it says so) of the compressed model, which the next round searches. Low rank:
    before each later round the factorised layers are multiplied back (:func:`~devicefit.compression.lowrank.
    merge_factorized`), so the round chooses each layer's rank afresh on its fine-tuned weights (keeping a rank
    is exact) rather than factorising the factors into chains of four. With ``checkpoint_dir`` each finished round
    is saved (history and weights) and a rerun continues after it."""
    import json
    from pathlib import Path

    import torch

    from .._files import torch_save_atomic, write_atomic
    from ..compression import apply_policy, compressed_cost, finetune, recalibrate_batchnorm, replay_history
    from ..compression.lowrank import merge_factorized
    from ..models import load_images

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {rounds!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InputError(f"fraction (of the original {metric} kept at the end) must be in (0, 1), got {fraction!r}")
    original = model.eval()
    start = compressed_cost(original, example_input)[metric]
    train = load_images(dataset, "train" if dataset == "cifar10" else "train8k", data_dir)
    calibration = list(train.subset(640).batches(64))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    current, done = original, []
    for k in range(1, rounds + 1):
        limit = start * fraction ** (k / rounds)
        saved = None if folder is None else folder / f"round{k}.json"
        if k > 1 and method == "lowrank":  # truncate each layer afresh, not its factors (see merge_factorized)
            current = merge_factorized(current)
        if saved is not None and saved.exists():
            record = json.loads(saved.read_text())
            current = replay_history(current, record["history"], example_input)
            current.load_state_dict(torch.load(folder / f"round{k}.pt", weights_only=True))  # type: ignore[operator]
            done.append(record["round"])
            continue
        if compressed_cost(current, example_input)[metric] <= limit:
            history: list[dict[str, Any]] = []
            round_info = {"round": k, "limit": limit, "search": None}
        else:
            found = search_policy(current, example_input, method=method, metric=metric, limit=limit, search=search,
                                  evaluations=evaluations, store=store, dataset=dataset, images=images, seed=seed,
                                  name=f"iterative-{search}-{seed}-round{k}-of-{rounds}", data_dir=data_dir,
                                  progress=progress)
            result = apply_policy(current, found.policy, example_input)
            current, history = result.model, result.history
            recalibrate_batchnorm(current, calibration)
            if recovery is not None:
                finetune(current, train, recovery, teacher=original if recovery.distill else None,
                             progress=progress, checkpoint=None if folder is None else folder / f"round{k}.ckpt")
            round_info = {"round": k, "limit": limit, "search": found.to_dict()}
        current.eval()
        round_info["cost"] = {key: int(v) for key, v in compressed_cost(current, example_input).items()
                              if key in ("macs", "params", "nonzero_params", "bytes")}
        done.append(round_info)
        if folder is not None:
            torch_save_atomic(current.state_dict(), folder / f"round{k}.pt")
            write_atomic(folder / f"round{k}.json", json.dumps({"round": round_info, "history": history}).encode())
    return IterativeResult(current, done)
