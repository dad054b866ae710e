"""Hardware cost: static counts (params, MACs, memory), local latency measurement, the device registry.

The names below are imported on first use (module ``__getattr__``), so ``import devicefit.hardware.machine``
or ``.devices`` does not pull in torch; ``from devicefit.hardware import measure_latency`` imports
:mod:`.measure` (and torch) at that moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

if TYPE_CHECKING:
    from .counting import (
        ModelCost,
        count_macs,
        count_model,
        count_nonzero_params,
        count_params,
        eval_mode,
        peak_activation_bytes,
        weight_bytes,
    )
    from .devices import LOCAL_DEVICE, Device, list_devices, local_device
    from .energy import BilinearEnergyModel, LayerShape, fit_energy_model, layer_shapes, load_fbnet_energy
    from .machine import cpu_model
    from .measure import (
        PRECISIONS,
        RUNTIMES,
        LatencyMeasurement,
        MeasurementProtocol,
        detect_module_precision,
        detect_onnx_precision,
        export_onnx,
        measure_latency,
    )

#: Public name -> submodule that defines it.
_EXPORTS: dict[str, str] = {
    "ModelCost": "counting",
    "count_macs": "counting",
    "count_model": "counting",
    "count_nonzero_params": "counting",
    "count_params": "counting",
    "eval_mode": "counting",
    "peak_activation_bytes": "counting",
    "weight_bytes": "counting",
    "LOCAL_DEVICE": "devices",
    "Device": "devices",
    "list_devices": "devices",
    "local_device": "devices",
    "cpu_model": "machine",
    "BilinearEnergyModel": "energy",
    "LayerShape": "energy",
    "fit_energy_model": "energy",
    "layer_shapes": "energy",
    "load_fbnet_energy": "energy",
    "PRECISIONS": "measure",
    "RUNTIMES": "measure",
    "LatencyMeasurement": "measure",
    "MeasurementProtocol": "measure",
    "detect_module_precision": "measure",
    "detect_onnx_precision": "measure",
    "export_onnx": "measure",
    "measure_latency": "measure",
}

__all__ = [
    "LOCAL_DEVICE",
    "PRECISIONS",
    "RUNTIMES",
    "BilinearEnergyModel",
    "Device",
    "LatencyMeasurement",
    "LayerShape",
    "MeasurementProtocol",
    "ModelCost",
    "count_macs",
    "count_model",
    "count_nonzero_params",
    "count_params",
    "cpu_model",
    "detect_module_precision",
    "detect_onnx_precision",
    "eval_mode",
    "export_onnx",
    "fit_energy_model",
    "layer_shapes",
    "list_devices",
    "load_fbnet_energy",
    "local_device",
    "measure_latency",
    "peak_activation_bytes",
    "weight_bytes",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
