"""Proxies over NAS-Bench-201 cells: sample, score (resumable, optionally in worker processes), evaluate.

Follows the reference run (SamsungLabs/zero-cost-nas ``nasbench2_pred.py``): each cell is built with
PyTorch's default initialisation (``init_w_type=none``), in train mode, the classifier sized for the
dataset (10 / 100 / 120 classes), and scored on its own random minibatch of 64 training images. The
reference scores all 15,625 cells, the 341 disconnected ones included, so the sample is drawn from all of
them too. Every cell's weights and minibatch come from generators seeded by ``(seed, cell)``: results do
not depend on order or worker count, and a resumed run gives what an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import NB201Table
from ..errors import InputError
from ..ranking import pairwise_accuracy, ranking_report
from ..spaces import NUM_CELLS, NB201Cell, build_nb201
from ..spaces.nb201_model import InferCell, ReLUConvBN
from ..study import ResultStore
from .compute import compute_proxies
from .minibatch import DEFAULT_BATCH_SIZE, TRUTH_COLUMN, ImagePool, load_image_pool
from .result import PROXIES, VOTE_PROXIES, check_proxy_names
from .vote import vote


@dataclass(frozen=True)
class NB201ProxySettings:
    """What a run's results depend on (recorded as the results store's meta)."""

    dataset: str = "cifar10"
    seed: int = 0
    proxies: tuple[str, ...] = tuple(PROXIES)
    batch_size: int = DEFAULT_BATCH_SIZE
    source: str = "npz"
    #: "nb201": the benchmark's network (``build_nb201``); "zc_reference": the same with a bias in every cell
    #: convolution, as the zero-cost reference's NB201 model has (see :func:`add_cell_conv_biases`).
    model: str = "nb201"

    def __post_init__(self) -> None:
        if self.model not in NB201_MODELS:
            raise InputError(f"unknown NB201 model variant {self.model!r}; expected one of {', '.join(NB201_MODELS)}")
        object.__setattr__(self, "proxies", tuple(check_proxy_names(list(self.proxies))))
        if self.dataset not in TRUTH_COLUMN:
            raise InputError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(TRUTH_COLUMN)}")
        if self.batch_size < 2:
            raise InputError(f"batch size must be >= 2, got {self.batch_size}")

    def meta(self) -> dict[str, Any]:
        return {"space": "nb201", **asdict(self), "proxies": list(self.proxies)}


NB201_MODELS = ("nb201", "zc_reference")


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


def _cell_seed(seed: int, cell: NB201Cell) -> int:
    return int(np.random.SeedSequence([seed, cell.ops_index]).generate_state(1)[0])


def score_nb201_cell(cell: NB201Cell, settings: NB201ProxySettings, pool: ImagePool) -> dict[str, Any]:
    """Build ``cell``'s network (seeded init), draw its minibatch, compute the proxies: a store record."""
    seed = _cell_seed(settings.seed, cell)
    torch.manual_seed(seed)
    net = build_nb201(cell, num_classes=pool.num_classes)
    if settings.model == "zc_reference":
        add_cell_conv_biases(net)
    x, y = pool.sample(np.random.default_rng(seed), settings.batch_size)
    scores = compute_proxies(net, x, y, settings.proxies)
    record = scores.to_record()
    record["seconds_total"] = float(sum(scores.seconds.values()))
    return record


_WORKER: dict[str, Any] = {}


def _init_worker(settings: NB201ProxySettings, data_dir: str | None) -> None:
    torch.set_num_threads(1)
    _WORKER["settings"] = settings
    _WORKER["pool"] = load_image_pool(settings.dataset, source=settings.source, data_dir=data_dir)


def _score_in_worker(arch: str) -> tuple[str, dict[str, Any]]:
    return arch, score_nb201_cell(NB201Cell.from_str(arch), _WORKER["settings"], _WORKER["pool"])


def run_nb201_proxies(
    cells: Iterable[NB201Cell],
    settings: NB201ProxySettings,
    store: ResultStore,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    pool: ImagePool | None = None,
) -> int:
    """Score every cell not yet in ``store`` and write each record as soon as it is computed.

    ``workers > 1`` scores in a process pool (one torch thread per worker). Returns how many cells were
    computed (finished ones are skipped, so an interrupted run resumes where it stopped). ``pool`` replaces
    the dataset's image pool (single process only).
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    todo = [c.to_str() for c in cells if c.to_str() not in store]
    if not todo:
        return 0
    if pool is not None and workers != 1:
        raise InputError("an explicit image pool can only be used with workers=1")
    if workers == 1:
        if pool is None:
            pool = load_image_pool(settings.dataset, source=settings.source, data_dir=data_dir)
        for arch in todo:
            record = score_nb201_cell(NB201Cell.from_str(arch), settings, pool)
            store.put(arch, record)
            if on_result:
                on_result(arch, record)
        return len(todo)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no fork after torch has started its thread pools
    dd = None if data_dir is None else str(data_dir)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(settings, dd)) as ex:
        futures = [ex.submit(_score_in_worker, arch) for arch in todo]
        for fut in as_completed(futures):
            arch, record = fut.result()
            store.put(arch, record)
            if on_result:
                on_result(arch, record)
    return len(todo)


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
