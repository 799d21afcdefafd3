"""Core benchmarks: handing an array to a worker, attaching a
named segment, and making a shared copy of an array.

Every benchmark runs all its contenders in one process, interleaved
round-robin (in a seeded, evenly spread order), and reports medians and
minima over many repetitions: the machine is shared and noisy, so single
timings mean little. Everything created is deleted again; the run checks
that nothing it made is left in /dev/shm.
"""

from __future__ import annotations

from collections.abc import Callable

from common import GiB, MiB, Result
from core_attach import bench_attach
from core_from_array import bench_from_array
from core_handoff import bench_handoff
from core_shared import Config

SECTION = "Core: handoff and attach"


FULL = Config(
    handoff_sizes=[64 * MiB, 256 * MiB, 1 * GiB],
    handoff_rounds={64 * MiB: 21, 256 * MiB: 11, 1 * GiB: 9},
    handoff_fast_inner={64 * MiB: 12, 256 * MiB: 24, 1 * GiB: 40},
    joblib_inner=4,
    attach_sizes=[1 * MiB, 1 * GiB],
    attach_iters=3000,
    attach_distinct=250,
    attach_distinct_size=1 * MiB,
    attach_passes=6,
    from_array_size=1 * GiB,
    from_array_reps=15,
    from_array_idle_rounds=5,
)

QUICK = Config(
    handoff_sizes=[8 * MiB, 64 * MiB],
    handoff_rounds={8 * MiB: 3, 64 * MiB: 3},
    handoff_fast_inner={8 * MiB: 10, 64 * MiB: 10},
    joblib_inner=2,
    attach_sizes=[1 * MiB],
    attach_iters=300,
    attach_distinct=50,
    attach_distinct_size=1 * MiB,
    attach_passes=1,
    from_array_size=64 * MiB,
    from_array_reps=3,
    from_array_idle_rounds=1,
)


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {
    "handoff": bench_handoff,
    "attach": bench_attach,
    "from_array": bench_from_array,
}
ORDER = ["(a) Handoff to a pre-started worker", "(b) Attach latency of a named segment", "(c) from_array"]

INTRO = """
The core promise: a shared array reaches another process for the
cost of an empty task, whatever its size; attaching a named array costs a
few µs; making a shared copy runs at memory speed. Run with `make bench`
(all suites) or `.venv/bin/python benchmarks/run.py handoff attach
from_array` (a subset; `--quick` for a smoke run that writes nothing).
Raw timings of the last run are in `benchmarks/out/` (not committed).
Named segments are made in a private directory on the same tmpfs
(`NDSHM_DIR=/dev/shm/bench-ndshm-PID`, removed at the end) so that other
processes sharing /dev/shm cannot remove them mid-run (an earlier leak
check of the test suite removed every new `/dev/shm/ndshm-*` file when a
session ended, which broke two runs); everything else the suites create is
removed as they go, and `run.py` checks that nothing of theirs is left in
/dev/shm.
"""
