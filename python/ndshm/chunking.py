"""How a pool cuts a call's items into chunks (one task each)."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import numpy as np

from .sharing import holds_no_array


class Batch(NamedTuple):
    """Chunks ``(tag, items)`` cut in one step."""

    chunks: list[tuple[int, Any]]
    #: Every item is surely free of arrays (see :func:`ndshm.sharing.holds_no_array`):
    #: the chunks can be pickled as they are.
    plain: bool


class Chunker:
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
        self.seq: Any = items if sliceable and self.remaining is not None else None
        self.pos = 0
        self.it = iter(items) if self.seq is None else None
        self.fixed = chunksize
        self.workers = workers
        self.tag = 0
        self.per_item: float | None = None
        self.grow = 1
        self.exhausted = False
        #: Whether chunk sizes follow measured times (see :meth:`observe`):
        #: for items of unknown length with no fixed size.
        self.learns = not chunksize and self.remaining is None

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

    def take_many(self, n: int) -> Batch:
        """Up to `n` chunks, as :meth:`take` gives them."""
        if self.fixed and self.seq is not None and not self.exhausted:
            # A fixed size over a sequence: cut the chunks in one step.
            size, start = self.fixed, self.pos
            part = self.seq[start : start + n * size]
            # Its items are looked at once, here, rather than chunk by chunk.
            plain = type(part) is range or (not isinstance(part, np.ndarray) and holds_no_array(part))
            if type(part) is range and size < 512:
                part = builtins.list(part)  # as in take(), in one step
            chunks = [(start + i, part[i : i + size]) for i in range(0, len(part), size)]
            if type(part) is range and chunks and len(chunks[-1][1]) < 512:
                chunks[-1] = (chunks[-1][0], builtins.list(chunks[-1][1]))
            self.pos = self.tag = start + len(part)
            self.remaining = cast(int, self.remaining) - len(part)
            self.exhausted = len(part) < n * size or self.remaining <= 0
            return Batch(chunks, plain)
        chunks = []
        while len(chunks) < n:
            nxt = self.take()
            if nxt is None:
                break
            chunks.append(nxt)
        return Batch(chunks, False)

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
