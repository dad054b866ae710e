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
