"""Halos for ``map_overlap``: which part of the input each block reads,
and how the array's outer edges are padded.

``depth`` and ``boundary`` mean what they mean in ``dask.array.map_overlap``:

- ``depth``: an int (every axis), a tuple with one entry per axis, or a dict
  ``{axis: depth}`` (axes left out: 0). An entry is an int or a ``(before,
  after)`` pair.
- ``boundary``: how the array is extended past its outer edges, per axis as
  ``depth`` is: ``"reflect"`` (``d c b a | a b c d``, scipy.ndimage's
  ``"reflect"``), ``"nearest"`` (``a a a a | a b c d``), ``"periodic"``
  (``b c d e | a b c d e``, scipy's ``"wrap"``), ``"none"`` (no padding: the
  blocks at the edge get a one-sided halo), or a constant (``0``,
  ``np.nan``...). Default ``"none"``, as in dask.

A worker reads its block and halo as a view of the shared input (no halo is
copied or sent); only a block at the array's edge, with a boundary other
than ``"none"``, is copied into a padded array, in the worker. Padding runs
axis by axis in order, as dask's does, so corners match dask's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from numbers import Number
from typing import Any

import numpy as np

from .arrays import SharedArray
from .blocks import BlockRunner, Chunks, broadcast_inputs, normalize_chunks, prepare_out, share_inputs

__all__ = ["Halo", "OverlapRunner"]

BOUNDARIES = ("reflect", "nearest", "periodic", "none")
# A block's halo should cost little next to the block: auto chunks keep each
# overlapped axis at least _LONG times its depth where the block size allows
# (halos add at most 2/_LONG), and never split it below _SHORT times.
_LONG, _SHORT = 32, 4


def _depth_pair(axis: int, d: Any) -> tuple[int, int]:
    pair = d if isinstance(d, tuple) else (d, d)
    if len(pair) != 2 or not all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in pair):
        raise ValueError(f"depth on axis {axis} must be an int or a (before, after) pair of ints, not {d!r}")
    if min(pair) < 0:
        raise ValueError(f"depth on axis {axis} must not be negative, not {d!r}")
    return int(pair[0]), int(pair[1])


def _per_axis(name: str, value: Any, ndim: int, default: Any) -> list:
    """`value` (one value, a tuple per axis, or a dict by axis) as a list
    with one entry per axis."""
    if isinstance(value, dict):
        for axis in value:
            if not isinstance(axis, int | np.integer) or isinstance(axis, bool) or not 0 <= axis < ndim:
                raise ValueError(f"{name} names axis {axis!r}, the arrays have axes 0..{ndim - 1}")
        return [value.get(axis, default) for axis in range(ndim)]
    if isinstance(value, tuple):
        if len(value) != ndim:
            raise ValueError(f"{name} {value!r} has {len(value)} entries, the arrays {ndim} axes")
        return list(value)
    return [value] * ndim


def _boundary(axis: int, b: Any) -> Any:
    if isinstance(b, str):
        if b not in BOUNDARIES:
            raise ValueError(
                f"boundary {b!r} on axis {axis} is not one of {', '.join(map(repr, BOUNDARIES))} or a number"
            )
        return b
    if isinstance(b, Number | np.generic) and np.ndim(b) == 0:  # type: ignore[arg-type]
        return b
    raise ValueError(
        f"boundary on axis {axis} must be one of {', '.join(map(repr, BOUNDARIES))} or a number, not {b!r}"
    )


class Halo:
    """``depth`` and ``boundary``, checked and spelled out per axis."""

    def __init__(self, depth: Any, boundary: Any, ndim: int) -> None:
        if isinstance(depth, list):
            raise ValueError("depth must be an int, a tuple or a dict (one depth for all the arrays)")
        if isinstance(boundary, list):
            raise ValueError("boundary must be a str, a number, a tuple or a dict (one for all the arrays)")
        self.depth = [_depth_pair(a, d) for a, d in enumerate(_per_axis("depth", depth, ndim, 0))]
        if boundary is None:
            boundary = "none"
        bounds = _per_axis("boundary", boundary, ndim, "none")
        self.boundary = [_boundary(a, b) for a, b in enumerate(bounds)]
        self.ndim = ndim

    def padded(self, axis: int) -> bool:
        """Whether the array is padded past its edges on `axis`."""
        return not (isinstance(self.boundary[axis], str) and self.boundary[axis] == "none")

    def wraps(self, axis: int) -> bool:
        """Whether `axis` is periodic (its padding comes from the far end)."""
        b = self.boundary[axis]
        return isinstance(b, str) and b == "periodic"

    def check(self, grid: Chunks, dtypes: list[np.dtype]) -> None:
        """Raises ValueError before any work starts: a depth larger than a
        block of its axis, or a constant the inputs cannot hold."""
        for axis, ((before, after), sizes) in enumerate(zip(self.depth, grid)):
            if max(before, after) == 0 or sum(sizes) == 0:
                continue
            smallest = min(sizes)
            if max(before, after) > smallest:
                raise ValueError(
                    f"depth {max(before, after)} on axis {axis} is larger than its smallest block "
                    f"({smallest} of blocks {sizes}): give bigger chunks on axis {axis}"
                )
            b = self.boundary[axis]
            if not isinstance(b, str):
                for dt in dtypes:
                    if not _fits(b, dt):
                        raise ValueError(f"boundary {b!r} on axis {axis} does not fit the inputs' dtype {dt}")

    def chunks(self, shape: tuple[int, ...], itemsize: int, target: int) -> Chunks:
        """Blocks of about `target` bytes for this halo. Axes with no halo
        are split first, then overlapped axes from the outermost (C-order
        blocks stay contiguous) while they stay long next to their depth;
        only then the axis longest next to its depth, down to a few depths."""
        sizes = [max(n, 1) for n in shape]
        reach = [max(d) for d in self.depth]
        while math.prod(sizes) * itemsize > target:
            axes = range(len(sizes))
            free = [a for a in axes if reach[a] == 0 and sizes[a] > 1]
            long = [a for a in axes if 0 < 2 * _LONG * reach[a] <= sizes[a]]
            short = [a for a in axes if 0 < 2 * _SHORT * reach[a] <= sizes[a]]
            if free or long:
                axis = (free or long)[0]
            elif short:
                axis = max(short, key=lambda a: sizes[a] / reach[a])
            else:
                break
            sizes[axis] = -(-sizes[axis] // 2)
        return tuple(_split(n, size, r) for n, size, r in zip(shape, sizes, reach))

    def extent(self, axis: int, start: int, stop: int, n: int) -> tuple[int, int, int, int]:
        """What a block ``[start, stop)`` of an axis of length `n` reads and
        pads: ``(lo, hi, pad_before, pad_after)``, the read range and the
        elements to pad on each side."""
        before, after = self.depth[axis]
        lo, hi = max(0, start - before), min(n, stop + after)
        if not self.padded(axis) or n == 0:
            return lo, hi, 0, 0
        return lo, hi, before - (start - lo), after - (hi - stop)


def _fits(value: Any, dt: np.dtype) -> bool:
    """Whether the constant `value` is a value of dtype `dt` (floats may
    round; integers must be exact and in range)."""
    if dt.kind in "iu":
        try:
            exact = int(value)
        except (ValueError, OverflowError, TypeError):
            return False
        info = np.iinfo(dt)
        return bool(exact == value) and info.min <= exact <= info.max
    if dt.kind == "b":
        return bool(value in (0, 1))
    if dt.kind == "f":
        return bool(np.isrealobj(value))
    if dt.kind == "c":
        return True
    try:
        np.full((), value, dtype=dt)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _split(n: int, size: int, reach: int) -> tuple[int, ...]:
    """`n` in blocks of `size`, the last one merged into the one before it
    when it would be smaller than the halo."""
    if n == 0:
        return (0,)
    k, r = divmod(n, size)
    sizes = [size] * k + ([r] if r else [])
    if len(sizes) > 1 and sizes[-1] < reach:
        sizes[-2] += sizes.pop()
    return tuple(sizes)


class _Fill:
    """A pad filled with a constant."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _source(kind: Any, first: int, stop: int, held: int, n: int) -> np.ndarray | _Fill:
    """Where the pad covering elements ``first..stop`` of an axis of length
    `n` (past its edge) comes from: indices into an array holding elements
    ``held..`` of the axis, or a constant."""
    if not isinstance(kind, str):
        return _Fill(kind)
    pos = np.arange(first, stop)
    if kind == "reflect":
        pos = np.where(pos < 0, -pos - 1, pos)
        pos = np.where(pos >= n, 2 * n - pos - 1, pos)
    elif kind == "nearest":
        pos = np.clip(pos, 0, n - 1)
    else:  # periodic: the array holds the whole axis
        pos = pos % n
    return pos - held


def _pad(x: np.ndarray, segments: list[list[tuple[slice, Any]]]) -> np.ndarray:
    """The block and its halo, padded, in one new array. `segments` gives,
    per axis, ``(where in the result, where from)`` for the pad before, the
    part read from `x` (a slice) and the pad after. The part read from `x`
    is copied once; each pad is gathered from `x` (reflected, clamped or
    wrapped indices) or filled. A corner padded by a constant on any axis
    takes the constant of the last such axis, and the others compose their
    indices: the same as padding axis by axis in order, as dask does."""
    shape = tuple(segs[-1][0].stop for segs in segments)
    out = np.empty(shape, dtype=x.dtype)
    for combo in itertools.product(*segments):
        dst = tuple(d for d, _ in combo)
        fills = [src for _, src in combo if isinstance(src, _Fill)]
        if fills:
            out[dst] = fills[-1].value
            continue
        piece = x[tuple(src if isinstance(src, slice) else slice(None) for _, src in combo)]
        for axis, (_, src) in enumerate(combo):
            if not isinstance(src, slice):
                piece = np.take(piece, src, axis=axis)
        out[dst] = piece
    return out


class OverlapRunner(BlockRunner):
    """A :class:`BlockRunner` whose blocks carry halos: each worker reads
    its block and halo from the shared inputs, pads at the array's edges,
    calls `fn` and writes the block's interior of the result (``trim``), or
    the whole result when `fn` trims itself (``trim=False``)."""

    what = "map_overlap"

    def __init__(
        self,
        fn: Any,
        arrays: list[np.ndarray],
        out: np.ndarray,
        grid: Chunks,
        kwargs: dict | None,
        halo: Halo,
        trim: bool,
    ) -> None:
        super().__init__(fn, arrays, out, grid, kwargs)
        self.halo = halo
        self.trim = bool(trim)
        self.ufunc = False  # fn's result is the block and its halo, not the block

    def _extents(self, sl: tuple[slice, ...]) -> list[tuple[int, int, int, int]]:
        return [self.halo.extent(a, s.start, s.stop, n) for a, (s, n) in enumerate(zip(sl, self.shape))]

    def inputs(self, loc: tuple[int, ...], sl: tuple[slice, ...]) -> list:
        """Views of the block and its halo (the whole axis where a periodic
        boundary wraps around: the padding is taken from its far end)."""
        read = []
        for axis, (lo, hi, before, after) in enumerate(self._extents(sl)):
            wraps = self.halo.wraps(axis) and (before or after)
            read.append(slice(None) if wraps else slice(lo, hi))
        region = tuple(read)
        return [a[region] for a in self.arrays]

    def apply(
        self, loc: tuple[int, ...], sl: tuple[slice, ...], parts: list, target: np.ndarray | None
    ) -> np.ndarray | None:
        extents = self._extents(sl)
        segments = None
        if any(before or after for _lo, _hi, before, after in extents):
            segments = []
            for axis, (lo, hi, before, after) in enumerate(extents):
                kind, n = self.halo.boundary[axis], self.shape[axis]
                held = 0 if self.halo.wraps(axis) and (before or after) else lo  # as inputs() read
                segs: list[tuple[slice, Any]] = []
                if before:
                    segs.append((slice(0, before), _source(kind, lo - before, lo, held, n)))
                segs.append((slice(before, before + hi - lo), slice(lo - held, hi - held)))
                if after:
                    end = before + hi - lo
                    segs.append((slice(end, end + after), _source(kind, hi, hi + after, held, n)))
                segments.append(segs)
        padded = parts if segments is None else [_pad(x, segments) for x in parts]
        result = self.call(loc, sl, padded)
        if self.trim:
            want = padded[0].shape
            if result.shape != want:
                try:
                    result = np.broadcast_to(result, want)
                except ValueError:
                    raise ValueError(
                        f"block {loc} (slices {sl}): fn returned shape {result.shape}, the block with its "
                        f"halo has shape {want} (with trim=False, fn returns the block without its halo)"
                    ) from None
            interior = []
            for (lo, _hi, before, _after), s in zip(extents, sl):
                first = s.start - lo + before
                interior.append(slice(first, first + s.stop - s.start))
            result = result[tuple(interior)]
        return self.store(loc, sl, result, target)


def overlap_bytes(shape: tuple[int, ...], itemsize: int, workers: int) -> int:
    """Bytes per block of a map_overlap when `chunks` is not given: a few
    blocks per worker, big enough that halos cost little."""
    total = math.prod(shape) * itemsize
    return min(64 << 20, max(4 << 20, total // (4 * max(1, workers))))


def plan_overlap(
    fn: Any,
    arrays: tuple,
    chunks: Any,
    out: Any,
    dtype: Any,
    kwargs: dict | None,
    depth: Any,
    boundary: Any,
    trim: bool,
    target: Callable[[tuple[int, ...], int], int] | None,
) -> tuple[OverlapRunner, SharedArray]:
    """Checks map_overlap's arguments (before any work starts), as
    :func:`ndshm.blocks.plan_blocks`; ``target(shape, itemsize)`` gives the
    block size in bytes when `chunks` is not given."""
    inputs, shape = broadcast_inputs(fn, arrays, "map_overlap")
    halo = Halo(depth, boundary, len(shape))
    out, lazy = prepare_out(out, shape, dtype, inputs)
    if chunks is None:
        if target is None:
            raise ValueError("map_overlap needs chunks or a block size")
        grid = halo.chunks(shape, out.dtype.itemsize, target(shape, out.dtype.itemsize))
    else:
        grid = normalize_chunks(chunks, shape, out.dtype.itemsize)
    halo.check(grid, [a.dtype for a in inputs])
    runner = OverlapRunner(fn, share_inputs(inputs, shape), out, grid, kwargs, halo, trim)
    runner.lazy = lazy
    return runner, out
