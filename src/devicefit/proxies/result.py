"""What a proxy is (name, direction, which shared pass computes it) and what it returns.

A :class:`ProxyResult` carries either a finite score or the reason the proxy failed (NaN, infinite,
singular matrix, an exception...). Failures are reported, never ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class ProxySpec:
    """A zero-cost proxy: ``higher_is_better`` says which way it ranks; ``group`` names the pass that computes it."""

    name: str
    higher_is_better: bool
    group: str
    description: str


@dataclass(frozen=True)
class ProxyResult:
    """The score of one proxy on one network, or why there is none (``score`` is None, ``error`` set)."""

    name: str
    score: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.score is None) == (self.error is None):
            raise InputError(f"proxy result {self.name!r} needs exactly one of score or error")

    @property
    def ok(self) -> bool:
        return self.score is not None

    @classmethod
    def of(cls, name: str, value: float) -> ProxyResult:
        """A score, or a failure when ``value`` is NaN or infinite."""
        v = float(value)
        if math.isfinite(v):
            return cls(name, score=v)
        return cls(name, error=f"{name} score is {v} (not finite)")

    @classmethod
    def failed(cls, name: str, reason: str) -> ProxyResult:
        return cls(name, error=reason)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score} if self.ok else {"error": self.error}

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ProxyResult:
        return cls(name, score=d["score"]) if d.get("score") is not None else cls(name, error=str(d.get("error")))


#: Every proxy, in the order they are reported. Directions follow the reference code
#: (SamsungLabs/zero-cost-nas): every score there is "higher is better", grasp included (it carries the sign).
PROXIES: dict[str, ProxySpec] = {
    s.name: s
    for s in (
        ProxySpec("grad_norm", True, "gradient", "sum over Conv/Linear layers of the L2 norm of dL/dW (CE loss)"),
        ProxySpec("snip", True, "gradient", "sum |W * dL/dW| over Conv/Linear weights (SNIP, arXiv 1810.02340)"),
        ProxySpec("grasp", True, "gradient", "sum -W * (H dL/dW) over Conv/Linear weights (GraSP, arXiv 2002.07376)"),
        ProxySpec("fisher", True, "gradient", "per-channel Fisher 0.5*mean_n(sum_hw a*dL/da)^2, summed per weight"),
        ProxySpec("jacob_cov", True, "gradient", "NASWOT-v1: -sum(log(v+k)+1/(v+k)), v eigvals of corr(dy/dx), k=1e-5"),
        ProxySpec("nwot", True, "gradient", "NASWOT: log|det K|, K Hamming kernel of ReLU codes (arXiv 2006.04647)"),
        ProxySpec("synflow", True, "synflow", "sum |W * dR/dW|, R = sum f_|W|(1) in float64, BatchNorm removed"),
        ProxySpec("params", True, "baseline", "number of parameters"),
        ProxySpec("flops", True, "baseline", "FLOPs of one image (2 x MACs of conv/matmul, torch.utils.flop_counter)"),
    )
}

#: The proxies the paper's ``vote`` combines (arXiv 2101.08134, Section 5).
VOTE_PROXIES: tuple[str, ...] = ("synflow", "jacob_cov", "snip")


def check_proxy_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """Validate proxy names (``vote`` is not a per-network proxy: it combines three over candidates)."""
    if not names:
        raise InputError(f"no proxies requested; choose from {', '.join(PROXIES)}")
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        hint = " ('vote' combines synflow, jacob_cov and snip over candidates)" if "vote" in unknown else ""
        raise InputError(
            f"unknown proxy name(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(PROXIES)}{hint}"
        )
    return list(dict.fromkeys(names))
