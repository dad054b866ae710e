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

from .baselines import flops, params
from .compute import ProxyScores, compute_proxies
from .gradient_pass import GRADIENT_PROXIES, gradient_pass, hamming_kernel, jacob_cov_score
from .minibatch import DATASETS, NUM_CLASSES, TRUTH_COLUMN, ImagePool, load_image_pool
from .nb201 import (
    NB201_MODELS,
    NB201ProxySettings,
    add_cell_conv_biases,
    proxy_metrics,
    run_nb201_proxies,
    sample_nb201_cells,
    score_nb201_cell,
)
from .result import PROXIES, VOTE_PROXIES, ProxyResult, ProxySpec, check_proxy_names
from .synflow import synflow
from .vote import PairwiseVote, vote

__all__ = [
    "DATASETS",
    "GRADIENT_PROXIES",
    "NB201_MODELS",
    "NUM_CLASSES",
    "PROXIES",
    "TRUTH_COLUMN",
    "VOTE_PROXIES",
    "ImagePool",
    "NB201ProxySettings",
    "PairwiseVote",
    "ProxyResult",
    "ProxyScores",
    "ProxySpec",
    "add_cell_conv_biases",
    "check_proxy_names",
    "compute_proxies",
    "flops",
    "gradient_pass",
    "hamming_kernel",
    "jacob_cov_score",
    "load_image_pool",
    "params",
    "proxy_metrics",
    "run_nb201_proxies",
    "sample_nb201_cells",
    "score_nb201_cell",
    "synflow",
    "vote",
]
