"""Parallel work, the seed workload: ``r = y[:, None] * x[None, :]``
(1.6 GB of float64) in one numpy process, with a hand-written ``Pool`` +
``SharedMemory`` and with ``ndshm.Pool.map_blocks``."""

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

import common
from common import (
    Result,
    Rounds,
    error_text,
    fmt_ratio,
    fmt_time,
    gc_paused,
    shm_tag,
    table,
)
from pool_contenders import (
    ANCHOR_SEED_MS,
    F8,
    TARGET_SEED_FRESH_MS,
    TARGET_SEED_REUSED_MS,
    WORKERS,
    Config,
    attach_shm,
    inc,
    target_row,
    versions_line,
)

import ndshm


def _outer_task(args: tuple) -> int:
    """Hand-written worker of the seed workload: rows lo:hi of y[:, None] * x."""
    name, shape, lo, hi, y_part, x, keep = args
    s = attach_shm(name, keep)
    try:
        r = np.ndarray(shape, F8, buffer=s.buf)
        np.multiply(y_part[:, None], x[None, :], out=r[lo:hi])
        del r
    finally:
        if not keep:
            s.close()
    return hi - lo


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
        reused = shared_memory.SharedMemory(create=True, size=nbytes, name=shm_tag())
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
            s = shared_memory.SharedMemory(create=True, size=nbytes, name=shm_tag())
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
            keep_nd["error"] = error_text(e)
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
                small.errors[f"{k}_off"] = rounds.errors.get(k) or keep_nd.get("error", "n/a")
        with common.huge_pages_off():
            with gc_paused():
                small_fns = {f"{k}_off": fns[k] for k in SEED_SMALL if k in fns}
                small.run(small_fns, cfg.seed_rounds, log, "seed, NDSHM_HUGE_PAGES=off", warmups=2)
            huge["off"] = probe()
    finally:
        common.close_contenders((pool,), npool, keep_nd, made)
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
        targets.append(target_row(block, k, title, v, fmt_time, v is not None and v <= limit * 1e6))
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
        "prior figure",
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
