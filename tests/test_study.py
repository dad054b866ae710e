"""The evaluation loop: cache, failures, executors, durability under SIGKILL, and the store's refusals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from devicefit.errors import InputError
from devicefit.study import InlineExecutor, ProcessExecutor, Store, StoreError, StoreLockedError, evaluate_all

from .toy_study import IntSpace, Pid, Square

ROOT = Path(__file__).resolve().parents[1]


def test_cache_is_reused_and_failures_retried_only_on_request(tmp_path: Path) -> None:
    space, log = IntSpace(), tmp_path / "log.txt"
    est = Square(log=str(log), fail_odd=True)
    first = evaluate_all(space, [1, 2, 3, 2], [est], tmp_path / "s.sqlite", progress=False)
    assert first.candidates == ["1", "2", "3"] and first.computed == 3  # the duplicate 2 is evaluated once
    assert first.values("square") == {"2": {"value": 4}}
    assert first.failures("square") == {"1": "1 is odd", "3": "3 is odd"}
    again = evaluate_all(space, [1, 2, 3, 4], [est], tmp_path / "s.sqlite", progress=False)
    assert (again.computed, again.reused, again.skipped_failed) == (1, 1, 2)
    retried = evaluate_all(space, [1, 2, 3, 4], [est], tmp_path / "s.sqlite", progress=False, retry_failed=True)
    assert (retried.computed, retried.reused) == (2, 2)
    assert sorted(int(line.split()[0]) for line in log.read_text().splitlines()) == [1, 1, 2, 3, 3, 4]


def test_other_settings_are_another_cache_entry(tmp_path: Path) -> None:
    space = IntSpace()
    a = evaluate_all(space, [1, 2], [Square(fail_odd=True)], tmp_path / "s.sqlite", progress=False)
    b = evaluate_all(space, [1, 2], [Square(fail_odd=False)], tmp_path / "s.sqlite", progress=False)
    assert a.fingerprints != b.fingerprints and b.computed == 2 and b.values("square")["1"] == {"value": 1}
    c = evaluate_all(IntSpace(size=10), [1], [Square(fail_odd=False)], tmp_path / "s.sqlite", progress=False)
    assert c.computed == 1  # the space's settings are part of the fingerprint


def test_process_pool_gives_what_inline_gives_and_runs_elsewhere(tmp_path: Path) -> None:
    space = IntSpace()
    inline = evaluate_all(space, range(12), [Square(), Pid()], tmp_path / "a.sqlite", progress=False)
    pool = evaluate_all(space, range(12), [Square(), Pid()], tmp_path / "b.sqlite", progress=False,
                        executor=ProcessExecutor(2))
    assert pool.values("square") == inline.values("square")
    pids = {v["pid"] for v in pool.values("pid").values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {v["pid"] for v in inline.values("pid").values()} == {os.getpid()}


def test_a_pool_session_keeps_its_workers_across_calls_and_stops_them_after(tmp_path: Path) -> None:
    pool = ProcessExecutor(2)
    with pool:
        first = evaluate_all(IntSpace(), range(6), [Pid()], tmp_path / "a.sqlite", executor=pool, progress=False)
        procs = list(pool._pool[2])
        second = evaluate_all(IntSpace(), range(6, 12), [Pid(), Square()], tmp_path / "a.sqlite", executor=pool,
                              progress=False)
        assert pool._pool is not None and list(pool._pool[2]) == procs  # the same processes served both calls
    pids = {v["pid"] for res in (first, second) for v in res.values("pid").values()}
    assert pids <= {p.pid for p in procs} and os.getpid() not in pids
    assert second.values("square") == {str(i): {"value": i * i} for i in range(6, 12)}
    assert pool._pool is None and not any(p.is_alive() for p in procs)  # stopped at the end of the session


@pytest.mark.slow
def test_ray_executor_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from devicefit.study import RayExecutor

    res = evaluate_all(IntSpace(), range(6), [Square(), Pid()], tmp_path / "r.sqlite", progress=False,
                       executor=RayExecutor(workers=2))
    assert res.values("square") == {str(i): {"value": i * i} for i in range(6)}
    assert os.getpid() not in {v["pid"] for v in res.values("pid").values()}
    with Store(tmp_path / "r.sqlite") as store:  # the driver wrote everything
        assert store.count(status="ok") == 12


_KILLABLE = """
import sys
sys.path.insert(0, {root!r})
from devicefit.study import ProcessExecutor, InlineExecutor, evaluate_all
from tests.toy_study import IntSpace, Square
executor = ProcessExecutor(2) if {workers} > 1 else InlineExecutor()
def committed(o):
    with open({committed!r}, "a") as f:
        f.write(f"{{o.candidate}}\\n")
evaluate_all(IntSpace(), range(40), [Square(log={log!r}, delay_s=0.03)], {store!r}, progress=False,
             executor=executor, on_outcome=committed)
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_rerun_evaluates_each_candidate_exactly_once(tmp_path: Path, workers: int) -> None:
    store, log, committed = tmp_path / "k.sqlite", tmp_path / "computed.txt", tmp_path / "committed.txt"
    code = _KILLABLE.format(root=str(ROOT), workers=workers, store=str(store), log=str(log), committed=str(committed))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=workers == 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not committed.exists() or len(committed.read_text().split()) < 8):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(store, readonly=True) as s:
        before = {e.candidate for e in s.evaluations()}
    acknowledged = set(committed.read_text().split())
    assert acknowledged <= before  # nothing reported as committed was lost
    assert 8 <= len(before) < 40
    time.sleep(0.3)  # orphaned pool workers (if any) would go on logging
    computed_at_kill = log.read_text().split("\n")
    rerun = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with Store(store, readonly=True) as s:
        evals = list(s.evaluations())
    assert sorted(int(e.candidate) for e in evals) == list(range(40)) and all(e.ok for e in evals)
    after = log.read_text().split("\n")[len(computed_at_kill) - 1:]
    recomputed = {line.split()[0] for line in after if line}
    assert not (recomputed & before)  # no stored result was computed again
    assert recomputed == {str(i) for i in range(40)} - before


def test_store_claims_are_checked_with_every_difference_named(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        s.claim("proxies", {"seed": 0, "dataset": "cifar10"})
        s.claim("proxies", {"seed": 0, "dataset": "cifar10"})  # same settings: fine
        s.claim("search", {"seed": 5})  # another job shares the store
        with pytest.raises(StoreError) as e:
            s.claim("proxies", {"seed": 1, "batch": 8})
        msg = str(e.value)
        assert "seed=1 (the store's run: 0)" in msg and "batch=8 (new" in msg and "dataset (the store's run had" in msg
        assert s.claims("proxies") == {"seed": 0, "dataset": "cifar10"}


def test_a_second_writer_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as a, Store(tmp_path / "s.sqlite") as b, a.writing("first job"):
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}, first job"):
            evaluate_all(IntSpace(), [1], [Square()], b, progress=False)
    assert evaluate_all(IntSpace(), [1], [Square()], tmp_path / "s.sqlite", progress=False).computed == 1


def test_bad_store_paths_are_refused_and_left_untouched(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store(text)
    assert text.read_text() == "my notes\n"
    foreign = tmp_path / "other.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    digest = hashlib.sha256(foreign.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="another program's SQLite database"):
        Store(foreign)
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == digest
    corrupt = tmp_path / "corrupt.sqlite"
    Store(corrupt).close()
    data = bytearray(corrupt.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    corrupt.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        Store(corrupt)
    ro = tmp_path / "ro"
    ro.mkdir()
    Store(ro / "s.sqlite").close()
    with read_only(ro / "s.sqlite", ro):
        with pytest.raises(StoreError, match="read-only"):
            Store(ro / "s.sqlite")
        with pytest.raises(StoreError, match="not writable"):
            Store(ro / "new.sqlite")


@contextmanager
def read_only(*paths: Path):
    """Make ``paths`` read-only (chmod; as root, whom chmod does not stop, the immutable flag)."""
    for p in paths:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    immutable = []
    try:
        if os.access(paths[0], os.W_OK):
            for p in paths:
                if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                    pytest.skip("cannot make a file read-only for this user (root without chattr)")
                immutable.append(p)
        yield
    finally:
        for p in immutable:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        for p in paths:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


def test_values_are_standard_json(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as s:
        s.register_estimator("f", "x", {})
        with pytest.raises(InputError, match="NaN or infinity"):
            s.put("1", "f", value={"v": float("nan")})
        s.put("1", "f", value={"v": 1.5})
        raw = sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT value FROM evaluations").fetchone()[0]
        assert json.loads(raw) == {"v": 1.5}


def test_bad_job_input_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unique"):
        evaluate_all(IntSpace(), [1], [Square(), Square()], tmp_path / "s.sqlite", progress=False)
    with pytest.raises(InputError, match="at least one estimator"):
        evaluate_all(IntSpace(), [1], [], tmp_path / "s.sqlite", progress=False)
    with pytest.raises(InputError, match="workers"):
        ProcessExecutor(0)
    assert isinstance(InlineExecutor().describe(), dict)
