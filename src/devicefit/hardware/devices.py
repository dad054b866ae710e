"""The device registry: this machine plus every device latency table of the data directory."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ..data import data_dir, load_device_tables
from .measure import cpu_model

LOCAL_DEVICE = "local-cpu"


@dataclass(frozen=True)
class Device:
    """One device: its name, where its numbers come from, and how many NB201 cells it has a value for.

    ``cells`` is 0 for the local machine (it is measured on demand, not looked up); ``unit`` is the
    unit of its table values ("ms" for latency).
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
    """The local machine first, then every table of the data directory (none when no data dir is set).

    An explicit ``data_dir_path`` that does not exist raises :class:`~devicefit.data.DataFileError`;
    with no path and no ``$DEVICEFIT_DATA`` only the local machine is listed.
    """
    devices = [local_device()]
    root = data_dir(data_dir_path, required=data_dir_path is not None)
    if root is None:
        return devices
    for name, table in sorted(load_device_tables(root).items()):
        devices.append(
            Device(
                name=name,
                source=table.source,
                cells=len(table),
                unit=table.unit,
                description=str(table.meta.get("path", "")),
            )
        )
    return devices
