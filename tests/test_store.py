from __future__ import annotations

from pathlib import Path

from devicefit.study import Store


def test_results_survive_a_reopen_in_finish_order(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with Store(path) as store:
        store.register_estimator("fp", "proxies", {"seed": 0})
        store.put("a", "fp", value={"score": 1.5}, seconds=0.1)
        store.put("b", "fp", error="nan loss")
    with Store(path) as store:
        assert store.count() == 2 and store.count(status="failed") == 1
        assert store.get("a", "fp").value == {"score": 1.5} and store.get("c", "fp") is None
        b = store.get("b", "fp")
        assert not b.ok and b.error == "nan loss" and b.value is None
        assert [e.candidate for e in store.evaluations("fp")] == ["a", "b"]
        assert store.statuses("fp") == {"a": "ok", "b": "failed"}
        assert store.delete("b", "fp") and not store.delete("b", "fp")
        assert store.estimator_settings("fp") == {"seed": 0}
    with Store(path, readonly=True) as store:
        assert [e.candidate for e in store.evaluations()] == ["a"]


def test_lookups_of_given_candidates_read_only_those_in_the_order_asked(tmp_path: Path) -> None:
    import pytest

    from devicefit.errors import InputError

    with Store(tmp_path / "run.sqlite") as store:
        store.register_estimator("fp", "square", {})
        store.register_estimator("other", "cube", {})
        for i in range(1200):  # more than one SQL chunk
            store.put(str(i), "fp", value=i * i, error="odd" if i == 7 else None)
        store.put("5", "other", value=125)
        asked = ["1100", "5", "missing", "7", "3"]
        assert [(e.candidate, e.value) for e in store.evaluations("fp", asked)] == [
            ("1100", 1100 * 1100), ("5", 25), ("7", None), ("3", 9)]
        assert store.statuses("fp", asked) == {"1100": "ok", "5": "ok", "7": "failed", "3": "ok"}
        every = [str(i) for i in range(1199, -1, -1)]
        assert [e.candidate for e in store.evaluations("fp", every)] == every
        assert store.statuses("other", every) == {"5": "ok"}
        with pytest.raises(InputError, match="need the estimator"):
            list(store.evaluations(None, asked))
