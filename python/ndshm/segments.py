"""Named segments: list, inspect, delete, garbage-collect."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _native, handles
from ._native import AbandonedSegment, CorruptSegment

__all__ = ["AbandonedSegment", "CorruptSegment", "SegmentInfo", "delete", "exists", "gc", "info", "list"]

_list = list


@dataclass(frozen=True)
class SegmentInfo:
    """One named segment as its file describes it.

    ``status`` is ``"ready"``, ``"creating"`` (its creator is still at
    work), ``"abandoned"`` (its creator died while creating it; ``gc()``
    removes it) or ``"corrupt"`` (not a valid segment; ``detail`` says
    why). ``dtype``, ``shape`` and ``nbytes`` are ``None`` when unreadable.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[int, ...] | None
    order: str | None  # "C" or "F"
    nbytes: int | None
    owner_pid: int | None
    owner_alive: bool
    created: float | None
    status: str
    detail: str | None = None

    @classmethod
    def _from(cls, e: _native.Entry) -> SegmentInfo:
        dtype = None
        if e.descr is not None:
            try:
                dtype = handles.dtype_of(e.descr)
            except (ValueError, TypeError):
                dtype = None
        return cls(
            name=e.name,
            dtype=dtype,
            shape=e.shape,
            order=None if e.fortran_order is None else ("F" if e.fortran_order else "C"),
            nbytes=e.nbytes,
            owner_pid=e.owner_pid,
            owner_alive=e.owner_alive,
            created=e.created,
            status=e.status,
            detail=e.detail,
        )


def delete(name: str) -> None:
    """Removes the name. Arrays already attached stay valid; the memory is
    freed when the last of them is gone."""
    _native.delete(name)


def exists(name: str) -> bool:
    """Whether a named segment `name` exists."""
    return _native.exists(name)


def info(name: str) -> SegmentInfo:
    """What the named segment `name` is (without attaching it)."""
    return SegmentInfo._from(_native.info(name))


def list() -> _list[SegmentInfo]:
    """Every named segment of this user, sorted by name."""
    return [SegmentInfo._from(e) for e in _native.list_segments()]


def gc() -> _list[str]:
    """Removes what dead processes left behind (segments whose creator died
    before finishing them); returns their names. Complete named segments
    are never removed: they live until deleted."""
    return _native.gc()
