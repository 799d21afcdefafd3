"""Property tests of the view bounds check against numpy.

For random byte offsets, shapes, strides and dtypes (structured ones
included), a view built with ``np.lib.stride_tricks.as_strided`` over a
segment's data is accepted exactly when numpy's own extent of it
(``np.lib.array_utils.byte_bounds``) lies inside the data area (an empty
view: when it starts inside the data or at its end). Checked where a
sender decides whether a view can travel as a handle (``_native.view_of``),
where a receiver rebuilds a forged handle, and through a pickle round
trip. No view outside the data is ever read: they are only described.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.array_utils import byte_bounds
from numpy.lib.stride_tricks import as_strided

import ndshm
from ndshm import _native
from ndshm.handles import segment_of
from tests.helpers.wire import Handle, rebuild

DATA_LENGTHS = [0, 1, 7, 64, 100, 4096]

SIMPLE = ["u1", "<i2", ">i4", "<f8", "<c16", "|S5", "<U3", "<M8[ns]", "|V7", "?"]
STRUCTURED = [
    [("a", "<i8"), ("b", "<f4")],
    [("x", "<f8"), ("pos", "<f4", (3,)), ("inner", [("a", "<i2"), ("b", "S3")])],
    np.dtype([("a", "u1"), ("b", "<i4")], align=True),
    {"names": ["b"], "formats": ["<i8"], "offsets": [8], "itemsize": 16},  # a field view, like d[["b"]]
    {"names": ["p", "q"], "formats": ["<i2", ("u1", (2, 2))], "offsets": [0, 4], "itemsize": 9},  # gaps
]
DTYPES = [np.dtype(d) for d in SIMPLE] + [np.dtype(d) for d in STRUCTURED]

CASES = 250


@pytest.fixture(scope="module")
def segments():
    """Anonymous segments of every data length, and what forging a handle to each needs."""
    out = {}
    for n in DATA_LENGTHS:
        arr = ndshm.zeros(n, dtype=np.uint8)
        arr[:] = np.arange(n) % 251
        seg = segment_of(arr)
        out[n] = (arr, seg, (os.getpid(), seg.fd, seg.id))
    yield out
    for arr, seg, _ref in out.values():
        if seg.pending:  # settle handoffs the round trips left pending
            pickle.loads(pickle.dumps(arr))


def described(arr: np.ndarray, offset: int, shape, strides, dtype: np.dtype) -> np.ndarray:
    """A view of `dtype` at byte `offset` from the start of `arr`'s data,
    built by as_strided only: nothing is read, whatever it describes."""
    u8 = arr.view(np.ndarray)
    # A pointer `offset` bytes from the start, even before or past the data.
    at = as_strided(u8, shape=(2,), strides=(offset,))[1:]
    typed = as_strided(at, shape=(0,)).view(dtype)
    return as_strided(typed, shape=shape, strides=strides)


def inside(v: np.ndarray, data: int, length: int) -> bool:
    """The oracle: numpy's extent of `v` lies within the data area."""
    lo, hi = byte_bounds(v)
    if v.size == 0:
        return data <= lo <= data + length
    return data <= lo and hi <= data + length


def forge(ref, offset: int, shape, strides, dtype):
    """Rebuilds a handle that claims this view (what a forged pickle does)."""
    return rebuild(Handle(ref, offset, tuple(shape), tuple(strides), dtype, readonly=True))


def interesting(small: int):
    return st.one_of(
        st.integers(-small, small),
        st.integers(-small, small),
        st.sampled_from([2**31, -(2**31), 2**40, -(2**40), 2**62, -(2**62), 2**63 - 1, -(2**63)]),
    )


@st.composite
def views(draw):
    length = draw(st.sampled_from(DATA_LENGTHS))
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 4))
    shape = draw(
        st.lists(st.one_of(st.integers(0, 6), st.sampled_from([2**20, 2**31])), min_size=ndim, max_size=ndim)
    )
    strides = draw(
        st.lists(
            st.one_of(st.integers(-3, 3).map(lambda k: k * dtype.itemsize), interesting(80)),
            min_size=ndim,
            max_size=ndim,
        )
    )
    # Offsets near the edges of the data, and far from it.
    offset = draw(
        st.one_of(
            st.integers(-40, length + 40),
            st.integers(0, length).map(lambda o: o - o % dtype.itemsize),
            interesting(2**20),
        )
    )
    return length, offset, shape, strides, dtype


def build(arr, offset, shape, strides, dtype):
    try:
        return described(arr, offset, shape, strides, dtype)
    except (ValueError, OverflowError):
        return None  # numpy itself cannot describe it (its size overflows)


@settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=views())
def test_sender_check_accepts_exactly_the_views_inside_the_data(segments, case):
    length, offset, shape, strides, dtype = case
    arr, seg, _ref = segments[length]
    v = build(arr, offset, shape, strides, dtype)
    if v is None:
        return
    expected = inside(v, seg.address, seg.nbytes)
    found = _native.view_of(v)
    assert (found is not None) == expected, (
        byte_bounds(v),
        seg.address,
        seg.nbytes,
        v.shape,
        v.strides,
        v.dtype,
    )
    if found is not None:
        assert found[1] == offset
        # A view that may travel comes back as a view of the same bytes.
        back = pickle.loads(pickle.dumps(v.view(ndshm.SharedArray), protocol=5))
        assert isinstance(back, ndshm.SharedArray)
        assert (back.shape, back.strides, back.dtype) == (v.shape, v.strides, v.dtype)
        assert byte_bounds(back) == byte_bounds(v)
        if v.size:
            assert np.shares_memory(back, v)


@settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=views())
def test_receiver_check_accepts_exactly_the_views_inside_the_data(segments, case):
    length, offset, shape, strides, dtype = case
    arr, seg, ref = segments[length]
    v = build(arr, offset, shape, strides, dtype)
    if v is None:
        # Beyond what numpy can describe: the handle must be refused cleanly.
        with pytest.raises(ValueError):
            forge(ref, offset, shape, strides, dtype)
        return
    expected = inside(v, seg.address, seg.nbytes)
    try:
        w = forge(ref, offset, shape, strides, dtype)
    except ValueError:
        assert not expected, f"an in-bounds view was refused: {v.shape} {v.strides} {v.dtype} at {offset}"
        return
    assert expected, f"an out-of-bounds view was accepted: {byte_bounds(w)} vs {seg.address}+{seg.nbytes}"
    assert (w.shape, w.strides, w.dtype) == (v.shape, v.strides, v.dtype)
    assert byte_bounds(w) == byte_bounds(v)


def test_the_examples_reach_both_sides_of_the_edge(segments):
    """The strategy meets accepted and refused views, with and without items,
    of structured dtypes too (so the properties above test something). Some
    kinds are rare among random examples, so this one check of the strategy
    draws more of them, from a fixed seed: it gives the same answer on
    every run."""
    seen = set()

    @settings(max_examples=4 * CASES, deadline=None, database=None, derandomize=True)
    @given(case=views())
    def collect(case):
        length, offset, shape, strides, dtype = case
        arr, seg, _ref = segments[length]
        v = build(arr, offset, shape, strides, dtype)
        if v is not None:
            seen.add((inside(v, seg.address, seg.nbytes), v.size > 0, dtype.names is not None))

    collect()
    assert {(True, True, True), (True, True, False), (False, True, True), (False, True, False)} <= seen
    assert (True, False, False) in seen and (False, False, False) in seen
