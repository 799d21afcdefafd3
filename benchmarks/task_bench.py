"""Per-task overhead of a warm ``ndshm.Pool(2)``: ``map`` of a trivial
function over ints at chunksize 1 (each item a task) and with automatic
chunks, and ``starmap`` of pairs at chunksize 1. Public API only, so
that two builds can be measured side by side, alternated:

    for i in 1 2 3; do
        /path/to/old/.venv/bin/python benchmarks/task_bench.py
        .venv/bin/python benchmarks/task_bench.py
    done

Prints the median and the best µs per task over the calls.
"""

from __future__ import annotations

import statistics
import sys
from time import perf_counter_ns

import ndshm

ITEMS = 20_000
CALLS = 21


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def main() -> None:
    items = list(range(ITEMS))
    pairs = [(i, 1) for i in items]
    expect = [i + 1 for i in items]
    calls = {
        "map, chunksize 1": lambda pool: pool.map(inc, items, chunksize=1),
        "starmap, chunksize 1": lambda pool: pool.starmap(add, pairs, chunksize=1),
        "map, automatic chunks": lambda pool: pool.map(inc, items),
    }
    rows = {}
    with ndshm.Pool(2) as pool:
        for what, call in calls.items():
            call(pool)  # warm up: workers started, the function's first job seen
            times = []
            for _ in range(CALLS):
                t0 = perf_counter_ns()
                got = call(pool)
                times.append(perf_counter_ns() - t0)
                if got != expect:
                    raise SystemExit(f"{what}: wrong results")
            rows[what] = (statistics.median(times) / ITEMS / 1e3, min(times) / ITEMS / 1e3)
    width = max(map(len, rows))
    print(f"# {sys.prefix}  {ITEMS:,} items, {CALLS} calls each, median and best µs per item")
    for what, (med, best) in rows.items():
        print(f"{what:<{width}}  {med:7.3f}  {best:7.3f}")


if __name__ == "__main__":
    main()
