"""How close to a device table any predictor can get: the measurement-noise ceiling from twin cells.

A latency table is a measurement, so no predictor can put more cells within +-10 % than the noise allows.
NAS-Bench-201 holds 1,500 pairs of cells that are the same computation under two arch strings
(:meth:`devicefit.spaces.NB201Cell.twin`); the spread between the two measured values of a pair is
noise (timer jitter, thermal state, drift over the measurement order, rounding to whole milliseconds),
and bounds the share within +-p % (BRP-NAS's metric, arXiv 2007.08668) that a predictor can reach:

- **lower bound** ``twin_agreement``: a predictor that re-measures reaches it, the share of twins whose
  one value lies within +-p % of the other (both directions counted);
- **upper bound** ``upper_bound``: if a predictor f puts each of two independent, identically noisy
  measurements y1, y2 of a pair within +-p % with probability q, both are within with probability q^2,
  and then |log(y1 / y2)| <= 2 * a with a = -log(1 - p). So q <= sqrt(P(|log(y1 / y2)| <= 2 * a)).

The bounds assume that the noise of the two twins is independent and that a predictor gives both the
same value (they are one network). ``noise_sigma`` is the robust (MAD) standard deviation of the log
noise of one measurement, sqrt(2) below that of the log ratio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..data.latency_table import LatencyTable
from ..errors import InputError
from ..spaces.nb201 import twin_pairs

#: Fewer measured pairs than this give no bounds (their sampling error would be larger than the bracket).
MIN_TWIN_PAIRS = 30


@dataclass(frozen=True)
class MeasurementCeiling:
    """Bounds on the share of cells any predictor can place within +-``tolerance`` of the truth."""

    device: str
    tolerance: float
    pairs: int
    twin_agreement: float
    upper_bound: float
    noise_sigma: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def measurement_ceiling(table: LatencyTable, tolerance: float = 0.10) -> MeasurementCeiling | None:
    """The twin-cell bounds for ``table`` (see the module docstring); None with < MIN_TWIN_PAIRS pairs."""
    if not 0 < tolerance < 1:
        raise InputError(f"tolerance must be a fraction in (0, 1), got {tolerance!r}")
    values = np.array(
        [(table[a], table[b]) for a, b in twin_pairs() if a in table and b in table], dtype=np.float64
    ).reshape(-1, 2)
    values = values[(values > 0).all(axis=1)]
    if len(values) < MIN_TWIN_PAIRS:
        return None
    y1, y2 = values[:, 0], values[:, 1]
    agree = np.concatenate([np.abs(y1 - y2) <= tolerance * y2, np.abs(y2 - y1) <= tolerance * y1])
    log_ratio = np.log(y1 / y2)
    upper = math.sqrt(float(np.mean(np.abs(log_ratio) <= -2 * math.log1p(-tolerance))))
    mad = float(np.median(np.abs(log_ratio - np.median(log_ratio))))
    return MeasurementCeiling(
        device=table.device,
        tolerance=tolerance,
        pairs=len(values),
        twin_agreement=float(agree.mean()),
        upper_bound=upper,
        noise_sigma=1.4826 * mad / math.sqrt(2),
    )


__all__ = ["MIN_TWIN_PAIRS", "MeasurementCeiling", "measurement_ceiling"]
