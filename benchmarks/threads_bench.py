"""Threads against processes: the same blocks of a block-wise workload run by
a ``ThreadPoolExecutor`` of the process itself and by ndshm's worker
processes, in the same run.

    .venv/bin/python benchmarks/threads_bench.py            # full (~2 min)
    .venv/bin/python benchmarks/threads_bench.py --quick    # a smoke run

Two workloads:

1. The demo kernel (``python/ndshm/demo.py``): ``r = kernel(y[:, None],
   x[None, :])``, kernel(a, b) = sin(ab) exp(-ab) + sqrt(ab) cos(ab), a
   Python function of several numpy calls, in blocks of 50 rows.
2. The seed workload ``r = y[:, None] * x[None, :]``: one ufunc
   (``np.multiply``), in the blocks ``map_blocks`` picks (about 4 MiB).

Contenders, each writing every block into a preallocated result (a shared
array, zero-filled once so its pages are in place; one per contender):
numpy in one thread on the whole arrays (its own fresh result, as written
by hand); a ``ThreadPoolExecutor`` of as many threads as ndshm has
workers over the same blocks; ``ndshm.map_blocks(..., executor="threads")``
(the same, through ndshm); ``ndshm.map_blocks(..., workers=N)``, which starts its
pool inside the call; and ``Pool.map_blocks`` on a pool started before the
rounds. Rounds interleave the contenders in a seeded shuffled order; the
tables give medians. Every result is checked against numpy's.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Result, Samples, fmt_ratio, fmt_time, gc_paused, table

import ndshm
from ndshm.blocks import blocks, normalize_chunks
from ndshm.demo import BLOCK_ROWS, COLS, kernel

SECTION = "Threads against processes"
ORDER = ["(a) Demo kernel and seed workload, threads against processes"]

INTRO = """
When a block function spends its time in numpy calls that release the GIL,
threads of one process can run blocks in parallel too, with no process to
start and nothing to hand over. This suite runs the same blocks on a
`ThreadPoolExecutor` and on ndshm's worker processes, in the same run, so
that the choice between them rests on figures (docs/ENGINE.md, "Threads or
processes"). Run with `.venv/bin/python benchmarks/run.py threads` (or
`benchmarks/threads_bench.py [--quick]` for the tables only).
"""


@dataclass
class Config:
    demo_rows: int
    seed_rows: int
    rounds: int


FULL = Config(demo_rows=12_000, seed_rows=20_000, rounds=5)
QUICK = Config(demo_rows=1_000, seed_rows=2_000, rounds=1)


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _threads(fn: Callable, y: np.ndarray, x: np.ndarray, out: np.ndarray, chunks: Any, n: int) -> np.ndarray:
    """The hand-written way: a thread pool over the blocks, each written
    into its part of `out` (a ufunc with ``out=``, a function's result
    copied in)."""
    a, b = y[:, None], x[None, :]

    def one(sl: tuple[slice, ...]) -> None:
        ya, xb = a[sl[0]], b[:, sl[1]]
        if isinstance(fn, np.ufunc):
            fn(ya, xb, out=out[sl])
        else:
            out[sl] = fn(ya, xb)

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        for f in [ex.submit(one, sl) for sl in blocks(out.shape, chunks)]:
            f.result()
    return out


def _workload(
    wname: str, fn: Callable, rows: int, chunks: Any, n: int, pool: ndshm.Pool, cfg: Config, log: Callable
) -> dict[str, Samples]:
    """Times every contender on one workload; its arrays go when it returns."""
    y = ndshm.from_array(np.linspace(0.0, 3.0, rows))
    x = ndshm.from_array(np.linspace(0.0, 2.0, COLS))
    shape = (rows, COLS)
    if chunks is None:
        chunks = normalize_chunks(None, shape, 8)
    nblocks = sum(1 for _ in blocks(shape, chunks))
    log(f"threads: {wname}, {rows} x {COLS}, {nblocks} blocks")
    expect = fn(np.asarray(y)[:, None], np.asarray(x)[None, :])
    a, b = y[:, None], x[None, :]
    outs = [ndshm.zeros(shape) for _ in range(4)]
    contenders: dict[str, Callable[[], np.ndarray]] = {
        "numpy, one thread (whole arrays)": lambda: fn(np.asarray(y)[:, None], np.asarray(x)[None, :]),
        f"ThreadPoolExecutor({n}) over the blocks": lambda: _threads(fn, y, x, outs[0], chunks, n),
        f'ndshm.map_blocks(executor="threads"), workers={n}': lambda: ndshm.map_blocks(
            fn, a, b, chunks=chunks, out=outs[1], executor="threads", workers=n
        ),
        f"ndshm.map_blocks(workers={n}), pool started in the call": lambda: ndshm.map_blocks(
            fn, a, b, chunks=chunks, out=outs[2], workers=n
        ),
        f"ndshm.Pool({n}).map_blocks, pool started before": lambda: pool.map_blocks(
            fn, a, b, chunks=chunks, out=outs[3]
        ),
    }
    rng = random.Random(16)
    samples = {label: Samples(label) for label in contenders}
    for r in range(cfg.rounds):
        order = list(contenders)
        rng.shuffle(order)
        for label in order:
            with gc_paused():
                t = time.perf_counter_ns()
                got = contenders[label]()
                samples[label].add(time.perf_counter_ns() - t)
            if r == 0 and not np.allclose(got, expect, rtol=1e-12, atol=0.0):
                raise AssertionError(f"{wname}: {label} computed a different result")
            del got
        log(f"threads: {wname} round {r + 1}/{cfg.rounds}")
    return samples


def bench_threads(cfg: Config, log: Callable[[str], None]) -> Result:
    n = _workers()
    workloads = [
        ("demo kernel", kernel, cfg.demo_rows, (BLOCK_ROWS, -1)),
        ("seed (np.multiply)", np.multiply, cfg.seed_rows, None),
    ]
    rows_out: list[list[str]] = []
    raw: dict[str, Any] = {"workers": n, "rounds": cfg.rounds}
    with ndshm.Pool(n) as pool:
        for wname, fn, rows, chunks in workloads:
            samples = _workload(wname, fn, rows, chunks, n, pool, cfg, log)
            base = samples["numpy, one thread (whole arrays)"].median
            for label, s in samples.items():
                rows_out.append([wname, label, fmt_time(s.median), fmt_ratio(base / s.median)])
            raw[wname] = {label: s.ns for label, s in samples.items()}
    body = (
        f"\n{n} threads or {n} worker processes; medians of {cfg.rounds} rounds; speed-up against "
        "numpy in one thread on the whole arrays.\n\n"
        + table(["workload", "contender", "median", "speed-up"], rows_out, "llrr")
        + "\n"
    )
    return Result(ORDER[0], body, raw)


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {"threads": bench_threads}


if __name__ == "__main__":
    sys.exit(common.standalone(BENCHMARKS))
