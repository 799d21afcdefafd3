"""Dask arrays over shared arrays, and dask arrays computed into them.

- :func:`to_dask` makes a dask array whose graph holds the shared array's
  handle, never its data: each chunk is a view, taken on a worker.
- :func:`store` computes a dask array straight into a shared array: workers
  on this host write their chunks in place; chunks computed on other hosts
  come back as bytes and are written by the caller.
- :func:`compute_into` allocates the shared result and stores into it: a
  gather with no copy through the client.
"""

from __future__ import annotations

import operator
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from .. import hosts
from ..arrays import SharedArray, empty_lazy, populate
from ..hosts import ForeignHandle
from ..sharing import require_shared

__all__ = ["compute_into", "store", "to_dask"]


class Ref:
    """A shared array inside a dask graph: small, not an ndarray (dask
    would copy an ndarray into the graph), and pickled as the array's
    handle. On another host it holds a :class:`ForeignHandle`."""

    __slots__ = ("array",)

    def __init__(self, array: SharedArray | ForeignHandle) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape  # type: ignore[union-attr]  # a ForeignHandle raises its error

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype  # type: ignore[union-attr]  # a ForeignHandle raises its error

    @property
    def ndim(self) -> int:
        return len(self.array.shape)  # type: ignore[union-attr]  # a ForeignHandle raises its error

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(self.array, ForeignHandle):
            return _fetch(self, index)
        return self.array[index]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Ref, (self.array,))

    def __dask_tokenize__(self) -> Any:
        return ("ndshm.Ref", tokenize(self.array))


def _slice(ref: Ref, index: Any) -> SharedArray:
    return ref.array[index]


# Host label -> addresses of workers on that host, as this process last saw.
_hosts_seen: dict[str, list[str]] = {}


def _label() -> str:
    return hosts.LABEL


def _workers_on(client: Any, host: str) -> list[str]:
    if not _hosts_seen.get(host):
        _hosts_seen.clear()
        for address, label in client.run(_label, on_error="ignore").items():
            _hosts_seen.setdefault(label, []).append(address)
    return _hosts_seen.get(host, [])


def _fetch(ref: Ref, index: Any) -> np.ndarray:
    """A chunk of an array on another host, read for a task running here:
    a worker on the array's host slices it, and the chunk comes back as
    bytes. (Dask fuses chunk reads into the tasks that use them, so a read
    can land on any worker.)"""
    foreign = ref.array
    assert isinstance(foreign, ForeignHandle)
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        raise foreign.error() from None
    with worker_client() as client:  # leaves the worker's thread pool while it waits
        owners = _workers_on(client, foreign.host)
        if not owners:
            raise foreign.error()
        return client.submit(_slice, ref, index, workers=owners, pure=False).result()


def _client() -> Any:
    """The distributed client in use, if any (never starts one)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def to_dask(a: SharedArray, chunks: Any = "auto", *, name: str | None = None) -> da.Array:
    """A dask array over the shared array `a` (or a plain view of one), whose
    graph holds `a`'s handle, not its data. `chunks` as in
    ``dask.array.from_array``."""
    a = require_shared(a, "a", "ndshm.from_array(x) makes a shared copy")
    chunks = da.core.normalize_chunks(chunks, a.shape, dtype=a.dtype)
    name = name or f"ndshm-{tokenize(a, chunks)}"
    meta = np.empty((0,) * a.ndim, dtype=a.dtype)
    return da.from_array(
        Ref(a), chunks=chunks, name=name, asarray=False, inline_array=True, fancy=False, meta=meta
    )


def may_overlap_itself(a: np.ndarray) -> bool:
    """Whether two elements of `a` may share memory (a broadcast or an
    as_strided view). Taking the axes from the smallest step to the largest,
    none can overlap if each step clears the bytes spanned by the axes
    before it (as in every C, F, sliced, transposed or flipped view)."""
    span = a.dtype.itemsize
    for step, n in sorted((abs(s), n) for n, s in zip(a.shape, a.strides) if n > 1):
        if step < span:
            return True
        span += step * (n - 1)
    return False


class _Apply:
    """A chunk not made yet: `ufunc` over the input chunks, computed straight
    into its place in `out` (no private chunk, no copy)."""

    __slots__ = ("blocks", "ufunc")

    def __init__(self, ufunc: np.ufunc, blocks: tuple) -> None:
        self.ufunc, self.blocks = ufunc, blocks

    @property
    def shape(self) -> tuple[int, ...]:
        return np.broadcast_shapes(*(np.shape(b) for b in self.blocks))

    def into(self, dst: np.ndarray) -> None:
        self.ufunc(*self.blocks, out=dst)

    def value(self) -> np.ndarray:
        return np.asarray(self.ufunc(*self.blocks))


def _write(out: np.ndarray, region: tuple[slice, ...], block: Any, lock: bool, lazy: bool) -> None:
    dst = out[(*region, ...)]  # type: ignore[arg-type]  # a view even for a 0-d out
    if lazy:
        populate(dst)
    if lock:
        with out.lock:  # type: ignore[attr-defined]
            _put(dst, block)
    else:
        _put(dst, block)


def _put(dst: np.ndarray, block: Any) -> None:
    if isinstance(block, _Apply):
        block.into(dst)
    else:
        np.copyto(dst, block, casting="same_kind")


def _store_block(block: Any, ref: Ref, region: tuple[slice, ...], lock: bool, lazy: bool) -> Any:
    """Runs where the chunk was computed: writes it in place, or, on a host
    that cannot map `out`, returns it for the caller to write."""
    if isinstance(ref.array, ForeignHandle):
        return region, block.value() if isinstance(block, _Apply) else np.asarray(block)
    _write(ref.array, region, block, lock, lazy)
    return None


def _store_chunk(
    ufunc: np.ufunc | None,
    ref: Ref,
    starts: list,
    lock: bool,
    lazy: bool,
    *blocks: Any,
    block_id: tuple[int, ...] = (),
) -> np.ndarray:
    """The store step of one chunk (see :func:`store`): a one-element object
    array holding what :func:`_store_block` returned. With a ufunc, `blocks`
    are its inputs and the chunk is computed into place; else `blocks` is
    the chunk."""
    block = _Apply(ufunc, blocks) if ufunc is not None else blocks[0]
    region = tuple(slice(s[i], s[i] + n) for s, i, n in zip(starts, block_id, np.shape(block)))
    res = np.empty((1,) * len(region), dtype=object)
    res.flat[0] = _store_block(block, ref, region, lock, lazy)
    return res


# The functions dask's array operators run per chunk, and their ufuncs.
_UFUNC_OF: dict[Any, np.ufunc] = {
    operator.add: np.add,
    operator.sub: np.subtract,
    operator.mul: np.multiply,
    operator.truediv: np.true_divide,
    operator.floordiv: np.floor_divide,
    operator.mod: np.remainder,
    operator.pow: np.power,
    operator.neg: np.negative,
    operator.abs: np.absolute,
    operator.and_: np.bitwise_and,
    operator.or_: np.bitwise_or,
    operator.xor: np.bitwise_xor,
    operator.invert: np.invert,
}


def last_ufunc(x: da.Array, out: np.ndarray) -> tuple[np.ufunc, list[da.Array]] | None:
    """When the last step of `x` is one numpy ufunc applied chunk by chunk
    to dask arrays (`a * b`, `np.sin(a)`, ...), that ufunc and its inputs:
    then each chunk can be computed straight into `out`. None otherwise
    (the chunk is computed, then copied)."""
    from dask._task_spec import TaskRef
    from dask.blockwise import Blockwise
    from dask.highlevelgraph import HighLevelGraph

    layer = x.dask.layers.get(x.name)
    task = getattr(layer, "task", None)
    if not isinstance(layer, Blockwise) or task is None or out.dtype != x.dtype:
        return None
    func = task.func
    ufunc = func if isinstance(func, np.ufunc) else _UFUNC_OF.get(func)
    if ufunc is None or ufunc.nout != 1 or task.kwargs or layer.new_axes or layer.concatenate:
        return None
    if len(task.args) != len(layer.indices) or not task.args:
        return None
    # The graph without the last step: left in, it would be a second user of
    # the inputs' steps and keep dask from fusing them into the store step.
    layers = {k: v for k, v in x.dask.layers.items() if k != x.name}
    deps = {k: v for k, v in x.dask.dependencies.items() if k != x.name}
    graph = HighLevelGraph(layers, deps)
    inputs = []
    for i, (arg, (name, index)) in enumerate(zip(task.args, layer.indices)):
        dep = x.dask.layers.get(name)
        meta = getattr(dep, "collection_annotations", None) or {}
        ok = isinstance(arg, TaskRef) and arg.key == f"__dask_blockwise__{i}"
        if not ok or index != layer.output_indices or meta.get("type") != "dask.array.core.Array":
            return None
        if meta.get("chunk_type") != "numpy.ndarray":
            return None
        inputs.append(da.Array(graph, name, meta["chunks"], dtype=meta["dtype"]))
    if np.broadcast_shapes(*(a.shape for a in inputs)) != x.shape:
        return None
    return ufunc, inputs


def store(x: da.Array, out: SharedArray, *, lock: bool | None = None, _lazy: bool = False) -> SharedArray:
    """Computes the dask array `x` into the shared array `out` (same shape;
    a plain view of shared memory works too) and returns `out` (as a
    SharedArray).

    Chunks computed on this host's workers are written in place by those
    workers; chunks computed on other hosts come back as bytes and are
    written here. Chunks land in disjoint parts of `out`, so no lock is
    taken unless `out`'s memory overlaps itself (or ``lock=True``: then
    every write holds ``out.lock``)."""
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask array, not {type(x).__name__}")
    out = require_shared(out, "out")
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("x has chunks of unknown size: call x.compute_chunk_sizes() first")
    if x.shape != out.shape:
        raise ValueError(f"x has shape {x.shape}, out has shape {out.shape}")
    if not np.can_cast(x.dtype, out.dtype, "same_kind"):
        raise ValueError(f"x has dtype {x.dtype}, which cannot be stored into out's {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if lock is None:
        lock = may_overlap_itself(out)
    ref = Ref(out)
    # One store step per chunk, fused by dask with the step that computes
    # the chunk: the chunk is written where it was made, never moved.
    starts = [tuple(int(v) for v in np.cumsum((0, *c))[:-1]) for c in x.chunks]
    last = last_ufunc(x, out)
    ufunc, inputs = last if last is not None else (None, [x])
    done = da.map_blocks(
        _store_chunk,
        ufunc,
        ref,
        starts,
        lock,
        _lazy,
        *inputs,
        dtype=object,
        chunks=tuple((1,) * len(c) for c in x.chunks),
        meta=np.empty((0,) * x.ndim, dtype=object),
        name=f"ndshm-store-{tokenize(x, ref, lock, _lazy)}",
    )
    tasks = done.to_delayed().ravel().tolist()
    client = _client()
    if client is None:
        dask.compute(*tasks)
        return out
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        for fut in as_completed(futures):
            back = fut.result().flat[0]
            if back is not None:
                _write(out, back[0], back[1], lock, _lazy)
    finally:
        client.cancel(futures)
    return out


def compute_into(x: da.Array) -> SharedArray:
    """Computes the dask array `x` into a new shared array and returns it:
    workers on this host write their chunks straight into it (allocating
    its pages as they go), so nothing is gathered through the client."""
    if not isinstance(x, da.Array):
        raise TypeError(f"x must be a dask array, not {type(x).__name__}")
    if any(np.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError("x has chunks of unknown size: call x.compute_chunk_sizes() first")
    out = empty_lazy(x.shape, x.dtype)
    return store(x, out, _lazy=True)
