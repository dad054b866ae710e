from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicefit.errors import InputError
from devicefit.spaces import (
    NUM_CELLS,
    OPS,
    ArchStringError,
    NB201Cell,
    NB201Space,
    all_cells,
    build_nb201,
    format_arch_str,
    parse_arch_str,
    sample_cell,
    sample_unique_cells,
    twin_pairs,
)

FULL_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_all_arch_strings_round_trip() -> None:
    cells = all_cells()
    assert len(cells) == NUM_CELLS == 15_625
    strings = [c.to_str() for c in cells]
    assert len(set(strings)) == NUM_CELLS
    assert all(NB201Cell.from_str(s) == c for s, c in zip(strings, cells))
    assert all(NB201Cell.from_index(c.ops_index) == c for c in cells[::97])


def test_arch_string_edge_order_matches_latbench_tuple() -> None:
    cell = NB201Cell.from_str("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|none~2|")
    assert cell.ops == (4, 2, 1, 2, 1, 0)


def test_unique_canonical_keys_match_published_count() -> None:
    assert len({c.canonical_key() for c in all_cells()}) == 6_466


def test_isomorphic_cells_share_a_key() -> None:
    # conv directly into the output plus pooling through node 1, or the other way round: same function.
    a = NB201Cell.from_str("|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|")
    b = NB201Cell.from_str("|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|skip_connect~1|none~2|")
    assert a != b and a.canonical_key() == b.canonical_key()
    c = NB201Cell.from_str("|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    assert c.canonical_key() != a.canonical_key()


def test_disconnected_cells() -> None:
    disconnected = [c for c in all_cells() if c.is_disconnected()]
    assert len(disconnected) == 341
    assert NB201Cell((0,) * 6).is_disconnected()
    assert not NB201Cell((0, 0, 0, 1, 0, 0)).is_disconnected()  # skip from input straight to output
    assert NB201Cell((3, 0, 0, 0, 0, 3)).is_disconnected()  # node 2 is never fed
    graph = NB201Cell((0,) * 6).to_graph()
    assert graph.labels == ("input", "output") and graph.adjacency.sum() == 0


def test_neighbours_and_mutation() -> None:
    cell = NB201Cell.from_str(FULL_CELL)
    nbrs = cell.neighbours()
    assert len(nbrs) == 24 and len(set(nbrs)) == 24 and cell not in nbrs
    assert all(sum(a != b for a, b in zip(n.ops, cell.ops)) == 1 for n in nbrs)
    rng = random.Random(0)
    assert cell.mutate(rng) in nbrs
    samples = {sample_cell(rng) for _ in range(200)}
    assert len(samples) > 190  # 200 draws from 15,625 cells rarely repeat


def test_graph_encoding_prunes_dangling_ops() -> None:
    # Edge 0->1 conv feeds node 1, which only leaves through none edges: it is dangling.
    cell = NB201Cell.from_str("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    g = cell.to_graph()
    assert g.labels == ("input", "avg_pool_3x3", "skip_connect", "output")
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[0, 1] = expected[1, 2] = expected[2, 3] = 1
    np.testing.assert_array_equal(g.adjacency, expected)
    full = NB201Cell.from_str(FULL_CELL).to_graph()
    assert (
        len(full.labels) == 8 and full.adjacency.sum() == 3 + 2 + 1 + 1 + 3
    )  # from input, e0->(e2,e4), e1->e5, e2->e5, to output
    assert np.allclose(np.triu(full.adjacency, 1), full.adjacency)  # a DAG in topological order


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("", "3 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "3 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|", "3 incoming"),
        (
            "|conv_5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            "unknown operation",
        ),
        ("|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "node < 1"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "out of order"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "out of order"),
        ("|nor_conv_3x3~00|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "node < 1"),
        ("|nor_conv_3x3~²|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "op~i"),
        ("|nor_conv_3x3~٠|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "op~i"),
        ("|nor_conv_3x3-0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "op~i"),
        ("nor_conv_3x3~0+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "|op~i|"),
    ],
)
def test_malformed_arch_strings_name_the_problem(bad: str, fragment: str) -> None:
    with pytest.raises(ArchStringError) as info:
        parse_arch_str(bad)
    assert fragment in str(info.value) and repr(bad) in str(info.value)


def test_bad_cells_and_indices() -> None:
    for bad in [(0, 1, 5, 0, 0, 0), (1.5, 2, 3, 4, 0, 1), ("a", 1, 1, 1, 1, 1), ([1], 2, 3, 4, 0, 1), (1, 2, 3), None,
                (1.0, 2, 3, 4, 0, 1), "123401"]:
        with pytest.raises(ArchStringError, match="6 operation indices"):
            NB201Cell(bad)
    # Numpy integers and lists give the same cell, with plain-int ops.
    cell = NB201Cell([np.int64(3), 2, 1, 0, 4, 3])
    assert cell == NB201Cell((3, 2, 1, 0, 4, 3)) and all(type(o) is int for o in cell.ops)
    with pytest.raises(IndexError, match="out of range"):
        NB201Cell.from_index(NUM_CELLS)
    with pytest.raises(InputError, match="must be an int"):
        NB201Cell.from_index(2.0)  # type: ignore[arg-type]


def test_bools_are_not_operation_indices() -> None:
    # True == 1 and hashes alike, so a mask passed by mistake would otherwise become skip_connect edges
    for bad in [(True, 0, 0, 0, 0, 0), (1, 1, 1, 1, 1, False), [np.True_, 0, 0, 0, 0, 0], (np.bool_(False),) * 6]:
        with pytest.raises(ArchStringError, match="not bools"):
            NB201Cell(bad)


def test_sample_unique_cells_checks_size_and_seed() -> None:
    cells = sample_unique_cells(50, seed=3)
    assert len({c.canonical_key() for c in cells}) == 50 and not any(c.is_disconnected() for c in cells)
    assert sample_unique_cells(20, seed=3) == cells[:20]
    for n in (0, -1, 6462, 2.5, True, "10"):
        with pytest.raises(InputError, match="sample size must be an int"):
            sample_unique_cells(n)  # type: ignore[arg-type]
    for seed in (-1, 1.5, True, None, "0"):
        with pytest.raises(InputError, match="seed must be a non-negative int"):
            sample_unique_cells(5, seed=seed)  # type: ignore[arg-type]


def test_params_match_benchmark_table(nb201_table) -> None:
    rng = random.Random(1)
    rows = rng.sample(range(len(nb201_table)), 12)
    params_m = nb201_table.column("params_M")
    for row in rows:
        model = build_nb201(nb201_table.cells[row])
        n = sum(p.numel() for p in model.parameters())
        assert n / 1e6 == pytest.approx(params_m[row], abs=6e-6), nb201_table.cells[row].to_str()


def test_built_model_runs_and_checks_its_input() -> None:
    model = build_nb201(FULL_CELL, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))
    # A disconnected cell still builds and runs (its cells output zeros).
    dead = build_nb201(NB201Cell((0,) * 6)).eval()
    with torch.no_grad():
        assert dead(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unique_connected_cells_bound_used_by_samplers() -> None:
    from devicefit.spaces.nb201 import UNIQUE_CONNECTED_CELLS

    assert len({c.canonical_key() for c in all_cells() if not c.is_disconnected()}) == UNIQUE_CONNECTED_CELLS


def test_unpruned_graph_keeps_dangling_ops() -> None:
    cell = NB201Cell.from_str("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    g = cell.to_graph(prune=False)
    assert g.labels == ("input", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "output")
    assert g.adjacency[0, 1] == 1 and g.adjacency[1].sum() == 0  # the conv leads nowhere
    full = NB201Cell.from_str(FULL_CELL)
    np.testing.assert_array_equal(full.to_graph(prune=False).adjacency, full.to_graph().adjacency)


def test_twin_cells_are_one_network_under_two_arch_strings() -> None:
    pairs = twin_pairs()
    assert len(pairs) == 1500  # 5 ops on 0->3 x C(25, 2) unordered (0->1, 1->3) != (0->2, 2->3) choices
    for a, b in pairs:
        assert a.twin() == b and b.twin() == a and a.ops[2] == b.ops[2] == 0
    # NB201's own key (to_unique_str) does not see the node swap: it tells most twins apart.
    assert sum(a.canonical_key() != b.canonical_key() for a, b in pairs) > 1000
    assert NB201Cell((3, 3, 0, 1, 2, 2)).twin() is None  # the swap gives the same cell
    assert NB201Cell((3, 2, 1, 1, 2, 3)).twin() is None  # 1->2 is not none: node 2 reads node 1
    # Same weights, renamed by the node swap, give the same outputs.
    rename = {"0_1": "0_2", "0_2": "0_1", "1_3": "2_3", "2_3": "1_3"}
    torch.manual_seed(0)
    for a, b in random.Random(0).sample(pairs, 3):
        net_a, net_b = build_nb201(a).eval(), build_nb201(b).eval()
        state = {}
        for k, v in net_a.state_dict().items():
            parts = k.split(".")
            if len(parts) > 3 and parts[2] == "ops":
                parts[3] = rename.get(parts[3], parts[3])
            state[".".join(parts)] = v
        net_b.load_state_dict(state)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(net_a(x), net_b(x), rtol=1e-5, atol=1e-5)


# -- NB201Space ------------------------------------------------------------------------------------
def test_nb201_space_members() -> None:
    space = NB201Space()
    cell = NB201Cell.from_str(FULL_CELL)
    assert space.name == "nb201" and space.settings() == {"space": "nb201", "prune_graph": False}
    assert space.to_json(cell) == FULL_CELL and space.from_json(FULL_CELL) == cell
    assert space.identity(cell) == json.dumps(FULL_CELL) and space.key(cell) == cell.canonical_key()
    assert space.neighbours(cell) == cell.neighbours() and len(space.neighbours(cell)) == 24
    assert space.vector_size == 30 and np.array_equal(space.encode_vector(cell), cell.one_hot())
    assert space.node_labels == ("input", "output", *OPS[1:]) and space.max_nodes == 8
    dangling = NB201Cell.from_str("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    assert space.encode_graph(dangling).labels == dangling.to_graph(prune=False).labels  # what the network runs
    assert NB201Space(prune_graph=True).encode_graph(dangling).labels == dangling.to_graph().labels
    samples = [space.sample(random.Random(0)) for _ in range(3)]
    assert samples == [sample_cell(random.Random(0))] * 3
    model = space.build(cell, num_classes=7)
    assert model.classifier.out_features == 7


@pytest.mark.parametrize("bad", [5, None, ["|skip_connect~0|"], {"arch": FULL_CELL}, [3, 3, 3, 3, 3, 3]])
def test_nb201_space_reads_only_arch_strings(bad: object) -> None:
    with pytest.raises(ArchStringError, match=f"nb201 candidate data must be an arch string, got {type(bad).__name__}"):
        NB201Space().from_json(bad)
    with pytest.raises(InputError, match="nb201 candidate must be an NB201Cell"):
        NB201Space().key(bad)  # type: ignore[arg-type]


def test_importing_spaces_does_not_import_torch() -> None:
    code = "import sys, devicefit.spaces, devicefit.predictors; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# -- property tests of the arch-string parser ---------------------------------------------------------
def _parses_exactly_or_refuses(text: str) -> None:
    """Either a cell that round-trips to the same text (up to surrounding whitespace), or ArchStringError."""
    try:
        ops = parse_arch_str(text)
    except ArchStringError:
        with pytest.raises(ArchStringError):
            NB201Cell.from_str(text)
        with pytest.raises(ArchStringError):
            NB201Space().from_json(text)
        return
    cell = NB201Cell(ops)
    assert format_arch_str(ops) == cell.to_str() == text.strip()
    assert NB201Cell.from_str(text) == cell == NB201Space().from_json(text) == NB201Cell.from_str(cell.to_str())


#: Property-test settings: no example database written to the checkout, no per-example deadline on a busy machine.
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

ARCH_ALPHABET = st.sampled_from(
    ["|", "~", "+", "0", "1", "2", "3", "9", "²", "٣", "０", " ", "\n", "\x00", "none", "skip_connect",
     "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "conv", "~0|", "|+|"]
)


@PROPERTY
@given(st.text())
def test_any_text_parses_exactly_or_raises_arch_string_error(text: str) -> None:
    _parses_exactly_or_refuses(text)


@PROPERTY
@given(st.lists(st.integers(0, 4), min_size=6, max_size=6), st.data())
def test_mutated_arch_strings_parse_exactly_or_raise(ops: list[int], data: st.DataObject) -> None:
    text = format_arch_str(tuple(ops))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 4)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = "" if action == "delete" else data.draw(ARCH_ALPHABET)
        text = text[:i] + piece + text[j if action != "insert" else i :]
    _parses_exactly_or_refuses(text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)


@PROPERTY
@given(JSON_VALUES)
def test_from_json_gives_a_cell_or_an_input_error(data: object) -> None:
    try:
        cell = NB201Space().from_json(data)
    except ArchStringError:
        return
    assert isinstance(data, str) and cell.to_str() == data.strip()


@PROPERTY
@given(st.one_of(st.text(), JSON_VALUES.map(lambda v: json.dumps(v))))
def test_from_identity_gives_a_cell_or_an_input_error(text: str) -> None:
    space = NB201Space()
    try:
        cell = space.from_identity(text)
    except InputError:
        return
    assert space.from_identity(space.identity(cell)) == cell


@PROPERTY
@given(st.lists(st.one_of(st.integers(-2, 6), st.booleans(), st.floats(-1, 6), st.text(max_size=2)), max_size=8))
def test_cells_hold_six_plain_ints_or_refuse(ops: list[object]) -> None:
    try:
        cell = NB201Cell(tuple(ops))  # type: ignore[arg-type]
    except ArchStringError:
        return
    assert len(cell.ops) == 6 and all(type(o) is int and 0 <= o < 5 for o in cell.ops)
    assert not any(isinstance(o, bool) for o in ops)
