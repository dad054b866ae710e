"""Cost predictors for NB201 cells on any device: FLOPs, layer-wise, MLP, BRP-NAS GCN, few-shot transfer.

One interface (:class:`Predictor`): ``fit(candidates, values)``, ``predict(candidates)`` (in the unit of
the training values: ms for latency, mJ for energy), ``save(path)`` / :func:`load_predictor`;
:func:`split_table` and :func:`evaluate` (``devicefit.ranking.regression_report``) for experiments;
:func:`measurement_ceiling` bounds, from a table's own measurement noise, the share of cells that any
predictor can place within +-p %.

Energy: every predictor fits a :class:`~devicefit.data.LatencyTable` with ``unit="mJ"`` the same way
(``fit_table``; the CLI's ``--table CSV --unit mJ``); predictions are then in mJ. None of the NB201 data
sets here has energy: LatBench and HELP are latency only. HW-NAS-Bench measured NB201 energy on
edge GPU / Eyeriss / FPGA, but only its FBNet lookup tables (``fbnet/``, another search space) are in
the data directory, so NB201 energy predictors need the user's own mJ table.
"""

from ..errors import InputError
from .base import NotFittedError, Predictor, evaluate, load_predictor, split_table
from .ceiling import MeasurementCeiling, measurement_ceiling
from .flops import FlopsPredictor, cell_macs_params
from .gcn import GCNPredictor
from .io import PredictorFileError
from .layerwise import LayerwisePredictor
from .mlp import MLPPredictor
from .transfer import TransferPredictor, device_family, sources_for

PREDICTORS: dict[str, type[Predictor]] = {
    "flops": FlopsPredictor,
    "layerwise": LayerwisePredictor,
    "mlp": MLPPredictor,
    "gcn": GCNPredictor,
    "transfer": TransferPredictor,
}


def make_predictor(name: str) -> Predictor:
    """A fresh predictor by registry name."""
    if name not in PREDICTORS:
        raise InputError(f"unknown predictor {name!r}; expected one of {', '.join(PREDICTORS)}")
    return PREDICTORS[name]()


__all__ = [
    "PREDICTORS",
    "FlopsPredictor",
    "GCNPredictor",
    "LayerwisePredictor",
    "MLPPredictor",
    "MeasurementCeiling",
    "NotFittedError",
    "Predictor",
    "PredictorFileError",
    "TransferPredictor",
    "cell_macs_params",
    "device_family",
    "evaluate",
    "load_predictor",
    "make_predictor",
    "measurement_ceiling",
    "sources_for",
    "split_table",
]
