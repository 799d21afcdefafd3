"""A pool's bookkeeping of the calls in flight: a :class:`Job` per call
(its tasks out, what came back), and submit()'s tasks as Futures."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from . import _native
from .blocks import BlockRunner
from .errors import RemoteTraceback
from .protocol import FUTURES, unpack


class Outcome(Protocol):
    """What came back for a task: the core's ``_native.Completion``, or
    :class:`Lost`."""

    @property
    def tag(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def state(self) -> int: ...
    @property
    def payload(self) -> Any: ...
    @property
    def elapsed_ns(self) -> int: ...


class Lost:
    """The outcome of a task whose worker died: ``TASK_DIED``, with the
    :class:`~ndshm.WorkerDied` to raise as its payload."""

    __slots__ = ("count", "elapsed_ns", "payload", "state", "tag")

    def __init__(self, tag: int, count: int, error: BaseException, elapsed_ns: int) -> None:
        self.tag, self.count, self.elapsed_ns = tag, count, elapsed_ns
        self.state = _native.TASK_DIED
        self.payload = error


class Job:
    """One call's tasks in flight and what came back (routed to it by
    whichever thread collects)."""

    def __init__(self, id: int, what: str, ordered: bool = False) -> None:
        self.id = id
        self.what = what
        self.blocks: BlockRunner | None = None
        self.outstanding = 0
        self.cancelled = False
        self.done: dict[int, Outcome] = {}
        # Tags in the order they came back; kept only for unordered results.
        self.ordered = ordered
        self.arrived: deque[int] = deque()

    def items(self, tag: int, count: int) -> str:
        """What the task with this tag held, for error messages."""
        if self.blocks is not None:
            locs = [self.blocks.location(i) for i in range(tag, tag + count)]
            return f"block {locs[0]}" if count == 1 else f"blocks {locs[0]}..{locs[-1]}"
        return f"item {tag}" if count == 1 else f"items {tag}..{tag + count - 1}"

    def deliver(self, got: Outcome) -> None:
        self.outstanding -= 1
        if not self.cancelled:
            self.done[got.tag] = got
            if not self.ordered:
                self.arrived.append(got.tag)


class PoolFuture(Future):
    """A Future whose task can be withdrawn from the board until a worker
    claims it; from then on it is running and cannot be cancelled."""

    def __init__(
        self, name: str, state_of: Callable[[int | None], int | None], withdraw: Callable[[int], bool]
    ) -> None:
        super().__init__()
        self.name = name
        #: The board's number of its task, once published.
        self.task: int | None = None
        self._state_of = state_of
        self._withdraw = withdraw

    def _claimed(self) -> bool:
        """Marks the future running if a worker holds its task."""
        state = self._state_of(self.task)
        if state is not None and state >= _native.TASK_CLAIMED:
            try:
                self.set_running_or_notify_cancel()
            except RuntimeError:  # already running or done
                pass
            return True
        return False

    def cancel(self) -> bool:
        if self.done() or super().running():
            return super().cancel()
        if self.task is not None and not self._withdraw(self.task):
            self._claimed()
            return super().cancel()  # False if it is running now
        return super().cancel()

    def running(self) -> bool:
        if not super().running() and not self.done() and self.task is not None:
            self._claimed()
        return super().running()


class FutureJob(Job):
    """submit()'s tasks: each completes its Future."""

    def __init__(self) -> None:
        super().__init__(FUTURES, "submit")
        self.futures: dict[int, PoolFuture] = {}

    def items(self, tag: int, count: int) -> str:
        fut = self.futures.get(tag)
        return f"task {tag} ({fut.name})" if fut is not None else f"task {tag}"

    def deliver(self, got: Outcome) -> None:
        self.outstanding -= 1
        fut = self.futures.pop(got.tag, None)
        if fut is None:
            return
        try:
            if not fut.set_running_or_notify_cancel():
                return
        except RuntimeError:  # already marked running
            pass
        try:
            state = got.state
            if state == _native.TASK_DONE:
                fut.set_result(unpack(got.payload)[0])
            elif state == _native.TASK_DIED:
                fut.set_exception(got.payload)
            elif state == _native.TASK_FAILED:
                err = unpack(got.payload)
                err.exc.__cause__ = RemoteTraceback(err.tb)
                fut.set_exception(err.exc)
            else:
                fut.set_exception(RuntimeError("the task was cancelled"))
        except BaseException as e:  # a result that cannot be unpickled here
            fut.set_exception(e)
