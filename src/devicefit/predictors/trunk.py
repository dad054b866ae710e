"""The pre-trained trunk of few-shot transfer: one GCN with an output per source device, pre-trained once,
saved and reused (pre-training takes minutes; adapting a head to a new device takes milliseconds).

Pre-training (HELP's idea, arXiv 2106.08630, on the BRP-NAS GCN of arXiv 2007.08668; see
:mod:`.transfer`): a GCN trunk (4 x 600, global-node readout) with one linear output per *source* device,
on standardised log-latencies (per-device z-score of ``log(ms)``, so a 0.5 ms GPU and a 3 s phone weigh
the same), L1 loss, missing candidates masked, on ``pretrain_cells`` random candidates of the sources.

A trunk is stored like a predictor (``.npz`` + ``.json``, no pickles, both files checked; ``kind``
``transfer-trunk``) and records its sources, the SHA-256 of each source table's content, its settings
and seed. :func:`cached_trunk` keeps trunks in a cache folder under a content address built from exactly
these (:meth:`TransferTrunk.cache_key`), so the same sources, settings and seed pre-train once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from ..spaces import EncodableSpace
from ._nn import arrays_to_state, predict_batched, state_to_arrays, train_network
from .base import check_seed, check_space, ordered, space_from_settings
from .config import TrainConfig
from .encoding import MAX_CACHED_ROWS
from .gcn import GCN, check_graph_params, graph_encoder, graph_params, graph_tensors
from .io import PredictorFileError, load_arrays, paths_of, save_arrays
from .kinds import TRUNK_KIND

if TYPE_CHECKING:
    from ..data.latency_table import LatencyTable

#: Pre-training settings of the benchmark (``benchmarks/latency_predictors.py``).
PRETRAIN = TrainConfig(max_epochs=80, batch_size=32, lr=1e-3, weight_decay=5e-4, lr_patience=7, es_patience=10)
#: Environment variable of the trunk cache folder; without it, ``.devicefit-cache`` in the current directory.
CACHE_ENV_VAR = "DEVICEFIT_CACHE"
DEFAULT_CACHE_DIR = ".devicefit-cache"


@dataclass(frozen=True)
class TrunkSettings:
    """What pre-training does, apart from its sources and seed: sample size, GCN size, optimisation."""

    pretrain_cells: int = 1000
    hidden: int = 600
    layers: int = 4
    dropout: float = 0.002
    train: TrainConfig = PRETRAIN

    def __post_init__(self) -> None:
        for name in ("pretrain_cells", "hidden", "layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"TrunkSettings.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise InputError(f"TrunkSettings.dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.train, TrainConfig):
            raise InputError(f"TrunkSettings.train must be a TrainConfig, got {type(self.train).__name__}")

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "train": self.train.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> TrunkSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise InputError(f"trunk settings must be a dict with the fields {sorted(names)}, got {data!r}")
        return cls(**{**data, "train": TrainConfig.from_json(data["train"])})


def tables_sha256(space: EncodableSpace[Any], tables: Mapping[str, LatencyTable]) -> dict[str, str]:
    """SHA-256 of each table's content: its unit and every (candidate identity, value), order-independent."""
    identity: dict[Any, str] = {}
    out = {}
    for name, table in tables.items():
        lines = []
        for c in table.cells():
            text = identity.get(c)
            if text is None:
                text = identity[c] = space.identity(c)
            lines.append(f"{text}\t{table.get(c)!r}")
        lines.sort()
        out[name] = hashlib.sha256("\n".join([f"unit\t{table.unit}", *lines]).encode()).hexdigest()
    return out


def trunk_cache_key(
    space: EncodableSpace[Any], seed: int, settings: TrunkSettings, source_sha256: Mapping[str, str]
) -> str:
    """The content address of a trunk: space settings, seed, settings, and each source's name and content hash."""
    record = {"space": space.settings(), "seed": seed, "settings": settings.to_json(),
              "sources": dict(sorted(source_sha256.items()))}
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class TransferTrunk:
    """A pre-trained multi-device GCN: :meth:`features` are its standardised log-cost on each source device."""

    def __init__(
        self,
        space: EncodableSpace[Any],
        model: GCN,
        *,
        sources: list[str],
        source_norm: Mapping[str, list[float]],
        source_sha256: Mapping[str, str],
        settings: TrunkSettings,
        seed: int,
        info: Mapping[str, Any],
    ) -> None:
        self.space = space
        self.model = model.eval()
        self.sources = list(sources)
        self.source_norm = {n: [float(v) for v in source_norm[n]] for n in self.sources}
        self.source_sha256 = dict(source_sha256)
        self.settings = settings
        self.seed = seed
        self.info = dict(info)
        self._cache: dict[Any, np.ndarray] = {}

    # -- pre-training ------------------------------------------------------------------------------
    @classmethod
    def pretrain(
        cls,
        sources: Mapping[str, LatencyTable],
        *,
        space: EncodableSpace[Any] | None = None,
        seed: int = 0,
        settings: TrunkSettings | None = None,
    ) -> TransferTrunk:
        """Fit the multi-device GCN on ``settings.pretrain_cells`` random candidates of the source tables."""
        space = check_space(space)
        settings = settings or TrunkSettings()
        check_seed(seed)
        if len(sources) < 2:
            raise InputError(f"transfer pre-training needs at least 2 source devices, got {len(sources)}")
        names = sorted(sources)
        pool = ordered(set().union(*(sources[n].cells() for n in names)))
        rng = random.Random(seed)
        cells = rng.sample(pool, min(settings.pretrain_cells, len(pool)))
        y = np.full((len(cells), len(names)), np.nan)
        for j, n in enumerate(names):
            y[:, j] = [sources[n].get(c) or np.nan for c in cells]
        logy = np.log(y)
        mean, std = np.nanmean(logy, 0), np.nanstd(logy, 0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (logy - mean) / std
        mask = np.isfinite(z)
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = GCN(len(graph_encoder(space).labels), settings.hidden, settings.layers, settings.dropout,
                    outputs=len(names))
        adj, feat = graph_tensors(space, cells)
        target = torch.from_numpy(np.nan_to_num(z)).float()
        weights = torch.from_numpy(mask).float()
        info = train_network(model, lambda i: model(adj[i], feat[i]), target, settings.train, seed, mask=weights)
        return cls(
            space, model, sources=names, source_norm={n: [float(mean[j]), float(std[j])] for j, n in enumerate(names)},
            source_sha256=tables_sha256(space, {n: sources[n] for n in names}), settings=settings, seed=seed,
            info={**info, "cells": len(cells), "seed": seed, "seconds": time.perf_counter() - start},
        )

    def cache_key(self) -> str:
        """The :func:`trunk_cache_key` of this trunk's space, seed, settings and sources."""
        return trunk_cache_key(self.space, self.seed, self.settings, self.source_sha256)

    # -- use -----------------------------------------------------------------------------------------
    def features(self, candidates: list[Any]) -> np.ndarray:
        """``(n, S)``: the trunk's standardised log-cost of each candidate on each source device (kept per
        candidate: the trunk is frozen)."""
        keys = [self._key(c) for c in candidates]
        new = {k: c for k, c in zip(keys, candidates) if k not in self._cache}
        if len(self._cache) + len(new) > MAX_CACHED_ROWS:  # start over rather than grow without bound
            self._cache.clear()
            new = dict(zip(keys, candidates))
        if new:
            adj, feat = graph_tensors(self.space, list(new.values()))
            model = self.model.eval()
            out = predict_batched(lambda i: model(adj[i], feat[i]), len(new)).astype(np.float64)
            self._cache.update(zip(new, out))
        if not keys:
            return np.zeros((0, len(self.sources)))
        return np.stack([self._cache[k] for k in keys])

    def _key(self, candidate: Any) -> Any:
        try:
            hash(candidate)
            return candidate
        except TypeError:
            return ("identity", self.space.identity(candidate))

    # -- storage -----------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON parameters and weight arrays (shared by trunk files and saved transfer predictors)."""
        params = {
            **graph_params(self.space), "settings": self.settings.to_json(), "seed": self.seed,
            "sources": self.sources, "source_normalisation": {"kind": "log-standardize", **self.source_norm},
            "source_sha256": self.source_sha256, "pretrain_info": self.info,
        }
        return params, state_to_arrays(self.model)

    @classmethod
    def from_state(
        cls, space: EncodableSpace[Any], params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> TransferTrunk:
        check_graph_params(space, dict(params), "transfer trunk")
        settings = TrunkSettings.from_json(params["settings"])
        sources = [str(n) for n in params["sources"]]
        norm = {k: v for k, v in dict(params["source_normalisation"]).items() if k != "kind"}
        model = GCN(len(graph_encoder(space).labels), settings.hidden, settings.layers, settings.dropout,
                    outputs=len(sources))
        arrays_to_state(model, {k: v for k, v in arrays.items() if k.startswith("w.")})
        return cls(space, model, sources=sources, source_norm=norm, source_sha256=dict(params["source_sha256"]),
                   settings=settings, seed=check_seed(params["seed"]), info=dict(params.get("pretrain_info", {})))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>.npz`` + ``<path>.json`` (checked on load); returns the ``.npz`` path."""
        params, arrays = self.state()
        meta = {"kind": TRUNK_KIND, "space": self.space.settings(), "cache_key": self.cache_key(), "params": params}
        return save_arrays(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, space: EncodableSpace[Any] | None = None) -> TransferTrunk:
        """Read a saved trunk; ``space`` (default: rebuilt from the file) must be the one it was trained on."""
        meta, arrays = load_arrays(path)
        if meta.get("kind") != TRUNK_KIND:
            raise PredictorFileError(
                f"{str(path)!r} holds a {meta.get('kind')!r} predictor, not a transfer trunk ({TRUNK_KIND!r})"
            )
        resolved = space_from_settings(meta.get("space"), space, path)
        try:
            return cls.from_state(resolved, meta["params"], arrays)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise PredictorFileError(f"{str(path)!r}: metadata does not fit a transfer trunk: {exc!r}") from exc


def load_trunk(path: str | os.PathLike[str], *, space: EncodableSpace[Any] | None = None) -> TransferTrunk:
    """A saved :class:`TransferTrunk` (``devicefit predictor pretrain --out``)."""
    return TransferTrunk.load(path, space=space)


def default_cache_dir() -> Path:
    """``$DEVICEFIT_CACHE``, else ``.devicefit-cache`` in the current directory (never the home directory)."""
    raw = os.environ.get(CACHE_ENV_VAR)
    return Path(raw) if raw else Path.cwd() / DEFAULT_CACHE_DIR


def cached_trunk(
    sources: Mapping[str, LatencyTable],
    *,
    space: EncodableSpace[Any] | None = None,
    seed: int = 0,
    settings: TrunkSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[TransferTrunk, Path, bool]:
    """The trunk of these sources, settings and seed: read from the cache folder, or pre-trained and saved there.

    Returns ``(trunk, its .npz path, True when it was pre-trained by this call)``. A cache file that fails
    its checks is pre-trained again with a warning (it is a cache, not a result).
    """
    space = check_space(space)
    settings = settings or TrunkSettings()
    check_seed(seed)
    key = trunk_cache_key(space, seed, settings, tables_sha256(space, sources))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"transfer-trunk-{key[:24]}"
    npz, js = paths_of(path)
    if npz.is_file() or js.is_file():
        try:
            trunk = TransferTrunk.load(path, space=space)
            if trunk.cache_key() == key:
                return trunk, npz, False
            warnings.warn(f"cached trunk {str(npz)!r} belongs to other sources or settings; pre-training again",
                          stacklevel=2)
        except PredictorFileError as exc:
            warnings.warn(f"cached trunk {str(npz)!r} is unusable ({exc}); pre-training again", stacklevel=2)
    trunk = TransferTrunk.pretrain(sources, space=space, seed=seed, settings=settings)
    return trunk, trunk.save(path), True


def check_trunk_sources(trunk: TransferTrunk, forbidden: Iterable[str], target: str) -> None:
    """Refuse a trunk pre-trained on any ``forbidden`` device: predictions for ``target`` would lean on its own
    measurements (or a near-duplicate's), and held-out metrics would look better than for a new device."""
    used = sorted(set(trunk.sources) & set(forbidden))
    if used:
        raise InputError(
            f"the transfer trunk was pre-trained on {', '.join(used)}, which must be left out for target "
            f"{target!r}; pre-train a trunk without them (devicefit predictor pretrain --exclude ...)"
        )


__all__ = [
    "CACHE_ENV_VAR",
    "PRETRAIN",
    "TransferTrunk",
    "TrunkSettings",
    "cached_trunk",
    "check_trunk_sources",
    "default_cache_dir",
    "load_trunk",
    "tables_sha256",
    "trunk_cache_key",
]
