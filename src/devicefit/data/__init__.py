"""Data: the data-directory setting, NAS benchmark tables, device latency tables and image sets."""

from .datadir import ENV_VAR, DataFileError, data_dir, data_file
from .images import (
    NORMALIZATION,
    ImageSet,
    load_image_folder_tarball,
    load_mnist_idx,
    load_npz_images,
    random_crop_flip,
    to_tensor,
)
from .latency_table import (
    LatencyTable,
    load_device_table,
    load_device_tables,
    load_help,
    load_latbench,
    read_latency_csv,
    write_latency_csv,
)
from .nb201_table import PUBLISHED_OPTIMA, NB201Table, load_nb201_table

__all__ = [
    "ENV_VAR",
    "NORMALIZATION",
    "PUBLISHED_OPTIMA",
    "DataFileError",
    "ImageSet",
    "LatencyTable",
    "NB201Table",
    "data_dir",
    "data_file",
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
    "to_tensor",
    "write_latency_csv",
]
