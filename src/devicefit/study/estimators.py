"""The estimators every job can use: benchmark-table look-up, device-table latency, zero-cost proxies, a saved
predictor, latency measured on this machine, and counted cost (params, MACs, memory).

Each is a dataclass of plain settings (see :class:`devicefit.study.Estimator`); files it reads enter its
settings by content hash, so a changed table or image pool is a different estimator and never a stale
cache hit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..spaces.base import Space
from .estimator import Estimator, EstimatorFailure, candidate_seed, file_sha256


def _nb201_only(space: Space, what: str) -> None:
    if space.name != "nb201":
        raise InputError(f"{what} exists only for the nb201 space, not {space.name!r}")


def _data_path(data_dir: str | os.PathLike[str] | None) -> str | None:
    """The data directory as an absolute string (resolved once in the driver, so workers read the same files)."""
    from ..data import data_dir as resolve

    root = resolve(data_dir)
    return None if root is None else str(Path(root).resolve())


_READ: dict[str, tuple[Any, tuple[int, int]]] = {}


def _read_once(key: str, read: Any, file_of: Any) -> Any:
    """``read()``, kept for this process under ``key`` while the file it came from (``file_of(value)``) keeps
    its size and modification time: a benchmark builds a search's estimators hundreds of times, and reading
    a table costs 0.4 s each time. Estimators only read their tables, so one copy is shared."""
    if key in _READ:
        value, stamp = _READ[key]
        st = os.stat(file_of(value))
        if (st.st_mtime_ns, st.st_size) == stamp:
            return value
    value = read()
    st = os.stat(file_of(value))
    _READ[key] = (value, (st.st_mtime_ns, st.st_size))
    return value


@dataclass
class BenchmarkAccuracy(Estimator):
    """One column of the NAS-Bench-201 table (e.g. ``c10_val_200ep``), in percent: ``{"value": 91.2}``."""

    column: str
    data_dir: str | None = None
    table_sha256: str = field(init=False, default="")
    kind = "table"

    def __post_init__(self) -> None:
        from ..data import load_nb201_table
        from ..data.nb201_table import RELATIVE_PATH

        self.data_dir = _data_path(self.data_dir)
        self._table = _read_once(f"nb201 {self.data_dir}", lambda: load_nb201_table(data_dir=self.data_dir),
                                 lambda t: t.path)
        self._table.column(self.column)  # an unknown column fails here, before any work
        self.table_sha256 = file_sha256(Path(self.data_dir or "") / RELATIVE_PATH)

    @property
    def name(self) -> str:
        return self.column

    def settings(self) -> dict[str, Any]:
        return {"column": self.column, "table_sha256": self.table_sha256}

    def prepare(self) -> None:
        if getattr(self, "_table", None) is None:
            from ..data import load_nb201_table

            self._table = load_nb201_table(data_dir=self.data_dir)

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        _nb201_only(space, "the NB201 benchmark table")
        value = self._table.value(candidate, self.column)
        if value is None:
            raise EstimatorFailure(f"{candidate} has no {self.column} value in the NB201 table")
        return {"value": value}


@dataclass
class DeviceTableLatency(Estimator):
    """A device's measured latency (ms) from LatBench or HELP: ``{"value": 3.1}``; cells not measured fail."""

    device: str
    data_dir: str | None = None
    file_sha256: str = field(init=False, default="")
    kind = "device-table"

    def __post_init__(self) -> None:
        from ..data import load_device_table

        self.data_dir = _data_path(self.data_dir)
        self._table = _read_once(f"device {self.device} {self.data_dir}",  # an unknown device fails here
                                 lambda: load_device_table(self.device, self.data_dir), lambda t: t.meta["path"])
        self.file_sha256 = file_sha256(self._table.meta["path"])

    @property
    def name(self) -> str:
        return f"{self.device}_latency"

    def settings(self) -> dict[str, Any]:
        return {"device": self.device, "file_sha256": self.file_sha256}

    def prepare(self) -> None:
        if getattr(self, "_table", None) is None:
            from ..data import load_device_table

            self._table = load_device_table(self.device, self.data_dir)

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        _nb201_only(space, "device latency tables")
        value = self._table.get(candidate)
        if value is None:
            raise EstimatorFailure(f"{candidate} was not measured on {self.device}")
        return {"value": value, "unit": self._table.unit}


@dataclass
class ZeroCostProxies(Estimator):
    """Zero-cost proxies (arXiv 2101.08134) of the candidate's network at initialisation, one minibatch each.

    Each candidate's weights and minibatch come from :func:`candidate_seed` of ``seed`` and its identity.
    The value is ``{"scores": {proxy: score}, "errors": {proxy: reason}, "seconds": {...}}``; the images
    enter the settings by the hash of the file they come from. ``variant="zc_reference"`` (NB201 only)
    adds the reference code's cell-convolution biases (see :func:`devicefit.proxies.add_cell_conv_biases`).
    """

    proxies: tuple[str, ...]
    dataset: str = "cifar10"
    seed: int = 0
    batch_size: int = 64
    images: str = "npz"
    variant: str = "default"
    data_dir: str | None = None
    images_sha256: str = field(init=False, default="")
    kind = "proxies"

    def __post_init__(self) -> None:
        from ..proxies import check_proxy_names
        from ..proxies.minibatch import image_pool_file

        self.proxies = tuple(check_proxy_names(list(self.proxies)))
        if self.variant not in ("default", "zc_reference"):
            raise InputError(f"proxy network variant must be 'default' or 'zc_reference', got {self.variant!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.batch_size < 2:
            raise InputError(f"batch size must be >= 2, got {self.batch_size}")
        self.data_dir = None if self.images == "noise" else _data_path(self.data_dir)
        path = image_pool_file(self.dataset, self.images, self.data_dir)  # checks dataset, source and file
        self.images_sha256 = "noise" if path is None else file_sha256(path)

    @property
    def name(self) -> str:
        return "proxies"

    def settings(self) -> dict[str, Any]:
        return {"proxies": list(self.proxies), "dataset": self.dataset, "seed": self.seed,
                "batch_size": self.batch_size, "images": self.images, "images_sha256": self.images_sha256,
                "variant": self.variant}

    def prepare(self) -> None:
        if getattr(self, "_pool", None) is None:
            from ..proxies import load_image_pool

            self._pool = load_image_pool(self.dataset, source=self.images, data_dir=self.data_dir)
            if self.batch_size > len(self._pool.x):
                raise InputError(f"batch size {self.batch_size} exceeds the {len(self._pool.x)} images of the pool")

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        import numpy as np
        import torch

        from ..proxies import add_cell_conv_biases, compute_proxies

        seed = candidate_seed(self.seed, space.identity(candidate))
        torch.manual_seed(seed)
        net = space.build(candidate, num_classes=self._pool.num_classes)
        if self.variant == "zc_reference":
            _nb201_only(space, "the zc_reference network variant")
            add_cell_conv_biases(net)
        x, y = self._pool.sample(np.random.default_rng(seed), self.batch_size)
        scores = compute_proxies(net, x, y, self.proxies, scratch=True)  # net is ours
        return scores.to_record()


@dataclass
class PredictedCost(Estimator):
    """A saved latency/energy predictor (``devicefit predictor fit``): ``{"value": 3.0, "unit": "ms"}``."""

    path: str
    sha256: str = field(init=False, default="")
    device: str = field(init=False, default="")
    unit: str = field(init=False, default="")
    model: str = field(init=False, default="")
    kind = "predictor"

    def __post_init__(self) -> None:
        from ..predictors import load_predictor
        from ..predictors.io import paths_of

        npz, js = paths_of(self.path)
        self._predictor = load_predictor(self.path)  # refuses a corrupt or edited file here
        self.path = str(npz.resolve())
        self.sha256 = file_sha256(js)  # the metadata binds the weights by their hash
        self.device, self.unit, self.model = self._predictor.device, self._predictor.unit, self._predictor.name

    @property
    def name(self) -> str:
        return f"predicted_{self.device}_{self.unit}"

    def settings(self) -> dict[str, Any]:
        return {"predictor_sha256": self.sha256, "device": self.device, "unit": self.unit, "kind": self.model}

    def prepare(self) -> None:
        if getattr(self, "_predictor", None) is None:
            from ..predictors import load_predictor

            self._predictor = load_predictor(self.path)

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        if self._predictor.space.name != space.name:
            raise InputError(f"predictor {self.path!r} was fitted on the {self._predictor.space.name} space, "
                             f"not {space.name}")
        return {"value": float(self._predictor.predict([candidate])[0]), "unit": self.unit}


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
            raise InputError(f"{name} must be an integer >= {0 if name == 'warmup' else 1}, got {v!r}")


@dataclass
class MeasuredLatency(Estimator):
    """Latency of the candidate's network measured on this machine (:func:`devicefit.hardware.measure_latency`).

    The value is the measurement's median and quartiles of wall and thread CPU time (ms). This machine's CPU
    model and the runtime versions are part of the settings: the same store on another machine measures
    again. ``replicate`` > 0 names an independent repeat of the same measurement (another session, another
    time), stored beside the first instead of reusing it.
    """

    runtime: str = "onnxruntime"
    threads: int = 1
    warmup: int = 10
    repeats: int = 50
    batch_size: int = 1
    input_shape: tuple[int, ...] = (3, 32, 32)
    replicate: int = 0
    machine: dict[str, Any] = field(init=False, default_factory=dict)
    kind = "measured"

    def __post_init__(self) -> None:
        from ..hardware import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise InputError(f"runtime {self.runtime!r} is not supported; expected one of {', '.join(RUNTIMES)}")
        _check_positive(threads=self.threads, warmup=self.warmup, repeats=self.repeats, batch_size=self.batch_size)
        if isinstance(self.replicate, bool) or not isinstance(self.replicate, int) or self.replicate < 0:
            raise InputError(f"replicate must be an integer >= 0, got {self.replicate!r}")
        self.input_shape = tuple(int(s) for s in self.input_shape)
        from ..hardware.measure import protocol

        # the protocol's fingerprint: runtime, threads, warm-up, repeats, shapes, precision, CPU and versions
        self.machine = protocol(self.runtime, threads=self.threads, warmup=self.warmup, repeats=self.repeats,
                                batch_size=self.batch_size, input_shape=self.input_shape).fingerprint()

    @property
    def name(self) -> str:
        return f"local_{self.runtime}_ms" + (f"_{self.replicate}" if self.replicate else "")

    def settings(self) -> dict[str, Any]:
        return {"protocol": self.machine} | ({"replicate": self.replicate} if self.replicate else {})

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        from ..hardware import measure_latency

        m = measure_latency(space.build(candidate).eval(), self.input_shape, self.runtime,  # type: ignore[arg-type]
                            warmup=self.warmup, repeats=self.repeats, threads=self.threads,
                            batch_size=self.batch_size)
        return {"value": m.median_ms, "p25_ms": m.p25_ms, "p75_ms": m.p75_ms, "cpu_ms": m.cpu_median_ms,
                "cpu_p25_ms": m.cpu_p25_ms, "cpu_p75_ms": m.cpu_p75_ms, "unit": "ms"}


@dataclass
class CountedCost(Estimator):
    """Params, MACs, FLOPs, peak activation bytes and model bytes of the candidate's network (counted)."""

    input_shape: tuple[int, ...] = (3, 32, 32)
    batch_size: int = 1
    kind = "count"

    def __post_init__(self) -> None:
        _check_positive(batch_size=self.batch_size)
        self.input_shape = tuple(int(s) for s in self.input_shape)

    @property
    def name(self) -> str:
        return "cost"

    def settings(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "batch_size": self.batch_size}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        from ..hardware import count_model

        cost = count_model(space.build(candidate), self.input_shape, batch_size=self.batch_size).to_dict()
        cost["input_shape"] = list(cost["input_shape"])
        return cost
