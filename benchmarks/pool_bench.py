"""Pool benchmarks (issue 3): the parallel engine against the tools users
would otherwise pick.

    .venv/bin/python benchmarks/pool_bench.py            # everything (~6 min)
    .venv/bin/python benchmarks/pool_bench.py --quick    # a smoke run (~1 min)
    .venv/bin/python benchmarks/pool_bench.py overhead startup --json out.json

1. Per-task overhead of trivial tasks (``x + 1`` on ints) with 2 workers:
   ``multiprocessing.Pool.map``, ``ProcessPoolExecutor.map``,
   ``joblib.Parallel`` (loky), ``mpire.WorkerPool.map`` and
   ``tqdm.contrib.concurrent.process_map``, each at chunksize 1 and at its
   own best setting; µs per task = time of the map alone (pool started and
   warmed first) / tasks. A log-scale bar chart goes to
   ``benchmarks/pool_overhead.png``.
2. Uneven tasks (seeded Pareto durations): time / ideal, ideal = sum of the
   durations / 2 workers.
3. The seed workload ``r = y[:, None] * x[None, :]`` (20 000 x 10 000
   float64, 1.6 GB) in one numpy process, with a hand-written
   ``Pool`` + ``SharedMemory`` and with ``ndshm.Pool.map_blocks`` (a ufunc
   and a Python function; into a reused pre-faulted ``out`` and into a
   fresh result), the fresh-result rows again with 4 KiB pages
   (``NDSHM_HUGE_PAGES=off``); and a CPU-bound block workload, one process
   against the hand-written 2-process pool and ndshm (speedup).
4. Pool start-up to the first result (ndshm with its default start method
   and with fork).
5. CPU used by an idle pool's workers (utime + stime from /proc/PID/stat,
   and schedstat) over a few seconds.

``ndshm.Pool`` (``map``, ``map_blocks``, ``submit``, ``shutdown``) is
measured in every section as soon as it exists (``hasattr(ndshm, "Pool")``);
until then its rows read "not yet implemented". A contender that fails is
reported with its error and the others carry on.

Contenders are interleaved: each round runs every contender once, in a
seeded shuffled order, and the tables give medians over the rounds (the
machine is shared and noisy). Every SharedMemory made here is unlinked;
the run checks that nothing it made is left in /dev/shm.

The module follows the suite protocol of ``benchmarks/run.py`` (SECTION,
INTRO, ORDER, BENCHMARKS, FULL, QUICK) and has a ``main(argv)`` of its own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import itertools
import json
import math
import multiprocessing as mp
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import HERE, REPO, Progress, Result, Samples, fmt_ratio, fmt_time, gc_paused, table, verdict

import ndshm
from ndshm._worker import keep_freed_memory  # the malloc settings of ndshm's workers

SECTION = "Parallel work (issue 3)"
WORKERS = 2
F8 = np.dtype(np.float64)
NOT_YET = "not yet implemented"
PLOT = HERE / "pool_overhead.png"

# Figures quoted by the issue (2 workers), in µs per task or ms.
ANCHOR_US = {"mp_1": 17.0, "ppe_1": 106.0, "mpire_1": 94.0, "pm_1": 116.0, "mp_best": 0.093}
ANCHOR_SEED_MS = {"numpy": 261.0, "hand_reused": 369.0, "hand_fresh": 529.0}
TARGET_US_1 = 3.0  # ndshm, chunksize 1
TARGET_US_AUTO = 0.1  # ndshm, automatic chunks
TARGET_UNEVEN = 1.15  # ndshm, time / ideal, automatic chunks
TARGET_SPEEDUP = 1.85  # ndshm, CPU-bound blocks, 2 workers
TARGET_STARTUP_MS = 20.0  # ndshm, construction to first result
TARGET_SEED_REUSED_MS = 300.0  # ndshm.map_blocks, seed workload into a reused pre-faulted `out`
TARGET_SEED_FRESH_MS = 450.0  # ndshm.map_blocks, seed workload into a fresh shared result

TUNED_CHUNK = 1000  # the tuned chunk size of the tools whose default is 1
SPIN_S = 100e-6  # an uneven task sleeps, then spins for its last 100 µs
CPU_TERMS = 6  # terms of the CPU-bound kernel
CPU_STEP = 16  # rows per kernel call (keeps the temporaries in cache)


@dataclass
class Config:
    overhead_tasks: int  # tasks per timed map
    overhead_tasks_slow: int  # the same at chunksize 1 for the tools slower than ~20 µs/task
    overhead_rounds: int
    warm_tasks: int  # the untimed warm-up map on each fresh pool
    uneven_tasks: int
    uneven_ideal_s: float  # sum of the durations / WORKERS
    uneven_rounds: int
    seed_rows: int
    seed_cols: int
    seed_rounds: int
    cpu_rows: int
    cpu_cols: int
    cpu_tasks: int  # row blocks of the hand-written pool, dealt one at a time
    cpu_rounds: int
    startup_rounds: int
    idle_window_s: float  # how long an idle pool is watched
    idle_rounds: int
    plot: str  # where the overhead chart goes (relative to benchmarks/)


FULL = Config(
    overhead_tasks=100_000,
    overhead_tasks_slow=5_000,
    overhead_rounds=5,
    warm_tasks=1000,
    uneven_tasks=3000,
    uneven_ideal_s=1.5,
    uneven_rounds=3,
    seed_rows=20_000,
    seed_cols=10_000,
    seed_rounds=7,
    cpu_rows=4096,
    cpu_cols=4096,
    cpu_tasks=16,
    cpu_rounds=11,
    startup_rounds=9,
    idle_window_s=2.0,
    idle_rounds=2,
    plot="pool_overhead.png",
)

QUICK = Config(
    overhead_tasks=10_000,
    overhead_tasks_slow=2_000,
    overhead_rounds=1,
    warm_tasks=200,
    uneven_tasks=400,
    uneven_ideal_s=0.25,
    uneven_rounds=1,
    seed_rows=4000,
    seed_cols=10_000,
    seed_rounds=2,
    cpu_rows=512,
    cpu_cols=4096,
    cpu_tasks=8,
    cpu_rounds=2,
    startup_rounds=2,
    idle_window_s=1.0,
    idle_rounds=1,
    plot="out/pool_overhead-quick.png",
)


# ------------------------------------------------------------------ helpers


def have_pool() -> bool:
    return hasattr(ndshm, "Pool")


def versions_line() -> str:
    """The versions of the contenders that common.environment() does not list."""
    names = ("mpire", "tqdm", "joblib", "cloudpickle", "matplotlib")
    vs = ", ".join(f"{n} {common.package_version(n)}" for n in names)
    return (
        f"Contenders: {vs}; Python {sys.version.split()[0]} "
        f"(default start method `{mp.get_start_method()}`); "
        f"`ndshm.Pool` {'present' if have_pool() else NOT_YET}."
    )


def _shm_tag() -> str:
    """SharedMemory names carry the pid, so run.py's leak check sees them."""
    return f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _stop_loky() -> None:
    """Shuts joblib's reusable loky executor down, if there is one, so that
    no idle pool (nor its threads in this process) outlives its turn."""
    from joblib.externals.loky import reusable_executor

    with reusable_executor._executor_lock:
        ex = reusable_executor._executor
    if ex is not None:
        ex.shutdown(wait=True)


def err(e: BaseException) -> str:
    """A one-line description of `e`, for the tables."""
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"error: {type(e).__name__}: {msg}"[:160]


class Rounds:
    """Runs contenders round-robin in a seeded shuffled order. A contender
    that raises is recorded with its error and left out of later rounds."""

    WARMUPS = 0

    def __init__(self, keys: list[str], seed: int) -> None:
        self.samples = {k: Samples(k) for k in keys}
        self.errors: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.load = ""
        self.load_raw: dict[str, float] = {}

    def run(
        self,
        fns: dict[str, Callable[[], int]],
        rounds: int,
        log: Callable[[str], None],
        what: str,
        warmups: int | None = None,
    ) -> None:
        """`rounds` timed rounds, after `warmups` untimed runs of each
        contender (default: the class's WARMUPS)."""
        if warmups is None:
            warmups = self.WARMUPS
        keys = list(fns)
        for _ in range(warmups):
            for k in keys:
                if k in self.errors:
                    continue
                try:
                    fns[k]()
                except Exception as e:
                    self.errors[k] = err(e)
                    log(f"{what}: {k} failed: {self.errors[k]}")
        if warmups:
            log(f"{what}: warmed up")
        meter = LoadMeter()
        for r in range(rounds):
            order = keys[:]
            self.rng.shuffle(order)
            for k in order:
                if k in self.errors:
                    continue
                try:
                    self._record(k, fns[k]())
                except Exception as e:
                    self.errors[k] = err(e)
                    log(f"{what}: {k} failed: {self.errors[k]}")
            log(f"{what}: round {r + 1}/{rounds}")
        self.load = meter.line()
        self.load_raw = meter.raw

    def _record(self, key: str, value: Any) -> None:
        self.samples[key].add(value)

    def raw(self, **extra: Any) -> dict[str, Any]:
        """What a section writes to benchmarks/out/: every timing, the
        errors and the machine's load, and `extra`."""
        return {
            "ns": {k: s.ns for k, s in self.samples.items()},
            **extra,
            "errors": self.errors,
            "load": self.load_raw,
        }

    def med(self, key: str) -> float:
        return self.samples[key].median

    def cell(self, key: str, fmt: Callable[[float], str]) -> str:
        if key in self.errors:
            return self.errors[key]
        if not self.samples[key].n:
            return NOT_YET if key.startswith("ndshm") and not have_pool() else "n/a"
        return fmt(self.med(key))


def _cpu_busy_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (math.nan, math.nan)
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return ((user + nice + system + irq + softirq) / hz, steal / hz)


def _live_children_cpu_s() -> float:
    """CPU seconds of this process's live descendants (pool workers not yet
    reaped, and the workers a forkserver started, which are its children,
    not ours) and of the children they reaped, from /proc/PID/stat."""
    me = os.getpid()
    hz = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, CPU ticks)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 14:
            # utime, stime, cutime, cstime
            stats[int(pid)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    mine = {me}
    grew = True
    while grew:
        new = {pid for pid, (ppid, _) in stats.items() if ppid in mine and pid not in mine}
        mine |= new
        grew = bool(new)
    return sum(ticks for pid, (_, ticks) in stats.items() if pid in mine and pid != me) / hz


def _my_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live
    descendants."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _live_children_cpu_s()


class LoadMeter:
    """How much CPU other processes took while a benchmark ran: the
    machine's busy time (/proc/stat) minus that of this process and its
    descendants (live or reaped)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = _cpu_busy_s()
        self.mine0 = _my_cpu_s()
        self.raw: dict[str, float] = {}

    def line(self) -> str:
        wall = time.monotonic() - self.t0
        busy, steal = _cpu_busy_s()
        mine = _my_cpu_s() - self.mine0
        others = max(0.0, busy - self.busy0 - mine)
        ncpu = len(os.sched_getaffinity(0))
        self.raw = {
            "wall_s": wall,
            "others_cpu_s": others,
            "steal_s": steal - self.steal0,
            "mine_cpu_s": mine,
        }
        if wall <= 0 or others != others:
            return ""
        return (
            f"While it ran ({wall:.0f} s), other processes kept about {others / wall:.2f} of the "
            f"{ncpu} CPUs busy (from /proc/stat, less this process and all its descendants, "
            "pool workers included)"
            + (
                f", and the hypervisor stole {(steal - self.steal0) / wall:.2f} CPU."
                if (steal - self.steal0) / wall >= 0.005
                else "."
            )
        )


# ------------------------------------------------------------------ task functions (module level)


def inc(x: int) -> int:
    return x + 1


def wait(d: float) -> float:
    """An uneven task: `d` seconds, slept (so the measure does not depend on
    how many CPUs other processes leave free), the last SPIN_S spun (so the
    timer slack of sleep does not lengthen it)."""
    end = time.perf_counter() + d
    if d > SPIN_S:
        time.sleep(d - SPIN_S)
    while time.perf_counter() < end:
        pass
    return d


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


_ATTACHED: dict[str, shared_memory.SharedMemory] = {}


def _attach(name: str, keep: bool) -> shared_memory.SharedMemory:
    """Opens a SharedMemory in a worker; `keep` caches the mapping for the
    worker's lifetime (the best a hand-written pool can do)."""
    if not keep:
        return shared_memory.SharedMemory(name=name)
    s = _ATTACHED.get(name)
    if s is None:
        s = _ATTACHED[name] = shared_memory.SharedMemory(name=name)
    return s


def _outer_task(args: tuple) -> int:
    """Hand-written worker of the seed workload: rows lo:hi of y[:, None] * x."""
    name, shape, lo, hi, y_part, x, keep = args
    s = _attach(name, keep)
    try:
        r = np.ndarray(shape, F8, buffer=s.buf)
        np.multiply(y_part[:, None], x[None, :], out=r[lo:hi])
        del r
    finally:
        if not keep:
            s.close()
    return hi - lo


def cpu_kernel(b: np.ndarray) -> np.ndarray:
    """A CPU-bound element-wise kernel (transcendental functions)."""
    acc = np.sin(b)
    for k in range(2, CPU_TERMS + 1):
        acc += np.exp(-k * b) * np.sin(k * b) / k
    return acc


def _cpu_rows(a: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    for i in range(lo, hi, CPU_STEP):
        j = min(hi, i + CPU_STEP)
        out[i:j] = cpu_kernel(a[i:j])


def cpu_block(b: np.ndarray) -> np.ndarray:
    """The kernel over a block, CPU_STEP rows at a time, as the other
    contenders run it: what ndshm.Pool.map_blocks gets."""
    out = np.empty(b.shape, F8)
    _cpu_rows(b, out, 0, len(b))
    return out


def _cpu_task(args: tuple) -> int:
    in_name, out_name, shape, lo, hi = args
    a = np.ndarray(shape, F8, buffer=_attach(in_name, True).buf)
    out = np.ndarray(shape, F8, buffer=_attach(out_name, True).buf)
    _cpu_rows(a, out, lo, hi)
    return hi - lo


_PRIVATE: dict[str, np.ndarray] = {}


def _cpu_one(args: tuple) -> int:
    """The one-process contender, in a process of its own: the whole loop
    over a private copy of the input into a pre-faulted private output
    (both kept across calls), timed alone; the output is then copied into
    the shared one for the equality check."""
    in_name, out_name, shape = args
    if in_name not in _PRIVATE:
        _PRIVATE[in_name] = np.array(np.ndarray(shape, F8, buffer=_attach(in_name, True).buf))
        _PRIVATE[out_name] = np.zeros(shape, F8)
    a, out = _PRIVATE[in_name], _PRIVATE[out_name]
    t0 = perf_counter_ns()
    _cpu_rows(a, out, 0, shape[0])
    dt = perf_counter_ns() - t0
    np.copyto(np.ndarray(shape, F8, buffer=_attach(out_name, True).buf), out)
    return dt


# ------------------------------------------------------------------ running a map with each tool


@dataclass(frozen=True)
class Contender:
    key: str
    tool: str  # mp, ppe, joblib, mpire, pm, ndshm
    chunk: Any  # an int, None (the tool's default) or "auto"
    setting: str  # how it is called, for the tables


TOOL_LABEL = {
    "mp": "multiprocessing.Pool.map",
    "ppe": "ProcessPoolExecutor.map",
    "joblib": "joblib.Parallel (loky)",
    "mpire": "mpire.WorkerPool.map",
    "pm": "tqdm process_map",
    "ndshm": "ndshm.Pool.map",
}
TOOL_SHORT = {
    "mp": "mp.Pool",
    "ppe": "PPE",
    "joblib": "joblib",
    "mpire": "mpire",
    "pm": "process_map",
    "ndshm": "ndshm",
}

CONTENDERS = [
    Contender("mp_1", "mp", 1, "chunksize=1"),
    Contender("mp_best", "mp", None, "default chunks (n / (4 x workers))"),
    Contender("ppe_1", "ppe", 1, "chunksize=1 (default)"),
    Contender("ppe_best", "ppe", TUNED_CHUNK, f"chunksize={TUNED_CHUNK}"),
    Contender("joblib_1", "joblib", 1, "batch_size=1"),
    Contender("joblib_best", "joblib", "auto", "batch_size='auto' (default)"),
    Contender("mpire_1", "mpire", 1, "chunk_size=1"),
    Contender("mpire_default", "mpire", None, "default chunks (n / (4 x workers))"),
    Contender("mpire_best", "mpire", TUNED_CHUNK, f"chunk_size={TUNED_CHUNK}"),
    Contender("pm_1", "pm", 1, "chunksize=1 (default)"),
    Contender("pm_best", "pm", TUNED_CHUNK, f"chunksize={TUNED_CHUNK}"),
    Contender("ndshm_1", "ndshm", 1, "chunksize=1"),
    Contender("ndshm_auto", "ndshm", None, "chunksize=None (automatic)"),
]
BY_KEY = {c.key: c for c in CONTENDERS}
SLOW = {"ppe_1", "joblib_1", "mpire_1", "pm_1"}  # fewer tasks at chunksize 1


def _kw(name: str, chunk: Any) -> dict[str, Any]:
    return {} if chunk is None else {name: chunk}


def timed_map(c: Contender, fn: Callable[[Any], Any], items: list, expect: list, warm: int) -> int:
    """ns of one `map(fn, items)` on a fresh pool of WORKERS processes that
    was started and warmed (a map of `warm` trivial tasks at the same chunk
    setting) before timing; the pool is shut down afterwards. process_map
    makes its own pool per call, so its whole call is timed. The result is
    checked against `expect` after timing."""
    w = list(range(warm))
    if c.tool == "mp":
        pool = mp.Pool(WORKERS)
        try:
            pool.map(inc, w, **_kw("chunksize", c.chunk))
            with gc_paused():
                t0 = perf_counter_ns()
                r = pool.map(fn, items, **_kw("chunksize", c.chunk))
                dt = perf_counter_ns() - t0
            pool.close()
            pool.join()
        finally:
            pool.terminate()
    elif c.tool == "ppe":
        with concurrent.futures.ProcessPoolExecutor(WORKERS) as ex:
            list(ex.map(inc, w, chunksize=c.chunk))
            with gc_paused():
                t0 = perf_counter_ns()
                r = list(ex.map(fn, items, chunksize=c.chunk))
                dt = perf_counter_ns() - t0
    elif c.tool == "joblib":
        from joblib import Parallel, delayed

        try:
            with Parallel(n_jobs=WORKERS, backend="loky", batch_size=c.chunk) as par:
                par(delayed(inc)(i) for i in w)
                with gc_paused():
                    t0 = perf_counter_ns()
                    r = par(delayed(fn)(i) for i in items)
                    dt = perf_counter_ns() - t0
        finally:
            _stop_loky()
    elif c.tool == "mpire":
        from mpire import WorkerPool

        with WorkerPool(n_jobs=WORKERS, keep_alive=True) as mpool:
            mpool.map(inc, w, **_kw("chunk_size", c.chunk))
            with gc_paused():
                t0 = perf_counter_ns()
                r = mpool.map(fn, items, **_kw("chunk_size", c.chunk))
                dt = perf_counter_ns() - t0
            mpool.stop_and_join()
    elif c.tool == "pm":
        from tqdm.contrib.concurrent import process_map

        with open(os.devnull, "w") as devnull, gc_paused():
            t0 = perf_counter_ns()
            r = process_map(fn, items, max_workers=WORKERS, chunksize=c.chunk, file=devnull)
            dt = perf_counter_ns() - t0
    elif c.tool == "ndshm":
        if not have_pool():
            raise NotImplementedError(NOT_YET)
        with ndshm.Pool(workers=WORKERS) as npool:
            npool.map(inc, w, chunksize=c.chunk)
            with gc_paused():
                t0 = perf_counter_ns()
                r = npool.map(fn, items, chunksize=c.chunk)
                dt = perf_counter_ns() - t0
    else:
        raise ValueError(c.tool)
    if list(r) != expect:
        raise AssertionError(f"{c.key}: wrong results")
    return dt


# ------------------------------------------------------------------ (a) per-task overhead


def _n_tasks(cfg: Config, key: str) -> int:
    return cfg.overhead_tasks_slow if key in SLOW else cfg.overhead_tasks


def bench_overhead(cfg: Config, log: Callable[[str], None]) -> Result:
    keys = [c.key for c in CONTENDERS]
    items = {n: list(range(n)) for n in (cfg.overhead_tasks, cfg.overhead_tasks_slow)}
    expect = {n: [i + 1 for i in range(n)] for n in items}
    fns: dict[str, Callable[[], int]] = {}
    for c in CONTENDERS:
        if c.tool == "ndshm" and not have_pool():
            continue
        n = _n_tasks(cfg, c.key)
        fns[c.key] = lambda c=c, n=n: timed_map(c, inc, items[n], expect[n], cfg.warm_tasks)
    # process_map starts a pool per call: its start-up + shutdown, measured
    # by a 2-task call in every round, is subtracted from its maps.
    pm_small = Contender("pm_small", "pm", 1, "2 tasks")
    fns["pm_small"] = lambda: timed_map(pm_small, inc, [0, 1], [1, 2], 0)
    rounds = Rounds([*keys, "pm_small"], seed=51)
    rounds.run(fns, cfg.overhead_rounds, log, "overhead")

    def us_per_task(key: str, q: str = "median") -> float:
        s = rounds.samples[key]
        if not s.n:
            return float("nan")
        n = _n_tasks(cfg, key)
        if BY_KEY[key].tool == "pm":  # less the 2-task call of the same round
            diffs = [a - b for a, b in zip(s.ns, rounds.samples["pm_small"].ns)]
            if not diffs:
                return float("nan")
            return (statistics.median(diffs) if q == "median" else min(diffs)) / (n - 2) / 1e3
        return (s.median if q == "median" else s.min) / n / 1e3

    us = {k: us_per_task(k) for k in keys}
    us_min = {k: us_per_task(k, "min") for k in keys}

    def ref_key(key: str) -> str:
        return "mp_1" if BY_KEY[key].chunk == 1 else "mp_best"

    rows = []
    for c in CONTENDERS:
        k = c.key
        s = rounds.samples[k]
        anchor = ANCHOR_US.get(k)
        if k in rounds.errors or not s.n:
            rows.append(
                (TOOL_LABEL[c.tool], c.setting, f"{_n_tasks(cfg, k):,}", rounds.cell(k, str), "", "", "", "")
            )
            continue
        rows.append(
            (
                TOOL_LABEL[c.tool],
                c.setting,
                f"{_n_tasks(cfg, k):,}",
                _fmt_us(us[k]),
                _fmt_us(us_min[k]),
                fmt_ratio(us[k] / us[ref_key(k)]),
                _fmt_us(anchor) if anchor else "",
                fmt_ratio(us[k] / anchor) if anchor else "",
            )
        )
    small = rounds.samples["pm_small"]
    plot_note = make_plot(us, rounds, cfg, log)

    targets = [
        _target(rounds, key, f"{what} ≤ {limit:g} µs/task", v, _fmt_us, v <= limit)
        for key, what, limit in (
            ("ndshm_1", "ndshm at chunksize 1", TARGET_US_1),
            ("ndshm_auto", "ndshm with automatic chunks", TARGET_US_AUTO),
        )
        for v in [us.get(key, float("nan"))]
    ]
    headers = (
        "tool",
        "setting",
        "tasks",
        "µs/task (median)",
        "µs/task (min)",
        "x mp.Pool (same kind of setting)",
        "issue anchor",
        "x anchor",
    )
    body = f"""
{WORKERS} workers, trivial task `inc(x) = x + 1` (a module-level function) on
ints, the results checked. Each contender gets a fresh pool in each round:
it is started and warmed (a map of {cfg.warm_tasks} tasks at the same
setting) before timing, then only the map is timed (the call until the
full result list is back) and the pool is shut down after. µs/task = that
time / tasks. `tqdm.contrib.concurrent.process_map` makes a new
`ProcessPoolExecutor` per call, so its start-up cannot be left out of a
call; instead a 2-task call (median {fmt_time(small.median)}) is timed in
every round and subtracted from that round's map: µs/task = median over
rounds of (map - 2-task call) / (tasks - 2). Its bar is drawn to /dev/null. Tools run at their default
start method (fork here; loky for joblib). At chunksize 1 the tools slower
than ~20 µs/task map {cfg.overhead_tasks_slow:,} tasks instead of
{cfg.overhead_tasks:,} (marked in the tasks column), to keep the run
short. "Best" settings: `Pool.map`'s and mpire's default chunks are
n / (4 x workers); the tools whose default is 1 get chunksize
{TUNED_CHUNK} (a scan of 100, 1000 and 12 500 with 100 000 tasks on this
machine: 1000 within 25% of 12 500 for PPE, mpire and process_map, 100
1.4-4x slower). "x mp.Pool" compares a chunksize-1
row with `Pool.map` at chunksize 1 and the other rows with `Pool.map` at
its default chunks. {cfg.overhead_rounds} rounds, contenders shuffled in
each. {rounds.load}

{table(headers, rows, align="llrrrrrr")}

{plot_note}

Targets:

{table(("target", "measured", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        us_per_task=us,
        tasks={k: _n_tasks(cfg, k) for k in keys},
    )
    return Result("(a) Per-task overhead", body, raw)


def _fmt_us(v: float) -> str:
    if v != v:
        return "n/a"
    if v < 1:
        return f"{v:.3f} µs"
    if v < 10:
        return f"{v:.2f} µs"
    return f"{v:.1f} µs"


def _target(
    rounds: Rounds, key: str, what: str, value: float | None, fmt: Callable[[float], str], met: bool
) -> tuple[str, str, str]:
    """A row of a targets table: the error, "not yet", or the value and its verdict."""
    if key in rounds.errors:
        return (what, rounds.errors[key], "")
    if value is None or value != value:
        return (what, NOT_YET if not have_pool() else "n/a", "")
    return (what, fmt(value), verdict(met))


def make_plot(us: dict[str, float], rounds: Rounds, cfg: Config, log: Callable[[str], None]) -> str:
    """The µs/task chart; returns the Markdown that shows it."""
    path = HERE / cfg.plot
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(No chart: matplotlib is not installed; `pip install -r benchmarks/requirements.txt`.)"
    tools = ["mp", "ppe", "joblib", "mpire", "pm", "ndshm"]
    ones, bests, best_labels = [], [], []
    for t in tools:
        ones.append(us.get(f"{t}_1", float("nan")))
        cands = [
            c for c in CONTENDERS if c.tool == t and c.chunk != 1 and not math.isnan(us.get(c.key, math.nan))
        ]
        best = min(cands, key=lambda c: us[c.key], default=None)
        bests.append(us[best.key] if best else float("nan"))
        best_labels.append(best.setting.split(" (")[0] if best else "")
    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=110)
    xs = np.arange(len(tools))
    w = 0.38
    b1 = ax.bar(xs - w / 2, [v if v == v else 0 for v in ones], w, label="chunksize 1", color="#d95f02")
    b2 = ax.bar(xs + w / 2, [v if v == v else 0 for v in bests], w, label="best setting", color="#1b9e77")
    ax.set_yscale("log")
    for bars, vals in ((b1, ones), (b2, bests)):  # values inside the bars' tops, clear of the markers
        ax.bar_label(
            bars,
            labels=[_fmt_us(v) if v == v else "" for v in vals],
            fontsize=7.5,
            padding=-11,
            color="white",
            fontweight="bold",
        )
    anchor_x, anchor_y = [], []
    for i, t in enumerate(tools):
        for key, dx in ((f"{t}_1", -w / 2), (f"{t}_best", w / 2)):
            if key in ANCHOR_US:
                anchor_x.append(i + dx + w / 2 + 0.03)  # beside the bar, pointing at its height
                anchor_y.append(ANCHOR_US[key])
    ax.plot(anchor_x, anchor_y, "k<", ls="none", markersize=7, label="figure quoted by the issue")
    ax.axhline(
        TARGET_US_1, color="#7570b3", ls="--", lw=1.2, label=f"ndshm target, chunksize 1: {TARGET_US_1:g} µs"
    )
    ax.axhline(
        TARGET_US_AUTO,
        color="#7570b3",
        ls=":",
        lw=1.2,
        label=f"ndshm target, automatic: {TARGET_US_AUTO:g} µs",
    )
    finite = [v for v in ones + bests + anchor_y if v == v and v > 0]
    lo = min([*finite, TARGET_US_AUTO]) / 3
    hi = max([*finite, TARGET_US_1]) * 3
    ax.set_ylim(lo, hi)
    if not have_pool() or "ndshm_1" in rounds.errors:
        note = rounds.errors.get("ndshm_1", NOT_YET)
        y = math.sqrt(TARGET_US_1 * TARGET_US_AUTO)
        ax.text(xs[-1], y, note.replace(": ", ":\n", 1), ha="center", va="center", fontsize=9, wrap=True)
    ticks = [f"{TOOL_SHORT[t]}\n(best: {b})" if b else TOOL_SHORT[t] for t, b in zip(tools, best_labels)]
    ax.set_xticks(xs, ticks, fontsize=8)
    ax.set_ylabel("µs per task (median, log scale)")
    ax.set_title(
        f"Per-task overhead, {WORKERS} workers, trivial task (x + 1); pool start-up excluded", fontsize=11
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"overhead: chart saved to {path}")
    rel = path.relative_to(HERE).as_posix()
    return f"![µs per task, chunksize 1 and best setting, log scale]({rel})"


# ------------------------------------------------------------------ (b) uneven tasks


UNEVEN_BEST = ["mp_best", "ppe_best", "joblib_best", "mpire_default", "mpire_best", "pm_best", "ndshm_auto"]
UNEVEN_ONE = ["mp_1", "ppe_1", "joblib_1", "mpire_1", "pm_1", "ndshm_1"]
# (order, contenders): chunksize 1 hardly depends on the order, so the
# ascending order runs only the chunked settings.
UNEVEN_ORDERS = {"shuffled": UNEVEN_BEST + UNEVEN_ONE, "ascending": UNEVEN_BEST}
UNEVEN_ALPHA = 1.5


def uneven_durations(n: int, total_s: float, seed: int = 5, alpha: float = UNEVEN_ALPHA) -> list[float]:
    """Seeded Pareto(alpha) durations (heavy-tailed: finite mean, infinite
    variance for alpha <= 2), in random order, scaled to sum to `total_s`."""
    d = np.random.default_rng(seed).pareto(alpha, n) + 1.0
    d *= total_s / d.sum()
    return [float(v) for v in d]


def _overshoot(d: list[float], n: int) -> float:
    """Mean seconds by which `wait` outlasts its nominal duration when run
    in this process (sleep's wake-up latency), over the first `n` tasks."""
    extra = 0.0
    for v in d[:n]:
        t0 = time.perf_counter()
        wait(v)
        extra += time.perf_counter() - t0 - v
    return extra / max(1, min(n, len(d)))


def bench_uneven(cfg: Config, log: Callable[[str], None]) -> Result:
    d = uneven_durations(cfg.uneven_tasks, cfg.uneven_ideal_s * WORKERS)
    orders = {"shuffled": d, "ascending": sorted(d)}
    ideal = sum(d) / WORKERS
    arr = np.array(d)
    over = _overshoot(d, cfg.uneven_tasks // 10)
    fns: dict[str, Callable[[], int]] = {}
    keys = [f"{o}:{k}" for o, ks in UNEVEN_ORDERS.items() for k in ks]
    for key in keys:
        order, ck = key.split(":")
        c = BY_KEY[ck]
        if c.tool == "ndshm" and not have_pool():
            continue
        items = orders[order]
        fns[key] = lambda c=c, items=items: timed_map(c, wait, items, items, cfg.warm_tasks)
    rounds = Rounds(keys, seed=52)
    rounds.run(fns, cfg.uneven_rounds, log, "uneven")
    rows = []
    for key in keys:
        order, ck = key.split(":")
        c = BY_KEY[ck]
        s = rounds.samples[key]
        if key in rounds.errors or not s.n:
            cell = rounds.errors.get(key) or (NOT_YET if not have_pool() else "n/a")
            rows.append((TOOL_LABEL[c.tool], c.setting, order, cell, "", "", ""))
            continue
        rows.append(
            (
                TOOL_LABEL[c.tool],
                c.setting,
                order,
                fmt_time(s.median),
                fmt_time(s.min),
                s.n,
                fmt_ratio(s.median / (ideal * 1e9)),
            )
        )
    targets = []
    for order in UNEVEN_ORDERS:
        key = f"{order}:ndshm_auto"
        nd = rounds.samples[key]
        what = f"ndshm with automatic chunks ≤ {TARGET_UNEVEN:g}x ideal ({order})"
        if key in rounds.errors:
            targets.append((what, rounds.errors[key], ""))
        elif not nd.n:
            targets.append((what, NOT_YET, ""))
        else:
            ratio = nd.median / (ideal * 1e9)
            targets.append((what, fmt_ratio(ratio), verdict(ratio <= TARGET_UNEVEN)))
    q = np.quantile(arr, [0.5, 0.9, 0.99])
    floor = (sum(d) + len(d) * over) / WORKERS / ideal
    headers = ("tool", "setting", "order", "time (median)", "min", "n", "x ideal (median)")
    body = f"""
{cfg.uneven_tasks} tasks whose durations are drawn from a seeded Pareto
distribution (shape {UNEVEN_ALPHA}: finite mean, infinite variance), scaled so
that they sum to {sum(d):.2f} s: ideal = sum / {WORKERS} workers = {ideal:.2f} s.
Durations: median {fmt_time(q[0] * 1e9)}, p90 {fmt_time(q[1] * 1e9)}, p99
{fmt_time(q[2] * 1e9)}, max {fmt_time(arr.max() * 1e9)} (the longest task alone
is {arr.max() / ideal:.1%} of the ideal). A task sleeps for its duration,
spinning only for its last {SPIN_S * 1e6:.0f} µs, and returns it: sleeping tasks
measure how well a tool spreads uneven work, not how many CPUs other
processes leave free on this shared machine. Sleep still wakes up late
now and then: run in this process, the tasks took {over * 1e6:.1f} µs longer
than their nominal duration on average, so even a perfect pool would
measure about {fmt_ratio(floor)} here.

Two orders of the same durations: "shuffled" (as drawn, independent) and
"ascending" (the longest tasks last, as when work grows along the input:
the hard case for fixed chunks, whose last chunks then hold most of the
work; chunksize 1 hardly depends on the order, so only the chunked
settings run it). Each tool runs at the settings of (a): the chunk sizes
tuned for tiny tasks there are what a user would have tuned. Same protocol
as (a) (fresh pool, started and warmed, then only the map is timed);
process_map's time includes its pool's start-up and shutdown (it makes
one per call; about the 2-task call of (a)). {cfg.uneven_rounds} rounds,
contenders shuffled in each. {rounds.load}

{table(headers, rows, align="lllrrrr")}

Targets:

{table(("target", "measured", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        ideal_s=ideal,
        overshoot_s=over,
    )
    return Result("(b) Uneven tasks", body, raw)


# ------------------------------------------------------------------ (c) seed workload and CPU-bound blocks


SEED_ROWS = [
    ("numpy", "numpy, one process: `np.multiply.outer(y, x)` (fresh result)"),
    ("numpy_out", "reference: numpy, one process, into a reused pre-faulted array (`out=`)"),
    ("hand_reused", "Pool + SharedMemory by hand: reused pre-faulted segment, workers attach per call"),
    ("hand_cached", "Pool + SharedMemory by hand: reused segment, workers keep their mapping"),
    ("hand_fresh", "Pool + SharedMemory by hand: fresh SharedMemory per run (create + fill)"),
    ("ndshm_ufunc_reused", "`pool.map_blocks(np.multiply, y[:, None], x[None, :], out=reused)`"),
    ("ndshm_ufunc_fresh", "`pool.map_blocks(np.multiply, y[:, None], x[None, :])` (fresh shared result)"),
    ("ndshm_py_reused", "`pool.map_blocks(lambda a, b: a * b, y[:, None], x[None, :], out=reused)`"),
    ("ndshm_py_fresh", "`pool.map_blocks(lambda a, b: a * b, y[:, None], x[None, :])` (fresh shared result)"),
    (
        "ndshm_module",
        "reference: `ndshm.map_blocks(np.multiply, y[:, None], x[None, :], out=reused, workers=2)` "
        "(starts and stops its own pool inside the timing)",
    ),
]
# (row, what, target in ms) for the seed workload's targets.
SEED_TARGETS = [
    ("ndshm_ufunc_reused", "ndshm.map_blocks, ufunc, reused pre-faulted `out`", TARGET_SEED_REUSED_MS),
    ("ndshm_py_reused", "ndshm.map_blocks, Python function, reused pre-faulted `out`", TARGET_SEED_REUSED_MS),
    ("ndshm_ufunc_fresh", "ndshm.map_blocks, ufunc, fresh shared result", TARGET_SEED_FRESH_MS),
    ("ndshm_py_fresh", "ndshm.map_blocks, Python function, fresh shared result", TARGET_SEED_FRESH_MS),
    # The same with 4 KiB pages, for reference (see SEED_SMALL).
    ("ndshm_ufunc_fresh_off", "ndshm.map_blocks, ufunc, fresh shared result", TARGET_SEED_FRESH_MS),
    ("ndshm_py_fresh_off", "ndshm.map_blocks, Python function, fresh shared result", TARGET_SEED_FRESH_MS),
]


# Rows repeated in a block of their own with NDSHM_HUGE_PAGES=off: the
# fresh ndshm results (the parent creates them, so its environment decides
# their pages), and numpy (private memory, not affected) for the block's
# "x numpy". The reused `out` is made once, before the rounds: not repeated.
SEED_SMALL = ["numpy", "ndshm_ufunc_fresh", "ndshm_py_fresh"]


def _seed_hand_ref(key: str) -> str:
    """The hand-written row a seed row compares with: same kind of result
    (fresh memory, or a reused pre-faulted one)."""
    key = key.removesuffix("_off")
    return "hand_fresh" if key in ("numpy", "hand_fresh") or key.endswith("_fresh") else "hand_reused"


def _check_outer(r: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    n, m = r.shape
    for i, j in ((0, 0), (n - 1, m - 1), (n // 3, m // 2), (n // 2 + 1, 7)):
        if r[i, j] != y[i] * x[j]:
            raise AssertionError(f"wrong result at {(i, j)}")


def _halves(n: int) -> list[tuple[int, int]]:
    bounds = [n * k // WORKERS for k in range(WORKERS + 1)]
    return list(itertools.pairwise(bounds))


def bench_seed(cfg: Config, log: Callable[[str], None]) -> Result:
    rows_n, cols = cfg.seed_rows, cfg.seed_cols
    shape = (rows_n, cols)
    nbytes = rows_n * cols * F8.itemsize
    rng = np.random.default_rng(7)
    y = rng.random(rows_n)
    x = rng.random(cols)
    # The resource tracker must run before the pool forks, so that the
    # workers share it (else each would start its own and unlink at exit).
    resource_tracker.ensure_running()
    pool = mp.Pool(WORKERS)
    npool = None
    made: list[shared_memory.SharedMemory] = []
    keep_nd: dict[str, Any] = {}
    small = Rounds([f"{k}_off" for k in SEED_SMALL], seed=57)
    huge: dict[str, str] = {}
    try:
        pool.map(inc, range(100), chunksize=1)
        reused = shared_memory.SharedMemory(create=True, size=nbytes, name=_shm_tag())
        made.append(reused)
        np.ndarray(shape, F8, buffer=reused.buf).fill(0.0)  # pre-fault every page
        priv_out = np.zeros(shape)

        def tasks(name: str, keep: bool) -> list[tuple]:
            return [(name, shape, lo, hi, y[lo:hi], x, keep) for lo, hi in _halves(rows_n)]

        def run_numpy() -> int:
            t0 = perf_counter_ns()
            r = np.multiply.outer(y, x)
            dt = perf_counter_ns() - t0
            _check_outer(r, y, x)
            del r
            return dt

        def run_numpy_out() -> int:
            t0 = perf_counter_ns()
            np.multiply(y[:, None], x[None, :], out=priv_out)
            dt = perf_counter_ns() - t0
            _check_outer(priv_out, y, x)
            return dt

        def run_hand(keep: bool) -> int:
            t0 = perf_counter_ns()
            pool.map(_outer_task, tasks(reused.name, keep), chunksize=1)
            r = np.ndarray(shape, F8, buffer=reused.buf)
            dt = perf_counter_ns() - t0
            _check_outer(r, y, x)
            del r
            np.ndarray(shape, F8, buffer=reused.buf)[[0, -1], [0, -1]] = 0.0  # the next run must rewrite
            return dt

        def run_hand_fresh() -> int:
            t0 = perf_counter_ns()
            s = shared_memory.SharedMemory(create=True, size=nbytes, name=_shm_tag())
            try:
                pool.map(_outer_task, tasks(s.name, False), chunksize=1)
                r = np.ndarray(shape, F8, buffer=s.buf)
                dt = perf_counter_ns() - t0
                _check_outer(r, y, x)
                del r
            finally:
                s.close()
                s.unlink()
            return dt

        fns: dict[str, Callable[[], int]] = {
            "numpy": run_numpy,
            "numpy_out": run_numpy_out,
            "hand_reused": lambda: run_hand(False),
            "hand_cached": lambda: run_hand(True),
            "hand_fresh": run_hand_fresh,
        }
        if have_pool():
            try:
                npool = ndshm.Pool(workers=WORKERS)
                npool.map(inc, range(100))
                keep_nd["y"] = ndshm.from_array(y)
                keep_nd["x"] = ndshm.from_array(x)
                keep_nd["out"] = ndshm.empty(shape, F8)
                keep_nd["out"].fill(0.0)  # pre-fault every page

                def run_nd(fn: Callable, fresh: bool) -> int:
                    ys, xs = keep_nd["y"], keep_nd["x"]
                    out = None if fresh else keep_nd["out"]
                    t0 = perf_counter_ns()
                    r = npool.map_blocks(fn, ys[:, None], xs[None, :], out=out)
                    dt = perf_counter_ns() - t0
                    _check_outer(np.asarray(r), y, x)
                    if not fresh:
                        r[[0, -1], [0, -1]] = 0.0  # the next run must rewrite
                    del r
                    return dt

                def run_nd_module() -> int:
                    ys, xs, out = keep_nd["y"], keep_nd["x"], keep_nd["out"]
                    t0 = perf_counter_ns()
                    r = ndshm.map_blocks(np.multiply, ys[:, None], xs[None, :], out=out, workers=WORKERS)
                    dt = perf_counter_ns() - t0
                    _check_outer(np.asarray(r), y, x)
                    r[[0, -1], [0, -1]] = 0.0
                    del r
                    return dt

                # The Python-function path: a lambda (sent with cloudpickle, once per call).
                fns["ndshm_ufunc_reused"] = lambda: run_nd(np.multiply, False)
                fns["ndshm_ufunc_fresh"] = lambda: run_nd(np.multiply, True)
                fns["ndshm_py_reused"] = lambda: run_nd(lambda a, b: a * b, False)
                fns["ndshm_py_fresh"] = lambda: run_nd(lambda a, b: a * b, True)
                fns["ndshm_module"] = run_nd_module
            except Exception as e:
                keep_nd["error"] = err(e)
                log(f"seed: ndshm set-up failed: {keep_nd['error']}")
        rounds = Rounds([k for k, _ in SEED_ROWS], seed=53)
        if "error" in keep_nd:
            for k, _ in SEED_ROWS:
                if k.startswith("ndshm"):
                    rounds.errors[k] = keep_nd["error"]
        with gc_paused():  # warm-up: first touches of fresh memory are slow here
            rounds.run(fns, cfg.seed_rounds, log, "seed", warmups=1)

        def probe() -> str:
            """How much of a fresh ndshm result is in huge pages (untimed)."""
            if npool is None or "error" in keep_nd:
                return "n/a"
            r = npool.map_blocks(np.multiply, keep_nd["y"][:, None], keep_nd["x"][None, :])
            try:
                return common.huge_check(r, touch=True)
            finally:
                del r

        huge["default"] = probe()
        # The same rows with 4 KiB pages, in a block of their own (the pools
        # are the same ones: the parent creates the results).
        for k in SEED_SMALL:
            if k not in fns:
                small.errors[f"{k}_off"] = rounds.errors.get(k) or keep_nd.get("error", NOT_YET)
        with common.huge_pages_off():
            with gc_paused():
                small_fns = {f"{k}_off": fns[k] for k in SEED_SMALL if k in fns}
                small.run(small_fns, cfg.seed_rounds, log, "seed, NDSHM_HUGE_PAGES=off", warmups=2)
            huge["off"] = probe()
    finally:
        pool.terminate()
        pool.join()
        if npool is not None:
            with suppress(Exception):
                npool.shutdown(wait=True)
        keep_nd.clear()
        for s in made:
            s.close()
            with suppress(FileNotFoundError):
                s.unlink()
    label_of = dict(SEED_ROWS)
    small_rows = [(f"{k}_off", common.small_pages_label(label_of[k])) for k in SEED_SMALL]
    rows = []
    for block, block_rows in ((rounds, SEED_ROWS), (small, small_rows)):
        # "x numpy" compares with numpy's row of the same block; the
        # hand-written rows (SharedMemory on /dev/shm) are the default block's.
        base_key = "numpy" if block is rounds else "numpy_off"
        base = block.med(base_key)
        base_min = block.samples[base_key].min
        for k, label in block_rows:
            s = block.samples[k]
            anchor = ANCHOR_SEED_MS.get(k)
            if k in block.errors or not s.n:
                rows.append((label, block.cell(k, str), "", "", "", "", "", "", ""))
                continue
            hand = _seed_hand_ref(k)
            rows.append(
                (
                    label,
                    fmt_time(s.median),
                    fmt_time(s.min),
                    s.n,
                    fmt_ratio(s.median / base),
                    fmt_ratio(s.min / base_min),
                    f"{fmt_ratio(s.median / rounds.med(hand))} "
                    f"({'fresh' if hand == 'hand_fresh' else 'reused'})",
                    f"{anchor:g} ms" if anchor else "",
                    fmt_ratio(s.median / (anchor * 1e6)) if anchor else "",
                )
            )
    targets = []
    for k, what, limit in SEED_TARGETS:
        block = small if k.endswith("_off") else rounds
        title = f"{what} ≤ {limit:g} ms"
        if block is small:
            title = common.small_pages_target(title)
        s = block.samples[k]
        v = s.median if s.n else None
        targets.append(_target(block, k, title, v, fmt_time, v is not None and v <= limit * 1e6))
    pages_text = common.small_pages_text(
        "the ndshm rows with a fresh shared result (the workers allocate its pages as they write "
        "their blocks; the parent, which creates it, decides their size), with numpy's one-process "
        "row again for comparison (private memory, which the variable does not change). Their "
        '"x numpy" compares with numpy\'s row of their own block, "x hand-written" with the '
        "default block's hand-written rows (SharedMemory), and the pools are the same ones, "
        "already running",
        common.huge_probe_text("one more fresh `map_blocks`", huge, touched=True),
    )
    headers = (
        "contender",
        "median",
        "min",
        "n",
        "x numpy one process (medians)",
        "x numpy (mins)",
        "x hand-written (medians)",
        "issue anchor",
        "x anchor (median)",
    )
    body = f"""
`r = y[:, None] * x[None, :]` for y of {rows_n:,} and x of {cols:,} float64
(result {nbytes / 1e9:.2f} GB). The hand-written pool is a
`multiprocessing.Pool({WORKERS})` (fork) started before timing; each of its
{WORKERS} tasks receives its half of y and all of x (pickled, {(rows_n // 2 + cols) * 8 // 1024} KiB),
opens the result `SharedMemory` by name and computes its half of the rows
into it with `np.multiply(..., out=)`; the time runs until `Pool.map`
returns and the parent has wrapped the segment in an array. "Attach per
call" is the plain way to write it: each call maps the segment afresh, so
its pages are faulted into the worker again even though the segment
itself is pre-faulted; "keep their mapping" caches the mapping in each
worker across calls (the best case by hand). "Fresh SharedMemory per run"
is end to end: the segment is created inside the timing and its pages are
allocated by the workers' writes.

`ndshm.Pool({WORKERS})` (default start method, started before timing)
runs `map_blocks` over the broadcast views `y[:, None]` and `x[None, :]` of
shared copies of y and x, with automatic chunks (blocks of about 4 MiB of
rows); the time runs until the call returns the result. Two paths: a
ufunc (`np.multiply`), which a worker calls with `out=` its block of the
result, and a Python function (`lambda a, b: a * b`, a new lambda per
call, sent with cloudpickle), whose returned block the worker copies
into the result. "Reused" writes into one shared `out` made and filled
with zeros (pre-faulted) before the rounds; "fresh" lets `map_blocks`
allocate a new shared result inside the timing. The module-level
`ndshm.map_blocks(..., workers={WORKERS})` reference starts and stops a pool
inside the call. "x hand-written" compares a row with the hand-written
pool of the same kind: reused result with "attach per call", fresh with
"fresh SharedMemory".

Freeing a result (numpy's array, a fresh segment's close + unlink, a
fresh ndshm result's last reference) happens after timing, as does
checking four entries of it. Every contender is run once untimed first (the first touch
of fresh memory on this VM is several times slower than later ones).
The rows that allocate fresh memory (numpy's fresh result, a fresh
SharedMemory) are the noisy ones on this machine, a Firecracker VM: memory
the guest frees seems to go back to the host within a second or so, and
touching it again then costs a host fault per page. Measured while writing
this suite: `np.multiply.outer` into a fresh 1.6 GB result took 0.18-0.24 s
when repeated back to back, 0.2-1.2 s after a 1 s pause and 0.9-1.8 s after
3-6 s. Contenders here run in between, so those rows' medians can carry
that cost and vary from run to run; their minimums are closer to what the
code costs.
{cfg.seed_rounds} rounds, contenders shuffled in each; numpy's
single-process rows use one CPU, the pools two. {rounds.load}

{table(headers, rows, align="lrrrrrrrr")}

{pages_text}

Targets:

{table(("target", "measured (median)", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        hugepages=common.huge_pages_setup(),
        shape=shape,
        small_pages=small.raw(huge_mib=huge),
    )
    return Result(f"(c) Seed workload: outer product into a {nbytes / 1e9:.1f} GB result", body, raw)


def bench_cpu(cfg: Config, log: Callable[[str], None]) -> Result:
    shape = (cfg.cpu_rows, cfg.cpu_cols)
    nbytes = cfg.cpu_rows * cfg.cpu_cols * F8.itemsize
    a = np.random.default_rng(8).random(shape)
    resource_tracker.ensure_running()
    # Every contender computes under the same malloc settings (those
    # ndshm's workers set), except "hand_plain", which shows glibc's
    # defaults: a fresh process's temporaries then go back to the kernel
    # after each use, and faulting them in again costs more than the
    # arithmetic. The one process runs in a process of its own, so the
    # harness's own malloc history cannot slow it down or speed it up.
    one_pool = mp.Pool(1, initializer=keep_freed_memory)
    pool = mp.Pool(WORKERS, initializer=keep_freed_memory)
    plain = mp.Pool(WORKERS)
    npool = None
    made: list[shared_memory.SharedMemory] = []
    keep_nd: dict[str, Any] = {}
    bounds = [cfg.cpu_rows * k // cfg.cpu_tasks for k in range(cfg.cpu_tasks + 1)]
    blocks = list(itertools.pairwise(bounds))
    try:
        for p in (one_pool, pool, plain):
            p.map(inc, range(100), chunksize=1)
        sin = shared_memory.SharedMemory(create=True, size=nbytes, name=_shm_tag())
        made.append(sin)
        sout = shared_memory.SharedMemory(create=True, size=nbytes, name=_shm_tag())
        made.append(sout)
        np.copyto(np.ndarray(shape, F8, buffer=sin.buf), a)
        np.ndarray(shape, F8, buffer=sout.buf).fill(0.0)
        tasks = [(sin.name, sout.name, shape, lo, hi) for lo, hi in blocks]
        ref: dict[str, np.ndarray] = {}

        def check(r: np.ndarray) -> None:
            if "r" not in ref:
                ref["r"] = r.copy()
            elif not np.array_equal(r, ref["r"]):
                raise AssertionError("results differ between contenders")
            r[[0, -1], [0, -1]] = -1.0  # the next run must rewrite

        def check_shared() -> None:
            r = np.ndarray(shape, F8, buffer=sout.buf)
            check(r)
            del r

        def run_one() -> int:
            dt = one_pool.apply(_cpu_one, ((sin.name, sout.name, shape),))
            check_shared()
            return dt

        def by_hand(p: Any) -> Callable[[], int]:
            def run() -> int:
                t0 = perf_counter_ns()
                p.map(_cpu_task, tasks, chunksize=1)
                dt = perf_counter_ns() - t0
                check_shared()
                return dt

            return run

        fns: dict[str, Callable[[], int]] = {
            "one": run_one,
            "hand": by_hand(pool),
            "hand_plain": by_hand(plain),
        }
        if have_pool():
            try:
                npool = ndshm.Pool(workers=WORKERS)
                npool.map(inc, range(100))
                keep_nd["a"] = ndshm.from_array(a)
                keep_nd["out"] = ndshm.empty(shape, F8)
                keep_nd["out"].fill(0.0)

                def run_nd() -> int:
                    t0 = perf_counter_ns()
                    npool.map_blocks(cpu_block, keep_nd["a"], out=keep_nd["out"])
                    dt = perf_counter_ns() - t0
                    check(keep_nd["out"])
                    return dt

                fns["ndshm"] = run_nd
            except Exception as e:
                keep_nd["error"] = err(e)
                log(f"cpu: ndshm set-up failed: {keep_nd['error']}")
        rounds = Rounds(["one", "hand", "hand_plain", "ndshm"], seed=54)
        if "error" in keep_nd:
            rounds.errors["ndshm"] = keep_nd["error"]
        for k, f in fns.items():  # warm-up
            try:
                f()
            except Exception as e:
                rounds.errors[k] = err(e)
                log(f"cpu: {k} failed: {rounds.errors[k]}")
        rounds.run(fns, cfg.cpu_rounds, log, "cpu")
    finally:
        for p in (one_pool, pool, plain):
            p.terminate()
            p.join()
        if npool is not None:
            with suppress(Exception):
                npool.shutdown(wait=True)
        keep_nd.clear()
        for s in made:
            s.close()
            with suppress(FileNotFoundError):
                s.unlink()
    one = rounds.med("one")
    labels = {
        "one": "numpy, one process (the same row blocks, in a loop)",
        "hand": f"Pool + SharedMemory by hand ({cfg.cpu_tasks} row blocks dealt one at a time)",
        "hand_plain": "the same hand-written pool with glibc's default malloc settings",
        "ndshm": "`ndshm.Pool.map_blocks(cpu_block, a, out=out)` (automatic chunks)",
    }
    rows = []
    for k, label in labels.items():
        s = rounds.samples[k]
        if k in rounds.errors or not s.n:
            rows.append((label, rounds.cell(k, str), "", "", ""))
            continue
        rows.append((label, fmt_time(s.median), fmt_time(s.min), s.n, fmt_ratio(one / s.median)))
    nd = rounds.samples["ndshm"]
    what = f"ndshm speedup over one process ≥ {TARGET_SPEEDUP:g}x ({WORKERS} workers)"
    if "ndshm" in rounds.errors:
        target = (what, rounds.errors["ndshm"], "")
    elif not nd.n:
        target = (what, NOT_YET, "")
    else:
        sp = one / nd.median
        target = (what, fmt_ratio(sp), verdict(sp >= TARGET_SPEEDUP))
    hand_sp = one / rounds.med("hand")
    body = f"""
A CPU-bound block workload: `kernel(b) = sin(b) + sum over k = 2..{CPU_TERMS} of
exp(-k b) sin(k b) / k`, element-wise, on a {cfg.cpu_rows:,} x {cfg.cpu_cols:,}
float64 array ({nbytes / 2**20:.0f} MiB in, as much out), applied {CPU_STEP} rows
at a time (the temporaries stay in cache). The one process is a
process of its own (a `multiprocessing.Pool(1)` started before timing)
that loops over the rows of a private copy of the input into a
pre-faulted private output; only its loop is timed. The hand-written
pool is a `multiprocessing.Pool({WORKERS})` (fork) started before timing,
whose workers open the input and output `SharedMemory` by name (mappings
kept across calls) and compute {cfg.cpu_tasks} row blocks handed out one at
a time (`chunksize=1`), so a worker slowed down by other processes takes
fewer. `ndshm.Pool({WORKERS})` (started before timing) runs `map_blocks` with
automatic chunks over a shared copy of the input, into a pre-faulted
shared output; its function `cpu_block` runs the same {CPU_STEP}-row loop over
its block into a new array, which the worker copies into the output.

Malloc settings: ndshm's workers tell glibc to keep freed memory
(`mallopt`: `M_TRIM_THRESHOLD` 256 MiB, `M_MMAP_THRESHOLD` 32 MiB). The
one process and the hand-written pool's workers get the same settings
(an `initializer`), so every contender computes under the same
allocator. The "default malloc settings" row is the hand-written pool
without them: with glibc's defaults a fresh process hands its
{CPU_STEP}-row temporaries back to the kernel after each use and faults
them in again on the next (about 30,000 page faults per 256 rows, measured
while writing this), which is what a user's own pool gets.

Outputs are compared for equality between contenders. Speedup =
median one-process time / median time. {cfg.cpu_rounds} rounds,
contenders shuffled in each. {rounds.load} On this shared 2-CPU machine any other
running process takes CPU from one of the two workers, which caps the
speedup below what the code would reach alone: the hand-written
pool, whose own overhead is small ({cfg.cpu_tasks} tasks), is the practical
ceiling ({fmt_ratio(hand_sp)} in this run).

{table(("contender", "median", "min", "n", "speedup"), rows)}

Target:

{table(("target", "measured", ""), [target], align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        shape=shape,
    )
    return Result("(d) CPU-bound blocks: speedup with 2 workers", body, raw)


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

        _stop_loky()
        try:
            t0 = perf_counter_ns()
            r = Parallel(n_jobs=WORKERS)([delayed(inc)(1)])
            dt = perf_counter_ns() - t0
        finally:
            _stop_loky()
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

    if have_pool():
        fns["ndshm"] = run_ndshm
        fns["ndshm_fork"] = lambda: run_ndshm("fork")
        fns["ndshm_cold"] = run_ndshm_cold
        fns["ndshm_small"] = run_ndshm_small
    rounds = Rounds([k for k, _ in STARTUP_ROWS], seed=55)
    for k, f in fns.items():  # warm-up (imports, page cache)
        try:
            f()
        except Exception as e:
            rounds.errors[k] = err(e)
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
        targets.append(_target(rounds, k, what, v, fmt_time, v is not None and v <= TARGET_STARTUP_MS * 1e6))
    default_method = ndshm.startmethod.default_start_method() if have_pool() else "?"
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
    if have_pool():
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
        targets.append(_target(rounds, k, what, v, lambda x: f"{x:.3f} ms/s", ok))
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
threads, if any, use). The issue asks for idle workers asleep on a futex,
using ~0 CPU; this suite reads that as ≤ {TARGET_IDLE_MS:g} ms of CPU per second
for all workers together, checked on the schedstat column.
Medians over {cfg.idle_rounds} rounds, pools shuffled in each. {rounds.load}

{table(headers, rows)}

Target:

{table(("target", "measured (median)", ""), targets, align="lll")}
"""
    raw = {"samples": got, "errors": rounds.errors, "window_s": window, "load": rounds.load_raw}
    return Result("(f) Idle pool: CPU while waiting for work", body, raw)


# ------------------------------------------------------------------ suite protocol and main


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {
    "overhead": bench_overhead,
    "uneven": bench_uneven,
    "seed": bench_seed,
    "cpu": bench_cpu,
    "startup": bench_startup,
    "idle": bench_idle,
}
ORDER = [
    "(a) Per-task overhead",
    "(b) Uneven tasks",
    "(c) Seed workload",
    "(d) CPU-bound blocks",
    "(e) Pool start-up to first result",
    "(f) Idle pool",
]

INTRO = """
Parallel work (issue 3): `ndshm.Pool` (tasks dispatched through shared
memory) against `multiprocessing.Pool`, `concurrent.futures.ProcessPoolExecutor`,
joblib (loky), mpire and tqdm's `process_map`, all with 2 workers. Targets for
ndshm: ≤ 3 µs per trivial task at chunksize 1 and ≤ 0.1 µs with automatic
chunks; within 1.15x of ideal on uneven tasks; the 1.6 GB seed workload with
`map_blocks` in ≤ 300 ms into a reused pre-faulted `out` and ≤ 450 ms into a
fresh shared result; ≥ 1.85x speedup on a CPU-bound block workload; ≤ 20 ms
from constructing a pool to the first result; ~0 CPU in an idle pool.
The other tools are measured in the same run, next to the issue's
anchors (measured on a quieter day). Run with `.venv/bin/python
benchmarks/pool_bench.py` (`--quick` for a smoke run; the extra packages are
pinned in `benchmarks/requirements.txt`).
"""


def _mine_in_shm() -> set[str]:
    """Entries of /dev/shm this process made (named after its pid)."""
    pid = os.getpid()
    pat = re.compile(rf"(bench[-_]|sem\.loky-|sem\.mp-|joblib_memmapping_folder_){pid}\b")
    try:
        return {n for n in os.listdir("/dev/shm") if pat.search(n)}
    except OSError:
        return set()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the chosen benchmarks, prints the tables, returns the results."""
    import common

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes, one or two rounds: a smoke run")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--write", action="store_true", help=f"rewrite the '{SECTION}' section of RESULTS.md")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    chosen = args.benchmarks or list(BENCHMARKS)
    cfg = QUICK if args.quick else FULL
    log = Progress()
    before = _mine_in_shm()
    env = common.environment()
    command = " ".join([".venv/bin/python benchmarks/pool_bench.py", *(argv or sys.argv[1:])])
    quick = " (quick smoke run)" if args.quick else ""
    print(f"## {SECTION}{quick}\n\n{common.environment_md(env, command)}")
    t0 = time.monotonic()
    results = []
    for name in chosen:
        log(f"{name}: start")
        res = BENCHMARKS[name](cfg, log)
        results.append(res)
        print(f"\n### {res.title}\n{res.body}", flush=True)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while (left := sorted(_mine_in_shm() - before)) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.2)
    left = [n for n in left if not n.startswith("joblib_memmapping_folder_")]  # removed at exit
    shm = "LEFT BEHIND: " + ", ".join(left) if left else "nothing left"
    print(f"\nTook {elapsed:.0f} s. /dev/shm: {shm}.")
    out = {
        "env": env,
        "config": asdict(cfg),
        "elapsed_s": elapsed,
        "shm_left": left,
        "results": {r.title: r.raw for r in results},
    }
    if args.json:
        args.json.write_text(json.dumps(out, default=str))
    if args.write:
        mode = "quick smoke run, not representative" if args.quick else "full run"
        intro = (
            INTRO.strip()
            + f"\n\nLast run ({mode}; the subsections it re-ran carry its date):\n\n"
            + common.environment_md(env, command, elapsed)
        )
        subs = {r.title: f"_Measured {env['date']}, {mode}._\n\n{r.body.strip()}" for r in results}
        common.update_section(SECTION, intro, subs, ORDER)
        print(f"updated {common.RESULTS.relative_to(REPO)} (section '{SECTION}')")
    return out


if __name__ == "__main__":
    main()
