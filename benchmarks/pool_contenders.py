"""What the parallel-work benchmarks share: their configuration, targets
and reference figures, the task functions the workers run, and one `map`
on a fresh pool of each tool (``timed_map``)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    Rounds,
    gc_paused,
    stop_loky,
    verdict,
)

import ndshm

WORKERS = 2
F8 = np.dtype(np.float64)

# Prior figures, quoted when the targets were set (2 workers), in µs per task or ms.
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


def versions_line() -> str:
    """The versions of the contenders that common.environment() does not list."""
    names = ("mpire", "tqdm", "joblib", "cloudpickle", "matplotlib")
    vs = ", ".join(f"{n} {common.package_version(n)}" for n in names)
    return (
        f"Contenders: {vs}; Python {sys.version.split()[0]} (default start method `{mp.get_start_method()}`)."
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


_ATTACHED: dict[str, shared_memory.SharedMemory] = {}


def attach_shm(name: str, keep: bool) -> shared_memory.SharedMemory:
    """Opens a SharedMemory in a worker; `keep` caches the mapping for the
    worker's lifetime (the best a hand-written pool can do)."""
    if not keep:
        return shared_memory.SharedMemory(name=name)
    s = _ATTACHED.get(name)
    if s is None:
        s = _ATTACHED[name] = shared_memory.SharedMemory(name=name)
    return s


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
            stop_loky()
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


def fmt_us(v: float) -> str:
    if v != v:
        return "n/a"
    if v < 1:
        return f"{v:.3f} µs"
    if v < 10:
        return f"{v:.2f} µs"
    return f"{v:.1f} µs"


def target_row(
    rounds: Rounds, key: str, what: str, value: float | None, fmt: Callable[[float], str], met: bool
) -> tuple[str, str, str]:
    """A row of a targets table: the error, "not yet", or the value and its verdict."""
    if key in rounds.errors:
        return (what, rounds.errors[key], "")
    if value is None or value != value:
        return (what, "n/a", "")
    return (what, fmt(value), verdict(met))
