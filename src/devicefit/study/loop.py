"""``evaluate_all``: the one loop that evaluates candidates with estimators, durably, on any executor.

    results = evaluate_all(space, candidates, [BenchmarkAccuracy("c10_val_200ep"), MeasuredLatency()],
                           "runs/study.sqlite", executor=ProcessExecutor(2))

For every (candidate, estimator) it asks the store first: a value computed before (by this job or any
other job with an estimator of the same fingerprint) is reused, a stored failure is skipped unless
``retry_failed``, and everything else runs on the executor. Each result is committed the moment it
arrives, so a job killed at any point and run again evaluates each candidate exactly once in all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..spaces.base import Space
from .estimator import Estimator
from .executors import Executor, InlineExecutor, Outcome, Unit
from .store import Evaluation, Store


@dataclass
class EvaluationResults:
    """What :func:`evaluate_all` returns: every requested evaluation, by candidate identity and estimator name."""

    candidates: list[str]
    estimators: list[str]
    fingerprints: dict[str, str]
    evaluations: dict[str, dict[str, Evaluation]] = field(default_factory=dict)  # estimator -> identity -> eval
    computed: int = 0
    reused: int = 0
    skipped_failed: int = 0

    def get(self, candidate: str, estimator: str) -> Evaluation | None:
        return self.evaluations[estimator].get(candidate)

    def value(self, candidate: str, estimator: str) -> Any:
        """The value, or ``None`` when the evaluation failed (or is missing)."""
        e = self.evaluations[estimator].get(candidate)
        return e.value if e is not None and e.ok else None

    def values(self, estimator: str) -> dict[str, Any]:
        """``{identity: value}`` of the successful evaluations of one estimator, in candidate order."""
        evals = self.evaluations[estimator]
        return {c: evals[c].value for c in self.candidates if c in evals and evals[c].ok}

    def failures(self, estimator: str) -> dict[str, str]:
        evals = self.evaluations[estimator]
        return {c: str(evals[c].error) for c in self.candidates if c in evals and not evals[c].ok}


def _open(store: Store | str | os.PathLike[str]) -> tuple[Store, bool]:
    return (store, False) if isinstance(store, Store) else (Store(store), True)


def evaluate_all(
    space: Space,
    candidates: Iterable[Any],
    estimators: Sequence[Estimator],
    store: Store | str | os.PathLike[str],
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    description: str = "evaluating",
    on_outcome: Callable[[Outcome], None] | None = None,
) -> EvaluationResults:
    """Evaluate every candidate with every estimator, reusing the store and writing each new result at once.

    ``candidates`` are candidates of ``space`` (duplicates are evaluated once). ``executor`` defaults to
    :class:`InlineExecutor`. ``on_outcome`` is called after each result is committed. Returns the
    evaluations of all requested (candidate, estimator) pairs, cached ones included.
    """
    estimators = list(estimators)
    if not estimators:
        raise InputError("evaluate_all needs at least one estimator")
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise InputError(f"estimator names must be unique within a job, got {names}")
    executor = executor or InlineExecutor()
    identities = list(dict.fromkeys(space.identity(c) for c in candidates))
    db, owned = _open(store)
    try:
        fingerprints = [e.fingerprint(space) for e in estimators]
        for e, fp in zip(estimators, fingerprints):
            db.register_estimator(fp, e.name, {"kind": e.kind, **e.settings(), "space": space.settings()})
        results = EvaluationResults(identities, names, dict(zip(names, fingerprints)))
        with db.writing(description):
            statuses = [db.statuses(fp, identities) for fp in fingerprints]
            units = []
            for ident in identities:
                todo = []
                for i, st in enumerate(statuses):
                    s = st.get(ident)
                    if s is None or (s == "failed" and retry_failed):
                        todo.append(i)
                    elif s == "failed":
                        results.skipped_failed += 1
                    else:
                        results.reused += 1
                if todo:
                    units.append(Unit(ident, tuple(todo)))
            total = sum(len(u.estimators) for u in units)
            with _progress(progress, description, total) as advance:
                for outcomes in executor.run(space, estimators, units):
                    for o in outcomes:
                        db.put(o.candidate, fingerprints[o.estimator], value=o.value, error=o.error, seconds=o.seconds)
                        results.computed += 1
                        if on_outcome is not None:
                            on_outcome(o)
                    advance(len(outcomes))
        for name, fp in zip(names, fingerprints):
            results.evaluations[name] = {e.candidate: e for e in db.evaluations(fp, identities)}
        return results
    finally:
        if owned:
            db.close()


class _progress:
    """A rich progress bar on stderr (or nothing); the context value advances it."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled and total > 0, description, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._bar.__enter__()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
