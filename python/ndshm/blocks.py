"""Blocks of an n-dimensional shape, the per-block work of
``map_blocks``, and the planning of a call (checks before any work).

``chunks`` follows dask: an int (the same block size on every axis), a
tuple with one int per axis (``-1`` or ``None``: the whole axis), or a tuple
with the block sizes of each axis spelled out, e.g. ``((2, 2, 1), (5,))``.
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import sharing
from .arrays import SharedArray, empty_lazy, from_array, populate
from .hosts import ForeignHandle

__all__ = ["blocks", "normalize_chunks"]

Chunks = tuple[tuple[int, ...], ...]


def sized_chunks(shape: tuple[int, ...], itemsize: int, target: int = 4 << 20) -> Chunks:
    """Blocks of about `target` bytes: whole trailing axes while they fit,
    then as much of the next axis as fits (C-order blocks stay contiguous)."""
    room = max(1, target // max(1, itemsize))
    sizes = [1] * len(shape)
    inner = 1
    for axis in reversed(range(len(shape))):
        n = shape[axis]
        if n * inner <= room:
            sizes[axis] = n
            inner *= max(n, 1)
        else:
            sizes[axis] = max(1, room // inner)
            break
    return tuple(_even(n, size) for n, size in zip(shape, sizes))


def _even(n: int, size: int) -> tuple[int, ...]:
    if n == 0:
        return (0,)
    k, r = divmod(n, size)
    return (size,) * k + ((r,) if r else ())


def normalize_chunks(chunks: Any, shape: Sequence[int], itemsize: int = 8) -> Chunks:
    """Block sizes per axis for `shape`, from a dask-style `chunks` (None:
    blocks of about 4 MiB). Raises ValueError when they do not fit."""
    shape = tuple(int(n) for n in shape)
    if chunks is None:
        return sized_chunks(shape, itemsize)
    if isinstance(chunks, bool):
        raise ValueError(f"chunks must be an int or a tuple, not {chunks!r}")
    if isinstance(chunks, int | np.integer):
        chunks = (int(chunks),) * len(shape)
    if not isinstance(chunks, Sequence) or isinstance(chunks, str | bytes):
        raise ValueError(f"chunks must be an int or a tuple, not {chunks!r}")
    if len(chunks) != len(shape):
        raise ValueError(
            f"chunks {chunks!r} have {len(chunks)} axes, the arrays {len(shape)} (shape {shape})"
        )
    out: list[tuple[int, ...]] = []
    for axis, (c, n) in enumerate(zip(chunks, shape)):
        if c is None or (isinstance(c, int | np.integer) and not isinstance(c, bool) and c == -1):
            out.append((n,))
        elif isinstance(c, int | np.integer) and not isinstance(c, bool):
            if c <= 0:
                raise ValueError(f"chunk size {c} on axis {axis} must be positive (or -1 for the whole axis)")
            out.append(_even(n, int(c)))
        elif isinstance(c, Sequence) and not isinstance(c, str | bytes):
            sizes = tuple(c)
            if not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 0 for s in sizes):
                raise ValueError(f"block sizes {sizes!r} on axis {axis} must be non-negative ints")
            if sum(sizes) != n or (n > 0 and 0 in sizes) or not sizes:
                raise ValueError(f"block sizes {sizes!r} on axis {axis} do not add up to its length {n}")
            out.append(tuple(int(s) for s in sizes))
        else:
            raise ValueError(f"chunks on axis {axis} must be an int or a tuple of ints, not {c!r}")
    return tuple(out)


def _starts(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(itertools.accumulate(sizes, initial=0))


def blocks(shape: Sequence[int] | int, chunks: Any = None) -> Iterator[tuple[slice, ...]]:
    """Each block of `shape`, as a tuple of slices, in C order."""
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    grid = normalize_chunks(chunks, shape)
    starts = [_starts(s) for s in grid]
    for loc in itertools.product(*(range(len(s)) for s in grid)):
        yield tuple(slice(starts[a][i], starts[a][i + 1]) for a, i in enumerate(loc))


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _is_ufunc(fn: Any) -> bool:
    """Whether `fn` is an elementwise function with one output that takes
    ``out=``: a numpy ufunc, or a numba ``@vectorize`` function (a DUFunc,
    which is not a numpy ufunc). numba is looked up, never imported: a DUFunc
    exists only where numba was imported."""
    if isinstance(fn, np.ufunc):
        return fn.nout == 1
    dufunc = getattr(sys.modules.get("numba.np.ufunc.dufunc"), "DUFunc", None)
    return dufunc is not None and isinstance(fn, dufunc) and fn.nout == 1


class BlockRunner:
    """The function a worker runs per block index: slices the inputs,
    calls `fn` (with the caller's extra keyword arguments), writes the
    result into `out`."""

    #: The call this runner serves, for messages.
    what = "map_blocks"

    def __init__(
        self, fn: Any, arrays: list[np.ndarray], out: np.ndarray, grid: Chunks, kwargs: dict | None = None
    ) -> None:
        self.fn = fn
        self.arrays = arrays
        # A ForeignHandle where it was unpickled on another host than `out`.
        self.out: np.ndarray | ForeignHandle = out
        self.shape = out.shape
        self.dtype = out.dtype
        self.grid = grid
        self.kwargs = dict(kwargs or {})
        self.starts = [_starts(sizes) for sizes in grid]
        self.ufunc = _is_ufunc(fn)
        # `out` was made lazily (map_blocks allocated it): each block's pages
        # are allocated by the worker that writes it, in parallel.
        self.lazy = False
        self.block_id = not self.ufunc and _accepts(fn, "block_id")
        self.block_info = not self.ufunc and _accepts(fn, "block_info")

    def location(self, index: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(index, tuple(len(s) for s in self.grid)))

    def slices(self, loc: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(starts[i], starts[i + 1]) for starts, i in zip(self.starts, loc))

    def info(self, loc: tuple[int, ...], sl: tuple[slice, ...]) -> dict:
        where = [(s.start, s.stop) for s in sl]
        num = tuple(len(s) for s in self.grid)
        info: dict[Any, dict] = {
            i: {"shape": self.shape, "num-chunks": num, "chunk-location": loc, "array-location": where}
            for i in range(len(self.arrays))
        }
        info[None] = {
            "shape": self.shape,
            "num-chunks": num,
            "chunk-location": loc,
            "array-location": where,
            "chunk-shape": tuple(s.stop - s.start for s in sl),
            "dtype": self.dtype,
        }
        return info

    def inputs(self, loc: tuple[int, ...], sl: tuple[slice, ...]) -> list:
        """What block `loc` (slices `sl`) reads of each input: views, no copy."""
        return [a[sl] for a in self.arrays]

    def __call__(self, index: int, parts: list | None = None) -> np.ndarray | None:
        """Runs block `index` on `parts` (by default, :meth:`inputs`).
        Writes the result into `out`, or returns it in a process on another
        host than `out` (the caller writes it)."""
        loc = self.location(index)
        sl = self.slices(loc)
        if parts is None:
            parts = self.inputs(loc, sl)
        if isinstance(self.out, ForeignHandle):
            return self.apply(loc, sl, parts, None)
        target = self.out[sl]
        if self.lazy:
            populate(target)
        return self.apply(loc, sl, parts, target)

    def apply(
        self, loc: tuple[int, ...], sl: tuple[slice, ...], parts: list, target: np.ndarray | None
    ) -> np.ndarray | None:
        """Runs `fn` on one block's inputs `parts` and writes the result into
        `target`; with no target (a process that cannot map `out`), returns
        the result block instead."""
        if self.ufunc:
            if target is not None:
                self.fn(*parts, out=target, **self.kwargs)
                return None
            result = np.asarray(self.fn(*parts, **self.kwargs))
        else:
            result = self.call(loc, sl, parts)
        return self.store(loc, sl, result, target)

    def call(self, loc: tuple[int, ...], sl: tuple[slice, ...], parts: list) -> np.ndarray:
        """`fn` on `parts`, with the caller's keywords and, where `fn` takes
        them, ``block_id`` / ``block_info``."""
        kwargs = dict(self.kwargs)
        if self.block_id:
            kwargs["block_id"] = loc
        if self.block_info:
            kwargs["block_info"] = self.info(loc, sl)
        return np.asarray(self.fn(*parts, **kwargs))

    def store(
        self, loc: tuple[int, ...], sl: tuple[slice, ...], result: np.ndarray, target: np.ndarray | None
    ) -> np.ndarray | None:
        """Writes block `loc`'s `result` into `target` (or returns it, cast
        to `out`'s dtype, when there is no target)."""
        shape = tuple(s.stop - s.start for s in sl)
        if result.shape != shape:
            try:
                result = np.broadcast_to(result, shape)
            except ValueError:
                raise ValueError(
                    f"block {loc} (slices {sl}): fn returned shape {result.shape}, "
                    f"the block has shape {shape}"
                ) from None
        if target is None:
            return result.astype(self.dtype, casting="same_kind", copy=False)
        np.copyto(target, result, casting="same_kind")
        return None


#: Keywords that ndshm's block functions keep for themselves, on every entry
#: point (Pool methods, module functions, with any executor), so a call
#: means the same wherever it runs: a name here that the entry point called
#: does not take is a TypeError, never passed to ``fn``. Every other keyword
#: goes to ``fn``; bind one of these names with ``functools.partial``.
RESERVED = frozenset(
    {"chunks", "out", "dtype", "chunksize", "progress", "workers", "start_method", "executor"}
    | {"block_id", "block_info"}  # given to fn by ndshm, when fn takes them
)


def check_kwargs(what: str, kwargs: dict) -> None:
    """Refuses the :data:`RESERVED` names among the keywords meant for ``fn``."""
    clash = sorted(RESERVED.intersection(kwargs))
    if clash:
        name = clash[0]
        raise TypeError(
            f"{what}() got {name}=, a keyword ndshm keeps for itself and never passes to fn "
            f"(not taken by this entry point); to give it to fn, use functools.partial(fn, {name}=...)"
        )


def share_input(a: Any) -> np.ndarray:
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


def broadcast_inputs(fn: Any, arrays: tuple, what: str) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """The inputs of a block call as arrays, and the shape they broadcast to."""
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
    return inputs, shape


def prepare_out(
    out: Any, shape: tuple[int, ...], dtype: Any, inputs: list[np.ndarray]
) -> tuple[SharedArray, bool]:
    """The shared array the blocks are written into (allocated lazily when
    `out` is None), and whether it was allocated here."""
    want = np.dtype(dtype) if dtype is not None else np.result_type(*inputs)
    if out is None:
        # Its pages are allocated by the workers, each for the blocks it
        # writes: in parallel, and not first zeroed here.
        return empty_lazy(shape, want), True
    out = sharing.require_shared(out, "out")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the broadcast inputs {shape}")
    if dtype is not None and out.dtype != want:
        raise ValueError(f"out has dtype {out.dtype}, not the requested {want}")
    if not np.can_cast(want, out.dtype, "same_kind"):
        raise ValueError(f"out has dtype {out.dtype}, which the inputs' {want} cannot be cast to")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out, False


def share_inputs(inputs: list[np.ndarray], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Each input as a shared view broadcast to `shape`."""
    return [np.broadcast_to(share_input(a), shape, subok=True) for a in inputs]


def plan_blocks(
    fn: Any, arrays: tuple, chunks: Any, out: Any, dtype: Any, kwargs: dict | None = None
) -> tuple[BlockRunner, SharedArray]:
    """Checks map_blocks' arguments (before any work starts); gives the
    runner of its blocks and the array they are written into."""
    inputs, shape = broadcast_inputs(fn, arrays, "map_blocks")
    out, lazy = prepare_out(out, shape, dtype, inputs)
    grid = normalize_chunks(chunks, shape, out.dtype.itemsize)
    runner = BlockRunner(fn, share_inputs(inputs, shape), out, grid, kwargs)
    runner.lazy = lazy
    return runner, out
