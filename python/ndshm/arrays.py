"""Shared arrays: creation and attaching.

A :class:`SharedArray` is a real ``numpy.ndarray`` whose memory is a
segment. It, and any view of it, pickles as a small handle (see
:mod:`ndshm.handles`); unpickling maps the same memory (once per process)
and rebuilds the view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, SupportsIndex

import numpy as np

from . import _native, handles, lifetime
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
        seg = handles.segment_of(self)
        return None if seg is None else seg.name

    @property
    def lock(self) -> RWLock:
        """The array's lock: exclusive by default (``with a.lock:``), with
        ``a.lock.read()`` and ``a.lock.write()``. It lives in the segment,
        so every process and every view of the array share it."""
        seg = handles.segment_of(self)
        if seg is None:
            raise ValueError("this array is not in shared memory (a copy or computed result): it has no lock")
        return RWLock.of_segment(seg)

    def __array_wrap__(self, obj: Any, context: Any = None, return_scalar: bool = False) -> Any:
        if return_scalar:
            return obj[()]
        if isinstance(obj, SharedArray):  # an in-place result: the shared array itself
            return obj
        return obj.view(np.ndarray) if type(obj) is not np.ndarray else obj

    def copy(self, order: Any = "C") -> np.ndarray:  # type: ignore[override]
        return np.array(self, copy=True, order=order, subok=False)

    def __copy__(self) -> np.ndarray:  # type: ignore[override]
        return self.copy()

    def __deepcopy__(self, memo: Any) -> np.ndarray:  # type: ignore[override]
        return self.copy()

    def astype(  # type: ignore[override]
        self, dtype: Any, order: Any = "K", casting: Any = "unsafe", subok: bool = False, copy: bool = True
    ) -> np.ndarray:
        return np.ndarray.astype(self, dtype, order=order, casting=casting, subok=subok, copy=copy)

    def flatten(self, order: Any = "C") -> np.ndarray:
        return np.ndarray.flatten(self.view(np.ndarray), order)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        handle = handles.handle(self)
        if handle is None:
            # Private memory (e.g. fancy-indexing result): pickle the data.
            return self.view(np.ndarray).__reduce_ex__(protocol)
        return handle

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __repr__(self) -> str:
        return np.ndarray.__repr__(self.view(np.ndarray)).replace("array(", "SharedArray(", 1)


def _wrap(seg: _native.Segment) -> SharedArray:
    return seg.array(SharedArray, seg.dtype)


def _create(
    shape: ShapeLike,
    dtype: Any,
    order: str,
    name: str | None,
    src: np.ndarray | None = None,
    lazy: bool = False,
) -> _native.Segment:
    fortran = _order_flag(order)
    lifetime.sweep()
    return _native.create(np.dtype(dtype), list(_shape_of(shape)), fortran, name, src, lazy)


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


def _publish(seg: _native.Segment, fill: Callable[[SharedArray], object] | None) -> SharedArray:
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
    handles.descr_of(a.dtype)  # refuses object dtypes with a clear message
    order = _order_like(a)
    src = _flat_bytes(a, order == "F")
    if src is None:
        seg = _create(a.shape, a.dtype, order, name)
        return _publish(seg, lambda dst: np.copyto(dst, a))
    seg = _create(a.shape, a.dtype, order, name, src)
    return _publish(seg, None)


_native.register_array_class(SharedArray)


def attach(name: str, *, readonly: bool = False) -> SharedArray:
    """The named shared array `name`, from any process of the same user."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    return _native.attach(name, readonly)  # type: ignore[return-value]
