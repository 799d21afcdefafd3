"""ndshm.Pool when things go wrong: exceptions in fn, workers that die
mid-task, Ctrl-C and a killed parent, bad arguments, a pool used after
shutdown. After each of them nothing of ndshm is left in /dev/shm and no
worker outlives its pool."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from procwatch import alive, proc_state, wait_for

import ndshm

HELPERS = Path(__file__).parent / "helpers"
SHM = Path(ndshm._native.segment_dir())
WORKERS = 2
# Names the test fixtures hand out (this session's or a concurrent one's):
# the session-wide leak check in conftest covers those.
TEST_NAME = re.compile(r"^ndshm-t\d+-")


def shm_entries() -> set[str]:
    return {p.name for p in SHM.glob("ndshm-*") if not TEST_NAME.match(p.name)}


@pytest.fixture(autouse=True)
def nothing_left_in_dev_shm():
    before = shm_entries()
    yield
    # Give dying processes a moment (a keeper may hold things briefly).
    deadline = time.monotonic() + 3.0
    while shm_entries() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shm_entries() - before, f"left in {SHM}: {sorted(shm_entries() - before)}"


@pytest.fixture(scope="module")
def pool():
    with ndshm.Pool(workers=WORKERS) as p:
        yield p


@pytest.fixture
def fresh_pool():
    with ndshm.Pool(workers=WORKERS) as p:
        yield p


def square(x):
    return x * x


def assert_usable(pool: ndshm.Pool) -> None:
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.submit(square, 9).result(timeout=10) == 81


# -- exceptions in fn ------------------------------------------------------------


class CustomError(Exception):
    def __init__(self, what: str, code: int) -> None:
        super().__init__(what, code)
        self.what, self.code = what, code


def raise_on_three(x):
    if x == 3:
        raise CustomError("three is bad", 33)
    return x


def raise_on_three_star(a, b):
    return raise_on_three(a + b)


def raise_in_block(a, block_id):
    return raise_on_three(block_id[0]) + a


CALLS = {
    "map": lambda p: p.map(raise_on_three, range(10)),
    "map-chunks": lambda p: p.map(raise_on_three, range(10), chunksize=4),
    "imap": lambda p: list(p.imap(raise_on_three, range(10))),
    "imap-generator": lambda p: list(p.imap(raise_on_three, (i for i in range(10)))),
    "imap_unordered": lambda p: list(p.imap_unordered(raise_on_three, range(10))),
    "starmap": lambda p: p.starmap(raise_on_three_star, [(i, 0) for i in range(10)]),
    "map-several": lambda p: p.map(raise_on_three_star, range(10), [0] * 10),
    "map_blocks": lambda p: p.map_blocks(raise_in_block, np.zeros(10), chunks=2),
    "submit": lambda p: p.submit(raise_on_three, 3).result(timeout=10),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_exception_in_fn_reaches_the_caller(pool, call):
    with pytest.raises(CustomError) as info:
        call(pool)
    err = info.value
    assert type(err) is CustomError
    assert (err.what, err.code) == ("three is bad", 33)
    cause = err.__cause__
    assert isinstance(cause, ndshm.RemoteTraceback)
    assert "raise_on_three" in str(cause)
    assert "three is bad" in str(cause)
    assert "test_pool_faults.py" in str(cause)
    assert_usable(pool)


def test_exception_in_a_submitted_future(pool):
    fut = pool.submit(raise_on_three, 3)
    err = fut.exception(timeout=10)
    assert type(err) is CustomError
    assert isinstance(err.__cause__, ndshm.RemoteTraceback) and "raise_on_three" in str(err.__cause__)
    assert pool.submit(raise_on_three, 4).result(timeout=10) == 4


def test_exception_that_cannot_be_pickled(pool):
    def raise_holding_a_lock(x):
        raise CustomError(threading.Lock(), x)  # travels as a substitute naming it

    with pytest.raises(Exception, match="CustomError") as info:
        pool.map(raise_holding_a_lock, range(3))
    assert isinstance(info.value.__cause__, ndshm.RemoteTraceback)
    assert "raise_holding_a_lock" in str(info.value.__cause__)
    assert_usable(pool)


def test_results_before_the_failure_are_delivered_by_imap(pool):
    it = pool.imap(raise_on_three, range(10), chunksize=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(CustomError):
        next(it)
    assert_usable(pool)


def test_block_of_the_wrong_shape(pool):
    with pytest.raises(ValueError, match=r"shape") as info:
        pool.map_blocks(lambda a: np.zeros(3), np.zeros((4, 4)), chunks=2)
    assert isinstance(info.value.__cause__, ndshm.RemoteTraceback)
    assert_usable(pool)


def broken_input():
    yield 1
    yield 2
    raise KeyError("the input broke")


@pytest.mark.parametrize("how", ["map", "imap", "imap_unordered"])
def test_error_in_the_input_iterator(pool, how):
    with pytest.raises(KeyError, match="the input broke"):
        list(getattr(pool, how)(square, broken_input()))
    assert_usable(pool)


def test_a_dropped_pool_stops_its_workers():
    p = ndshm.Pool(workers=WORKERS)
    pids = p.pids
    assert p.map(square, range(4)) == [0, 1, 4, 9]
    del p
    gc.collect()
    assert wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5.0)


# -- workers that die mid-task -------------------------------------------------------


def die_by_sigkill(x):
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def die_by_exit(x):
    if x == 5:
        os._exit(3)
    return x


def die_by_segfault(x):
    if x == 5:
        ctypes.string_at(0)
    return x


DEATHS = {
    "sigkill": (die_by_sigkill, -signal.SIGKILL),
    "exit": (die_by_exit, 3),
    "segfault": (die_by_segfault, -signal.SIGSEGV),
}


def assert_replaced(pool: ndshm.Pool, before: list[int], dead: int) -> None:
    assert dead in before
    assert wait_for(lambda: not alive(dead))
    # A submitted future may learn of the death a moment before the
    # replacement starts (the same thread does both): allow for it.
    wait_for(lambda: dead not in pool.pids and len(pool.pids) == WORKERS, timeout=2.0)
    pids = pool.pids
    assert len(pids) == WORKERS
    assert dead not in pids
    assert len(set(pids) - set(before)) == 1  # one new worker took the dead one's place
    assert all(alive(pid) for pid in pids)
    assert_usable(pool)
    assert pool.pids == pids


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", DEATHS.keys())
def test_worker_death_in_map(fresh_pool, how):
    fn, code = DEATHS[how]
    before = fresh_pool.pids
    t0 = time.monotonic()
    with pytest.raises(ndshm.WorkerDied) as info:
        fresh_pool.map(fn, range(8), chunksize=1)
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"WorkerDied took {elapsed:.1f} s"
    err = info.value
    assert fn.__name__ in str(err)  # names the task: the function...
    assert re.search(r"\b5\b", str(err))  # ... and the item
    assert err.task and fn.__name__ in err.task
    assert err.exitcode == code
    assert_replaced(fresh_pool, before, err.pid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", DEATHS.keys())
def test_worker_death_in_submit(fresh_pool, how):
    fn, code = DEATHS[how]
    before = fresh_pool.pids
    t0 = time.monotonic()
    ok = fresh_pool.submit(fn, 1)
    fut = fresh_pool.submit(fn, 5)
    err = fut.exception(timeout=5)
    assert time.monotonic() - t0 < 5.0
    assert isinstance(err, ndshm.WorkerDied)
    assert err.exitcode == code and err.task
    assert ok.result(timeout=5) == 1
    assert_replaced(fresh_pool, before, err.pid)
    assert fn.__name__ in str(err)  # names the task: which call died


@pytest.mark.timeout(30)
def test_worker_death_in_map_blocks(fresh_pool):
    def die_in_block(a, block_id):
        if block_id == (2,):
            os.kill(os.getpid(), signal.SIGKILL)
        return a

    before = fresh_pool.pids
    with pytest.raises(ndshm.WorkerDied) as info:
        fresh_pool.map_blocks(die_in_block, np.zeros(10), chunks=2)
    assert info.value.exitcode == -signal.SIGKILL
    assert_replaced(fresh_pool, before, info.value.pid)
    r = fresh_pool.map_blocks(np.negative, np.ones(10), chunks=2)
    np.testing.assert_array_equal(r, -np.ones(10))
    assert "die_in_block" in str(info.value)  # names the task: the function...
    assert re.search(r"\b2\b", str(info.value))  # ... and the block


@pytest.mark.timeout(30)
def test_idle_worker_killed_from_outside_is_replaced(fresh_pool):
    before = fresh_pool.pids
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: not alive(victim))
    assert_usable(fresh_pool)
    assert_replaced(fresh_pool, before, victim)


# -- Ctrl-C and a killed parent ----------------------------------------------------------


def _sigint_as_in_a_terminal() -> None:
    # A job started in the background of a shell without job control (as
    # CI may run the tests) inherits SIGINT ignored, and Python then leaves
    # it ignored: the helper is a program run from a terminal, so it gets
    # the default that Python turns into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_helper(*args: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"helper {args} printed no pids: {err}")
    return proc, [int(w) for w in line.split()]


def children(pid: int) -> list[int]:
    """The processes `pid` started (workers, and with forkserver the server)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def reap_leftovers(proc: subprocess.Popen, pids: set[int]) -> None:
    """After a failed check: kill what the test started, so it does not linger."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "method"), [("with", "default"), ("bare", "default"), ("with", "fork"), ("with", "spawn")]
)
def test_ctrl_c_stops_the_work_and_the_workers(mode, method):
    args = [str(HELPERS / "pool_ctrl_c.py"), mode] + ([] if method == "default" else [method])
    proc, workers = start_helper(*args)
    started = set(workers)
    try:
        assert len(workers) == WORKERS and all(alive(pid) for pid in workers)
        time.sleep(0.5)  # the map is under way (it would take 100 s)
        started |= set(children(proc.pid))
        os.kill(proc.pid, signal.SIGINT)  # the parent only, as a terminal's Ctrl-C is not
        t0 = time.monotonic()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # its stacks, to stderr
            time.sleep(0.5)
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the parent did not stop within 15 s of SIGINT; its stderr:\n{err}")
        assert time.monotonic() - t0 < 5.0, "Ctrl-C took more than 5 s to stop the parent"
        assert "KeyboardInterrupt" in err, err
        assert proc.returncode in (-signal.SIGINT, 130, 1), (proc.returncode, err)
        assert "the map finished" not in out
        assert wait_for(lambda: not any(alive(pid) for pid in started), timeout=3.0), [
            (pid, proc_state(pid)) for pid in started
        ]
    finally:
        reap_leftovers(proc, started)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("method", "busy"), [("default", False), ("default", True), ("fork", False), ("spawn", False)]
)
def test_workers_exit_when_the_parent_is_killed(method, busy):
    args = [str(HELPERS / "pool_parent_waits.py"), method] + (["busy"] if busy else [])
    proc, workers = start_helper(*args)
    started = set(workers)
    try:
        assert len(workers) == WORKERS and all(alive(pid) for pid in workers)
        if busy:
            time.sleep(0.5)
        started |= set(children(proc.pid))
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        # The workers are re-parented (not ours to reap): watch /proc.
        assert wait_for(lambda: not any(alive(pid) for pid in started), timeout=3.5), [
            (pid, proc_state(pid)) for pid in started
        ]
        assert time.monotonic() - t0 < 3.5
    finally:
        reap_leftovers(proc, started)


# -- bad arguments -----------------------------------------------------------------------------


class Pulled:
    """An input that records what was taken from it."""

    def __init__(self, n: int = 10) -> None:
        self.taken: list[int] = []
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            self.taken.append(i)
            yield i


def make_unpicklable():
    lock = threading.Lock()

    def holds_a_lock(*args, **kwargs):
        with lock:
            return args[0] if args else None

    return holds_a_lock


UNPICKLABLE_CALLS = {
    "map": lambda p, fn, src: p.map(fn, src),
    "imap": lambda p, fn, src: list(p.imap(fn, src)),
    "imap_unordered": lambda p, fn, src: list(p.imap_unordered(fn, src)),
    "starmap": lambda p, fn, src: p.starmap(fn, ((i,) for i in src)),
    "submit": lambda p, fn, src: p.submit(fn, 1),
    "map_blocks": lambda p, fn, src: p.map_blocks(fn, np.zeros(10), chunks=2),
    "module-map": lambda p, fn, src: ndshm.map(fn, src, workers=1),
    "module-map_blocks": lambda p, fn, src: ndshm.map_blocks(fn, np.zeros(10), chunks=2, workers=1),
}


@pytest.mark.parametrize("call", UNPICKLABLE_CALLS.values(), ids=UNPICKLABLE_CALLS.keys())
def test_unpicklable_fn_is_a_type_error_before_any_work(pool, call):
    src = Pulled()
    with pytest.raises(TypeError, match="holds_a_lock"):
        call(pool, make_unpicklable(), src)
    assert src.taken == []
    assert_usable(pool)


def test_unpicklable_item_is_a_type_error_naming_it(pool):
    with pytest.raises(TypeError, match=r"\b1\b"):
        pool.map(square, [1, threading.Lock(), 3])
    assert_usable(pool)


def test_unpicklable_result_names_the_item(pool):
    def returns_a_lock_at_seven(x):
        return threading.Lock() if x == 7 else x

    for chunksize in (None, 1, 4):
        with pytest.raises(Exception, match=r"\b7\b") as info:
            pool.map(returns_a_lock_at_seven, range(10), chunksize=chunksize)
        assert "pickle" in str(info.value)
    assert_usable(pool)


def ran_flag():
    """A shared flag, and an fn that sets it when it runs."""
    flag = ndshm.zeros(1, dtype=np.int64)

    def fn(*blocks):
        flag[0] = 1
        return blocks[0]

    return flag, fn


A = np.zeros((3, 4))

BAD_MAP_BLOCKS = {
    "no-broadcast": lambda p, fn: p.map_blocks(fn, A, np.zeros(5)),
    "chunks-too-many-axes": lambda p, fn: p.map_blocks(fn, A, chunks=(1, 1, 1)),
    "chunks-too-few-axes": lambda p, fn: p.map_blocks(fn, A, chunks=(1,)),
    "chunks-do-not-sum": lambda p, fn: p.map_blocks(fn, A, chunks=((1, 1), (4,))),
    "chunks-sum-too-big": lambda p, fn: p.map_blocks(fn, A, chunks=((2, 2), (4,))),
    "chunks-zero": lambda p, fn: p.map_blocks(fn, A, chunks=0),
    "chunks-zero-on-an-axis": lambda p, fn: p.map_blocks(fn, A, chunks=(1, 0)),
    "chunks-negative": lambda p, fn: p.map_blocks(fn, A, chunks=-2),
    "chunks-negative-size": lambda p, fn: p.map_blocks(fn, A, chunks=((4, -1), (4,))),
    "out-wrong-shape": lambda p, fn: p.map_blocks(fn, A, out=ndshm.zeros((4, 3))),
    "out-wrong-ndim": lambda p, fn: p.map_blocks(fn, A, out=ndshm.zeros(12)),
    "out-uncastable-dtype": lambda p, fn: p.map_blocks(fn, A, out=ndshm.zeros((3, 4), dtype=np.int32)),
    "out-plain-numpy": lambda p, fn: p.map_blocks(fn, A, out=np.zeros((3, 4))),
    "module-out-plain-numpy": lambda p, fn: ndshm.map_blocks(fn, A, out=np.zeros((3, 4)), workers=1),
    "module-chunks-do-not-sum": lambda p, fn: ndshm.map_blocks(fn, A, chunks=((1,), (4,)), workers=1),
}


@pytest.mark.parametrize("call", BAD_MAP_BLOCKS.values(), ids=BAD_MAP_BLOCKS.keys())
def test_bad_map_blocks_arguments_are_value_errors_before_any_work(pool, call):
    flag, fn = ran_flag()
    with pytest.raises(ValueError):
        call(pool, fn)
    time.sleep(0.05)
    assert flag[0] == 0, "fn ran although the arguments were refused"
    assert_usable(pool)


@pytest.mark.parametrize("workers", [0, -1, -8])
def test_workers_must_be_positive(workers):
    with pytest.raises(ValueError):
        ndshm.Pool(workers=workers)
    with pytest.raises(ValueError):
        ndshm.map(square, range(3), workers=workers)
    with pytest.raises(ValueError):
        ndshm.map_blocks(np.negative, np.zeros(3), workers=workers)


@pytest.mark.parametrize("workers", ["2", 2.0, [2]])
def test_workers_must_be_an_int(workers):
    with pytest.raises(TypeError):
        ndshm.Pool(workers=workers)
    with pytest.raises(TypeError):
        ndshm.map(square, range(3), workers=workers)


def test_unknown_start_method():
    with pytest.raises(ValueError):
        ndshm.Pool(workers=1, start_method="teleport")


CHUNKSIZE_CALLS = {
    "map": lambda p, src, c: p.map(square, src, chunksize=c),
    "imap": lambda p, src, c: list(p.imap(square, src, chunksize=c)),
    "imap_unordered": lambda p, src, c: list(p.imap_unordered(square, src, chunksize=c)),
    "starmap": lambda p, src, c: p.starmap(square, ((i,) for i in src), chunksize=c),
    "module-map": lambda p, src, c: ndshm.map(square, src, chunksize=c, workers=1),
}


@pytest.mark.parametrize("chunksize", [0, -1])
@pytest.mark.parametrize("call", CHUNKSIZE_CALLS.values(), ids=CHUNKSIZE_CALLS.keys())
def test_bad_chunksize(pool, call, chunksize):
    src = Pulled()
    with pytest.raises(ValueError):
        call(pool, src, chunksize)
    assert src.taken == []


SHUT_CALLS = {
    "map": lambda p: p.map(square, range(3)),
    "imap": lambda p: list(p.imap(square, range(3))),
    "imap_unordered": lambda p: list(p.imap_unordered(square, range(3))),
    "starmap": lambda p: p.starmap(square, [(1,)]),
    "submit": lambda p: p.submit(square, 3),
    "map_blocks": lambda p: p.map_blocks(np.negative, np.zeros(4)),
}


@pytest.fixture(scope="module")
def shut_pool():
    p = ndshm.Pool(workers=1)
    p.shutdown()
    return p


@pytest.mark.parametrize("call", SHUT_CALLS.values(), ids=SHUT_CALLS.keys())
def test_pool_after_shutdown_is_a_runtime_error(shut_pool, call):
    with pytest.raises(RuntimeError):
        call(shut_pool)


@pytest.mark.timeout(60)
def test_forkserver_imports_the_main_module_once_not_per_worker(tmp_path):
    """The fork server imports the program's main module once; the workers
    of every pool are forked from it with the module already there (its
    classes unpickle), and the path handed to the server is in no one's
    environment afterwards."""
    script = Path(__file__).parent / "helpers" / "pool_main_once.py"
    log = tmp_path / "imports.txt"
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["results"] == [[2, 4], [2, 4]]
    imports = [json.loads(line) for line in log.read_text().splitlines()]
    names = sorted(name for _pid, name, _argv in imports)
    assert names == ["__main__", "__mp_main__"], imports
    # Imported with the program's arguments, as a worker would import it.
    assert [argv for _pid, _name, argv in imports] == [[str(script), str(log)]] * 2
    (server,) = [pid for pid, name, _argv in imports if name == "__mp_main__"]
    assert server not in out["pids"] and len(set(out["pids"])) == 4
    assert out["parent_env"] is None and out["worker_env"] == [None] * 4


@pytest.mark.timeout(60)
def test_a_program_read_from_stdin_runs_on_the_default_start_method():
    """`python - < script`: the main module has no file to import, and the
    workers run without one, as for `python -c`."""
    program = (
        "import ndshm\n"
        "def inc(x):\n"
        "    return x + 1\n"
        "if __name__ == '__main__':\n"
        "    with ndshm.Pool(2) as pool:\n"
        "        print(pool.map(inc, range(4)), pool.map(lambda v: -v, range(3)), pool.start_method)\n"
    )
    proc = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "[1, 2, 3, 4] [0, -1, -2] forkserver"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "how, order", [("file", "ndshm-first"), ("file", "ndshm-last"), ("stdin", "ndshm-first")]
)
def test_pools_of_other_libraries_in_the_same_program(how, order):
    """An ndshm.Pool, ProcessPoolExecutor, multiprocessing.Pool and joblib in
    one program, each on its default start method (forkserver for the
    stdlib from 3.14), whichever starts the fork server: every pool's
    workers write the shared array, and the program exits cleanly."""
    script = Path(__file__).parent / "helpers" / "pool_with_others.py"
    if how == "file":
        cmd, given = [sys.executable, str(script), order], None
    else:
        cmd, given = [sys.executable, "-", order], script.read_text()
    proc = subprocess.run(cmd, input=given, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["default"] == ("forkserver" if sys.version_info >= (3, 14) else "fork")
    assert out["ndshm"] == "forkserver"
    assert out["sums"] == [float((i + 1) * (1 << 16)) for i in range(8)]


@pytest.mark.timeout(60)
def test_workers_that_cannot_start_break_the_pool_with_a_clear_error():
    script = Path(__file__).parent / "helpers" / "pool_unguarded.py"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    # The program's own error; a worker still dying may print after it.
    died = [line for line in proc.stderr.splitlines() if "WorkerDied" in line]
    assert died, proc.stderr[-3000:]
    assert "while starting" in died[-1] and "__main__" in died[-1], died[-1]
    assert elapsed < 20
