"""ndshm.Pool: the Executor API, the module-level helpers, start methods,
chunking, progress bars and an idle pool's CPU use.

One pool per module (2 workers, the default start method) serves the
tests that leave it as they found it; tests about starting and stopping
pools start their own.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest
from procwatch import alive, wait_for

import ndshm

WORKERS = 2


@pytest.fixture(scope="module")
def pool():
    with ndshm.Pool(workers=WORKERS) as p:
        yield p


def square(x):
    return x * x


def add(a, b):
    return a + b


def slow_identity(x, delay=0.002):
    time.sleep(delay)
    return x


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat (utime, stime); fields[0] is field 3 (state).
    return int(fields[11]) + int(fields[12])


# -- the Executor ----------------------------------------------------------


def test_pool_is_an_executor(pool):
    assert isinstance(pool, cf.Executor)
    assert pool.workers == WORKERS
    assert len(pool.pids) == WORKERS and len(set(pool.pids)) == WORKERS
    assert all(alive(pid) for pid in pool.pids)
    assert os.getpid() not in pool.pids


def test_default_workers_is_the_affinity_mask():
    with ndshm.Pool() as p:
        assert p.workers == len(os.sched_getaffinity(0))
        assert len(p.pids) == len(os.sched_getaffinity(0))
        assert p.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_map(pool):
    assert pool.map(square, range(100)) == [x * x for x in range(100)]
    assert pool.map(square, []) == []
    assert pool.map(square, [7]) == [49]


def test_map_of_lambdas_and_closures(pool):
    k = 3
    assert pool.map(lambda x: x + k, range(10)) == [x + 3 for x in range(10)]

    def make_scaler(factor):
        def scale(x):
            return x * factor

        return scale

    assert pool.map(make_scaler(2.5), range(4)) == [0.0, 2.5, 5.0, 7.5]
    fut = pool.submit(lambda: k * 10)
    assert fut.result(timeout=10) == 30


def test_map_with_several_iterables(pool):
    assert pool.map(add, range(5), range(10, 15)) == [10, 12, 14, 16, 18]
    assert pool.map(pow, [2, 3, 4], [3, 2]) == [8, 9]  # stops at the shortest, like the builtin
    assert pool.map(lambda a, b, c: a * b - c, [1, 2], [3, 4], [5, 6]) == [-2, 2]


def test_imap_is_ordered(pool):
    # Early items are slow, so they complete last: imap must still yield in order.
    delays = [0.05, 0.03, 0.01] + [0.0] * 20
    got = list(pool.imap(lambda d: (time.sleep(d), d)[1], delays, chunksize=1))
    assert got == delays


def test_imap_is_lazy_on_an_endless_input(pool):
    it = pool.imap(square, itertools.count())
    first = list(itertools.islice(it, 50))
    it.close()
    assert first == [x * x for x in range(50)]
    # The abandoned call does not get in the way of the next.
    assert pool.map(square, range(10)) == [x * x for x in range(10)]


def test_imap_takes_a_bounded_number_of_items_ahead(pool):
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield i

    it = pool.imap(square, source())
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    it.close()
    assert len(pulled) < 1_000_000  # a window of chunks, not the whole (endless) input
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_imap_unordered_returns_the_same_multiset(pool):
    items = [3, 1, 2, 3, 0, 5, 5, 5] * 10
    got = list(pool.imap_unordered(lambda x: (time.sleep(0.001 * (x % 3)), x * 2)[1], items))
    assert sorted(got) == sorted(x * 2 for x in items)
    assert sorted(pool.imap_unordered(square, (i for i in range(200)))) == [i * i for i in range(200)]


def test_imap_unordered_yields_fast_results_first(pool):
    got = list(pool.imap_unordered(lambda d: (time.sleep(d), d)[1], [0.5, 0.0, 0.0, 0.0], chunksize=1))
    assert sorted(got) == [0.0, 0.0, 0.0, 0.5]
    assert got[-1] == 0.5


def test_starmap(pool):
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.starmap(pow, ((b, 2) for b in range(6))) == [0, 1, 4, 9, 16, 25]
    assert pool.starmap(add, []) == []


def test_submit_with_as_completed_and_wait(pool):
    futs = [pool.submit(slow_identity, i, delay=0.01 * (i % 3)) for i in range(12)]
    assert all(isinstance(f, cf.Future) for f in futs)
    assert sorted(f.result() for f in cf.as_completed(futs, timeout=20)) == list(range(12))
    done, not_done = cf.wait([pool.submit(square, i) for i in range(6)], timeout=20)
    assert not not_done
    assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16, 25]
    assert pool.submit(sorted, [3, 1, 2], reverse=True).result(timeout=10) == [3, 2, 1]


def test_submit_while_a_map_runs(pool):
    fut = pool.submit(slow_identity, "side", delay=0.05)
    assert pool.map(square, range(300)) == [x * x for x in range(300)]
    assert fut.result(timeout=10) == "side"


def test_chunksize_override_gives_the_same_results(pool):
    expected = [x * x for x in range(257)]
    for chunksize in (1, 2, 7, 64, 1000):
        assert pool.map(square, range(257), chunksize=chunksize) == expected
        assert list(pool.imap(square, range(257), chunksize=chunksize)) == expected
        assert sorted(pool.imap_unordered(square, range(257), chunksize=chunksize)) == expected
        assert pool.starmap(pow, ((x, 2) for x in range(257)), chunksize=chunksize) == expected


def test_automatic_chunks_on_known_and_unknown_lengths(pool):
    n = 20_000
    expected = [x + 1 for x in range(n)]
    assert pool.map(lambda x: x + 1, range(n)) == expected  # known length
    assert pool.map(lambda x: x + 1, list(range(n))) == expected
    assert pool.map(lambda x: x + 1, (x for x in range(n))) == expected  # unknown length
    assert list(pool.imap(lambda x: x + 1, iter(range(n)))) == expected


def test_work_is_spread_over_the_workers(pool):
    pids = pool.map(lambda x: (time.sleep(0.005), os.getpid())[1], range(100))
    assert set(pids) == set(pool.pids)


def test_large_items_and_results(pool):
    # Bigger than any board ring slot: they travel another way, intact.
    big = [bytes([i]) * (3 << 20) for i in range(3)]
    assert pool.map(len, big) == [3 << 20] * 3
    assert pool.map(lambda i: bytes([i]) * (3 << 20), range(3)) == big


def test_shared_arrays_travel_as_handles(pool):
    a = ndshm.zeros(8, dtype=np.int64)

    def fill(i):
        a[i] = i * 10  # writes the parent's memory

    assert pool.map(fill, range(8)) == [None] * 8
    assert a.tolist() == [i * 10 for i in range(8)]


# -- map_blocks, context manager, shutdown, module level ---------------------


def test_map_blocks_outer_product(pool):
    y, x = np.arange(6.0), np.arange(5.0)
    r = pool.map_blocks(lambda a, b: a * b, y[:, None], x[None, :], chunks=(4, 2))
    assert isinstance(r, ndshm.SharedArray)
    np.testing.assert_array_equal(r, y[:, None] * x[None, :])


def test_context_manager_stops_the_workers():
    with ndshm.Pool(workers=WORKERS) as p:
        pids = p.pids
        assert p.map(square, range(3)) == [0, 1, 4]
    assert wait_for(lambda: not any(alive(pid) for pid in pids))
    with pytest.raises(RuntimeError):
        p.map(square, range(3))


def test_shutdown_waits_for_submitted_work():
    p = ndshm.Pool(workers=WORKERS)
    pids = p.pids
    futs = [p.submit(slow_identity, i, delay=0.1) for i in range(4)]
    p.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futs] == [0, 1, 2, 3]
    assert wait_for(lambda: not any(alive(pid) for pid in pids))
    p.shutdown()  # twice is fine


def test_shutdown_cancel_futures_drops_the_queued_tasks():
    p = ndshm.Pool(workers=1)
    ran = ndshm.zeros(20, dtype=np.int64)

    def task(i):
        ran[i] = 1
        time.sleep(0.2)
        return i

    futs = [p.submit(task, i) for i in range(20)]
    assert wait_for(lambda: ran[0] == 1)
    t0 = time.monotonic()
    p.shutdown(wait=True, cancel_futures=True)
    elapsed = time.monotonic() - t0
    assert all(f.done() for f in futs)
    cancelled = sum(f.cancelled() for f in futs)
    assert cancelled >= 15
    assert [f.result() for f in futs if not f.cancelled()] == list(range(20 - cancelled))
    # The cancelled tasks never run, and shutdown does not wait for them.
    assert ran.sum() <= 5, f"{ran.sum()} of 20 tasks ran despite cancel_futures"
    assert elapsed < 2.0, f"shutdown(cancel_futures=True) took {elapsed:.1f} s"


def test_future_of_a_running_task_cannot_be_cancelled(pool):
    started = ndshm.zeros(1, dtype=np.int64)

    def task():
        started[0] = 1
        time.sleep(0.3)
        return "finished"

    fut = pool.submit(task)
    assert wait_for(lambda: started[0] == 1)
    assert fut.running()
    assert not fut.cancel()  # concurrent.futures: a running call cannot be cancelled
    assert fut.result(timeout=10) == "finished"


def test_module_level_map():
    assert ndshm.map(square, range(10), workers=WORKERS) == [x * x for x in range(10)]
    assert ndshm.map(lambda x: -x, (i for i in range(5)), workers=1, chunksize=2) == [0, -1, -2, -3, -4]


def test_module_level_map_blocks():
    y, x = np.arange(4.0), np.arange(3.0)
    r = ndshm.map_blocks(np.multiply, y[:, None], x[None, :], chunks=(1, -1), workers=WORKERS)
    assert isinstance(r, ndshm.SharedArray)
    np.testing.assert_array_equal(r, y[:, None] * x[None, :])


def test_module_level_blocks():
    assert list(ndshm.blocks((5,), 2)) == [(slice(0, 2),), (slice(2, 4),), (slice(4, 5),)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_start_methods(method):
    k = 7
    with ndshm.Pool(workers=WORKERS, start_method=method) as p:
        assert p.start_method == method
        # fork and spawn: children of this process; forkserver: of the server.
        parents = {parent_pid(pid) for pid in p.pids}
        assert (parents == {os.getpid()}) == (method != "forkserver"), parents
        assert p.map(lambda x: x * k, range(20)) == [x * 7 for x in range(20)]
        y, x = np.arange(6.0)[:, None], np.arange(4.0)[None, :]
        out = ndshm.zeros((6, 4))
        assert p.map_blocks(lambda a, b: a + b, y, x, chunks=2, out=out) is out
        np.testing.assert_array_equal(out, y + x)


# -- progress ----------------------------------------------------------------


def _bar_finished(err: str, n: int) -> bool:
    return "100%" in err and f"{n}/{n}" in err


def test_progress_map(pool, capfd):
    assert pool.map(square, range(40), progress=True) == [x * x for x in range(40)]
    assert _bar_finished(capfd.readouterr().err, 40)


def test_progress_imap(pool, capfd):
    assert list(pool.imap(square, range(30), progress=True)) == [x * x for x in range(30)]
    assert _bar_finished(capfd.readouterr().err, 30)


def test_progress_imap_of_unknown_length(pool, capfd):
    assert list(pool.imap(square, (i for i in range(25)), chunksize=5, progress=True)) == [
        i * i for i in range(25)
    ]
    assert "25it" in capfd.readouterr().err.replace(" ", "")


def test_progress_map_blocks(pool, capfd):
    r = pool.map_blocks(np.negative, np.arange(12.0).reshape(4, 3), chunks=(1, 3), progress=True)
    np.testing.assert_array_equal(r, -np.arange(12.0).reshape(4, 3))
    assert _bar_finished(capfd.readouterr().err, 4)  # four blocks


def test_no_progress_bar_by_default(pool, capfd):
    pool.map(square, range(10))
    assert "it/s" not in capfd.readouterr().err


# -- idle --------------------------------------------------------------------


def test_idle_pool_uses_no_cpu():
    with ndshm.Pool(workers=WORKERS) as p:
        assert p.map(square, range(10)) == [x * x for x in range(10)]
        time.sleep(0.3)  # let the workers go to sleep
        before = {pid: cpu_ticks(pid) for pid in p.pids}
        time.sleep(1.0)
        after = {pid: cpu_ticks(pid) for pid in p.pids}
    used = {pid: after[pid] - before[pid] for pid in before}
    assert all(t <= 3 for t in used.values()), f"idle workers used clock ticks: {used}"


@pytest.mark.parametrize("size", [1, 3, 600, None])
@pytest.mark.parametrize("kind", ["list", "tuple", "range", "array"])
def test_chunks_cut_in_bulk_match_chunks_cut_one_by_one(kind, size):
    from ndshm.chunking import Chunker

    n = 1301
    items = {"list": list(range(n)), "tuple": tuple(range(n)), "range": range(n), "array": np.arange(n)}[kind]

    def cut(bulk: bool) -> list:
        chunker, out = Chunker(items, size, 2), []
        while not chunker.exhausted:
            got = chunker.take_many(5).chunks if bulk else [c for c in [chunker.take()] if c is not None]
            out += [(tag, type(c), list(c)) for tag, c in got]
        return out

    one_by_one, bulk = cut(False), cut(True)
    assert bulk == one_by_one
    assert [x for _, _, c in bulk for x in c] == list(range(n))
    if kind == "range" and size is not None and size < 512:
        assert all(t is list for _, t, _ in bulk)  # short ranges are sent as lists
