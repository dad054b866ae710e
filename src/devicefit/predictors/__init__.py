"""Cost predictors for the candidates of any encodable space: FLOPs, layer-wise, MLP, BRP-NAS GCN, few-shot transfer.

One interface (:class:`Predictor`): ``fit(candidates, values)``, ``predict(candidates)`` (in the unit of
the training values: ms for latency, mJ for energy), ``save(path)`` / :func:`load_predictor`. A predictor
carries its space (:class:`~devicefit.spaces.EncodableSpace`, default NB201) and encodes candidates
through it; the MLP, GCN and transfer predictors work on any encodable space, the FLOPs and layer-wise
baselines on NB201 only. :func:`split_table` and :func:`evaluate` (``devicefit.ranking.regression_report``)
for experiments; :func:`evaluate_on_device` / :func:`fit_on_device` do what ``devicefit predictor
evaluate / fit`` do; :func:`measurement_ceiling` bounds, from a table's own measurement noise, the share of
cells that any predictor can place within +-p %. Transfer trunks are pre-trained once and reused
(:class:`TransferTrunk`, :func:`cached_trunk`, :func:`pretrain_trunk`).

Energy: every predictor fits a :class:`~devicefit.data.LatencyTable` with ``unit="mJ"`` the same way
(``fit_table``; the CLI's ``--table CSV --unit mJ``); predictions are then in mJ. None of the NB201 data
sets here has energy: LatBench and HELP are latency only. HW-NAS-Bench measured NB201 energy on
edge GPU / Eyeriss / FPGA, but only its FBNet lookup tables (``fbnet/``, another search space) are in
the data directory, so NB201 energy predictors need the user's own mJ table.

Importing this package imports neither torch nor numpy; each name loads its module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

from .kinds import PREDICTOR_KINDS, TRUNK_KIND, UNITS
from .registry import load_predictor, make_predictor, predictor_class

if TYPE_CHECKING:
    from .base import NotFittedError, Predictor, check_seed, evaluate, split_table
    from .ceiling import MeasurementCeiling, measurement_ceiling
    from .config import TrainConfig
    from .flops import FlopsPredictor, cell_macs_params
    from .gcn import GCNPredictor
    from .io import PredictorFileError
    from .layerwise import LayerwisePredictor
    from .mlp import MLPPredictor
    from .on_device import PredictorEvaluation, TrunkUse, evaluate_on_device, fit_on_device, pretrain_trunk
    from .transfer import TransferPredictor, device_family, sources_for
    from .trunk import TransferTrunk, TrunkSettings, cached_trunk, default_cache_dir, load_trunk

_LAZY = {
    "NotFittedError": "base", "Predictor": "base", "check_seed": "base", "evaluate": "base",
    "split_table": "base",
    "MeasurementCeiling": "ceiling", "measurement_ceiling": "ceiling",
    "TrainConfig": "config",
    "BinaryRelationPredictor": "relation", "RelationTrainConfig": "relation",
    "FlopsPredictor": "flops", "cell_macs_params": "flops",
    "GCNPredictor": "gcn",
    "PredictorFileError": "io",
    "LayerwisePredictor": "layerwise",
    "MLPPredictor": "mlp",
    "PredictorEvaluation": "on_device", "TrunkUse": "on_device", "evaluate_on_device": "on_device",
    "fit_on_device": "on_device", "pretrain_trunk": "on_device",
    "TransferPredictor": "transfer", "device_family": "transfer", "sources_for": "transfer",
    "TransferTrunk": "trunk", "TrunkSettings": "trunk", "cached_trunk": "trunk", "default_cache_dir": "trunk",
    "load_trunk": "trunk",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "PREDICTOR_KINDS",
    "TRUNK_KIND",
    "UNITS",
    "BinaryRelationPredictor",
    "FlopsPredictor",
    "GCNPredictor",
    "LayerwisePredictor",
    "MLPPredictor",
    "MeasurementCeiling",
    "NotFittedError",
    "Predictor",
    "PredictorEvaluation",
    "PredictorFileError",
    "RelationTrainConfig",
    "TrainConfig",
    "TransferPredictor",
    "TransferTrunk",
    "TrunkSettings",
    "TrunkUse",
    "cached_trunk",
    "cell_macs_params",
    "check_seed",
    "default_cache_dir",
    "device_family",
    "evaluate",
    "evaluate_on_device",
    "fit_on_device",
    "load_predictor",
    "load_trunk",
    "make_predictor",
    "measurement_ceiling",
    "predictor_class",
    "pretrain_trunk",
    "sources_for",
    "split_table",
]
