"""Zero-cost proxies: score an untrained network from one minibatch.

Reference: Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (arXiv 2101.08134),
code SamsungLabs/zero-cost-nas; NASWOT: Mellor et al., arXiv 2006.04647 (BayesWatch/nas-without-training).

Proxies (all "higher is better", see :data:`PROXIES`): grad_norm, snip, grasp, fisher, jacob_cov, nwot
(one shared forward, :mod:`.gradient_pass`), synflow (BN-free float64 copy, :mod:`.synflow`), params and
flops (:mod:`.baselines`). ``vote`` (:mod:`.vote`) combines synflow, jacob_cov and snip over pairs of
candidates; the paper reports it as pairwise ranking accuracy, not Spearman.

    >>> from devicefit.proxies import compute_proxies
    >>> scores = compute_proxies(model, images, labels)         # doctest: +SKIP
    >>> scores.results["synflow"].score                         # doctest: +SKIP
"""

from __future__ import annotations

from devicefit._lazy import lazy_exports

from .datasets import DATASETS, DEFAULT_BATCH_SIZE, NUM_CLASSES, TRUTH_COLUMN
from .result import PROXIES, VOTE_PROXIES, ProxyResult, ProxySpec, check_proxy_names

#: Names served lazily (their modules import torch): ``import devicefit.proxies`` stays cheap.
_LAZY = {
    "flops": "baselines", "params": "baselines",
    "ProxyScores": "compute", "compute_proxies": "compute",
    "GRADIENT_PROXIES": "gradient_pass", "gradient_pass": "gradient_pass", "hamming_kernel": "gradient_pass",
    "jacob_cov_score": "gradient_pass",
    "ImagePool": "minibatch",
    "load_image_pool": "minibatch", "image_pool_file": "minibatch", "model_minibatch": "minibatch",
    "add_cell_conv_biases": "nb201", "proxy_metrics": "nb201", "sample_nb201_cells": "nb201",
    "synflow": "synflow_pass", "PairwiseVote": "pairwise_vote", "vote": "pairwise_vote",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [  # noqa: RUF022 (eager names, then lazy ones)
    "DATASETS",
    "DEFAULT_BATCH_SIZE",
    "GRADIENT_PROXIES",
    "ImagePool",
    "NUM_CLASSES",
    "PROXIES",
    "PairwiseVote",
    "ProxyResult",
    "ProxyScores",
    "ProxySpec",
    "TRUTH_COLUMN",
    "VOTE_PROXIES",
    "add_cell_conv_biases",
    "check_proxy_names",
    "compute_proxies",
    "flops",
    "gradient_pass",
    "hamming_kernel",
    "image_pool_file",
    "jacob_cov_score",
    "load_image_pool",
    "model_minibatch",
    "params",
    "proxy_metrics",
    "sample_nb201_cells",
    "synflow",
    "vote",
]
