"""Energy models fitted from measured lookup tables: one bilinear model per device, for any conv/linear layer.

**What is modelled.** ECC (Yang, Zhu, Liu, CVPR 2019, arXiv 1812.01803) models the energy of layer ``l`` as
bilinear in its input and output channel counts, ``E_l = a_l c_in c_out + b_l c_in + c_l c_out + d_l``, with
the four coefficients of every layer fitted from measurements of that layer on the platform. Here the
coefficients are not fitted layer by layer but derived from seven shared hardware constants (mJ per unit) and
the layer's fixed geometry (input and output positions ``P_in``, ``P_out`` = H x W per sample, kernel area
``k`` = k_h x k_w, groups ``g``), so that one fit serves every layer of every model::

    E = e_mac[type] * MACs + e_weight * weights + e_input * P_in c_in + e_output * P_out c_out + e_layer
    MACs = P_out * weights,  weights = k c_in c_out / g   (depthwise: k c_out, its groups follow c_in)

``type`` is dense (``g = 1``, also ``Linear``), grouped (``1 < g < c_in``) or depthwise (``g = c_in``), each
with its own MAC energy. For a fixed layer this is ECC's bilinear form, with ``a = (e_mac P_out + e_weight)
k / g``, ``b = e_input P_in``, ``c = e_output P_out``, ``d = e_layer`` (depthwise: ``a = 0`` and the weight
terms join ``c``). Batch norm, activations, residual additions and channel shuffles of a block are not
modelled separately: they scale with the activations around the convolutions, so their energy is absorbed
into ``e_input``/``e_output``, as it is in the table the model is fitted to.

**Fit.** The constants are fitted by non-negative least squares (``scipy.optimize.nnls``, columns scaled to
unit norm) on HW-NAS-Bench's FBNet lookup table of a device (``fbnet/fbnet_cached_metrics.json`` in the data
directory, energy in mJ per batch-1 inference; GATECH-EIC/HW-NAS-Bench), minimising the *relative* squared
error ``sum ((E_pred - E) / E)^2`` so that small and large blocks count alike. Each table entry is expanded
into its convolutions as HW-NAS-Bench builds them: a ``ConvBlock_H{h}_W{w}_Cin{i}_Cout{o}_exp{e}_kernel{k}_
stride{s}_group{g}`` (``H``/``W``: its *input* size) is a 1x1 conv ``i -> e*i`` with ``g`` groups, a k x k
depthwise conv of stride ``s`` on ``e*i`` channels, and a 1x1 conv ``e*i -> o`` with ``g`` groups (plus BN,
ReLU, a shuffle when ``g > 1`` and a residual add when ``i = o`` and ``s = 1``); a ``Skip`` is a 1x1 conv of
stride ``s`` when ``s = 2`` or ``i != o``, else the identity; a ``ConvNorm`` is one k x k conv; an ``FC`` a
linear layer. Entries without a convolution (``AvgP`` pooling, identity skips) are left out, and so are
entries whose energy is 0 although they compute (the ``fpga`` table has 0 for every non-``ConvBlock`` entry:
not measured). Energy is in the table for ``edgegpu``, ``eyeriss`` and ``fpga``; ``raspi4`` and ``pixel3``
have latency only.

**Fit error** (held-out, 5-fold cross-validation over the table's entries, seed 0; ``benchmarks/
energy_models.py``): eyeriss R^2 0.90, mean abs. error 21 %, Spearman 0.96; edgegpu R^2 0.74, 19 %, 0.78;
fpga R^2 0.90, 25 %, 0.96 -- against a MACs-only fit ``a MACs + b`` (same weighting and folds): R^2 0.87 /
0.49 / 0.87, 28 % / 22 % / 33 %, Spearman 0.96 / 0.50 / 0.96. What the model misses is mostly spatial
utilisation: on eyeriss, blocks on 4x4 and 7x7 maps take 2 to 2.8 times the energy predicted (a PE array
partly idle), 14x14 ones 20-30 % less; on edgegpu, small ops are noisy around a floor of 2-3 mJ each.
Use it to compare and
budget layers of one model on one device, not as a measurement.

:meth:`BilinearEnergyModel.model_energy` walks a model's ``Conv1d/2d/3d`` and ``Linear`` layers with forward
hooks for their geometry; with ``sparse=True`` a layer costs ``weight_cost * nonzero weights + fixed``, the
energy on hardware that skips zero weights (the assumption of energy-constrained pruning, arXiv 1806.04321).
Models are saved as JSON (never pickle).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomic
from ..data.datadir import DataFileError, data_file
from ..errors import InputError, UnknownNameError

__all__ = [
    "FBNET_TABLE",
    "FEATURES",
    "BilinearEnergyModel",
    "FbnetOp",
    "FitMetrics",
    "FitReport",
    "LayerEnergy",
    "LayerShape",
    "ModelEnergy",
    "check_energy_table",
    "fit_energy_model",
    "fit_energy_table",
    "layer_shapes",
    "load_fbnet_energy",
    "parse_fbnet_key",
]

#: The HW-NAS-Bench FBNet lookup tables, relative to the data directory.
FBNET_TABLE = "fbnet/fbnet_cached_metrics.json"
#: The fitted constants, mJ per: MAC of a dense / grouped / depthwise layer, weight, input element, output
#: element, layer.
FEATURES: tuple[str, ...] = ("mac_dense", "mac_grouped", "mac_depthwise", "weight", "input", "output", "layer")
_FORMAT = "devicefit.bilinear_energy"
_VERSION = 1
_KINDS = ("conv", "linear")


# --- layer geometry ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerShape:
    """The fixed geometry of one conv or linear layer, per sample: channels as built, input and output positions
    (H x W; 1 for a linear layer on a vector, the positions of the other dimensions otherwise), kernel area and
    groups. The channel counts of :meth:`BilinearEnergyModel.layer_energy` may differ from the built ones."""

    in_channels: int
    out_channels: int
    in_positions: int = 1
    out_positions: int = 1
    kernel_area: int = 1
    groups: int = 1
    kind: str = "conv"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "in_positions", "out_positions", "kernel_area", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"LayerShape {name} must be a positive integer, got {value!r}")
        if self.kind not in _KINDS:
            raise InputError(f"LayerShape kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise InputError(f"LayerShape channels {self.in_channels} -> {self.out_channels} are not divisible by "
                             f"groups={self.groups}")
        if self.kind == "linear" and (self.groups != 1 or self.kernel_area != 1 or
                                      self.in_positions != self.out_positions):
            raise InputError("a linear LayerShape has groups 1, kernel area 1 and as many input as output positions")

    @property
    def layer_type(self) -> str:
        """``dense``, ``grouped`` or ``depthwise`` (``groups == in_channels > 1``)."""
        if self.groups == 1:
            return "dense"
        return "depthwise" if self.groups == self.in_channels else "grouped"

    def weights(self, c_in: float | None = None, c_out: float | None = None) -> float:
        """Weight elements at these channel counts (default: as built); a depthwise layer's groups follow c_in."""
        ci, co = self._channels(c_in, c_out)
        if self.layer_type == "depthwise":
            return self.kernel_area * co * (self.in_channels // self.groups)
        return self.kernel_area * ci * co / self.groups

    def _channels(self, c_in: float | None, c_out: float | None) -> tuple[float, float]:
        ci = self.in_channels if c_in is None else _count(c_in, "c_in")
        co = self.out_channels if c_out is None else _count(c_out, "c_out")
        return ci, co

    def features(self, c_in: float | None = None, c_out: float | None = None) -> np.ndarray:
        """The layer's amounts of :data:`FEATURES` (MACs of its type, weights, input and output elements, 1)."""
        ci, co = self._channels(c_in, c_out)
        weights = self.weights(ci, co)
        f = np.zeros(len(FEATURES))
        f[FEATURES.index(f"mac_{self.layer_type}")] = self.out_positions * weights
        f[FEATURES.index("weight")] = weights
        f[FEATURES.index("input")] = self.in_positions * ci
        f[FEATURES.index("output")] = self.out_positions * co
        f[FEATURES.index("layer")] = 1.0
        return f

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{what} must be a non-negative number of channels, got {value!r}")
    return float(value)


# --- the FBNet lookup table ------------------------------------------------------------------------------

_KEY_PATTERNS: dict[str, re.Pattern[str]] = {
    "ConvBlock": re.compile(r"ConvBlock_H(\d+)_W(\d+)_Cin(\d+)_Cout(\d+)_exp(\d+)_kernel(\d+)_stride(\d+)_group(\d+)"),
    "ConvNorm": re.compile(r"ConvNorm_H(\d+)_W(\d+)_Cin(\d+)_Cout(\d+)_kernel(\d+)_stride(\d+)_group(\d+)"),
    "Skip": re.compile(r"Skip_H(\d+)_W(\d+)_Cin(\d+)_Cout(\d+)_stride(\d+)"),
    "AvgP": re.compile(r"AvgP_H(\d+)_W(\d+)_Cin(\d+)_Cout(\d+)_kernel(\d+)_stride(\d+)"),
    "FC": re.compile(r"FC_Cin(\d+)_Cout(\d+)"),
}
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "ConvBlock": ("h", "w", "c_in", "c_out", "expansion", "kernel", "stride", "groups"),
    "ConvNorm": ("h", "w", "c_in", "c_out", "kernel", "stride", "groups"),
    "Skip": ("h", "w", "c_in", "c_out", "stride"),
    "AvgP": ("h", "w", "c_in", "c_out", "kernel", "stride"),
    "FC": ("c_in", "c_out"),
}
_KEY_FORMS = ("ConvBlock_H{h}_W{w}_Cin{i}_Cout{o}_exp{e}_kernel{k}_stride{s}_group{g}, "
              "ConvNorm_H{h}_W{w}_Cin{i}_Cout{o}_kernel{k}_stride{s}_group{g}, "
              "Skip_H{h}_W{w}_Cin{i}_Cout{o}_stride{s}, AvgP_H{h}_W{w}_Cin{i}_Cout{o}_kernel{k}_stride{s} "
              "or FC_Cin{i}_Cout{o}")


@dataclass(frozen=True)
class FbnetOp:
    """One entry of the FBNet lookup table, parsed (``h``, ``w``: the op's input size)."""

    op: str
    c_in: int
    c_out: int
    h: int = 1
    w: int = 1
    expansion: int = 1
    kernel: int = 1
    stride: int = 1
    groups: int = 1

    def layers(self) -> tuple[LayerShape, ...]:
        """The op's conv/linear layers as HW-NAS-Bench builds it (see the module docstring); empty for pooling
        and an identity skip."""
        s = self.stride
        ho, wo = -(-self.h // s), -(-self.w // s)
        p_in, p_out = self.h * self.w, ho * wo
        if self.op == "ConvBlock":
            mid = self.c_in * self.expansion
            return (LayerShape(self.c_in, mid, p_in, p_in, 1, self.groups),
                    LayerShape(mid, mid, p_in, p_out, self.kernel**2, mid),
                    LayerShape(mid, self.c_out, p_out, p_out, 1, self.groups))
        if self.op == "ConvNorm":
            return (LayerShape(self.c_in, self.c_out, p_in, p_out, self.kernel**2, self.groups),)
        if self.op == "Skip":
            return () if s == 1 and self.c_in == self.c_out else (LayerShape(self.c_in, self.c_out, p_in, p_out),)
        if self.op == "FC":
            return (LayerShape(self.c_in, self.c_out, kind="linear"),)
        return ()  # AvgP: pooling has no weights


def parse_fbnet_key(key: str) -> FbnetOp:
    """Parse a key of HW-NAS-Bench's FBNet table, e.g. ``ConvBlock_H32_W32_Cin16_Cout24_exp6_kernel3_stride1_
    group1``; an :class:`~devicefit.errors.InputError` names a key that is none of the known forms."""
    if not isinstance(key, str):
        raise InputError(f"an FBNet table key must be a string, got {type(key).__name__}")
    for op, pattern in _KEY_PATTERNS.items():
        m = pattern.fullmatch(key)
        if m:
            values = dict(zip(_KEY_FIELDS[op], (int(v) for v in m.groups())))
            if any(v < 1 for v in values.values()):
                raise InputError(f"FBNet table key {key!r} has a zero size; every number must be positive")
            try:
                parsed = FbnetOp(op, **values)
                parsed.layers()
            except InputError as exc:
                raise InputError(f"FBNet table key {key!r} describes an impossible layer: {exc}") from None
            return parsed
    raise InputError(f"FBNet table key {key!r} is not in a known form; expected {_KEY_FORMS}")


def check_energy_table(table: Any, source: str = "the energy table") -> dict[str, float]:
    """``table`` as ``{key: mJ}`` after checking it: every key parses (:func:`parse_fbnet_key`) and every energy
    is a finite number >= 0; otherwise a :class:`~devicefit.data.DataFileError` naming ``source`` and the entry."""
    if not isinstance(table, Mapping) or not table:
        raise DataFileError(f"{source}: expected a non-empty mapping of FBNet op keys to energy in mJ, got "
                            f"{type(table).__name__}{' (empty)' if isinstance(table, Mapping) else ''}")
    out: dict[str, float] = {}
    for key, value in table.items():
        try:
            parse_fbnet_key(key)
        except InputError as exc:
            raise DataFileError(f"{source}: {exc}") from None
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
        if not ok:
            raise DataFileError(f"{source}: energy of {key!r} is {value!r}; expected a finite number of mJ >= 0")
        out[key] = float(value)
    return out


def load_fbnet_energy(device: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The energy table (mJ per batch-1 inference) of ``device`` from ``fbnet/fbnet_cached_metrics.json`` in the
    data directory, checked by :func:`check_energy_table`. A device with no energy there (``raspi4``,
    ``pixel3``: latency only) is an :class:`~devicefit.errors.UnknownNameError` listing those that have."""
    path = data_file(FBNET_TABLE, data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: cannot be read as JSON ({exc}); expected HW-NAS-Bench's FBNet lookup tables "
                            "(an object with '<device>_energy' tables)") from None
    if not isinstance(raw, dict):
        raise DataFileError(f"{path}: expected a JSON object of '<device>_latency'/'<device>_energy' tables, got "
                            f"{type(raw).__name__}")
    have = sorted(k[: -len("_energy")] for k in raw if isinstance(k, str) and k.endswith("_energy"))
    if not isinstance(device, str) or f"{device}_energy" not in raw:
        raise UnknownNameError(f"{path} has no energy table for device {device!r}; energy is there for: "
                               f"{', '.join(have) or 'none'}")
    return check_energy_table(raw[f"{device}_energy"], f"{path} [{device}_energy]")


# --- fitting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitMetrics:
    """Goodness of fit of predictions against the table: R^2, mean absolute percentage error (%), Spearman rho."""

    r2: float
    mape_pct: float
    spearman: float


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit_energy_table` fitted: the device, the entries used, those left out (reason -> count), the
    design's rank, the in-sample fit, the held-out fit of ``folds``-fold cross-validation and, on the same folds,
    that of the MACs-only baseline ``E = a MACs + b`` (held-out metrics are None when the table is too small)."""

    device: str
    entries: int
    excluded: dict[str, int]
    rank: int
    train: FitMetrics
    folds: int
    seed: int
    heldout: FitMetrics | None = None
    baseline: FitMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> FitReport:
        metrics = {k: None if d.get(k) is None else FitMetrics(**d[k]) for k in ("train", "heldout", "baseline")}
        return FitReport(device=str(d["device"]), entries=int(d["entries"]),
                         excluded={str(k): int(v) for k, v in dict(d["excluded"]).items()}, rank=int(d["rank"]),
                         folds=int(d["folds"]), seed=int(d["seed"]), **metrics)  # type: ignore[arg-type]


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative ``c`` minimising ``sum(((x c - y) / y)^2)`` (columns scaled to unit norm for conditioning)."""
    from scipy.optimize import nnls

    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(a / scale, np.ones_like(y), maxiter=50 * x.shape[1])
    return c / scale


def _metrics(pred: np.ndarray, y: np.ndarray) -> FitMetrics:
    from ..ranking import mape, spearman

    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((pred - y) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    rho = spearman(pred, y) if np.ptp(pred) > 0 and np.ptp(y) > 0 else float("nan")
    return FitMetrics(r2=r2, mape_pct=100.0 * mape(pred, y), spearman=rho)


_NO_LAYER = "no conv/linear layer (pooling, identity skip)"
_NOT_MEASURED = "energy 0 for an op that computes (not measured)"


def _design(table: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, int]]:
    keys, rows, ys = [], [], []
    excluded = {_NO_LAYER: 0, _NOT_MEASURED: 0}
    for key, energy in table.items():
        layers = parse_fbnet_key(key).layers()
        if not layers:
            excluded[_NO_LAYER] += 1
        elif energy == 0:
            excluded[_NOT_MEASURED] += 1
        else:
            keys.append(key)
            rows.append(np.sum([s.features() for s in layers], axis=0))
            ys.append(energy)
    return keys, np.array(rows).reshape(-1, len(FEATURES)), np.array(ys, dtype=np.float64), excluded


def _cross_validate(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of the bilinear model and of the MACs-only baseline."""
    macs = x[:, [FEATURES.index(f) for f in FEATURES if f.startswith("mac_")]].sum(1)
    base = np.stack([macs, np.ones_like(macs)], 1)
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    pred, pred_base = np.zeros_like(y), np.zeros_like(y)
    for f in range(folds):
        train = fold != f
        pred[~train] = x[~train] @ _nnls_relative(x[train], y[train])
        pred_base[~train] = base[~train] @ _nnls_relative(base[train], y[train])
    return pred, pred_base


def fit_energy_table(table: Mapping[str, float], *, device: str = "custom", folds: int = 5,
                     seed: int = 0) -> BilinearEnergyModel:
    """Fit the shared constants to a ``{FBNet key: mJ}`` table (see the module docstring); the report holds the
    ``folds``-fold held-out fit (None with fewer than ``2 * folds`` usable entries) and the MACs-only baseline.
    An inconsistent table (unparseable key, negative or non-finite energy) is refused."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InputError(f"folds must be an integer >= 2, got {folds!r}")
    checked = check_energy_table(table, f"energy table of {device!r}")
    _, x, y, excluded = _design(checked)
    if len(y) < 2:
        raise InputError(f"the energy table of {device!r} has {len(y)} usable entries (ops with a conv or linear "
                         f"layer and energy > 0); a fit needs at least 2 (left out: {excluded})")
    constants = _nnls_relative(x, y)
    heldout = baseline = None
    if len(y) >= 2 * folds:
        pred, pred_base = _cross_validate(x, y, folds, seed)
        heldout, baseline = _metrics(pred, y), _metrics(pred_base, y)
    rank = int(np.linalg.matrix_rank(x / y[:, None]))
    report = FitReport(device=device, entries=len(y), excluded=excluded, rank=rank,
                       train=_metrics(x @ constants, y), folds=folds, seed=seed, heldout=heldout, baseline=baseline)
    identified = tuple(f for f, col in zip(FEATURES, x.T) if np.any(col > 0))
    return BilinearEnergyModel(device, dict(zip(FEATURES, (float(c) for c in constants))), identified, report)


def fit_energy_model(device: str, *, data_dir: str | os.PathLike[str] | None = None, folds: int = 5,
                     seed: int = 0) -> BilinearEnergyModel:
    """:func:`fit_energy_table` on the FBNet energy table of ``device`` (``edgegpu``, ``eyeriss``, ``fpga``)."""
    return fit_energy_table(load_fbnet_energy(device, data_dir), device=device, folds=folds, seed=seed)


# --- the model -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerEnergy:
    """One layer of :meth:`BilinearEnergyModel.model_energy`: geometry, weights, non-zero weights, energy (mJ)."""

    shape: LayerShape
    weights: int
    nonzero_weights: int
    energy_mj: float


@dataclass(frozen=True)
class ModelEnergy:
    """A model's estimated energy per inference of one sample (mJ): the sum over its conv/linear layers."""

    device: str
    total_mj: float
    layers: dict[str, LayerEnergy] = field(default_factory=dict)


@dataclass(frozen=True)
class BilinearEnergyModel:
    """The fitted constants of one device (mJ per unit of each of :data:`FEATURES`), which of them the fit could
    identify (a layer type absent from the table has none), and the fit's report."""

    device: str
    constants: dict[str, float]
    identified: tuple[str, ...] = FEATURES
    fit: FitReport | None = None

    def __post_init__(self) -> None:
        if set(self.constants) != set(FEATURES):
            raise InputError(f"energy model constants must be exactly {', '.join(FEATURES)}, got "
                             f"{', '.join(sorted(self.constants))}")
        for k, v in self.constants.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"energy model constant {k!r} must be a finite number >= 0 (mJ), got {v!r}")
        unknown = set(self.identified) - set(FEATURES)
        if unknown:
            raise InputError(f"energy model identified features {sorted(unknown)} are not among {', '.join(FEATURES)}")

    def _check_identified(self, shape: LayerShape) -> None:
        needed = f"mac_{shape.layer_type}"
        if needed not in self.identified:
            raise InputError(f"the {self.device} energy model was fitted without any {shape.layer_type} layer, so it "
                             f"has no energy per MAC for one ({needed}); fit it on a table with such layers")

    def coefficients(self, shape: LayerShape) -> tuple[float, float, float, float]:
        """ECC's ``(a, b, c, d)`` of this layer: ``E = a c_in c_out + b c_in + c c_out + d`` (mJ)."""
        self._check_identified(shape)
        k = self.constants
        per_weight = self.weight_cost(shape)
        b = k["input"] * shape.in_positions
        c = k["output"] * shape.out_positions
        if shape.layer_type == "depthwise":
            return 0.0, b, c + per_weight * shape.kernel_area * (shape.in_channels // shape.groups), k["layer"]
        return per_weight * shape.kernel_area / shape.groups, b, c, k["layer"]

    def weight_cost(self, shape: LayerShape) -> float:
        """Energy (mJ) of one non-zero weight of this layer: its ``P_out`` MACs plus its access."""
        self._check_identified(shape)
        return self.constants[f"mac_{shape.layer_type}"] * shape.out_positions + self.constants["weight"]

    def fixed_energy(self, shape: LayerShape, c_in: float | None = None, c_out: float | None = None) -> float:
        """The part (mJ) of the layer's energy that does not depend on its weights: activations and the per-layer
        constant."""
        ci, co = shape._channels(c_in, c_out)
        k = self.constants
        return k["input"] * shape.in_positions * ci + k["output"] * shape.out_positions * co + k["layer"]

    def layer_energy(self, shape: LayerShape, c_in: float | None = None, c_out: float | None = None) -> float:
        """Energy (mJ) of the dense layer at ``c_in``/``c_out`` channels (default: as built); channel counts may be
        fractional (a relaxation, as ECC optimises them)."""
        ci, co = shape._channels(c_in, c_out)
        a, b, c, d = self.coefficients(shape)
        return a * ci * co + b * ci + c * co + d

    def sparse_layer_energy(self, shape: LayerShape, nonzero_weights: float) -> float:
        """Energy (mJ) of the layer as built with ``nonzero_weights`` non-zero weights (zeros skipped)."""
        nnz = _count(nonzero_weights, "nonzero_weights")
        return self.weight_cost(shape) * nnz + self.fixed_energy(shape)

    def op_energy(self, key: str) -> float:
        """Predicted energy (mJ) of an FBNet table entry (the sum over its layers; 0 for pooling or identity)."""
        return math.fsum(self.layer_energy(s) for s in parse_fbnet_key(key).layers())

    def model_energy(self, model: Any, example_input: Any, *, sparse: bool = True) -> ModelEnergy:
        """Energy per sample of ``model`` on ``example_input`` (dimension 0 is the batch): the sum over its
        ``Conv1d/2d/3d`` and ``Linear`` layers, with their geometry from forward hooks. ``sparse``: a layer's
        zero weights (also those of a ``torch.nn.utils.prune`` mask) cost nothing; else every weight counts."""
        import torch

        shapes = layer_shapes(model, example_input)
        modules = dict(model.named_modules())
        layers: dict[str, LayerEnergy] = {}
        with torch.no_grad():
            for name, shape in shapes.items():
                w = effective_weight(modules[name])
                numel = int(w.numel())
                nnz = int(torch.count_nonzero(w)) if sparse else numel
                layers[name] = LayerEnergy(shape, numel, nnz, self.sparse_layer_energy(shape, nnz))
        return ModelEnergy(self.device, math.fsum(e.energy_mj for e in layers.values()), layers)

    # --- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "version": _VERSION, "device": self.device, "unit": "mJ",
                "constants": dict(self.constants), "identified": list(self.identified),
                "fit": None if self.fit is None else self.fit.to_dict()}

    @staticmethod
    def from_dict(d: Any, source: str = "energy model") -> BilinearEnergyModel:
        """The inverse of :meth:`to_dict`; an :class:`~devicefit.errors.InputError` names ``source`` and what is
        wrong or missing."""
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            raise InputError(f"{source}: expected a JSON object with format {_FORMAT!r}")
        if d.get("version") != _VERSION or d.get("unit") != "mJ":
            raise InputError(f"{source}: expected version {_VERSION} and unit 'mJ', got version {d.get('version')!r}, "
                             f"unit {d.get('unit')!r}")
        try:
            fit = None if d.get("fit") is None else FitReport.from_dict(d["fit"])
            constants = {str(k): v for k, v in dict(d["constants"]).items()}
            return BilinearEnergyModel(str(d["device"]), constants, tuple(str(f) for f in d["identified"]), fit)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise InputError(f"{source}: {exc}") from None
            raise InputError(f"{source}: missing or malformed field ({type(exc).__name__}: {exc}); expected device, "
                             f"constants ({', '.join(FEATURES)}), identified and fit") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (atomically)."""
        target = Path(path)
        write_atomic(target, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return target

    @staticmethod
    def load(path: str | os.PathLike[str]) -> BilinearEnergyModel:
        """Read a model written by :meth:`save`; errors name the file."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataFileError(f"energy model file {str(p)!r} not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFileError(f"energy model file {str(p)!r} is not JSON ({exc}); expected a file written by "
                                "BilinearEnergyModel.save") from None
        return BilinearEnergyModel.from_dict(d, f"energy model file {str(p)!r}")


# --- a model's layers --------------------------------------------------------------------------------------


def effective_weight(module: Any) -> Any:
    """The weight the forward uses: ``weight_orig * weight_mask`` for a ``torch.nn.utils.prune``-d layer."""
    mask = getattr(module, "weight_mask", None)
    orig = getattr(module, "weight_orig", None)
    return module.weight if mask is None or orig is None else orig * mask


def layer_shapes(model: Any, example_input: Any) -> dict[str, LayerShape]:
    """The geometry (per sample) of every ``Conv1d/2d/3d`` and ``Linear`` layer of ``model`` that runs on
    ``example_input`` (dimension 0 is the batch), by module name, in order of execution; run in eval mode under
    ``no_grad``. A layer that runs more than once per forward is refused (shared layers are not modelled)."""
    import torch
    from torch import nn

    from .counting import eval_mode

    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim < 1 or example_input.shape[0] < 1:
        raise InputError("example_input must be a tensor with a batch dimension first, got "
                         f"{type(example_input).__name__} {tuple(getattr(example_input, 'shape', ()))}")
    seen: dict[str, list[LayerShape]] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            seen.setdefault(name, []).append(_shape_of(module, inputs[0], output))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad(), eval_mode(model) as m:
            m(example_input)
    except InputError:
        raise
    except Exception as exc:  # the model cannot run on this input: the user's input, named
        raise InputError(f"model forward failed on an input of shape {tuple(example_input.shape)}: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    shared = [n for n, calls in seen.items() if len(calls) > 1]
    if shared:
        raise InputError(f"layers {shared} run more than once per forward; the energy of shared layers is not modelled")
    return {n: calls[0] for n, calls in seen.items()}


def _shape_of(module: Any, x: Any, y: Any) -> LayerShape:
    from torch import nn

    if isinstance(module, nn.Linear):
        positions = int(math.prod(x.shape[1:-1])) if x.ndim >= 2 else 1
        return LayerShape(module.in_features, module.out_features, positions, positions, kind="linear")
    return LayerShape(module.in_channels, module.out_channels, int(math.prod(x.shape[2:])), int(math.prod(y.shape[2:])),
                      int(math.prod(module.kernel_size)), module.groups)

