"""The dispatch board through its bindings: task states declared by the
core, named records for claims and completions, and a board whose bytes
another process overwrote giving ValueError, never a Rust panic (a
BaseException) or a crash."""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest

import ndshm
from ndshm import _native

SMALL = {"capacity": 8, "jobs": 2, "input_len": 4096, "output_len": 4096}


def _board(workers: int = 1) -> tuple[np.ndarray, _native.Board]:
    arr = ndshm.empty(_native.Board.size(workers, **SMALL), np.uint8)
    seg_offset = _native.view_of(arr)
    assert seg_offset is not None
    return arr, _native.Board.init(seg_offset[0], workers, **SMALL)


def test_task_states_come_from_the_core():
    states = [
        _native.TASK_EMPTY,
        _native.TASK_READY,
        _native.TASK_CLAIMED,
        _native.TASK_DONE,
        _native.TASK_FAILED,
        _native.TASK_SKIPPED,
        _native.TASK_DIED,
    ]
    assert len(set(states)) == len(states)
    # The pool reads a task as running once it is claimed or later.
    assert _native.TASK_READY < _native.TASK_CLAIMED < _native.TASK_DONE


def test_claims_and_completions_are_named_records():
    _arr, board = _board()
    parent = _native.Parent(board)
    assert parent.open_job(5, b"the function")
    assert board.job(5) == b"the function"
    n = parent.publish(5, 40, 3, b"items")
    worker = _native.Worker(board, 0)
    t = worker.claim(0.0)
    assert t is not None
    assert (t.task, t.job, t.tag, t.count, t.payload) == (n, 5, 40, 3, b"items")
    assert parent.task_state(n) == _native.TASK_CLAIMED
    with pytest.raises(ValueError, match="not a task's outcome"):
        worker.complete(t.task, _native.TASK_CLAIMED, b"", 0)
    assert worker.complete(t.task, _native.TASK_DONE, b"result", 7)
    [c] = parent.poll()
    assert (c.task, c.job, c.tag, c.count, c.state, c.worker, c.payload, c.elapsed_ns) == (
        n,
        5,
        40,
        3,
        _native.TASK_DONE,
        0,
        b"result",
        7,
    )
    assert "Completion(task=0, job=5" in repr(c)
    with pytest.raises(AttributeError):
        c.state = _native.TASK_FAILED  # type: ignore[misc]
    with pytest.raises(ValueError, match="no worker 3"):
        parent.bury_worker(3)


def test_a_corrupt_input_position_raises_value_error():
    """A worker overwrote a task's input position with one that is not a
    record's: collecting the task raises ValueError (it was a Rust panic)."""
    arr, board = _board()
    parent = _native.Parent(board)
    parent.open_job(1, b"f")
    n = parent.publish(1, 0, 1, b"x")
    worker = _native.Worker(board, 0)
    t = worker.claim(0.0)
    assert t is not None and t.task == n
    assert worker.complete(t.task, _native.TASK_DONE, b"r", 0)
    # Task 0's slot follows the header page and a page of worker slots; its
    # input position is its fourth word.
    words = arr.view(np.uint64)
    at = (2 * _native.PAGE + 24) // 8
    assert words[at] == 8, "the first record's payload starts after its 8-byte header"
    words[at] = 3
    with pytest.raises(ValueError, match="ring position 3"):
        parent.poll()


def test_a_corrupt_board_raises_value_error_not_a_panic():
    """Random words of the board's header, slots and rings overwritten
    while tasks go round: every call returns or raises ValueError (a Rust
    panic would be a BaseException and fail the test)."""
    rng = random.Random(1234)
    errors = calls = 0
    for _ in range(40):
        arr, board = _board(2)
        words = arr.view(np.uint64)
        parent = _native.Parent(board)
        parent.open_job(1, b"f")
        workers = [_native.Worker(board, 0), _native.Worker(board, 1)]
        # A completion waits for room in its ring, which corrupt indices can
        # deny for good: shutting the board down ends such a wait (and the round).
        backstop = threading.Timer(5.0, board.shutdown)
        backstop.start()
        for step in range(30):
            for _ in range(rng.randrange(3)):
                # Past the geometry (which only opening a board reads),
                # within the first 24 KiB: header, slots, job table, rings.
                value = rng.choice([rng.getrandbits(64), rng.randrange(4096), 2**64 - 1 - rng.randrange(16)])
                words[rng.randrange(5, 3 * 1024)] = value
            worker = workers[step % 2]
            ops: list[tuple[Any, tuple]] = [
                (parent.publish, (1, step, 1, bytes(rng.randrange(300)))),
                (worker.claim, (0.0,)),
                (parent.poll, ()),
                (parent.cancel_task, (rng.randrange(64),)),
            ]
            if rng.random() < 0.1:
                ops.append((parent.bury_worker, (rng.randrange(2),)))
            for op, args in ops:
                calls += 1
                try:
                    t = op(*args)
                except ValueError:
                    errors += 1
                    continue
                if isinstance(t, _native.Claimed):
                    calls += 1
                    try:
                        worker.complete(t.task, _native.TASK_DONE, bytes(rng.randrange(300)), 0)
                    except ValueError:
                        errors += 1
        backstop.cancel()
        board.shutdown()
    assert 0 < errors < calls
