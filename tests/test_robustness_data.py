"""Property tests of every data parser and loader: a file is read as exactly what it says, or refused.

Each test generates small files in two ways. Structured: every field is drawn either as a valid value
(whose meaning the test knows) or as a known-bad form, so the expected outcome is computed beside the
file: a table equal to the known values, or :class:`DataFileError` / :class:`InputError`. Mutated: a valid
file cut short, with a byte changed, dropped or inserted; then the loader may refuse it or read it, and
what it reads must agree with an independent reading of the same bytes. Never another exception type.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from devicefit.data import (
    DataFileError,
    load_image_folder_tarball,
    load_latbench,
    load_mnist_idx,
    load_nb201_table,
    load_npz_images,
    read_latency_csv,
)
from devicefit.data.nb201_table import is_accuracy_column
from devicefit.spaces import NB201Cell

#: Examples per property (DEVICEFIT_FUZZ_EXAMPLES=2000 for a deeper search than the suite's default).
EXAMPLES = int(os.environ.get("DEVICEFIT_FUZZ_EXAMPLES", "80"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BAD = object()  # the expected value of a field that must be refused
POOL = [NB201Cell.from_index(i) for i in range(0, 15_625, 625)]  # 25 cells: repeats happen, not always


@dataclass(frozen=True)
class Field:
    """One CSV field: its text and what it means (a value, None for missing, or BAD)."""

    text: str
    value: Any


def _is_bad(*fields: Field) -> bool:
    return any(f.value is BAD for f in fields)


# -- field strategies -----------------------------------------------------------------------------------
def _mostly(valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 25) -> st.SearchStrategy[Any]:
    """``valid``, and ``bad`` about once in ``one_in`` draws (so that files are read as well as refused).

    ``bad`` is a middle value of the integer drawn: Hypothesis draws the ends of a range more often, and
    shrinks towards 0, so a failing example shrinks to valid fields except the one that matters."""
    return st.integers(0, one_in - 1).flatmap(lambda k: bad if k == one_in // 2 else valid)


def _float_text(lo: float, hi: float) -> st.SearchStrategy[Field]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False).map(lambda v: Field(repr(v), v))


_NOT_A_NUMBER = st.sampled_from(["nan", "NaN", "inf", "-inf", "abc", "1_0", "1,5", "0x10", "True", "١"]).map(
    lambda t: Field(t, BAD)
)
_MISSING = st.sampled_from(["", " "]).map(lambda t: Field(t, None))

ARCH = _mostly(
    st.one_of(
        st.sampled_from(POOL).map(lambda c: Field(c.to_str(), c)),
        st.sampled_from(POOL).map(lambda c: Field(f" {c.to_str()} ", c)),  # surrounding blanks: the same cell
    ),
    st.sampled_from(["", "|bogus~0|", "|nor_conv_3x3~0|+|none~1|none~0|+|none~0|none~1|none~2|", "nb201:3"]).map(
        lambda t: Field(t, BAD)
    ),
)
INDEX = _mostly(
    st.one_of(
        st.integers(0, 15_624).map(lambda k: Field(str(k), k)),
        st.integers(0, 15_624).map(lambda k: Field(f"{k}.0", k)),  # an integral decimal is the integer
    ),
    st.sampled_from(["3.5", "-1", "", "x", "15625", "1e3", "nan"]).map(lambda t: Field(t, BAD)),
)
ACCURACY = _mostly(
    st.one_of(_float_text(0, 100), _MISSING),
    st.one_of(_NOT_A_NUMBER, st.sampled_from(["150", "-0.5", "100.0001"]).map(lambda t: Field(t, BAD))),
)
SCORE = _mostly(st.one_of(_float_text(-1e6, 1e6), _MISSING, st.just(Field("-1e8", None))), _NOT_A_NUMBER)  # -1e8: failed
LATENCY = _mostly(
    st.one_of(_float_text(1e-6, 1e4).filter(lambda f: f.value > 0), _MISSING),
    st.one_of(_NOT_A_NUMBER, st.sampled_from(["0", "-1.5", "-0.0"]).map(lambda t: Field(t, BAD))),
)


def _write_csv(path: Path, header: list[str], rows: list[list[str]], newline: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerows([header, *rows])
    data = buf.getvalue().encode()
    path.write_bytes(data)
    return data


def _repeats(values: list[Any]) -> bool:
    return len(set(values)) != len(values)


# -- NB201 table CSV ----------------------------------------------------------------------------------
@st.composite
def nb201_files(draw: st.DrawFn) -> tuple[list[str], list[list[Field]]]:
    header = ["nb201_index", "arch_str", "c10_test_200ep", "zen_c10"]
    header = draw(_mostly(st.just(header), st.sampled_from([header[:1] + header[2:], [*header, "zen_c10"]]), 10))
    rows = draw(st.lists(st.tuples(INDEX, ARCH, ACCURACY, SCORE), min_size=0, max_size=6))
    return header, [list(r) for r in rows]


@SETTINGS
@given(spec=nb201_files(), newline=st.sampled_from(["\n", "\r\n"]))
def test_nb201_table_is_read_exactly_or_refused(tmp_path: Path, spec: tuple[list[str], list[list[Field]]],
                                                 newline: str) -> None:
    header, rows = spec
    path = tmp_path / "nb201.csv"
    _write_csv(path, header, [[f.text for f in r] for r in rows], newline)
    refused = (
        header != ["nb201_index", "arch_str", "c10_test_200ep", "zen_c10"]
        or not rows
        or any(_is_bad(*r) for r in rows)
        or _repeats([r[0].value for r in rows])
        or _repeats([r[1].value for r in rows])
    )
    event("refused" if refused else "read")
    if refused:
        with pytest.raises(DataFileError, match="nb201.csv"):
            load_nb201_table(path, complete=False)
        return
    table = load_nb201_table(path, complete=False)
    assert list(table.cells) == [r[1].value for r in rows]
    assert table.nb201_index.tolist() == [r[0].value for r in rows]
    for name, j in (("c10_test_200ep", 2), ("zen_c10", 3)):
        assert [table.value(r[1].value, name) for r in rows] == [r[j].value for r in rows]
    with pytest.raises(DataFileError, match="of the 15,625"):
        load_nb201_table(path)  # never the complete official table


def _mutations() -> st.SearchStrategy[tuple[str, int, int]]:
    return st.tuples(st.sampled_from(["cut", "drop", "insert", "flip", "dup-line"]), st.integers(0, 10**6),
                     st.integers(0, 255))


def _mutate(data: bytes, how: tuple[str, int, int]) -> bytes:
    kind, pos, byte = how
    if not data:
        return data
    i = pos % len(data)
    if kind == "cut":
        return data[:i]
    if kind == "drop":
        return data[:i] + data[i + 1 :]
    if kind == "insert":
        return data[:i] + bytes([byte]) + data[i:]
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (byte % 8))]) + data[i + 1 :]
    lines = data.splitlines(keepends=True)
    k = pos % len(lines)
    return b"".join([*lines[: k + 1], lines[k], *lines[k + 1 :]])


def _independent_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    """The file as the csv module reads it (blank lines dropped): what the loader must agree with."""
    rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True) if any(x.strip() for x in r)]
    return rows[0], rows[1:]


def _number(text: str) -> float:
    return math.nan if not text.strip() else float(text)


@SETTINGS
@given(
    rows=st.lists(st.tuples(st.integers(0, 15_624), st.sampled_from(POOL), _float_text(0, 100), _float_text(-9, 9)),
                  min_size=1, max_size=5, unique_by=(lambda r: r[0], lambda r: r[1])),
    how=_mutations(),
)
def test_mutated_nb201_table_is_refused_or_agrees_with_its_bytes(tmp_path: Path, rows: list[Any],
                                                                 how: tuple[str, int, int]) -> None:
    path = tmp_path / "nb201.csv"
    data = _write_csv(path, ["nb201_index", "arch_str", "c10_test_200ep", "zen_c10"],
                      [[str(k), c.to_str(), a.text, z.text] for k, c, a, z in rows], "\n")
    path.write_bytes(_mutate(data, how))
    try:
        table = load_nb201_table(path, complete=False)
    except DataFileError as exc:
        assert "nb201.csv" in str(exc)
        event("refused")
        return
    event("read")
    header, body = _independent_rows(path.read_bytes())
    i, a = header.index("nb201_index"), header.index("arch_str")
    assert [c.to_str() for c in table.cells] == [NB201Cell.from_str(r[a]).to_str() for r in body]
    assert table.nb201_index.tolist() == [int(float(r[i])) for r in body]
    for r, cell in zip(body, table.cells):
        assert float(r[i]) == int(float(r[i]))  # no fractional index was read as an integer
        for j, name in enumerate(header):
            if name in ("nb201_index", "arch_str"):
                continue
            value = table.value(cell, name)
            if value is None:
                assert not r[j].strip() or (name.startswith("zen_") and _number(r[j]) <= -1e8)
            else:
                assert value == _number(r[j])
                assert not is_accuracy_column(name) or 0 <= value <= 100


# -- latency CSV (HELP layout) ------------------------------------------------------------------------
@st.composite
def latency_files(draw: st.DrawFn) -> tuple[list[str], list[list[Field]]]:
    names = _mostly(st.sampled_from(["dev", "raspi4", "d,quoted", 'd"q']), st.sampled_from(["arch_str", ""]), 15)
    devices = draw(st.lists(names, min_size=0, max_size=3))
    with_index = draw(st.booleans())
    header = (["nb201_index"] if with_index else []) + ["arch_str", *devices]
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(INDEX)] if with_index else []
        row += [draw(ARCH), *(draw(LATENCY) for _ in devices)]
        rows.append(row)
    return header, rows


@SETTINGS
@given(spec=latency_files(), newline=st.sampled_from(["\n", "\r\n"]))
def test_latency_csv_is_read_exactly_or_refused(tmp_path: Path, spec: tuple[list[str], list[list[Field]]],
                                                newline: str) -> None:
    header, rows = spec
    path = tmp_path / "lat.csv"
    _write_csv(path, header, [[f.text for f in r] for r in rows], newline)
    with_index = header[0] == "nb201_index"
    devices = header[2 if with_index else 1 :]
    cells = [r[1 if with_index else 0].value for r in rows]
    refused = (
        not devices
        or _repeats(header)
        or "" in devices
        or any(_is_bad(*r) for r in rows)
        or _repeats(cells)
        or (with_index and _repeats([r[0].value for r in rows]))
    )
    event("refused" if refused else "read")
    if refused:
        with pytest.raises(DataFileError, match="lat.csv"):
            read_latency_csv(path)
        return
    tables = read_latency_csv(path)
    assert list(tables) == devices
    for j, name in enumerate(devices, start=len(header) - len(devices)):
        expected = {cell: r[j].value for cell, r in zip(cells, rows) if r[j].value is not None}
        assert tables[name].values == expected


@SETTINGS
@given(
    rows=st.lists(st.tuples(st.sampled_from(POOL), _float_text(1e-3, 1e3), _float_text(1e-3, 1e3)),
                  min_size=1, max_size=5, unique_by=lambda r: r[0]),
    how=_mutations(),
)
def test_mutated_latency_csv_is_refused_or_agrees_with_its_bytes(tmp_path: Path, rows: list[Any],
                                                                 how: tuple[str, int, int]) -> None:
    path = tmp_path / "lat.csv"
    data = _write_csv(path, ["arch_str", "dev_a", "dev_b"], [[c.to_str(), a.text, b.text] for c, a, b in rows], "\n")
    path.write_bytes(_mutate(data, how))
    try:
        tables = read_latency_csv(path)
    except DataFileError as exc:
        assert "lat.csv" in str(exc)
        event("refused")
        return
    event("read")
    header, body = _independent_rows(path.read_bytes())
    assert header[0] == "arch_str" and list(tables) == header[1:]
    assert all(len(r) == len(header) for r in body)
    for j, name in enumerate(header[1:], start=1):
        expected = {NB201Cell.from_str(r[0]): _number(r[j]) for r in body if r[j].strip()}
        assert tables[name].values == expected and all(v > 0 for v in expected.values())


# -- LatBench pickles ----------------------------------------------------------------------------------
VALID_OPS = st.tuples(*[st.integers(0, 4)] * 6)
KEY = _mostly(
    st.one_of(
        VALID_OPS.map(lambda k: (k, k)),
        VALID_OPS.map(lambda k: (tuple(np.int64(o) for o in k), k)),
        VALID_OPS.map(lambda k: (tuple(np.uint8(o) for o in k), k)),
    ),
    st.one_of(
        VALID_OPS.map(lambda k: (True, *k[1:])),
        VALID_OPS.map(lambda k: (float(k[0]), *k[1:])),
        VALID_OPS.map(lambda k: (5, *k[1:])),
        VALID_OPS.map(lambda k: (-1, *k[1:])),
        VALID_OPS.map(lambda k: k[:5]),
        VALID_OPS.map(lambda k: (*k, 0)),
        VALID_OPS.map(lambda k: list(k).__repr__()),
        VALID_OPS.map(lambda k: (np.bool_(True), *k[1:])),
    ).map(lambda k: (k, BAD)),
)
SECONDS = _mostly(
    st.one_of(
        st.floats(1e-9, 1e3).map(lambda v: (v, v * 1000.0)),
        st.floats(1e-6, 1e3).map(lambda v: (np.float64(v), float(np.float64(v)) * 1000.0)),
        st.floats(0.0010000000474974513, 1e3, width=32).map(lambda v: (np.float32(v), float(np.float32(v)) * 1000.0)),
        st.integers(1, 100).map(lambda v: (v, v * 1000.0)),
    ),
    st.sampled_from([0.0, -1e-3, math.nan, math.inf, 1e306, True, "0.001", None, np.float64(-1.0), [0.001]]).map(
        lambda v: (v, BAD)
    ),
)


def _pickle_pairs(pairs: list[tuple[Any, Any]], protocol: int) -> bytes:
    """A dict stream that sets ``pairs`` in order, repeats included (``pickle.dumps`` of a dict cannot)."""
    buf = io.BytesIO()
    p = pickle._Pickler(buf, protocol)  # type: ignore[attr-defined]
    p.fast = True  # no memo, so that every key and value is written out
    if protocol >= 2:
        buf.write(pickle.PROTO + bytes([protocol]))
    if protocol >= 4:
        p.framer.start_framing()
    p.write(pickle.EMPTY_DICT + pickle.MARK if protocol >= 1 else pickle.MARK)
    for key, value in pairs:
        p.save(key)
        p.save(value)
    p.write((pickle.SETITEMS if protocol >= 1 else pickle.DICT) + pickle.STOP)
    if protocol >= 4:
        p.framer.end_framing()
    return buf.getvalue()


@SETTINGS
@given(
    entries=st.lists(st.tuples(KEY, SECONDS), min_size=0, max_size=6),
    protocol=st.integers(0, 5),
    as_dict=_mostly(st.just(True), st.just(False), 3),
)
def test_latbench_pickle_is_read_exactly_or_refused(tmp_path: Path, entries: list[Any], protocol: int,
                                                    as_dict: bool) -> None:
    pairs = [(key, seconds) for (key, _), (seconds, _) in entries]
    path = tmp_path / "dev.pickle"
    if as_dict:  # what pickle.dump writes: equal keys collapse to the last value
        data = dict(pairs)
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        meaning: dict[Any, tuple[Any, Any]] = {}
        for (key, ops), (_, ms) in entries:  # the dict keeps the first key object and the last value
            meaning[key] = (meaning[key][0] if key in meaning else ops, ms)
        expected_pairs = list(meaning.values())
        repeated = False
    else:
        path.write_bytes(_pickle_pairs(pairs, protocol))
        expected_pairs = [(ops, ms) for (_, ops), (_, ms) in entries]
        keys = [k for k, _ in pairs]
        repeated = any(keys[i] == keys[j] for i in range(len(keys)) for j in range(i))
    bad = any(ops is BAD or ms is BAD or not (math.isfinite(ms) and ms > 0) for ops, ms in expected_pairs)
    event(f"refused (repeated key: {repeated})" if not expected_pairs or bad or repeated else "read")
    if not expected_pairs or bad or repeated:
        with pytest.raises(DataFileError, match="dev.pickle"):
            load_latbench(path)
        return
    table = load_latbench(path)
    assert table.values == {NB201Cell(ops): ms for ops, ms in expected_pairs}
    assert all(type(o) is int for c in table.cells() for o in c.ops)


@SETTINGS
@given(entries=st.dictionaries(VALID_OPS, st.floats(1e-6, 1.0), min_size=1, max_size=5), protocol=st.integers(0, 5),
       numpy_values=st.booleans(), how=_mutations())
def test_mutated_latbench_pickle_is_refused_or_plausible(tmp_path: Path, entries: dict[Any, float], protocol: int,
                                                         numpy_values: bool, how: tuple[str, int, int]) -> None:
    raw = {k: np.float64(v) if numpy_values else v for k, v in entries.items()}
    path = tmp_path / "dev.pickle"
    path.write_bytes(_mutate(pickle.dumps(raw, protocol=protocol), how))
    try:
        table = load_latbench(path)
    except DataFileError as exc:
        assert "dev.pickle" in str(exc)
        event("refused")
        return
    event("read")
    again = pickle.loads(path.read_bytes())  # a mutation the loader accepted is a pickle of such a dict
    assert table.values == {NB201Cell(tuple(int(o) for o in k)): float(v) * 1000.0 for k, v in again.items()}


# -- npz images ---------------------------------------------------------------------------------------
@st.composite
def npz_contents(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 3))
    x_dtype = draw(_mostly(st.just(np.uint8), st.sampled_from([np.int16, np.float32]), 6))
    x_shape = draw(_mostly(st.sampled_from([(n, 2, 2, 3), (n, 3, 1, 1)]),
                           st.sampled_from([(n, 2, 2), (n, 2, 2, 2), (n, 0, 2, 3), (n, 1, 1, 3, 1)]), 6))
    x = draw(hnp.arrays(x_dtype, x_shape, elements=st.integers(0, 255)))
    y_dtype = draw(_mostly(st.sampled_from([np.int64, np.int8, np.uint64, np.uint8]), st.sampled_from([np.float32, np.bool_]), 6))
    y_shape = draw(_mostly(st.just((n,)), st.sampled_from([(n, 1), (n + 1,)]), 6))
    y_elements = st.booleans() if y_dtype is np.bool_ else st.floats(0, 12, width=32) if y_dtype is np.float32 \
        else _mostly(st.integers(0, 12), st.just(-3), 8) if y_dtype in (np.int64, np.int8) else st.integers(0, 12)
    y = draw(hnp.arrays(y_dtype, y_shape, elements=y_elements))
    if y_dtype is np.uint64 and draw(_mostly(st.just(False), st.just(True), 4)) and y.size:
        y[0] = np.uint64(2**63 + 5)  # does not fit int64
    keys = draw(_mostly(st.just(("x", "y")), st.sampled_from([("x",), ("images", "y")]), 6))
    return dict(zip(keys, (x, y)))


def _npz_expected(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    if set(arrays) != {"x", "y"}:
        return None
    x, y = arrays["x"], arrays["y"]
    ok = (
        x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] >= 1 and x.shape[2] >= 1
        and np.issubdtype(y.dtype, np.integer) and y.shape == (x.shape[0],)
        and (y.size == 0 or (int(y.min()) >= 0 and int(y.max()) <= np.iinfo(np.int64).max))
    )
    return (x, y.astype(np.int64)) if ok else None


@SETTINGS
@given(arrays=npz_contents(), compressed=st.booleans(), how=st.one_of(st.none(), _mutations()))
def test_npz_images_are_read_exactly_or_refused(tmp_path: Path, arrays: dict[str, np.ndarray], compressed: bool,
                                                how: tuple[str, int, int] | None) -> None:
    path = tmp_path / "imgs.npz"
    with path.open("wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    if how is not None:
        path.write_bytes(_mutate(path.read_bytes(), how))
    expected = _npz_expected(arrays)
    try:
        s = load_npz_images(path)
    except DataFileError as exc:
        assert "imgs.npz" in str(exc)
        assert how is not None or expected is None, exc
        event("refused")
        return
    event("read" if how is None else "read, mutated")
    assert expected is not None
    assert s.x.dtype == np.uint8 and np.array_equal(s.x, expected[0])
    assert s.y.dtype == np.int64 and np.array_equal(s.y, expected[1])


# -- MNIST IDX -----------------------------------------------------------------------------------------
@st.composite
def idx_pair(draw: st.DrawFn) -> tuple[bytes, bytes, Any]:
    n, rows, cols = draw(st.integers(0, 3)), draw(_mostly(st.integers(1, 3), st.just(0), 8)), draw(st.integers(0, 3))
    pixels = draw(st.binary(min_size=n * rows * cols, max_size=n * rows * cols))
    labels = draw(st.lists(_mostly(st.integers(0, 9), st.integers(10, 255), 10), min_size=n, max_size=n))
    n_labels = draw(_mostly(st.just(n), st.just(n + 1), 8))
    labels = labels + [0] * (n_labels - n)
    img_magic = draw(_mostly(st.just(2051), st.sampled_from([2049, 2052]), 8))
    lab_magic = draw(_mostly(st.just(2049), st.just(2051), 8))
    extra_pixels = draw(_mostly(st.just(b""), st.sampled_from([b"\x00", b"x" * 10]), 6))
    cut = draw(_mostly(st.just(0), st.sampled_from([1, 5]), 6))
    img_dims = (n, rows, cols)[: img_magic & 0xFF]
    images = img_magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in img_dims) + pixels + extra_pixels
    images = images[: len(images) - cut]
    labs = lab_magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n_labels,)[: lab_magic & 0xFF])
    labs += bytes(labels)
    ok = (
        img_magic == 2051 and lab_magic == 2049 and len(extra_pixels) == cut and n_labels == n and rows >= 1
        and cols >= 1 and all(v <= 9 for v in labels)
    )
    expected = (np.frombuffer(pixels, np.uint8).reshape(n, rows, cols, 1), np.array(labels, np.int64)) if ok else None
    return images, labs, expected


@SETTINGS
@given(files=idx_pair(), gz_images=st.booleans(), gz_labels=st.booleans())
def test_mnist_idx_is_read_exactly_or_refused(tmp_path: Path, files: tuple[bytes, bytes, Any], gz_images: bool,
                                              gz_labels: bool) -> None:
    images, labels, expected = files
    ip, lp = tmp_path / "images-idx3", tmp_path / "labels-idx1.gz"  # names do not tell gzip: the content does
    ip.write_bytes(gzip.compress(images) if gz_images else images)
    lp.write_bytes(gzip.compress(labels) if gz_labels else labels)
    event("refused" if expected is None else "read")
    if expected is None:
        with pytest.raises(DataFileError, match="idx"):
            load_mnist_idx(ip, lp)
        return
    m = load_mnist_idx(ip, lp)
    assert np.array_equal(m.x, expected[0]) and np.array_equal(m.y, expected[1])


@SETTINGS
@given(how=_mutations())
def test_mutated_gzip_idx_is_refused_or_exact(tmp_path: Path, how: tuple[str, int, int]) -> None:
    pixels = bytes(range(8))
    images = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 2, 2)) + pixels
    labels = (2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x01\x02"
    ip, lp = tmp_path / "i.gz", tmp_path / "l"
    ip.write_bytes(_mutate(gzip.compress(images, mtime=0), how))
    lp.write_bytes(labels)
    try:
        m = load_mnist_idx(ip, lp)
    except DataFileError:
        event("refused")
        return
    event("read")
    assert m.x.reshape(-1).tobytes() == pixels and m.y.tolist() == [1, 2]  # gzip's CRC: no silent change


# -- image-folder tarballs -----------------------------------------------------------------------------
def _png(size: int, value: int, mode: str) -> bytes:
    from PIL import Image

    img = Image.new(mode, (size, size), value if mode == "L" else (value, 255 - value, 7))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _rgb(size: int, value: int, mode: str) -> np.ndarray:
    pixel = (value, value, value) if mode == "L" else (value, 255 - value, 7)
    return np.broadcast_to(np.array(pixel, np.uint8), (size, size, 3))


@st.composite
def tar_members(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """(path, kind, payload): kind 'image' (size, value, mode), 'corrupt', 'text' or 'dir'."""
    members = []
    for _ in range(draw(st.integers(0, 6))):
        path = draw(_mostly(
            st.sampled_from(["train/a/{}.png", "train/b/{}.png", "test/a/{}.png", "test/b/{}.png", "./train/b/{}.PNG",
                             "train/a/{}.txt", "other/a/{}.png"]),
            st.sampled_from(["train/{}.png", "train/a/deep/{}.png", "test/{}.png"]), 12))
        path = path.format(draw(st.integers(0, 20)))
        kind = draw(_mostly(st.sampled_from(["image", "image", "image", "dir"]), st.just("corrupt"), 12))
        size = draw(_mostly(st.just(2), st.just(3), 12))
        payload = (size, draw(st.integers(0, 255)), draw(st.sampled_from(["RGB", "L"])))
        members.append((path, kind, payload))
    return members


def _tar_expected(members: list[tuple[str, str, Any]], split: str, limit: int | None) -> Any:
    """What the loader must return (x, y, classes) or None when it must refuse: the rules of its docstring."""
    seen: set[str] = set()
    images: dict[str, list[np.ndarray]] = {}
    for path, kind, payload in members:
        if kind == "dir":
            continue
        name = os.path.normpath(path)
        if name in seen:
            return None
        seen.add(name)
        parts = Path(name).parts
        if split not in parts or not name.lower().endswith(".png"):
            continue
        parts = parts[parts.index(split) :]
        if len(parts) != 3:
            return None
        bucket = images.setdefault(parts[1], [])
        if limit is not None and len(bucket) >= limit:
            continue
        if kind == "corrupt":
            return None
        bucket.append(_rgb(*payload))
    if not any(images.values()) or len({a.shape for v in images.values() for a in v}) != 1:
        return None
    classes = tuple(sorted(images))
    x = np.stack([a for c in classes for a in images[c]])
    y = np.array([i for i, c in enumerate(classes) for _ in images[c]], np.int64)
    return x, y, classes


def _tar_bytes(members: list[tuple[str, str, Any]], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for path, kind, payload in members:
            info = tarfile.TarInfo(path)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            data = _png(*payload) if kind == "image" else b"\x89PNG\r\n\x1a\n not really"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=tar_members(), mode=st.sampled_from(["w", "w:gz"]), split=st.sampled_from(["train", "test"]),
       limit=st.sampled_from([None, None, 1, 2]), how=st.one_of(st.none(), st.none(), _mutations()))
def test_image_tarball_is_read_exactly_or_refused(tmp_path: Path, members: list[Any], mode: str, split: str,
                                                  limit: int | None, how: tuple[str, int, int] | None) -> None:
    path = tmp_path / "imgs.tar"
    data = _tar_bytes(members, mode)
    path.write_bytes(data if how is None else _mutate(data, how))
    expected = _tar_expected(members, split, limit)
    try:
        s = load_image_folder_tarball(path, split, limit_per_class=limit)
    except DataFileError as exc:
        assert "imgs.tar" in str(exc)
        assert how is not None or expected is None, exc
        event("refused")
        return
    event("read" if how is None else "read, mutated")
    assert expected is not None  # a mutation the loader accepts changed nothing the archive says
    assert np.array_equal(s.x, expected[0]) and np.array_equal(s.y, expected[1]) and s.classes == expected[2]


def test_image_tarball_cut_at_a_member_boundary_is_refused(tmp_path: Path) -> None:
    members = [(f"train/a/{i}.png", "image", (2, 9, "RGB")) for i in range(3)]
    data = _tar_bytes(members, "w")
    first_two = 2 * (512 + 512)  # header block + one data block per tiny PNG
    path = tmp_path / "cut.tar"
    path.write_bytes(data[:first_two])
    with tarfile.open(path) as tar:
        assert len(tar.getmembers()) == 2  # tarfile reads it as a shorter archive without a word
    with pytest.raises(DataFileError, match="cut short"):
        load_image_folder_tarball(path)
    path.write_bytes(data)
    assert len(load_image_folder_tarball(path)) == 3

