"""Handles: how a view of a shared array travels to another process.

A shared array, and any view of it, pickles as ``rebuild(wire)``: ``wire``
is the core's handle bytes (see docs/FORMAT.md, "Handles"), naming the
segment, the view's byte offset, shape, strides and dtype, and the host.
Unpickling maps the same memory (once per process) and rebuilds the view;
everything in a handle is checked before any access. Both directions are
native: they run once per task that carries an array.

This module is the one place the package deals with handles: the segment
of an array, references to segments, rebuilding, and dtype descriptions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _native, lifetime

__all__ = ["descr_of", "dtype_of", "rebuild", "segment_of", "segment_ref", "shared_view"]

#: Unpickles a handle: checks it, maps the segment (once per process) and
#: rebuilds the view; a handle made on another host gives a
#: :class:`~ndshm.ForeignHandle` that passes it on.
rebuild = _native.rebuild


def segment_of(arr: np.ndarray) -> _native.Segment | None:
    """The segment whose data `arr` views, if any."""
    found = _native.view_of(arr)
    return None if found is None else found[0]


def segment_ref(seg: _native.Segment) -> bytes:
    """What a handle carries to name `seg` (counting a pending handoff for
    an anonymous segment: call it only for a reference that leaves)."""
    lifetime.ensure_exit_hook()
    return _native.segment_ref(seg)


def attach_ref(ref: bytes, readonly: bool = False) -> _native.Segment:
    """The segment a reference names, mapped once per process."""
    return _native.attach_ref(ref, readonly)


def handle(arr: np.ndarray) -> tuple | None:
    """``(rebuild, (wire,))`` for pickling `arr` as a handle, or None when
    its memory is not inside a published segment."""
    found = _native.handle(arr)
    if found is not None:
        lifetime.ensure_exit_hook()  # a sender of anonymous arrays may need a keeper at exit
    return found


def shared_view(arr: np.ndarray) -> np.ndarray | None:
    """The same view (offset, shape, strides, dtype) of the same memory as
    a :class:`~ndshm.SharedArray`, when `arr`'s memory lies inside a
    published segment (read-only if `arr` is); None otherwise. Nothing is
    counted as sent: that happens only when a handle is pickled. (Typed as
    ``np.ndarray`` so that this module needs nothing from ``arrays``.)"""
    return _native.shared_view(arr)


def descr_of(dtype: Any) -> str:
    """The ``.npy`` description of a dtype, as segments and handles carry
    it; a TypeError for dtypes that cannot live in shared memory."""
    return _native.descr_of(np.dtype(dtype))


def dtype_of(descr: str) -> np.dtype:
    """The dtype a ``.npy`` description gives (checked by the core)."""
    return _native.dtype_of(descr)
