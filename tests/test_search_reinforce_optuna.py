"""REINFORCE and Optuna strategies on the synthetic bit space: optimum found, state round trip, replay and
resume through the Study, zero-cost warm-up and move, infeasible trials, and refusals of bad options."""

from __future__ import annotations

import importlib.util
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from devicefit.errors import InputError
from devicefit.spaces.base import CategoricalSpace
from devicefit.strategies.base import Strategy, Trial
from devicefit.strategies.optuna_sampler import OptunaSearch
from devicefit.strategies.reinforce import ReinforceSearch, percentile_ranks
from devicefit.study.study import Constraint, Objective, Study

from .toy_study import BitSpace, IntSpace, NoisyProxy, Weighted

HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="optuna is not installed (pip install 'devicefit[optuna]')")

WEIGHTED, PROXY = Weighted(), NoisyProxy()

#: name -> factory(space, seed) of every strategy variant under test
MAKERS: dict[str, Callable[[Any, int], Strategy]] = {
    "reinforce": lambda space, seed: ReinforceSearch(space, seed=seed),
    "optuna-tpe": lambda space, seed: OptunaSearch(space, seed=seed),
    "optuna-nsga2": lambda space, seed: OptunaSearch(space, seed=seed, sampler="nsga2",
                                                     sampler_options={"population_size": 8}),
    "optuna-random": lambda space, seed: OptunaSearch(space, seed=seed, sampler="random"),
}


def variants(*names: str) -> list:
    """``names`` as pytest parameters, the Optuna ones skipped when Optuna is not installed."""
    return [pytest.param(n, marks=[needs_optuna] if n.startswith("optuna") else []) for n in names]


LEARNERS = variants("reinforce", "optuna-tpe", "optuna-nsga2")
ALL = variants(*sorted(MAKERS))


def optimum(n: int) -> float:
    return float(sum(range(1, n + 1)))


def value(space: BitSpace, c: tuple) -> float:
    return WEIGHTED.evaluate(space, c)["value"]


def step(strategy: Strategy, space: BitSpace, k: int) -> list:
    asked = strategy.ask(k)
    strategy.tell([Trial(c, value(space, c)) for c in asked])
    return asked


def evaluations_to_optimum(strategy: Strategy, space: BitSpace, budget: int) -> int:
    """Ask/tell one at a time (as the study does with batch 1); the budget when the optimum is not found."""
    for i in range(budget):
        (c,) = strategy.ask(1)
        v = value(space, c)
        strategy.tell([Trial(c, v)])
        if v == optimum(space.n):
            return i
    return budget


class RaggedSpace(CategoricalSpace[tuple]):
    """Three decisions with 3, 1 and 4 options (a policy matrix with padding)."""

    name = "toy-ragged"

    @property
    def choices(self) -> tuple[int, ...]:
        return (3, 1, 4)

    def sample(self, rng: random.Random) -> tuple:
        return tuple(rng.randrange(k) for k in self.choices)

    def key(self, candidate: tuple) -> str:
        return ",".join(map(str, candidate))

    def to_json(self, candidate: tuple) -> Any:
        return list(candidate)

    def from_json(self, data: Any) -> tuple:
        if not isinstance(data, list) or len(data) != 3 or any(not 0 <= int(c) < k for c, k in zip(data, self.choices)):
            raise InputError(f"ragged candidate out of range: {data!r}")
        return tuple(int(c) for c in data)

    def build(self, candidate: tuple, **options: Any):
        raise NotImplementedError

    def to_choices(self, candidate: tuple) -> tuple[int, ...]:
        return candidate

    def from_choices(self, choices: Sequence[int]) -> tuple:
        return self.from_json(list(choices))


# -- search quality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LEARNERS)
def test_finds_the_optimum_through_a_study(tmp_path: Path, name: str) -> None:
    space = BitSpace(8)  # 256 candidates; seeds 0..19 all reach the optimum within 120 in direct runs
    result = Study(space, Objective(Weighted()), MAKERS[name](space, 0), 120, tmp_path / "s.sqlite",
                   progress=False).run()
    assert result.evaluations == 120
    assert result.best.objective == optimum(8)
    assert len({t.candidate for t in result.trials}) == 120  # distinct candidates


@pytest.mark.parametrize("name", LEARNERS)
def test_learning_beats_uniform_sampling_on_average(name: str) -> None:
    space = BitSpace(10)  # distinct uniform draws need (1024 + 1) / 2 = 512.5 evaluations on average
    runs = [evaluations_to_optimum(MAKERS[name](space, seed), space, 400) for seed in range(8)]
    assert statistics.mean(runs) < 200, runs


def test_reinforce_warm_up_and_move_reach_the_optimum_sooner() -> None:
    space = BitSpace(10)

    def mean_to_optimum(warmup: int = 0, move: bool = False) -> float:
        runs = []
        for seed in range(10):
            s = ReinforceSearch(space, seed=seed)
            if warmup:  # as Study does: a pool of random candidates scored by the proxy
                rng = random.Random(f"warm-up {seed}")
                pool = [space.sample(rng) for _ in range(warmup)]
                s.warm_up(pool, [PROXY.evaluate(space, c)["value"] for c in pool])
            if move:
                s.set_scorer(lambda cs: [PROXY.evaluate(space, c)["value"] for c in cs])
            runs.append(evaluations_to_optimum(s, space, 600))
        return statistics.mean(runs)

    plain = mean_to_optimum()
    assert mean_to_optimum(warmup=200) < plain / 2
    assert mean_to_optimum(move=True) < plain


def test_reinforce_warm_up_informs_the_policy_without_saturating_it() -> None:
    space = BitSpace(10)
    rng = random.Random("warm-up")
    pool = [space.sample(rng) for _ in range(3000)]  # the benchmark's warm-up size
    s = ReinforceSearch(space, seed=0)
    s.warm_up(pool, [WEIGHTED.evaluate(space, c)["value"] for c in pool])  # a perfect proxy
    probs = s.probabilities()
    assert s.most_likely() == tuple([1] * 10)  # it learnt the proxy's favourite
    # bounded by warmup_span: the objective can still move it (the search's own lr saturates it at 3000 steps)
    assert all(0.003 < p < 0.997 for row in probs for p in row), probs
    saturated = ReinforceSearch(space, seed=0, warmup_span=1500.0)  # lr 0.5 over 3000 updates: the old warm-up
    saturated.warm_up(pool, [WEIGHTED.evaluate(space, c)["value"] for c in pool])
    assert min(p for row in saturated.probabilities() for p in row) < 1e-6


@pytest.mark.parametrize("name", variants("reinforce", "optuna-tpe"))
def test_exhausted_space_ends_the_study(tmp_path: Path, name: str) -> None:
    space = BitSpace(3)  # 8 candidates
    result = Study(space, Objective(Weighted()), MAKERS[name](space, 0), 20, tmp_path / "s.sqlite",
                   progress=False).run()
    assert result.evaluations == 8 and result.best.objective == optimum(3)
    assert len({t.candidate for t in result.trials}) == 8


# -- determinism: state, replay, resume ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    space = BitSpace(10)
    a = MAKERS[name](space, 3)
    for _ in range(12):
        step(a, space, 3)
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))  # plain JSON
    b = MAKERS[name](space, 99)
    b.load_state_dict(state)
    assert [step(a, space, 2) for _ in range(10)] == [step(b, space, 2) for _ in range(10)]


@pytest.mark.parametrize("name", LEARNERS)
def test_state_with_pending_asks_continues_identically(name: str) -> None:
    space = BitSpace(10)
    a = MAKERS[name](space, 5)
    for _ in range(10):
        step(a, space, 2)
    pending = a.ask(3)
    b = MAKERS[name](space, 5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for s in (a, b):
        s.tell([Trial(c, value(space, c)) for c in pending])
    assert [step(a, space, 1) for _ in range(15)] == [step(b, space, 1) for _ in range(15)]


def test_reinforce_state_with_move_and_warm_up_continues_identically() -> None:
    space = BitSpace(10)
    scorer = lambda cs: [PROXY.evaluate(space, c)["value"] for c in cs]  # noqa: E731
    a = ReinforceSearch(space, seed=2, lr=0.1)
    pool = [space.sample(random.Random(0)) for _ in range(30)]
    a.warm_up(pool, scorer(pool))
    a.set_scorer(scorer)
    for _ in range(5):
        step(a, space, 2)
    b = ReinforceSearch(space, seed=2, lr=0.1)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    b.set_scorer(scorer)
    assert [step(a, space, 2) for _ in range(8)] == [step(b, space, 2) for _ in range(8)]


@pytest.mark.parametrize("name", ALL)
def test_replaying_the_same_tells_gives_the_same_asks(name: str) -> None:
    space = BitSpace(10)
    a = MAKERS[name](space, 7)
    history = []
    for _ in range(15):
        asked = a.ask(2)
        told = [Trial(c, value(space, c), feasible=sum(c) <= 7) for c in asked]  # some infeasible
        a.tell(told)
        history.append((asked, told))
    replay = MAKERS[name](space, 7)  # what a resumed Study does: same seed, same asks and tells
    for asked, told in history:
        assert replay.ask(2) == asked
        replay.tell(told)
    assert MAKERS[name](space, 8).ask(4) != MAKERS[name](space, 7).ask(4)  # the seed matters


@pytest.mark.parametrize("name,options", [
    ("reinforce", {}),
    ("reinforce", {"warmup": 50, "move": True}),
    pytest.param("optuna-tpe", {}, marks=needs_optuna),
    pytest.param("optuna-nsga2", {}, marks=needs_optuna),
])
def test_a_study_run_in_two_parts_equals_one_run(tmp_path: Path, name: str, options: dict) -> None:
    """Budget is not a claimed setting: budget 30 then budget 60 on one store is one run of budget 60."""
    space = BitSpace(10)
    extra = {"proxy": Objective(NoisyProxy())} if options else {}
    constraints = [Constraint(Weighted(), upper=7, field="cost")]  # infeasible candidates are told too

    def run(budget: int, store: str):
        return Study(space, Objective(Weighted()), MAKERS[name](space, 1), budget, tmp_path / store,
                     constraints=constraints, progress=False, **options, **extra).run()

    first = run(30, "parts.sqlite")
    resumed = run(60, "parts.sqlite")
    straight = run(60, "straight.sqlite")
    assert first.evaluations == 30 and resumed.evaluations == straight.evaluations == 60
    assert resumed.rejected > 0
    key = lambda r: [(t.candidate, t.feasible, t.objective, t.evaluated) for t in r.trials]  # noqa: E731
    assert key(resumed) == key(straight)
    assert key(resumed)[: len(first.trials)] == key(first)
    assert resumed.best.candidate == straight.best.candidate and resumed.best_so_far == straight.best_so_far


# -- infeasible and failed trials ------------------------------------------------------------------------------
def test_reinforce_rewards_failures_with_the_lowest_reward_seen() -> None:
    space = BitSpace(4)
    s = ReinforceSearch(space, seed=0)
    before = s.state_dict()
    s.tell([Trial((1, 1, 0, 0), None), Trial((0, 0, 1, 1), 9.0, feasible=False)])  # nothing to compare with yet
    assert s.state_dict()["logits"] == before["logits"] and s.adam_step == 0
    s.tell([Trial((1, 0, 0, 0), 4.0), Trial((0, 1, 0, 0), 2.0), Trial((1, 1, 1, 1), None)])
    assert s.lowest == 2.0 and s.adam_step == 3  # the failure was an update with reward 2
    numerator = denominator = 0.0
    for reward in (4.0, 2.0, 2.0):
        numerator, denominator = 0.9 * numerator + 0.1 * reward, 0.9 * denominator + 0.1
    assert (s.numerator, s.denominator) == pytest.approx((numerator, denominator))
    assert all(abs(x) < 10 for row in s.state_dict()["logits"] for x in row)


@needs_optuna
def test_optuna_tells_failures_as_fail_then_as_the_lowest_value() -> None:
    from optuna.trial import TrialState

    space = BitSpace(6)
    s = OptunaSearch(space, seed=0)
    a, b, c = s.ask(3)
    s.tell([Trial(a, None), Trial(b, 3.0), Trial(c, 8.0, feasible=False)])
    trials = s.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.value for t in trials[1:]] == [3.0, 3.0]


@needs_optuna
def test_optuna_learns_a_candidate_it_did_not_ask() -> None:
    space = BitSpace(6)
    s = OptunaSearch(space, seed=0)
    s.tell([Trial((1, 1, 1, 1, 1, 1), 21.0)])
    assert s.study.best_value == 21.0
    assert (1, 1, 1, 1, 1, 1) not in [c for _ in range(20) for c in s.ask(1)]  # never asked again


@needs_optuna
def test_optuna_multi_objective_nsga2() -> None:
    space = BitSpace(8)
    s = OptunaSearch(space, seed=0, sampler="nsga2", n_objectives=2, sampler_options={"population_size": 8})

    def multi_step(k: int) -> list:
        asked = s.ask(k)
        s.tell([Trial(c, value(space, c), more=(-float(sum(c)),)) for c in asked])
        return asked

    for _ in range(10):
        multi_step(4)
    front = s.study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    restored = OptunaSearch(space, seed=0, sampler="nsga2", n_objectives=2, sampler_options={"population_size": 8})
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert restored.ask(3) == s.ask(3)
    with pytest.raises(InputError, match="1 more objective"):
        s.tell([Trial((0,) * 8, 1.0)])


# -- other spaces ----------------------------------------------------------------------------------------------
@needs_optuna
def test_ragged_decisions() -> None:
    space = RaggedSpace()
    best = (2, 0, 3)
    for strategy in (ReinforceSearch(space, seed=0), OptunaSearch(space, seed=0)):
        found = []
        for _ in range(12):
            (c,) = strategy.ask(1)
            found.append(c)
            strategy.tell([Trial(c, float(sum(c)))])
        assert len(set(found)) == 12 and best in found
        assert all(space.contains(c) for c in found)
    probs = ReinforceSearch(space, seed=0).probabilities()
    assert [len(p) for p in probs] == [3, 1, 4] and all(sum(p) == pytest.approx(1.0) for p in probs)


@needs_optuna
def test_nb201_space() -> None:
    from devicefit.spaces import NB201Space

    space = NB201Space()
    for strategy in (ReinforceSearch(space, seed=0), OptunaSearch(space, seed=0)):
        asked = strategy.ask(6)
        assert len({space.key(c) for c in asked}) == 6
        strategy.tell([Trial(c, float(sum(space.to_choices(c)))) for c in asked])
    assert OptunaSearch(space).study.ask().number == 0
    assert isinstance(ReinforceSearch(space, seed=0).most_likely(), type(asked[0]))


def test_percentile_ranks() -> None:
    assert percentile_ranks([3.0, 1.0, 2.0, 2.0]) == [100.0, 0.0, 50.0, 50.0]
    assert percentile_ranks([5.0]) == [50.0]
    assert percentile_ranks([1e-30, 1e30]) == [0.0, 100.0]
    s = ReinforceSearch(BitSpace(2), seed=0)  # a NaN or missing proxy score ranks lowest
    s.warm_up([(0, 0), (1, 1), (0, 1)], [float("nan"), 2.0, 1.0])
    assert s.most_likely() == (1, 1)


# -- refusals --------------------------------------------------------------------------------------------------
def test_bad_reinforce_options_raise_input_error() -> None:
    bits = BitSpace(4)
    for make in (ReinforceSearch, OptunaSearch):  # refused before Optuna is imported
        with pytest.raises(InputError, match="categorical space"):
            make(IntSpace())
    for lr in (0, -0.1, float("nan"), "0.1"):
        with pytest.raises(InputError, match="lr"):
            ReinforceSearch(bits, lr=lr)
    with pytest.raises(InputError, match="ema_momentum"):
        ReinforceSearch(bits, ema_momentum=1.0)
    with pytest.raises(InputError, match="move_samples"):
        ReinforceSearch(bits, move_samples=0)
    with pytest.raises(InputError, match="logits of shape"):
        ReinforceSearch(BitSpace(5)).load_state_dict(ReinforceSearch(bits).state_dict())
    with pytest.raises(InputError, match="warm-up got 2 candidates but 1 scores"):
        ReinforceSearch(bits).warm_up([(0, 0, 0, 0), (1, 1, 1, 1)], [1.0])


@needs_optuna
def test_bad_optuna_options_raise_input_error() -> None:
    bits = BitSpace(4)
    with pytest.raises(InputError, match="unknown optuna sampler 'cmaes'"):
        OptunaSearch(bits, sampler="cmaes")
    with pytest.raises(InputError, match="sampler_options"):
        OptunaSearch(bits, sampler_options={"no_such_option": 1})
    with pytest.raises(InputError, match="n_objectives"):
        OptunaSearch(bits, n_objectives=0)
    with pytest.raises(InputError, match="cannot be loaded"):
        OptunaSearch(bits, sampler="random").load_state_dict(OptunaSearch(bits).state_dict())
    with pytest.raises(InputError, match="cannot be loaded"):
        OptunaSearch(BitSpace(5)).load_state_dict(OptunaSearch(bits).state_dict())
    with pytest.raises(InputError, match="cannot be loaded"):
        OptunaSearch(bits, n_objectives=2).load_state_dict(OptunaSearch(bits).state_dict())


def test_missing_optuna_is_an_input_error_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if Optuna were not installed
    with pytest.raises(InputError, match=r"pip install 'devicefit\[optuna\]'"):
        OptunaSearch(BitSpace(4))


def test_marginal_policy_gradient_matches_finite_differences() -> None:
    """The bounded agent's log-probability of the observed action and its gradient (arXiv 1806.05134): the mass
    of a bound when the action is clipped, the density inside."""
    import math

    from devicefit.strategies.bounded_rl import marginal_log_prob_grad

    for x, mu, sigma in ((-0.7, 0.4, 0.8), (3.9, 2.1, 1.3), (1.2, 1.5, 0.6)):
        _, g_mu, g_ls = marginal_log_prob_grad(x, mu, sigma, 0.0, 3.0)
        h = 1e-6
        num_mu = (marginal_log_prob_grad(x, mu + h, sigma, 0.0, 3.0)[0] -
                  marginal_log_prob_grad(x, mu - h, sigma, 0.0, 3.0)[0]) / (2 * h)
        num_ls = (marginal_log_prob_grad(x, mu, sigma * math.exp(h), 0.0, 3.0)[0] -
                  marginal_log_prob_grad(x, mu, sigma * math.exp(-h), 0.0, 3.0)[0]) / (2 * h)
        assert g_mu == pytest.approx(num_mu, rel=1e-5) and g_ls == pytest.approx(num_ls, rel=1e-5)
    below = math.exp(marginal_log_prob_grad(-1.0, 0.5, 1.0, 0.0, 3.0)[0])
    assert below == pytest.approx(0.5 * math.erfc(0.5 / math.sqrt(2)))  # P(x <= 0) for N(0.5, 1)
