"""The names a predictor file can carry (no imports: everything else in the package may use them)."""

from __future__ import annotations

#: Registry names of the predictor kinds, in order of sophistication.
PREDICTOR_KINDS: tuple[str, ...] = ("flops", "layerwise", "mlp", "gcn", "transfer")
#: The ``kind`` of a saved transfer trunk file (not a predictor).
TRUNK_KIND = "transfer-trunk"
#: Units of the values a predictor is fitted on: latency in milliseconds, energy in millijoules.
UNITS: tuple[str, ...] = ("ms", "mJ")
