"""Executors: where evaluations run. Inline (this process), a process pool (spawned workers), or Ray.

Every executor takes the same work — units of (candidate identity, indices of the estimators still to
run on it) — and yields :class:`Outcome` objects as they finish, in any order. Only the driver (the
caller of :func:`devicefit.study.evaluate_all`) writes the store, so workers need no access to it and a
Ray cluster needs no shared database.

Workers hold their state in the worker function's own variables, never in module globals: the space and
the estimators arrive pickled with each unit (settings only: small), :meth:`Estimator.prepare` loads each
set of estimators' resources once per worker, and each worker runs one torch thread.

Lifetime: used bare, a pool or a Ray session is started for one :func:`evaluate_all` call and stopped at
its end. Used as a context manager (``with executor:``; the :class:`Study` does this for a whole search,
which calls the loop once per step), the workers stay up across calls and keep what they prepared.

A process-pool worker asks the kernel to kill it when the driver dies (``PR_SET_PDEATHSIG`` on Linux) and
also watches its parent, so a ``kill -9`` of the driver leaves no orphans computing on.
"""

from __future__ import annotations

import os
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..spaces.base import Space
from .estimator import Estimator, EstimatorFailure

EXECUTORS = ("inline", "process", "ray")


@dataclass(frozen=True)
class Unit:
    """One candidate and the estimators (indices into the job's list) still to evaluate on it."""

    candidate: str
    estimators: tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    """The result of one estimator on one candidate: ``value`` or ``error``, and the seconds it took."""

    candidate: str
    estimator: int
    value: Any
    error: str | None
    seconds: float


def run_unit(space: Space, estimators: Sequence[Estimator], unit: Unit) -> list[Outcome]:
    """Evaluate one unit in this process (estimators already prepared). Exceptions become failures."""
    candidate = space.from_identity(unit.candidate)
    out = []
    for i in unit.estimators:
        start = time.perf_counter()
        try:
            value, error = estimators[i].evaluate(space, candidate), None
        except EstimatorFailure as exc:
            value, error = None, str(exc)
        except Exception as exc:  # a failure of this candidate, stored with its reason; the job goes on
            value, error = None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"
        out.append(Outcome(unit.candidate, i, value, error, time.perf_counter() - start))
    return out


class Executor(ABC):
    """Runs units and yields their outcomes as they finish."""

    name: str

    @abstractmethod
    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        """Yield the outcomes of each unit (a list per unit) as units finish."""

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name}

    # -- a session: workers kept up across run() calls ---------------------------------------------------
    _depth: int = 0

    def __enter__(self) -> Executor:
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.close()

    def close(self) -> None:  # noqa: B027  # a no-op by design: inline keeps nothing up
        """Stop whatever workers a session kept up (nothing for inline)."""


def job_key(space: Space, estimators: Sequence[Estimator]) -> str:
    """What a worker's prepared estimators are cached under: the space and every estimator's fingerprint."""
    import json

    return json.dumps([space.settings(), [e.fingerprint(space) for e in estimators]], sort_keys=True)


class _Prepared:
    """A worker's prepared (space, estimators) by job key."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[Space, list[Estimator]]] = {}

    def run(self, key: str, space: Space, estimators: Sequence[Estimator], unit: Unit) -> list[Outcome]:
        if key not in self.jobs:
            prepared = list(estimators)
            for e in prepared:
                e.prepare()
            self.jobs[key] = (space, prepared)
        space, prepared = self.jobs[key]
        return run_unit(space, prepared, unit)


class InlineExecutor(Executor):
    """In this process, one unit after another."""

    name = "inline"

    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        for e in estimators:
            e.prepare()
        for unit in units:
            yield run_unit(space, estimators, unit)


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGKILL to this process when its parent dies."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _process_worker(tasks: Any, results: Any, parent: int) -> None:
    """A pool worker: run ``(run id, job key, space, estimators, unit)`` tasks until it gets ``None`` or loses its
    parent, preparing each job's estimators once."""
    import queue

    _die_with_parent()
    if os.getppid() != parent:  # the driver died while this worker was starting: the signal came too early
        return
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    prepared = _Prepared()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None or os.getppid() != parent:  # no orphan computes on after its driver is gone
            return
        run_id, key, space, estimators, unit = task
        try:
            outcomes = prepared.run(key, space, estimators, unit)
        except Exception as exc:  # prepare() failed: the driver raises it
            results.put(("prepare-failed", run_id, f"{type(exc).__name__}: {exc}"))
            continue
        results.put(("done", run_id, outcomes))


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes (no fork after torch has started threads), one torch thread each."""

    name = "process"

    def __init__(self, workers: int = 2) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool: tuple[Any, Any, list[Any]] | None = None  # tasks, results, processes
        self._runs = 0

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def _start(self, n: int) -> tuple[Any, Any, list[Any]]:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        tasks, results = ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_process_worker, args=(tasks, results, os.getpid()), daemon=True)
                 for _ in range(n)]
        for proc in procs:
            proc.start()
        return tasks, results, procs

    def close(self) -> None:
        if self._pool is None:
            return
        tasks, results, procs = self._pool
        self._pool = None
        for proc in procs:
            if proc.is_alive():
                tasks.put(None)
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        tasks.cancel_join_thread()
        results.cancel_join_thread()

    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        import queue

        todo = list(units)
        if not todo:
            return
        session = self._depth > 0
        if self._pool is None:
            self._pool = self._start(self.workers if session else min(self.workers, len(todo)))
        tasks, results, procs = self._pool
        self._runs += 1
        run_id, key = self._runs, job_key(space, estimators)
        for unit in todo:
            tasks.put((run_id, key, space, list(estimators), unit))
        remaining = len(todo)
        try:
            while remaining:
                try:
                    kind, rid, payload = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs):
                        raise RuntimeError(
                            f"all {len(procs)} worker processes exited with {remaining} units left "
                            f"(exit codes {[p.exitcode for p in procs]}); rerun to resume"
                        ) from None
                    continue
                if rid != run_id:
                    continue  # a result of an earlier, interrupted run
                if kind == "prepare-failed":
                    raise RuntimeError(f"a worker could not prepare the estimators: {payload}")
                remaining -= 1
                yield payload
        finally:
            if remaining or not session:  # interrupted, or not in a session: no workers left behind
                self.close()


class _RayWorker:
    """A Ray actor: each job's estimators prepared once, then units evaluated one at a time."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.prepared = _Prepared()

    def run(self, key: str, space: Space, estimators: Sequence[Estimator], unit: Unit) -> list[Outcome]:
        return self.prepared.run(key, space, estimators, unit)


class RayExecutor(Executor):
    """Ray actors (``pip install devicefit[ray]``): a local Ray with ``workers`` CPUs, or the cluster at ``address``.

    One actor per CPU, each with one torch thread; at most two units in flight per actor. Results come back
    to the driver, which alone writes the store. A local Ray started here is shut down at the end of the run,
    or of the session (``with executor:``).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("the ray executor needs Ray: pip install 'devicefit[ray]'") from None
        self.workers, self.address = workers, address
        self._started = False
        self._actors: list[Any] = []

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "address": self.address}

    def _start(self, n: int) -> list[Any]:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, **kwargs)
            self._started = True
        actor_cls = ray.remote(num_cpus=1)(_RayWorker)
        n = min(int(ray.cluster_resources().get("CPU", 1)), n)
        return [actor_cls.remote() for _ in range(max(1, n))]

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        import ray

        todo = list(units)
        if not todo:
            return
        session = self._depth > 0
        if not self._actors:
            cpus = self.workers or 10**6
            self._actors = self._start(cpus if session else min(cpus, len(todo)))
        key, estimators = job_key(space, estimators), list(estimators)
        pending: dict[Any, Any] = {}
        queue_ = list(reversed(todo))
        finished = False
        try:
            for actor in self._actors:
                for _ in range(2):
                    if queue_:
                        pending[actor.run.remote(key, space, estimators, queue_.pop())] = actor
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                actor = pending.pop(ready)
                if queue_:
                    pending[actor.run.remote(key, space, estimators, queue_.pop())] = actor
                yield ray.get(ready)
            finished = True
        finally:
            if not finished or not session:
                self.close()


def make_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name: ``inline``, ``process`` (``workers``, default 2) or ``ray`` (``workers``, ``address``)."""
    if name == "inline":
        return InlineExecutor()
    if name == "process":
        return ProcessExecutor(workers or 2)
    if name == "ray":
        return RayExecutor(workers, address)
    raise InputError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
