"""The evaluation loop itself: overhead per evaluation, executor throughput, resume after kill -9, CLI start-up.

1. **Overhead** (``--overhead``): :func:`devicefit.study.evaluate_all` with the NB201 table estimator
   (``BenchmarkAccuracy``) on N cells into a fresh store (cache miss: look-up + commit), then again (cache
   hit), beside the bare table look-up and a bare ``Store.put``: milliseconds per evaluation.
2. **Throughput** (``--throughput``): the zero-cost proxies of the same 200 NB201 cells with the inline
   executor, a process pool of 2 and a local Ray of 2 CPUs, each into a fresh store: cells per second and
   the ratio to inline. On a 2-core machine the ideal is 2x.
3. **Resume after kill -9** (``--kill``): a proxies job on a process pool, killed with SIGKILL at a random
   moment and run again, K times: *repeated* = evaluations computed again although they had been
   committed before the kill, *lost* = evaluations the driver had reported committed (``on_outcome``) that
   are not in the store after the kill. Goal 0 and 0.
4. **CLI start-up** (``--startup``): CPU time (user + sys) of ``devicefit --help`` and ``devicefit space
   nb201``, this tree against the commit given by ``--baseline`` (checked out in a temporary worktree).

    DEVICEFIT_DATA=/work/shared/data python benchmarks/evaluation_loop.py --all
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_results

from devicefit.proxies import sample_nb201_cells
from devicefit.spaces import get_space
from devicefit.study import (
    BenchmarkAccuracy,
    ProcessExecutor,
    Store,
    ZeroCostProxies,
    evaluate_all,
    make_executor,
)

NAME = "evaluation_loop"
ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_PROXIES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "nwot", "synflow")
KILL_PROXIES = ("grad_norm", "snip", "synflow")


def overhead(n: int, tmp: Path) -> dict[str, Any]:
    space = get_space("nb201")
    cells = sample_nb201_cells(n, 0)
    est = BenchmarkAccuracy("c10_val_200ep")
    t = time.perf_counter()
    for c in cells:
        est.evaluate(space, c)
    bare = (time.perf_counter() - t) / n
    t = time.perf_counter()
    miss = evaluate_all(space, cells, [est], tmp / "overhead.sqlite", progress=False)
    t_miss = (time.perf_counter() - t) / n
    t = time.perf_counter()
    hit = evaluate_all(space, cells, [est], tmp / "overhead.sqlite", progress=False)
    t_hit = (time.perf_counter() - t) / n
    assert miss.computed == n and hit.reused == n
    with Store(tmp / "writes.sqlite") as store:
        store.register_estimator("e", "e", {})
        t = time.perf_counter()
        for i in range(n):
            store.put(str(i), "e", value={"value": float(i)}, seconds=0.0)
        t_put = (time.perf_counter() - t) / n
    return {"cells": n, "bare_lookup_ms": 1e3 * bare, "miss_ms": 1e3 * t_miss, "hit_ms": 1e3 * t_hit,
            "store_put_ms": 1e3 * t_put, "loop_overhead_miss_ms": 1e3 * (t_miss - bare)}


def throughput(n: int, tmp: Path, executors: list[str]) -> dict[str, Any]:
    space = get_space("nb201")
    cells = sample_nb201_cells(n, 0)
    est = ZeroCostProxies(THROUGHPUT_PROXIES, seed=0)
    out: dict[str, Any] = {"cells": n, "proxies": list(THROUGHPUT_PROXIES), "runs": {}}
    values: dict[str, dict] = {}
    import torch

    torch.set_num_threads(1)  # inline is one worker of one thread, as each pool or Ray worker is
    for name in executors:
        ex = make_executor(name, workers=2)
        t0, c0 = time.perf_counter(), _cpu_children_and_self()
        res = evaluate_all(space, cells, [est], tmp / f"throughput-{name}.sqlite", executor=ex,
                           description=f"{name}")
        wall = time.perf_counter() - t0
        values[name] = res.values("proxies")
        out["runs"][name] = {"wall_s": wall, "cells_per_s": n / wall, "driver_cpu_s": _cpu_children_and_self() - c0,
                             "load_avg_1min_after": os.getloadavg()[0]}
        print(f"{name}: {wall:.1f} s, {n / wall:.2f} cells/s", flush=True)
    base = out["runs"].get("inline", {}).get("cells_per_s")
    for r in out["runs"].values():
        r["speedup_vs_inline"] = r["cells_per_s"] / base if base else None
    first = next(iter(values.values()))
    out["identical_scores_across_executors"] = all(
        {k: v["scores"] for k, v in vals.items()} == {k: v["scores"] for k, v in first.items()}
        for vals in values.values())
    return out


def ceiling(n: int, tmp: Path) -> dict[str, Any]:
    """What this machine gives two workers: two independent processes, each scoring half of the cells inline
    with one thread into its own store, started together; against one process scoring all of them."""
    def run(parts: list[tuple[int, int]]) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, __file__, "--half-child", str(tmp / f"ceil-{len(parts)}-{a}.sqlite"),
                                   str(n), str(a), str(b)]) for a, b in parts]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("a ceiling child failed")
        return time.perf_counter() - t0

    one = run([(0, n)])
    two = run([(0, n // 2), (n // 2, n)])
    return {"cells": n, "one_process_s": one, "two_processes_s": two, "ceiling_speedup": one / two}


def half_child(store: str, n: int, start: int, end: int) -> None:
    import torch

    torch.set_num_threads(1)
    cells = sample_nb201_cells(n, 0)[start:end]
    evaluate_all(get_space("nb201"), cells, [ZeroCostProxies(THROUGHPUT_PROXIES, seed=0)], store, progress=False)


def _cpu_children_and_self() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class LoggedProxies(ZeroCostProxies):
    """Proxies that append each computed cell to ``log`` (to count re-computations across a kill)."""

    log: str = ""

    def evaluate(self, space: Any, candidate: Any) -> dict[str, Any]:
        value = super().evaluate(space, candidate)
        with open(self.log, "a") as f:
            f.write(space.identity(candidate) + "\n")
        return value

    def settings(self) -> dict[str, Any]:
        return super().settings()  # the log file is not a setting of the value


def child(store: str, log: str, committed: str, cells: int) -> None:
    """The killable job: proxies of ``cells`` cells on a process pool of 2, reporting each committed result."""
    est = LoggedProxies(KILL_PROXIES, batch_size=16, log=log)

    def ack(o: Any) -> None:
        with open(committed, "a") as f:
            f.write(o.candidate + "\n")

    evaluate_all(get_space("nb201"), sample_nb201_cells(cells, 1), [est], store, executor=ProcessExecutor(2),
                 progress=False, on_outcome=ack)


def kill_trials(trials: int, cells: int, tmp: Path, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = []
    for k in range(trials):
        d = tmp / f"kill{k}"
        d.mkdir()
        store, log, committed = d / "s.sqlite", d / "computed.txt", d / "committed.txt"
        cmd = [sys.executable, __file__, "--child", str(store), str(log), str(committed), str(cells)]
        # A random moment while results are being written (a kill during the ~10 s of worker start-up, or
        # after the end, tests nothing): after a uniformly drawn number of committed results, plus a random
        # fraction of a second so that the kill lands anywhere in the commit cycle.
        after = rng.randint(1, cells - 1)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while proc.poll() is None and not (committed.exists() and len(committed.read_text().split()) >= after):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        delay = time.perf_counter() - t0
        finished_before_kill = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        acked = set(committed.read_text().split()) if committed.exists() else set()
        in_store = set()
        if store.exists():
            with Store(store, readonly=True) as s:
                in_store = {e.candidate for e in s.evaluations()}
        lost = len(acked - in_store)
        time.sleep(0.5)  # orphaned workers, if any, would go on computing and logging
        lines_at_kill = len(log.read_text().splitlines()) if log.exists() else 0
        t0 = time.perf_counter()
        rerun = subprocess.run(cmd, capture_output=True, text=True)
        rerun_s = time.perf_counter() - t0
        recomputed = log.read_text().splitlines()[lines_at_kill:]
        with Store(store, readonly=True) as s:
            final = [e for e in s.evaluations()]
        rows.append({"trial": k, "kill_after_s": delay, "finished_before_kill": finished_before_kill,
                     "stored_at_kill": len(in_store), "acknowledged_at_kill": len(acked), "lost": lost,
                     "repeated": len(set(recomputed) & in_store), "recomputed": len(recomputed),
                     "final_evaluations": len(final), "final_distinct": len({e.candidate for e in final}),
                     "final_ok": sum(e.ok for e in final), "rerun_rc": rerun.returncode, "rerun_s": rerun_s})
        print(rows[-1], flush=True)
    return {"cells": cells, "proxies": list(KILL_PROXIES), "trials": rows,
            "total_lost": sum(r["lost"] for r in rows), "total_repeated": sum(r["repeated"] for r in rows),
            "all_complete": all(r["final_distinct"] == cells and r["rerun_rc"] == 0 for r in rows)}


def _cpu_of(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    """Median user+sys CPU seconds of ``cmd`` (run ``repeats`` times)."""
    samples = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples)


def startup(baseline: str, repeats: int) -> dict[str, Any]:
    commands = {"devicefit --help": ["--help"], "devicefit space nb201": ["space", "nb201"],
                "devicefit info nb201:6111": ["info", "nb201:6111"], "devicefit devices": ["devices"]}
    out: dict[str, Any] = {"baseline": baseline, "repeats": repeats, "cpu_s": {}}
    tmp = Path(tempfile.mkdtemp(prefix="devicefit-base-"))
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "tree"), baseline],
                       check=True, capture_output=True)
        trees = {"before": tmp / "tree" / "src", "after": ROOT / "src"}
        for label, cmd in commands.items():
            out["cpu_s"][label] = {}
            for which, src in trees.items():
                env = {**os.environ, "PYTHONPATH": str(src)}
                code = f"import sys; sys.argv = ['devicefit', *{cmd[0:]!r}]; from devicefit.cli import main; main()"
                out["cpu_s"][label][which] = _cpu_of([sys.executable, "-c", code], env, repeats)
            print(label, out["cpu_s"][label], flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "tree")],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def report(data: dict[str, Any]) -> None:
    body = []
    if "overhead" in data:
        o = data["overhead"]
        body += ["## Loop overhead per evaluation (NB201 table estimator)", "",
                 f"{o['cells']} cells; `evaluate_all` inline into a fresh store (miss: look-up + commit of each "
                 "result), then again (hit: everything from the store), against the bare look-up and a bare "
                 "`Store.put` (one commit, WAL, synchronous=NORMAL). Goal: loop overhead under 1 ms.", "",
                 markdown_table(["bare look-up ms", "miss ms", "hit ms", "Store.put ms", "loop overhead (miss) ms"],
                                [[o["bare_lookup_ms"], o["miss_ms"], o["hit_ms"], o["store_put_ms"],
                                  o["loop_overhead_miss_ms"]]]), ""]
    if "throughput" in data:
        t = data["throughput"]
        body += ["## Executor throughput: zero-cost proxies of NB201 cells", "",
                 f"{t['cells']} cells, proxies {', '.join(t['proxies'])} (batch 64, CIFAR-10 npz images), each "
                 "executor into a fresh store; the process pool and Ray have 2 workers of 1 torch thread. Goal: "
                 "pool and Ray within 10 % of 2x inline. Scores identical across executors: "
                 f"{t['identical_scores_across_executors']}.", "",
                 markdown_table(["executor", "wall s", "cells/s", "x inline", "driver+children CPU s",
                                 "load (1 min) after"],
                                [[k, r["wall_s"], r["cells_per_s"], r["speedup_vs_inline"], r["driver_cpu_s"],
                                  r["load_avg_1min_after"]] for k, r in t["runs"].items()]), ""]
    if "ceiling" in data:
        c = data["ceiling"]
        body += ["### What two cores give two independent processes", "",
                 f"The same job on {c['cells']} cells as one inline process, then as two independent inline processes "
                 f"(half the cells each, own stores), started together: {c['one_process_s']:.1f} s against "
                 f"{c['two_processes_s']:.1f} s, **{c['ceiling_speedup']:.2f}x**. That is the most any executor can "
                 "reach on this machine; compare the pool and Ray with it.", ""]
    if "kill" in data:
        k = data["kill"]
        body += ["## Resume after kill -9", "",
                 f"{len(k['trials'])} trials: a job scoring {k['cells']} cells ({', '.join(k['proxies'])}) on a "
                 "process pool of 2 is killed with SIGKILL at a random moment while it writes results (after a "
                 "uniformly drawn number of committed results plus 0-0.5 s), then run again. repeated = "
                 "evaluations computed again after they had been committed; lost = evaluations reported committed "
                 f"but missing after the kill. **Total repeated {k['total_repeated']}, lost {k['total_lost']}**; "
                 f"every rerun complete with each cell once: {k['all_complete']}.", "",
                 markdown_table(["trial", "kill after s", "stored at kill", "recomputed (in flight)", "repeated",
                                 "lost", "final distinct", "rerun s"],
                                [[r["trial"], r["kill_after_s"], r["stored_at_kill"], r["recomputed"], r["repeated"],
                                  r["lost"], r["final_distinct"], r["rerun_s"]] for r in k["trials"]]), ""]
    if "startup" in data:
        s = data["startup"]
        body += ["## CLI start-up (CPU seconds, user + sys, median)", "",
                 f"`before` = commit {s['baseline']}, `after` = this tree; same Python and venv; {s['repeats']} runs "
                 "each. Goal: `--help` and `space nb201` under 1 s; `info` and `devices` under 2 s.", "",
                 markdown_table(["command", "before s", "after s"],
                                [[c, v["before"], v["after"]] for c, v in s["cpu_s"].items()]), ""]
    write_results(NAME, "The evaluation loop: overhead, executors, kill -9, start-up", "\n".join(body), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overhead", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--startup", action="store_true")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--cells", type=int, default=200, help="cells of the throughput run")
    ap.add_argument("--executors", default="inline,process,ray")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--kill-cells", type=int, default=150)
    ap.add_argument("--baseline", default="fb290f5", help="commit to compare CLI start-up against")
    ap.add_argument("--ceiling", action="store_true", help="two independent inline processes (the hardware's 2x)")
    ap.add_argument("--half-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=4, metavar=("STORE", "LOG", "COMMITTED", "CELLS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child[:3], int(args.child[3]))
        return
    if args.half_child:
        half_child(args.half_child[0], *(int(v) for v in args.half_child[1:]))
        return
    import json

    from common import RESULTS_DIR

    path = RESULTS_DIR / f"{NAME}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    data.pop("machine", None)
    with tempfile.TemporaryDirectory() as tmp:
        stamp = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_avg_1min_before": os.getloadavg()[0]}
        if args.overhead or args.all:
            data["overhead"] = {**stamp, **overhead(2000, Path(tmp))}
        if args.throughput or args.all:
            data["throughput"] = {**stamp, **throughput(args.cells, Path(tmp), args.executors.split(","))}
        if args.ceiling or args.all:
            data["ceiling"] = {**stamp, **ceiling(args.cells // 2, Path(tmp))}
        if args.kill or args.all:
            data["kill"] = {**stamp, **kill_trials(args.trials, args.kill_cells, Path(tmp), seed=0)}
        if args.startup or args.all:
            data["startup"] = {**stamp, **startup(args.baseline, repeats=5)}
    report(data)


if __name__ == "__main__":
    main()
