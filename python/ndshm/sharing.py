"""What travels as a handle: any ndarray whose memory lies in a segment.

A :class:`~ndshm.SharedArray` pickles as a handle by itself. A plain
``numpy.ndarray`` viewing the same memory (``np.asarray(a)``, xarray's
``.values``, pandas' ``to_numpy()``, scikit-learn's ``check_array``
output) does not: ``pickle`` copies its data. This module makes such views
travel as handles (the same view: offset, shape, strides, dtype) wherever
data goes to another process:

- ndshm's own entry points (pool items, functions and ``submit``
  arguments, ``map_blocks``, ``ndshm.dask``) through :func:`shared_view`,
  :func:`dumps` and :func:`dumps_function`;
- multiprocessing (so ``multiprocessing.Pool``, ``Process`` arguments,
  queues, pipes and ``concurrent.futures.ProcessPoolExecutor``): its
  ``ForkingPickler`` is taught a reducer for ``numpy.ndarray``;
- joblib: where joblib would dump an array to its memmap folder, a view of
  shared memory goes as a handle instead, read-only as joblib's memmaps
  are (writable under ``mmap_mode="r+"`` / ``"w+"``).

``pickle.dumps`` itself is left alone (a plain view pickled to a file keeps
its data), and ordinary arrays pickle exactly as before. See README,
"Plain views of shared arrays".
"""

from __future__ import annotations

import copyreg
import functools
import io
import itertools
import pickle
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np

from . import handles
from .arrays import SharedArray

__all__ = [
    "as_shared",
    "dumps",
    "dumps_function",
    "holds_no_array",
    "install",
    "read_only_view",
    "require_shared",
    "shared_view",
]


def shared_view(arr: np.ndarray) -> SharedArray | None:
    """The same view of the same memory as `arr`, as a SharedArray (which
    pickles as a handle), or None if its memory is not inside a published
    segment. Finding it sends nothing (no handoff is counted). Every
    decision of this module about an array goes through here; a plain
    view is checked and rebuilt by :func:`ndshm.handles.shared_view`."""
    if isinstance(arr, SharedArray):
        seg = handles.segment_of(arr)
        return arr if seg is not None and seg.published else None
    view = handles.shared_view(arr)
    return view if isinstance(view, SharedArray) else None


def read_only_view(arr: np.ndarray) -> SharedArray | None:
    """:func:`shared_view`, read-only (a new view: `arr` is left as it is)."""
    view = shared_view(arr)
    if view is None:
        return None
    view = view.view(SharedArray)
    view.flags.writeable = False
    return view


def require_shared(
    arr: Any, what: str, make: str = "ndshm.empty(shape, dtype), ndshm.zeros_like(x)"
) -> SharedArray:
    """`arr` as a SharedArray, for an argument that must reach workers as
    shared memory (``out=``, the array of ``to_dask``): a ValueError before
    any work starts if its memory is private (a TypeError if it is no
    ndarray). `make` names what the caller could pass instead."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{what} must be a shared array ({make}, ...), not {type(arr).__name__}")
    view = shared_view(arr)
    if view is None:
        raise ValueError(
            f"{what} must be in shared memory, for the workers to use it in place: pass an ndshm array "
            f"or a view of one ({make}, ...); this {type(arr).__name__}'s memory is private "
            "(a copy, a computed result, or memory from outside ndshm)"
        )
    return view


def as_shared(item: Any) -> Any:
    """`item` with plain views of shared memory turned into SharedArrays:
    the item itself, or the members of a tuple or list item (for senders
    whose own serializers choose by type, like Dask's)."""
    t = type(item)
    if t is np.ndarray:
        view = shared_view(item)
        return item if view is None else view
    if t is tuple or t is list:
        return t(as_shared(x) if type(x) is np.ndarray else x for x in item)
    return item


# -- picklers ------------------------------------------------------------------


@functools.cache
def _ndarray_reducer(protocol: int) -> Callable[[np.ndarray], Any]:
    """A reducer for ``numpy.ndarray`` in a pickler of this `protocol`: a
    view of shared memory as its handle, any other array as numpy
    reduces it."""

    def reduce(a: np.ndarray) -> Any:
        if a.base is not None:  # an array owning its memory is private
            view = shared_view(a)
            if view is not None:
                return view.__reduce_ex__(protocol)
        return a.__reduce_ex__(protocol)

    return reduce


# Items of these types hold no array: a chunk of them is pickled as is.
_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})
_TUPLE = frozenset({tuple})
_SHORT = 64  # items checked at C speed
_FEW = 8  # items checked one by one (tuples of plain items too: starmap's)


def holds_no_array(items: list | tuple) -> bool:
    """Whether every one of `items` (a pool's items, before they are cut
    into chunks) is of a plain type, or (starmap's) a tuple of such: then
    no chunk of them holds an array. Checked at C speed, once for many
    chunks."""
    if _PLAIN.issuperset(map(type, items)):
        return True
    members = itertools.chain.from_iterable(items)
    return _TUPLE.issuperset(map(type, items)) and _PLAIN.issuperset(map(type, members))


def _holds_no_array(obj: Any) -> bool:
    """Whether `obj` is a chunk that surely holds no array: a range, or a
    short list of plain items (or, for a few, tuples of them). Such chunks,
    the most common small ones, skip the pickler that looks for arrays."""
    t = type(obj)
    if t is range:
        return True
    if t is not list:
        return False
    if len(obj) > _FEW:
        return len(obj) <= _SHORT and _PLAIN.issuperset(map(type, obj))
    for x in obj:  # a loop: cheaper than building a set for a few items
        tx = type(x)
        if tx is tuple:
            for y in x:
                if type(y) not in _PLAIN:
                    return False
        elif tx not in _PLAIN:
            return False
    return True


def dumps(obj: Any, protocol: int = 5) -> bytes:
    """``pickle.dumps(obj, protocol)``, with every ``numpy.ndarray`` that
    views shared memory pickled as its handle."""
    if _holds_no_array(obj):
        return pickle.dumps(obj, protocol=protocol)
    if protocol != 5:
        raise ValueError("dumps pickles at protocol 5")
    buf = io.BytesIO()
    _Pickler(buf, protocol=5).dump(obj)
    return buf.getvalue()


class _Pickler(pickle.Pickler):
    """pickle, with ndarrays that view shared memory as handles. The table
    is consulted only for objects of types pickle has no fast path for, and
    follows later registrations with copyreg."""

    dispatch_table = ChainMap({np.ndarray: _ndarray_reducer(5)}, copyreg.dispatch_table)  # type: ignore[arg-type]


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
    """cloudpickle (functions, lambdas, closures), with ndarrays that view
    shared memory as handles (always pickling at protocol 5)."""

    dispatch_table = ChainMap({np.ndarray: _ndarray_reducer(5)}, *cloudpickle.Pickler.dispatch_table.maps)


def dumps_function(obj: Any, protocol: int = 5) -> bytes:
    """``cloudpickle.dumps(obj)``, with every ``numpy.ndarray`` that views
    shared memory (a closure's, an argument's) pickled as its handle."""
    if protocol != 5:
        raise ValueError("dumps_function pickles at protocol 5")
    buf = io.BytesIO()
    _CloudPickler(buf, protocol=5).dump(obj)
    return buf.getvalue()


# -- multiprocessing and joblib ----------------------------------------------------


def _teach_multiprocessing() -> None:
    from multiprocessing.reduction import ForkingPickler

    # ForkingPickler pickles at the default protocol: so must the reducer,
    # so that ordinary arrays give exactly the bytes they always did.
    ForkingPickler.register(np.ndarray, _ndarray_reducer(pickle.DEFAULT_PROTOCOL))


_JOBLIB_MODES = {"r": True, "r+": False, "w+": False}  # mmap_mode -> read-only handle


def _joblib_handle(reducer: Any, a: np.ndarray) -> Any:
    """The handle joblib's memmapping reducer sends instead of dumping `a`
    to its memmap folder, or None where joblib goes on as it would: arrays
    it would not dump (small ones, ``max_nbytes=None``), copy-on-write
    (``mmap_mode="c"``), and arrays not in shared memory."""
    max_nbytes = getattr(reducer, "_max_nbytes", None)
    read_only = _JOBLIB_MODES.get(str(getattr(reducer, "_mmap_mode", None)))
    if a.base is None or max_nbytes is None or read_only is None or a.nbytes <= max_nbytes:
        return None
    view = read_only_view(a) if read_only else shared_view(a)
    return None if view is None else view.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


def teach_joblib(module: Any) -> None:
    """Lets joblib's memmapping reducer (``joblib._memmapping_reducer``, used
    by its loky and multiprocessing backends) send views of shared memory as
    handles where it would dump them. Its reducer for ``numpy.ndarray``
    replaces any registered one in each pool it makes, so the hook goes
    around that reducer, once."""
    cls = getattr(module, "ArrayMemmapForwardReducer", None)
    original = cls.__dict__.get("__call__") if isinstance(cls, type) else None
    if original is None or getattr(original, "_ndshm_shares", False):
        return

    @functools.wraps(original)
    def __call__(self: Any, a: Any) -> Any:
        if isinstance(a, np.ndarray):
            handle = _joblib_handle(self, a)
            if handle is not None:
                return handle
        return original(self, a)

    __call__._ndshm_shares = True  # type: ignore[attr-defined]
    setattr(cls, "__call__", __call__)  # noqa: B010 (cls is found at run time)


def install() -> None:
    """Teaches multiprocessing's pickler now (ndshm imports multiprocessing
    anyway); joblib's is taught when it is imported (see ``_autoload``)."""
    _teach_multiprocessing()
