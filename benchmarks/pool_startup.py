"""Parallel work, start-up and idle: the time from constructing a pool to
its first result, and the CPU an idle pool's workers use."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from time import perf_counter_ns

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Result,
    Rounds,
    error_text,
    fmt_ratio,
    fmt_time,
    stop_loky,
    table,
)
from pool_contenders import (
    TARGET_STARTUP_MS,
    WORKERS,
    Config,
    inc,
    target_row,
    versions_line,
)

import ndshm

# ------------------------------------------------------------------ (e) start-up


STARTUP_ROWS = [
    ("mp", "`multiprocessing.Pool(2)` (fork) + `apply(inc, (1,))`"),
    ("mp_spawn", "reference: `multiprocessing.get_context('spawn').Pool(2)` + `apply`"),
    ("ppe", "`ProcessPoolExecutor(2)` (fork) + `submit(inc, 1).result()`"),
    ("mpire", "`mpire.WorkerPool(n_jobs=2)` (fork) + `apply(inc, (1,))`"),
    ("joblib", "`joblib.Parallel(n_jobs=2)([delayed(inc)(1)])` (loky executor not yet running)"),
    ("ndshm", "`ndshm.Pool(workers=2)` (default start method) + `submit(inc, 1).result()`"),
    ("ndshm_fork", "`ndshm.Pool(workers=2, start_method='fork')` + `submit(inc, 1).result()`"),
    (
        "ndshm_cold",
        "reference: the same as the first `ndshm.Pool` of a new program (default start method; "
        "timed inside a fresh `python -c`, after `import ndshm`)",
    ),
    (
        "ndshm_small",
        "the second `ndshm.Pool` of that small program (default start method: the server runs, "
        "and the main module has nothing to re-import)",
    ),
]
STARTUP_TARGETS = [
    ("ndshm", "default start method, this harness as main"),
    ("ndshm_small", "default start method, a small program"),
    ("ndshm_fork", "fork"),
]

# The first pool of a program, timed in a fresh interpreter (prints ns).
_COLD_STARTUP = """
import time
import ndshm

if __name__ == "__main__":
    times = []
    for _ in range(2):
        t0 = time.perf_counter_ns()
        p = ndshm.Pool(workers=WORKERS)
        r = p.submit(abs, -2).result()
        times.append(time.perf_counter_ns() - t0)
        p.shutdown(wait=True)
        assert r == 2
    print(times[0], times[1], p.start_method)
"""


def _forkserver_note() -> str:
    """Whether forkserver workers re-run the main module on this Python."""
    import inspect
    from multiprocessing import forkserver, spawn

    fs = inspect.getsource(forkserver.ForkServer.ensure_running)
    prep = inspect.getsource(spawn.get_preparation_data)
    if "'main_path'" in fs and "d['main_path']" not in prep and 'd["main_path"]' not in prep:
        return (
            f"On this Python ({sys.version.split()[0]}) the fork server cannot preload `__main__` "
            "(CPython gh-126631: `forkserver.ensure_running` looks for a `main_path` key that "
            "`spawn.get_preparation_data` never sets; fixed upstream for 3.13 and later), so the "
            "workers of a plain forkserver context re-run the main module's imports when they "
            "start. ndshm hands the main module's path to the server itself when its first pool "
            'starts the server (docs/ENGINE.md, "Start methods"), so its workers do not.'
        )
    return ""


def bench_startup(cfg: Config, log: Callable[[str], None]) -> Result:
    def run_mp(method: str | None = None) -> int:
        ctx = mp.get_context(method)
        t0 = perf_counter_ns()
        pool = ctx.Pool(WORKERS)
        try:
            r = pool.apply(inc, (1,))
            dt = perf_counter_ns() - t0
        finally:
            pool.terminate()
            pool.join()
        assert r == 2
        return dt

    def run_ppe() -> int:
        t0 = perf_counter_ns()
        ex = concurrent.futures.ProcessPoolExecutor(WORKERS)
        try:
            r = ex.submit(inc, 1).result()
            dt = perf_counter_ns() - t0
        finally:
            ex.shutdown(wait=True)
        assert r == 2
        return dt

    def run_mpire() -> int:
        from mpire import WorkerPool

        t0 = perf_counter_ns()
        p = WorkerPool(n_jobs=WORKERS)
        try:
            r = p.apply(inc, (1,))
            dt = perf_counter_ns() - t0
        finally:
            p.terminate()
        assert r == 2
        return dt

    def run_joblib() -> int:
        from joblib import Parallel, delayed

        stop_loky()
        try:
            t0 = perf_counter_ns()
            r = Parallel(n_jobs=WORKERS)([delayed(inc)(1)])
            dt = perf_counter_ns() - t0
        finally:
            stop_loky()
        assert r == [2]
        return dt

    def run_ndshm(method: str | None = None) -> int:
        t0 = perf_counter_ns()
        p = ndshm.Pool(workers=WORKERS, start_method=method)
        try:
            r = p.submit(inc, 1).result()
            dt = perf_counter_ns() - t0
        finally:
            p.shutdown(wait=True)
        assert r == 2
        return dt

    fns: dict[str, Callable[[], int]] = {
        "mp": run_mp,
        "mp_spawn": lambda: run_mp("spawn"),
        "ppe": run_ppe,
        "mpire": run_mpire,
        "joblib": run_joblib,
    }
    cold_method: list[str] = []
    second: list[int] = []

    def run_ndshm_cold() -> int:
        import subprocess

        code = _COLD_STARTUP.replace("WORKERS", str(WORKERS))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
        cold_method[:] = out[2:3]
        second.append(int(out[1]))
        return int(out[0])

    def run_ndshm_small() -> int:
        # Timed by the "cold" run of the same round, which runs first.
        if not second:
            run_ndshm_cold()
        return second.pop()

    fns["ndshm"] = run_ndshm
    fns["ndshm_fork"] = lambda: run_ndshm("fork")
    fns["ndshm_cold"] = run_ndshm_cold
    fns["ndshm_small"] = run_ndshm_small
    rounds = Rounds([k for k, _ in STARTUP_ROWS], seed=55)
    for k, f in fns.items():  # warm-up (imports, page cache)
        try:
            f()
        except Exception as e:
            rounds.errors[k] = error_text(e)
    rounds.run(fns, cfg.startup_rounds, log, "startup")
    base = rounds.med("mp")
    rows = []
    for k, label in STARTUP_ROWS:
        s = rounds.samples[k]
        if k in rounds.errors or not s.n:
            rows.append((label, rounds.cell(k, str), "", "", ""))
            continue
        rows.append((label, fmt_time(s.median), fmt_time(s.min), s.n, fmt_ratio(s.median / base)))
    targets = []
    for k, how in STARTUP_TARGETS:
        nd = rounds.samples[k]
        what = f"ndshm start-up to first result ({how}) ≤ {TARGET_STARTUP_MS:g} ms"
        v = nd.median if nd.n else None
        targets.append(
            target_row(rounds, k, what, v, fmt_time, v is not None and v <= TARGET_STARTUP_MS * 1e6)
        )
    default_method = ndshm.startmethod.default_start_method()
    main_mod = getattr(sys.modules.get("__main__"), "__file__", None)
    main_name = Path(main_mod).name if main_mod else "(none)"
    body = f"""
Time from constructing a pool of {WORKERS} workers to holding the result of
one trivial task (`inc(1)`); shutting the pool down afterwards is not
timed. joblib reuses one loky executor across calls, so it is shut down
before each timing (what the first `Parallel` call of a program pays).
Spawned workers (loky, the spawn reference) re-import the parent's main
module: here `{main_name}`, whose imports they pay for. ndshm's default
start method here is `{default_method}`: its server process is started by
the first pool of a program (the "first pool of a new program" row,
{cold_method[0] if cold_method else "?"} there) and reused by the later ones, as in the
other ndshm rows (the untimed first run started it). {_forkserver_note()}
{cfg.startup_rounds} rounds, contenders shuffled in each, after one untimed run of each.
{rounds.load}

{table(("contender", "median", "min", "n", "x mp.Pool (fork)"), rows)}

Targets:

{table(("target", "measured (median)", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw()
    return Result("(e) Pool start-up to first result", body, raw)


# ------------------------------------------------------------------ (f) idle pool


IDLE_ROWS = [
    ("ndshm", "`ndshm.Pool(workers=2)` (default start method)"),
    ("ndshm_fork", "`ndshm.Pool(workers=2, start_method='fork')`"),
    ("mp", "reference: `multiprocessing.Pool(2)` (fork)"),
    ("ppe", "reference: `ProcessPoolExecutor(2)` (fork)"),
]
TARGET_IDLE_MS = 1.0  # ms of CPU per second, all workers together: "~0 CPU"
_HZ = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, int, int]:
    """(utime + stime in clock ticks, ns on CPU, context switches) of a
    process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    ns = 0
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            ns += int(f.read().split()[0])
        with suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return ticks, ns, switches


def _watch_idle(pids: list[int], window_s: float) -> dict[str, float]:
    """CPU used by `pids` and by this process's other threads while this
    thread sleeps `window_s` seconds."""
    me = os.getpid()
    before = [_proc_cpu(p) for p in pids]
    me0 = _proc_cpu(me)  # the parent's window holds only this thread's sleep
    t0 = time.monotonic()
    time.sleep(window_s)
    wall = time.monotonic() - t0
    me1 = _proc_cpu(me)
    after = [_proc_cpu(p) for p in pids]
    ticks = sum(a[0] - b[0] for a, b in zip(after, before))
    ns = sum(a[1] - b[1] for a, b in zip(after, before))
    sw = sum(a[2] - b[2] for a, b in zip(after, before))
    return {
        "stat_ms_per_s": ticks / _HZ * 1e3 / wall,
        "sched_ms_per_s": ns / 1e6 / wall,
        "wakeups_per_s": sw / wall,
        "parent_ms_per_s": (me1[1] - me0[1]) / 1e6 / wall,
    }


def bench_idle(cfg: Config, log: Callable[[str], None]) -> Result:
    window = cfg.idle_window_s
    got: dict[str, list[dict[str, float]]] = {k: [] for k, _ in IDLE_ROWS}

    def measure(key: str, pids: list[int]) -> int:
        time.sleep(0.2)  # let the warm-up's wake-ups settle
        got[key].append(_watch_idle(pids, window))
        return int(window * 1e9)

    def run_ndshm(key: str, method: str | None) -> int:
        with ndshm.Pool(workers=WORKERS, start_method=method) as p:
            p.map(inc, range(100))
            return measure(key, p.pids)

    def run_mp() -> int:
        pool = mp.Pool(WORKERS)
        try:
            pool.map(inc, range(100))
            return measure("mp", [w.pid for w in pool._pool])
        finally:
            pool.terminate()
            pool.join()

    def run_ppe() -> int:
        with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
            list(ex.map(inc, range(100)))
            return measure("ppe", list(ex._processes))

    fns: dict[str, Callable[[], int]] = {"mp": run_mp, "ppe": run_ppe}
    fns["ndshm"] = lambda: run_ndshm("ndshm", None)
    fns["ndshm_fork"] = lambda: run_ndshm("ndshm_fork", "fork")
    rounds = Rounds([k for k, _ in IDLE_ROWS], seed=56)
    rounds.run(fns, cfg.idle_rounds, log, "idle")

    def med(key: str, field: str) -> float:
        vals = [g[field] for g in got[key]]
        return statistics.median(vals) if vals else float("nan")

    rows = []
    for k, label in IDLE_ROWS:
        if k in rounds.errors or not got[k]:
            rows.append((label, rounds.cell(k, str), "", "", "", ""))
            continue
        rows.append(
            (
                label,
                f"{med(k, 'stat_ms_per_s'):.1f}",
                f"{med(k, 'sched_ms_per_s'):.3f}",
                f"{med(k, 'wakeups_per_s'):.1f}",
                f"{med(k, 'parent_ms_per_s'):.3f}",
                len(got[k]),
            )
        )
    targets = []
    for k, how in (("ndshm", "default start method"), ("ndshm_fork", "fork")):
        what = f"idle ndshm pool ({how}): workers ≤ {TARGET_IDLE_MS:g} ms CPU per s (~0)"
        v = med(k, "sched_ms_per_s") if got[k] else None
        ok = v is not None and v <= TARGET_IDLE_MS
        targets.append(target_row(rounds, k, what, v, lambda x: f"{x:.3f} ms/s", ok))
    headers = (
        "pool",
        "workers: ms CPU / s (utime + stime, /proc/PID/stat)",
        "workers: ms CPU / s (schedstat)",
        "workers: wake-ups / s",
        "parent's threads: ms CPU / s",
        "n",
    )
    body = f"""
CPU an idle pool of {WORKERS} workers uses: the pool is started, runs a map
of 100 trivial tasks, is left alone for 0.2 s, then watched for
{window:g} s while the parent sleeps. Workers' CPU is the sum over the
worker processes (all their threads) of utime + stime from
`/proc/PID/stat` (counted in clock ticks of {1e3 / _HZ:g} ms, so {1e3 / _HZ / window:.0f} ms/s
is one tick in the window) and, more precisely, of the run time in
`/proc/PID/task/*/schedstat`; wake-ups are their context switches
(voluntary and not). The parent's threads: this process's run time over
the window, in which its main thread only sleeps (what a pool's helper
threads, if any, use). The target is idle workers asleep on a futex,
using ~0 CPU; this suite reads that as ≤ {TARGET_IDLE_MS:g} ms of CPU per second
for all workers together, checked on the schedstat column.
Medians over {cfg.idle_rounds} rounds, pools shuffled in each. {rounds.load}

{table(headers, rows)}

Target:

{table(("target", "measured (median)", ""), targets, align="lll")}
"""
    raw = {"samples": got, "errors": rounds.errors, "window_s": window, "load": rounds.load_raw}
    return Result("(f) Idle pool: CPU while waiting for work", body, raw)
