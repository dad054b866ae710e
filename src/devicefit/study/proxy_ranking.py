"""How well do zero-cost proxies rank a space's candidates? Score a sample through the evaluation loop,
then rank against a benchmark column (what ``devicefit proxies --space nb201`` runs).

Reference: Abdelfattah et al., arXiv 2101.08134 (Table 1). The sample, the settings and the ranking
metrics follow :mod:`devicefit.proxies.nb201`; scoring is :class:`ZeroCostProxies` under
:func:`evaluate_all`, so the job resumes from its store and runs on any executor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..spaces.base import Space
from .estimators import ZeroCostProxies
from .executors import Executor
from .loop import EvaluationResults, evaluate_all
from .store import Store

JOB = "proxies"


@dataclass
class ProxyRanking:
    """The scored sample and, when the benchmark table is there, each proxy's ranking metrics."""

    store: str
    settings: dict[str, Any]
    cells: int
    computed: int
    reused: int
    truth: str
    records: dict[str, dict[str, Any]]  # arch string -> {"scores", "errors", "seconds"}
    failures: dict[str, int]
    metrics: dict[str, dict[str, float]] | None = None
    metrics_unavailable: str | None = None
    executor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "records"}
        out["resumed"] = self.reused
        return out


def rank_proxies(
    space: Space,
    sample: int,
    estimator: ZeroCostProxies,
    store: str | os.PathLike[str],
    *,
    truth: str | None = None,
    executor: Executor | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> ProxyRanking:
    """Score ``sample`` random NB201 cells (seeded by the estimator's seed) and rank against ``truth``.

    ``truth`` defaults to the dataset's column (:data:`devicefit.proxies.TRUTH_COLUMN`); an unknown column
    fails before any work. The store is claimed for the job's settings (everything but the sample size:
    a larger sample extends a smaller one).
    """
    from ..data import load_nb201_table
    from ..data.datadir import DataFileError
    from ..proxies import TRUTH_COLUMN, proxy_metrics, sample_nb201_cells

    if space.name != "nb201":
        raise InputError(f"proxy ranking needs a benchmark table; only the nb201 space has one, not {space.name!r}")
    cells = sample_nb201_cells(sample, estimator.seed)
    truth_column = truth or TRUTH_COLUMN[estimator.dataset]
    table, no_table = None, None
    try:
        table = load_nb201_table(data_dir=estimator.data_dir)
        table.column(truth_column)  # an unknown --truth fails before any work
    except DataFileError as exc:
        no_table = str(exc)
    settings = {"space": space.settings(), **estimator.settings()}
    with Store(store) as db:
        db.claim(JOB, settings)
        res: EvaluationResults = evaluate_all(space, cells, [estimator], db, executor=executor,
                                              retry_failed=retry_failed, progress=progress, description="proxies")
    evals = res.evaluations[estimator.name]
    records = {}
    for c in cells:
        e = evals[space.identity(c)]
        records[space.to_json(c)] = e.value if e.ok else {"scores": {}, "errors": dict.fromkeys(estimator.proxies,
                                                                                                str(e.error))}
    failures = {n: sum(n in r.get("errors", {}) for r in records.values()) for n in estimator.proxies}
    out = ProxyRanking(store=str(store), settings=settings, cells=len(cells), computed=res.computed,
                       reused=res.reused, truth=truth_column, records=records, failures=failures,
                       executor=(executor.describe() if executor else {"executor": "inline"}))
    if table is None:
        out.metrics_unavailable = no_table
    else:
        try:
            out.metrics = proxy_metrics(records, table, truth_column, estimator.proxies)
        except InputError as exc:  # e.g. too few cells for a ranking metric
            out.metrics_unavailable = str(exc)
    return out
