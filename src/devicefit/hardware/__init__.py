"""Hardware cost: static counts (params, MACs, memory), local latency measurement, the device registry."""

from .counting import ModelCost, count_macs, count_model, count_params, peak_activation_bytes
from .devices import LOCAL_DEVICE, Device, list_devices, local_device
from .measure import RUNTIMES, LatencyMeasurement, cpu_model, export_onnx, measure_latency

__all__ = [
    "LOCAL_DEVICE",
    "RUNTIMES",
    "Device",
    "LatencyMeasurement",
    "ModelCost",
    "count_macs",
    "count_model",
    "count_params",
    "cpu_model",
    "export_onnx",
    "list_devices",
    "local_device",
    "measure_latency",
    "peak_activation_bytes",
]
