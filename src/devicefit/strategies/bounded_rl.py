"""A policy-gradient agent with bounded continuous actions per decision, as AutoML compression searches per-layer
ratios (AMC, He et al. 2018; ShrinkML, arXiv 1907.03540), with the marginal policy gradient estimator for
bounded actions (Eisenach et al., arXiv 1806.05134; its clipped-action case is Fujita & Maeda's CAPG, 2018).

Each decision's options are an ordered scale (a policy space's kept ratios, ascending): the action of decision
``d`` is ``a_d = clip(x_d, 0, k_d - 1)`` with ``x_d ~ N(mu_d, sigma^2)``, and the option taken is the nearest
index ``round(a_d)``. Actions at a bound are common (keep a layer whole, or compress it to the smallest
ratio), and there the environment sees only the bound, not ``x``: the marginal policy gradient uses the
log-probability of what was observed, ``log P(a)`` = ``log Phi((0 - mu) / sigma)`` at the lower bound,
``log (1 - Phi((k - 1 - mu) / sigma))`` at the upper one and the Gaussian log-density inside, whose gradient
has lower variance than the log-density of the unobserved ``x`` (the paper's result). ``mu`` starts at the
middle of each scale, ``log sigma`` (shared) at ``log(k_max / 4)``; Adam (lr 0.05) on ``-log P(a) *
(reward - baseline)``, the baseline an exponential moving average of the rewards (momentum 0.9) updated
before the step, one update per told trial.

Reward: the told objective (the accuracy estimate) of a feasible trial. The budget is the study's constraint;
a candidate that breaks it is not evaluated and its reward is the lowest finite reward told so far (ShrinkML's
budget penalty in the ask/tell setting: always worse than any feasible policy seen), as REINFORCE here does.
Candidates are distinct (up to 20 policy samples, then the space's own sampling), and ``state_dict`` (plain
JSON: means, log-sigma, Adam's moments, the baseline, the penalty, the asked keys, the rng) restores the agent
exactly. NumPy float64 with analytic gradients, as :mod:`.reinforce`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..spaces.base import CategoricalSpace
from .base import C, Strategy, Trial
from .reinforce import ADAM_BETAS, ADAM_EPS, MAX_FALLBACK, MAX_RESAMPLES

_SQRT2 = math.sqrt(2.0)


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _tail(z: float) -> tuple[float, float]:
    """``(log Q(z), phi(z) / Q(z))`` of the upper tail ``Q(z) = P(N(0, 1) > z)``, stable far in the tail (where
    ``1 - Phi(z)`` would round to 0): ``erfc`` while it is representable, then the asymptotic series."""
    q = 0.5 * math.erfc(z / _SQRT2)
    if q > 1e-280:
        return math.log(q), _phi(z) / q
    # Q(z) ~ phi(z) / z * (1 - 1/z^2): far in the upper tail z is large and positive
    return -0.5 * z * z - math.log(z * math.sqrt(2.0 * math.pi)) + math.log1p(-1.0 / (z * z)), z / (1.0 - 1.0 / (z * z))


def marginal_log_prob_grad(x: float, mu: float, sigma: float, low: float, high: float) -> tuple[float, float, float]:
    """``(log P(a), d/d mu, d/d log sigma)`` of the observed action ``a = clip(x, low, high)`` under
    ``x ~ N(mu, sigma^2)``: the bound's probability mass at a bound, the density inside."""
    if x <= low:  # P(x <= low) = Q(-z) with z = (low - mu) / sigma
        z = (low - mu) / sigma
        log_p, ratio = _tail(-z)
        return log_p, -ratio / sigma, -z * ratio
    if x >= high:
        z = (high - mu) / sigma
        log_p, ratio = _tail(z)
        return log_p, ratio / sigma, z * ratio
    u = (x - mu) / sigma
    return -0.5 * u * u - math.log(sigma * math.sqrt(2.0 * math.pi)), u / sigma, u * u - 1.0


def _option(x: float, high: float) -> int:
    """The option of an action: ``x`` clipped to ``[0, high]``, rounded half up."""
    return math.floor(min(max(x, 0.0), high) + 0.5)


class BoundedPolicyGradient(Strategy[C]):
    """The bounded-action agent over a :class:`~devicefit.spaces.CategoricalSpace` (see the module docstring)."""

    name = "rl"

    def __init__(self, space: CategoricalSpace[C], seed: int = 0, lr: float = 0.05, ema_momentum: float = 0.9
                 ) -> None:
        if not isinstance(space, CategoricalSpace):
            raise InputError(f"rl needs a categorical space (a fixed sequence of ordered decisions); "
                             f"{getattr(space, 'name', space)!r} is not one")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise InputError(f"rl learning rate lr must be a positive number, got {lr!r}")
        if isinstance(ema_momentum, bool) or not isinstance(ema_momentum, (int, float)) or not 0 <= ema_momentum < 1:
            raise InputError(f"rl ema_momentum must be in [0, 1), got {ema_momentum!r}")
        super().__init__(space, seed)
        self.choices = tuple(int(k) for k in space.choices)
        if not self.choices or min(self.choices) < 1:
            raise InputError(f"space {space.name!r}: every decision needs at least one option")
        self.lr, self.ema_momentum = float(lr), float(ema_momentum)
        self.high = np.array([k - 1 for k in self.choices], dtype=np.float64)
        self.mu = self.high / 2.0
        self.log_sigma = math.log(max(self.choices) / 4.0)
        self.adam_step = 0
        self.exp_avg = np.zeros(len(self.choices) + 1)
        self.exp_avg_sq = np.zeros(len(self.choices) + 1)
        self.numerator = self.denominator = 0.0
        self.lowest: float | None = None
        self.actions: dict[str, list[float]] = {}  # key -> the unclipped draw behind each asked candidate

    # -- the policy --------------------------------------------------------------------------------------
    def most_likely(self) -> C:
        """The candidate of every decision's mean action."""
        return self.space.from_choices([_option(float(m), float(h)) for m, h in zip(self.mu, self.high)])

    def _draw(self) -> tuple[C, list[float]]:
        sigma = math.exp(self.log_sigma)
        xs = [self.rng.gauss(float(m), sigma) for m in self.mu]
        return self.space.from_choices([_option(x, float(h)) for x, h in zip(xs, self.high)]), xs

    def _update(self, xs: Sequence[float], reward: float) -> None:
        m = self.ema_momentum
        self.numerator = m * self.numerator + (1 - m) * reward
        self.denominator = m * self.denominator + (1 - m)
        advantage = reward - self.numerator / self.denominator
        sigma = math.exp(self.log_sigma)
        grad = np.zeros(len(self.choices) + 1)
        for d, (x, mu, h) in enumerate(zip(xs, self.mu, self.high)):
            if h == 0:
                continue  # one option: nothing to learn
            _, g_mu, g_ls = marginal_log_prob_grad(float(x), float(mu), sigma, 0.0, float(h))
            grad[d] = -g_mu * advantage  # the loss is -log P(a) * advantage
            grad[-1] += -g_ls * advantage
        self.adam_step += 1
        self.exp_avg = ADAM_BETAS[0] * self.exp_avg + (1 - ADAM_BETAS[0]) * grad
        self.exp_avg_sq = ADAM_BETAS[1] * self.exp_avg_sq + (1 - ADAM_BETAS[1]) * grad * grad
        denom = np.sqrt(self.exp_avg_sq) / math.sqrt(1 - ADAM_BETAS[1] ** self.adam_step) + ADAM_EPS
        step = (self.lr / (1 - ADAM_BETAS[0] ** self.adam_step)) * self.exp_avg / denom
        self.mu = self.mu - step[:-1]
        self.log_sigma = float(min(max(self.log_sigma - step[-1], math.log(0.05)), math.log(max(self.choices))))

    # -- ask / tell ---------------------------------------------------------------------------------------
    def ask(self, n: int = 1) -> list[C]:
        out: list[C] = []
        for _ in range(n):
            c = self._unseen()
            if c is None:
                break
            out.append(c)
        return out

    def _unseen(self) -> C | None:
        for i in range(MAX_RESAMPLES + MAX_FALLBACK):
            if i < MAX_RESAMPLES:
                c, xs = self._draw()
            else:  # off-policy: the draw that would have given this candidate's options exactly
                c = self.space.sample(self.rng)
                xs = [float(j) for j in self.space.to_choices(c)]
            k = self.space.key(c)
            if k not in self.seen:
                self.seen.add(k)
                self.actions[k] = xs
                return c
        return None

    def tell(self, trials: Sequence[Trial[C]]) -> None:
        for t in trials:
            k = self.space.key(t.candidate)
            self.seen.add(k)
            xs = self.actions.pop(k, None) or [float(j) for j in self.space.to_choices(t.candidate)]
            reward = t.fitness
            if math.isfinite(reward):
                self.lowest = reward if self.lowest is None else min(self.lowest, reward)
            elif self.lowest is None:
                continue
            else:
                reward = self.lowest
            self._update(xs, reward)

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mu": self.mu.tolist(), "log_sigma": self.log_sigma,
                "adam": {"step": self.adam_step, "exp_avg": self.exp_avg.tolist(),
                         "exp_avg_sq": self.exp_avg_sq.tolist()},
                "ema": [self.numerator, self.denominator], "lowest": self.lowest, "seen": sorted(self.seen),
                "actions": self.actions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        mu = np.array(state["mu"], dtype=np.float64)
        if mu.shape != self.mu.shape:
            raise InputError(f"rl state has {mu.shape[0]} decisions, the space has {self.mu.shape[0]}")
        self.mu, self.log_sigma = mu, float(state["log_sigma"])
        self.adam_step = int(state["adam"]["step"])
        self.exp_avg = np.array(state["adam"]["exp_avg"], dtype=np.float64)
        self.exp_avg_sq = np.array(state["adam"]["exp_avg_sq"], dtype=np.float64)
        self.numerator, self.denominator = (float(v) for v in state["ema"])
        self.lowest = None if state["lowest"] is None else float(state["lowest"])
        self.seen = set(state["seen"])
        self.actions = {k: [float(x) for x in v] for k, v in state["actions"].items()}


__all__ = ["BoundedPolicyGradient", "marginal_log_prob_grad"]
