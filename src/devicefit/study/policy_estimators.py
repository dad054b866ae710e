"""Estimators of compression policies (candidates of :class:`~devicefit.compression.policy_space.PolicySpace`).

- :class:`PolicyCost`: a cost metric of the compressed model, exact and without building it
  (:meth:`PolicySpace.cost`): the cheap constraint checked before any accuracy is estimated.
- :class:`PolicyAccuracy`: top-1 accuracy of the compressed model **without fine-tuning**, after BatchNorm
  re-calibration, on a small fixed slice of the *training* images (as AMC scores on 5,000 ImageNet training
  images; the pretrained model has seen them, so the estimate is high, but it ranks policies; the test images
  are never searched on; the slice is "held out" from the calibration batches only): the fast candidate
  evaluation of AMC / ShrinkML / AIMET. The slice and the calibration batches are disjoint parts of one fixed
  permutation of the training part.

Both are cached in the store like every estimator: their fingerprints include the space's settings (the
model's weight hash, the method, the ratios), so an interrupted policy search resumes without re-evaluating.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..spaces.base import Space
from .estimator import Estimator


def _policy_space(space: Space, what: str) -> Any:
    from ..compression.policy_space import PolicySpace

    if not isinstance(space, PolicySpace):
        raise InputError(f"{what} estimates compression policies; the space is {space.name!r}")
    return space


@dataclass
class PolicyCost(Estimator):
    """One cost metric (``macs``, ``params``, ``nonzero_params``, ``bytes``, ``bytes_nonzero``, ``energy_mj`` with
    the space's energy model) of the compressed model, for one sample; exact (see
    :meth:`~devicefit.compression.policy_space.PolicySpace.cost`)."""

    metric: str = "macs"
    kind = "policy-cost"

    def __post_init__(self) -> None:
        from ..compression.policy_space import COST_METRICS, ENERGY

        if self.metric not in (*COST_METRICS, ENERGY):
            raise InputError(f"policy cost metric must be one of {', '.join((*COST_METRICS, ENERGY))}, got "
                             f"{self.metric!r}")

    @property
    def name(self) -> str:
        return self.metric

    def settings(self) -> dict[str, Any]:
        return {"metric": self.metric}

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        sp = _policy_space(space, "PolicyCost")
        if self.metric not in sp.metrics:
            raise InputError(f"a {sp.method} policy's {self.metric} is not known before the model is compressed; "
                             f"budgets it computes exactly: {', '.join(sp.metrics)}")
        return {"value": sp.cost(candidate)[self.metric]}


@dataclass
class PolicyAccuracy(Estimator):
    """Top-1 (%) of the compressed model after BatchNorm re-calibration, without fine-tuning, on ``images``
    training images (a fixed slice); ``calibration_batches`` batches of 64 other training images re-estimate BN."""

    dataset: str = "cifar10"
    images: int = 1000
    calibration_batches: int = 10
    data_dir: str | None = None
    kind = "policy-accuracy"

    def __post_init__(self) -> None:
        for name in ("images", "calibration_batches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"PolicyAccuracy {name} must be a positive integer, got {v!r}")
        if self.data_dir is not None:
            self.data_dir = os.fspath(self.data_dir)

    @property
    def name(self) -> str:
        return "accuracy"

    def settings(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "images": self.images, "calibration_batches": self.calibration_batches,
                "split": "train, fixed permutation: calibration first, then the held-out slice"}

    def prepare(self) -> None:
        if getattr(self, "_held_out", None) is not None:
            return
        from ..models.evaluate import LabelledImages, held_out_indices, load_images

        train = load_images(self.dataset, "train" if self.dataset == "cifar10" else "train8k", self.data_dir)
        n_cal = 64 * self.calibration_batches
        if n_cal + self.images > len(train):
            raise InputError(f"{self.images} scored + {n_cal} calibration images exceed the {len(train)} training "
                             f"images of {self.dataset}")
        order = held_out_indices(len(train), n_cal + self.images)

        def part(idx: Any, what: str) -> LabelledImages:
            return LabelledImages(train.dataset, train.part, train.x[idx], train.y[idx], train.normalization,
                                  f"{train.description}: {what}")

        self._calibration = list(part(order[:n_cal], "calibration").batches(64))
        self._held_out = part(order[n_cal:], f"{self.images} scored training images")

    def evaluate(self, space: Space, candidate: Any) -> dict[str, Any]:
        from ..compression import recalibrate_batchnorm
        from ..models import evaluate_accuracy

        sp = _policy_space(space, "PolicyAccuracy")
        self.prepare()
        model = sp.build(candidate)
        if sp.policy(candidate):
            recalibrate_batchnorm(model, self._calibration)
        return {"value": evaluate_accuracy(model, self._held_out)}
