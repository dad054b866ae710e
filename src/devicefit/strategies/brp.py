"""BRP-NAS: search with a binary relation predictor and iterative data selection (Dudziak et al., NeurIPS 2020,
arXiv 2007.08668; reference code SamsungLabs/eagle, ``eagle/predictors/__main__.py`` with ``--iter 5
--sample_best2``), with the zero-cost warm-up of Abdelfattah et al. (arXiv 2101.08134).

The predictor (:class:`~devicefit.predictors.relation.BinaryRelationPredictor`) is a GCN that predicts
P(objective(a) > objective(b)); it ranks a pool of candidates by pairwise wins. The search spends a budget
of ``budget`` evaluations (eagle's ``training_points: 100`` for NAS-Bench-201) in ``iterations`` rounds
(eagle's ``--iter 5``) of ``m = budget // iterations`` candidates:

- round 0: ``m`` candidates drawn at random from the pool (or, with zero-cost warm-up, chosen as in the
  later rounds from the pre-trained predictor's ranking, or from the proxy ranking itself);
- round ``i >= 1``: the predictor is trained on every candidate evaluated so far (continuing from its
  previous weights, for ``epochs * i / iterations`` epochs as eagle grows them), ranks the pool, and the
  round asks the ``ceil(alpha * m)`` best-ranked candidates not asked yet plus the rest drawn at random from
  the best ``1 / 2^i`` of the ranking (eagle's ``sample_best2``: ``alpha = 0.5``, the top half, quarter,
  ... of the pool; round 0 after a warm-up uses the top half, as eagle's ``2 ** (i or 1)``);
- after the budget (round ``i >= iterations``): the predictor is trained once more on all results and
  every later round asks the ``m`` best-ranked candidates not asked yet. eagle stops there and walks down
  that final ranking (``retrain=False``); by default (``retrain=True``) every later round first continues
  training the predictor on all results for ``epochs / iterations`` epochs (one round's increment: the
  weights carry over, so a full run per round would spend 5x the time for the same fit).

The pool: the ``pool`` given (candidates or their JSON), else every candidate when the space is
categorical with at most ``pool_size`` candidates (all 15,625 NB201 cells), else ``pool_size`` samples
(seeded by ``seed``); one candidate per ``space.key`` (6,466 for NB201), in that order.

Failed or infeasible trials count as worse than every successful one (so the predictor also learns what
the constraints reject). Each training run's wall time is kept in :attr:`BRPSearch.train_seconds`
(details, ranking time included, in :attr:`BRPSearch.trainings` and :attr:`BRPSearch.rounds`).

Latency initialisation (paper Sec. 4 / eagle's ``--transfer``): ``init`` names a saved GCN latency
predictor (``gcn`` or ``transfer`` kind, or a transfer trunk) whose graph-convolution weights initialise
the relation predictor's trunk; its ``hidden`` and ``layers`` must be the same. (eagle's README notes this
helps the binary predictor little.)

Zero-cost warm-up (:meth:`BRPSearch.warm_up`, what eagle's ``--foresight_warmup`` does): with
``zero_cost="pretrain"`` (eagle's default) the predictor is pre-trained, for ``epochs`` epochs, on the
pairs of (a seeded random subset of at most ``warmup_points=256``, eagle's ``foresight`` training points,
of) the warm-up candidates ordered by their proxy scores, and round 0 already selects from its ranking;
with ``zero_cost="rank"`` (eagle's ``--foresight_simple``) round 0 selects from the warm-up candidates
ranked by the proxy itself, and the predictor starts untrained.

Training cost: eagle trains for 250 epochs over the *pairs* (64 per step) in its last round, tens of
thousands of steps, on a GPU. Here an epoch is one pass over the *candidates*, each step taking every
ordered pair of a minibatch of ``batch_size`` candidates (:mod:`devicefit.predictors.relation`), and the
last budget round trains ``epochs=100`` epochs. Calibration on NB201 (``c10_val_200ep``, 100 random
cells, pairs of 1,500 held-out cells, 4 x 600 GCN, two seeds): 100 epochs of 32 candidates gave a held-out
pairwise accuracy of 0.82, 250 epochs of 64 gave 0.83 in three times the time.

Determinism: the predictor trains and ranks on one torch thread with seeds derived from ``seed`` and the
run's number, random picks come from ``self.rng``, so the same seed and tells give the same asks.
``state_dict`` holds the history, queue, rounds and rng but not the weights: ``load_state_dict`` re-runs
the recorded training runs (pre-training included), which gives the same weights.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import time
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..spaces.base import CategoricalSpace, EncodableSpace
from .base import C, Strategy, Trial

ZERO_COST_MODES = ("pretrain", "rank")
#: eagle's evaluation budget M for NAS-Bench-201 (``training_points: 100``), the default ``budget``.
EAGLE_BUDGET = 100


def _int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"brp option {name} must be an int >= {low}, got {value!r}")
    return value


def _number(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low < value if open_low else low <= value) or value > high:  # type: ignore[operator]
        bound = f"{'(' if open_low else '['}{low}, {high}]"
        raise InputError(f"brp option {name} must be a number in {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


class BRPSearch(Strategy[C]):
    """BRP-NAS (arXiv 2007.08668) on an encodable space; see the module docstring for the algorithm.

    Options, with their source: ``budget=100`` evaluations in ``iterations=5`` rounds (eagle's NB201
    config and README), ``alpha=0.5`` (eagle's ``sample_best2``); predictor ``hidden=600``, ``layers=4``,
    ``dropout=0.2``, ``lr=3.5e-4``, ``weight_decay=5e-4`` (eagle's ``acc_gcn_nasbench201_bin.yaml``);
    ``epochs=100`` for the last budget round and ``batch_size=32`` candidates per step (this toolkit's,
    see :mod:`devicefit.predictors.relation`); ``pool`` / ``pool_size=20_000``; ``init`` (latency GCN
    file or object); ``zero_cost="pretrain"`` or ``"rank"``, ``warmup_points=256`` (eagle's foresight
    training points); ``retrain=True`` (retrain after the budget; eagle: False).
    """

    name = "brp"

    def __init__(
        self,
        space: EncodableSpace[C],
        seed: int = 0,
        *,
        budget: int = EAGLE_BUDGET,
        iterations: int = 5,
        alpha: float = 0.5,
        pool: Sequence[Any] | None = None,
        pool_size: int = 20_000,
        hidden: int = 600,
        layers: int = 4,
        dropout: float = 0.2,
        epochs: int = 100,
        batch_size: int = 32,
        lr: float = 3.5e-4,
        weight_decay: float = 5e-4,
        init: Any = None,
        zero_cost: str = "pretrain",
        warmup_points: int = 256,
        retrain: bool = True,
    ) -> None:
        if not isinstance(space, EncodableSpace):
            raise InputError(f"brp search needs an encodable space (a graph encoding for its GCN); "
                             f"{getattr(space, 'name', type(space).__name__)!r} has none")
        super().__init__(space, seed)
        self.budget = _int(budget, "budget", 1)
        self.iterations = _int(iterations, "iterations", 1)
        if self.iterations > self.budget:
            raise InputError(f"brp option iterations ({iterations}) must be at most budget ({budget})")
        self.alpha = _number(alpha, "alpha", 0.0, 1.0)
        self.pool_size = _int(pool_size, "pool_size", 2)
        if zero_cost not in ZERO_COST_MODES:
            raise InputError(f"brp option zero_cost must be one of {ZERO_COST_MODES}, got {zero_cost!r}")
        self.zero_cost = zero_cost
        self.warmup_points = _int(warmup_points, "warmup_points", 2)
        if not isinstance(retrain, bool):
            raise InputError(f"brp option retrain must be true or false, got {retrain!r}")
        self.retrain = retrain
        if pool is not None and (isinstance(pool, (str, bytes)) or not isinstance(pool, Sequence)):
            raise InputError(f"brp option pool must be a list of candidates (or their JSON), got {type(pool).__name__}")
        self.batch = self.budget // self.iterations
        self.epochs = _int(epochs, "epochs", 1)

        from ..predictors.relation import RelationTrainConfig

        self._train_config = RelationTrainConfig(
            epochs=self.epochs, batch_size=_int(batch_size, "batch_size", 2),
            lr=_number(lr, "lr", 0.0, math.inf, open_low=True),
            weight_decay=_number(weight_decay, "weight_decay", 0.0, math.inf))
        self._size = (_int(hidden, "hidden", 1), _int(layers, "layers", 1), _number(dropout, "dropout", 0.0, 0.99))
        self._init_trunk: dict[str, Any] | None = None
        self.predictor = self._fresh_predictor()
        if init is not None:
            try:
                self.predictor.load_trunk(init)
            except InputError as exc:
                raise InputError(f"brp option init: {exc}") from None
            self._init_trunk = copy.deepcopy(self.predictor.model.trunk.state_dict())
        self._pool_option = None if pool is None else [self._as_candidate(x) for x in pool]
        self._pool: list[C] | None = None
        self._pool_keys: list[str] = []  # space.key of each pool candidate, filled with the pool
        self._ranking: list[int] | None = None  # pool indices, best first, of the current weights

        self.history: list[tuple[C, float]] = []  # told (candidate, fitness), in order
        self.queue: list[C] = []  # the current round's candidates not handed out yet
        self.seen: set[str] = set()  # keys asked (or queued)
        self.iteration = 0  # the next round's number
        self.trained_on = 0  # len(history) at the last training run
        self.warm: tuple[list[C], list[float]] | None = None
        self.trainings: list[dict[str, Any]] = []  # every training run, in order (replayed by load_state_dict)
        self.rounds: list[dict[str, Any]] = []  # every round: how it chose and how long ranking took

    def _fresh_predictor(self) -> Any:
        """The predictor before any training: weights drawn from ``seed``, the trunk from ``init`` if given."""
        from ..predictors.relation import BinaryRelationPredictor

        hidden, layers, dropout = self._size
        predictor = BinaryRelationPredictor(self.space, hidden=hidden, layers=layers, dropout=dropout,
                                            train=self._train_config, seed=self.seed)
        if self._init_trunk is not None:
            predictor.model.trunk.load_state_dict(self._init_trunk)
        return predictor

    # -- public ----------------------------------------------------------------------------------------
    @property
    def train_seconds(self) -> list[float]:
        """Wall time of each training run of the predictor (the warm-up pre-training first, if any)."""
        return [float(t["seconds"]) for t in self.trainings]

    def warm_up(self, candidates: Sequence[C], scores: Sequence[float]) -> None:
        if len(candidates) != len(scores):
            raise InputError(f"warm_up: {len(candidates)} candidates but {len(scores)} scores")
        self.warm = (list(candidates), [float(s) for s in scores])

    def ask(self, n: int = 1) -> list[C]:
        out: list[C] = []
        while len(out) < n:
            if not self.queue:
                self._next_round()
                if not self.queue:
                    break  # the pool is exhausted
            out.append(self.queue.pop(0))
        return out

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        self.history.extend((t.candidate, t.fitness) for t in trials)

    # -- rounds -----------------------------------------------------------------------------------------
    def _next_round(self) -> None:
        i, m = self.iteration, self.batch
        record: dict[str, Any] = {"iteration": i, "rank_seconds": 0.0}
        if i == 0 and self.warm is not None and self.zero_cost == "rank":
            ranked = self._proxy_ranked()
            picks = self._select(ranked, math.ceil(len(ranked) / 2), m, self.alpha)
            record["mode"] = "proxy-rank"
        else:
            if i == 0 and self.warm is not None and not self.trainings:
                self._train(*self._pretraining_set(), self.epochs, "warm-up")
            if len(self.history) > self.trained_on and (self.retrain or i <= self.iterations):
                runs = sum(t["data"] == "history" for t in self.trainings)
                share = 1 if i > self.iterations else min(runs + 1, self.iterations)  # after the budget: a top-up
                epochs = math.ceil(self.epochs * share / self.iterations)
                self._train([c for c, _ in self.history], [f for _, f in self.history], epochs, "history")
            if not self.trainings:
                pool = self._get_pool()  # (fills the keys)
                unseen = [(k, c) for k, c in zip(self._pool_keys, pool, strict=True) if k not in self.seen]
                picks = self.rng.sample(unseen, min(m, len(unseen)))
                record["mode"] = "random"
            else:
                start = time.perf_counter()
                ranked = self._ranked_pool()
                record["rank_seconds"] = time.perf_counter() - start
                if i >= self.iterations:
                    picks = self._select(ranked, len(ranked), m, 1.0)
                    record["mode"] = "exploit"
                else:
                    picks = self._select(ranked, math.ceil(len(ranked) / 2 ** max(i, 1)), m, self.alpha)
                    record["mode"] = "predictor"
        for k, _ in picks:
            self.seen.add(k)
        self.queue = [c for _, c in picks]
        record["asked"] = len(picks)
        self.rounds.append(record)
        self.iteration += 1

    def _select(self, ranked: list[tuple[str, C]], window: int, m: int, alpha: float) -> list[tuple[str, C]]:
        """``ceil(alpha * m)`` best unseen of ``ranked`` (``(key, candidate)``, best first), then random unseen
        ones among its first ``window`` (topped up with the next best when the window runs short)."""
        unseen = [(pos, kc) for pos, kc in enumerate(ranked) if kc[0] not in self.seen]
        n_top = min(math.ceil(alpha * m), m, len(unseen))
        top = [kc for _, kc in unseen[:n_top]]
        rest = unseen[n_top:]
        k = min(m - n_top, len(rest))
        inside = [kc for pos, kc in rest if pos < window]
        if len(inside) >= k:
            return top + self.rng.sample(inside, k)
        return top + inside + [kc for pos, kc in rest if pos >= window][: k - len(inside)]

    def _pretraining_set(self) -> tuple[list[C], list[float]]:
        """At most ``warmup_points`` of the warm-up candidates (a seeded random subset, as eagle's 256
        ``foresight`` training points) and their proxy scores."""
        assert self.warm is not None
        cands, scores = self.warm
        keep = range(len(cands))
        if len(cands) > self.warmup_points:
            keep = sorted(random.Random(f"brp warm-up {self.seed}").sample(keep, self.warmup_points))
        return [cands[j] for j in keep], [scores[j] for j in keep]

    def _proxy_ranked(self) -> list[tuple[str, C]]:
        """The warm-up candidates (one per key), best proxy score first, as ``(key, candidate)``."""
        assert self.warm is not None
        cands, scores = self.warm
        order = sorted(range(len(cands)), key=lambda j: -scores[j])  # stable: ties keep warm-up order
        keys: set[str] = set()
        ranked = []
        for j in order:
            k = self.space.key(cands[j])
            if k not in keys:
                keys.add(k)
                ranked.append((k, cands[j]))
        return ranked

    def _ranked_pool(self) -> list[tuple[str, C]]:
        """The pool as ``(key, candidate)``, best first by the predictor's current weights."""
        pool = self._get_pool()
        if self._ranking is None:
            self._ranking = [int(j) for j in self.predictor.rank(pool)]
        return [(self._pool_keys[j], pool[j]) for j in self._ranking]

    def _train(self, candidates: list[C], values: list[float], epochs: int, data: str) -> None:
        number = len(self.trainings)
        seed = random.Random(f"brp train {self.seed} {number}").randrange(2**31)
        run = self.predictor.fit(candidates, values, epochs=epochs, seed=seed)
        self.trainings.append({"data": data, "n": len(candidates), "epochs": epochs, "iteration": self.iteration,
                               "steps": run["steps"], "seconds": run["seconds"]})
        if data == "history":
            self.trained_on = len(candidates)
        self._ranking = None

    # -- the pool -----------------------------------------------------------------------------------------
    def _get_pool(self) -> list[C]:
        if self._pool is None:
            if self._pool_option is not None:
                cands = list(self._pool_option)
            elif isinstance(self.space, CategoricalSpace) and math.prod(self.space.choices) <= self.pool_size:
                cands = [self.space.from_choices(ch) for ch in itertools.product(*map(range, self.space.choices))]
            else:
                rng = random.Random(f"brp pool {self.seed}")
                cands = [self.space.sample(rng) for _ in range(self.pool_size)]
            keys: set[str] = set()
            self._pool, self._pool_keys = [], []
            for c in cands:
                k = self.space.key(c)
                if k not in keys:
                    keys.add(k)
                    self._pool.append(c)
                    self._pool_keys.append(k)
        return self._pool

    def _as_candidate(self, x: Any) -> C:
        if self.space.contains(x):
            return x
        try:
            return self.space.from_json(x)
        except (InputError, TypeError, ValueError) as exc:
            raise InputError(f"brp option pool: {x!r:.200} is neither a candidate of {self.space.name!r} "
                             f"nor its JSON: {exc}") from None

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "history": [[self.space.to_json(c), None if f == float("-inf") else f] for c, f in self.history],
            "queue": self._to_json(self.queue), "seen": sorted(self.seen), "iteration": self.iteration,
            "trained_on": self.trained_on,
            "warm": None if self.warm is None else [self._to_json(self.warm[0]), list(self.warm[1])],
            "trainings": [dict(t) for t in self.trainings], "rounds": [dict(r) for r in self.rounds],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state, and the predictor's weights by re-running the recorded training runs."""
        super().load_state_dict(state)
        self.history = [(self.space.from_json(c), float("-inf") if f is None else float(f))
                        for c, f in state["history"]]
        self.queue = self._from_json(state["queue"])
        self.seen = set(state["seen"])
        self.iteration = int(state["iteration"])
        self.warm = None if state["warm"] is None else (self._from_json(state["warm"][0]),
                                                        [float(s) for s in state["warm"][1]])
        self.rounds = [dict(r) for r in state["rounds"]]
        recorded = [dict(t) for t in state["trainings"]]
        self.predictor = self._fresh_predictor()  # of the loaded seed
        self.trainings = []
        for t in recorded:
            if t["data"] == "warm-up":
                if self.warm is None:
                    raise InputError("brp state: a warm-up training run is recorded but no warm-up data")
                self._train(*self._pretraining_set(), int(t["epochs"]), "warm-up")
            else:
                part = self.history[: int(t["n"])]
                self._train([c for c, _ in part], [f for _, f in part], int(t["epochs"]), "history")
        self.trainings = recorded  # the recorded wall times, not the replay's
        self.trained_on = int(state["trained_on"])
        self._ranking = None


__all__ = ["ZERO_COST_MODES", "BRPSearch"]
