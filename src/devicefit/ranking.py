"""Ranking and regression metrics, in one place, shared by proxies, predictors and search.

Definitions follow the papers this toolkit reproduces:
- Spearman rho and Kendall tau (tau-b, scipy) between a score and the ground truth;
- top-k% / top-k%: share of the true top k % found in the score's top k % (zero-cost proxies,
  arXiv 2101.08134, Table 2 "Top-10%/top-10%");
- top-64 / top-5%: how many of the score's 64 best are in the true top 5 %;
- pairwise ranking accuracy: share of pairs ordered as the ground truth orders them (the paper's
  figure for ``vote``);
- share within +-p %: share of predictions whose true value is within p % of the prediction
  (BRP-NAS, arXiv 2007.08668), and MAPE.

Scores are "higher is better"; flip a lower-is-better score before ranking it (see each proxy's
direction). NaN entries are rejected: drop failures before ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from .errors import InputError


def _pair(score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if s.shape != t.shape:
        raise InputError(f"score and truth must have the same length, got {s.size} and {t.size}")
    if s.size < 2:
        raise InputError(f"ranking metrics need at least 2 values, got {s.size}")
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        raise InputError("score and truth must be finite; drop failed (NaN/inf) entries first")
    return s, t


def spearman(score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    s, t = _pair(score, truth)
    return float(stats.spearmanr(s, t).statistic)


def kendall(score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    s, t = _pair(score, truth)
    return float(stats.kendalltau(s, t).statistic)


def top_fraction_overlap(
    score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, fraction: float = 0.1
) -> float:
    """Share of the true top ``fraction`` that is also in the score's top ``fraction`` (in [0, 1])."""
    s, t = _pair(score, truth)
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, round(fraction * s.size))
    top_s = set(np.argsort(-s, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-t, kind="stable")[:k].tolist())
    return len(top_s & top_t) / k


def top_k_in_true_fraction(
    score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, k: int = 64, fraction: float = 0.05
) -> int:
    """How many of the score's ``k`` best lie in the true top ``fraction`` (the paper's top-64/top-5%)."""
    s, t = _pair(score, truth)
    k = min(k, s.size)
    threshold = np.quantile(t, 1 - fraction)
    best = np.argsort(-s, kind="stable")[:k]
    return int((t[best] >= threshold).sum())


def pairwise_accuracy(score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Share of pairs (i, j) with distinct truth whose order the score gets right; score ties count half."""
    s, t = _pair(score, truth)
    ds = np.sign(s[:, None] - s[None, :])
    dt = np.sign(t[:, None] - t[None, :])
    mask = np.triu(dt != 0, k=1)
    if not mask.any():
        raise InputError("pairwise accuracy needs at least two distinct truth values")
    agree = (ds == dt)[mask].sum() + 0.5 * (ds == 0)[mask].sum()
    return float(agree / mask.sum())


def within_fraction(
    predicted: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray, tolerance: float
) -> float:
    """Share of cells whose true value lies within +-``tolerance`` (e.g. 0.1) of the prediction."""
    p, t = _pair(predicted, truth)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    return float(np.mean(np.abs(t - p) <= tolerance * np.abs(p)))


def mape(predicted: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Mean absolute percentage error, relative to the truth, as a fraction (0.05 = 5 %)."""
    p, t = _pair(predicted, truth)
    if (t == 0).any():
        raise InputError("MAPE is undefined when a true value is 0")
    return float(np.mean(np.abs(p - t) / np.abs(t)))


def ranking_report(score: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> dict[str, float]:
    """All ranking metrics of a higher-is-better score against the truth."""
    return {
        "spearman": spearman(score, truth),
        "kendall": kendall(score, truth),
        "top10_top10": top_fraction_overlap(score, truth, 0.1),
        "top64_top5": float(top_k_in_true_fraction(score, truth, 64, 0.05)),
    }


def regression_report(predicted: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Predictor metrics: within +-1/5/10 %, Spearman, Kendall, MAPE."""
    return {
        "within_1pct": within_fraction(predicted, truth, 0.01),
        "within_5pct": within_fraction(predicted, truth, 0.05),
        "within_10pct": within_fraction(predicted, truth, 0.10),
        "spearman": spearman(predicted, truth),
        "kendall": kendall(predicted, truth),
        "mape": mape(predicted, truth),
    }
