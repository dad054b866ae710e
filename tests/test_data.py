from __future__ import annotations

import gzip
import pickle
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devicefit.data import (
    DataFileError,
    LatencyTable,
    data_dir,
    device_catalog,
    device_values,
    load_device_table,
    load_device_tables,
    load_help,
    load_image_folder_tarball,
    load_latbench,
    load_mnist_idx,
    load_nb201_table,
    load_npz_images,
    random_crop_flip,
    read_latency_csv,
    resolve_arch,
    to_tensor,
    write_latency_csv,
)
from devicefit.errors import InputError
from devicefit.spaces import NB201Cell, all_cells
from devicefit.spaces.base import Space

from .conftest import need_file

LATBENCH_CPU = "latency/latbench/desktop-cpu-core-i7-7820x-fp32.pickle"
NB201_CSV = "nb201/nb201_accuracy.csv"
HELP = "latency/help/help_nb201_latency_ms.csv"
A, B = NB201Cell((3,) * 6), NB201Cell((1, 2, 3, 4, 1, 2))


# -- data directory -------------------------------------------------------------------------------
def test_data_dir_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    with pytest.raises(DataFileError, match="DEVICEFIT_DATA"):
        data_dir()
    assert data_dir(required=False) is None  # only an unset setting means "no data"
    monkeypatch.setenv("DEVICEFIT_DATA", "")
    assert data_dir(required=False) is None
    monkeypatch.setenv("DEVICEFIT_DATA", str(tmp_path))
    assert data_dir() == tmp_path and data_dir(required=False) == tmp_path
    with pytest.raises(DataFileError, match="not found"):
        load_nb201_table(data_dir=tmp_path)


def test_a_data_dir_that_is_not_there_is_an_error_even_when_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVICEFIT_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataFileError, match=r"typo.*\(from DEVICEFIT_DATA\) does not exist"):
        data_dir(required=False)
    with pytest.raises(DataFileError, match=r"missing.*\(from --data-dir\) does not exist"):
        data_dir(tmp_path / "missing", required=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataFileError, match="is not a directory"):
        data_dir(tmp_path / "file", required=False)


def test_import_devicefit_data_is_light() -> None:
    code = (
        "import sys, devicefit, devicefit.data as d; d.data_dir; d.DataFileError; "
        "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_devicefit_offers_its_verbs_lazily() -> None:
    import devicefit

    for verb in ("evaluate_all", "measure_latency", "count_model", "compute_proxies", "get_space",
                 "make_predictor", "load_model_file"):
        assert verb in dir(devicefit)
    assert devicefit.get_space("nb201").name == "nb201"
    from devicefit.hardware import count_model

    assert devicefit.count_model is count_model
    with pytest.raises(AttributeError, match="no_such_verb"):
        devicefit.no_such_verb  # noqa: B018
    code = "import sys, devicefit; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- NB201 table ------------------------------------------------------------------------------------
def test_nb201_table_optima(nb201_table) -> None:
    assert len(nb201_table) == 15_625
    assert sorted(nb201_table.nb201_index.tolist()) == list(range(15_625))
    cell, value = nb201_table.best("c10_test_200ep")
    assert nb201_table.index_of(cell) == 6111 and value == pytest.approx(94.37, abs=0.01)
    assert nb201_table.best("c100_test_200ep")[1] == pytest.approx(73.51, abs=0.01)
    assert nb201_table.best("in16_val_200ep")[1] == pytest.approx(47.33, abs=0.01)
    assert nb201_table.cell_at(6111) == cell
    with pytest.raises(IndexError, match="out of range"):
        nb201_table.cell_at(15_625)
    # Failed Zen-NAS scores (-1e8 upstream) are missing, not numbers.
    assert np.nanmin(nb201_table.column("zen_c10")) > -1e7
    # NASWOT has no score for the 341 disconnected cells: missing, not 0.
    assert int(np.isnan(nb201_table.column("naswot_v1_c10")).sum()) == 341


def _nb201_csv(path: Path, rows: list[tuple[Any, ...]], header: str = "nb201_index,arch_str,c10_test_200ep,zen_c10") -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_nb201_table_rejects_corrupt_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("nb201_index,arch_str,params_M\n0,|nor_conv_3x3~0|+|bogus|,0.1\n")
    with pytest.raises(DataFileError, match="bad.csv.*line 2"):
        load_nb201_table(bad)
    bad.write_text("index,arch\n0,x\n")
    with pytest.raises(DataFileError, match="lacks column"):
        load_nb201_table(bad)
    bad.write_bytes(b"")
    with pytest.raises(DataFileError, match="empty"):
        load_nb201_table(bad)
    bad.write_text(f"nb201_index,arch_str,params_M\n0,{A.to_str()},abc\n")
    with pytest.raises(DataFileError, match="line 2: column 'params_M' has 'abc'"):
        load_nb201_table(bad, complete=False)
    bad.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(DataFileError, match="not a readable CSV"):
        load_nb201_table(bad)


def test_nb201_table_refuses_control_characters_that_str_strip_would_drop(tmp_path: Path) -> None:
    """``str.strip`` and ``re``'s ``\\s`` take the separators ``\\x1c``-``\\x1f`` as spaces, ``float`` does not:
    a field holding one is corrupt, not a number with a space around it (Hypothesis found ``"106\\x1c"``)."""
    good = _nb201_csv(tmp_path / "good.csv", [(106, A.to_str(), " 93.5 ", "")])
    assert load_nb201_table(good, complete=False).nb201_index.tolist() == [106]
    for row in [("106\x1c", A.to_str(), "93.5", ""), (106, A.to_str(), "93.5\x1f", ""), (106, A.to_str(), "93.5", "\x1c")]:
        bad = _nb201_csv(tmp_path / "bad.csv", [row])
        with pytest.raises(DataFileError, match="bad.csv.*line 2: column"):
            load_nb201_table(bad, complete=False)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(0, A, 150, 1), (1, B, 90, 1)], "'150', expected a percentage"),
        ([(0, A, -0.5, 1), (1, B, 90, 1)], "'-0.5', expected a percentage"),
        ([(0, A, "inf", 1), (1, B, 90, 1)], "'inf', expected a finite number"),
        ([(0, A, "nan", 1), (1, B, 90, 1)], "'nan', expected a finite number"),
        ([(0, A, 90, "inf"), (1, B, 90, 1)], "column 'zen_c10' has 'inf'"),
        ([(0, A, 90, 1), (0, B, 90, 1)], "nb201_index 0 is listed twice"),
        ([(0, A, 90, 1), (1, A, 90, 1)], "is listed twice"),
        ([(3.5, A, 90, 1)], "column 'nb201_index' has '3.5'"),
        ([(-1, A, 90, 1)], "column 'nb201_index' has '-1'"),
        ([(15625, A, 90, 1)], "nb201_index 15625 out of range"),
        ([("", A, 90, 1)], "column 'nb201_index' has ''"),
        ([(0, A, "9_0", 1)], "'9_0'"),
    ],
)
def test_nb201_table_refuses_what_it_cannot_believe(tmp_path: Path, rows: list[tuple[Any, ...]], message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        load_nb201_table(_nb201_csv(tmp_path / "t.csv", rows), complete=False)


def test_nb201_table_reads_a_subset_exactly(tmp_path: Path) -> None:
    path = _nb201_csv(tmp_path / "t.csv", [("3.0", A, 90.5, -1e8), (7, B, "", -3.25)])
    t = load_nb201_table(path, complete=False)
    assert t.cells == (A, B) and t.nb201_index.tolist() == [3, 7]  # "3.0" is the integer 3
    assert t.value(A, "c10_test_200ep") == 90.5 and t.value(B, "c10_test_200ep") is None
    assert t.value(A, "zen_c10") is None and t.value(B, "zen_c10") == -3.25  # -1e8 marks a failed score
    with pytest.raises(DataFileError, match=r"holds 2 of the 15,625 NB201 cells"):
        load_nb201_table(path)  # the official table must be complete


def test_nb201_table_cut_at_a_line_boundary_or_mid_line(data_root: Path, tmp_path: Path) -> None:
    lines = need_file(data_root, NB201_CSV).read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:-1]))
    with pytest.raises(DataFileError, match="holds 15,624 of the 15,625"):
        load_nb201_table(cut)
    cut.write_text("".join(lines[:-1]) + lines[-1][:40])
    with pytest.raises(DataFileError, match=f"line {len(lines)}: 2 fields where the header has 20"):
        load_nb201_table(cut)


# -- LatBench pickles ------------------------------------------------------------------------------
def test_latbench_cpu_missing_cells_are_the_disconnected_ones(data_root: Path) -> None:
    table = load_latbench(need_file(data_root, LATBENCH_CPU))
    assert len(table) == 15_284 and table.unit == "ms" and table.source == "latbench"
    missing = {c for c in all_cells() if c not in table}
    assert missing == {c for c in all_cells() if c.is_disconnected()}
    cell = NB201Cell((0, 0, 0, 2, 2, 4))
    assert table[cell] == pytest.approx(1.5538465976715089)  # upstream stores 0.00155... seconds
    dead = NB201Cell((0,) * 6)
    assert table.get(dead) is None
    with pytest.raises(KeyError, match="no ms value"):
        table[dead]


def test_corrupt_latbench_pickles(tmp_path: Path) -> None:
    p = tmp_path / "dev.pickle"
    p.write_bytes(b"not a pickle")
    with pytest.raises(DataFileError, match="dev.pickle"):
        load_latbench(p)
    p.write_bytes(pickle.dumps({(0, 1, 2): 0.1}))
    with pytest.raises(DataFileError, match="bad entry"):
        load_latbench(p)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataFileError, match="expected a non-empty dict"):
        load_latbench(p)
    # Arbitrary objects are refused, not executed.
    p.write_bytes(pickle.dumps({(0, 0, 0, 1, 1, 1): Path("x")}))
    with pytest.raises(DataFileError, match="refusing"):
        load_latbench(p)
    with pytest.raises(DataFileError, match="not found"):
        load_latbench(tmp_path / "absent.pickle")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({(True, 0, 0, 1, 1, 1): 0.1}, "bad entry"),  # a bool is not an op id
        ({(1.0, 0, 0, 1, 1, 1): 0.1}, "bad entry"),
        ({(5, 0, 0, 1, 1, 1): 0.1}, "bad entry"),
        ({(0, 0, 0, 1, 1, 1): "0.1"}, "invalid value '0.1'"),
        ({(0, 0, 0, 1, 1, 1): True}, "invalid value True"),
        ({(0, 0, 0, 1, 1, 1): float("nan")}, "invalid value nan"),
        ({(0, 0, 0, 1, 1, 1): -0.1}, "invalid value"),
        ({(0, 0, 0, 1, 1, 1): 1e306}, "invalid value"),  # finite in seconds, inf in ms
        ({(0, 0, 0, 1, 1, 1): np.float64(0.0)}, "invalid value"),
    ],
)
def test_latbench_entries_are_checked(tmp_path: Path, entries: dict[Any, Any], message: str) -> None:
    p = tmp_path / "dev.pickle"
    p.write_bytes(pickle.dumps(entries))
    with pytest.raises(DataFileError, match=message):
        load_latbench(p)


def test_latbench_numpy_keys_and_values_are_read_exactly(tmp_path: Path) -> None:
    p = tmp_path / "dev.pickle"
    p.write_bytes(pickle.dumps({tuple(np.int64(o) for o in A.ops): np.float32(0.5), B.ops: 2}))
    t = load_latbench(p)
    assert t.values == {A: 500.0, B: 2000.0}
    assert all(type(o) is int for c in t.cells() for o in c.ops)


def _stream_with_repeated_key(protocol: int, numpy_values: bool) -> bytes:
    """A pickled dict stream that sets cell A twice (pickle.dumps of a dict cannot write this)."""
    import io

    buf = io.BytesIO()
    p = pickle._Pickler(buf, protocol)  # type: ignore[attr-defined]
    p.fast = True  # no memo
    if protocol >= 2:
        buf.write(pickle.PROTO + bytes([protocol]))
    buf.write(pickle.EMPTY_DICT + pickle.MARK if protocol >= 1 else pickle.MARK)
    for key, value in ((A.ops, 0.001), (B.ops, 0.002), (tuple(np.int64(o) for o in A.ops), 0.003)):
        p.save(key)
        p.save(np.float64(value) if numpy_values else value)
    buf.write((pickle.SETITEMS if protocol >= 1 else pickle.DICT) + pickle.STOP)
    return buf.getvalue()


@pytest.mark.parametrize(("protocol", "numpy_values"), [(0, False), (1, False), (2, True), (3, False)])
def test_latbench_cell_set_twice_is_refused(tmp_path: Path, protocol: int, numpy_values: bool) -> None:
    data = _stream_with_repeated_key(protocol, numpy_values)
    assert len(pickle.loads(data)) == 2  # plain unpickling silently keeps the last value
    p = tmp_path / "dev.pickle"
    p.write_bytes(data)
    with pytest.raises(DataFileError, match=r"sets cell \|nor_conv_3x3~0\|.* more than once"):
        load_latbench(p)


def test_latbench_numpy_dtype_state_from_the_file_is_not_trusted(tmp_path: Path) -> None:
    """Found by the mutation property: one flag byte of the pickled dtype state (0 -> 4, NPY_ITEM_IS_POINTER)
    made numpy read each value from an address taken from the file (garbage near 7e-307 ms, or a crash)."""
    data = pickle.dumps({A.ops: np.float64(0.34), B.ops: np.float64(0.6)}, protocol=3)
    flags = data.index(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00") + 11
    p = tmp_path / "dev.pickle"
    p.write_bytes(data[:flags] + b"\x04" + data[flags + 1 :])
    with pytest.raises(DataFileError, match=r"refusing numpy dtype state \(3, '<', None, None, None, -1, -1, 4\)"):
        load_latbench(p)
    p.write_bytes(data)
    assert load_latbench(p).values == {A: 340.0, B: 600.0}


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_latbench_every_protocol_reads_the_same(tmp_path: Path, protocol: int) -> None:
    p = tmp_path / "dev.pickle"
    p.write_bytes(pickle.dumps({A.ops: np.float64(0.25), B.ops: 0.125}, protocol=protocol))
    assert load_latbench(p).values == {A: 250.0, B: 125.0}


# -- latency CSVs and tables -----------------------------------------------------------------------
def test_help_table_and_device_lookup(data_root: Path) -> None:
    need_file(data_root, HELP)
    tables = load_help(data_dir_path=data_root)
    assert {"raspi4", "pixel2", "gold_6226", "titan_rtx_256", "eyeriss", "fpga"} <= set(tables)
    assert all(len(t) == 15_625 for t in tables.values())
    assert load_device_table("raspi4", data_root).values == tables["raspi4"].values
    with pytest.raises(KeyError, match="unknown device 'nokia-3310'.*raspi4"):
        load_device_table("nokia-3310", data_root)


def test_catalog_and_cell_lookup_agree_with_the_tables(data_root: Path, nb201_table) -> None:
    need_file(data_root, HELP)
    tables = load_device_tables(data_root)
    catalog = device_catalog(data_root)
    assert [(d.name, d.source, d.cells, d.unit) for d in catalog] == [
        (name, t.source, len(t), t.unit) for name, t in tables.items()
    ]
    for index in (6111, 0):  # the best cell, and a cell that LatBench lacks or has
        cell = nb201_table.cell_at(index)
        assert device_values(cell, data_root) == {name: t.get(cell) for name, t in tables.items()}


def test_latency_csv_round_trip_is_exact(tmp_path: Path) -> None:
    t1 = LatencyTable("dev-a", "ms", {A: 1.2345678901234567, B: 2.25})
    t2 = LatencyTable("dev,b", "ms", {A: 3e-7})
    path = tmp_path / "lat.csv"
    write_latency_csv(path, [t1, t2])
    back = read_latency_csv(path)
    assert back["dev-a"].values == t1.values and back["dev,b"].values == t2.values
    assert B not in back["dev,b"]
    with pytest.raises(InputError, match="distinct"):
        write_latency_csv(path, [t1, t1])
    with pytest.raises(InputError, match="distinct"):
        write_latency_csv(path, [LatencyTable("arch_str", "ms", {A: 1.0})])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arch_str,dev\n|bad|,1.0\n", "lat.csv' line 2"),
        ("arch_str,dev\n{a},fast\n", "has 'fast'"),
        ("arch_str,dev\n{a},nan\n", "has 'nan'"),
        ("arch_str,dev\n{a},0\n", "has '0', expected a positive"),
        ("arch_str,dev\n{a},1\n{b},2\n{a},3\n", r"listed twice \(lines 2 and 4\)"),
        ("arch_str,dev,dev\n{a},1,2\n", "appear more than once"),
        ("arch_str,dev\n{a},1\n{b}\n", "line 3: 1 fields where the header has 2"),
        ("arch_str,dev\n{a},1,2\n", "3 fields"),
        ("arch_str,,dev\n{a},1,2\n", "has no name"),
        ("nb201_index,arch_str,dev\n1.5,{a},1\n", "'1.5'"),
        ("nb201_index,arch_str,dev\n1,{a},1\n1,{b},1\n", "nb201_index 1 is listed twice"),
        ("device\n1\n", "lacks the 'arch_str' column"),
    ],
)
def test_latency_csv_refuses_what_it_cannot_believe(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lat.csv"
    path.write_text(text.format(a=A.to_str(), b=B.to_str()))
    with pytest.raises(DataFileError, match=message):
        read_latency_csv(path)


def test_help_file_must_be_complete(tmp_path: Path) -> None:
    path = tmp_path / "latency/help/help_nb201_latency_ms.csv"
    path.parent.mkdir(parents=True)
    path.write_text(f"nb201_index,arch_str,dev\n0,{A.to_str()},1.5\n")
    assert read_latency_csv(path)["dev"].values == {A: 1.5}  # as a table of your own: any subset
    with pytest.raises(DataFileError, match="holds 1 of the 15,625"):
        load_help(path)
    with pytest.raises(DataFileError, match="holds 1 of the 15,625"):
        load_device_tables(tmp_path)
    with pytest.raises(DataFileError, match="holds 1 of the 15,625"):
        device_catalog(tmp_path)


def test_own_tables_folder_and_name_clashes(tmp_path: Path) -> None:
    write_latency_csv(tmp_path / "latency/tables/mine.csv", [LatencyTable("here", "ms", {A: 2.0})])
    (tmp_path / "latency/latbench").mkdir(parents=True)
    (tmp_path / "latency/latbench/there.pickle").write_bytes(pickle.dumps({B.ops: 0.004}))
    assert {n: t.values for n, t in load_device_tables(tmp_path).items()} == {"here": {A: 2.0}, "there": {B: 4.0}}
    assert [(d.name, d.source, d.cells) for d in device_catalog(tmp_path)] == [("here", "csv", 1), ("there", "latbench", 1)]
    assert device_values(A, tmp_path) == {"here": 2.0, "there": None}
    assert load_device_table("here", tmp_path).source == "csv"
    (tmp_path / "latency/latbench/here.pickle").write_bytes(pickle.dumps({B.ops: 0.004}))
    for read in (load_device_tables, device_catalog, lambda root: load_device_table("there", root)):
        with pytest.raises(DataFileError, match="device 'here' has two tables"):
            read(tmp_path)


def test_latency_table_checks_keys_and_values() -> None:
    with pytest.raises(DataFileError, match="invalid value"):
        LatencyTable("dev", "ms", {A: -1.0})
    with pytest.raises(DataFileError, match="invalid value '1.0'"):
        LatencyTable("dev", "ms", {A: "1.0"})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="keys must be NB201Cell"):
        LatencyTable("dev", "ms", {A.ops: 1.0})
    values = {A: np.float32(1.5), B: 2}
    t = LatencyTable("dev", "ms", values)
    values[A] = 99.0  # the table keeps its own copy, as plain floats
    assert t.values == {A: 1.5, B: 2.0} and all(type(v) is float for v in t.values.values())
    assert t.space.name == "nb201" and t.array([B, A]).tolist() == [2.0, 1.5]
    assert [1, 2] not in t and t.get([1, 2]) is None  # unhashable: not a candidate


class PairSpace(Space[tuple[int, int]]):
    """Pairs (a, b) of 0..3, stored in JSON as lists."""

    name = "pairs"

    def sample(self, rng: random.Random) -> tuple[int, int]:
        return rng.randrange(4), rng.randrange(4)

    def key(self, candidate: tuple[int, int]) -> str:
        return str(sorted(candidate))

    def to_json(self, candidate: tuple[int, int]) -> Any:
        return list(candidate)

    def from_json(self, data: Any) -> tuple[int, int]:
        if not (isinstance(data, list) and len(data) == 2 and all(type(x) is int and 0 <= x < 4 for x in data)):
            raise InputError(f"pair candidate must be [a, b] with a, b in 0..3, got {data!r}")
        return data[0], data[1]

    def build(self, candidate: tuple[int, int], **options: Any) -> Any:
        raise NotImplementedError


def test_latency_table_of_another_space_round_trips_through_csv(tmp_path: Path) -> None:
    space = PairSpace()
    t = LatencyTable("dev", "ms", {(0, 1): 1.5, (3, 3): 0.25}, space=space)
    assert t[(0, 1)] == 1.5 and t.cells() == [(0, 1), (3, 3)]
    with pytest.raises(KeyError, match=r"cell \[2,2\] has no ms value"):
        t[(2, 2)]
    path = tmp_path / "pairs.csv"
    t.to_csv(path)
    assert path.read_text().splitlines()[0] == "candidate,dev"
    assert read_latency_csv(path, space=space)["dev"].values == t.values
    with pytest.raises(InputError, match="not a candidate of space 'pairs'"):
        LatencyTable("dev", "ms", {(0, 9): 1.0}, space=space)
    path.write_text('candidate,dev\n"[0,1]",1\n"[0, 1]",2\n')
    with pytest.raises(DataFileError, match="listed twice"):  # one candidate, two spellings of its JSON
        read_latency_csv(path, space=space)
    path.write_text('candidate,dev\n"[0,7]",1\n')
    with pytest.raises(DataFileError, match="pairs.csv' line 2: pair candidate must be"):
        read_latency_csv(path, space=space)
    with pytest.raises(InputError, match="one space"):
        write_latency_csv(path, [t, LatencyTable("nb", "ms", {A: 1.0})])


# -- resolve_arch ----------------------------------------------------------------------------------
def test_resolve_arch(data_root: Path, nb201_table, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cell, index = resolve_arch("nb201:0", data_root)
    assert index == 0 and cell == nb201_table.cell_at(0)
    assert resolve_arch(f"  {cell.to_str()} ", data_root) == (cell, 0)
    assert resolve_arch("NB201:6111", table=nb201_table) == (nb201_table.cell_at(6111), 6111)
    for text, message in (("nb201:15625", "out of range 0..15624"), ("nb201:-1", "out of range"),
                          ("nb201:3.0", "integer INDEX"), ("nb201:1_0", "integer INDEX"), ("nb201:", "integer")):
        with pytest.raises(InputError, match=message):
            resolve_arch(text, table=nb201_table)
    monkeypatch.delenv("DEVICEFIT_DATA", raising=False)
    assert resolve_arch(cell.to_str()) == (cell, None)  # no data directory: no index
    assert resolve_arch(cell.to_str(), tmp_path) == (cell, None)  # a data directory without the NB201 table
    with pytest.raises(DataFileError, match="no data directory"):
        resolve_arch("nb201:5")
    (tmp_path / "nb201").mkdir()
    (tmp_path / NB201_CSV).write_text("nb201_index,arch_str\n0,x\n")
    with pytest.raises(DataFileError, match="NB201 table"):  # a corrupt table is not silently ignored
        resolve_arch(cell.to_str(), tmp_path)


# -- images -----------------------------------------------------------------------------------------
def test_npz_batches(data_root: Path) -> None:
    s = load_npz_images(need_file(data_root, "images/cifar10_train_aug_960.npz"))
    assert s.x.shape == (960, 32, 32, 3) and s.y.min() >= 0 and s.y.max() <= 9
    t = to_tensor(s.x[:64], "cifar10")
    assert t.shape == (64, 3, 32, 32) and t.dtype == torch.float32
    assert abs(float(t.mean())) < 0.5 and 0.5 < float(t.std()) < 1.5  # roughly standardized
    aug = random_crop_flip(s.x[:8], np.random.default_rng(0))
    assert aug.shape == (8, 32, 32, 3) and aug.dtype == np.uint8
    with pytest.raises(InputError, match="padding"):
        random_crop_flip(s.x[:2], np.random.default_rng(0), padding=-1)


def test_cifar10_tarball_and_mnist(data_root: Path) -> None:
    s = load_image_folder_tarball(need_file(data_root, "images/cifar10-jpg.tar.gz"), "test", limit_per_class=20)
    assert s.x.shape == (200, 32, 32, 3) and len(s.classes) == 10 and np.bincount(s.y).tolist() == [20] * 10
    m = load_mnist_idx(
        need_file(data_root, "images/t10k-images-idx3-ubyte.gz"),
        need_file(data_root, "images/t10k-labels-idx1-ubyte.gz"),
    )
    assert m.x.shape == (10_000, 28, 28, 1) and set(np.unique(m.y)) == set(range(10))


def test_npz_whose_member_claims_encryption_is_refused(tmp_path: Path) -> None:
    """A flipped bit can mark a zip member encrypted: ``zipfile`` then raises RuntimeError, which must become a
    DataFileError naming the file (Hypothesis found it)."""
    p = tmp_path / "x.npz"
    np.savez_compressed(p, x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 1]))
    data = bytearray(p.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first member's central directory entry; its flags at +8
    data[central + 8] |= 1  # bit 0: encrypted
    p.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="x.npz.*corrupt"):
        load_npz_images(p)


def test_corrupt_image_files(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(DataFileError, match="x.npz"):
        load_npz_images(p)
    np.savez(p, images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataFileError, match="'x' and 'y'"):
        load_npz_images(p)
    np.savez(p, x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, -1]))
    with pytest.raises(DataFileError, match="x.npz.*labels must be >= 0"):
        load_npz_images(p)
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(DataFileError, match="single array"):
        load_npz_images(tmp_path / "a.npy")
    t = tmp_path / "imgs.tar.gz"
    t.write_bytes(gzip.compress(b"not a tar"))
    with pytest.raises(DataFileError, match="corrupt"):
        load_image_folder_tarball(t)
    with pytest.raises(InputError, match="limit_per_class"):
        load_image_folder_tarball(t, limit_per_class=0)
    idx = tmp_path / "i.idx"
    idx.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(DataFileError, match="magic|values|truncated"):
        load_mnist_idx(idx, idx)


def test_mnist_labels_must_name_a_digit(tmp_path: Path) -> None:
    images, labels = tmp_path / "img", tmp_path / "lab.gz"  # gzip is told by its content, not its name
    images.write_bytes((2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 1, 1)) + b"\x07\x08")
    labels.write_bytes(gzip.compress((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x03\x09"))
    m = load_mnist_idx(images, labels)
    assert m.x.reshape(-1).tolist() == [7, 8] and m.y.tolist() == [3, 9]
    labels.write_bytes((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x03\x0a")
    with pytest.raises(DataFileError, match="label 10 out of range for 10 classes"):
        load_mnist_idx(images, labels)
