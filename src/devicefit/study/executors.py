"""Executors: where evaluations run. Inline (this process), a process pool (spawned workers), or Ray.

Every executor takes the same work — units of (candidate identity, indices of the estimators still to
run on it) — and yields :class:`Outcome` objects as they finish, in any order. Only the driver (the
caller of :func:`devicefit.study.evaluate_all`) writes the store, so workers need no access to it and a
Ray cluster needs no shared database.

Workers hold their state in the worker function's own variables, never in module globals: the space and
the estimators arrive pickled (settings only), :meth:`Estimator.prepare` loads each estimator's
resources once per worker, and each worker runs one torch thread. A process-pool worker asks the kernel
to kill it when the driver dies (``PR_SET_PDEATHSIG`` on Linux) and also watches its parent, so a
``kill -9`` of the driver leaves no orphans computing on.
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


def _process_worker(space: Space, estimators: Sequence[Estimator], tasks: Any, results: Any, parent: int) -> None:
    """A pool worker: prepare once, then run units from ``tasks`` until it gets ``None`` or loses its parent."""
    import queue

    _die_with_parent()
    if os.getppid() != parent:  # the driver died while this worker was starting: the signal came too early
        return
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    try:
        for e in estimators:
            e.prepare()
    except Exception as exc:  # report and stop: the driver raises it
        results.put(("prepare-failed", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            unit = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if unit is None or os.getppid() != parent:  # no orphan computes on after its driver is gone
            return
        results.put(("done", run_unit(space, estimators, unit)))


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes (no fork after torch has started threads), one torch thread each."""

    name = "process"

    def __init__(self, workers: int = 2) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}

    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        import multiprocessing as mp
        import queue

        todo = list(units)
        if not todo:
            return
        ctx = mp.get_context("spawn")
        tasks, results = ctx.Queue(), ctx.Queue()
        n = min(self.workers, len(todo))
        procs = [ctx.Process(target=_process_worker, args=(space, list(estimators), tasks, results, os.getpid()),
                             daemon=True) for _ in range(n)]
        for p in procs:
            p.start()
        try:
            for unit in todo:
                tasks.put(unit)
            for _ in procs:
                tasks.put(None)
            remaining = len(todo)
            while remaining:
                try:
                    kind, payload = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs):
                        raise RuntimeError(
                            f"all {n} worker processes exited with {remaining} units left "
                            f"(exit codes {[p.exitcode for p in procs]}); rerun to resume"
                        ) from None
                    continue
                if kind == "prepare-failed":
                    raise RuntimeError(f"a worker could not prepare the estimators: {payload}")
                remaining -= 1
                yield payload
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
            tasks.cancel_join_thread()
            results.cancel_join_thread()


class _RayWorker:
    """A Ray actor: the estimators prepared once, then units evaluated one at a time."""

    def __init__(self, space: Space, estimators: Sequence[Estimator]) -> None:
        import torch

        torch.set_num_threads(1)
        self.space, self.estimators = space, list(estimators)
        for e in self.estimators:
            e.prepare()

    def run(self, unit: Unit) -> list[Outcome]:
        return run_unit(self.space, self.estimators, unit)


class RayExecutor(Executor):
    """Ray actors (``pip install devicefit[ray]``): a local Ray with ``workers`` CPUs, or the cluster at ``address``.

    One actor per CPU, each with one torch thread; at most two units in flight per actor. Results come back
    to the driver, which alone writes the store. A local Ray started here is shut down when the run ends.
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

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "address": self.address}

    def run(self, space: Space, estimators: Sequence[Estimator], units: Iterable[Unit]) -> Iterator[list[Outcome]]:
        import ray

        todo = list(units)
        if not todo:
            return
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, **kwargs)
        try:
            actor_cls = ray.remote(num_cpus=1)(_RayWorker)
            n = min(int(ray.cluster_resources().get("CPU", 1)), self.workers or len(todo), len(todo))
            actors = [actor_cls.remote(space, list(estimators)) for _ in range(max(1, n))]
            pending: dict[Any, Any] = {}
            queue_ = list(reversed(todo))
            for actor in actors:
                for _ in range(2):
                    if queue_:
                        pending[actor.run.remote(queue_.pop())] = actor
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                actor = pending.pop(ready)
                if queue_:
                    pending[actor.run.remote(queue_.pop())] = actor
                yield ray.get(ready)
        finally:
            if started:
                ray.shutdown()


def make_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name: ``inline``, ``process`` (``workers``, default 2) or ``ray`` (``workers``, ``address``)."""
    if name == "inline":
        return InlineExecutor()
    if name == "process":
        return ProcessExecutor(workers or 2)
    if name == "ray":
        return RayExecutor(workers, address)
    raise InputError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
