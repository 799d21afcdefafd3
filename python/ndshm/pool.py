"""``ndshm.Pool``: a process pool that dispatches through shared memory.

Tasks go to the workers through a board in an anonymous segment (see
``docs/ENGINE.md``): the parent publishes pickled chunks of items, workers
claim them with atomics and hand results back through their own rings,
idle workers sleep on a futex. A job's function is pickled once per call
(cloudpickle, so lambdas and closures work). Shared arrays among the items
travel as handles, so big data is never copied.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import math
import multiprocessing as mp
import os
import pickle
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from . import _native, _worker, sharing
from .arrays import SharedArray, empty, empty_lazy, from_array
from .blocks import BlockRunner, normalize_chunks
from .handles import segment_of
from .overlap import Halo, OverlapRunner
from .progress import Progress

__all__ = ["Pool", "RemoteTraceback", "WorkerDied", "map", "map_blocks", "map_overlap"]

# Task states, as the board reports them (declared by the core).
_CLAIMED, _DONE, _FAILED, _DIED = (
    _native.TASK_CLAIMED,
    _native.TASK_DONE,
    _native.TASK_FAILED,
    _native.TASK_DIED,
)
_FUTURES = 1  # the job id of submit()'s tasks
# How often the parent checks that its workers are alive.
_CHECK = 0.1
# Workers dying in a row before they reach the board: the pool is broken.
_START_DEATHS = 3
# Most chunks in flight per call: bounds imap's memory.
_WINDOW = 256


class WorkerDied(RuntimeError):
    """A worker process died while running a task (killed, crashed, or
    exited). The pool replaced it and stays usable."""

    def __init__(self, message: str, *, task: str = "", pid: int | None = None, exitcode: int | None = None):
        super().__init__(message)
        self.task, self.pid, self.exitcode = task, pid, exitcode

    def __reduce__(self):
        return (_worker_died, (str(self), self.task, self.pid, self.exitcode))


def _worker_died(message: str, task: str, pid: int | None, exitcode: int | None) -> WorkerDied:
    return WorkerDied(message, task=task, pid=pid, exitcode=exitcode)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker; attached as the
    ``__cause__`` of the exception re-raised in the caller."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_start_method() -> str:
    # forkserver: safe in a process with threads (fork is not), and each
    # worker starts in milliseconds once the server runs. Zero-copy does not
    # depend on it: arrays and the board travel as handles.
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _preload_forkserver() -> None:
    """Lets the fork server import ndshm (and numpy), and the program's main
    module, once, not per worker. Only a server not yet running with the
    default preload list is set up: another setting is the program's."""
    from multiprocessing import forkserver, process, spawn

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None or server._preload_modules != ["__main__"]:
        return
    if getattr(process.current_process(), "_inheriting", False):
        return  # a main module being imported to start a process: it cannot start any
    # Not "__main__": from late 3.13 releases the stdlib's server imports the
    # main module itself for that entry, and until 3.15 with no error
    # handling, so a program read from stdin or an unguarded main module
    # killed the server. ndshm._forkserver imports it, on every version.
    server.set_forkserver_preload(["ndshm._worker", "ndshm._forkserver"])
    prep = spawn.get_preparation_data("ndshm")
    if "init_main_from_path" not in prep:
        return  # an interactive session, `python -c`, or `python -m`
    # The server inherits the environment it is started with, and reads
    # these back (and drops them) when it imports ndshm._forkserver.
    main = {"path": prep["init_main_from_path"], "argv": prep["sys_argv"]}
    os.environ[_worker.MAIN_PATH_ENV] = json.dumps(main)
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(_worker.MAIN_PATH_ENV, None)


def _describe(fn: Any) -> str:
    if isinstance(fn, BlockRunner):
        return f"{fn.what}({_describe(fn.fn)})"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


def _pack_fn(kind: int, fn: Any, limit: int) -> bytes:
    try:
        return _worker.pack((kind, fn), limit, dumps=sharing.dumps_function)
    except Exception as e:
        raise TypeError(f"cannot send the function {_describe(fn)} to the workers: {e}") from e


def _pack_chunks(chunks: list[tuple[int, Any]], limit: int) -> list[tuple[int, int, bytes]]:
    """``(tag, count, payload)`` of each ``(tag, chunk)``."""
    try:
        packed = [(tag, len(c), sharing.dumps(c)) for tag, c in chunks]
    except Exception:
        for tag, c in chunks:
            try:
                pickle.dumps(c, protocol=5)
            except Exception as e:
                raise _unsendable(c, tag, e) from e
        raise
    for i, (tag, n, data) in enumerate(packed):
        if len(data) > limit:
            packed[i] = (tag, n, _worker.spill(data))
    return packed


def _unsendable(items: Any, tag: int, e: Exception) -> TypeError:
    """The error for a chunk (first item `tag`) that failed to pickle with `e`,
    naming the first item that cannot be pickled."""
    for i, item in enumerate(items):
        try:
            pickle.dumps(item, protocol=5)
        except Exception:
            return TypeError(f"item {tag + i} cannot be sent to the workers: {e}")
    return TypeError(f"items {tag}..{tag + len(items) - 1} cannot be sent to the workers: {e}")


class _Job:
    """One call's tasks in flight and what came back (routed to it by
    whichever thread collects)."""

    def __init__(self, id: int, what: str, ordered: bool = False) -> None:
        self.id = id
        self.what = what
        self.blocks: BlockRunner | None = None
        self.outstanding = 0
        self.cancelled = False
        self.done: dict[int, tuple] = {}
        # Tags in the order they came back; kept only for unordered results.
        self.ordered = ordered
        self.arrived: deque[int] = deque()

    def items(self, tag: int, count: int) -> str:
        """What the task with this tag held, for error messages."""
        if self.blocks is not None:
            locs = [self.blocks.location(i) for i in range(tag, tag + count)]
            return f"block {locs[0]}" if count == 1 else f"blocks {locs[0]}..{locs[-1]}"
        return f"item {tag}" if count == 1 else f"items {tag}..{tag + count - 1}"

    def deliver(self, tag: int, count: int, state: int, payload: Any, elapsed: int) -> None:
        self.outstanding -= 1
        if not self.cancelled:
            self.done[tag] = (state, count, payload, elapsed)
            if not self.ordered:
                self.arrived.append(tag)


class _PoolFuture(Future):
    """A Future whose task can be withdrawn from the board until a worker
    claims it; from then on it is running and cannot be cancelled."""

    def __init__(self, pool: Pool, name: str) -> None:
        super().__init__()
        self._pool = pool
        self._name = name
        self._task: int | None = None

    def _claimed(self) -> bool:
        """Marks the future running if a worker holds its task."""
        state = self._pool._task_state(self._task)
        if state is not None and state >= _CLAIMED:
            try:
                self.set_running_or_notify_cancel()
            except RuntimeError:  # already running or done
                pass
            return True
        return False

    def cancel(self) -> bool:
        if self.done() or super().running():
            return super().cancel()
        if self._task is not None and not self._pool._cancel_task(self._task):
            self._claimed()
            return super().cancel()  # False if it is running now
        return super().cancel()

    def running(self) -> bool:
        if not super().running() and not self.done() and self._task is not None:
            self._claimed()
        return super().running()


class _FutureJob(_Job):
    """submit()'s tasks: each completes its Future."""

    def __init__(self) -> None:
        super().__init__(_FUTURES, "submit")
        self.futures: dict[int, _PoolFuture] = {}

    def items(self, tag: int, count: int) -> str:
        fut = self.futures.get(tag)
        return f"task {tag} ({fut._name})" if fut is not None else f"task {tag}"

    def deliver(self, tag: int, count: int, state: int, payload: Any, elapsed: int) -> None:
        self.outstanding -= 1
        fut = self.futures.pop(tag, None)
        if fut is None:
            return
        try:
            if not fut.set_running_or_notify_cancel():
                return
        except RuntimeError:  # already marked running
            pass
        try:
            if state == _DONE:
                fut.set_result(_worker.unpack(payload)[0])
            elif state == _DIED:
                fut.set_exception(payload)
            elif state == _FAILED:
                err = _worker.unpack(payload)
                err.exc.__cause__ = RemoteTraceback(err.tb)
                fut.set_exception(err.exc)
            else:
                fut.set_exception(RuntimeError("the task was cancelled"))
        except BaseException as e:  # a result that cannot be unpickled here
            fut.set_exception(e)


class _Chunker:
    """Cuts the items into chunks. Known length: guided self-scheduling
    (a quarter of what is left per worker, so chunks shrink towards the end
    and uneven tasks balance). Unknown length: sized from the measured time
    per item, aiming at a few milliseconds per chunk."""

    TARGET = 0.002  # seconds per chunk when the length is unknown

    def __init__(self, items: Iterable, chunksize: int | None, workers: int) -> None:
        try:
            self.remaining: int | None = len(items)  # type: ignore[arg-type]
        except TypeError:
            self.remaining = None
        # Sequences are cut by slicing: a range chunk pickles as three ints, a
        # shared array's chunk as a handle, a list's in one C-level copy.
        sliceable = isinstance(items, range | builtins.list | tuple | np.ndarray)
        self.seq = items if sliceable and self.remaining is not None else None
        self.pos = 0
        self.it = iter(items) if self.seq is None else None
        self.fixed = chunksize
        self.workers = workers
        self.tag = 0
        self.per_item: float | None = None
        self.grow = 1
        self.exhausted = False

    @property
    def learns(self) -> bool:
        """Whether chunk sizes follow measured times (see :meth:`observe`)."""
        return not self.fixed and self.remaining is None

    def observe(self, count: int, elapsed_ns: int) -> None:
        if count:
            t = elapsed_ns / 1e9 / count
            self.per_item = t if self.per_item is None else 0.7 * self.per_item + 0.3 * t

    def size(self) -> int:
        if self.fixed:
            return self.fixed
        if self.remaining is not None:
            return max(1, -(-self.remaining // (4 * self.workers)))
        if self.per_item is None:
            self.grow = min(self.grow * 2, 1024)
            return self.grow
        return int(min(65536, max(1, self.TARGET / max(self.per_item, 1e-9))))

    def take_many(self, n: int) -> list[tuple[int, Any]]:
        """Up to `n` chunks, as :meth:`take` gives them."""
        if self.fixed and self.seq is not None and not self.exhausted:
            # A fixed size over a sequence: cut the chunks in one step.
            size, start = self.fixed, self.pos
            part = self.seq[start : start + n * size]
            if type(part) is range and size < 512:
                part = builtins.list(part)  # as in take(), in one step
            chunks = [(start + i, part[i : i + size]) for i in range(0, len(part), size)]
            if type(part) is range and chunks and len(chunks[-1][1]) < 512:
                chunks[-1] = (chunks[-1][0], builtins.list(chunks[-1][1]))
            self.pos = self.tag = start + len(part)
            self.remaining -= len(part)  # type: ignore[operator]
            self.exhausted = len(part) < n * size or self.remaining <= 0  # type: ignore[operator]
            return chunks
        chunks = []
        while len(chunks) < n:
            nxt = self.take()
            if nxt is None:
                break
            chunks.append(nxt)
        return chunks

    def take(self) -> tuple[int, Any] | None:
        if self.exhausted:
            return None
        if self.seq is not None:
            chunk = self.seq[self.pos : self.pos + self.size()]
            self.pos += len(chunk)
            if type(chunk) is range and len(chunk) < 512:
                chunk = builtins.list(chunk)  # a range pickles slower than a few ints
        else:
            chunk = builtins.list(itertools.islice(self.it, self.size()))  # type: ignore[arg-type]
        if not len(chunk):
            self.exhausted = True
            return None
        tag = self.tag
        self.tag += len(chunk)
        if self.remaining is not None:
            self.remaining -= len(chunk)
            if self.remaining <= 0:
                self.exhausted = True
        return tag, chunk


def _stop(board: _native.Board, procs: list, grace: float) -> None:
    """Tells the workers to leave; terminates those that do not in time."""
    board.shutdown()
    deadline = time.monotonic() + grace
    for p in procs:
        if p is not None and p.pid is not None:
            p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p is not None and p.pid is not None and p.exitcode is None:
            p.terminate()
            p.join(1.0)
            if p.exitcode is None:
                p.kill()
                p.join()


class Pool(Executor):
    """A pool of worker processes fed through shared memory.

    ``workers`` defaults to the CPUs this process may run on; ``start_method``
    to ``"forkserver"`` (see docs/ENGINE.md for why). Use it as a context
    manager, or call :meth:`shutdown`.
    """

    def __init__(self, workers: int | None = None, start_method: str | None = None) -> None:
        if workers is None:
            workers = _default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        workers = int(workers)
        if not 1 <= workers <= 255:
            raise ValueError(f"workers must be from 1 to 255, not {workers}")
        if start_method is not None and start_method not in mp.get_all_start_methods():
            raise ValueError(
                f"start_method must be one of {mp.get_all_start_methods()} or None, not {start_method!r}"
            )
        method = start_method or _default_start_method()
        if method == "forkserver":
            _preload_forkserver()
        self._ctx = mp.get_context(method)
        self.start_method = method
        self.workers = workers
        self._board_array = empty(_native.Board.size(workers), np.uint8)
        seg = segment_of(self._board_array)
        assert seg is not None
        self._board = _native.Board.init(seg, workers)
        self._parent = _native.Parent(self._board)
        self._max_input = self._board.max_input
        self._lock = threading.RLock()
        self._jobs: dict[int, _Job] = {}
        self._job_ids = itertools.count(_FUTURES + 1)
        self._futures = _FutureJob()
        self._parent.open_job(_FUTURES, _pack_fn(_worker.DIRECT, None, self._board.max_job))
        self._jobs[_FUTURES] = self._futures
        self._future_tags = itertools.count()
        self._collector: threading.Thread | None = None
        self._closed = False
        self._broken: WorkerDied | None = None
        self._start_deaths = 0
        self._next_check = 0.0
        self._procs: list = [None] * workers
        self._finalizer = weakref.finalize(self, _stop, self._board, self._procs, 1.0)
        for i in range(workers):
            self._start(i)

    # -- workers ---------------------------------------------------------

    def _start(self, i: int) -> None:
        p = self._ctx.Process(
            target=_worker.main, args=(self._board_array, i), daemon=True, name=f"ndshm-worker-{i}"
        )
        p.start()
        self._procs[i] = p

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (a dead one is replaced first, even
        while the pool is idle)."""
        with self._lock:
            if not self._closed:
                self._check_workers()
            return [p.pid for p in self._procs if p is not None]

    def _check_workers(self) -> None:
        """Buries dead workers (failing the task each held) and replaces
        them. Called with the lock held."""
        for i, p in enumerate(self._procs):
            if p is None or p.exitcode is None:
                continue
            code, pid = p.exitcode, p.pid
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            # A worker that dies before it reaches the board could not start:
            # a few in a row and the pool is broken (replacing them would loop).
            started = self._board.worker_pid(i) == p.pid
            self._start_deaths = 0 if started else self._start_deaths + 1
            for c in self._parent.bury_worker(i):
                job = self._jobs.get(c.job)
                if job is None:
                    continue
                tag, count, state, payload = c.tag, c.count, c.state, c.payload
                if state == _DIED:
                    what = f"{job.items(tag, count)} of {job.what}"
                    payload = WorkerDied(
                        f"worker {i} (pid {p.pid}) {how} while running {what}",
                        task=what,
                        pid=p.pid,
                        exitcode=code,
                    )
                self._deliver(job, tag, count, state, payload, c.elapsed_ns)
            p.close()
            self._procs[i] = None
            if self._start_deaths >= _START_DEATHS and self._broken is None:
                self._broken = WorkerDied(
                    f"the pool is broken: {self._start_deaths} workers in a row {how} while starting; "
                    "with the forkserver and spawn start methods the main module must guard its work "
                    "with `if __name__ == '__main__':`",
                    pid=pid,
                    exitcode=code,
                )
                self._closed = True
                self._board.shutdown()
                for fut in builtins.list(self._futures.futures.values()):
                    try:
                        fut.set_running_or_notify_cancel()
                    except RuntimeError:
                        pass
                    if not fut.done():
                        fut.set_exception(self._broken)
                self._futures.futures.clear()
            if not self._closed:
                self._start(i)

    # -- collecting ------------------------------------------------------

    def _deliver(self, job: _Job, tag: int, count: int, state: int, payload: Any, elapsed: int) -> None:
        job.deliver(tag, count, state, payload, elapsed)
        if job.cancelled and job.outstanding == 0 and job.id != _FUTURES:
            self._jobs.pop(job.id, None)
            self._parent.close_job(job.id)

    def _collect(self, me: _Job | None) -> bool:
        with self._lock:
            got = self._parent.poll()
            others = False
            jobs = self._jobs
            for c in got:
                job = jobs.get(c.job)
                if job is not None:
                    self._deliver(job, c.tag, c.count, c.state, c.payload, c.elapsed_ns)
                    others = others or job is not me
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + _CHECK
                self._check_workers()
            if self._broken is not None:
                raise self._broken
        if others:
            self._board.notify_done()
        return bool(got)

    def _pump(self, timeout: float, me: _Job | None = None) -> bool:
        """Collects finished tasks, waiting up to `timeout` s for one."""
        seen = self._board.done_seq()
        if self._collect(me):
            return True
        if timeout > 0:
            self._board.wait_done(seen, min(timeout, _CHECK))
            return self._collect(me)
        return False

    def _collector_loop(self) -> None:
        while True:
            with self._lock:
                if self._broken is not None or (not self._futures.futures and self._futures.outstanding <= 0):
                    self._collector = None
                    return
            try:
                self._pump(_CHECK)
            except WorkerDied:
                pass  # the pool broke: its futures have the error

    def _task_state(self, n: int | None) -> int | None:
        if n is None:
            return None
        with self._lock:
            return self._parent.task_state(n)

    def _cancel_task(self, n: int) -> bool:
        with self._lock:
            if not self._parent.cancel_task(n):
                return False
            self._futures.outstanding -= 1
            for tag, fut in builtins.list(self._futures.futures.items()):
                if fut._task == n:
                    del self._futures.futures[tag]
            return True

    # -- jobs --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise RuntimeError("this ndshm.Pool has been shut down")

    def _open_job(self, kind: int, fn: Any, ordered: bool = False) -> _Job:
        data = _pack_fn(kind, fn, self._board.max_job)
        job = _Job(next(self._job_ids), _describe(fn), ordered)
        if isinstance(fn, BlockRunner):
            job.blocks = fn
        while True:
            with self._lock:
                self._check_open()
                if self._parent.open_job(job.id, data):
                    self._jobs[job.id] = job
                    return job
            self._pump(_CHECK)

    def _close_job(self, job: _Job) -> None:
        with self._lock:
            if job.outstanding > 0:
                job.cancelled = True
                job.done.clear()
                job.arrived.clear()
                self._parent.cancel_job(job.id)
            else:
                self._jobs.pop(job.id, None)
                self._parent.close_job(job.id)

    def _chunks(
        self,
        kind: int,
        fn: Any,
        items: Iterable,
        chunksize: int | None,
        ordered: bool,
        progress: bool,
        timeout: float | None = None,
    ) -> Iterator[list]:
        """Runs `fn` over `items` in chunks; yields each chunk's results."""
        if chunksize is not None:
            if isinstance(chunksize, bool) or not isinstance(chunksize, int | np.integer) or chunksize < 1:
                raise ValueError(f"chunksize must be a positive int or None, not {chunksize!r}")
            chunksize = int(chunksize)
        self._check_open()
        chunker = _Chunker(items, chunksize, self.workers)
        job = self._open_job(kind, fn, ordered)
        bar = Progress(progress, chunker.remaining, self._board, job.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        pending: deque[int] = deque()
        held: list[tuple[int, int, bytes]] = []
        try:
            while True:
                self._fill(job, chunker, pending, held)
                # Hand out what came back.
                handed = 0
                for tag in self._ready(job, pending, ordered):
                    results, err = self._results(job, tag, chunker)
                    handed += 1
                    if results:
                        yield results
                    if err is not None:
                        raise err
                if not pending and not held and chunker.exhausted:
                    return
                if handed:
                    continue  # refill the window before waiting
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{job.what}: results not ready within {timeout} s")
                self._pump(_CHECK, me=job)
                bar.update()
        finally:
            bar.close()
            self._close_job(job)

    @staticmethod
    def _ready(job: _Job, pending: deque[int], ordered: bool) -> Iterator[int]:
        """Tags of the chunks to hand out now, taken off `pending`: in task
        order (``ordered``), or in the order they came back."""
        if ordered:
            while pending and pending[0] in job.done:
                yield pending.popleft()
        else:
            while job.arrived:
                tag = job.arrived.popleft()
                pending.remove(tag)
                yield tag

    def _fill(self, job: _Job, chunker: _Chunker, pending: deque[int], held: list) -> None:
        """Publishes chunks while the window has room and the board takes them."""
        while len(pending) < _WINDOW:
            # Publish in batches that grow with the work in flight: the first
            # chunk goes out alone, so workers start while the rest is packed.
            room = min(_WINDOW - len(pending), 64, max(1, len(pending)))
            if len(held) < room:
                held.extend(_pack_chunks(chunker.take_many(room - len(held)), self._max_input))
            if not held:
                return
            with self._lock:
                self._check_open()
                n = self._parent.publish_many(job.id, held)
                if n:
                    job.outstanding += n
                    self._parent.wake_workers(n)
            pending.extend(t[0] for t in held[:n])
            del held[:n]
            if held:
                return  # the board is full

    def _results(self, job: _Job, tag: int, chunker: _Chunker) -> tuple[list, BaseException | None]:
        """A chunk's results, and the error that ended it early, if any."""
        state, count, payload, elapsed = job.done.pop(tag)
        if chunker.learns:
            chunker.observe(count, elapsed)
        if state == _DONE:
            return _worker.unpack(payload), None
        if state == _DIED:
            return [], payload
        if state == _FAILED:
            err = _worker.unpack(payload)
            err.exc.__cause__ = RemoteTraceback(err.tb)
            return err.done, err.exc
        return [], RuntimeError(f"{job.what}: items {tag}..{tag + count - 1} were skipped")

    # -- the Executor API ----------------------------------------------------

    def imap(
        self, fn: Callable, iterable: Iterable, *, chunksize: int | None = None, progress: bool = False
    ) -> Iterator:
        """Like :meth:`map`, lazily: results come in order as they are ready;
        at most a bounded number of items is in flight (an endless iterable
        works)."""
        for results in self._chunks(_worker.MAP, fn, iterable, chunksize, True, progress):
            yield from results

    def imap_unordered(
        self, fn: Callable, iterable: Iterable, *, chunksize: int | None = None, progress: bool = False
    ) -> Iterator:
        """Like :meth:`imap`, in the order results are ready."""
        for results in self._chunks(_worker.MAP, fn, iterable, chunksize, False, progress):
            yield from results

    def map(  # type: ignore[override]
        self,
        fn: Callable,
        *iterables: Iterable,
        timeout: float | None = None,
        chunksize: int | None = None,
        progress: bool = False,
    ) -> list:
        """``[fn(x) for x in iterable]``, computed by the workers. With several
        iterables, ``fn`` takes one item of each (like the builtin ``map``)."""
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if len(iterables) == 1:
            kind, items = _worker.MAP, iterables[0]
        else:
            kind, items = _worker.STAR, builtins.list(zip(*iterables))
        return self._gather(kind, fn, items, chunksize, progress, timeout)

    def starmap(
        self, fn: Callable, iterable: Iterable, *, chunksize: int | None = None, progress: bool = False
    ) -> list:
        """``[fn(*args) for args in iterable]``, computed by the workers."""
        return self._gather(_worker.STAR, fn, iterable, chunksize, progress)

    def _gather(
        self,
        kind: int,
        fn: Callable,
        items: Iterable,
        chunksize: int | None,
        progress: bool,
        timeout: float | None = None,
    ) -> list:
        out: list = []
        for results in self._chunks(kind, fn, items, chunksize, True, progress, timeout):
            out.extend(results)
        return out

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Runs ``fn(*args, **kwargs)`` in a worker; returns its Future."""
        self._check_open()
        try:
            data = _worker.pack((fn, args, kwargs), self._max_input, dumps=sharing.dumps_function)
        except Exception as e:
            raise TypeError(f"cannot send {_describe(fn)} and its arguments to the workers: {e}") from e
        fut = _PoolFuture(self, _describe(fn))
        while True:
            with self._lock:
                self._check_open()
                tag = next(self._future_tags)
                n = self._parent.publish(_FUTURES, tag, 1, data)
                if n is not None:
                    fut._task = n
                    self._futures.futures[tag] = fut
                    self._futures.outstanding += 1
                    self._parent.wake_workers(1)
                    if self._collector is None:
                        self._collector = threading.Thread(
                            target=self._collector_loop, name="ndshm-pool-results", daemon=True
                        )
                        self._collector.start()
                    return fut
            self._pump(_CHECK)

    def map_blocks(
        self,
        fn: Callable,
        /,
        *arrays: Any,
        chunks: Any = None,
        out: np.ndarray | None = None,
        dtype: Any = None,
        chunksize: int | None = None,
        progress: bool = False,
        **kwargs: Any,
    ) -> SharedArray:
        """Applies ``fn`` block by block to arrays broadcast to one shape, and
        writes each result block into the shared array ``out`` (allocated when
        not given; its dtype is ``dtype`` or that of the inputs). Other
        keyword arguments go to ``fn`` (see :data:`RESERVED` for the names
        that do not). ``fn`` may take ``block_id`` / ``block_info`` keywords,
        as in dask; a numpy ufunc or numba ``@vectorize`` function writes
        straight into ``out``."""
        self._check_open()
        _check_kwargs("map_blocks", kwargs)
        runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
        return self._run_blocks(runner, out, chunksize, progress)

    def map_overlap(
        self,
        fn: Callable,
        /,
        *arrays: Any,
        depth: Any,
        boundary: Any = None,
        chunks: Any = None,
        out: np.ndarray | None = None,
        dtype: Any = None,
        trim: bool = True,
        chunksize: int | None = None,
        progress: bool = False,
        **kwargs: Any,
    ) -> SharedArray:
        """Like :meth:`map_blocks`, each block with a halo of ``depth``
        neighbouring elements, the array's edges extended as ``boundary``
        says (both as in ``dask.array.map_overlap``; see ``ndshm.overlap``).
        ``fn`` gets the block with its halo; the block's part of the result
        is written into ``out`` (with ``trim=False``, ``fn`` returns just
        the block)."""
        self._check_open()
        _check_kwargs("map_overlap", kwargs)
        target = functools.partial(_overlap_bytes, workers=self.workers)
        runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs, (depth, boundary, trim, target))
        return self._run_blocks(runner, out, chunksize, progress)

    def _run_blocks(self, runner: BlockRunner, out: np.ndarray, chunksize: int | None, progress: bool) -> Any:
        nblocks = math.prod(len(s) for s in runner.grid)
        if chunksize is None:
            chunksize = 1
        for _ in self._chunks(_worker.MAP, runner, range(nblocks), chunksize, False, progress):
            pass
        return out  # type: ignore[return-value]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops the workers. With ``wait``, first lets submitted tasks finish
        (or cancels those not started, with ``cancel_futures``)."""
        with self._lock:
            if self._closed:
                return
            if cancel_futures:
                # Withdraws the queued tasks; running ones finish.
                for fut in builtins.list(self._futures.futures.values()):
                    fut.cancel()
        if wait:
            while True:
                with self._lock:
                    if not self._futures.futures:
                        break
                self._pump(_CHECK)
        with self._lock:
            self._closed = True
        self._finalizer.detach()
        _stop(self._board, self._procs, 5.0 if wait else 0.5)
        for fut in builtins.list(self._futures.futures.values()):
            fut.cancel()

    def terminate(self) -> None:
        """Stops the workers at once, whatever they are running."""
        with self._lock:
            self._closed = True
        self._finalizer.detach()
        _stop(self._board, self._procs, 0.0)

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[override]
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.terminate()  # Ctrl-C, SystemExit: do not wait for running tasks
        else:
            self.shutdown(wait=True)
        return False

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "running"
        return f"<ndshm.Pool workers={self.workers} start_method={self.start_method!r} {state}>"


def _share(a: Any) -> np.ndarray:
    """`a` as a shared array (or view of one): shared arrays as they are,
    others copied once; broadcast axes are not materialized."""
    shared = sharing.shared_view(a) if isinstance(a, np.ndarray) else None
    if shared is not None:
        return shared
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise TypeError("map_blocks inputs cannot hold Python objects (dtype object)")
    core = a[tuple(slice(0, 1) if s == 0 and n > 1 else slice(None) for s, n in zip(a.strides, a.shape))]
    shared = from_array(np.ascontiguousarray(core) if core.ndim else core)
    return np.broadcast_to(shared, a.shape, subok=True)


#: Keywords that ndshm's block functions keep for themselves, on every entry
#: point (Pool methods, module functions, with any executor), so a call
#: means the same wherever it runs: a name here that the entry point called
#: does not take is a TypeError, never passed to ``fn``. Every other keyword
#: goes to ``fn``; bind one of these names with ``functools.partial``.
RESERVED = frozenset(
    {"chunks", "out", "dtype", "chunksize", "progress", "workers", "start_method", "executor"}
    | {"block_id", "block_info"}  # given to fn by ndshm, when fn takes them
)


def _check_kwargs(what: str, kwargs: dict) -> None:
    clash = sorted(RESERVED.intersection(kwargs))
    if clash:
        name = clash[0]
        raise TypeError(
            f"{what}() got {name}=, a keyword ndshm keeps for itself and never passes to fn "
            f"(not taken by this entry point); to give it to fn, use functools.partial(fn, {name}=...)"
        )


def _overlap_bytes(shape: tuple[int, ...], itemsize: int, workers: int) -> int:
    """Bytes per block of a map_overlap when `chunks` is not given: a few
    blocks per worker, big enough that halos cost little."""
    total = math.prod(shape) * itemsize
    return min(64 << 20, max(4 << 20, total // (4 * max(1, workers))))


def _plan_blocks(
    fn: Any,
    arrays: tuple,
    chunks: Any,
    out: Any,
    dtype: Any,
    kwargs: dict | None = None,
    overlap: tuple | None = None,
) -> tuple[BlockRunner, np.ndarray]:
    """Checks map_blocks' arguments (before any work starts). `overlap`:
    map_overlap's ``(depth, boundary, trim, target)``, where ``target(shape,
    itemsize)`` gives the block size in bytes when `chunks` is not given."""
    what = "map_blocks" if overlap is None else "map_overlap"
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    if not arrays:
        raise ValueError(f"{what} needs at least one array")
    inputs = [np.asarray(a) if not isinstance(a, np.ndarray) else a for a in arrays]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in inputs))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in inputs)
        raise ValueError(f"the arrays do not broadcast to one shape: {shapes}") from None
    halo = None if overlap is None else Halo(overlap[0], overlap[1], len(shape))
    want = np.dtype(dtype) if dtype is not None else np.result_type(*inputs)
    lazy = out is None
    if out is None:
        # Its pages are allocated by the workers, each for the blocks it
        # writes: in parallel, and not first zeroed here.
        out = empty_lazy(shape, want)
    else:
        out = sharing.require_shared(out, "out")
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the broadcast inputs {shape}")
        if dtype is not None and out.dtype != want:
            raise ValueError(f"out has dtype {out.dtype}, not the requested {want}")
        if not np.can_cast(want, out.dtype, "same_kind"):
            raise ValueError(f"out has dtype {out.dtype}, which the inputs' {want} cannot be cast to")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
    if halo is not None and chunks is None:
        grid = halo.chunks(shape, out.dtype.itemsize, overlap[3](shape, out.dtype.itemsize))  # type: ignore[index]
    else:
        grid = normalize_chunks(chunks, shape, out.dtype.itemsize)
    if halo is not None:
        halo.check(grid, [a.dtype for a in inputs])
    views = [np.broadcast_to(_share(a), shape, subok=True) for a in inputs]
    if halo is None:
        runner = BlockRunner(fn, views, out, grid, kwargs)
    else:
        runner = OverlapRunner(fn, views, out, grid, kwargs, halo, overlap[2])  # type: ignore[index]
    runner.lazy = lazy
    return runner, out


def map(
    fn: Callable,
    iterable: Iterable,
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
) -> list:
    """``[fn(x) for x in iterable]`` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool` or a ``distributed.Client``."""
    if executor is not None:
        if isinstance(executor, Pool):
            return executor.map(fn, iterable, chunksize=chunksize, progress=progress)
        from .dask.executor import map_on

        return map_on(executor, fn, iterable, chunksize, progress)
    with Pool(workers, start_method) as pool:
        return pool.map(fn, iterable, chunksize=chunksize, progress=progress)


def map_blocks(
    fn: Callable,
    /,
    *arrays: Any,
    chunks: Any = None,
    out: np.ndarray | None = None,
    dtype: Any = None,
    workers: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
    **kwargs: Any,
) -> SharedArray:
    """:meth:`Pool.map_blocks` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool`, a ``distributed.Client`` (whose
    workers on other hosts get the bytes of their blocks), or ``"threads"``
    (`workers` threads of this process, see :mod:`ndshm.threads`). Other
    keyword arguments go to ``fn`` (see :data:`RESERVED`)."""
    _check_kwargs("map_blocks", kwargs)
    if isinstance(executor, str):
        if executor != "threads":
            raise TypeError(
                f'executor must be an ndshm.Pool, a distributed.Client or "threads", not {executor!r}'
            )
        from . import threads

        n = threads.check_workers(workers)
        return threads.run_blocks(*_plan_blocks(fn, arrays, chunks, out, dtype, kwargs), n, progress)
    if isinstance(executor, Pool):
        return executor.map_blocks(
            fn, *arrays, chunks=chunks, out=out, dtype=dtype, progress=progress, **kwargs
        )
    if executor is not None:
        from .dask.executor import _check_client, auto_chunks, map_blocks_on

        _check_client(executor)
        if chunks is None:
            chunks = auto_chunks(executor, arrays, dtype)
        runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
        return map_blocks_on(executor, runner, out, progress)
    runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
    with Pool(workers, start_method) as pool:
        return pool._run_blocks(runner, out, None, progress)


def map_overlap(
    fn: Callable,
    /,
    *arrays: Any,
    depth: Any,
    boundary: Any = None,
    chunks: Any = None,
    out: np.ndarray | None = None,
    dtype: Any = None,
    trim: bool = True,
    workers: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
    **kwargs: Any,
) -> SharedArray:
    """:meth:`Pool.map_overlap` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool` or a ``distributed.Client`` (whose
    workers on other hosts get the bytes of their blocks and halos)."""
    _check_kwargs("map_overlap", kwargs)
    if isinstance(executor, Pool):
        return executor.map_overlap(
            fn,
            *arrays,
            depth=depth,
            boundary=boundary,
            chunks=chunks,
            out=out,
            dtype=dtype,
            trim=trim,
            progress=progress,
            **kwargs,
        )
    if executor is not None:
        from .dask.executor import _check_client, block_bytes, map_blocks_on

        _check_client(executor)
        spec = (depth, boundary, trim, functools.partial(block_bytes, executor))
        runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs, spec)
        return map_blocks_on(executor, runner, out, progress)
    n = workers if isinstance(workers, int) and workers > 0 else _default_workers()
    spec = (depth, boundary, trim, functools.partial(_overlap_bytes, workers=n))
    runner, out = _plan_blocks(fn, arrays, chunks, out, dtype, kwargs, spec)
    with Pool(workers, start_method) as pool:
        return pool._run_blocks(runner, out, None, progress)
