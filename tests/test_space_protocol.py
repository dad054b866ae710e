"""The Space protocol suite (tests/space_protocol.py) on NB201 and on a toy space defined here, and the
predictors fitted on the toy space: predictors work on any encodable space, not on NB201 alone."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.errors import InputError, UnknownNameError
from devicefit.predictors import (
    GCNPredictor,
    MLPPredictor,
    PredictorFileError,
    TrainConfig,
    TransferPredictor,
    TransferTrunk,
    load_predictor,
    make_predictor,
)
from devicefit.ranking import regression_report
from devicefit.spaces import SPACES, NB201Space, get_space
from devicefit.spaces.base import EncodableSpace, LabelledGraph, MutableSpace

from .space_protocol import check_encodable_space, check_mutable_space, check_space

WIDTHS = (8, 16, 32, 64)
LAYERS = 4
IN_FEATURES, OUT_FEATURES = 12, 10


class WidthChainSpace(MutableSpace[tuple[int, ...]], EncodableSpace[tuple[int, ...]]):
    """A chain of ``LAYERS`` linear layers, each with a width from ``WIDTHS``: ``(8, 64, 16, 32)``."""

    name = "toy-width-chain"

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.choice(WIDTHS) for _ in range(LAYERS))

    def key(self, candidate: tuple[int, ...]) -> str:
        return "-".join(map(str, self._check(candidate)))

    def to_json(self, candidate: tuple[int, ...]) -> Any:
        return list(self._check(candidate))

    def from_json(self, data: Any) -> tuple[int, ...]:
        if not isinstance(data, list):
            raise InputError(f"toy candidate must be a list of {LAYERS} widths, got {data!r}")
        return self._check(tuple(data))

    def build(self, candidate: tuple[int, ...], **options: Any) -> nn.Module:
        dims = (IN_FEATURES, *self._check(candidate))
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(dims[-1], OUT_FEATURES))

    def neighbours(self, candidate: tuple[int, ...]) -> list[tuple[int, ...]]:
        c = self._check(candidate)
        return [(*c[:i], w, *c[i + 1 :]) for i in range(LAYERS) for w in WIDTHS if w != c[i]]

    @property
    def vector_size(self) -> int:
        return LAYERS * len(WIDTHS)

    def encode_vector(self, candidate: tuple[int, ...]) -> np.ndarray:
        v = np.zeros((LAYERS, len(WIDTHS)), dtype=np.float32)
        v[np.arange(LAYERS), [WIDTHS.index(w) for w in self._check(candidate)]] = 1.0
        return v.reshape(-1)

    @property
    def node_labels(self) -> tuple[str, ...]:
        return ("input", "output", *(f"linear_{w}" for w in WIDTHS))

    @property
    def max_nodes(self) -> int:
        return LAYERS + 2

    def encode_graph(self, candidate: tuple[int, ...]) -> LabelledGraph:
        labels = ("input", *(f"linear_{w}" for w in self._check(candidate)), "output")
        adjacency = np.eye(len(labels), k=1, dtype=np.float32)  # a chain
        return LabelledGraph(labels, adjacency)

    @staticmethod
    def _check(candidate: object) -> tuple[int, ...]:
        ok = (isinstance(candidate, tuple) and len(candidate) == LAYERS
              and all(type(w) is int and w in WIDTHS for w in candidate))
        if not ok:
            raise InputError(f"toy candidate must be a tuple of {LAYERS} widths from {WIDTHS}, got {candidate!r}")
        return candidate  # type: ignore[return-value]


def macs(c: tuple[int, ...]) -> float:
    """A synthetic latency (ms) proportional to the chain's multiply-accumulates, plus a fixed cost."""
    dims = (IN_FEATURES, *c, OUT_FEATURES)
    return 0.05 + sum(a * b for a, b in itertools.pairwise(dims)) / 1000.0


ALL_TOY = [tuple(c) for c in itertools.product(WIDTHS, repeat=LAYERS)]  # 256 candidates


@dataclass
class ToyTable:
    """Just the table interface the predictors use (cells, array, get, in, len, device, unit)."""

    device: str
    unit: str
    values: dict[tuple[int, ...], float]

    def cells(self) -> list[tuple[int, ...]]:
        return list(self.values)

    def array(self, cells: list[tuple[int, ...]]) -> np.ndarray:
        return np.array([self.values[c] for c in cells])

    def get(self, cell: tuple[int, ...]) -> float | None:
        return self.values.get(cell)

    def __contains__(self, cell: object) -> bool:
        return cell in self.values

    def __len__(self) -> int:
        return len(self.values)


# -- the protocol suite -------------------------------------------------------------------------------
@pytest.mark.parametrize("prune_graph", [False, True])
def test_nb201_space_keeps_the_protocol(prune_graph: bool) -> None:
    space = NB201Space(prune_graph=prune_graph)
    check_space(space, n=20, example_input=torch.randn(2, 3, 32, 32), malformed=(5, ["|skip_connect~0|"]))
    check_mutable_space(space)
    check_encodable_space(space)


def test_toy_space_keeps_the_protocol() -> None:
    space = WidthChainSpace()
    check_space(space, n=20, example_input=torch.randn(3, IN_FEATURES), malformed=([8, 8, 8], [8, 8, 8, 7]))
    check_mutable_space(space)
    check_encodable_space(space)


def test_space_registry() -> None:
    assert SPACES == {"nb201": NB201Space}
    space = get_space("nb201", prune_graph=True)
    assert isinstance(space, NB201Space) and space.settings() == {"space": "nb201", "prune_graph": True}
    settings = NB201Space().settings()
    assert get_space(settings.pop("space"), **settings).settings() == NB201Space().settings()
    with pytest.raises(UnknownNameError, match="unknown search space 'darts'; known spaces: nb201"):
        get_space("darts")
    with pytest.raises(InputError, match="no option.*'channels'.*prune_graph"):
        get_space("nb201", channels=8)
    with pytest.raises(InputError, match="prune_graph must be true or false"):
        NB201Space(prune_graph="yes")  # type: ignore[arg-type]


# -- predictors on the toy space ----------------------------------------------------------------------
def _toy_split(seed: int = 0) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    cells = ALL_TOY[:]
    random.Random(seed).shuffle(cells)
    return cells[:100], cells[100:]


@pytest.mark.parametrize(
    "make",
    [
        lambda s: MLPPredictor(space=s, hidden=32, train=TrainConfig(max_epochs=80, lr=3e-3, weight_decay=0.0)),
        lambda s: GCNPredictor(space=s, hidden=32, train=TrainConfig(max_epochs=80, lr=3e-3, weight_decay=0.0)),
    ],
    ids=["mlp", "gcn"],
)
def test_neural_predictors_fit_and_predict_a_toy_space(make, tmp_path) -> None:
    space = WidthChainSpace()
    train, test = _toy_split()
    p = make(space).fit(train, [macs(c) for c in train], device="toy-device", seed=0)
    pred = p.predict(test)
    report = regression_report(pred, np.array([macs(c) for c in test]))
    assert report["spearman"] > 0.9, report  # measured 0.97-0.99 (MLP) and 0.997-0.999 (GCN) over seeds 0-2
    # candidates as the space's JSON text are read with from_json... of that JSON value
    with pytest.raises(InputError, match="toy candidate must be a list"):
        p.predict(["8-8-8-8"])
    # saved with its space; a file of an unregistered space needs that space given back, and only that one
    p.save(tmp_path / "toy")
    with pytest.raises(PredictorFileError, match="cannot be rebuilt.*pass the space"):
        load_predictor(tmp_path / "toy")
    with pytest.raises(PredictorFileError, match="fitted on space .*toy-width-chain.*not on the given space"):
        load_predictor(tmp_path / "toy", space=NB201Space())
    q = load_predictor(tmp_path / "toy", space=space)
    np.testing.assert_array_equal(q.predict(test), pred)


def test_transfer_adapts_on_a_toy_space() -> None:
    space = WidthChainSpace()
    rng = np.random.default_rng(0)
    sources = {}
    for k in range(3):  # devices: MACs-bound with their own speed and per-width overheads
        speed, over = rng.uniform(0.5, 3.0), rng.uniform(0.0, 0.05, len(WIDTHS))
        sources[f"toy{k}"] = ToyTable(f"toy{k}", "ms", {
            c: speed * macs(c) + float(sum(over[WIDTHS.index(w)] for w in c)) for c in ALL_TOY})
    settings = {"pretrain_cells": 256, "hidden": 32, "train": TrainConfig(max_epochs=60, lr=3e-3, weight_decay=0.0)}
    trunk = TransferTrunk.pretrain(sources, space=space, seed=0, settings=TransferPredictor(**settings).pretrain_settings)
    p = TransferPredictor(trunk=trunk)
    assert p.space is space
    train, test = _toy_split(1)
    target = {c: 2.0 * macs(c) for c in ALL_TOY}
    p.fit(train[:20], [target[c] for c in train[:20]])
    report = regression_report(p.predict(test), np.array([target[c] for c in test]))
    assert report["spearman"] > 0.8, report


@pytest.mark.parametrize("kind", ["flops", "layerwise"])
def test_nb201_only_predictors_refuse_other_spaces(kind: str) -> None:
    with pytest.raises(InputError, match=f"the {kind} predictor works on the nb201 space only.*toy-width-chain"):
        make_predictor(kind, space=WidthChainSpace())


def test_predictors_need_an_encodable_space() -> None:
    from tests.toy_study import IntSpace

    with pytest.raises(InputError, match="predictors need an encodable space"):
        make_predictor("mlp", space=IntSpace())  # type: ignore[arg-type]
