"""What a pool's parent and its workers agree on: the job kinds (how a
task's items are applied to the job's function) and the payload codec.

Payloads are pickles. Whatever does not fit the board travels as a
:class:`Spilled` segment instead. A task's states are the core's
(``_native.TASK_*``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from . import sharing
from .arrays import from_array
from .blocks import BlockRunner
from .chunking import Batch

# Job kinds: how a task's items are applied to the job's function.
MAP = 0  # fn(item)
STAR = 1  # fn(*item)
DIRECT = 2  # a task is (fn, args, kwargs)

# The id of the job that runs submit()'s tasks (kind DIRECT).
FUTURES = 1

_dumps = pickle.dumps
_loads = pickle.loads


class Spilled:
    """Bytes too big for the board, in an anonymous shared segment; pickles
    as a handle."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @classmethod
    def of(cls, data: bytes) -> Spilled:
        return cls(from_array(np.frombuffer(data, dtype=np.uint8)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Spilled, (self.array,))

    def load(self) -> Any:
        return _loads(self.array.data)


def pack(obj: Any, limit: int, dumps: Callable[..., bytes] = _dumps) -> bytes:
    """Pickles `obj`, spilling it to a segment when it exceeds `limit`."""
    data = dumps(obj, protocol=5)
    return spill(data) if len(data) > limit else data


def spill(data: bytes) -> bytes:
    """A small pickle that loads the pickle `data` from a segment."""
    return _dumps(Spilled.of(data), protocol=5)


def unpack(data: bytes) -> Any:
    obj = _loads(data)
    return obj.load() if type(obj) is Spilled else obj


class TaskError:
    """What a failed task sends back: the results before the failure, the
    exception and its formatted traceback."""

    __slots__ = ("done", "exc", "tb")

    def __init__(self, done: list, exc: BaseException, tb: str) -> None:
        self.done, self.exc, self.tb = done, exc, tb

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (TaskError, (self.done, self.exc, self.tb))


def describe(fn: Any) -> str:
    """A function's name, for messages."""
    if isinstance(fn, BlockRunner):
        return f"{fn.what}({describe(fn.fn)})"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


def pack_function(kind: int, fn: Any, limit: int) -> bytes:
    """A job's ``(kind, fn)``, pickled with cloudpickle (lambdas and
    closures work)."""
    try:
        return pack((kind, fn), limit, dumps=sharing.dumps_function)
    except Exception as e:
        raise TypeError(f"cannot send the function {describe(fn)} to the workers: {e}") from e


def pack_call(fn: Any, args: tuple, kwargs: dict, limit: int) -> bytes:
    """A submitted call, as a task of the :data:`DIRECT` job."""
    try:
        return pack((fn, args, kwargs), limit, dumps=sharing.dumps_function)
    except Exception as e:
        raise TypeError(f"cannot send {describe(fn)} and its arguments to the workers: {e}") from e


def pack_chunks(batch: Batch, limit: int) -> list[tuple[int, int, bytes]]:
    """``(tag, count, payload)`` of each ``(tag, chunk)`` of the batch."""
    chunks = batch.chunks
    dumps = _dumps if batch.plain else sharing.dumps  # a plain batch holds no array
    try:
        packed = [(tag, len(c), dumps(c, protocol=5)) for tag, c in chunks]
    except Exception:
        for tag, c in chunks:
            try:
                pickle.dumps(c, protocol=5)
            except Exception as e:
                raise _unsendable(c, tag, e) from e
        raise
    for i, (tag, n, data) in enumerate(packed):
        if len(data) > limit:
            packed[i] = (tag, n, spill(data))
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
