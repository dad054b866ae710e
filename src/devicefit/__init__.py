"""devicefit: fit neural networks to devices (hardware-aware NAS and automated compression).

``import devicefit`` is cheap (no torch, numpy or pandas); the main verbs are offered here and imported
from their packages on first use::

    import devicefit
    devicefit.count_model(model, (3, 32, 32))      # imports devicefit.hardware (and torch) now
    result = devicefit.search(objective="c10_val_200ep", device="pixel3", max_latency_ms=12, budget=100,
                              store="runs/pixel3.sqlite")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .compression.job import compress
    from .hardware import count_model, measure_latency
    from .models import load_model_file
    from .predictors import make_predictor
    from .proxies import compute_proxies
    from .spaces import get_space
    from .study import evaluate_all
    from .study.search_job import search

#: Verb -> "module:attribute", imported on first access.
_VERBS: dict[str, str] = {
    "evaluate_all": "devicefit.study:evaluate_all",
    "measure_latency": "devicefit.hardware:measure_latency",
    "count_model": "devicefit.hardware:count_model",
    "compute_proxies": "devicefit.proxies:compute_proxies",
    "get_space": "devicefit.spaces:get_space",
    "make_predictor": "devicefit.predictors:make_predictor",
    "load_model_file": "devicefit.models:load_model_file",
    "search": "devicefit.study.search_job:search",
    "compress": "devicefit.compression.job:compress",
}


__getattr__, __dir__ = lazy_exports(__name__, _VERBS)


__all__ = [
    "__version__",
    "compress",
    "compute_proxies",
    "count_model",
    "evaluate_all",
    "get_space",
    "load_model_file",
    "make_predictor",
    "measure_latency",
    "search",
]
