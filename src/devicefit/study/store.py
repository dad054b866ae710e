"""The results store: every evaluation is written to SQLite as it finishes, so a killed job resumes.

One table, ``results(key TEXT PRIMARY KEY, value TEXT)``, where ``value`` is a JSON object. Keys are
whatever identifies a finished unit of work (an arch string, ``"<device>/<predictor>/<n>/<seed>"``, ...).
A job asks ``key in store`` before computing and ``store.put(key, record)`` after; nothing finished is
computed twice. Safe to open from several processes (SQLite locking, WAL journal).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError


class ResultStore:
    def __init__(self, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> None:
        """Open (or create) the store at ``path``. ``meta`` (the job's settings) is recorded on first
        use; reopening with different settings raises, so a resumed run cannot mix incompatible results.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"results store {str(self.path)!r} is not a devicefit SQLite store: {exc}") from exc
        if meta is not None:
            self._check_meta(meta)

    def _check_meta(self, meta: dict[str, Any]) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for k, v in meta.items():
            encoded = json.dumps(v, sort_keys=True)
            if k in stored and stored[k] != encoded:
                raise InputError(
                    f"results store {str(self.path)!r} was made with {k}={stored[k]}, not {encoded}; "
                    "use another output file or the original settings"
                )
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, sort_keys=True)) for k, v in meta.items()],
            )

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM results WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write one finished result now (committed before returning)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", (key, json.dumps(record, allow_nan=True))
            )

    def delete(self, key: str) -> bool:
        """Forget one result (e.g. one computed by a version with a bug); True if it was there."""
        with self._db:
            return self._db.execute("DELETE FROM results WHERE key = ?", (key,)).rowcount > 0

    def keys(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT key FROM results ORDER BY rowid")]

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, value in self._db.execute("SELECT key, value FROM results ORDER BY rowid"):
            yield key, json.loads(value)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
