"""BRP-NAS search (arXiv 2007.08668): the binary relation predictor and the iterative data selection, on a small
encodable toy space (tiny GCNs, few epochs) and, when the data is there, on NAS-Bench-201."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devicefit.errors import InputError
from devicefit.predictors.relation import BinaryRelationPredictor, RelationTrainConfig
from devicefit.spaces.base import CategoricalSpace, EncodableSpace, LabelledGraph, Space
from devicefit.strategies import RandomSearch, Trial
from devicefit.strategies.brp import BRPSearch
from devicefit.study import Estimator
from devicefit.study.study import Objective, Study

from .toy_study import BitSpace

OPS = ("conv", "pool", "skip", "zero")
#: Path score of the toy objective: FIRST[op of a path's first edge] + SECOND[op of its second edge].
FIRST = (0.0, 1.0, 3.0, 2.0)
SECOND = (2.0, 0.0, 1.0, 3.0)


class PathSpace(EncodableSpace[tuple], CategoricalSpace[tuple]):
    """``paths`` parallel paths input -> a -> output of two edges each, one op per edge (4 ops): a cell of
    ``2 * paths`` categorical decisions. Permuting the paths gives an equivalent candidate (same key)."""

    name = "toy-paths"

    def __init__(self, paths: int = 3) -> None:
        self.paths = paths

    def settings(self) -> dict[str, Any]:
        return {"space": self.name, "paths": self.paths}

    def sample(self, rng: random.Random) -> tuple:
        return tuple(rng.randrange(len(OPS)) for _ in range(2 * self.paths))

    def key(self, candidate: tuple) -> str:
        pairs = sorted(zip(candidate[::2], candidate[1::2]))
        return ";".join(f"{a}{b}" for a, b in pairs)

    def to_json(self, candidate: tuple) -> Any:
        return list(candidate)

    def from_json(self, data: Any) -> tuple:
        ok = isinstance(data, list) and len(data) == 2 * self.paths
        if not ok or any(isinstance(x, bool) or x not in range(len(OPS)) for x in data):
            raise InputError(f"toy-paths candidate must be a list of {2 * self.paths} op indices, got {data!r}")
        return tuple(data)

    def build(self, candidate: tuple, **options: Any):
        from torch import nn

        return nn.Identity()

    @property
    def vector_size(self) -> int:
        return 2 * self.paths * len(OPS)

    def encode_vector(self, candidate: tuple) -> np.ndarray:
        out = np.zeros((2 * self.paths, len(OPS)), dtype=np.float32)
        out[np.arange(2 * self.paths), candidate] = 1.0
        return out.ravel()

    @property
    def node_labels(self) -> tuple[str, ...]:
        return ("input", "output", *OPS)

    @property
    def max_nodes(self) -> int:
        return 2 * self.paths + 2

    def encode_graph(self, candidate: tuple) -> LabelledGraph:
        n = 2 * self.paths + 2
        adj = np.zeros((n, n), dtype=np.float32)
        for p in range(self.paths):
            first, second = 1 + 2 * p, 2 + 2 * p
            adj[0, first] = adj[first, second] = adj[second, n - 1] = 1.0
        labels = ("input", *(OPS[o] for o in candidate), "output")
        return LabelledGraph(labels, adj)

    @property
    def choices(self) -> tuple[int, ...]:
        return (len(OPS),) * (2 * self.paths)

    def to_choices(self, candidate: tuple) -> tuple[int, ...]:
        return tuple(candidate)

    def from_choices(self, choices: Any) -> tuple:
        return tuple(choices)


def path_score(candidate: tuple) -> float:
    return float(sum(FIRST[a] + SECOND[b] for a, b in zip(candidate[::2], candidate[1::2])))


SPACE = PathSpace(3)  # 4,096 candidates, 816 keys
OPTIMUM = (2, 3) * 3  # the only candidate of its key
BEST = path_score(OPTIMUM)


@dataclass
class PathScore(Estimator):
    kind = "path-score"

    @property
    def name(self) -> str:
        return "path_score"

    def settings(self) -> dict[str, Any]:
        return {}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        return {"value": path_score(candidate)}


#: A tiny predictor for unit tests (the paper's is 4 x 600).
TINY = {"hidden": 32, "layers": 3, "epochs": 60, "batch_size": 16, "lr": 2e-3}


def brp(seed: int = 0, **options: Any) -> BRPSearch:
    return BRPSearch(SPACE, seed, **{**TINY, "budget": 40, "iterations": 4, **options})


def step(strategy: Any, k: int) -> list:
    asked = strategy.ask(k)
    strategy.tell([Trial(c, path_score(c)) for c in asked])
    return asked


# -- the predictor -------------------------------------------------------------------------------------------
def test_relation_predictor_learns_a_ranking_of_held_out_pairs() -> None:
    rng = random.Random(0)
    cands = [SPACE.sample(rng) for _ in range(200)]
    train, test = cands[:80], cands[80:]
    pred = BinaryRelationPredictor(SPACE, hidden=32, layers=3, train=RelationTrainConfig(epochs=80, batch_size=16,
                                                                                         lr=2e-3), seed=0)
    untrained = pred.pairwise_accuracy(test, [path_score(c) for c in test])
    record = pred.fit(train, [path_score(c) for c in train], seed=1)
    assert record["steps"] == 80 * 5 and record["seconds"] > 0
    accuracy = pred.pairwise_accuracy(test, [path_score(c) for c in test])
    assert accuracy > 0.8 > untrained + 0.1
    # P(a > b) and the ranking agree with the objective on the held-out candidates
    order = pred.rank(test)
    top = [path_score(test[i]) for i in order[:10]]
    assert statistics.mean(top) > statistics.mean(path_score(c) for c in test) + 2
    p = pred.prob_better([OPTIMUM] * 5, test[:5])
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))


def test_win_counts_are_exact_pairwise_wins() -> None:
    rng = random.Random(1)
    cands = [SPACE.sample(rng) for _ in range(20)]
    pred = BinaryRelationPredictor(SPACE, hidden=8, layers=2, seed=3)
    pred.fit(cands, [path_score(c) for c in cands], epochs=3, seed=0)
    wins = pred.win_counts(cands)
    brute = [sum(pred.prob_better([a], [b])[0] > 0.5 for j, b in enumerate(cands) if j != i)
             for i, a in enumerate(cands)]
    assert wins.tolist() == brute
    assert list(wins[pred.rank(cands)]) == sorted(wins, reverse=True)


def test_training_is_deterministic_and_leaves_torch_state_alone() -> None:
    rng = random.Random(2)
    cands = [SPACE.sample(rng) for _ in range(40)]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    threads = torch.get_num_threads()

    def trained() -> np.ndarray:
        pred = BinaryRelationPredictor(SPACE, hidden=16, layers=2, seed=5)
        pred.fit(cands, [path_score(c) for c in cands], epochs=5, seed=7)
        return pred.win_counts(cands)

    assert np.array_equal(trained(), trained())
    assert torch.equal(torch.rand(1), before)  # the global torch RNG is untouched
    assert torch.get_num_threads() == threads


# -- the search --------------------------------------------------------------------------------------------
def evaluations_to_optimum(curve: list) -> int:
    return next((i + 1 for i, v in enumerate(curve) if v == BEST), len(curve) + 1000)


def test_brp_finds_the_optimum_and_beats_random_search(tmp_path: Path) -> None:
    budget = 48  # 4 rounds of 10, then 8 of the ranking; the optimum came at 22-34 over seeds 0-5
    brp_needs, random_needs = [], []
    for seed in range(3):
        strategy = brp(seed)
        result = Study(SPACE, Objective(PathScore()), strategy, budget, tmp_path / f"b{seed}.sqlite",
                       progress=False).run()
        assert result.evaluations == budget
        assert len({SPACE.key(SPACE.from_identity(t.candidate)) for t in result.trials}) == budget  # distinct keys
        brp_needs.append(evaluations_to_optimum(result.best_so_far))
        assert [r["mode"] for r in strategy.rounds][:5] == ["random", "predictor", "predictor", "predictor", "exploit"]
        assert len(strategy.train_seconds) == len(strategy.rounds) - 1 and min(strategy.train_seconds) > 0
        rand = RandomSearch(SPACE, seed)
        asked = [c for _ in range(400) for c in rand.ask(1)]
        random_needs.append(next((i + 1 for i, c in enumerate(asked) if c == OPTIMUM), 1400))
    assert max(brp_needs) <= budget, brp_needs
    assert statistics.mean(brp_needs) < statistics.mean(random_needs), (brp_needs, random_needs)


def test_same_seed_and_tells_give_the_same_asks() -> None:
    a, b, c = (brp(seed, budget=24, epochs=30) for seed in (4, 4, 5))
    asks_a = [step(a, 5) for _ in range(6)]
    asks_b = [step(b, 5) for _ in range(6)]
    asks_c = [step(c, 5) for _ in range(6)]
    assert asks_a == asks_b
    assert asks_a != asks_c
    assert len(a.trainings) == 4  # the rounds of 6 after the first were chosen by a trained predictor
    keys = [SPACE.key(x) for batch in asks_a for x in batch]
    assert len(set(keys)) == len(keys) == 30


@pytest.mark.parametrize(("retrain", "sizes"), [(True, [5, 10, 15, 20]), (False, [5, 10, 15])])
def test_after_the_budget_rounds_exploit_and_retrain_if_asked(retrain: bool, sizes: list) -> None:
    s = brp(1, budget=15, iterations=3, retrain=retrain, epochs=9)
    for _ in range(5):
        step(s, 5)
    assert [r["mode"] for r in s.rounds] == ["random", "predictor", "predictor", "exploit", "exploit"]
    assert [t["n"] for t in s.trainings] == sizes
    # grown as eagle's up to the last budget round, then a top-up of one round's epochs (the weights carry over)
    assert [t["epochs"] for t in s.trainings] == [3, 6, 9, 3][: len(sizes)]


def test_a_resumed_study_replays_to_the_same_result(tmp_path: Path) -> None:
    def run() -> Any:
        return Study(SPACE, Objective(PathScore()), brp(3, budget=20), 20, tmp_path / "s.sqlite",
                     progress=False).run()

    first, again = run(), run()  # the second run replays every ask and tell from the store
    assert [t.candidate for t in first.trials] == [t.candidate for t in again.trials]
    assert first.best_so_far == again.best_so_far


@pytest.mark.parametrize("warm", [False, True])
def test_state_dict_round_trip_continues_identically(warm: bool) -> None:
    a = brp(2, budget=20)
    if warm:
        rng = random.Random(9)
        pool = [SPACE.sample(rng) for _ in range(40)]
        a.warm_up(pool, [path_score(x) + rng.random() for x in pool])
    for _ in range(4):
        step(a, 3)  # two rounds of 5 and part of a third: the queue is not empty
    assert a.queue
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))  # plain JSON
    b = brp(99, budget=20)
    b.load_state_dict(state)
    assert b.train_seconds == a.train_seconds
    assert [step(a, 2) for _ in range(8)] == [step(b, 2) for _ in range(8)]
    assert b.state_dict()["trainings"][-1]["n"] == a.state_dict()["trainings"][-1]["n"]


def test_zero_cost_warm_up_pretrains_or_ranks() -> None:
    rng = random.Random(3)
    pool = [SPACE.sample(rng) for _ in range(300)]
    scores = [path_score(x) + rng.gauss(0, 0.5) for x in pool]
    plain = brp(0, budget=40)
    pre = brp(0, budget=40, warmup_points=100)
    pre.warm_up(pool, scores)
    ranked = brp(0, budget=40, zero_cost="rank")
    ranked.warm_up(pool, scores)
    first = {name: s.ask(10) for name, s in (("plain", plain), ("pre", pre), ("rank", ranked))}
    assert pre.trainings[0]["data"] == "warm-up" and pre.rounds[0]["mode"] == "predictor"
    assert pre.trainings[0]["n"] == 100  # a subset of warmup_points of the 300 warm-up candidates
    assert ranked.rounds[0]["mode"] == "proxy-rank" and not ranked.trainings
    mean = {name: statistics.mean(map(path_score, cands)) for name, cands in first.items()}
    assert mean["pre"] > mean["plain"] + 2 and mean["rank"] > mean["plain"] + 2
    best = max(pool, key=lambda x: scores[pool.index(x)])
    assert first["rank"][0] == best  # the top proxy-ranked candidate comes first


def test_latency_predictor_initialises_the_trunk(tmp_path: Path) -> None:
    from devicefit.predictors import GCNPredictor, TrainConfig

    rng = random.Random(4)
    cands = [SPACE.sample(rng) for _ in range(30)]
    latency = GCNPredictor(space=SPACE, hidden=32, layers=3, train=TrainConfig(max_epochs=2, min_cells_for_val=0))
    latency.fit(cands, [1.0 + sum(c) for c in cands])
    path = latency.save(tmp_path / "lat")
    plain, init = brp(0), brp(0, init=str(path))
    source = {k: v for k, v in latency.model.state_dict().items() if not k.startswith("fc.")}
    trunk = init.predictor.model.trunk.state_dict()
    assert set(trunk) == set(source)
    assert all(torch.equal(trunk[k], source[k]) for k in source)
    assert not torch.equal(plain.predictor.model.trunk.state_dict()["gc.0.weight"], trunk["gc.0.weight"])
    assert brp(0, init=latency).predictor.model.trunk.state_dict().keys() == trunk.keys()  # an object works too
    with pytest.raises(InputError, match="init"):
        brp(0, init=str(path), hidden=16)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": 3, "iterations": 5}, "iterations"),
        ({"alpha": 1.5}, "alpha"),
        ({"zero_cost": "proxy"}, "zero_cost"),
        ({"hidden": 0}, "hidden"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"pool": "0123"}, "pool"),
        ({"pool": [[9, 9, 9, 9, 9, 9]]}, "pool"),
        ({"init": 3}, "init"),
    ],
)
def test_bad_options_raise_input_error(options: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        brp(0, **options)


def test_needs_an_encodable_space_and_a_valid_seed() -> None:
    with pytest.raises(InputError, match="encodable"):
        BRPSearch(BitSpace(4))
    with pytest.raises(InputError, match="seed"):
        BRPSearch(SPACE, -1)


def test_a_given_pool_is_searched_and_exhausted() -> None:
    pool = [[a, b, 0, 0, 0, 0] for a in range(4) for b in range(4)]  # 16 candidates as JSON
    s = brp(0, budget=8, iterations=2, pool=pool)
    asked = []
    while batch := step(s, 3):
        asked.extend(batch)
    assert sorted(asked) == sorted(tuple(p) for p in pool)


# -- NAS-Bench-201 -----------------------------------------------------------------------------------------
def test_brp_beats_random_search_on_nb201(data_root: Path, tmp_path: Path) -> None:
    from devicefit.spaces import NB201Space
    from devicefit.study.estimators import BenchmarkAccuracy

    space = NB201Space()
    objective = Objective(BenchmarkAccuracy("c10_val_200ep", data_dir=str(data_root)))
    budget = 30

    def best(strategy: Any, name: str) -> float:
        return Study(space, objective, strategy, budget, tmp_path / f"{name}.sqlite", progress=False).run().best.objective

    found = [best(BRPSearch(space, seed, budget=budget, iterations=3, **TINY), f"brp{seed}") for seed in range(3)]
    baseline = [best(RandomSearch(space, seed), f"random{seed}") for seed in range(10)]
    assert statistics.median(found) > statistics.median(baseline), (found, baseline)
