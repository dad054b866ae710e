"""Data: the data-directory setting, NAS benchmark tables, device latency tables and image sets.

Importing this package imports neither pandas nor torch (nor numpy): each name below is loaded from
its module on first use, so ``import devicefit.data`` costs nothing a command does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

from .datadir import ENV_VAR, DataFileError, data_dir, data_file

if TYPE_CHECKING:
    from .arch import resolve_arch
    from .catalog import (
        DeviceTableInfo,
        device_catalog,
        device_values,
        load_device_table,
        load_device_tables,
    )
    from .images import (
        NORMALIZATION,
        ImageSet,
        load_image_folder_tarball,
        load_mnist_idx,
        load_npz_images,
        random_crop_flip,
        to_tensor,
    )
    from .latbench import load_latbench
    from .latency_table import LatencyTable, load_help, read_latency_csv, write_latency_csv
    from .nb201_table import PUBLISHED_OPTIMA, NB201Table, load_nb201_table

#: Public name -> the module (in this package) that defines it.
_LAZY: dict[str, str] = {
    "resolve_arch": "arch",
    "DeviceTableInfo": "catalog",
    "device_catalog": "catalog",
    "device_values": "catalog",
    "load_device_table": "catalog",
    "load_device_tables": "catalog",
    "NORMALIZATION": "images",
    "ImageSet": "images",
    "load_image_folder_tarball": "images",
    "load_mnist_idx": "images",
    "load_npz_images": "images",
    "random_crop_flip": "images",
    "to_tensor": "images",
    "load_latbench": "latbench",
    "LatencyTable": "latency_table",
    "load_help": "latency_table",
    "read_latency_csv": "latency_table",
    "write_latency_csv": "latency_table",
    "PUBLISHED_OPTIMA": "nb201_table",
    "NB201Table": "nb201_table",
    "load_nb201_table": "nb201_table",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ENV_VAR",
    "NORMALIZATION",
    "PUBLISHED_OPTIMA",
    "DataFileError",
    "DeviceTableInfo",
    "ImageSet",
    "LatencyTable",
    "NB201Table",
    "data_dir",
    "data_file",
    "device_catalog",
    "device_values",
    "load_device_table",
    "load_device_tables",
    "load_help",
    "load_image_folder_tarball",
    "load_latbench",
    "load_mnist_idx",
    "load_nb201_table",
    "load_npz_images",
    "random_crop_flip",
    "read_latency_csv",
    "resolve_arch",
    "to_tensor",
    "write_latency_csv",
]
