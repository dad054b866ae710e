"""The device registry: this machine plus every device table of the data directory.

torch-free (``devicefit devices`` starts at once): the tables are listed with
:func:`devicefit.data.device_catalog`, which reads and checks each file but builds no table.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ..data import data_dir
from .machine import cpu_model

LOCAL_DEVICE = "local-cpu"


@dataclass(frozen=True)
class Device:
    """One device: its name, where its numbers come from, and how many NB201 cells it has a value for.

    ``cells`` is 0 for the local machine (it is measured on demand, not looked up); ``unit`` is the
    unit of its table values ("ms" for latency); ``description`` is the table's file for a table.
    """

    name: str
    source: str
    cells: int
    unit: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_device() -> Device:
    return Device(
        name=LOCAL_DEVICE,
        source="measured",
        cells=0,
        unit="ms",
        description=f"this machine's CPU ({cpu_model()}, {os.cpu_count()} logical cores); measured on demand",
    )


def list_devices(data_dir_path: str | os.PathLike[str] | None = None) -> list[Device]:
    """The local machine first, then every table of the data directory (by name).

    With no ``data_dir_path`` and no ``$DEVICEFIT_DATA`` only the local machine is listed; a setting
    that names no existing directory, or a corrupt table, raises :class:`~devicefit.data.DataFileError`.
    """
    from ..data.catalog import device_catalog

    devices = [local_device()]
    root = data_dir(data_dir_path, required=False)
    if root is None:
        return devices
    for t in device_catalog(root):
        devices.append(Device(name=t.name, source=t.source, cells=t.cells, unit=t.unit, description=str(t.path)))
    return devices
