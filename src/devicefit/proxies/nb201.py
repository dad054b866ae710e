"""Proxies over NAS-Bench-201 cells: the sample, the reference model variant, and ranking against the table.

Scoring runs through the evaluation loop (:class:`devicefit.study.ZeroCostProxies` with
:func:`devicefit.study.evaluate_all`), which follows the reference run (SamsungLabs/zero-cost-nas
``nasbench2_pred.py``): each cell is built with PyTorch's default initialisation (``init_w_type=none``),
in train mode, the classifier sized for the dataset (10 / 100 / 120 classes), and scored on its own
random minibatch of 64 training images. The reference scores all 15,625 cells, the 341 disconnected ones
included, so :func:`sample_nb201_cells` draws from all of them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import NB201Table
from ..errors import InputError
from ..ranking import pairwise_accuracy, ranking_report
from ..spaces.nb201 import NUM_CELLS, NB201Cell
from ..spaces.nb201_model import InferCell, ReLUConvBN
from .pairwise_vote import vote
from .result import PROXIES, VOTE_PROXIES


def add_cell_conv_biases(net: nn.Module) -> nn.Module:
    """Give every convolution inside the cells a bias, in place, keeping its weights.

    The zero-cost reference builds NB201 with its own model (SamsungLabs/zero-cost-nas,
    ``foresight/models/nasbench2_ops.py``): cell operations are ``ReLUConvBN(..., affine=False,
    track_running_stats=False)`` whose convolution has ``bias=not affine``, i.e. a bias (default init,
    uniform in +-1/sqrt(fan_in)), unlike NB201's own network. After a train-mode BatchNorm the bias changes
    neither the output nor the weight gradients, so grad_norm, snip, grasp, jacob_cov and nwot are unchanged;
    fisher (which uses the convolution output, bias included) and synflow (which keeps |bias| on its BN-free
    copy) do change. (affine=False BatchNorm equals the default at initialisation: weight 1, bias 0.)
    """
    for cell in net.modules():
        if not isinstance(cell, InferCell):
            continue
        for op in cell.ops.values():
            if isinstance(op, ReLUConvBN) and op[1].bias is None:
                old = op[1]
                new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                padding=old.padding, dilation=old.dilation, groups=old.groups, bias=True)
                with torch.no_grad():
                    new.weight.copy_(old.weight)
                op[1] = new
    return net


def sample_nb201_cells(n: int, seed: int) -> list[NB201Cell]:
    """``n`` distinct cells drawn uniformly from all 15,625 (a larger ``n`` extends a smaller one's sample)."""
    if not 1 <= n <= NUM_CELLS:
        raise InputError(f"sample size must be in 1..{NUM_CELLS}, got {n}")
    order = np.random.default_rng(seed).permutation(NUM_CELLS)[:n]
    return [NB201Cell.from_index(int(i)) for i in order]


def proxy_metrics(
    records: dict[str, dict[str, Any]],
    table: NB201Table,
    column: str,
    proxies: Iterable[str] = tuple(PROXIES),
) -> dict[str, dict[str, float]]:
    """Ranking metrics of each proxy (and ``vote``) against ``column`` of the NB201 table.

    ``records`` maps arch strings to store records. Per proxy, the cells where it failed are left out
    (``n`` and ``failures`` say how many); cells with no ground truth are left out as well. ``vote`` is
    evaluated on the cells where synflow, jacob_cov and snip all have a score; its ``pairwise`` value is
    the paper's figure.
    """
    cells = [NB201Cell.from_str(a) for a in records]
    truth_all = table.values(cells, column)
    out: dict[str, dict[str, float]] = {}
    names = list(proxies)

    def scored(name: str) -> tuple[np.ndarray, np.ndarray, int]:
        keep, vals = [], []
        failures = 0
        for i, arch in enumerate(records):
            s = records[arch].get("scores", {}).get(name)
            if s is None:
                failures += name in records[arch].get("errors", {})
                continue
            if np.isfinite(truth_all[i]):
                keep.append(i)
                vals.append(s if PROXIES[name].higher_is_better else -s)
        return np.asarray(keep, dtype=int), np.asarray(vals, dtype=np.float64), failures

    for name in names:
        keep, vals, failures = scored(name)
        if keep.size < 2:
            continue
        t = truth_all[keep]
        out[name] = {**ranking_report(vals, t), "pairwise": pairwise_accuracy(vals, t), "n": float(keep.size),
                     "failures": float(failures)}
    if all(v in names for v in VOTE_PROXIES):
        per = {v: dict(zip(*scored(v)[:2])) for v in VOTE_PROXIES}
        common = sorted(set.intersection(*(set(d) for d in per.values())))
        if len(common) >= 2:
            pv = vote({v: [per[v][i] for i in common] for v in VOTE_PROXIES})
            t = truth_all[np.asarray(common)]
            out["vote"] = {**ranking_report(pv.wins, t), "pairwise": pv.pairwise_accuracy(t), "n": float(len(common)),
                           "failures": float(len(records) - len(common))}
    return out
