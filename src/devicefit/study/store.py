"""The results store: one SQLite file that every long job writes as it goes and resumes from.

It holds

- ``evaluations``: the evaluation cache, one row per (candidate identity, estimator fingerprint), with
  status ``ok`` (a JSON value) or ``failed`` (the error text). A candidate's identity is the exact JSON of
  the candidate (:meth:`devicefit.spaces.Space.identity`); an estimator's fingerprint is a hash of every
  setting its value depends on (:meth:`devicefit.study.Estimator.fingerprint`). Any job that opens the same
  store with an estimator of the same fingerprint finds the values already there.
- ``estimators``: the settings behind each fingerprint, readable by people and reports.
- ``claims``: the settings of each job that owns the store (``claim("proxies", {...})``). A job re-run with
  other settings is refused, naming every setting that differs (new and missing keys included); the check
  and the record are one transaction, so two processes started at once cannot both be accepted.
- ``trials``: the steps of each study (candidate, objective, feasibility), for reports; a resumed study
  writes the same trials again, since it replays them.
- ``info``: the format name and version; a SQLite file without them (another program's database) is
  refused and left untouched.

Durability: every result is committed on its own (WAL journal, ``synchronous=NORMAL``): a process killed
at any moment, ``kill -9`` included, loses at most the evaluation it was computing, never a committed
one; the database stays consistent through an OS crash or power loss too (SQLite's guarantee), though
the last commits before such a crash may be rolled back and then computed again. Writers take an
exclusive lock (``flock`` on ``<store>.lock``, released by the OS when the process dies): a second process
that tries to write the same store is refused with a clear error instead of duplicating work. Readers
need no lock. Values are standard JSON (no NaN or Infinity literals).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

FORMAT = "devicefit-store"
FORMAT_VERSION = 2
OK, FAILED = "ok", "failed"
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (job TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                                   PRIMARY KEY (job, key));
CREATE TABLE IF NOT EXISTS trials (study TEXT NOT NULL, number INTEGER NOT NULL, record TEXT NOT NULL,
                                   PRIMARY KEY (study, number));
CREATE TABLE IF NOT EXISTS estimators (fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    candidate TEXT NOT NULL,
    estimator TEXT NOT NULL REFERENCES estimators (fingerprint),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    value TEXT,
    error TEXT,
    seconds REAL,
    finished_utc TEXT NOT NULL,
    PRIMARY KEY (candidate, estimator)
);
"""


class StoreError(InputError):
    """A store path that cannot be used: not a store, corrupt, read-only, locked, or made with other settings."""


class StoreLockedError(StoreError):
    """Another process is writing this store."""


def dumps(value: Any) -> str:
    """Standard JSON (no NaN/Infinity literals): a non-finite float is an error naming the value."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise InputError(f"value is not standard JSON (NaN or infinity inside): {value!r}") from exc


@dataclass(frozen=True)
class Evaluation:
    """One cached result: ``value`` when ``ok``, else ``error``."""

    candidate: str
    estimator: str
    status: str
    value: Any
    error: str | None
    seconds: float | None

    @property
    def ok(self) -> bool:
        return self.status == OK


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """The SQLite results store at ``path`` (created when absent). Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock_fd: int | None = None
        self._check_path()
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
            else:
                self._db = sqlite3.connect(self.path, timeout=60)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                with self._db:
                    self._db.executescript(_SCHEMA)
                    self._db.execute("INSERT OR IGNORE INTO info VALUES ('format', ?)", (FORMAT,))
                    self._db.execute("INSERT OR IGNORE INTO info VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self._check_format()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"results store {str(self.path)!r} cannot be opened: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {str(self.path)!r} is corrupt or not a SQLite database: {exc}") from None

    # -- opening ------------------------------------------------------------------------------------
    def _check_path(self) -> None:
        p = self.path
        if p.is_dir():
            raise StoreError(f"results store {str(p)!r} is a directory; give a file path inside it")
        if p.exists():
            with open(p, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head and head != _SQLITE_MAGIC:
                raise StoreError(f"results store {str(p)!r} exists and is not a SQLite database; not overwriting it")
            if not self.readonly and not os.access(p, os.W_OK):
                raise StoreError(f"results store {str(p)!r} is read-only; give a writable path")
            if head:
                self._check_foreign(p)
        elif self.readonly:
            raise StoreError(f"results store {str(p)!r} not found")
        else:
            parent = p.parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of results store {str(p)!r}: {exc.strerror}") from None
            if not os.access(parent, os.W_OK):
                raise StoreError(f"results store {str(p)!r}: folder {str(parent)!r} is not writable")
        if not self.readonly and p.exists() and not os.access(p.parent, os.W_OK):
            # SQLite's WAL journal lives beside the file.
            raise StoreError(f"results store {str(p)!r}: its folder is not writable (the journal is written there)")

    def _check_foreign(self, p: Path) -> None:
        """Refuse, without writing anything, a SQLite file that another program (or another format) made."""
        try:
            db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                info = dict(db.execute("SELECT key, value FROM info").fetchall()) if "info" in tables else {}
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results store {str(p)!r} is corrupt or not a SQLite database: {exc}") from None
        if not tables:
            return
        if info.get("format") != FORMAT:
            what = "an older devicefit results store (format 1)" if {"results", "meta"} <= tables else (
                f"another program's SQLite database (tables: {', '.join(sorted(tables))})")
            raise StoreError(f"{str(p)!r} is {what}, not a devicefit store; use a new file")

    def _check_format(self) -> None:
        info = dict(self._db.execute("SELECT key, value FROM info").fetchall())
        if info.get("format") != FORMAT or info.get("format_version") != str(FORMAT_VERSION):
            raise StoreError(
                f"results store {str(self.path)!r} has format {info.get('format')!r} version "
                f"{info.get('format_version')!r}; this devicefit reads {FORMAT!r} version {FORMAT_VERSION}"
            )

    # -- writer lock ----------------------------------------------------------------------------------
    @contextmanager
    def writing(self, job: str = "job") -> Iterator[Store]:
        """Hold the store's writer lock for the block; a second writer is refused with :class:`StoreLockedError`."""
        if self.readonly:
            raise StoreError(f"results store {str(self.path)!r} was opened read-only")
        if self._lock_fd is not None:  # re-entrant within one process
            yield self
            return
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {str(lock_path)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise StoreLockedError(
                f"results store {str(self.path)!r} is being written by another process ({holder or 'unknown'}); "
                "wait for it to finish or use another store"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {job}, since {_now()}".encode())
        self._lock_fd = fd
        try:
            yield self
        finally:
            self._lock_fd = None
            os.close(fd)  # closing releases the flock

    # -- job settings -------------------------------------------------------------------------------
    def claim(self, job: str, settings: dict[str, Any]) -> None:
        """Record ``settings`` as job ``job``'s, or check them against those recorded (one transaction).

        Validate the settings before claiming: a rejected run must not leave its settings behind.
        Raises :class:`StoreError` naming every key whose value differs, is new, or is missing.
        """
        encoded = {k: dumps(v) for k, v in settings.items()}
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # no other writer between the check and the record
            stored = dict(self._db.execute("SELECT key, value FROM claims WHERE job = ?", (job,)).fetchall())
            if stored:
                diffs = []
                for k in sorted(set(stored) | set(encoded)):
                    if k not in stored:
                        diffs.append(f"{k}={encoded[k]} (new; the store's run had no {k})")
                    elif k not in encoded:
                        diffs.append(f"{k} (the store's run had {k}={stored[k]}; this run has none)")
                    elif stored[k] != encoded[k]:
                        diffs.append(f"{k}={encoded[k]} (the store's run: {stored[k]})")
                if diffs:
                    raise StoreError(
                        f"results store {str(self.path)!r} belongs to a {job} run with other settings: "
                        + "; ".join(diffs) + ". Use another store or the original settings"
                    )
            else:
                self._db.executemany(
                    "INSERT INTO claims (job, key, value) VALUES (?, ?, ?)", [(job, k, v) for k, v in encoded.items()]
                )

    def claims(self, job: str) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM claims WHERE job = ?", (job,))}

    # -- estimators and evaluations -------------------------------------------------------------------
    def register_estimator(self, fingerprint: str, name: str, settings: dict[str, Any]) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO estimators (fingerprint, name, settings) VALUES (?, ?, ?)",
                (fingerprint, name, dumps(settings)),
            )

    def estimator_settings(self, fingerprint: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT settings FROM estimators WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(
        self, candidate: str, estimator: str, *, value: Any = None, error: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Commit one result now: a ``value`` (standard JSON) or, when ``error`` is given, a failure."""
        status = OK if error is None else FAILED
        text = dumps(value) if error is None else None
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO evaluations (candidate, estimator, status, value, error, seconds, finished_utc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (candidate, estimator, status, text, error, seconds, _now()),
            )

    def get(self, candidate: str, estimator: str) -> Evaluation | None:
        row = self._db.execute(
            "SELECT candidate, estimator, status, value, error, seconds FROM evaluations "
            "WHERE candidate = ? AND estimator = ?", (candidate, estimator),
        ).fetchone()
        return None if row is None else _evaluation(row)

    def statuses(self, estimator: str, candidates: Sequence[str] | None = None) -> dict[str, str]:
        """``{candidate: status}`` of the stored evaluations of one estimator (of ``candidates`` only, if given:
        looked up by key, so a job asking for a few candidates does not read a large store)."""
        sql = "SELECT candidate, status FROM evaluations WHERE estimator = ?"
        if candidates is None:
            return dict(self._db.execute(sql, (estimator,)))
        out: dict[str, str] = {}
        for part in _chunks(candidates):
            out.update(self._db.execute(f"{sql} AND candidate IN ({','.join('?' * len(part))})", (estimator, *part)))
        return out

    def evaluations(
        self, estimator: str | None = None, candidates: Sequence[str] | None = None
    ) -> Iterator[Evaluation]:
        """Stored evaluations (of one estimator, or all), in the order they finished; with ``candidates`` (and an
        estimator), just those candidates' evaluations, in the order given."""
        sql = "SELECT candidate, estimator, status, value, error, seconds FROM evaluations"
        if candidates is not None:
            if estimator is None:
                raise InputError("evaluations of given candidates need the estimator too")
            for part in _chunks(candidates):
                rows = {row[0]: row for row in self._db.execute(
                    f"{sql} WHERE estimator = ? AND candidate IN ({','.join('?' * len(part))})", (estimator, *part))}
                for c in part:
                    if c in rows:
                        yield _evaluation(rows[c])
            return
        rows = self._db.execute(sql + " WHERE estimator = ? ORDER BY rowid", (estimator,)) if estimator else (
            self._db.execute(sql + " ORDER BY rowid"))
        for row in rows:
            yield _evaluation(row)

    def delete(self, candidate: str, estimator: str) -> bool:
        """Forget one result (e.g. one computed by a version with a bug); True if it was there."""
        with self._db:
            cur = self._db.execute(
                "DELETE FROM evaluations WHERE candidate = ? AND estimator = ?", (candidate, estimator)
            )
            return cur.rowcount > 0

    def count(self, estimator: str | None = None, status: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM evaluations WHERE 1=1", []
        if estimator is not None:
            sql, args = sql + " AND estimator = ?", [*args, estimator]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return int(self._db.execute(sql, args).fetchone()[0])

    def put_trials(self, study: str, records: list[dict[str, Any]]) -> None:
        """Replace the trials of ``study`` by ``records`` (each a JSON object with a ``number``)."""
        with self._db:
            self._db.execute("DELETE FROM trials WHERE study = ?", (study,))
            self._db.executemany("INSERT INTO trials (study, number, record) VALUES (?, ?, ?)",
                                 [(study, int(r["number"]), dumps(r)) for r in records])

    def trials(self, study: str) -> list[dict[str, Any]]:
        return [json.loads(r) for (r,) in self._db.execute(
            "SELECT record FROM trials WHERE study = ? ORDER BY number", (study,))]

    def studies(self) -> list[str]:
        return [s for (s,) in self._db.execute("SELECT DISTINCT study FROM trials ORDER BY study")]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """Pieces of ``items`` small enough for one SQL ``IN (...)`` (SQLite's variable limit)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _evaluation(row: tuple) -> Evaluation:
    candidate, estimator, status, value, error, seconds = row
    return Evaluation(candidate, estimator, status, None if value is None else json.loads(value), error, seconds)
