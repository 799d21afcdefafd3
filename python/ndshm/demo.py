"""`ndshm demo`: hand a big array to two worker processes, as a shared
array and as a pickled copy, and compare.

    python -m ndshm.demo [--size MIB] [--workers N]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import time

import numpy as np

import ndshm


def _half_sum(arr: np.ndarray, part: int, parts: int) -> float:
    n = len(arr)
    return float(arr[part * n // parts : (part + 1) * n // parts].sum())


def _warm(_: int) -> int:
    return 0


def _touch(arr: np.ndarray) -> float:
    return float(arr[-1])


def _handoff(pool: cf.Executor, arr: np.ndarray, workers: int) -> float:
    t = time.perf_counter()
    list(pool.map(_touch, [arr] * workers))
    return time.perf_counter() - t


def _run(pool: cf.Executor, arr: np.ndarray, workers: int) -> tuple[float, float]:
    t = time.perf_counter()
    total = sum(pool.map(_half_sum, [arr] * workers, range(workers), [workers] * workers))
    return time.perf_counter() - t, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ndshm demo", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="array size in MiB (default 1024)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = ap.parse_args(argv)
    if args.size <= 0 or args.workers <= 0:
        ap.error("--size and --workers must be positive")
    n = args.size * (1 << 20) // 8
    print(f"array: {n:,} float64 ({args.size} MiB); {args.workers} workers (spawn)")

    t = time.perf_counter()
    shared = ndshm.full(n, 1.0)
    private = np.ones(n)
    print(f"setup: {time.perf_counter() - t:.2f} s")

    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        list(pool.map(_warm, range(args.workers * 4)))  # workers started before timing
        h_shared = _handoff(pool, shared, args.workers)
        h_pickled = _handoff(pool, private, args.workers)
        t_shared, s1 = _run(pool, shared, args.workers)
        t_pickled, s2 = _run(pool, private, args.workers)
    assert s1 == s2 == float(n), (s1, s2, n)
    print(f"{'':20}{'handoff only':>14}{'handoff + sum':>16}")
    print(f"{'ndshm shared array':20}{h_shared * 1e3:11.1f} ms{t_shared * 1e3:13.1f} ms  (a handle per task)")
    print(f"{'pickled ndarray':20}{h_pickled * 1e3:11.1f} ms{t_pickled * 1e3:13.1f} ms  (a copy per task)")
    print(f"{'speed-up':20}{h_pickled / h_shared:12.0f}x{t_pickled / t_shared:14.1f}x")
    print(f"both computed sum = {s1:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
