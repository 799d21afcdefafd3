"""``map_blocks(..., executor="threads")``: the blocks of a planned
``map_blocks`` call run on threads of the calling process instead of worker
processes. Pays where the block function spends its time in code that
releases the GIL (numpy ufuncs on big blocks): no process to start, nothing
to hand over. The chunking, ``out``, progress bar and errors are those of
the process path; the blocks `fn` gets are plain ndarray views of the
same memory, and an exception is raised with its own traceback (there is
no other process to bring one back from)."""

from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Any

import numpy as np

from .arrays import SharedArray
from .blocks import BlockRunner


def default_workers() -> int:
    """One thread per CPU this process may run on, as for processes."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_workers(workers: Any) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer):
        raise TypeError(f"workers must be an int, not {type(workers).__name__}")
    if not 1 <= int(workers) <= 255:
        raise ValueError(f"workers must be from 1 to 255, not {workers}")
    return int(workers)


def run_blocks(runner: BlockRunner, out: SharedArray, workers: int, progress: bool) -> SharedArray:
    """Runs every block of `runner` on `workers` threads, each writing its
    block into `out`. The first error (in completion order) stops the
    blocks not yet started and is raised once the running ones end; so
    does Ctrl-C."""
    nblocks = math.prod(len(s) for s in runner.grid)
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=nblocks, unit="it", dynamic_ncols=True)
    # The blocks as plain ndarray views of the same memory: a SharedArray's
    # hooks run with the GIL on every operation, which two threads then
    # wait for in turn (measured: 1.6x slower on the demo kernel).
    plain = [np.asarray(a) for a in runner.arrays]

    def one(index: int) -> None:
        sl = runner.slices(runner.location(index))
        runner(index, [a[sl] for a in plain])

    ex = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ndshm-block")
    try:
        futures = [ex.submit(one, i) for i in range(nblocks)]
        for fut in concurrent.futures.as_completed(futures):
            fut.result()
            if bar is not None:
                bar.update(1)
    except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        ex.shutdown(wait=True)
        if bar is not None:
            bar.close()
    return out
