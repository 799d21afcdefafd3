"""Locks that work across processes, travel through pickle, and survive
the death of their holder.

``ndshm.Lock()`` and ``ndshm.RWLock()`` each live in a small anonymous
segment of their own; ``a.lock`` lives in the control page of the array's
segment. All pickle as handles and can be passed to any task, queue or
pipe. Waiting sleeps in the kernel (a futex) after a short spin, without
the GIL. A lock whose holder died is taken over by the next acquirer within
about 0.2 s, with a :class:`LockOwnerDied` warning.

Ownership is per thread: only the thread that acquired a lock may release
it (``RuntimeError`` otherwise), as for ``threading.Lock`` used properly.
Like ``threading.Lock``, the lock is not re-entrant.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from . import _native, handles

__all__ = ["Lock", "LockOwnerDied", "RWLock"]

LockOwnerDied = _native.LockOwnerDied


def _new_segment() -> _native.Segment:
    seg = _native.create(np.dtype("u1"), [0], False, None)
    seg.publish()
    return seg


def _rebuild_lock(cls: type[Lock], ref: bytes) -> Lock:
    return cls.of_segment(handles.attach_ref(ref, False))


class Lock(_native.Lock):
    """An exclusive lock for any process: ``with lock: ...``,
    ``lock.acquire(timeout=None) -> bool``, ``lock.release()``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Lock:
        if args or kwargs:
            raise TypeError(f"{cls.__name__}() takes no arguments")
        return cast(Lock, super().__new__(cls, _new_segment()))

    @classmethod
    def of_segment(cls, seg: _native.Segment) -> Any:
        """The lock of an existing segment (as its arrays share it)."""
        return _native.Lock.__new__(cls, seg)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild_lock, (type(self), handles.segment_ref(self.segment)))

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        if self.readers:
            state += f", {self.readers} readers"
        return f"<ndshm.{type(self).__name__} {state}>"


class _Shared:
    __slots__ = ("_lock", "_slot", "_timeout")

    def __init__(self, lock: RWLock, timeout: float | None) -> None:
        self._lock, self._timeout = lock, timeout
        self._slot: int | None = None

    def __enter__(self) -> RWLock:
        slot = self._lock.acquire_read(self._timeout)
        if slot is None:
            raise TimeoutError(f"could not take the read lock within {self._timeout} s")
        self._slot = slot
        return self._lock

    def __exit__(self, *exc: Any) -> None:
        slot, self._slot = self._slot, None
        assert slot is not None, "released before it was taken"
        self._lock.release_read(slot)


class _Exclusive:
    __slots__ = ("_lock", "_timeout")

    def __init__(self, lock: RWLock, timeout: float | None) -> None:
        self._lock, self._timeout = lock, timeout

    def __enter__(self) -> RWLock:
        if not self._lock.acquire(timeout=self._timeout):
            raise TimeoutError(f"could not take the write lock within {self._timeout} s")
        return self._lock

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


class RWLock(Lock):
    """A reader-writer lock: ``with rw.read(): ...`` for shared access,
    ``with rw.write(): ...`` (or ``with rw:``) for exclusive access. Waiting
    writers hold new readers back, so readers cannot starve a writer."""

    def read(self, timeout: float | None = None) -> _Shared:
        """Shared access, as a context manager (TimeoutError on timeout)."""
        return _Shared(self, timeout)

    def write(self, timeout: float | None = None) -> _Exclusive:
        """Exclusive access, as a context manager (TimeoutError on timeout)."""
        return _Exclusive(self, timeout)
