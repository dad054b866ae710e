"""REINFORCE (Williams, 1992) as the NAS-Bench-201 baseline (Dong & Yang, arXiv 2001.00326), with the zero-cost
warm-up and move of Abdelfattah et al. (arXiv 2101.08134).

The policy is that of the reference (D-X-Y/AutoDL-Projects ``exps/NAS-Bench-201-algos/reinforce.py``): one
row of learnable logits per decision, initialised ``1e-3 * randn``; a softmax per row gives independent
categoricals; Adam. The reward is the told objective (higher is better), the baseline an exponential moving
average of the rewards with bias correction (a numerator and a denominator, momentum 0.9) that is updated
with the reward *before* the loss ``-sum(log_prob) * (reward - baseline)``; one update per told trial, in
order. Learning rate 0.5: the value of the NB201 baseline runs (``docs/NAS-Bench-201.md``:
``REINFORCE.sh 0.5``), the best of the sweep 0.01 .. 0.5 of ``scripts-search/NAS-Bench-201-algos/hps/GRID-RL.sh``.
It makes the policy commit within tens of trials; a smaller ``lr`` explores longer.

What the ask/tell loop changes, and the choices made here:

- Distinct candidates: a sample whose key was asked before is drawn again (up to 20 policy samples,
  then up to 1,000 samples of the space's own distribution), so a budget of N evaluations is N distinct
  candidates, as for random search and evolution; the reference evaluates repeats again. A fallback
  sample is off-policy; it is told and learned from like any other (a committed policy explores through
  them). When all those draws were asked before, the space is (nearly) exhausted and ``ask`` returns
  fewer candidates, none at the end, which ends the study (as random search does); returning repeats
  would make the study spin through up to 200 unevaluated repeats per evaluation before it gives up.
- Infeasible or failed trials (fitness minus infinity) get the lowest finite reward told so far, a penalty
  that teaches the policy to avoid them (rejected candidates are common under a latency constraint);
  before any finite reward has been told there is nothing to compare with and the trial is skipped.
- ``ask(n)`` draws ``n`` samples from the current policy; ``tell`` computes each log-probability under the
  policy at that moment (for ``n = 1`` exactly the reference, where sampling and update alternate).
- Zero-cost warm-up ("pre-train the controller with zero-cost scores as rewards"): one update per warm-up
  candidate, in the order given, with reward = the percentile rank of its proxy score x 100 (0 for the
  lowest, 100 for the highest, tied scores share their mean rank, a NaN score ranks lowest). Ranks make it
  free of the proxy's scale (synflow spans orders of magnitude). The warm-up's learning rate is
  ``warmup_span / N`` for N warm-up candidates: an Adam step moves a logit by at most about its learning
  rate, so pre-training moves each logit by at most ``warmup_span`` (default 5: odds of at most ~150:1
  between two options) however many candidates it sees. At the search's own rate (0.5) 3,000 updates
  saturate the softmax on the proxy's favourite cell, after which the policy cannot learn from the
  objective and only the distinct-candidate fallback explores: that made REINFORCE with warm-up *worse*
  than without (``benchmarks/search_nb201.py``; spans 3 to 8 all helped, tried with NASWOT scores from
  the table, then measured with synflow in the benchmark). The logits keep what warm-up taught; Adam's
  moments, the baseline and the penalty are reset afterwards, because the objective's rewards have another
  scale.
- Zero-cost move: with a scorer (the study sets one when ``move=True``), each ask draws ``move_samples``
  distinct unseen policy samples (default 10, close to the cost of evolution's move on NB201, which scores
  24 neighbours) and returns the one with the best proxy score (ties: the first drawn).

Implementation: the policy is a few dozen numbers, so it is kept in NumPy float64 with the analytic gradient
of the loss, ``(softmax - onehot(choices)) * advantage``, and the update of ``torch.optim.Adam`` (defaults:
betas 0.9 / 0.999, eps 1e-8) written out; it matches torch's autograd and Adam to float64 rounding, costs
microseconds instead of a torch dispatch per step, and keeps ``import devicefit.strategies`` free of torch.
Every random number (initial logits, samples) comes from ``self.rng``, so ``state_dict`` (plain JSON: logits,
Adam's step and moments, the baseline's numerator and denominator, the penalty, the asked keys and the rng)
restores the strategy exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..spaces.base import CategoricalSpace
from .base import C, Strategy, Trial

#: Policy samples drawn before falling back to the space's own sampling (a policy that has committed).
MAX_RESAMPLES = 20
#: Samples of the space's own distribution drawn before the space counts as exhausted.
MAX_FALLBACK = 1_000
#: Scale of the initial logits (the reference's ``1e-3 * torch.randn``).
INIT_SCALE = 1e-3
#: Adam's defaults in ``torch.optim.Adam`` (the reference's optimiser).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def percentile_ranks(scores: Sequence[float]) -> list[float]:
    """Each score's rank among ``scores`` as a percentage: 0 for the lowest, 100 for the highest, tied scores
    sharing their mean rank; a single score gets 50."""
    n = len(scores)
    if n == 1:
        return [50.0]
    order = sorted(range(n), key=lambda i: scores[i])
    ranks = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for j in range(start, end + 1):
            ranks[order[j]] = 100.0 * (start + end) / 2 / (n - 1)
        start = end + 1
    return ranks


class ReinforceSearch(Strategy[C]):
    """REINFORCE over a :class:`~devicefit.spaces.CategoricalSpace` (see the module's notes)."""

    name = "reinforce"

    def __init__(self, space: CategoricalSpace[C], seed: int = 0, lr: float = 0.5, ema_momentum: float = 0.9,
                 move_samples: int = 10, warmup_span: float = 5.0) -> None:
        if not isinstance(space, CategoricalSpace):
            raise InputError(f"reinforce needs a categorical space (a fixed sequence of decisions); "
                             f"{getattr(space, 'name', space)!r} is not one")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise InputError(f"reinforce learning rate lr must be a positive number, got {lr!r}")
        if (isinstance(ema_momentum, bool) or not isinstance(ema_momentum, (int, float))
                or not 0 <= ema_momentum < 1):
            raise InputError(f"reinforce ema_momentum must be in [0, 1), got {ema_momentum!r}")
        if isinstance(move_samples, bool) or not isinstance(move_samples, int) or move_samples < 1:
            raise InputError(f"reinforce move_samples must be a positive integer, got {move_samples!r}")
        if (isinstance(warmup_span, bool) or not isinstance(warmup_span, (int, float))
                or not math.isfinite(warmup_span) or warmup_span <= 0):
            raise InputError(f"reinforce warmup_span must be a positive number, got {warmup_span!r}")
        choices = tuple(space.choices)
        if not choices or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in choices):
            raise InputError(f"space {space.name!r}: every decision needs at least one option, got {choices}")
        super().__init__(space, seed)
        self.lr, self.ema_momentum, self.move_samples = float(lr), float(ema_momentum), move_samples
        self.warmup_span = float(warmup_span)
        self.choices = choices
        width = max(choices)
        self._valid = np.arange(width)[None, :] < np.array(choices)[:, None]
        init = [[INIT_SCALE * self.rng.gauss(0.0, 1.0) if j < k else 0.0 for j in range(width)] for k in choices]
        self.logits = np.array(init, dtype=np.float64)
        self._reset_learning()
        self.seen: set[str] = set()

    def _reset_learning(self) -> None:
        """A fresh optimiser, baseline and penalty (the logits are kept)."""
        self.adam_step = 0
        self.exp_avg = np.zeros_like(self.logits)  # Adam's first and second moments
        self.exp_avg_sq = np.zeros_like(self.logits)
        self.numerator = 0.0  # the baseline: numerator / denominator (bias-corrected EMA of the rewards)
        self.denominator = 0.0
        self.lowest: float | None = None  # the lowest finite reward told: the reward of a failed trial

    # -- the policy --------------------------------------------------------------------------------------
    def _softmax(self) -> np.ndarray:
        z = np.where(self._valid, self.logits, -np.inf)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def probabilities(self) -> list[list[float]]:
        """The policy: for each decision, the probability of each of its options."""
        return [row[:k] for row, k in zip(self._softmax().tolist(), self.choices)]

    def most_likely(self) -> C:
        """The candidate of the most probable option of every decision (the reference's ``genotype()``)."""
        return self.space.from_choices([max(range(len(p)), key=p.__getitem__) for p in self.probabilities()])

    def _update(self, choices: Sequence[int], reward: float, lr: float | None = None) -> None:
        """One REINFORCE step: the baseline takes the reward first, then a step of Adam on
        ``-sum(log_prob) * (reward - baseline)``, whose gradient is ``(probs - onehot(choices)) * advantage``."""
        if len(choices) != len(self.choices) or any(not 0 <= a < k for a, k in zip(choices, self.choices)):
            raise InputError(f"reinforce: choices {tuple(choices)} do not fit the space's decisions {self.choices}")
        m = self.ema_momentum
        self.numerator = m * self.numerator + (1 - m) * reward
        self.denominator = m * self.denominator + (1 - m)
        advantage = reward - self.numerator / self.denominator
        grad = self._softmax()
        grad[np.arange(len(self.choices)), list(choices)] -= 1.0
        self._adam(grad * advantage, self.lr if lr is None else lr)

    def _adam(self, grad: np.ndarray, lr: float) -> None:
        """``torch.optim.Adam`` with its defaults (betas 0.9 and 0.999, eps 1e-8, no weight decay)."""
        self.adam_step += 1
        self.exp_avg = ADAM_BETAS[0] * self.exp_avg + (1 - ADAM_BETAS[0]) * grad
        self.exp_avg_sq = ADAM_BETAS[1] * self.exp_avg_sq + (1 - ADAM_BETAS[1]) * grad * grad
        correction1 = 1 - ADAM_BETAS[0] ** self.adam_step
        correction2 = 1 - ADAM_BETAS[1] ** self.adam_step
        denom = np.sqrt(self.exp_avg_sq) / math.sqrt(correction2) + ADAM_EPS
        self.logits = self.logits - (lr / correction1) * self.exp_avg / denom

    # -- ask / tell ---------------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[C]:
        """``n`` distinct unseen candidates from the current policy; fewer when the space is (nearly) exhausted."""
        cumulative = [_cumulative(p) for p in self.probabilities()]
        out: list[C] = []
        while len(out) < n:
            c = self._one(cumulative)
            if c is None:
                break
            out.append(c)
        return out

    def _one(self, cumulative: list[list[float]]) -> C | None:
        pool: list[C] = []
        keys: set[str] = set()
        for _ in range(self.move_samples if self.scorer is not None else 1):
            c = self._unseen(cumulative, keys)
            if c is None:
                break
            pool.append(c)
            keys.add(self.space.key(c))
        if len(pool) <= 1:
            return self._claim(pool[0]) if pool else None
        assert self.scorer is not None
        scores = [_rankable(s) for s in self.scorer(pool)]
        best = max(range(len(pool)), key=lambda i: (scores[i], -i))
        return self._claim(pool[best])

    def _sample(self, cumulative: list[list[float]]) -> C:
        return self.space.from_choices([_draw(row, self.rng.random()) for row in cumulative])

    def _unseen(self, cumulative: list[list[float]], also: set[str]) -> C | None:
        """A candidate whose key is neither asked before nor in ``also``: policy samples, then the space's own
        sampling; None when both fail."""
        for i in range(MAX_RESAMPLES + MAX_FALLBACK):
            c = self._sample(cumulative) if i < MAX_RESAMPLES else self.space.sample(self.rng)
            k = self.space.key(c)
            if k not in self.seen and k not in also:
                return c
        return None

    def _claim(self, c: C) -> C:
        self.seen.add(self.space.key(c))
        return c

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        for t in trials:
            self.seen.add(self.space.key(t.candidate))
            reward = t.fitness
            if math.isfinite(reward):
                self.lowest = reward if self.lowest is None else min(self.lowest, reward)
            elif self.lowest is None:
                continue  # failed before anything succeeded: no reward to give it
            else:
                reward = self.lowest
            self._update(self.space.to_choices(t.candidate), reward)

    def warm_up(self, candidates: Sequence[C], scores: Sequence[float]) -> None:
        """Pre-train the policy on proxy scores (arXiv 2101.08134): rewards are percentile ranks x 100."""
        if len(candidates) != len(scores):
            raise InputError(f"warm-up got {len(candidates)} candidates but {len(scores)} scores")
        if not candidates:
            return
        lr = self.warmup_span / len(candidates)
        for c, reward in zip(candidates, percentile_ranks([_rankable(s) for s in scores])):
            self._update(self.space.to_choices(c), reward, lr)
        self._reset_learning()

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "logits": self.logits.tolist(),
            "adam": {"step": self.adam_step, "exp_avg": self.exp_avg.tolist(), "exp_avg_sq": self.exp_avg_sq.tolist()},
            "ema": [self.numerator, self.denominator],
            "lowest": self.lowest,
            "seen": sorted(self.seen),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        arrays = [np.array(a, dtype=np.float64) for a in (state["logits"], state["adam"]["exp_avg"],
                                                           state["adam"]["exp_avg_sq"])]
        if any(a.shape != self.logits.shape for a in arrays):
            raise InputError(f"reinforce state has logits of shape {arrays[0].shape}, the space needs "
                             f"{self.logits.shape}")
        self.logits, self.exp_avg, self.exp_avg_sq = arrays
        self.adam_step = int(state["adam"]["step"])
        self.numerator, self.denominator = (float(v) for v in state["ema"])
        self.lowest = None if state["lowest"] is None else float(state["lowest"])
        self.seen = set(state["seen"])


def _rankable(score: float | None) -> float:
    """A proxy score that orders: a missing or NaN score ranks lowest."""
    return float("-inf") if score is None or math.isnan(score) else float(score)


def _cumulative(probs: list[float]) -> list[float]:
    out, total = [], 0.0
    for p in probs:
        total += p
        out.append(total)
    return out


def _draw(cumulative: list[float], u: float) -> int:
    """The option whose cumulative-probability interval holds ``u`` (the last one against rounding)."""
    return min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)


__all__ = ["ReinforceSearch", "percentile_ranks"]
