"""LatBench (BRP-NAS, arXiv 2007.08668, SamsungLabs/eagle) device files: a pickled ``{op-id tuple: seconds}``.

Read with a restricted unpickler that names nothing of numpy or anything else: plain containers and
numbers, and numpy scalars rebuilt by checked stand-ins (:class:`_DType`, :func:`_scalar`) as Python
numbers. (numpy's own ``scalar`` trusts the dtype state in the stream: one changed flag byte makes it
read memory at an address taken from the file.) Then every entry is checked: a key is a tuple of six
integer op ids in 0..4 (not bools, floats or strings), a value a real number of seconds (not a bool or a
string) that is finite and positive in milliseconds.

A cell set twice is refused: a dict cannot hold two equal keys, but a pickle stream can set one key
twice (``(0, 1, ...)`` and ``(np.int64(0), 1, ...)`` are equal keys), and unpickling would keep the last
value without a word. To see every key the stream sets at C speed, the top-level ``EMPTY_DICT`` opcode
of the usual layouts (protocol 1 to 5, as ``pickle.dump`` writes a dict) is replaced by a dict subclass
that refuses a key it already holds; any other layout (protocol 0) is unpickled a second time by the
pure-Python unpickler, which records every key it sets.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

from ..spaces.nb201 import NB201Cell
from ._cells import cell_of_ops
from .datadir import DataFileError
from .latency_table import LatencyTable

LATBENCH_DIR = "latency/latbench"
_SECONDS_TO_MS = 1000.0
_WHAT = "LatBench file"
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
#: The numeric numpy types a value may have, as struct formats (bools, complex and objects are refused).
_STRUCT_OF = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
              "u1": "B", "u2": "H", "u4": "I", "u8": "Q"}  # fmt: skip
_BYTE_ORDER = {"<": "<", ">": ">", "=": "=", "|": "<"}


class _DType:
    """Stands in for ``numpy.dtype`` while unpickling: a plain numeric type and its byte order.

    Not the real ``numpy.dtype``: its ``__setstate__`` takes flags and sizes from the stream, and a
    changed flag (e.g. ``NPY_ITEM_IS_POINTER``) makes ``numpy.core.multiarray.scalar`` read whatever
    memory the 8 value bytes point at. Only the state numpy writes for a numeric type is accepted.
    """

    __slots__ = ("code", "order", "unpack")

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if type(code) is not str or code not in _STRUCT_OF or align not in (False,) or copy not in (True,):
            raise pickle.UnpicklingError(f"refusing numpy dtype{(code, align, copy)!r:.100}: only plain numeric types")
        self.code = code
        self.order = "="
        self.unpack = struct.Struct("=" + _STRUCT_OF[code]).unpack

    def __setstate__(self, state: object) -> None:
        if not (
            type(state) is tuple
            and len(state) == 8
            and state[0] == 3
            and state[1] in _BYTE_ORDER
            and state[2:5] == (None, None, None)
            and state[5:] == (-1, -1, 0)
            and (state[1] != "|" or self.code[1] == "1")
        ):
            raise pickle.UnpicklingError(f"refusing numpy dtype state {state!r:.100}")
        self.order = state[1]
        self.unpack = struct.Struct(_BYTE_ORDER[state[1]] + _STRUCT_OF[self.code]).unpack


def _scalar(dtype: object, data: object) -> float | int:
    """``numpy.core.multiarray.scalar`` of a :class:`_DType`, read with ``struct`` (as a Python number)."""
    if not isinstance(dtype, _DType) or type(data) is not bytes:
        raise pickle.UnpicklingError(f"refusing numpy scalar of {dtype!r:.50} and {type(data).__name__}")
    try:
        return dtype.unpack(data)[0]
    except struct.error:
        raise pickle.UnpicklingError(f"numpy scalar {dtype.code}: {len(data)} bytes") from None


def _latin1(text: object, encoding: object = "utf-8") -> bytes:
    """``_codecs.encode`` as protocols 0 to 2 use it for the bytes of a numpy scalar: latin-1 only."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode of {type(text).__name__} as {encoding!r:.30}")
    return text.encode("latin1")


class _RepeatedKey(Exception):
    def __init__(self, key: Any) -> None:
        super().__init__(key)
        self.key = key


class _StrictDict(dict):
    """A dict that refuses to set a key it already holds (stands in for the stream's top-level dict)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self:
            raise _RepeatedKey(key)
        dict.__setitem__(self, key, value)


_STRICT = (__name__, "_StrictDict")
_STRICT_OPS = b"c" + f"{_STRICT[0]}\n{_STRICT[1]}\n".encode() + pickle.EMPTY_TUPLE + pickle.REDUCE


def _find_class(module: str, name: str) -> Any:
    """The only globals a LatBench stream may name, each a checked stand-in (nothing of numpy is called)."""
    if (module, name) == _STRICT:
        return _StrictDict
    if (module, name) in _NUMPY_SCALAR:
        return _scalar
    if (module, name) == ("numpy", "dtype"):
        return _DType
    if (module, name) == ("_codecs", "encode"):
        return _latin1
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy scalars allowed")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _find_class(module, name)


class _CheckingUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler, restricted alike, raising :class:`_RepeatedKey` when a dict key is set twice."""

    def find_class(self, module: str, name: str) -> Any:
        return _find_class(module, name)

    def _set(self, target: Any, items: list[Any]) -> None:
        for i in range(0, len(items) - 1, 2):
            if isinstance(target, dict) and items[i] in target:
                raise _RepeatedKey(items[i])
            target[items[i]] = items[i + 1]

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set(self.stack[-1], [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set(self.stack[-1], items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        d: dict[Any, Any] = {}
        self._set(d, items)
        self.append(d)

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.DICT[0]] = load_dict


def _with_strict_dict(data: bytes) -> bytes | None:
    """``data`` with its leading top-level EMPTY_DICT made a :class:`_StrictDict`; None for other layouts."""
    start = 2 if data[:1] == pickle.PROTO else 0
    frame = data[start : start + 1] == pickle.FRAME
    at = start + 9 if frame else start
    if data[at : at + 1] != pickle.EMPTY_DICT:
        return None
    head = bytearray(data[:at])
    if frame:
        size = int.from_bytes(data[start + 1 : start + 9], "little") + len(_STRICT_OPS) - 1
        head[start + 1 : start + 9] = size.to_bytes(8, "little")
    return bytes(head) + _STRICT_OPS + data[at + 1 :]


def _unpickle(p: Path, data: bytes) -> Any:
    strict = _with_strict_dict(data)
    try:
        raw = _SafeUnpickler(io.BytesIO(strict if strict is not None else data)).load()
        if isinstance(raw, dict) and type(raw) is not _StrictDict:
            _CheckingUnpickler(io.BytesIO(data)).load()
    except _RepeatedKey as exc:
        try:
            name = NB201Cell(exc.key).to_str()
        except Exception:
            name = repr(exc.key)[:200]
        raise DataFileError(
            f"{_WHAT} {str(p)!r} sets cell {name} more than once (unpickling would keep the last value)"
        ) from None
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataFileError(f"{_WHAT} {str(p)!r} is not a readable LatBench pickle: {exc}") from None
    return raw


def read_latbench_ms(path: str | os.PathLike[str]) -> dict[tuple[int, ...], float]:
    """The checked entries of one LatBench pickle: op tuple (plain ints) -> milliseconds."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"{_WHAT} {str(p)!r} not found") from None
    except OSError as exc:
        raise DataFileError(f"{_WHAT} {str(p)!r} cannot be read: {exc}") from None
    raw = _unpickle(p, data)
    if not isinstance(raw, dict) or not raw:
        raise DataFileError(f"{_WHAT} {str(p)!r}: expected a non-empty dict of op tuples to seconds")
    cells = cell_of_ops()
    fast = _fast_entries(raw, cells)
    if fast is not None:
        return fast
    out: dict[tuple[int, ...], float] = {}
    for key, seconds in raw.items():
        ops = _ops(key, cells)
        if ops is None:
            raise DataFileError(
                f"{_WHAT} {str(p)!r}: bad entry {key!r:.200}: {seconds!r:.100} (keys must be tuples of 6 integer "
                f"op ids in 0..4)"
            )
        ms = _milliseconds(seconds)
        if ms is None:
            raise DataFileError(
                f"{_WHAT} {str(p)!r}: cell {cells[ops].to_str()} has invalid value {seconds!r:.100} (expected a "
                f"finite positive number of seconds)"
            )
        out[ops] = ms
    return out


def _fast_entries(raw: dict[Any, Any], cells: dict[tuple[int, ...], NB201Cell]) -> dict[tuple[int, ...], float] | None:
    """The upstream layout (plain-int op tuples, float seconds) checked with C-level set operations; None
    when anything differs, for the entry-by-entry pass to find and name it."""
    import numpy as np

    keys = raw.keys()
    if not (keys <= cells.keys() and set(map(type, itertools.chain.from_iterable(keys))) == {int}):
        return None
    if not set(map(type, raw.values())) <= {float}:
        return None
    with np.errstate(over="ignore"):  # a huge value becomes inf, refused below
        ms = np.fromiter(raw.values(), dtype=np.float64, count=len(raw)) * _SECONDS_TO_MS
    if not (np.isfinite(ms) & (ms > 0)).all():
        return None
    return dict(zip(keys, ms.tolist()))  # plain-int tuples: equal to (and hashed as) the cells' op tuples


def _ops(key: object, cells: dict[tuple[int, ...], NB201Cell]) -> tuple[int, ...] | None:
    """The plain-int op tuple of a key, or None when it is not six integer op ids in 0..4."""
    import numpy as np

    if type(key) is not tuple or len(key) != 6:
        return None
    if not all(type(o) is int or isinstance(o, np.integer) for o in key):
        return None  # bools, floats, strings (a bool is an int subclass: type(True) is not int)
    cell = cells.get(key)  # numpy ints hash and compare like ints
    return None if cell is None else cell.ops


def _milliseconds(seconds: object) -> float | None:
    import numpy as np

    if isinstance(seconds, (bool, np.bool_)) or not isinstance(seconds, (int, float, np.integer, np.floating)):
        return None
    ms = float(seconds) * _SECONDS_TO_MS
    return ms if math.isfinite(ms) and ms > 0 else None


def load_latbench(path: str | os.PathLike[str], device: str | None = None) -> LatencyTable:
    """Read one LatBench pickle (``{op-id tuple: seconds}``) as a table in milliseconds."""
    p = Path(path)
    cells = cell_of_ops()
    values = {cells[ops]: ms for ops, ms in read_latbench_ms(p).items()}
    return LatencyTable(device=device or p.stem, unit="ms", values=values, source="latbench", meta={"path": str(p)})


__all__ = ["LATBENCH_DIR", "load_latbench", "read_latbench_ms"]
