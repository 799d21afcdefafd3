"""map_blocks(..., executor="threads"): the same blocks, out, progress and
errors as with worker processes, run on threads of the calling process."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import ndshm
from ndshm.blocks import blocks


def _inputs(rows=300, cols=70):
    y = ndshm.from_array(np.linspace(0.0, 3.0, rows))
    x = ndshm.from_array(np.linspace(0.0, 2.0, cols))
    return y[:, None], x[None, :]


def kernel(a, b):
    p = a * b
    return np.sin(p) * np.exp(-p) + np.sqrt(p) * np.cos(p)


@pytest.mark.parametrize("fn", [np.multiply, kernel], ids=["ufunc", "function"])
@pytest.mark.parametrize("given_out", [False, True], ids=["fresh", "out"])
def test_threads_compute_what_processes_compute(fn, given_out):
    a, b = _inputs()
    out = ndshm.zeros((300, 70)) if given_out else None
    got = ndshm.map_blocks(fn, a, b, chunks=(40, 30), out=out, executor="threads", workers=2)
    want = ndshm.map_blocks(fn, a, b, chunks=(40, 30), workers=2)
    assert isinstance(got, ndshm.SharedArray)
    if given_out:
        assert got is out
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, fn(np.asarray(a), np.asarray(b)))


def test_threads_run_every_block_once_in_this_process():
    a, b = _inputs()
    seen: list[tuple] = []
    lock = threading.Lock()

    def record(p, q, block_id=None, block_info=None):
        with lock:
            seen.append((block_id, tuple(block_info[None]["array-location"]), os.getpid()))
        return p + q

    ndshm.map_blocks(record, a, b, chunks=(64, 32), executor="threads", workers=3)
    grid = [tuple((s.start, s.stop) for s in sl) for sl in blocks((300, 70), (64, 32))]
    assert sorted(where for _, where, _ in seen) == sorted(grid)
    assert len({block_id for block_id, _, _ in seen}) == len(grid)
    assert {pid for _, _, pid in seen} == {os.getpid()}


class Boom(Exception):
    pass


def test_an_error_in_a_block_is_raised_with_its_type_and_stops_the_rest():
    a, b = _inputs(rows=200)
    calls = []

    def fails_first(p, q, block_id=None):
        calls.append(block_id)
        if block_id == (0, 0):
            raise Boom("block 0")
        time.sleep(0.05)
        return p * q

    with pytest.raises(Boom, match="block 0"):
        ndshm.map_blocks(fails_first, a, b, chunks=(10, -1), executor="threads", workers=1)
    assert len(calls) < 20  # the blocks not yet started were dropped


def test_a_block_of_the_wrong_shape_is_a_value_error():
    a, b = _inputs()
    with pytest.raises(ValueError, match="shape"):
        ndshm.map_blocks(lambda p, q: np.zeros(3), a, b, chunks=(50, -1), executor="threads")


@pytest.mark.parametrize(
    "workers, error", [(0, ValueError), (-2, ValueError), ("2", TypeError), (2.0, TypeError)]
)
def test_threads_check_workers(workers, error):
    a, b = _inputs()
    with pytest.raises(error):
        ndshm.map_blocks(np.multiply, a, b, executor="threads", workers=workers)


def test_threads_check_out_as_processes_do():
    a, b = _inputs()
    with pytest.raises(ValueError, match="out must be in shared memory"):
        ndshm.map_blocks(np.multiply, a, b, out=np.zeros((300, 70)), executor="threads")
    with pytest.raises(ValueError, match="shape"):
        ndshm.map_blocks(np.multiply, a, b, out=ndshm.zeros((3, 70)), executor="threads")


def test_threads_progress_bar_counts_every_block(capsys):
    a, b = _inputs()
    ndshm.map_blocks(np.multiply, a, b, chunks=(30, -1), executor="threads", progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err


def test_an_unknown_executor_name_is_a_type_error():
    with pytest.raises(TypeError, match="threads"):
        ndshm.map_blocks(np.negative, np.zeros(3), executor="thread")
