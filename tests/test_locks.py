"""Cross-process locks: exclusion, reader/writer sharing, timeouts,
holder death, pickling through every channel, misuse."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import ndshm
from tests.test_rust_peer import peer

CTX = mp.get_context("spawn")


# ---------------------------------------------------------------- exclusion


def _increment(a, lock, n, use_lock, barrier):
    barrier.wait()
    for _ in range(n):
        if use_lock:
            with lock:
                v = a[0]
                a[0] = v + 1
        else:
            v = a[0]
            a[0] = v + 1


def _run_increments(use_lock, lock_kind, procs=3, n=20_000):
    a = ndshm.zeros(1, dtype=np.int64)
    lock = a.lock if lock_kind == "array" else ndshm.Lock()
    barrier = CTX.Barrier(procs)
    ps = [CTX.Process(target=_increment, args=(a, lock, n, use_lock, barrier)) for _ in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    return int(a[0]), procs * n


@pytest.mark.parametrize("lock_kind", ["array", "standalone"])
def test_increments_under_the_lock_are_exact(lock_kind):
    total, expected = _run_increments(True, lock_kind)
    assert total == expected


def test_increments_without_the_lock_lose_updates():
    # Shows the test above can fail: the same work unlocked loses updates.
    # Long enough (tens of ms per process) that the processes overlap.
    total, expected = _run_increments(False, "array", procs=2, n=200_000)
    assert total < expected


def test_rust_and_python_contend_for_one_lock(shm_name):
    a = ndshm.zeros(1, name=shm_name)
    n = 20_000
    done = threading.Event()

    def python_side():
        for _ in range(n):
            with a.lock:
                a[0] = a[0] + 1
        done.set()

    t = threading.Thread(target=python_side)
    t.start()
    r = peer("incr", shm_name, str(n))
    t.join(60)
    assert r.returncode == 0, r.stderr
    assert done.is_set() and a[0] == 2 * n


# ---------------------------------------------------------------- readers and writers


def test_readers_share_and_a_waiting_writer_holds_new_readers_back():
    rw = ndshm.RWLock()
    inside = []
    with rw.read(), rw.read():  # two readers at once, same thread even
        assert rw.readers == 2
        writer_got_in = threading.Event()

        def writer():
            with rw.write():
                writer_got_in.set()

        t = threading.Thread(target=writer)
        t.start()
        deadline = time.monotonic() + 5
        while not rw.locked() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rw.locked(), "the writer should be waiting with the owner word taken"
        assert not writer_got_in.is_set()
        # A new reader now waits behind the writer.
        assert rw.acquire_read(timeout=0.05) is None
        inside.append("readers still inside")
    t.join(5)
    assert writer_got_in.is_set() and inside
    with rw.read():
        assert rw.readers == 1


def _read_and_report(rw, q, hold):
    with rw.read():
        q.put(os.getpid())
        time.sleep(hold)


def test_readers_in_several_processes_hold_the_lock_together():
    rw = ndshm.RWLock()
    q = CTX.Queue()
    ps = [CTX.Process(target=_read_and_report, args=(rw, q, 1.0)) for _ in range(3)]
    for p in ps:
        p.start()
    pids = {q.get(timeout=30) for _ in ps}
    assert len(pids) == 3  # all three inside at the same time
    assert rw.readers == 3
    assert not rw.acquire(timeout=0.05)  # a writer cannot get in meanwhile
    for p in ps:
        p.join(30)
    assert rw.acquire(timeout=5)
    rw.release()


# ---------------------------------------------------------------- timeouts and blocking


def _held_by_another_thread(lk):
    """Starts a thread holding `lk` until the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with lk:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    return t, release


def test_acquire_timeout_returns_false_on_time():
    lk = ndshm.Lock()
    t, release = _held_by_another_thread(lk)
    t0 = time.monotonic()
    assert lk.acquire(timeout=0.3) is False
    waited = time.monotonic() - t0
    assert lk.acquire(blocking=False) is False
    release.set()
    t.join(5)
    assert 0.25 <= waited < 5  # returned after the timeout, not hung
    assert lk.acquire(timeout=1)
    lk.release()


def _hold_for(lk, ready, seconds):
    with lk:
        ready.set()
        time.sleep(seconds)


def _block_on(lk, out):
    t0 = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    with lk:
        pass
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.put((time.monotonic() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)))


def test_a_blocked_waiter_sleeps_instead_of_spinning():
    lk = ndshm.Lock()
    ready, out = CTX.Event(), CTX.Queue()
    holder = CTX.Process(target=_hold_for, args=(lk, ready, 1.5))
    holder.start()
    assert ready.wait(30)
    waiter = CTX.Process(target=_block_on, args=(lk, out))
    waiter.start()
    wall, cpu = out.get(timeout=30)
    holder.join(30)
    waiter.join(30)
    assert wall > 0.5
    assert cpu < 0.25 * wall, f"waiter used {cpu:.3f} s of CPU in {wall:.3f} s"


def test_waiting_releases_the_gil():
    lk = ndshm.Lock()
    t, release = _held_by_another_thread(lk)
    waiter = threading.Thread(target=lambda: lk.acquire(timeout=3) and lk.release())
    waiter.start()
    # While the waiter is blocked, this thread keeps running Python code.
    n, deadline = 0, time.monotonic() + 0.3
    while time.monotonic() < deadline:
        n += 1
    release.set()
    t.join(5)
    waiter.join(5)
    assert n > 10_000


# ---------------------------------------------------------------- holder death


def _take_and_die(lock, ready):
    lock.acquire()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("lock_kind", ["array", "standalone", "rw-reader"])
def test_a_sigkilled_holder_is_taken_over_within_a_second(lock_kind):
    a = ndshm.zeros(4)
    lock = a.lock if lock_kind == "array" else ndshm.RWLock()
    ready = CTX.Event()
    target = _take_and_die if lock_kind != "rw-reader" else _read_and_die
    p = CTX.Process(target=target, args=(lock, ready))
    p.start()
    assert ready.wait(30)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    t0 = time.monotonic()
    with pytest.warns(ndshm.LockOwnerDied, match="died"):
        assert lock.acquire(timeout=10)
    assert time.monotonic() - t0 < 1.0
    lock.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warning: the lock is healthy
        with lock:
            pass


def _read_and_die(lock, ready):
    lock.acquire_read()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- travelling


def _locked_add(args):
    a, lock, n = args
    for _ in range(n):
        with lock:
            a[0] = a[0] + 1
    return os.getpid()


def test_lock_through_pool_map_args():
    a = ndshm.zeros(1, dtype=np.int64)
    lk = ndshm.Lock()
    with CTX.Pool(2) as pool:
        pool.map(_locked_add, [(a, lk, 2000)] * 6, chunksize=1)
    assert a[0] == 12_000


def test_lock_through_process_pool_executor():
    a = ndshm.zeros(1, dtype=np.int64)
    with cf.ProcessPoolExecutor(2, mp_context=CTX) as ex:
        list(ex.map(_locked_add, [(a, a.lock, 2000)] * 6))
    assert a[0] == 12_000


def _from_queue(q, out):
    a, lock = q.get()
    _locked_add((a, lock, 1000))
    out.put("done")


def test_lock_through_a_queue_and_a_pipe():
    a = ndshm.zeros(1, dtype=np.int64)
    lk = ndshm.RWLock()
    q, out = CTX.Queue(), CTX.Queue()
    p = CTX.Process(target=_from_queue, args=(q, out))
    p.start()
    q.put((a, lk))
    r, w = CTX.Pipe(duplex=False)
    w.send((a, lk))
    a2, lk2 = r.recv()
    assert type(lk2) is ndshm.RWLock
    _locked_add((a2, lk2, 1000))
    assert out.get(timeout=30) == "done"
    p.join(30)
    assert a[0] == 2000
    assert len(pickle.dumps(lk)) < 200


def test_array_lock_is_shared_by_views_and_named_attaches(shm_name):
    a = ndshm.zeros((4, 4), name=shm_name)
    b = ndshm.attach(shm_name)
    v = pickle.loads(pickle.dumps(a[1:, ::2]))
    with a.lock:
        assert b.lock.locked() and v.lock.locked()
        assert not b.lock.acquire(blocking=False)
    assert not b.lock.locked()
    r = ndshm.attach(shm_name, readonly=True)
    with r.lock.read():  # a read-only array still has a usable lock
        assert a.lock.readers == 1


# ---------------------------------------------------------------- misuse


def test_release_of_a_lock_not_held_is_runtime_error():
    lk = ndshm.RWLock()
    with pytest.raises(RuntimeError):
        lk.release()
    lk.acquire()
    errors = []

    def other_thread():
        try:
            lk.release()
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors and lk.locked()  # another thread's release did not release it
    lk.release()


def test_read_lock_released_as_write_lock_is_runtime_error():
    rw = ndshm.RWLock()
    slot = rw.acquire_read()
    with pytest.raises(RuntimeError):
        rw.release()
    rw.release_read(slot)
    with pytest.raises(RuntimeError):
        rw.release_read(slot)
    with pytest.raises((RuntimeError, OverflowError)):
        rw.release_read(10_000)


@pytest.mark.parametrize("bad", [-0.5, -2, float("nan"), float("-inf")])
def test_bad_timeouts_are_value_errors(bad):
    lk = ndshm.RWLock()
    with pytest.raises(ValueError):
        lk.acquire(timeout=bad)
    with pytest.raises(ValueError), lk.read(timeout=bad):
        pass
    assert not lk.locked() and lk.readers == 0


def test_timeouts_none_and_minus_one_mean_forever():
    lk = ndshm.Lock()
    assert lk.acquire(timeout=None)
    lk.release()
    assert lk.acquire(timeout=-1)
    lk.release()


def test_lock_of_a_private_array_is_value_error():
    a = ndshm.zeros(3)
    private = (a + 1).view(ndshm.SharedArray)
    with pytest.raises(ValueError, match="no lock"):
        _ = private.lock


def test_forged_or_corrupted_lock_handles_never_crash():
    data = pickle.dumps(ndshm.Lock())
    code = (
        "import pickle, sys\n"
        "data = bytes.fromhex(sys.argv[1])\n"
        "ok = err = 0\n"
        "for i in range(len(data)):\n"
        "    for v in (data[i] ^ 1, data[i] ^ 0x80, 0, 255):\n"
        "        d = data[:i] + bytes([v]) + data[i+1:]\n"
        "        try:\n"
        "            x = pickle.loads(d)\n"
        "            if hasattr(x, 'acquire') and x.acquire(timeout=0.01):\n"
        "                x.release()\n"
        "            ok += 1\n"
        "        except Exception:\n"
        "            err += 1\n"
        "print(ok, err)\n"
    )
    r = subprocess.run(
        [os.sys.executable, "-c", code, data.hex()], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ok, err = map(int, r.stdout.split())
    assert err > 0 and ok + err == 4 * len(data)


# ---------------------------------------------------------------- the C methods
#
# acquire, release, __enter__ and __exit__ are CPython C methods installed on
# the native type (crates/ndshm-python/src/lock.rs), with their own argument
# matching: it must behave as PyO3's did, and no input may crash or leak.


def test_lock_methods_are_c_methods_with_signatures():
    import inspect

    for name, sig in [
        ("acquire", "(self, /, blocking=True, timeout=None)"),
        ("release", "(self, /)"),
        ("__enter__", "(self, /)"),
        ("__exit__", "(self, /, _exc_type, _exc, _tb)"),
    ]:
        m = ndshm._native.Lock.__dict__[name]
        assert type(m).__name__ == "method_descriptor"
        assert str(inspect.signature(m)) == sig
        assert ndshm.RWLock.__dict__.get(name) is None  # no Python wrapper on the way
        assert ndshm.Lock.__dict__.get(name) is None
    assert "Returns False" in ndshm.Lock.acquire.__doc__


def test_acquire_arguments_by_position_and_keyword():
    lk = ndshm.Lock()
    for args, kwargs in [
        ((), {}),
        ((True,), {}),
        ((True, None), {}),
        ((True, 0.5), {}),
        ((), {"timeout": 0.5}),
        ((), {"blocking": True, "timeout": 3}),
        ((False,), {}),
        ((), {"blocking": False}),
        ((True,), {"timeout": -1}),
        ((np.bool_(True),), {"timeout": np.float32(1.0)}),
        ((), {"timeout": 1 << 80}),  # longer than any deadline: forever
        ((False, -5), {}),  # not blocking: the timeout is not looked at
    ]:
        assert lk.acquire(*args, **kwargs) is True, (args, kwargs)
        assert lk.locked()
        assert lk.acquire(False) is False  # not re-entrant
        assert lk.release() is None
        assert not lk.locked()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lk: lk.acquire("x"), "while processing 'blocking'"),
        (lambda lk: lk.acquire(1), "while processing 'blocking'"),
        (lambda lk: lk.acquire(1, 2), "while processing 'blocking'"),
        (lambda lk: lk.acquire(timeout="x"), "while processing 'timeout'"),
        (lambda lk: lk.acquire(True, [1.0]), "while processing 'timeout'"),
        (lambda lk: lk.acquire(True, 1, 2), r"takes from 0 to 2 positional arguments but 3 were given"),
        (lambda lk: lk.acquire(foo=1), "unexpected keyword argument 'foo'"),
        (lambda lk: lk.acquire(True, timeout=1, foo=1), "unexpected keyword argument 'foo'"),
        (lambda lk: lk.acquire(True, blocking=True), "multiple values for argument 'blocking'"),
        (lambda lk: lk.acquire(**{"timeout": 1, "blocking": True, "x": 2}), "unexpected keyword"),
        (lambda lk: lk.release(1), "takes no arguments"),
        (lambda lk: lk.release(x=1), "takes no keyword arguments"),
        (lambda lk: lk.__enter__(1), "takes no arguments"),
        (lambda lk: lk.__exit__(), "missing 3 required positional arguments: '_exc_type', '_exc', and '_tb'"),
        (lambda lk: lk.__exit__(None, None), "missing 1 required positional argument: '_tb'"),
        (lambda lk: lk.__exit__(None, None, None, None), "takes 3 positional arguments but 4 were given"),
        (lambda lk: lk.__exit__(None, None, tb=None), "unexpected keyword argument 'tb'"),
        (lambda lk: lk.__exit__(None, None, None, _tb=None), "multiple values for argument '_tb'"),
    ],
)
def test_bad_arguments_are_type_errors_and_change_nothing(call, message):
    lk = ndshm.RWLock()
    with pytest.raises(TypeError) as info:
        call(lk)
    text = " ".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert re.search(message, text), text
    assert not lk.locked()
    # The same while held: a bad __exit__ call does not release the lock.
    assert lk.acquire()
    with pytest.raises(TypeError):
        call(lk)
    assert lk.locked()
    lk.release()


def test_exit_takes_its_arguments_by_keyword_too():
    lk = ndshm.Lock()
    assert lk.__enter__() is None
    assert lk.__exit__(_exc_type=None, _exc=None, _tb=None) is False
    assert not lk.locked()


@pytest.mark.parametrize("name", ["acquire", "release", "__enter__", "__exit__"])
def test_the_methods_refuse_other_objects(name):
    meth = ndshm._native.Lock.__dict__[name]
    args = (None, None, None) if name == "__exit__" else ()
    for other in (object(), 1, np.zeros(3), threading.Lock()):
        with pytest.raises(TypeError, match="doesn't apply to"):
            meth(other, *args)
    with pytest.raises(TypeError, match="needs an argument"):
        meth()
    # Nor can an instance skip the native constructor.
    with pytest.raises(TypeError, match="not safe"):
        object.__new__(ndshm.Lock)


def test_with_releases_on_exceptions_and_does_not_swallow_them():
    lk = ndshm.Lock()
    with pytest.raises(KeyError), lk:
        assert lk.locked()
        raise KeyError("inside")
    assert not lk.locked()
    # __exit__ on a lock this thread does not hold raises, whatever the body did.
    with pytest.raises(RuntimeError, match="does not hold"), lk:
        lk.release()


def test_the_methods_leak_no_references():
    lk = ndshm.Lock()
    for _ in range(100):  # warm up (caches, specialisation)
        lk.acquire()
        lk.release()
    before = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None), sys.getrefcount(lk)
    for _ in range(10_000):
        lk.acquire()
        lk.release()
        with lk:
            pass
        lk.acquire(blocking=False)
        assert lk.acquire(False) is False
        lk.release()
        with contextlib.suppress(RuntimeError):
            lk.release()
        with contextlib.suppress(TypeError):
            lk.acquire(timeout="x")
    after = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None), sys.getrefcount(lk)
    # True, False and None are immortal on Python 3.12+ (a fixed count); on
    # 3.11 any leak or over-release would move them by ~10,000.
    assert all(abs(a - b) < 100 for a, b in zip(before, after, strict=True)), (before, after)


def test_subclasses_can_extend_the_methods():
    events = []

    class Logged(ndshm.Lock):
        def acquire(self, *args, **kwargs):
            events.append("acquire")
            return super().acquire(*args, **kwargs)

        def __exit__(self, *exc):
            events.append("exit")
            return super().__exit__(*exc)

    lk = Logged()
    with lk:
        assert lk.locked()
    assert lk.acquire(timeout=1) and not lk.acquire(blocking=False)
    lk.release()
    assert events == ["exit", "acquire", "acquire"]


def test_threads_contending_with_the_gil_count_exactly():
    lk = ndshm.Lock()
    box = [0]
    n, threads = 20_000, 4

    def work():
        for _ in range(n):
            with lk:
                v = box[0]
                box[0] = v + 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert box[0] == n * threads
    assert not lk.locked()
