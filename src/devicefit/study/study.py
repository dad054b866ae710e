"""``Study``: a search of a space for the best candidate under constraints, on the evaluation loop.

    study = Study(space, Objective(BenchmarkAccuracy("c10_val_200ep")), make_strategy("evolution", space, seed=0),
                  budget=100, store="runs/search.sqlite",
                  constraints=[Constraint(DeviceTableLatency("pixel3"), upper=12.0)])
    result = study.run()

One step: the strategy asks for candidates; the cheap constraints (a table or predicted latency, counted
MACs) are checked first and a candidate that fails them is told back as infeasible without spending an
evaluation; the others are evaluated on the objective (and any secondary objectives) through
:func:`evaluate_all`; the strategy is told the results. The budget counts objective evaluations of
distinct candidates. Every value goes through the store, so a study killed at any point and run again
replays its asks and tells from the store (strategies are deterministic given their seed and what they
are told) and goes on exactly where it stopped: same candidates, same result.

Zero-cost warm-up and move (arXiv 2101.08134): ``warmup=N`` scores N random candidates with the
``proxy`` estimator (cached in the store like any value) and hands them to the strategy, less those that a
cheap constraint (a table, a predictor, a count: :data:`CHEAP_KINDS`) rejects, so that a latency budget's
warm-up ranks the cells that meet it; ``move=True`` gives the strategy a scorer for its local moves, which
scores what such a constraint rejects lowest.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._files import write_atomic
from ..errors import InputError
from ..spaces.base import Space
from .estimator import Estimator
from .executors import Executor, InlineExecutor
from .loop import evaluate_all
from .store import Store

#: How many infeasible candidates (per unit of budget) a study tolerates before calling the constraint impossible.
MAX_REJECTIONS_PER_EVALUATION = 200
#: Estimator kinds cheap enough to judge every warm-up cell by (a lookup, a prediction or a count).
CHEAP_KINDS = ("table", "device-table", "predictor", "count")


def _field(value: Any, path: str) -> float | None:
    """The number at ``path`` (dotted, e.g. ``scores.synflow``) of an estimator's value, or None."""
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else float(value)


@dataclass(frozen=True)
class Objective:
    """What to optimise: one numeric ``field`` of an estimator's value, maximised or minimised."""

    estimator: Estimator
    field: str = "value"
    maximize: bool = True

    @property
    def name(self) -> str:
        return self.estimator.name if self.field == "value" else f"{self.estimator.name}.{self.field}"

    def of(self, value: Any) -> float | None:
        return _field(value, self.field)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "maximize": self.maximize, "kind": self.estimator.kind,
                "settings": self.estimator.settings()}


@dataclass(frozen=True)
class Constraint:
    """``lower <= field of estimator's value <= upper``. Checked before the objective is evaluated.

    ``truth``: the estimator that re-checks the answer when this one predicts (a saved predictor's latency
    is checked against the device table or a measurement at the end).
    """

    estimator: Estimator
    upper: float | None = None
    lower: float | None = None
    field: str = "value"
    truth: Estimator | None = None

    def __post_init__(self) -> None:
        if self.upper is None and self.lower is None:
            raise InputError(f"constraint on {self.estimator.name} needs an upper or a lower bound")
        if self.upper is not None and self.lower is not None and self.lower > self.upper:
            raise InputError(f"constraint on {self.estimator.name}: lower bound {self.lower} > upper {self.upper}")

    @property
    def name(self) -> str:
        return self.estimator.name if self.field == "value" else f"{self.estimator.name}.{self.field}"

    def holds(self, value: Any) -> bool:
        v = _field(value, self.field)
        if v is None:
            return False
        return (self.upper is None or v <= self.upper) and (self.lower is None or v >= self.lower)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "upper": self.upper, "lower": self.lower, "kind": self.estimator.kind,
                "settings": self.estimator.settings(),
                "truth": None if self.truth is None else {"kind": self.truth.kind, "name": self.truth.name}}


@dataclass(frozen=True)
class StoredObjective:
    """An objective as a stored study describes it (its name and direction), without its estimator."""

    name: str
    maximize: bool = True


@dataclass
class TrialRecord:
    """One step of a study: a candidate, its objective and costs, and whether it met the constraints."""

    number: int
    candidate: str  # identity
    feasible: bool
    objective: float | None
    values: dict[str, float | None] = field(default_factory=dict)  # objectives and constraint fields by name
    evaluated: bool = True  # False: rejected by a cheap constraint, or a repeat of an evaluated key
    repeat_of: int | None = None  # the earlier trial of the same key (equal or equivalent candidate)


@dataclass
class SearchResult:
    """What a study found: every trial, the best feasible candidate, and the curve of the best so far."""

    space: Space
    objective: Objective | StoredObjective
    trials: list[TrialRecord]
    evaluations: int
    rejected: int
    best: TrialRecord | None
    best_so_far: list[float | None]  # after each objective evaluation
    settings: dict[str, Any]
    seconds: float
    warmup_scored: int = 0
    #: what the caller adds after the run: the truth re-check of predicted constraints, test accuracy, ...
    extra: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments of ``space.build`` for the objective's task (e.g. ``{"num_classes": 100}``), and the
    #: input shape of one sample, for :meth:`model` and :meth:`export_onnx` (the study's ``settings["model"]``,
    #: so a result read back from its store has them too)
    build_options: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = (3, 32, 32)

    @property
    def best_candidate(self) -> Any:
        return None if self.best is None else self.space.from_identity(self.best.candidate)

    def confirmed_best(self, confirmed: Callable[[str], bool]) -> tuple[TrialRecord | None, int | None]:
        """The answer under a predicted constraint: the feasible trials in order of objective, as one would
        measure the top candidates on the device, and the first whose candidate (identity) ``confirmed``
        accepts; with how many were checked to reach it. ``(None, None)`` when none is confirmed."""
        sign = 1.0 if self.objective.maximize else -1.0
        ranked = sorted((t for t in self.trials if t.evaluated and t.feasible and t.objective is not None),
                        key=lambda t: -sign * float(t.objective))  # type: ignore[arg-type]
        for i, t in enumerate(ranked):
            if confirmed(t.candidate):
                return t, i + 1
        return None, None

    @classmethod
    def from_trials(cls, space: Space, objective: Objective | StoredObjective, trials: list[TrialRecord],
                    settings: dict[str, Any], seconds: float = 0.0) -> SearchResult:
        """The result of a study's trials: counts, the best feasible trial and the curve of the best so far."""
        sign = 1.0 if objective.maximize else -1.0
        best_so_far: list[float | None] = []
        top: TrialRecord | None = None
        for t in trials:
            if not t.evaluated:
                continue
            if t.feasible and t.objective is not None and (top is None or sign * t.objective > sign * top.objective):
                top = t
            best_so_far.append(None if top is None else top.objective)
        evaluations = sum(t.evaluated for t in trials)
        model = settings.get("model") or {}
        return cls(space, objective, trials, evaluations, len(trials) - evaluations, top, best_so_far, settings,
                   seconds, int(settings.get("warmup") or 0), build_options=dict(model.get("build_options") or {}),
                   input_shape=tuple(model.get("input_shape") or (3, 32, 32)))

    @classmethod
    def from_store(cls, store: str | os.PathLike[str], name: str = "search") -> SearchResult:
        """A finished study read back from its store (no estimator is run): what a report needs."""
        from ..spaces import get_space

        with Store(store, readonly=True) as db:
            settings = db.claims(f"study:{name}")
            records = db.trials(f"study:{name}")
            studies = [s.removeprefix("study:") for s in db.studies()]
        if not settings or not records:
            raise InputError(f"store {str(store)!r} has no finished study {name!r}; it has: "
                             f"{', '.join(studies) if studies else 'none'}")
        sp = dict(settings["space"])
        space = get_space(sp.pop("space"), **sp)
        goal = StoredObjective(settings["objective"]["name"], bool(settings["objective"]["maximize"]))
        return cls.from_trials(space, goal, [TrialRecord(**r) for r in records], settings)

    # -- several objectives -------------------------------------------------------------------------------
    def cost_name(self) -> str | None:
        """The cost that the Pareto front trades the objective against: the first secondary objective that
        is minimised, else the first constraint with an upper bound (latency, MACs, params), else None."""
        for o in self.settings.get("secondary", []):
            if not o["maximize"]:
                return str(o["name"])
        for c in self.settings.get("constraints", []):
            if c["upper"] is not None:
                return str(c["name"])
        return None

    def _points(self, cost: str | None) -> tuple[str, list[TrialRecord]]:
        name = cost or self.cost_name()
        if name is None:
            raise InputError("this study has no cost to trade against (no minimised secondary objective and no "
                             "upper-bounded constraint): name one with cost=")
        pts = [t for t in self.trials if t.evaluated and t.feasible and t.objective is not None
               and t.values.get(name) is not None]
        if not pts and not any(name in t.values for t in self.trials):
            raise InputError(f"no trial has a value for cost {name!r}; the study recorded "
                             f"{sorted({k for t in self.trials for k in t.values})}")
        return name, pts

    def pareto(self, cost: str | None = None) -> list[TrialRecord]:
        """The evaluated feasible trials on the Pareto front of the objective against ``cost`` (by default
        :meth:`cost_name`), by increasing cost: nothing else evaluated is both cheaper and better."""
        from .pareto import pareto_front

        name, pts = self._points(cost)
        if not pts:
            return []
        sign = 1.0 if self.objective.maximize else -1.0
        idx = pareto_front([t.values[name] for t in pts], [sign * float(t.objective) for t in pts])  # type: ignore[arg-type]
        return [pts[i] for i in idx]

    def hypervolume(self, cost: str | None = None, reference: tuple[float, float] | None = None) -> float:
        """Area of the (cost, objective) plane dominated by the front and bounded by ``reference`` =
        (cost, objective). Default reference: the cost constraint's upper bound (else the largest evaluated
        cost) and the worst evaluated objective, so it measures the front inside the budget; give an explicit
        reference to compare studies."""
        from .pareto import hypervolume_2d

        name, pts = self._points(cost)
        if not pts:
            return 0.0
        sign = 1.0 if self.objective.maximize else -1.0
        costs = [float(t.values[name]) for t in pts]  # type: ignore[arg-type]
        values = [sign * float(t.objective) for t in pts]  # type: ignore[arg-type]
        if reference is None:
            upper = next((c["upper"] for c in self.settings.get("constraints", [])
                          if c["name"] == name and c["upper"] is not None), None)
            reference = (float(upper) if upper is not None else max(costs), sign * min(values))
        return hypervolume_2d(costs, values, reference[0], sign * reference[1])

    # -- the answer as a model --------------------------------------------------------------------------
    def model(self, seed: int = 0) -> Any:
        """The best feasible candidate built as an ``nn.Module``, initialised from ``seed`` (untrained: train
        it, or take its accuracy from the table). The global random state is left as it was."""
        import torch

        if self.best is None:
            raise InputError("the study found no feasible candidate to build")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.space.build(self.best_candidate, **self.build_options)

    def export_onnx(self, path: str | os.PathLike[str], model: Any = None) -> int:
        """Write ``model`` (default :meth:`model`, seed 0) as ONNX (batch 1, :attr:`input_shape`) to ``path``,
        atomically; its size in bytes."""
        import torch

        from ..hardware.measure import export_onnx

        net = self.model() if model is None else model
        data = export_onnx(net.eval(), torch.zeros(1, *self.input_shape))
        write_atomic(path, data)
        return len(data)

    def best_at(self, points: Sequence[int] = (10, 25, 50, 100, 200, 300)) -> dict[int, float | None]:
        """The best objective after each of ``points`` evaluations (those within the run)."""
        return {n: self.best_so_far[n - 1] for n in points if n <= len(self.best_so_far)}

    def summary(self) -> dict[str, Any]:
        """Plain JSON: settings, counts, the best candidate and its values, the curve, and the extras."""
        best = None if self.best is None else {
            "candidate": self.space.to_json(self.best_candidate), "values": self.best.values,
            "trial": self.best.number}
        front: dict[str, Any] | None = None
        cost = self.cost_name()
        if cost is not None and any(cost in t.values for t in self.trials):
            front = {"cost": cost, "hypervolume": self.hypervolume(cost),
                     "points": [{"candidate": self.space.to_json(self.space.from_identity(t.candidate)),
                                 "objective": t.objective, "cost": t.values[cost], "trial": t.number}
                                for t in self.pareto(cost)]}
        return {"strategy": self.settings["strategy"]["name"], "objective": self.objective.name,
                "evaluations": self.evaluations, "rejected": self.rejected, "warmup_scored": self.warmup_scored,
                "seconds": self.seconds, "best": best, "best_at": self.best_at(), "pareto": front,
                "settings": self.settings, **self.extra}


class Study:
    """A space, an objective, constraints, a strategy and a budget, run on the store and an executor."""

    def __init__(
        self,
        space: Space,
        objective: Objective,
        strategy: Any,
        budget: int,
        store: str | os.PathLike[str],
        *,
        constraints: Sequence[Constraint] = (),
        secondary: Sequence[Objective] = (),
        executor: Executor | None = None,
        warmup: int = 0,
        proxy: Objective | None = None,
        move: bool = False,
        batch: int = 1,
        seed: int = 0,
        name: str = "search",
        max_seconds: float | None = None,
        progress: bool = True,
        build_options: dict[str, Any] | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InputError(f"budget must be a positive number of evaluations, got {budget!r}")
        if warmup < 0:
            raise InputError(f"warm-up size must be >= 0, got {warmup}")
        if (warmup or move) and proxy is None:
            raise InputError("zero-cost warm-up and move need a proxy to score candidates with")
        if batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        for what, names in (("objectives", [o.name for o in (objective, *secondary)]),
                            ("constraints", [c.name for c in constraints])):
            if len(set(names)) != len(names):
                raise InputError(f"{what} must have distinct names, got {names}")
        for o in (objective, *secondary):  # an objective may also be constrained, if it is the same number
            for c in constraints:
                if o.name == c.name and o.estimator.fingerprint(space) != c.estimator.fingerprint(space):
                    raise InputError(f"objective and constraint {o.name!r} name different estimators")
        self.space, self.objective, self.strategy, self.budget = space, objective, strategy, budget
        self.store_path, self.constraints, self.secondary = store, list(constraints), list(secondary)
        self.executor = executor or InlineExecutor()
        self.warmup, self.proxy, self.move, self.batch = warmup, proxy, move, batch
        self.seed, self.name, self.max_seconds, self.progress = seed, name, max_seconds, progress
        self.build_options = dict(build_options or {})
        self.input_shape = tuple(int(d) for d in input_shape)

    def settings(self) -> dict[str, Any]:
        """What the study's result depends on (claimed in the store: a rerun with others is refused)."""
        return {
            "space": self.space.settings(), "objective": self.objective.describe(),
            "secondary": [o.describe() for o in self.secondary],
            "constraints": [c.describe() for c in self.constraints],
            "strategy": {"name": self.strategy.name, **getattr(self.strategy, "options", {})},
            "seed": self.seed, "warmup": self.warmup, "move": self.move, "batch": self.batch,
            "proxy": None if self.proxy is None else self.proxy.describe(),
            "model": {"build_options": self.build_options, "input_shape": list(self.input_shape)},
        }

    # -- running ----------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        start = time.perf_counter()
        with Store(self.store_path) as store, self.executor:  # workers stay up for the whole search
            store.claim(f"study:{self.name}", self.settings())
            warm = self._warm_up(store)
            if self.move and self.proxy is not None:
                self.strategy.set_scorer(lambda cands: self._scores(store, cands))
            trials: list[TrialRecord] = []
            self._by_key: dict[str, TrialRecord] = {}
            evaluations = rejected = 0
            bar = _Bar(self.progress, f"search ({self.strategy.name})", self.budget)
            with bar:
                while evaluations < self.budget:
                    if self.max_seconds is not None and time.perf_counter() - start > self.max_seconds:
                        break
                    asked = self.strategy.ask(min(self.batch, self.budget - evaluations))
                    if not asked:
                        break  # the strategy has nothing left to propose (an exhausted space)
                    told = self._step(store, asked, trials)
                    self.strategy.tell([t for _, t in told])
                    for record, _ in told:
                        if not record.evaluated:
                            rejected += 1
                            continue
                        evaluations += 1
                        bar.advance()
                    if rejected > MAX_REJECTIONS_PER_EVALUATION * max(1, evaluations):
                        repeats = sum(t.repeat_of is not None for t in trials)
                        if repeats * 2 > rejected:
                            break  # the strategy only proposes candidates already evaluated: nothing new to find
                        raise InputError(
                            f"constraints {', '.join(c.name for c in self.constraints)} rejected {rejected} "
                            f"candidates against {evaluations} feasible ones: loosen them"
                        )
            store.put_trials(f"study:{self.name}", [t.__dict__ for t in trials])
        result = SearchResult.from_trials(self.space, self.objective, trials, self.settings(),
                                          time.perf_counter() - start)
        result.warmup_scored = warm
        return result

    def _warm_up(self, store: Store) -> int:
        if not self.warmup:
            return 0
        assert self.proxy is not None
        rng = random.Random(f"warm-up {self.seed}")
        pool = [self.space.sample(rng) for _ in range(self.warmup)]  # with replacement, as the reference
        scores = self._scores(store, pool)
        keep = [(c, s) for c, s in zip(pool, scores) if s is not None]
        self.strategy.warm_up([c for c, _ in keep], [s for _, s in keep])
        return len(pool)

    def _scores(self, store: Store, candidates: Sequence[Any]) -> list[float | None]:
        """Proxy scores (higher is better) for warm-up and move; None for a failed score and for a candidate that
        a cheap constraint (:data:`CHEAP_KINDS`: a table, a predictor, a count; not a measurement) rejects, so
        that under a latency budget neither the warm-up nor a move chases the proxy's favourites, big cells
        that break it."""
        assert self.proxy is not None
        res = evaluate_all(self.space, candidates, [self.proxy.estimator], store, executor=self.executor,
                           progress=False)
        vals = res.evaluations[self.proxy.estimator.name]
        cheap = [c for c in self.constraints if c.estimator.kind in CHEAP_KINDS]
        allowed = None
        if cheap:
            allowed = evaluate_all(self.space, candidates, [c.estimator for c in cheap], store,
                                   executor=self.executor, progress=False)
        out = []
        for c in candidates:
            i = self.space.identity(c)
            e = vals.get(i)
            v = self.proxy.of(e.value) if e is not None and e.ok else None
            if allowed is not None and not all(k.holds(allowed.value(i, k.estimator.name)) for k in cheap):
                v = None
            out.append(None if v is None else (v if self.proxy.maximize else -v))
        return out

    def _step(self, store: Store, asked: list[Any], trials: list[TrialRecord]) -> list[tuple[TrialRecord, Any]]:
        """Check the constraints, evaluate what meets them, and record a trial per asked candidate.

        A candidate whose key was evaluated before in this study (the same or an equivalent candidate) is not
        evaluated or counted again: it is told the earlier result.
        """
        from ..strategies.base import Trial

        fresh = []
        for c in asked:
            k = self.space.key(c)
            if k not in self._by_key and k not in {self.space.key(f) for f in fresh}:
                fresh.append(c)
        ids = [self.space.identity(c) for c in fresh]
        values: dict[str, dict[str, float | None]] = {i: {} for i in ids}
        feasible = dict.fromkeys(ids, True)
        if self.constraints and fresh:
            res = evaluate_all(self.space, fresh, [c.estimator for c in self.constraints], store,
                               executor=self.executor, progress=False)
            for c in self.constraints:
                for i in ids:
                    v = res.value(i, c.estimator.name)
                    values[i][c.name] = _field(v, c.field)
                    feasible[i] = feasible[i] and c.holds(v)
        ok = [c for c, i in zip(fresh, ids) if feasible[i]]
        if ok:
            objectives = [self.objective, *self.secondary]
            estimators = list({o.estimator.name: o.estimator for o in objectives}.values())
            res = evaluate_all(self.space, ok, estimators, store, executor=self.executor, progress=False)
            for o in objectives:
                for c in ok:
                    i = self.space.identity(c)
                    values[i][o.name] = o.of(res.value(i, o.estimator.name))
        told = []
        for c in asked:
            k, i = self.space.key(c), self.space.identity(c)
            earlier = self._by_key.get(k)
            if earlier is not None:
                record = TrialRecord(len(trials), i, earlier.feasible, earlier.objective, dict(earlier.values),
                                     evaluated=False, repeat_of=earlier.number)
            else:
                obj = values[i].get(self.objective.name) if feasible[i] else None
                record = TrialRecord(len(trials), i, feasible[i], obj, values[i], evaluated=feasible[i])
                self._by_key[k] = record
            trials.append(record)
            obj = record.objective
            more = tuple(_signed(record.values.get(o.name), o.maximize) for o in self.secondary)
            told.append((record, Trial(c, _signed(obj, self.objective.maximize), record.feasible, more)))
        return told


def _signed(value: float | None, maximize: bool) -> float | None:
    return None if value is None else (value if maximize else -value)


class _Bar:
    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled, description, total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
