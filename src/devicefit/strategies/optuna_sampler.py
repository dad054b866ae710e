"""Any Optuna sampler (TPE, Bergstra et al., NeurIPS 2011; NSGA-II, Deb et al., 2002; random) behind the
ask/tell :class:`~devicefit.strategies.Strategy` interface, on an in-memory Optuna study (Akiba et al., KDD 2019,
arXiv 1907.10902).

Each decision of a :class:`~devicefit.spaces.CategoricalSpace` is one Optuna parameter, named by
``space.decision_names`` and suggested with ``trial.suggest_categorical(name, [0, .., k - 1])``. The study is
created with ``storage=None`` (memory) and ``direction="maximize"`` (devicefit tells objectives with higher
better); the sampler is seeded with the strategy's seed. ``sampler_options`` go to the sampler's constructor
(``{"n_startup_trials": 5}`` for TPE, ``{"population_size": 20}`` for NSGA-II).

Choices made here:

- Distinct candidates: when the sampler proposes a candidate whose key was asked before, that Optuna trial
  is told the result already known for the key (or, when the key is still being evaluated, later, together
  with it) and the sampler is asked again, up to 20 times; then a candidate of the space's own sampling
  (``space.sample(self.rng)``, up to 1,000 draws) is enqueued into the Optuna study and asked, so the
  sampler sees it like any trial. When both fail the space is (nearly) exhausted: ``ask`` returns fewer
  candidates, none at the end, which ends the study (as random search does).
- Infeasible or failed trials (fitness minus infinity): told to Optuna with the lowest objective told so
  far, a penalty that lets TPE learn to avoid them (Optuna's samplers ignore failed trials); before any
  objective is known, and always with several objectives, they are told as ``TrialState.FAIL``.
- Several objectives (``n_objectives > 1``, e.g. NSGA-II or TPE on accuracy and latency): every told trial's
  ``more`` holds the other objectives, each higher-is-better (the :class:`~devicefit.study.study.Study` fills
  it from its secondary objectives).
- Zero-cost warm-up and move are not used (the default no-ops of :class:`Strategy`).

Replay and restore. The devicefit study resumes by replaying its asks and tells into a fresh strategy; the
same seed and the same tells give the same asks, because Optuna's samplers draw from their own seeded
``numpy.random.RandomState`` and the in-memory study holds nothing else. ``state_dict`` is plain JSON: every
Optuna trial in order (choices, state, values, system attributes: TPE keeps each trial's relative sample
there, NSGA-II its generation), the study's system attributes (NSGA-II caches its parent populations there),
the state of every ``RandomState`` inside the sampler, and this strategy's bookkeeping (asked keys, the
values told per key, trials still waiting, the penalty). ``load_state_dict`` rebuilds the study with
``study.add_trial(create_trial(...))``; ``add_trial`` never calls the sampler, so the rebuilt sampler's
generators would still be at their seeded start: their saved states are put back, and the restored strategy
then continues exactly as the original.
The generators are found by walking the sampler's attributes (Optuna's ``LazyRandomState``), and the study's
system attributes are read and written through ``study._storage``: internals of Optuna (checked with Optuna
5.0). The restore is exact for the samplers offered here ("tpe", "random", "nsga2") with the Optuna version
that wrote the state; ``load_state_dict`` refuses a state whose generators do not match the sampler's.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..spaces.base import CategoricalSpace
from .base import C, Strategy, Trial

#: Optuna samplers by name: the class name in ``optuna.samplers``.
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "nsga2": "NSGAIISampler"}
#: Times the sampler is asked again when it proposes a candidate already asked.
MAX_REASKS = 20
#: Samples of the space's own distribution tried after that, before the space counts as exhausted.
MAX_FALLBACK = 1_000


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise InputError("the optuna search strategy needs Optuna: pip install 'devicefit[optuna]'") from None
    return optuna


class OptunaSearch(Strategy[C]):
    """An Optuna sampler over a :class:`~devicefit.spaces.CategoricalSpace` (see the module's notes)."""

    name = "optuna"

    def __init__(self, space: CategoricalSpace[C], seed: int = 0, sampler: str = "tpe", n_objectives: int = 1,
                 sampler_options: dict[str, Any] | None = None) -> None:
        if not isinstance(space, CategoricalSpace):
            raise InputError(f"optuna search needs a categorical space (a fixed sequence of decisions); "
                             f"{getattr(space, 'name', space)!r} is not one")
        if sampler not in SAMPLERS:
            raise InputError(f"unknown optuna sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if isinstance(n_objectives, bool) or not isinstance(n_objectives, int) or n_objectives < 1:
            raise InputError(f"optuna n_objectives must be a positive integer, got {n_objectives!r}")
        if sampler_options is not None and not isinstance(sampler_options, dict):
            raise InputError(f"optuna sampler_options must be a dict of keyword arguments, got {sampler_options!r}")
        choices, names = tuple(space.choices), tuple(space.decision_names)
        if not choices or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in choices):
            raise InputError(f"space {space.name!r}: every decision needs at least one option, got {choices}")
        if len(names) != len(choices) or len(set(names)) != len(names):
            raise InputError(f"space {space.name!r}: decision names must be distinct, one per decision, got {names}")
        super().__init__(space, seed)
        self.optuna = _optuna()
        self.sampler_name, self.n_objectives = sampler, n_objectives
        self.sampler_options = dict(sampler_options or {})
        self.choices, self.names = choices, names
        self.distributions = {n: self.optuna.distributions.CategoricalDistribution(list(range(k)))
                              for n, k in zip(names, choices)}
        self.study = self._new_study()
        self.seen: set[str] = set()  # keys asked (or told)
        self.known: dict[str, list[float] | None] = {}  # key -> values told to Optuna (None: told FAIL)
        self.running: dict[str, list[int]] = {}  # key -> Optuna trial numbers waiting for that key's result
        self.lowest: float | None = None  # lowest objective told: the penalty of failed trials

    def _new_study(self) -> Any:
        optuna = self.optuna
        cls = getattr(optuna.samplers, SAMPLERS[self.sampler_name])
        try:
            sampler = cls(seed=self.seed, **self.sampler_options)
        except (TypeError, ValueError) as exc:
            raise InputError(f"optuna sampler {self.sampler_name!r}: bad sampler_options "
                             f"{self.sampler_options}: {exc}") from None
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory ..."
        try:
            return optuna.create_study(storage=None, sampler=sampler, directions=["maximize"] * self.n_objectives)
        finally:
            optuna.logging.set_verbosity(verbosity)

    # -- ask / tell ---------------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[C]:
        """``n`` distinct unseen candidates; fewer when the space is (nearly) exhausted."""
        out: list[C] = []
        while len(out) < n:
            c = self._one()
            if c is None:
                break
            out.append(c)
        return out

    def _one(self) -> C | None:
        for _ in range(MAX_REASKS):
            number, c = self._ask_optuna()
            k = self.space.key(c)
            if k not in self.seen:
                return self._claim(k, number, c)
            if k in self.known:
                self._finish(number, self.known[k])  # what the sampler would learn by evaluating it again
            else:
                self.running[k].append(number)  # still being evaluated: told with it
        for _ in range(MAX_FALLBACK):
            fallback = self.space.sample(self.rng)
            if self.space.key(fallback) not in self.seen:
                self.study.enqueue_trial(dict(zip(self.names, self.space.to_choices(fallback))))
                number, c = self._ask_optuna()
                return self._claim(self.space.key(c), number, c)
        return None  # a (nearly) exhausted space

    def _ask_optuna(self) -> tuple[int, C]:
        trial = self.study.ask()
        choices = [trial.suggest_categorical(n, list(range(k))) for n, k in zip(self.names, self.choices)]
        return trial.number, self.space.from_choices(choices)

    def _claim(self, k: str, number: int, c: C) -> C:
        self.seen.add(k)
        self.running[k] = [number]
        return c

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        for t in trials:
            k = self.space.key(t.candidate)
            values = self._values(t)
            numbers = self.running.pop(k, [])
            if not numbers and k not in self.known:  # a candidate this strategy did not ask: add it
                self.seen.add(k)
                self.study.add_trial(self._frozen(self.space.to_choices(t.candidate), values))
            for number in numbers:
                self._finish(number, values)
            self.known.setdefault(k, values)

    def _values(self, t: Trial[C]) -> list[float] | None:
        """What Optuna is told: the objectives, a penalty (one objective), or None for FAIL."""
        if self.n_objectives == 1:
            fitness = t.fitness
            if math.isfinite(fitness):
                self.lowest = fitness if self.lowest is None else min(self.lowest, fitness)
                return [fitness]
            return None if self.lowest is None else [self.lowest]
        if len(t.more) != self.n_objectives - 1:
            raise InputError(f"optuna search with {self.n_objectives} objectives must be told trials with "
                             f"{self.n_objectives - 1} more objective(s), got {t!r:.200}")
        values = [t.fitness, *(float("-inf") if v is None else float(v) for v in t.more)]
        return values if all(math.isfinite(v) for v in values) else None

    def _finish(self, number: int, values: list[float] | None) -> None:
        if values is None:
            self.study.tell(number, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, values)

    def _frozen(self, choices: Sequence[int], values: list[float] | None, state: str | None = None,
                system_attrs: dict[str, Any] | None = None) -> Any:
        TrialState = self.optuna.trial.TrialState
        state_ = TrialState[state] if state else (TrialState.FAIL if values is None else TrialState.COMPLETE)
        return self.optuna.trial.create_trial(
            state=state_, values=values if state_ == TrialState.COMPLETE else None,
            params=dict(zip(self.names, (int(c) for c in choices))), distributions=self.distributions,
            system_attrs=system_attrs)

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        study = self.study
        trials = [{"choices": [t.params[n] for n in self.names], "state": t.state.name, "values": t.values,
                   "system_attrs": t.system_attrs} for t in study.get_trials(deepcopy=False)]
        return {
            **super().state_dict(),
            "sampler": self.sampler_name,
            "decisions": list(self.names),
            "n_objectives": self.n_objectives,
            "trials": trials,
            "study_system_attrs": study._storage.get_study_system_attrs(study._study_id),
            "sampler_rngs": {path: _rng_to_json(rng) for path, rng in _random_states(study.sampler).items()},
            "seen": sorted(self.seen),
            "known": self.known,
            "running": self.running,
            "lowest": self.lowest,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        mine = {"sampler": self.sampler_name, "decisions": list(self.names), "n_objectives": self.n_objectives}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise InputError(f"optuna state of {theirs} cannot be loaded into a strategy of {mine}")
        self.study = self._new_study()
        for t in state["trials"]:
            self.study.add_trial(self._frozen(t["choices"], t["values"], t["state"], t["system_attrs"]))
        for key, value in state["study_system_attrs"].items():
            self.study._storage.set_study_system_attr(self.study._study_id, key, value)
        rngs = _random_states(self.study.sampler)
        if set(rngs) != set(state["sampler_rngs"]):
            raise InputError(f"optuna state has generators {sorted(state['sampler_rngs'])}, the sampler has "
                             f"{sorted(rngs)}: written by another Optuna version or sampler")
        for path, saved in state["sampler_rngs"].items():
            rngs[path].set_state(_rng_from_json(saved))
        self.seen = set(state["seen"])
        self.known = {k: None if v is None else [float(x) for x in v] for k, v in state["known"].items()}
        self.running = {k: [int(n) for n in v] for k, v in state["running"].items()}
        self.lowest = None if state["lowest"] is None else float(state["lowest"])


def _random_states(sampler: Any) -> dict[str, Any]:
    """Every ``numpy.random.RandomState`` inside an Optuna sampler, by attribute path (shared ones once)."""
    import numpy as np

    out: dict[str, Any] = {}
    visited = {id(sampler)}

    def walk(obj: Any, prefix: str) -> None:
        for name, value in sorted(vars(obj).items()):
            if id(value) in visited:
                continue
            if isinstance(value, np.random.RandomState):
                visited.add(id(value))
                out[prefix + name] = value
            elif (type(value).__module__.startswith("optuna.") and hasattr(value, "__dict__")
                  and not isinstance(value, (type, types.FunctionType, types.MethodType))):
                visited.add(id(value))
                walk(value, f"{prefix}{name}.")

    walk(sampler, "")
    return out


def _rng_to_json(rng: Any) -> list[Any]:
    kind, keys, pos, has_gauss, gauss = rng.get_state(legacy=True)
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def _rng_from_json(data: list[Any]) -> tuple[Any, ...]:
    import numpy as np

    kind, keys, pos, has_gauss, gauss = data
    return (kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss))


__all__ = ["SAMPLERS", "OptunaSearch"]
