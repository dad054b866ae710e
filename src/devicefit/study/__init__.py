"""Studies: estimators, the results store, executors, the evaluation loop and Pareto fronts.

    from devicefit.study import evaluate_all, BenchmarkAccuracy, MeasuredLatency, ProcessExecutor
    results = evaluate_all(space, candidates, [BenchmarkAccuracy("c10_val_200ep"), MeasuredLatency()],
                           "runs/study.sqlite", executor=ProcessExecutor(2))
"""

from .estimator import Estimator, EstimatorFailure, candidate_seed, file_sha256
from .estimators import (
    BenchmarkAccuracy,
    CountedCost,
    DeviceTableLatency,
    MeasuredLatency,
    PredictedCost,
    ZeroCostProxies,
)
from .executors import EXECUTORS, Executor, InlineExecutor, Outcome, ProcessExecutor, RayExecutor, make_executor
from .loop import EvaluationResults, evaluate_all
from .pareto import hypervolume_2d, pareto_front, pareto_mask
from .policy_estimators import PolicyAccuracy, PolicyCost
from .policy_search import PolicySearchResult, search_policy
from .search_job import search
from .store import Evaluation, Store, StoreError, StoreLockedError
from .study import Constraint, Objective, SearchResult, Study, TrialRecord
from .tasks import TaskGrid

__all__ = [
    "EXECUTORS",
    "BenchmarkAccuracy",
    "Constraint",
    "CountedCost",
    "DeviceTableLatency",
    "Estimator",
    "EstimatorFailure",
    "Evaluation",
    "EvaluationResults",
    "Executor",
    "InlineExecutor",
    "MeasuredLatency",
    "Objective",
    "Outcome",
    "PolicyAccuracy",
    "PolicyCost",
    "PolicySearchResult",
    "PredictedCost",
    "ProcessExecutor",
    "RayExecutor",
    "SearchResult",
    "Store",
    "StoreError",
    "StoreLockedError",
    "Study",
    "TaskGrid",
    "TrialRecord",
    "ZeroCostProxies",
    "candidate_seed",
    "evaluate_all",
    "file_sha256",
    "hypervolume_2d",
    "make_executor",
    "pareto_front",
    "pareto_mask",
    "search",
    "search_policy",
]
