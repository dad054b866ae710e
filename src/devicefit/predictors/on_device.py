"""Fit or evaluate a predictor on one device's table: what ``devicefit predictor fit / evaluate / pretrain`` do.

:func:`evaluate_on_device` trains on ``n_train`` random candidates of the table (fixed by ``seed``) and
reports :func:`~.base.evaluate` on all the others, with the bracket that the table's own measurement noise
puts on within +-10 % (:func:`~.ceiling.measurement_ceiling`); :func:`fit_on_device` does the same but may
train on the whole table. Both return a :class:`PredictorEvaluation`, the fitted predictor included.

Few-shot transfer needs a pre-trained trunk (:mod:`.trunk`). Given one (``trunk=``, a file or a
:class:`~.trunk.TransferTrunk`), it is used as is, and refused when it was pre-trained on a device that
must be left out. Without one, the trunk of the data directory's tables (minus those left out) is read
from the trunk cache, or pre-trained once and saved there (:func:`~.trunk.cached_trunk`).

Which source tables are left out is explicit, never guessed from a name the user chose:

- a device of the data directory (``device_or_table`` a name): its whole family
  (:func:`~.transfer.device_family`: one chip's batch sizes and precisions are near-duplicates), plus
  ``exclude``;
- a table of the user's own (``device_or_table`` a :class:`~devicefit.data.LatencyTable`, the CLI's
  ``--table``): only the devices named in ``exclude``; its column name is the user's and may well
  coincide with a data-directory device that is not the same machine.

The result records the sources and the left-out devices (:class:`TrunkUse`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InputError, UnknownNameError
from ..spaces import EncodableSpace, NB201Space
from .base import Predictor, check_seed, evaluate, ordered, split_table
from .ceiling import MeasurementCeiling, measurement_ceiling
from .registry import make_predictor
from .transfer import TransferPredictor, device_family
from .trunk import TransferTrunk, TrunkSettings, cached_trunk, check_trunk_sources, load_trunk

if TYPE_CHECKING:
    from ..data.latency_table import LatencyTable


@dataclass(frozen=True)
class TrunkUse:
    """Where a transfer predictor's trunk came from and what it was pre-trained on."""

    #: the source devices the trunk was pre-trained on
    sources: tuple[str, ...]
    #: devices left out of the sources: for a trunk of this call, every one; for a given trunk, ``exclude``
    excluded: tuple[str, ...]
    #: the target's device family that had to be left out (devices of the data directory), else None
    excluded_family: str | None
    #: the trunk file read or written (None when the trunk was given as an object)
    path: str | None
    #: True when this call pre-trained the trunk (nothing saved matched its sources, settings and seed)
    pretrained: bool
    #: seconds this call spent getting the trunk (pre-training, or reading the cache)
    seconds: float


@dataclass(frozen=True)
class PredictorEvaluation:
    """A predictor fitted on a device's table, and how it did on the table's other candidates."""

    predictor: Predictor = field(repr=False, compare=False)
    device: str
    kind: str
    unit: str
    n_train: int
    n_test: int
    fit_seconds: float
    #: ``devicefit.ranking.regression_report`` on the held-out candidates (empty when there are none)
    metrics: Mapping[str, float]
    #: the twin-cell bounds on within +-10 % that the table's measurement noise allows (NB201 tables only)
    ceiling: MeasurementCeiling | None
    #: the transfer trunk used (kind ``transfer`` only)
    trunk: TrunkUse | None

    def as_dict(self) -> dict[str, Any]:
        """A flat JSON-able summary (what ``devicefit predictor evaluate --json`` prints)."""
        out: dict[str, Any] = {
            "device": self.device, "kind": self.kind, "unit": self.unit, "n_train": self.n_train,
            "n_test": self.n_test, "fit_seconds": round(self.fit_seconds, 3), **self.metrics,
        }
        if self.ceiling is not None:
            out |= {"twin_pairs": self.ceiling.pairs, "ceiling_within_10pct_low": self.ceiling.twin_agreement,
                    "ceiling_within_10pct_high": self.ceiling.upper_bound}
        if self.trunk is not None:
            out |= {"trunk_sources": list(self.trunk.sources), "trunk_excluded": list(self.trunk.excluded),
                    "trunk_excluded_family": self.trunk.excluded_family, "trunk_file": self.trunk.path,
                    "trunk_pretrained": self.trunk.pretrained, "trunk_seconds": round(self.trunk.seconds, 3)}
        return out


def evaluate_on_device(
    device_or_table: str | LatencyTable,
    kind: str = "gcn",
    n_train: int = 900,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    trunk: TransferTrunk | str | os.PathLike[str] | None = None,
    exclude: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    space: EncodableSpace[Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> PredictorEvaluation:
    """Fit ``kind`` on ``n_train`` random candidates of the table and evaluate it on all the others.

    ``device_or_table``: a device of the data directory (``data_dir``, default ``$DEVICEFIT_DATA``) or a
    :class:`~devicefit.data.LatencyTable` of your own. ``seed`` fixes the training sample, the weights and
    a transfer trunk's pre-training. ``trunk``, ``exclude`` and ``cache_dir``: kind ``transfer`` only, see
    the module docstring. ``space``: the table's space (default NB201); ``options``: predictor constructor
    options (:func:`~.registry.make_predictor`).
    """
    table = _target_table(device_or_table, data_dir)
    n_train = _check_n_train(n_train)
    if not 1 <= n_train < len(table):
        raise InputError(
            f"evaluate needs held-out candidates: n_train must be 1..{len(table) - 1} for the {len(table)} "
            f"candidates of device {table.device!r}, got {n_train}"
        )
    return _fit(device_or_table, table, kind, n_train, seed, data_dir, trunk, exclude, cache_dir, space, options)


def fit_on_device(
    device_or_table: str | LatencyTable,
    kind: str = "gcn",
    n_train: int = 900,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    trunk: TransferTrunk | str | os.PathLike[str] | None = None,
    exclude: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    space: EncodableSpace[Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> PredictorEvaluation:
    """As :func:`evaluate_on_device`, but ``n_train`` 0 (or the table's size) trains on every candidate
    (then there are no metrics); the predictor to save is ``result.predictor``."""
    table = _target_table(device_or_table, data_dir)
    n_train = _check_n_train(n_train)
    if n_train > len(table):
        raise InputError(f"n_train {n_train} exceeds the {len(table)} candidates of device {table.device!r}")
    return _fit(device_or_table, table, kind, n_train, seed, data_dir, trunk, exclude, cache_dir, space, options)


def pretrain_trunk(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    exclude: Iterable[str] = (),
    seed: int = 0,
    settings: TrunkSettings | None = None,
    space: EncodableSpace[Any] | None = None,
) -> TransferTrunk:
    """A transfer trunk pre-trained on every latency table of the data directory except ``exclude``.

    Save it (:meth:`TransferTrunk.save`) and pass it to later fits as ``trunk=`` (CLI: ``--trunk``). To
    evaluate on a device of the data directory, leave its family out here, or it will be refused.
    """
    from ..data import load_device_tables

    tables = load_device_tables(data_dir)
    left_out = _check_exclude(exclude, tables)
    sources = {n: t for n, t in tables.items() if n not in left_out and t.unit == "ms" and len(t) > 0}
    return TransferTrunk.pretrain(sources, space=space, seed=seed, settings=settings)


# -- helpers ------------------------------------------------------------------------------------------
def _target_table(device_or_table: str | LatencyTable, data_dir: str | os.PathLike[str] | None) -> LatencyTable:
    if isinstance(device_or_table, str):
        from ..data import load_device_table

        return load_device_table(device_or_table, data_dir)
    return device_or_table


def _check_n_train(n_train: object) -> int:
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 0:
        raise InputError(f"n_train must be a non-negative int (0 = every candidate), got {n_train!r}")
    return n_train


def _names(exclude: Iterable[str]) -> tuple[str, ...]:
    if isinstance(exclude, str):
        raise InputError(f"exclude must be a list of device names, got the single str {exclude!r}")
    names = list(exclude)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise InputError(f"exclude must hold device names, got {bad[0]!r}")
    return tuple(sorted(set(names)))


def _check_exclude(exclude: Iterable[str], known: Iterable[str]) -> set[str]:
    names, known = set(_names(exclude)), set(known)
    unknown = sorted(names - known)
    if unknown:
        raise UnknownNameError(
            f"cannot exclude unknown device(s) {', '.join(map(repr, unknown))}; devices: {', '.join(sorted(known))}"
        )
    return names


def _fit(
    device_or_table: str | LatencyTable,
    table: LatencyTable,
    kind: str,
    n_train: int,
    seed: int,
    data_dir: str | os.PathLike[str] | None,
    trunk: TransferTrunk | str | os.PathLike[str] | None,
    exclude: Iterable[str],
    cache_dir: str | os.PathLike[str] | None,
    space: EncodableSpace[Any] | None,
    options: Mapping[str, Any] | None,
) -> PredictorEvaluation:
    check_seed(seed)
    exclude = _names(exclude)
    if n_train in (0, len(table)):
        train, test = ordered(table.cells()), []
    else:
        train, test = split_table(table, n_train, seed)
    predictor = make_predictor(kind, space=space, **dict(options or {}))
    trunk_use = None
    if isinstance(predictor, TransferPredictor):
        trunk_use = _attach_trunk(predictor, device_or_table, table, seed, data_dir, trunk, exclude, cache_dir)
    elif trunk is not None or exclude:
        raise InputError(f"a trunk and excluded sources apply to kind 'transfer' only, not {kind!r}")
    predictor.fit_table(table, train, seed=seed)
    metrics: dict[str, float] = {}
    if test:
        metrics = evaluate(predictor, table, test)
        predictor.metrics = {"n_test": len(test), **metrics}
    ceiling = measurement_ceiling(table) if isinstance(predictor.space, NB201Space) else None
    return PredictorEvaluation(
        predictor=predictor, device=table.device, kind=predictor.name, unit=predictor.unit,
        n_train=predictor.n_train, n_test=len(test), fit_seconds=predictor.fit_seconds, metrics=metrics,
        ceiling=ceiling, trunk=trunk_use,
    )


def _attach_trunk(
    predictor: TransferPredictor,
    device_or_table: str | LatencyTable,
    table: LatencyTable,
    seed: int,
    data_dir: str | os.PathLike[str] | None,
    trunk: TransferTrunk | str | os.PathLike[str] | None,
    exclude: tuple[str, ...],
    cache_dir: str | os.PathLike[str] | None,
) -> TrunkUse:
    start = time.perf_counter()
    family = device_family(device_or_table) if isinstance(device_or_table, str) else None
    if trunk is not None:
        given = trunk if isinstance(trunk, TransferTrunk) else load_trunk(trunk, space=predictor.space)
        forbidden = set(exclude) | {n for n in given.sources if family is not None and device_family(n) == family}
        check_trunk_sources(given, forbidden, table.device)
        predictor.use_trunk(given)
        path = None if isinstance(trunk, TransferTrunk) else str(trunk)
        return TrunkUse(tuple(given.sources), exclude, family, path, False, time.perf_counter() - start)
    from ..data import load_device_tables

    tables = load_device_tables(data_dir)
    left_out = _check_exclude(exclude, tables)
    left_out |= {n for n in tables if family is not None and device_family(n) == family}
    sources = {n: t for n, t in tables.items() if n not in left_out and t.unit == table.unit and len(t) > 0}
    got, npz, pretrained = cached_trunk(
        sources, space=predictor.space, seed=seed, settings=predictor.pretrain_settings, cache_dir=cache_dir
    )
    predictor.use_trunk(got)
    return TrunkUse(tuple(got.sources), tuple(sorted(left_out)), family, str(npz), pretrained,
                    time.perf_counter() - start)


__all__ = ["PredictorEvaluation", "TrunkUse", "evaluate_on_device", "fit_on_device", "pretrain_trunk"]
