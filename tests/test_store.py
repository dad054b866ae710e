from __future__ import annotations

from pathlib import Path

import pytest

from devicefit.study import ResultStore


def test_results_survive_a_reopen_and_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with ResultStore(path, meta={"seed": 0, "proxies": ["snip"]}) as store:
        store.put("a", {"score": 1.5})
        store.put("b", {"score": float("nan"), "error": "nan loss"})
    with ResultStore(path, meta={"seed": 0}) as store:
        assert len(store) == 2 and "a" in store and "c" not in store
        assert store.get("a") == {"score": 1.5}
        assert store.keys() == ["a", "b"]
        assert store.delete("b") and not store.delete("b")
        assert store.keys() == ["a"]
    with pytest.raises(ValueError, match="seed=0"):
        ResultStore(path, meta={"seed": 1})


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not.sqlite"
    path.write_text("plain text, not a database" * 100)
    with pytest.raises(ValueError, match="not a devicefit SQLite store"):
        ResultStore(path)
