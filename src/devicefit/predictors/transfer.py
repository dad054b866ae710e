"""Few-shot transfer: a GCN pre-trained on many source devices, adapted to a new device from 10-50 cells.

Goal (HELP, Lee et al., arXiv 2106.08630): a user with a new device measures ~20 cells, not 900.
HELP meta-learns a predictor conditioned on a hardware embedding (the device's latencies of 10 fixed
reference cells). This predictor keeps the BRP-NAS GCN (arXiv 2007.08668) and makes the same idea
plain regression:

1. Pre-train (:class:`~.trunk.TransferTrunk`, :meth:`TransferPredictor.pretrain`): one GCN trunk
   (4 x 600, global-node readout) with one linear output per *source* device, on standardised
   log-latencies (per-device z-score of ``log(ms)``, so a 0.5 ms GPU and a 3 s phone weigh the same),
   L1 loss, missing cells masked. The S outputs of a cell are "how slow is this cell on each known
   device, relative to that device". The trunk is saved and reused (:func:`~.trunk.cached_trunk`).
2. Adapt (:meth:`fit`, the few target samples): ridge regression of the target's ``log(value)`` on those
   S source predictions (+ intercept), the ridge strength picked by exact leave-one-out error among
   a log grid. The target device is thus written as a learned mix of source devices; with 10-20
   samples only S+1 numbers are fitted, and the trunk stays frozen. Cells whose output is
   disconnected from the input are kept out of the ridge fit: some devices' pipelines drop such dead
   networks (HELP's raspi4 times them at a median 0.14 ms, against 26 ms for connected cells) and
   others run them, so the sources disagree wildly on them; two such cells among 20 samples wrecked
   the fit (measured: raspi4 Spearman 0.49 for one seed, also with an indicator feature). If the
   samples contain disconnected cells, those are predicted at the mean of their log-values;
   otherwise the ridge predicts them like any cell. "Disconnected" is read from the space's graph
   (no path from its input node to its output node), so this holds for any encodable space.

Why not fine-tuning: 20 samples cannot move 1.1 M weights without over-fitting, and a closed-form
head needs no epochs, so adapting costs milliseconds. Why log: latencies combine multiplicatively
across devices (a faster clock scales all cells), so a linear mix of log-latencies is the natural
family, and L1 on log is the relative error that +-10 % measures.

Evaluation must never pre-train on the target device: :func:`device_family` groups settings of one
chip (batch sizes, precisions, ``-large`` variants), and :func:`sources_for` leaves the target's whole
family out (:func:`devicefit.predictors.evaluate_on_device` does so for the devices of the data
directory, and refuses a given trunk that was pre-trained on any of them). Devices of a family are
near-duplicates (titan_rtx_1 vs titan_rtx_32), so leaving only the target device out would make
transfer look easier than it is for a genuinely new chip.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..spaces import EncodableSpace
from .base import Predictor
from .config import TrainConfig
from .encoding import graph_encoder, space_fingerprint
from .trunk import PRETRAIN, TransferTrunk, TrunkSettings

if TYPE_CHECKING:
    from ..data.latency_table import LatencyTable

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))

_FAMILY_RULES: tuple[tuple[str, str], ...] = (
    # LatBench: the "gtx-1080ti" file is near-identical to the i7 CPU one (see the data README), so both
    # go with the 1080 Ti family of HELP.
    (r"^desktop-(cpu-core-i7-7820x|gpu-gtx-1080ti)", "1080ti"),
    (r"^embedded-gpu-jetson-nano", "jetson-nano"),
    (r"^embedded-tpu-edge", "edge-tpu"),
    (r"^mobile-(cpu|gpu|dsp)-snapdragon-(\d+)", r"snapdragon-\2"),
    (r"^(1080ti|2080ti|titan_rtx|titanx)_\d+$", r"\1"),
)


def device_family(device: str) -> str:
    """The chip a device setting runs on: ``titan_rtx_256`` -> ``titan_rtx``, LatBench SoCs by SoC."""
    for pattern, family in _FAMILY_RULES:
        m = re.match(pattern, device)
        if m:
            return m.expand(family)
    return device


def sources_for(target: str, tables: Mapping[str, LatencyTable], *, leave: str = "family") -> dict[str, LatencyTable]:
    """The source tables for ``target``: all others minus its family (``leave="family"``) or minus itself."""
    if leave not in ("family", "device"):
        raise InputError(f"leave must be 'family' or 'device', got {leave!r}")
    fam = device_family(target)
    return {
        name: t
        for name, t in tables.items()
        if name != target and (leave == "device" or device_family(name) != fam) and len(t) > 0
    }


def ridge_loo(
    x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS
) -> tuple[np.ndarray, float, float]:
    """Ridge regression with intercept; ``alpha`` by exact leave-one-out squared error. -> (w, b, alpha)."""
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    n, d = xc.shape
    best = (np.inf, 0.0, np.zeros(d))
    for a in alphas:
        k = xc.T @ xc + a * np.eye(d)
        w = np.linalg.solve(k, xc.T @ yc)
        h = xc @ np.linalg.solve(k, xc.T) + 1.0 / n  # hat matrix, intercept included
        resid = yc - xc @ w
        loo = np.mean((resid / np.clip(1.0 - np.diag(h), 1e-9, None)) ** 2)
        if loo < best[0]:
            best = (loo, a, w)
    _, alpha, w = best
    return w, float(ym - xm @ w), float(alpha)


class TransferPredictor(Predictor):
    """A pre-trained trunk (given, or :meth:`pretrain` on source devices) and a ridge head ``fit`` on a few
    candidates of the target device.

    ``pretrain_cells``, ``hidden``, ``layers``, ``dropout`` and ``train`` are the settings :meth:`pretrain`
    uses (:class:`~.trunk.TrunkSettings`); a given ``trunk`` keeps its own. The space defaults to the
    trunk's, else NB201.
    """

    name = "transfer"
    min_train = 3

    def __init__(
        self,
        *,
        space: EncodableSpace[Any] | None = None,
        trunk: TransferTrunk | None = None,
        pretrain_cells: int = 1000,
        hidden: int = 600,
        layers: int = 4,
        dropout: float = 0.002,
        train: TrainConfig | None = None,
    ) -> None:
        super().__init__(space=space if space is not None or trunk is None else trunk.space)
        self.pretrain_settings = TrunkSettings(pretrain_cells, hidden, layers, dropout, train or PRETRAIN)
        self.trunk: TransferTrunk | None = None
        if trunk is not None:
            self.use_trunk(trunk)
        self.w = np.zeros(0)
        self.b = 0.0
        self.alpha = 0.0
        self.disconnected_log: float | None = None

    @property
    def is_pretrained(self) -> bool:
        return self.trunk is not None

    @property
    def sources(self) -> list[str]:
        """The source devices of the trunk (empty before pre-training)."""
        return [] if self.trunk is None else list(self.trunk.sources)

    @property
    def pretrain_info(self) -> dict[str, Any]:
        return {} if self.trunk is None else dict(self.trunk.info)

    def use_trunk(self, trunk: TransferTrunk) -> TransferPredictor:
        """Adapt from ``trunk`` from now on (it must encode this predictor's space); the head must be fitted again."""
        if space_fingerprint(trunk.space) != space_fingerprint(self.space):
            raise InputError(f"the trunk was pre-trained on space {trunk.space.settings()}, not on "
                             f"{self.space.settings()}")
        self.trunk = trunk
        self.n_train = 0
        return self

    def pretrain(self, sources: Mapping[str, LatencyTable], *, seed: int = 0) -> TransferPredictor:
        """Pre-train a new trunk on the source tables (:meth:`TransferTrunk.pretrain`) with this one's settings."""
        return self.use_trunk(
            TransferTrunk.pretrain(sources, space=self.space, seed=seed, settings=self.pretrain_settings)
        )

    def _trunk(self) -> TransferTrunk:
        if self.trunk is None:
            raise InputError(
                "transfer predictor is not pre-trained: call pretrain(source_tables), or give trunk= "
                "(load_trunk / cached_trunk)"
            )
        return self.trunk

    def _fit(self, candidates: list[Any], y: np.ndarray, seed: int) -> None:
        trunk = self._trunk()
        flag = ~graph_encoder(self.space).reaches_output(candidates)  # disconnected candidates
        fit_on = ~flag if (~flag).sum() >= 3 else np.ones_like(flag)
        x = trunk.features([c for c, keep in zip(candidates, fit_on) if keep])
        self.w, self.b, self.alpha = ridge_loo(x, np.log(y[fit_on]))
        self.disconnected_log = float(np.mean(np.log(y[flag]))) if flag.any() else None

    def _predict(self, candidates: list[Any]) -> np.ndarray:
        logy = self._trunk().features(candidates) @ self.w + self.b
        if self.disconnected_log is not None:
            logy[~graph_encoder(self.space).reaches_output(candidates)] = self.disconnected_log
        return np.exp(logy)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params, arrays = self._trunk().state()
        params["head"] = {
            "kind": "ridge on source outputs -> log(value); disconnected candidates: mean log of their samples",
            "disconnected_log": self.disconnected_log,
            "alpha": self.alpha,
            "intercept": self.b,
        }
        return params, {**arrays, "head_w": self.w}

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.trunk = TransferTrunk.from_state(self.space, params, arrays)
        self.pretrain_settings = self.trunk.settings
        self.w = np.asarray(arrays["head_w"], dtype=np.float64).reshape(len(self.trunk.sources))
        d = params["head"]["disconnected_log"]
        self.disconnected_log = None if d is None else float(d)
        self.b = float(params["head"]["intercept"])
        self.alpha = float(params["head"]["alpha"])
