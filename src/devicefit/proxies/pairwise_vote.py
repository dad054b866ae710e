"""``vote`` (arXiv 2101.08134, Section 5): for each pair of candidates, the majority of synflow, jacob_cov
and snip decides which is better.

The paper's vote figure (0.817 on NB201 CIFAR-10) is a *pairwise ranking accuracy* -- the share of pairs
the majority orders as the ground truth does -- not a Spearman rho; :meth:`PairwiseVote.pairwise_accuracy`
computes exactly that. The majority relation need not be transitive, so a ranking is derived from it by
the number of pairwise wins (Copeland count; ties count half), and that ranking can be scored with the
usual metrics of :mod:`devicefit.ranking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .result import PROXIES, VOTE_PROXIES

_BLOCK = 1024


@dataclass(frozen=True)
class PairwiseVote:
    """Majority of several higher-is-better scores over all pairs of ``n`` candidates."""

    scores: np.ndarray  # (voters, n), each row oriented so higher is better

    def _block(self, rows: slice) -> np.ndarray:
        """Majority sign of candidate i vs j for i in ``rows``: +1 i better, -1 j better, 0 tie."""
        s = self.scores
        votes = np.sign(s[:, rows, None] - s[:, None, :]).sum(0)
        return np.sign(votes)

    def prefers(self, i: int, j: int) -> int:
        """+1 when the majority ranks candidate ``i`` above ``j``, -1 below, 0 on a tie."""
        return int(np.sign(np.sign(self.scores[:, i] - self.scores[:, j]).sum()))

    @property
    def wins(self) -> np.ndarray:
        """Pairwise wins of each candidate (a tie counts half): the vote's ranking score."""
        n = self.scores.shape[1]
        out = np.empty(n)
        for start in range(0, n, _BLOCK):
            m = self._block(slice(start, start + _BLOCK))
            out[start : start + m.shape[0]] = (m > 0).sum(1) + 0.5 * (m == 0).sum(1) - 0.5  # minus self-tie
        return out

    def ranking(self) -> np.ndarray:
        """Candidate indices, best first, by number of pairwise wins (stable for ties)."""
        return np.argsort(-self.wins, kind="stable")

    def pairwise_accuracy(self, truth: Sequence[float] | np.ndarray) -> float:
        """Share of pairs with distinct truth that the majority orders correctly; majority ties count half."""
        t = np.asarray(truth, dtype=np.float64).ravel()
        n = self.scores.shape[1]
        if t.shape != (n,) or not np.isfinite(t).all():
            raise InputError(f"truth must hold {n} finite values, got shape {t.shape}")
        agree = total = 0.0
        for start in range(0, n, _BLOCK):
            rows = slice(start, start + _BLOCK)
            m = self._block(rows)
            dt = np.sign(t[rows, None] - t[None, :])
            i = np.arange(start, start + m.shape[0])[:, None]
            mask = (dt != 0) & (np.arange(n)[None, :] > i)
            agree += (m == dt)[mask].sum() + 0.5 * (m == 0)[mask].sum()
            total += mask.sum()
        if total == 0:
            raise InputError("pairwise accuracy needs at least two distinct truth values")
        return float(agree / total)


def vote(scores: Mapping[str, Sequence[float] | np.ndarray], voters: Sequence[str] = VOTE_PROXIES) -> PairwiseVote:
    """The pairwise majority of ``voters`` (default synflow, jacob_cov, snip) over candidates.

    ``scores[name]`` holds one finite score per candidate (same candidates, same order for every voter;
    drop candidates where a voter failed). Lower-is-better proxies are flipped by their declared direction.
    """
    if len(voters) < 1:
        raise InputError("vote needs at least one voter")
    missing = [v for v in voters if v not in scores]
    if missing:
        raise InputError(f"vote needs scores of {', '.join(voters)}; missing {', '.join(missing)}")
    rows = []
    for v in voters:
        a = np.asarray(scores[v], dtype=np.float64).ravel()
        if not np.isfinite(a).all():
            raise InputError(f"vote: {v} scores must be finite; drop the candidates where {v} failed")
        higher = PROXIES[v].higher_is_better if v in PROXIES else True
        rows.append(a if higher else -a)
    if len({r.size for r in rows}) != 1:
        raise InputError(f"vote: every voter needs the same number of candidates, got {[r.size for r in rows]}")
    return PairwiseVote(np.stack(rows))
