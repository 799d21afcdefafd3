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
import math
import multiprocessing as mp
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from types import TracebackType
from typing import Any, Literal

import numpy as np

from . import _native, _worker, protocol
from .arrays import SharedArray, empty
from .blocks import RESERVED, BlockRunner, check_kwargs, plan_blocks
from .chunking import Chunker
from .errors import RemoteTraceback, WorkerDied
from .handles import segment_of
from .jobs import FutureJob, Job, Lost, Outcome, PoolFuture
from .overlap import overlap_bytes, plan_overlap
from .progress import Progress
from .startmethod import default_start_method, default_workers, preload_forkserver

__all__ = ["RESERVED", "Pool", "RemoteTraceback", "WorkerDied"]

# How often the parent checks that its workers are alive.
_CHECK = 0.1
# Workers dying in a row before they reach the board: the pool is broken.
_START_DEATHS = 3
# Most chunks in flight per call: bounds imap's memory.
_WINDOW = 256


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
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer):
            raise TypeError(f"workers must be an int, not {type(workers).__name__}")
        workers = int(workers)
        if not 1 <= workers <= 255:
            raise ValueError(f"workers must be from 1 to 255, not {workers}")
        if start_method is not None and start_method not in mp.get_all_start_methods():
            raise ValueError(
                f"start_method must be one of {mp.get_all_start_methods()} or None, not {start_method!r}"
            )
        method = start_method or default_start_method()
        if method == "forkserver":
            preload_forkserver()
        self._ctx: Any = mp.get_context(method)
        self.start_method = method
        self.workers = workers
        self._board_array = empty(_native.Board.size(workers), np.uint8)
        seg = segment_of(self._board_array)
        assert seg is not None
        self._board = _native.Board.init(seg, workers)
        self._parent = _native.Parent(self._board)
        self._max_input = self._board.max_input
        self._lock = threading.RLock()
        self._jobs: dict[int, Job] = {}
        self._job_ids = itertools.count(protocol.FUTURES + 1)
        self._futures = FutureJob()
        self._parent.open_job(
            protocol.FUTURES, protocol.pack_function(protocol.DIRECT, None, self._board.max_job)
        )
        self._jobs[protocol.FUTURES] = self._futures
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
                got: Outcome = c
                if c.state == _native.TASK_DIED:
                    what = f"{job.items(c.tag, c.count)} of {job.what}"
                    died = WorkerDied(
                        f"worker {i} (pid {p.pid}) {how} while running {what}",
                        task=what,
                        pid=p.pid,
                        exitcode=code,
                    )
                    got = Lost(c.tag, c.count, died, c.elapsed_ns)
                self._deliver(job, got)
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
                # The other workers die starting too: stopped now, so that
                # nothing they print comes after the error the caller sees.
                self._finalizer.detach()
                _stop(self._board, self._procs, 0.0)
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

    def _deliver(self, job: Job, got: Outcome) -> None:
        job.deliver(got)
        if job.cancelled and job.outstanding == 0 and job.id != protocol.FUTURES:
            self._jobs.pop(job.id, None)
            self._parent.close_job(job.id)

    def _collect(self, me: Job | None) -> bool:
        with self._lock:
            got = self._parent.poll()
            others = False
            jobs = self._jobs
            for c in got:
                job = jobs.get(c.job)
                if job is not None:
                    self._deliver(job, c)
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

    def _pump(self, timeout: float, me: Job | None = None) -> bool:
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
                if fut.task == n:
                    del self._futures.futures[tag]
            return True

    # -- jobs --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise RuntimeError("this ndshm.Pool has been shut down")

    def _open_job(self, kind: int, fn: Any, ordered: bool = False) -> Job:
        data = protocol.pack_function(kind, fn, self._board.max_job)
        job = Job(next(self._job_ids), protocol.describe(fn), ordered)
        if isinstance(fn, BlockRunner):
            job.blocks = fn
        while True:
            with self._lock:
                self._check_open()
                if self._parent.open_job(job.id, data):
                    self._jobs[job.id] = job
                    return job
            self._pump(_CHECK)

    def _close_job(self, job: Job) -> None:
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
        chunker = Chunker(items, chunksize, self.workers)
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
    def _ready(job: Job, pending: deque[int], ordered: bool) -> Iterator[int]:
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

    def _fill(self, job: Job, chunker: Chunker, pending: deque[int], held: list) -> None:
        """Publishes chunks while the window has room and the board takes them."""
        while len(pending) < _WINDOW:
            # Publish in batches that grow with the work in flight: the first
            # chunk goes out alone, so workers start while the rest is packed.
            room = min(_WINDOW - len(pending), 64, max(1, len(pending)))
            if len(held) < room:
                held.extend(protocol.pack_chunks(chunker.take_many(room - len(held)), self._max_input))
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

    def _results(self, job: Job, tag: int, chunker: Chunker) -> tuple[list, BaseException | None]:
        """A chunk's results, and the error that ended it early, if any."""
        got = job.done.pop(tag)
        state, count = got.state, got.count
        if chunker.learns:
            chunker.observe(count, got.elapsed_ns)
        if state == _native.TASK_DONE:
            return protocol.unpack(got.payload), None
        if state == _native.TASK_DIED:
            return [], got.payload
        if state == _native.TASK_FAILED:
            err = protocol.unpack(got.payload)
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
        for results in self._chunks(protocol.MAP, fn, iterable, chunksize, True, progress):
            yield from results

    def imap_unordered(
        self, fn: Callable, iterable: Iterable, *, chunksize: int | None = None, progress: bool = False
    ) -> Iterator:
        """Like :meth:`imap`, in the order results are ready."""
        for results in self._chunks(protocol.MAP, fn, iterable, chunksize, False, progress):
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
            kind, items = protocol.MAP, iterables[0]
        else:
            kind, items = protocol.STAR, builtins.list(zip(*iterables))
        return self._gather(kind, fn, items, chunksize, progress, timeout)

    def starmap(
        self, fn: Callable, iterable: Iterable, *, chunksize: int | None = None, progress: bool = False
    ) -> list:
        """``[fn(*args) for args in iterable]``, computed by the workers."""
        return self._gather(protocol.STAR, fn, iterable, chunksize, progress)

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
        data = protocol.pack_call(fn, args, kwargs, self._max_input)
        fut = PoolFuture(protocol.describe(fn), self._task_state, self._cancel_task)
        while True:
            with self._lock:
                self._check_open()
                tag = next(self._future_tags)
                n = self._parent.publish(protocol.FUTURES, tag, 1, data)
                if n is not None:
                    fut.task = n
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
        check_kwargs("map_blocks", kwargs)
        runner, out = plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
        return self.run_blocks(runner, out, chunksize, progress)

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
        check_kwargs("map_overlap", kwargs)
        target = functools.partial(overlap_bytes, workers=self.workers)
        runner, out = plan_overlap(fn, arrays, chunks, out, dtype, kwargs, depth, boundary, trim, target)
        return self.run_blocks(runner, out, chunksize, progress)

    def run_blocks(
        self, runner: BlockRunner, out: np.ndarray, chunksize: int | None = None, progress: bool = False
    ) -> Any:
        """Runs the blocks a planned call (:func:`ndshm.blocks.plan_blocks`)
        gives; returns `out` when they are written."""
        nblocks = math.prod(len(s) for s in runner.grid)
        if chunksize is None:
            chunksize = 1
        for _ in self._chunks(protocol.MAP, runner, range(nblocks), chunksize, False, progress):
            pass
        return out

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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.terminate()  # Ctrl-C, SystemExit: do not wait for running tasks
        else:
            self.shutdown(wait=True)
        return False

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "running"
        return f"<ndshm.Pool workers={self.workers} start_method={self.start_method!r} {state}>"
