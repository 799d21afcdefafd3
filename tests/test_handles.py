"""ndshm.handles: the segment of an array, shared views of plain arrays,
dtype descriptions, and the size of handles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import ndshm
from ndshm import handles


@pytest.mark.parametrize("named", [False, True])
def test_shared_view_of_a_plain_view_is_the_same_memory(named, shm_name):
    a = ndshm.from_array(np.arange(60.0).reshape(6, 10), name=shm_name if named else None)
    seg = handles.segment_of(a)
    pending = seg.pending
    for plain in (
        np.asarray(a),
        np.asarray(a)[1::2, ::-3],
        np.asarray(a).T,
        np.asarray(a).view(np.int32)[2:4],
    ):
        assert type(plain) is np.ndarray
        v = handles.shared_view(plain)
        assert isinstance(v, ndshm.SharedArray)
        assert v.shape == plain.shape and v.strides == plain.strides and v.dtype == plain.dtype
        assert v.__array_interface__["data"][0] == plain.__array_interface__["data"][0]
        assert handles.segment_of(v) is seg
        v[...] = 0 if v.dtype == np.int32 else 7.0
        assert np.array_equal(v, plain)
    # No handle left the process: nothing is pending.
    assert seg.pending == pending


def test_shared_view_keeps_read_only_and_refuses_private_memory():
    a = ndshm.zeros(10)
    plain = np.asarray(a)[2:]
    plain.flags.writeable = False
    v = handles.shared_view(plain)
    assert v is not None and not v.flags.writeable
    assert handles.shared_view(np.zeros(10)) is None
    assert handles.shared_view(np.asarray(a).copy()) is None


def test_shared_view_pickles_as_a_handle():
    a = ndshm.from_array(np.arange(12.0))
    v = handles.shared_view(np.asarray(a)[::3])
    b = pickle.loads(pickle.dumps(v))
    assert np.shares_memory(b, a) and np.array_equal(b, a[::3])
    assert handles.segment_of(a).pending == 0


@pytest.mark.parametrize(
    "dt",
    [
        "<f8",
        ">i2",
        "|b1",
        "<U5",
        "|S3",
        "<M8[ms]",
        [("x", "<f4"), ("y", ">i8", (2, 3))],
        [(("title", "t"), "|u1")],
    ],
)
def test_descr_round_trips(dt):
    dt = np.dtype(dt)
    assert handles.dtype_of(handles.descr_of(dt)) == dt


def test_descr_of_refuses_objects():
    for dt in (object, [("a", "<f8"), ("o", "O")]):
        with pytest.raises(TypeError, match="objects"):
            handles.descr_of(dt)
    with pytest.raises(TypeError):
        handles.dtype_of("'|O'")
    with pytest.raises(ValueError):
        handles.dtype_of("'<f8")


def test_handles_are_small():
    a = ndshm.zeros((100, 100))
    data = pickle.dumps(a[1::2, ::3], protocol=5)
    assert len(data) < 100
    assert np.shares_memory(pickle.loads(data), a)
    assert handles.segment_of(a).pending == 0
