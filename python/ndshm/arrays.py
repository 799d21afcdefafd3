"""Shared arrays: creation, attaching, and pickling as handles.

A :class:`SharedArray` is a real ``numpy.ndarray`` whose memory is a
segment. It, and any view of it, pickles as a small handle naming the
segment, the view's byte offset, shape, strides and dtype; unpickling maps
the same memory (once per process) and rebuilds the view.
"""

from __future__ import annotations

import ast
import functools
import warnings
from collections.abc import Sequence
from typing import Any, SupportsIndex

import numpy as np
from numpy.lib import format as npformat

from . import _native, hosts, lifetime
from .locks import RWLock

__all__ = [
    "SharedArray",
    "attach",
    "empty",
    "empty_like",
    "from_array",
    "full",
    "zeros",
    "zeros_like",
]

ShapeLike = SupportsIndex | Sequence[SupportsIndex]


@functools.lru_cache(maxsize=512)
def _descr_of(dtype: np.dtype) -> str:
    """The .npy description of a dtype, refusing what cannot be shared."""
    if dtype.hasobject:
        raise TypeError(
            f"dtype {dtype} holds Python objects, which cannot live in shared memory; "
            "use a fixed-size dtype (numbers, bytes 'S', unicode 'U', structured)"
        )
    if not getattr(type(dtype), "_legacy", True) or dtype.kind == "T":
        raise TypeError(f"dtype {dtype} is not a fixed-size dtype and cannot live in shared memory")
    return repr(npformat.dtype_to_descr(np.dtype(dtype)))


@functools.lru_cache(maxsize=512)
def _dtype_of(descr: str) -> np.dtype:
    return npformat.descr_to_dtype(ast.literal_eval(descr))


def _shape_of(shape: ShapeLike) -> tuple[int, ...]:
    if isinstance(shape, SupportsIndex):
        shape = (shape,)
    dims = tuple(int(d.__index__()) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    return dims


def _order_flag(order: str) -> bool:
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    return order == "F"


class SharedArray(np.ndarray):
    """A numpy array in shared memory (or a view of one).

    Arithmetic results, ``copy()``, ``astype()`` and ``flatten()`` are plain
    ``numpy.ndarray`` objects in private memory, and pickle as data.
    """

    @property
    def name(self) -> str | None:
        """Name of the segment, ``None`` for anonymous arrays."""
        seg = _segment_of(self)
        return None if seg is None else seg.name

    @property
    def lock(self) -> RWLock:
        """The array's lock: exclusive by default (``with a.lock:``), with
        ``a.lock.read()`` and ``a.lock.write()``. It lives in the segment,
        so every process and every view of the array share it."""
        seg = _segment_of(self)
        if seg is None:
            raise ValueError("this array is not in shared memory (a copy or computed result): it has no lock")
        return RWLock._of(seg)

    def __array_wrap__(self, obj, context=None, return_scalar=False):  # type: ignore[override]
        if return_scalar:
            return obj[()]
        if isinstance(obj, SharedArray):  # an in-place result: the shared array itself
            return obj
        return obj.view(np.ndarray) if type(obj) is not np.ndarray else obj

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        return np.array(self, copy=True, order=order, subok=False)

    def __copy__(self) -> np.ndarray:
        return self.copy()

    def __deepcopy__(self, memo: Any) -> np.ndarray:
        return self.copy()

    def astype(self, dtype, order="K", casting="unsafe", subok=False, copy=True):  # type: ignore[override]
        return np.ndarray.astype(self, dtype, order=order, casting=casting, subok=subok, copy=copy)

    def flatten(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        return np.ndarray.flatten(self.view(np.ndarray), order)

    def __reduce_ex__(self, protocol):  # type: ignore[override]
        handle = _handle_of(self)
        if handle is None:
            # Private memory (e.g. fancy-indexing result): pickle the data.
            return self.view(np.ndarray).__reduce_ex__(protocol)
        return handle

    def __reduce__(self):  # type: ignore[override]
        return self.__reduce_ex__(2)

    def __repr__(self) -> str:
        return np.ndarray.__repr__(self.view(np.ndarray)).replace("array(", "SharedArray(", 1)


def _segment_of(arr: np.ndarray) -> _native.Segment | None:
    """The segment whose memory `arr` views, if any."""
    found = _native.view_of(arr)
    return None if found is None else found[0]


def _seg_dtype(seg: _native.Segment) -> np.dtype:
    """The segment's dtype, cached on the segment object."""
    d = seg.__dict__
    dt = d.get("dtype")
    if dt is None:
        dt = d["dtype"] = _dtype_of(seg.descr)
    return dt


def _writeable(arr: np.ndarray) -> bool:
    if 0 in arr.strides:
        with warnings.catch_warnings():
            # numpy warns on reading the flag of broadcast_arrays results.
            warnings.simplefilter("ignore", FutureWarning)
            return arr.flags.writeable
    return arr.flags.writeable


def _handle_of(arr: np.ndarray):
    found = _native.view_of(arr)
    if found is None:
        return None  # private memory, or a stride trick reaching outside the segment
    seg, offset = found
    if not seg.published:
        return None
    dtype = arr.dtype
    seg_dtype = _seg_dtype(seg)
    dt = None if dtype is seg_dtype or dtype == seg_dtype else dtype
    readonly = seg.readonly or not _writeable(arr)
    return (_rebuild, (segment_ref(seg), offset, arr.shape, arr.strides, dt, readonly))


def segment_ref(seg: _native.Segment) -> tuple:
    """What a handle carries to name `seg`: `(name, id, host)` for named
    segments, `(pid, fd, id, host)` of this process for anonymous ones
    (counting a pending handoff)."""
    name = seg.name
    if name is None:
        lifetime.note_sent(seg)
        return (lifetime.pid(), seg.fd, seg.id, hosts.LABEL)
    return (name, seg.id, hosts.LABEL)


def _split_ref(ref: Any) -> tuple[tuple, str]:
    """A handle's segment reference and host, checked for shape and types:
    `(name: str, id: int)` or `(pid: int, fd: int, id: int)`, then the host."""
    if type(ref) is tuple and len(ref) in (3, 4) and type(ref[-1]) is str:
        seg_ref, host = ref[:-1], ref[-1]
        if len(seg_ref) == 2 and type(seg_ref[0]) is str and type(seg_ref[1]) is int:
            return seg_ref, host
        if len(seg_ref) == 3 and all(type(x) is int for x in seg_ref):
            return seg_ref, host
    raise ValueError("bad ndshm handle")


def attach_ref(ref: Any, readonly: bool) -> _native.Segment:
    """Maps the segment a handle names (reusing this process's mapping)."""
    seg_ref, host = _split_ref(ref)
    if host != hosts.LABEL:
        raise hosts.foreign_error(host)
    return _attach_seg(seg_ref, readonly)


def _attach_seg(seg_ref: tuple, readonly: bool) -> _native.Segment:
    if len(seg_ref) == 2:
        name, seg_id = seg_ref
        if not 0 < seg_id < 2**64:
            raise ValueError("bad ndshm handle: segment id")
        return _native.attach_named_handle(name, seg_id, readonly)
    pid, fd, seg_id = seg_ref
    if not (0 < pid < 2**31 and 0 < seg_id < 2**64 and 0 <= fd < 2**31):
        raise ValueError("bad ndshm handle")
    return _native.attach_anonymous(pid, fd, seg_id, readonly)


_I64 = 2**63


def _int_tuple(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple) or len(v) > 64 or not all(type(x) is int and -_I64 <= x < _I64 for x in v):
        raise ValueError(f"bad ndshm handle: {what} must be a tuple of at most 64 64-bit ints")
    return v


def _rebuild(
    ref: Any, offset: Any, shape: Any, strides: Any, dtype: Any, readonly: Any
) -> SharedArray | hosts.ForeignHandle:
    """Unpickles a handle: maps the segment (once per process) and rebuilds
    the view; on another host, a :class:`ForeignHandle` that passes it on."""
    seg_ref, host = _split_ref(ref)
    if host != hosts.LABEL:
        return hosts.ForeignHandle(host, (ref, offset, shape, strides, dtype, readonly))
    if type(offset) is not int or not -_I64 <= offset < _I64:
        raise ValueError("bad ndshm handle: offset")
    if type(readonly) is not bool:
        raise ValueError("bad ndshm handle")
    shape = _int_tuple(shape, "shape")
    strides = _int_tuple(strides, "strides")
    seg = _attach_seg(seg_ref, readonly)
    if dtype is None:
        dt = _seg_dtype(seg)
    elif isinstance(dtype, np.dtype):
        dt = dtype
        _descr_of(dt)  # refuses object and variable-width dtypes
    else:
        raise ValueError("bad ndshm handle: dtype")
    _native.check_view(seg.nbytes, offset, shape, strides, dt.itemsize)
    arr = np.ndarray.__new__(SharedArray, shape, dt, buffer=seg, offset=offset, strides=strides)
    if readonly and arr.flags.writeable:
        arr.flags.writeable = False
    return arr


def _wrap(seg: _native.Segment) -> SharedArray:
    return seg.array(SharedArray, _seg_dtype(seg))


def _create(
    shape: ShapeLike,
    dtype: Any,
    order: str,
    name: str | None,
    src: np.ndarray | None = None,
    lazy: bool = False,
) -> _native.Segment:
    dt = np.dtype(dtype)
    fortran = _order_flag(order)
    lifetime.sweep()
    return _native.create(_descr_of(dt), list(_shape_of(shape)), fortran, name, src, lazy)


def empty_lazy(shape: ShapeLike, dtype: Any = float) -> SharedArray:
    """A new anonymous shared array whose pages are allocated by whoever
    writes them first, after calling :func:`populate` on the range (for
    results that several workers fill in parallel). There must be room for
    it now (MemoryError otherwise)."""
    return _publish(_create(shape, dtype, "C", None, lazy=True), None)


def populate(arr: np.ndarray) -> None:
    """Allocates the pages under `arr`, a view of a shared array, before it
    is written (MemoryError if there is no room, never a SIGBUS later)."""
    found = _native.view_of(arr)
    if found is None or arr.size == 0:
        return
    seg, _offset = found
    lo, hi = np.lib.array_utils.byte_bounds(arr)
    seg.populate(lo - seg.address, hi - lo)


def _publish(seg: _native.Segment, fill) -> SharedArray:
    """Runs `fill` on the new array, then publishes it; on any error the
    segment is abandoned, so nothing half-made is left behind."""
    arr = _wrap(seg)
    try:
        if fill is not None:
            fill(arr)
        seg.publish()
    except BaseException:
        seg.abandon()
        raise
    return arr


def empty(shape: ShapeLike, dtype: Any = float, order: str = "C", *, name: str | None = None) -> SharedArray:
    """A new shared array. Its memory is reserved and zeroed (as cheap as not)."""
    return _publish(_create(shape, dtype, order, name), None)


def zeros(shape: ShapeLike, dtype: Any = float, order: str = "C", *, name: str | None = None) -> SharedArray:
    """A new shared array of zeros."""
    return _publish(_create(shape, dtype, order, name), None)


def full(
    shape: ShapeLike, fill_value: Any, dtype: Any = None, order: str = "C", *, name: str | None = None
) -> SharedArray:
    """A new shared array filled with `fill_value`."""
    if dtype is None:
        dtype = np.array(fill_value).dtype
    seg = _create(shape, dtype, order, name)
    return _publish(seg, lambda a: np.copyto(a, fill_value, casting="unsafe"))


def _order_like(arr: np.ndarray) -> str:
    return "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"


def empty_like(arr: Any, *, name: str | None = None) -> SharedArray:
    """A new shared array with the shape, dtype and order of `arr`."""
    a = np.asanyarray(arr)
    return empty(a.shape, a.dtype, _order_like(a), name=name)


def zeros_like(arr: Any, *, name: str | None = None) -> SharedArray:
    """A new shared array of zeros with the shape, dtype and order of `arr`."""
    a = np.asanyarray(arr)
    return zeros(a.shape, a.dtype, _order_like(a), name=name)


def _flat_bytes(a: np.ndarray, fortran: bool) -> np.ndarray | None:
    """`a`'s bytes in its memory order as a 1-D uint8 array, if contiguous."""
    if a.dtype.itemsize == 0 or a.size == 0:
        return None
    if fortran:
        a = a.T
    return a.reshape(-1).view(np.uint8) if a.flags.c_contiguous else None


def from_array(arr: Any, *, name: str | None = None) -> SharedArray:
    """A shared copy of any array-like (C or Fortran order kept).

    Contiguous arrays are copied by several threads without the GIL while
    the memory is being reserved."""
    a = np.asarray(arr)
    _descr_of(a.dtype)  # refuses object dtypes with a clear message
    order = _order_like(a)
    src = _flat_bytes(a, order == "F")
    if src is None:
        seg = _create(a.shape, a.dtype, order, name)
        return _publish(seg, lambda dst: np.copyto(dst, a))
    seg = _create(a.shape, a.dtype, order, name, src)
    return _publish(seg, None)


def attach(name: str, *, readonly: bool = False) -> SharedArray:
    """The named shared array `name`, from any process of the same user."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    return _wrap(_native.attach(name, readonly))
