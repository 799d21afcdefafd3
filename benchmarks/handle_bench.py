"""Handles in one process: pickling a view, unpickling it (the segment
mapped already, as in a worker that receives the same array task after
task), and a fresh attach by name. Public API only, so that two builds
can be measured side by side:

    for i in 1 2 3; do
        /path/to/old/.venv/bin/python benchmarks/handle_bench.py
        .venv/bin/python benchmarks/handle_bench.py
    done

Prints the median ns per operation over batches.
"""

from __future__ import annotations

import gc
import os
import pickle
import statistics
import sys
from time import perf_counter_ns

import numpy as np

import ndshm

BATCH = 2000
BATCHES = 41


def median_ns(fn) -> float:
    fn(200)  # warm up
    return statistics.median(fn(BATCH) / BATCH for _ in range(BATCHES))


def main() -> None:
    gc.disable()
    name = f"hb{os.getpid()}"
    anon = ndshm.zeros((1000, 1000))
    named = ndshm.zeros((1000, 1000), name=name)
    try:
        views = {"anonymous": anon[1::2, ::3], "named": named[1::2, ::3]}
        rows = {}
        for kind, v in views.items():
            data = pickle.dumps(v, protocol=5)
            held = pickle.loads(data)  # keeps the mapping, as a worker's cache does

            def dumps(n: int, v=v) -> int:
                t0 = perf_counter_ns()
                for _ in range(n):
                    pickle.dumps(v, protocol=5)
                dt = perf_counter_ns() - t0
                return dt

            def loads(n: int, data=data) -> int:
                t0 = perf_counter_ns()
                for _ in range(n):
                    pickle.loads(data)
                return perf_counter_ns() - t0

            rows[f"pickle a view ({kind})"] = median_ns(dumps)
            rows[f"unpickle a view ({kind}, mapped)"] = median_ns(loads)
            if kind == "anonymous":
                # Settle the handoffs the pickles above counted and the loads
                # did not (each load settles one).
                for _ in range(anon_pending(anon)):
                    pickle.loads(data)
            del held

        def attach(n: int) -> int:
            total = 0
            for _ in range(n):
                t0 = perf_counter_ns()
                x = ndshm.attach(name)
                total += perf_counter_ns() - t0
                del x
            return total

        rows["attach by name (mapped)"] = median_ns(attach)
        width = max(map(len, rows))
        print(f"# {sys.prefix}  {len(pickle.dumps(views['anonymous'], protocol=5))} B per handle")
        for k, ns in rows.items():
            print(f"{k:<{width}}  {ns:8.0f} ns")
        pickle.loads(pickle.dumps(anon))
    finally:
        ndshm.delete(name)


def anon_pending(a: np.ndarray) -> int:
    seg = a.base
    while not hasattr(seg, "pending"):
        seg = seg.base
    return seg.pending


if __name__ == "__main__":
    main()
