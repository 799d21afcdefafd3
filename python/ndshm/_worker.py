"""The loop a pool worker runs: claim a task from the board, run it, hand
the result back through the worker's output ring.

Payloads follow :mod:`ndshm.protocol`. A job's function is unpickled once
per job.
"""

from __future__ import annotations

import ctypes
import pickle
import signal
import traceback
from time import perf_counter_ns
from typing import Any

import numpy as np

from . import _native
from .blocks import BlockRunner
from .handles import segment_of
from .protocol import MAP, STAR, TaskError, pack, unpack

# How long an idle worker sleeps between looks at the shutdown flag (a
# shutdown wakes it at once; this is only a backstop).
_IDLE = 10.0
# How long a worker waits for more work before it retires finished jobs.
_SETTLE = 0.02
# How often an idle worker checks that the arrays it keeps mapped are still
# held by the pool's process.
_RECHECK = 1.0

_dumps = pickle.dumps


def _failure(done: list, exc: BaseException, limit: int) -> bytes:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        return pack(TaskError(done, exc, tb), limit)
    except Exception as e:  # the exception (or the results before it) does not pickle
        substitute = RuntimeError(f"{type(exc).__qualname__}: {exc} (could not be pickled: {e})")
        try:
            return pack(TaskError(done, substitute, tb), limit)
        except Exception:
            return pack(TaskError([], substitute, tb), limit)


def _unpicklable(results: list, exc: Exception, first: int) -> TypeError:
    """Names the item (numbered from the start of the call) whose result
    does not pickle."""
    for i, r in enumerate(results):
        try:
            _dumps(r, protocol=5)
        except Exception as e:
            return TypeError(f"the result for item {first + i} cannot be pickled: {e}")
    return TypeError(f"the results for items {first}..{first + len(results) - 1} cannot be pickled: {exc}")


def _retire(board: _native.Board, jobs: dict, kept: dict) -> None:
    """Drops the functions of jobs that left the board. The arrays of a
    finished ``map_blocks`` stay mapped (in `kept`) while the pool's process
    still holds them, so a next call on the same arrays finds them mapped
    and faulted in; arrays it let go are unmapped here and now."""
    for job in [j for j in jobs if not board.has_job(j)]:
        _kind, fn = jobs.pop(job)
        if isinstance(fn, BlockRunner):
            for a in (*fn.arrays, fn.out):
                seg = segment_of(a) if isinstance(a, np.ndarray) else None
                if seg is not None and seg.name is None:
                    kept.setdefault(seg.id, a)
    dropped = [sid for sid, a in kept.items() if not _held(a)]
    for sid in dropped:
        del kept[sid]
    if dropped:
        _native.release_cached()


def _held(a: np.ndarray) -> bool:
    seg = segment_of(a)
    return seg is not None and seg.held_by_creator()


def _load_job(board: _native.Board, job: int) -> tuple[int, Any]:
    return unpack(board.job(job))


def keep_freed_memory() -> None:
    """Lets glibc keep freed memory instead of handing it back to the kernel
    after each task: a worker reuses its temporaries task after task, and
    faulting them in again costs more than the computation (``mallopt``
    ``M_TRIM_THRESHOLD`` 256 MiB, ``M_MMAP_THRESHOLD`` 32 MiB)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def main(board_array: np.ndarray, index: int) -> None:
    """Entry point of worker `index` of the pool whose board is `board_array`."""
    # Ctrl-C is the parent's to handle: it stops the work and the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    seg = segment_of(board_array)
    assert seg is not None, "the board is a shared array"
    board = _native.Board.open(seg)
    board.exit_with_owner(0.5)
    worker = _native.Worker(board, index)
    limit = board.max_output
    jobs: dict[int, tuple[int, Any]] = {}
    claim, complete = worker.claim, worker.complete
    done, failed = _native.TASK_DONE, _native.TASK_FAILED
    kept: dict[int, np.ndarray] = {}
    idle = _SETTLE
    while True:
        t = claim(idle)
        if t is None:
            if board.is_shutdown:
                return
            _retire(board, jobs, kept)
            idle = _RECHECK if kept else _IDLE
            continue
        idle = _SETTLE
        task, job = t.task, t.job
        start = perf_counter_ns()
        results: Any = []
        try:
            kind_fn = jobs.get(job)
            if kind_fn is None:
                # Unpickled before the old jobs go, so arrays they share
                # stay mapped.
                kind_fn = _load_job(board, job)
                _retire(board, jobs, kept)
                jobs[job] = kind_fn
            kind, fn = kind_fn
            items = unpack(t.payload)
            if kind == MAP:
                results.extend(map(fn, items))
            elif kind == STAR:
                for item in items:
                    results.append(fn(*item))
            else:
                f, args, kwargs = items
                results.append(f(*args, **kwargs))
        except BaseException as exc:
            ok, out = False, _failure(results, exc, limit)
        else:
            try:
                ok, out = True, pack(results, limit)
            except Exception as exc:
                ok, out = False, _failure([], _unpicklable(results, exc, t.tag), limit)
        # Hold nothing of this task past it: only `jobs` keeps arrays.
        results = items = fn = kind_fn = t = None
        if not complete(task, done if ok else failed, out, perf_counter_ns() - start):
            return
