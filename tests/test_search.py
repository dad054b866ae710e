"""Search strategies and the Study on a small synthetic space: optimum found, state round trip, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devicefit.errors import InputError
from devicefit.strategies import STRATEGIES, Trial, make_strategy
from devicefit.study import Store
from devicefit.study.study import Constraint, Objective, Study

from .toy_study import BitSpace, NoisyProxy, Weighted

ROOT = Path(__file__).resolve().parents[1]
OPTIMUM = float(sum(range(1, 9)))  # all 8 bits set
#: Strategies that run on BitSpace (mutable and categorical); brp needs a graph encoding (tests/test_search_brp.py).
ON_BITS = sorted(n for n in STRATEGIES if n != "brp")


@pytest.mark.parametrize("name", ON_BITS)
def test_every_strategy_finds_the_optimum_of_a_small_space(tmp_path: Path, name: str) -> None:
    space = BitSpace(8)  # 256 candidates
    options = {"population": 16, "tournament": 4} if name == "evolution" else {}
    study = Study(space, Objective(Weighted()), make_strategy(name, space, seed=1, **options), 200,
                  tmp_path / "s.sqlite", progress=False)
    result = study.run()
    assert result.evaluations == 200
    assert result.best.objective == OPTIMUM
    assert len({t.candidate for t in result.trials}) == 200  # distinct candidates


@pytest.mark.parametrize("name", ON_BITS)
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    space = BitSpace(10)
    options = {"population": 8, "tournament": 3} if name == "evolution" else {}
    a = make_strategy(name, space, seed=3, **options)
    score = Weighted()

    def step(s, k: int) -> list:
        asked = s.ask(k)
        s.tell([Trial(c, score.evaluate(space, c)["value"]) for c in asked])
        return asked

    for _ in range(5):
        step(a, 3)
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON
    b = make_strategy(name, space, seed=99, **options)
    b.load_state_dict(state)
    assert [step(a, 2) for _ in range(6)] == [step(b, 2) for _ in range(6)]


def test_warm_up_and_move_reach_the_optimum_sooner(tmp_path: Path) -> None:
    space = BitSpace(10)
    proxy = Objective(NoisyProxy())

    def evaluations_to_optimum(**kw) -> int:
        study = Study(space, Objective(Weighted()), make_strategy("evolution", space, seed=0, population=8,
                                                                  tournament=3, move=kw.get("move", False)),
                      300, tmp_path / f"{sorted(kw.items())}.sqlite", proxy=proxy, progress=False, **kw)
        curve = study.run().best_so_far
        return next(i for i, v in enumerate(curve) if v == float(sum(range(1, 11))))

    plain = evaluations_to_optimum()
    assert evaluations_to_optimum(warmup=200) < plain
    assert evaluations_to_optimum(move=True) < plain


def test_a_warm_up_ranks_only_what_cheap_constraints_allow(tmp_path: Path) -> None:
    """Under a budget the proxy's favourites (the most ones) are infeasible: a cheap constraint (kind "count")
    keeps them out of the warm-up, one that is not cheap (a measurement, say) cannot."""

    class Counted(Weighted):
        kind = "count"

    space = BitSpace(10)

    def first_trials(estimator: Weighted) -> list:
        study = Study(space, Objective(Weighted()), make_strategy("random", space, seed=0), 20,
                      tmp_path / f"{estimator.kind}.sqlite", constraints=[Constraint(estimator, upper=4, field="cost")],
                      warmup=300, proxy=Objective(NoisyProxy()), progress=False)
        return study.run().trials[:20]

    cheap = first_trials(Counted())
    assert all(t.feasible for t in cheap)  # the best-ranked feasible cells come first
    assert max(t.objective for t in cheap) >= 30  # and they are good ones: the best under 4 ones is 7+8+9+10 = 34
    costly = first_trials(Weighted())
    assert not any(t.feasible for t in costly[:5])  # the proxy's favourites first, all over the budget
    # a move scores what the cheap constraint rejects lowest: reinforce's best-of-k picks a feasible one
    moved = Study(space, Objective(Weighted()), make_strategy("reinforce", space, seed=0), 30,
                  tmp_path / "move.sqlite", constraints=[Constraint(Counted(), upper=4, field="cost")], move=True,
                  proxy=Objective(NoisyProxy()), progress=False).run()
    assert moved.evaluations == 30 and moved.rejected < 30


def test_constraints_filter_before_the_objective(tmp_path: Path) -> None:
    space = BitSpace(8)
    cost = Constraint(Weighted(), upper=4, field="cost")
    with pytest.raises(InputError, match="constraints must have distinct names"):
        Study(space, Objective(Weighted()), make_strategy("random", space), 10, tmp_path / "x.sqlite",
              constraints=[Constraint(Weighted(), upper=4), Constraint(Weighted(), lower=1)])
    # an objective that is also constrained (the same number) is allowed: search fast cells, latency <= L
    Study(space, Objective(Weighted(), maximize=False), make_strategy("random", space), 10, tmp_path / "x.sqlite",
          constraints=[Constraint(Weighted(), upper=4)])
    result = Study(space, Objective(NoisyProxy()), make_strategy("random", space, seed=0), 50, tmp_path / "c.sqlite",
                   constraints=[cost], progress=False).run()
    assert result.evaluations == 50 and result.rejected > 0
    assert all(t.values["weighted.cost"] <= 4 for t in result.trials if t.evaluated)
    assert all(not t.feasible for t in result.trials if not t.evaluated)
    with pytest.raises(InputError, match="loosen"):
        Study(space, Objective(NoisyProxy()), make_strategy("random", space, seed=0), 5, tmp_path / "d.sqlite",
              constraints=[Constraint(Weighted(), upper=-1, field="cost")], progress=False).run()


def test_bad_study_settings_fail_before_any_work(tmp_path: Path) -> None:
    space = BitSpace(8)
    with pytest.raises(InputError, match="budget"):
        Study(space, Objective(Weighted()), make_strategy("random", space), 0, tmp_path / "s.sqlite")
    with pytest.raises(InputError, match="proxy"):
        Study(space, Objective(Weighted()), make_strategy("random", space), 5, tmp_path / "s.sqlite", warmup=10)
    with pytest.raises(InputError, match="unknown search strategy"):
        make_strategy("annealing", space)
    with pytest.raises(InputError, match="tournament"):
        make_strategy("evolution", space, population=4, tournament=10)
    assert not (tmp_path / "s.sqlite").exists()


_KILLABLE = """
import sys
sys.path.insert(0, {root!r})
from devicefit.strategies import make_strategy
from devicefit.study.study import Objective, Study
from tests.toy_study import BitSpace, Weighted
import time

class Slow(Weighted):
    def evaluate(self, space, candidate):
        time.sleep(0.02)
        return super().evaluate(space, candidate)

space = BitSpace(10)
r = Study(space, Objective(Slow()), make_strategy("evolution", space, seed=4, population=8, tournament=3), 120,
          {store!r}, progress=False).run()
print(r.evaluations, r.best.candidate, r.best.objective)
"""


def test_a_killed_search_resumes_to_the_same_result(tmp_path: Path) -> None:
    straight = subprocess.run([sys.executable, "-c", _KILLABLE.format(root=str(ROOT), store=str(tmp_path / "a.sqlite"))],
                              capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr
    code = _KILLABLE.format(root=str(ROOT), store=str(tmp_path / "b.sqlite"))
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(tmp_path / "b.sqlite", readonly=True) as s:
        assert 0 < s.count() < 120
    resumed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == straight.stdout
    assert resumed.stdout.split()[0] == "120"
    with Store(tmp_path / "b.sqlite", readonly=True) as s:
        assert s.count() == 120  # exactly the budget: each candidate evaluated once


@pytest.mark.slow
def test_a_search_on_ray_finds_what_the_inline_search_finds(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from devicefit.study import RayExecutor

    space = BitSpace(8)

    def run(store: str, executor=None):
        strategy = make_strategy("evolution", space, seed=2, population=8, tournament=3)
        return Study(space, Objective(Weighted()), strategy, 30, tmp_path / store, executor=executor, batch=4,
                     constraints=[Constraint(Weighted(), upper=6, field="cost")], progress=False).run()

    inline, on_ray = run("inline.sqlite"), run("ray.sqlite", RayExecutor(workers=2))
    assert on_ray.evaluations == inline.evaluations == 30
    assert [t.candidate for t in on_ray.trials] == [t.candidate for t in inline.trials]
    assert on_ray.best is not None and on_ray.best.objective == inline.best.objective
    with Store(tmp_path / "ray.sqlite", readonly=True) as store:  # the driver wrote every result
        assert store.count(status="ok") == store.count()
