"""Parallel work, CPU-bound blocks: one process against a hand-written
2-process pool and ``ndshm.Pool.map_blocks`` (speedup)."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import sys
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Result,
    Rounds,
    close_contenders,
    error_text,
    fmt_ratio,
    fmt_time,
    shm_tag,
    table,
    verdict,
)
from pool_contenders import (
    CPU_STEP,
    CPU_TERMS,
    F8,
    TARGET_SPEEDUP,
    WORKERS,
    Config,
    attach_shm,
    inc,
    versions_line,
)

import ndshm
from ndshm._worker import keep_freed_memory  # the malloc settings of ndshm's workers


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
    a = np.ndarray(shape, F8, buffer=attach_shm(in_name, True).buf)
    out = np.ndarray(shape, F8, buffer=attach_shm(out_name, True).buf)
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
        _PRIVATE[in_name] = np.array(np.ndarray(shape, F8, buffer=attach_shm(in_name, True).buf))
        _PRIVATE[out_name] = np.zeros(shape, F8)
    a, out = _PRIVATE[in_name], _PRIVATE[out_name]
    t0 = perf_counter_ns()
    _cpu_rows(a, out, 0, shape[0])
    dt = perf_counter_ns() - t0
    np.copyto(np.ndarray(shape, F8, buffer=attach_shm(out_name, True).buf), out)
    return dt


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
        sin = shared_memory.SharedMemory(create=True, size=nbytes, name=shm_tag())
        made.append(sin)
        sout = shared_memory.SharedMemory(create=True, size=nbytes, name=shm_tag())
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
            keep_nd["error"] = error_text(e)
            log(f"cpu: ndshm set-up failed: {keep_nd['error']}")
        rounds = Rounds(["one", "hand", "hand_plain", "ndshm"], seed=54)
        if "error" in keep_nd:
            rounds.errors["ndshm"] = keep_nd["error"]
        for k, f in fns.items():  # warm-up
            try:
                f()
            except Exception as e:
                rounds.errors[k] = error_text(e)
                log(f"cpu: {k} failed: {rounds.errors[k]}")
        rounds.run(fns, cfg.cpu_rounds, log, "cpu")
    finally:
        close_contenders((one_pool, pool, plain), npool, keep_nd, made)
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
        target = (what, "n/a", "")
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
