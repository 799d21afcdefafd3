"""Shared arrays through the tools users already have: multiprocessing
(every start method, Pool, Pipe), concurrent.futures, joblib and tqdm's
process_map. Workers write into their views; the parent sees the writes; what
is pickled per task stays a handle (< 1 KiB)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.reduction
import os
import pickle
import signal

import numpy as np
import pytest

import ndshm

ROWS, COLS = 8, 65_536  # 4 MiB of float64: a copy per task would be obvious
HANDLE = 1024


def handle_size(obj) -> int:
    """Bytes `obj` pickles to. Unpickles it again, so the handoffs of
    anonymous arrays it holds are settled (nothing lingers at exit)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)
    return len(data)


def make_array(kind: str, request) -> ndshm.SharedArray:
    name = request.getfixturevalue("shm_name") if kind == "named" else None
    return ndshm.zeros((ROWS, COLS), dtype=np.float64, name=name)


# --------------------------------------------------------------------------
# workers (module level: importable by spawn and forkserver children)


def fill(view, value):
    view[...] = value
    return type(view).__name__, view.shape, bool(view.flags.writeable)


def fill_task(task):
    view, value = task
    return fill(view, value)


def fill_two(first, second, value):
    fill(first, value)
    fill(second, -value)


def send_anonymous_and_return(conn, n):
    a = ndshm.from_array(np.arange(n, dtype=np.float64))
    conn.send(a[::2])
    conn.send(a)
    conn.close()


def send_anonymous_and_wait(conn, n):
    a = ndshm.from_array(np.arange(n, dtype=np.float64))
    conn.send(a[1:])
    conn.recv()  # blocks until killed (or the parent closes the pipe)


def _reap(p, timeout: float = 30) -> None:
    """Joins a child this test started; kills it (by pid) if it hangs."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(10)


# --------------------------------------------------------------------------
# recording what the tools really pickle


class _Sizes(list):
    def pickler(self):
        sizes = self

        class Recording(multiprocessing.reduction.ForkingPickler):
            @classmethod
            def dumps(cls, obj, protocol=None):
                buf = super().dumps(obj, protocol)
                sizes.append(len(buf))
                return buf

        return Recording


@pytest.fixture
def sent_sizes(monkeypatch):
    """Sizes of every message multiprocessing pickles in this process
    (Connection.send and Queue.put, which Pool and ProcessPoolExecutor use)."""
    sizes = _Sizes()
    rec = sizes.pickler()
    monkeypatch.setattr(multiprocessing.connection, "_ForkingPickler", rec)
    monkeypatch.setattr(multiprocessing.queues, "_ForkingPickler", rec)
    return sizes


@pytest.fixture
def process_sizes(monkeypatch):
    """Sizes of Process objects pickled to start spawn/forkserver children."""
    sizes: list[int] = []
    real_dump = multiprocessing.reduction.dump

    def dump(obj, file, protocol=None):
        if not isinstance(obj, multiprocessing.process.BaseProcess):
            return real_dump(obj, file, protocol)
        # Pickled once, as reduction.dump would: a second pickling would count
        # handoffs that no child ever settles.
        buf = multiprocessing.reduction.ForkingPickler.dumps(obj, protocol)
        sizes.append(len(buf))
        file.write(buf)

    monkeypatch.setattr(multiprocessing.reduction, "dump", dump)
    return sizes


# --------------------------------------------------------------------------
# multiprocessing.Process


@pytest.mark.parametrize("kind", ["anonymous", "named"])
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_process_argument(request, method, kind, process_sizes):
    a = make_array(kind, request)
    ctx = multiprocessing.get_context(method)
    first, second = a[2:5, ::3], a[::-1][0]  # a strided block and the last row
    args = (first, second, 7.0)
    assert handle_size(args) < HANDLE

    p = ctx.Process(target=fill_two, args=args)
    p.start()
    _reap(p)
    assert p.exitcode == 0
    assert (a[2:5, ::3] == 7.0).all() and (a[-1] == -7.0).all()
    assert a.sum() == 7.0 * a[2:5, ::3].size - 7.0 * COLS
    if method != "fork":
        assert process_sizes and max(process_sizes) < HANDLE, process_sizes


# --------------------------------------------------------------------------
# multiprocessing.Pool


@pytest.mark.parametrize("kind", ["anonymous", "named"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_map(request, method, kind, sent_sizes):
    a = make_array(kind, request)
    tasks = [(a[:, i::ROWS], float(i + 1)) for i in range(ROWS)]  # strided column views
    for t in tasks:
        assert handle_size(t) < HANDLE

    with multiprocessing.get_context(method).Pool(2) as pool:
        got = pool.map(fill_task, tasks, chunksize=1)

    assert got == [("SharedArray", (ROWS, COLS // ROWS), True)] * ROWS
    for i in range(ROWS):
        assert (a[:, i::ROWS] == i + 1).all()
    # What the pool really sent: every message is small.
    assert len(sent_sizes) >= ROWS
    assert max(sent_sizes) < HANDLE, sorted(sent_sizes)[-3:]


def test_pool_starmap_and_imap(sent_sizes):
    a = ndshm.zeros((ROWS, COLS))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.starmap(fill, [(a[i], float(i)) for i in range(0, ROWS, 2)])
        list(pool.imap_unordered(fill_task, [(a[i], float(i)) for i in range(1, ROWS, 2)]))
    assert np.array_equal(a[:, 0], np.arange(ROWS, dtype=float))
    assert (a == np.arange(ROWS, dtype=float)[:, None]).all()
    assert max(sent_sizes) < HANDLE


# --------------------------------------------------------------------------
# concurrent.futures and tqdm


@pytest.mark.parametrize("kind", ["anonymous", "named"])
def test_process_pool_executor(request, kind, sent_sizes):
    a = make_array(kind, request)
    views = [a[i::4, ::-1] for i in range(4)]
    values = [10.0, 20.0, 30.0, 40.0]
    for v, x in zip(views, values):
        assert handle_size((v, x)) < HANDLE

    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
        got = list(ex.map(fill, views, values))
        fut = ex.submit(fill, a[0, :10], -1.0)
        assert fut.result()[0] == "SharedArray"

    assert [g[0] for g in got] == ["SharedArray"] * 4
    for i, x in enumerate(values):
        assert (a[i::4, 10:] == x).all()
    assert (a[0, :10] == -1.0).all()
    assert sent_sizes and max(sent_sizes) < HANDLE, sorted(sent_sizes)[-3:]


def test_process_pool_executor_spawn():
    a = ndshm.zeros((ROWS, COLS))
    views = [a[i] for i in range(ROWS)]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        got = list(ex.map(fill, views, range(1, ROWS + 1), chunksize=2))
    assert all(g[0] == "SharedArray" for g in got)
    assert (a == np.arange(1, ROWS + 1)[:, None]).all()


def test_tqdm_process_map(sent_sizes):
    process_map = pytest.importorskip("tqdm.contrib.concurrent").process_map
    a = ndshm.zeros((ROWS, COLS))
    views = [a[i, ::-1] for i in range(ROWS)]
    values = [float(i * i) for i in range(ROWS)]
    for v in views:
        assert handle_size(v) < HANDLE

    got = process_map(fill, views, values, max_workers=2, chunksize=1, disable=True)

    assert [g[0] for g in got] == ["SharedArray"] * ROWS
    assert (a == np.array(values)[:, None]).all()
    assert sent_sizes and max(sent_sizes) < HANDLE


# --------------------------------------------------------------------------
# joblib


@pytest.mark.parametrize(
    "backend, max_nbytes",
    [("loky", "1M"), ("loky", 1), ("multiprocessing", "1M")],
    ids=["loky", "loky-memmap-everything", "multiprocessing"],
)
@pytest.mark.parametrize("kind", ["anonymous", "named"])
def test_joblib_parallel(request, kind, backend, max_nbytes):
    joblib = pytest.importorskip("joblib")
    a = make_array(kind, request)
    views = [a[i::4] for i in range(4)]  # 1 MiB each: joblib would memmap a plain array
    assert all(v.nbytes >= 2**20 for v in views)
    for i, v in enumerate(views):
        assert handle_size((v, float(i + 1))) < HANDLE

    got = joblib.Parallel(n_jobs=2, backend=backend, max_nbytes=max_nbytes)(
        joblib.delayed(fill)(v, float(i + 1)) for i, v in enumerate(views)
    )

    # Not memmapped or copied: each worker wrote our memory, through a SharedArray.
    assert [g[0] for g in got] == ["SharedArray"] * 4
    assert all(g[2] for g in got)
    for i in range(4):
        assert (a[i::4] == i + 1).all()


def test_plain_array_is_copied_by_joblib():
    # The contrast that shows the test above can fail: joblib hands a plain
    # array to workers as a read-only memmap or a copy, never our memory.
    joblib = pytest.importorskip("joblib")
    x = np.zeros((ROWS, COLS))
    got = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_try_fill)(x[i::4], 1.0) for i in range(2))
    assert x.sum() == 0
    assert all(g != "SharedArray" for g in got)


def _try_fill(view, value):
    try:
        view[...] = value
    except ValueError:
        return "readonly"
    return type(view).__name__


# --------------------------------------------------------------------------
# Pipe handoff: the sender exits (or is killed) before the receiver attaches


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pipe_handoff_after_sender_exited(method):
    ctx = multiprocessing.get_context(method)
    n = 500_000  # 4 MB
    parent, child = ctx.Pipe()
    p = ctx.Process(target=send_anonymous_and_return, args=(child, n))
    p.start()
    try:
        child.close()
        _reap(p)
        assert p.exitcode == 0  # the sender is gone before we receive
        half = parent.recv()
        whole = parent.recv()
    finally:
        _reap(p, 0)
        parent.close()
    assert type(half) is ndshm.SharedArray and half.name is None
    assert np.array_equal(half, np.arange(0, n, 2, dtype=np.float64))
    assert np.array_equal(whole, np.arange(n, dtype=np.float64))
    half[1] = -1.0  # both are views of the one segment
    assert whole[2] == -1.0 and np.shares_memory(half, whole)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pipe_sender_killed_before_receive(method):
    ctx = multiprocessing.get_context(method)
    parent, child = ctx.Pipe()
    p = ctx.Process(target=send_anonymous_and_wait, args=(child, 1000))
    p.start()
    try:
        child.close()
        assert parent.poll(60), "the child never sent"
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        with pytest.raises(FileNotFoundError, match=rf"\b{p.pid}\b"):
            parent.recv()
    finally:
        _reap(p, 0)
        parent.close()
