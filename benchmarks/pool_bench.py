"""Pool benchmarks: the parallel engine against the tools users
would otherwise pick.

    .venv/bin/python benchmarks/pool_bench.py            # everything (~6 min)
    .venv/bin/python benchmarks/pool_bench.py --quick    # a smoke run (~1 min)
    .venv/bin/python benchmarks/pool_bench.py overhead startup --write   # these two; updates RESULTS.md

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
measured in every section. A contender that fails is reported with its
error and the others carry on.

Contenders are interleaved: each round runs every contender once, in a
seeded shuffled order, and the tables give medians over the rounds (the
machine is shared and noisy). Every SharedMemory made here is unlinked;
the run checks that nothing it made is left in /dev/shm.

The module follows the suite protocol of ``benchmarks/run.py`` (SECTION,
INTRO, ORDER, BENCHMARKS, FULL, QUICK); each section lives in a module of its
own (pool_overhead, pool_uneven, pool_seed, pool_cpu, pool_startup) and what
they share in pool_contenders. By itself it runs through run.py and writes
RESULTS.md only with ``--write``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Result
from pool_contenders import Config
from pool_cpu import bench_cpu
from pool_overhead import bench_overhead
from pool_seed import bench_seed
from pool_startup import bench_idle, bench_startup
from pool_uneven import bench_uneven

SECTION = "Parallel work"

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


# ------------------------------------------------------------------ suite protocol


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
Parallel work: `ndshm.Pool` (tasks dispatched through shared
memory) against `multiprocessing.Pool`, `concurrent.futures.ProcessPoolExecutor`,
joblib (loky), mpire and tqdm's `process_map`, all with 2 workers. Targets for
ndshm: ≤ 3 µs per trivial task at chunksize 1 and ≤ 0.1 µs with automatic
chunks; within 1.15x of ideal on uneven tasks; the 1.6 GB seed workload with
`map_blocks` in ≤ 300 ms into a reused pre-faulted `out` and ≤ 450 ms into a
fresh shared result; ≥ 1.85x speedup on a CPU-bound block workload; ≤ 20 ms
from constructing a pool to the first result; ~0 CPU in an idle pool.
The other tools are measured in the same run, next to prior figures
(quoted when the targets were set, measured on a quieter day). Run with
`.venv/bin/python benchmarks/pool_bench.py` (`--quick` for a smoke run; the extra packages are
pinned in `benchmarks/requirements.txt`).
"""


if __name__ == "__main__":
    sys.exit(common.standalone(BENCHMARKS))
