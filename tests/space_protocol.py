"""A reusable check of the ``Space`` protocol (devicefit.spaces.base): run it on any space.

``check_space`` (every space), ``check_mutable_space`` and ``check_encodable_space`` assert the properties
that search strategies, the evaluation store and the predictors rely on; each returns the candidates it
sampled. A new space (an FBNet macro space, a compression policy space) gets its test by calling them:

    check_space(space, n=20, example_input=torch.randn(2, 3, 32, 32))
    check_mutable_space(space)
    check_encodable_space(space)
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.errors import InputError
from devicefit.spaces.base import EncodableSpace, LabelledGraph, MutableSpace, Space

#: JSON data that is no candidate of any sensible space (each must raise InputError in ``from_json``).
MALFORMED_JSON: tuple[Any, ...] = (
    None,
    {"devicefit-protocol-check": "not a candidate"},
    ["devicefit-protocol-check", None, 1.5, {"x": []}],
    "devicefit-protocol-check: not a candidate",
)
#: Text that is not JSON at all (``from_identity`` must raise InputError).
NOT_JSON: tuple[str, ...] = ("{not json", "", "[1, 2", "'single quotes'")


def sample(space: Space[Any], n: int, seed: int = 0) -> list[Any]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def check_space(
    space: Space[Any], n: int = 20, example_input: torch.Tensor | None = None, malformed: tuple[Any, ...] = ()
) -> list[Any]:
    """Sampling, keys, JSON and identity round trips, settings, malformed input, and ``build``."""
    assert isinstance(space, Space)
    assert isinstance(space.name, str) and space.name
    settings = space.settings()
    assert settings.get("space") == space.name
    assert json.loads(json.dumps(settings, allow_nan=False)) == settings, "settings must be plain JSON"

    candidates = sample(space, n)
    assert [space.identity(c) for c in sample(space, n)] == [space.identity(c) for c in candidates], (
        "sample must be a function of the rng's state"
    )
    for c in candidates:
        assert space.contains(c), f"sampled candidate {c!r} is not contained in its space"
        text = json.dumps(space.to_json(c), allow_nan=False)
        back = space.from_json(json.loads(text))
        assert back == c, f"from_json(to_json(c)) != c for {c!r}"
        identity = space.identity(c)
        assert isinstance(identity, str) and identity == space.identity(back)
        assert space.from_identity(identity) == c
        key = space.key(c)
        assert isinstance(key, str) and key
        assert space.key(back) == key == space.key(c), "equal candidates must have equal, deterministic keys"

    by_identity: dict[str, Any] = {space.identity(c): c for c in candidates}
    for identity, c in by_identity.items():  # equal identities <=> equal candidates
        assert all((space.identity(d) == identity) == (d == c) for d in candidates)

    for bad in MALFORMED_JSON + tuple(malformed):
        with pytest.raises(InputError):
            space.from_json(bad)
    for text in NOT_JSON:
        with pytest.raises(InputError):
            space.from_identity(text)
    assert not space.contains(object())

    module = space.build(candidates[0])
    assert isinstance(module, nn.Module)
    if example_input is not None:
        module.eval()
        with torch.no_grad():
            out = module(example_input)
        assert isinstance(out, torch.Tensor) and out.shape[0] == example_input.shape[0]
        assert torch.isfinite(out).all()
    return candidates


def check_mutable_space(space: MutableSpace[Any], n: int = 10) -> list[Any]:
    """Neighbours: contained, distinct, never the candidate, in a fixed order; ``mutate`` picks one of them."""
    assert isinstance(space, MutableSpace)
    candidates = sample(space, n, seed=1)
    rng = random.Random(1)
    for c in candidates:
        neighbours = space.neighbours(c)
        assert neighbours, f"{c!r} has no neighbours"
        ids = [space.identity(m) for m in neighbours]
        assert len(set(ids)) == len(ids), "neighbours must be distinct"
        assert space.identity(c) not in ids and all(m != c for m in neighbours), "a candidate is not its neighbour"
        assert all(space.contains(m) for m in neighbours)
        assert [space.identity(m) for m in space.neighbours(c)] == ids, "neighbours must come in a fixed order"
        for _ in range(3):
            assert space.identity(space.mutate(c, rng)) in ids
    return candidates


def check_encodable_space(space: EncodableSpace[Any], n: int = 20) -> list[Any]:
    """Vectors (shape, float32, finite) and graphs (known labels, square 0/1 adjacency, acyclic, size bound)."""
    assert isinstance(space, EncodableSpace)
    size = space.vector_size
    assert isinstance(size, int) and size > 0
    labels = space.node_labels
    assert len(set(labels)) == len(labels) and {"input", "output"} <= set(labels)
    assert isinstance(space.max_nodes, int) and space.max_nodes >= 2
    candidates = sample(space, n, seed=2)
    for c in candidates:
        v = space.encode_vector(c)
        assert isinstance(v, np.ndarray) and v.shape == (size,) and v.dtype == np.float32
        assert np.all(np.isfinite(v))
        np.testing.assert_array_equal(space.encode_vector(c), v)
        check_graph(space, space.encode_graph(c))
    stacked = space.encode_vectors(candidates)
    assert stacked.shape == (len(candidates), size) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[0], space.encode_vector(candidates[0]))
    return candidates


def check_graph(space: EncodableSpace[Any], g: LabelledGraph) -> None:
    assert isinstance(g, LabelledGraph)
    n = len(g.labels)
    assert 2 <= n <= space.max_nodes
    assert g.labels[0] == "input" and g.labels[-1] == "output"
    assert set(g.labels) <= set(space.node_labels)
    a = np.asarray(g.adjacency)
    assert a.shape == (n, n)
    assert set(np.unique(a).tolist()) <= {0.0, 1.0}
    assert np.all(np.diag(a) == 0), "no self-loops"
    reach = a > 0
    power = reach.copy()
    for _ in range(n):  # a DAG's adjacency is nilpotent: no path longer than n - 1 edges
        power = (power.astype(np.int64) @ reach.astype(np.int64)) > 0
    assert not power.any(), "the graph has a cycle"


__all__ = ["MALFORMED_JSON", "NOT_JSON", "check_encodable_space", "check_graph", "check_mutable_space", "check_space"]
