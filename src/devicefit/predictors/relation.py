"""BRP-NAS binary relation predictor (Dudziak et al., NeurIPS 2020, arXiv 2007.08668; SamsungLabs/eagle).

A GCN that takes two candidates and predicts the probability that the first is better (a higher
objective) than the second. As in eagle's ``predictors/gcn/gcn.py`` (``binary_classifier``): both graphs
go through the same graph-convolution trunk as the latency GCN (:class:`~devicefit.predictors.gcn.GCN`:
``ReLU(LayerNorm(A @ (X W) + b))`` layers, readout at the global node of
:mod:`~devicefit.predictors.encoding`), the two embeddings are concatenated and a linear layer gives the
relation. Sizes as eagle's ``configs/predictors/acc_gcn_nasbench201_bin.yaml``: 4 layers of 600 units,
dropout 0.2; AdamW (lr 3.5e-4, weight decay 5e-4) with a cosine LR schedule over each training run.

Training: binary cross-entropy on ordered pairs ``(a, b)`` of the candidates evaluated so far, label 1
when ``value(a) > value(b)`` and 0 when less (pairs of equal values carry no order and are left out). Each
optimiser step embeds a random minibatch of ``batch_size`` candidates once and takes *every* ordered pair
among them (``m (m - 1)`` pairs for ``m`` graphs), so an epoch (one pass over the candidates) costs one
forward/backward pass per candidate rather than per pair; over the epochs the random minibatches cover
all pairs. Training continues from the current weights (eagle trains one predictor across its search
iterations), so a pre-trained (zero-cost) or transferred (latency) trunk carries over.

Ranking a pool: eagle sorts the pool with the predictor as comparator (``functools.cmp_to_key``). Here a
candidate's score is its exact number of pairwise wins against every other candidate of the pool
(:meth:`BinaryRelationPredictor.win_counts`): the head is linear in the two embeddings, so the relation
logit is ``f(a) + g(b) + c`` and the wins of all ``n`` candidates take one sort (``O(n log n)``), not
``n^2`` comparisons. Both agree when the learnt relation is a consistent order; the win count is also
defined when it is not. Ties (equal win counts) are broken by the antisymmetric part ``f(a) - g(a)``, then
by position.

Deviations from eagle, for a 2-core CPU and objectives in any unit: eagle's default head is a 2-way
softmax trained with KL divergence to ``softmax(acc(a), acc(b))`` of min-max-normalised accuracies; here one
logit with hard 0/1 labels (eagle's ``oneway-hard`` variant, the paper's "binary cross-entropy"), which
does not depend on the objective's unit. eagle trains on minibatches of pairs (64 pairs per step) for 250
epochs over the pairs and keeps the epoch of lowest training loss; here minibatches of candidates with all
their pairs, fewer epochs (:data:`RELATION_TRAIN`), and the final weights (the cosine schedule ends at LR 0).
Training and ranking run on one torch thread with seeded generators (and the global torch RNG forked), so
the same seed and data give the same weights and ranking.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..spaces import EncodableSpace
from .gcn import GCN, check_graph_params, graph_encoder, graph_params, graph_tensors


@dataclass(frozen=True)
class RelationTrainConfig:
    """How one training run of the binary relation predictor goes.

    ``epochs``: passes over the training candidates; ``batch_size``: candidates per optimiser step (every
    ordered pair among them is a training pair); ``lr`` / ``weight_decay``: AdamW, eagle's 3.5e-4 / 5e-4,
    the LR annealed to 0 by a cosine schedule over the run (eagle's ``lr_scheduler: cosine``).
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 3.5e-4
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"relation predictor {name} must be an int >= {low}, got {v!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (name == "lr" and v == 0):
                raise InputError(f"relation predictor {name} must be a finite number "
                                 f"{'> 0' if name == 'lr' else '>= 0'}, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: Default training settings (see the module docstring for how they relate to eagle's).
RELATION_TRAIN = RelationTrainConfig()


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """One torch thread and the global torch RNG seeded with ``seed``, both restored on exit."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


class RelationGCN(nn.Module):
    """The latency GCN's trunk (its own linear head removed) and a linear head on two concatenated embeddings."""

    def __init__(self, features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.trunk = GCN(features, hidden, layers, dropout)
        self.trunk.fc = nn.Identity()  # type: ignore[assignment]  # the trunk's own head is unused here
        self.head = nn.Linear(2 * hidden, 1)
        self.hidden = hidden

    def embed(self, adjacency: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``(n, hidden)`` global-node embeddings."""
        return self.trunk.embed(adjacency, features)

    def parts(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, g)`` with the relation logit of ``(a, b)`` equal to ``f[a] + g[b]`` (the bias folded into f)."""
        w = self.head.weight[0]
        f = embeddings @ w[: self.hidden] + self.head.bias[0]
        g = embeddings @ w[self.hidden :]
        return f, g

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Relation logits of pairs of embeddings ``(n, hidden)`` x ``(n, hidden)``: ``head(cat(a, b))``."""
        return self.head(torch.cat([first, second], dim=1))[:, 0]


def pair_targets(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, mask)`` over the ordered pairs of ``values`` (``(m,)``): 1 where row > column, 0 where
    less; the mask drops equal pairs (the diagonal included)."""
    greater = values[:, None] > values[None, :]
    less = values[:, None] < values[None, :]
    return greater.to(torch.float32), greater | less


class BinaryRelationPredictor:
    """P(objective(a) > objective(b)) for candidates of an encodable space; see the module docstring.

    ``fit(candidates, values)`` trains (continuing from the current weights) on every ordered pair;
    :meth:`prob_better`, :meth:`win_counts` and :meth:`rank` use it. Values are "higher is better"; minus
    infinity (a failed or infeasible candidate) loses to every finite value.
    """

    def __init__(
        self,
        space: EncodableSpace[Any],
        *,
        hidden: int = 600,
        layers: int = 4,
        dropout: float = 0.2,
        train: RelationTrainConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(space, EncodableSpace):
            raise InputError(f"the binary relation predictor needs an encodable space (a graph encoding), got "
                             f"{type(space).__name__}")
        for name, v, low in (("hidden", hidden, 1), ("layers", layers, 1), ("seed", seed, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"relation predictor {name} must be an int >= {low}, got {v!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise InputError(f"relation predictor dropout must be a number in [0, 1), got {dropout!r}")
        if train is not None and not isinstance(train, RelationTrainConfig):
            raise InputError(f"relation predictor train must be a RelationTrainConfig, got {train!r}")
        self.space = space
        self.hidden, self.layers, self.dropout, self.seed = hidden, layers, float(dropout), seed
        self.train_config = train or RELATION_TRAIN
        self.history: list[dict[str, Any]] = []  # one record per training run
        with deterministic_torch(seed):
            self.model = RelationGCN(len(graph_encoder(space).labels), hidden, layers, self.dropout)
        self.model.eval()

    # -- initialisation from a latency predictor ----------------------------------------------------------
    def load_trunk(self, source: Any) -> None:
        """Initialise the graph-convolution trunk from a latency GCN (BRP-NAS transfer learning; eagle's
        ``--transfer``: every weight but the last layer). ``source``: a saved ``gcn`` or ``transfer``
        predictor or transfer-trunk file, or such a loaded object (anything whose GCN has the same
        features, ``hidden`` and ``layers`` as this predictor)."""
        gcn = _source_gcn(source, self.space)
        if isinstance(getattr(source, "space", None), EncodableSpace):
            check_graph_params(self.space, graph_params(source.space), "init predictor")
        state = {k: v for k, v in gcn.state_dict().items() if k.startswith(("gc.", "norm."))}
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        expected = {k: tuple(v.shape) for k, v in self.model.trunk.state_dict().items()}
        if shapes != expected:
            raise InputError(
                f"init: the latency GCN's trunk ({len(gcn.gc)} layers of {gcn.gc[0].weight.shape[1]} units) does not "
                f"fit the relation predictor's ({self.layers} layers of {self.hidden} units): give the same "
                "hidden and layers"
            )
        self.model.trunk.load_state_dict(state)

    # -- training -----------------------------------------------------------------------------------------
    def fit(
        self, candidates: Sequence[Any], values: Sequence[float], *, epochs: int | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Train on every ordered pair of ``candidates`` (continuing from the current weights) for ``epochs``
        (default: the config's); returns the run's record (``seconds`` is its wall time)."""
        y = np.asarray(values, dtype=np.float64).ravel()
        if len(candidates) != y.size:
            raise InputError(f"relation predictor: {len(candidates)} candidates but {y.size} values")
        if np.isnan(y).any() or np.isposinf(y).any():
            raise InputError("relation predictor: values must be numbers or minus infinity (a failed candidate)")
        epochs = self.train_config.epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise InputError(f"relation predictor epochs must be an int >= 1, got {epochs!r}")
        start = time.perf_counter()
        steps, loss = 0, float("nan")
        if len(candidates) >= 2 and np.unique(y).size >= 2:
            with deterministic_torch(seed):
                adj, feat = graph_tensors(self.space, list(candidates))
                steps, loss = self._train(adj, feat, torch.from_numpy(y), epochs, seed)
        record = {"n": len(candidates), "epochs": epochs, "steps": steps, "loss": loss, "seed": seed,
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        return record

    def _train(
        self, adj: torch.Tensor, feat: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
    ) -> tuple[int, float]:
        cfg = self.train_config
        gen = torch.Generator().manual_seed(seed)
        n = y.numel()
        chunks = math.ceil(n / min(cfg.batch_size, n))
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0)
        loss_fn = nn.BCEWithLogitsLoss()
        self.model.train()
        steps, last = 0, float("nan")
        for _ in range(epochs):
            for idx in torch.tensor_split(torch.randperm(n, generator=gen), chunks):
                target, mask = pair_targets(y[idx])
                if not mask.any():
                    continue
                f, g = self.model.parts(self.model.embed(adj[idx], feat[idx]))
                logits = f[:, None] + g[None, :]
                loss = loss_fn(logits[mask], target[mask])
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps, last = steps + 1, float(loss.detach())
            sched.step()
        self.model.eval()
        return steps, last

    # -- inference ----------------------------------------------------------------------------------------
    def _parts(self, candidates: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(f, g)`` of the candidates as float64 arrays (relation logit of (a, b) = f[a] + g[b])."""
        if not len(candidates):
            return np.zeros(0), np.zeros(0)
        with deterministic_torch(self.seed), torch.no_grad():
            adj, feat = graph_tensors(self.space, list(candidates))
            self.model.eval()
            fs, gs = [], []
            for start in range(0, len(candidates), 4096):
                f, g = self.model.parts(self.model.embed(adj[start : start + 4096], feat[start : start + 4096]))
                fs.append(f)
                gs.append(g)
        return torch.cat(fs).double().numpy(), torch.cat(gs).double().numpy()

    def prob_better(self, first: Sequence[Any], second: Sequence[Any]) -> np.ndarray:
        """P(objective(first[k]) > objective(second[k])) for each k."""
        if len(first) != len(second):
            raise InputError(f"prob_better: {len(first)} first candidates but {len(second)} second ones")
        f, _ = self._parts(first)
        _, g = self._parts(second)
        return 1.0 / (1.0 + np.exp(-(f + g)))

    def win_counts(self, candidates: Sequence[Any]) -> np.ndarray:
        """For each candidate, the number of the others it beats (relation probability > 0.5)."""
        f, g = self._parts(candidates)
        return _win_counts(f, g)

    def rank(self, candidates: Sequence[Any]) -> np.ndarray:
        """Indices of ``candidates``, predicted best first: most pairwise wins, then ``f - g``, then position."""
        f, g = self._parts(candidates)
        wins = _win_counts(f, g)
        return np.lexsort((np.arange(len(f)), -(f - g), -wins))

    def pairwise_accuracy(self, candidates: Sequence[Any], values: Sequence[float]) -> float:
        """Share of the ordered pairs of distinct values whose order the predictor gets right."""
        f, g = self._parts(candidates)
        y = np.asarray(values, dtype=np.float64)
        logits = f[:, None] + g[None, :]
        mask = y[:, None] != y[None, :]
        if not mask.any():
            raise InputError("pairwise_accuracy needs at least two different values")
        return float(np.mean((logits > 0)[mask] == (y[:, None] > y[None, :])[mask]))


def _win_counts(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``#{b != a: f[a] + g[b] > 0}`` for every a, with one sort of g."""
    order = np.sort(g)
    threshold = -f
    beaten = len(g) - np.searchsorted(order, threshold, side="right")
    return beaten - (g > threshold).astype(np.int64)


def _source_gcn(source: Any, space: EncodableSpace[Any]) -> GCN:
    """The GCN of a latency predictor / transfer trunk given as an object or a saved file."""
    from .io import load_arrays
    from .kinds import TRUNK_KIND
    from .registry import load_predictor
    from .trunk import load_trunk

    if isinstance(source, (str, os.PathLike)):
        meta, _ = load_arrays(source)
        source = load_trunk(source, space=space) if meta.get("kind") == TRUNK_KIND else load_predictor(
            source, space=space)
    model = getattr(source, "model", None)
    if not isinstance(model, GCN):
        trunk = getattr(source, "trunk", None)
        model = getattr(trunk, "model", None)
    if not isinstance(model, GCN):
        raise InputError(f"init must be a GCN latency predictor (kind gcn or transfer) or a transfer trunk, or the "
                         f"path of one; got {type(source).__name__}")
    return model


__all__ = ["RELATION_TRAIN", "BinaryRelationPredictor", "RelationGCN", "RelationTrainConfig", "deterministic_torch",
           "pair_targets"]
