"""Every fixed-size dtype round-trips: creation, pickling in-process and in a
spawned child, C and Fortran order, 0-d and empty arrays, and the segment
file itself is a valid .npy file. Object-holding dtypes are refused."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import ndshm
from ndshm import _native
from tests.helpers.wire import Handle

# --------------------------------------------------------------------------
# dtypes and sample data

STRUCT_NESTED = np.dtype([("id", "<u4"), ("inner", [("a", "<i2"), ("b", "S3"), ("c", [("d", ">f8")])])])
STRUCT_SUBARRAY = np.dtype([("pos", "<f4", (3,)), ("m", ">u2", (2, 2)), ("flag", "?")])
STRUCT_TITLES = np.dtype([(("the x coordinate", "x"), "<i4"), (("why", "y"), "<f8")])
STRUCT_ALIGNED = np.dtype([("a", "u1"), ("b", "<i8"), ("c", "<u2")], align=True)

DTYPES = [
    np.dtype(t)
    for t in [
        "?",
        "i1",
        "i2",
        "i4",
        "i8",
        "u1",
        "u2",
        "u4",
        "u8",
        "f2",
        "f4",
        "f8",
        np.longdouble,
        "c8",
        "c16",
        "M8[ns]",
        "M8[ms]",
        "M8[D]",
        "M8[10ms]",
        "m8[ns]",
        "m8[ms]",
        "m8[D]",
        "m8[10ms]",
        "S7",
        "U5",
        ">i4",
        "<f8",
        ">c16",
        ">u8",
        "<i2",
        ">f2",
        ">M8[us]",
        STRUCT_NESTED,
        STRUCT_SUBARRAY,
        STRUCT_TITLES,
        STRUCT_ALIGNED,
    ]
]
# A handful covering every family, for the costlier tests.
SOME = [
    np.dtype(t)
    for t in ["?", "i1", "<u8", ">i4", "f2", np.longdouble, ">c16", "M8[10ms]", "m8[D]", "S7", "U5"]
] + [STRUCT_NESTED, STRUCT_SUBARRAY, STRUCT_TITLES, STRUCT_ALIGNED]


def _id(dt: np.dtype) -> str:
    if dt.names:
        return {
            STRUCT_NESTED: "struct-nested",
            STRUCT_SUBARRAY: "struct-subarray",
            STRUCT_TITLES: "struct-titles",
            STRUCT_ALIGNED: "struct-aligned",
        }[dt]
    return dt.str


def _values(dt: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Deterministic, non-trivial values of a non-structured dtype."""
    n = int(np.prod(shape, dtype=np.int64))
    k = np.arange(n, dtype=np.int64) + seed
    kind = dt.kind
    if kind == "b":
        v = (k % 3) == 1
    elif kind in "iu":
        info = np.iinfo(dt)
        special = np.array([info.min, info.max, 0, 1], dtype=object)
        v = np.array([special[i] if i < 4 else (i * 37 + seed) % 120 for i in range(n)], dtype=object)
        v = v.astype(dt) if n else np.zeros(0, dt)
    elif kind == "f":
        v = (k * 1.25 - 7.5).astype(dt)
        if n > 3:
            v[1], v[2], v[3] = np.inf, -np.inf, np.nan
    elif kind == "c":
        v = (k * 1.5 - 2).astype(dt) + 1j * (3 - k * 0.5).astype(dt)
        if n > 2:
            v[2] = complex(np.nan, np.inf)
    elif kind in "Mm":
        v = (k * 1234567 - 99).astype(np.dtype(dt.str.replace(">", "<")))
        v = v.astype(dt)
        if n > 1:
            v[1] = np.datetime64("NaT") if kind == "M" else np.timedelta64("NaT")
    elif kind == "S":
        words = [b"", b"a", b"abc", b"1234567", b"\x00x\xff", b"shm"]
        v = np.array([words[(i + seed) % len(words)] for i in range(n)], dtype=dt)
    elif kind == "U":
        words = ["", "h\u00e9llo", "\u03a9", "ab", "\U0001f600xyz", "12345"]
        v = np.array([words[(i + seed) % len(words)] for i in range(n)], dtype=dt)
    else:  # pragma: no cover - the list above is exhaustive
        raise AssertionError(dt)
    return np.asarray(v, dtype=dt).reshape(shape)


def sample(dt: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """An array of `dt` and `shape` with every field filled."""
    out = np.zeros(shape, dtype=dt)
    _fill(out, seed)
    return out


def _fill(arr: np.ndarray, seed: int) -> None:
    if arr.dtype.names:
        for i, name in enumerate(arr.dtype.names):
            _fill(arr[name], seed + 7 * i)
    else:
        arr[...] = _values(arr.dtype, arr.shape, seed)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype (byte order, fields, offsets), shape and values."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.dtype.str == expected.dtype.str
    assert actual.dtype.descr == expected.dtype.descr
    assert actual.dtype.itemsize == expected.dtype.itemsize
    assert actual.shape == expected.shape
    _assert_values(actual, expected)


def _assert_values(actual: np.ndarray, expected: np.ndarray) -> None:
    if expected.dtype.names:
        for name in expected.dtype.names:
            _assert_values(actual[name], expected[name])
    else:
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), strict=True)


def handle_size(arr: np.ndarray) -> int:
    """Bytes of `arr` pickled; unpickles it again so an anonymous array's
    handoff is settled."""
    data = pickle.dumps(arr, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)
    return len(data)


# --------------------------------------------------------------------------
# in-process


@pytest.mark.parametrize("dt", DTYPES, ids=_id)
def test_from_array_round_trips(dt):
    x = sample(dt, (3, 4))
    a = ndshm.from_array(x)
    assert type(a) is ndshm.SharedArray
    assert_same(a, x)
    assert not np.shares_memory(a, x)

    data = pickle.dumps(a)
    assert len(data) < 1024, "a shared array pickles as a handle"
    b = pickle.loads(data)
    assert type(b) is ndshm.SharedArray
    assert_same(b, x)
    assert np.shares_memory(a, b)
    assert b.flags.c_contiguous and b.strides == a.strides

    # A view pickles with the dtype too.
    c = pickle.loads(pickle.dumps(a[1:, ::2]))
    assert_same(c, x[1:, ::2])


@pytest.mark.parametrize("dt", DTYPES, ids=_id)
def test_empty_zeros_full(dt):
    e = ndshm.empty((2, 3), dtype=dt)
    assert type(e) is ndshm.SharedArray and e.dtype == dt and e.shape == (2, 3)
    assert e.dtype.descr == dt.descr

    z = ndshm.zeros((2, 3), dtype=dt)
    assert z.dtype == dt and z.tobytes() == bytes(z.nbytes)
    zl = ndshm.zeros_like(sample(dt, (4,)))
    assert zl.dtype == dt and zl.shape == (4,)
    el = ndshm.empty_like(sample(dt, (4,)))
    assert el.dtype == dt and el.shape == (4,)

    fill = sample(dt, (3,), seed=5)[2]  # a numpy scalar of dt (np.void for structs)
    f = ndshm.full((2, 3), fill, dtype=dt)
    assert_same(f, np.full((2, 3), fill, dtype=dt))
    g = pickle.loads(pickle.dumps(f))
    assert_same(g, np.full((2, 3), fill, dtype=dt))
    assert np.shares_memory(f, g)


@pytest.mark.parametrize(
    "fill, dt",
    [(True, "?"), (-3, "i8"), (2.5, "f8"), (1 + 2j, "c16"), (b"ab", "S2"), ("\u00e9t\u00e9", "U3")],
)
def test_full_infers_the_dtype(fill, dt):
    f = ndshm.full(4, fill)
    assert f.dtype == np.dtype(dt)
    g = pickle.loads(pickle.dumps(f))
    assert type(g) is ndshm.SharedArray and np.shares_memory(f, g)
    assert_same(g, np.full(4, fill))


@pytest.mark.parametrize("dt", SOME, ids=_id)
def test_fortran_order(dt):
    x = np.asfortranarray(sample(dt, (3, 4, 2)))
    a = ndshm.from_array(x)
    assert a.flags.f_contiguous and not a.flags.c_contiguous
    assert a.strides == x.strides
    assert_same(a, x)
    b = pickle.loads(pickle.dumps(a))
    assert type(b) is ndshm.SharedArray and np.shares_memory(a, b)
    assert b.flags.f_contiguous and not b.flags.c_contiguous
    assert_same(b, x)

    e = ndshm.empty((3, 4, 2), dtype=dt, order="F")
    assert e.flags.f_contiguous and not e.flags.c_contiguous and e.dtype == dt
    f = ndshm.full((3, 4, 2), x[0, 0, 0], dtype=dt, order="F")
    assert f.flags.f_contiguous and not f.flags.c_contiguous
    assert_same(f, np.full((3, 4, 2), x[0, 0, 0], dtype=dt))
    like = ndshm.empty_like(x)
    assert like.flags.f_contiguous and not like.flags.c_contiguous


def test_non_contiguous_source_keeps_values():
    x = sample(np.dtype(">i4"), (6, 8))[::2, ::-3]
    a = ndshm.from_array(x)
    assert_same(a, x)
    assert_same(pickle.loads(pickle.dumps(a)), x)


@pytest.mark.parametrize("dt", SOME, ids=_id)
def test_zero_d(dt):
    x = sample(dt, (), seed=3)
    a = ndshm.from_array(x)
    assert a.shape == () and a.ndim == 0
    assert_same(a, x)
    b = pickle.loads(pickle.dumps(a))
    assert b.shape == () and type(b) is ndshm.SharedArray
    assert_same(b, x)
    assert np.shares_memory(a, b)
    e = ndshm.full((), x[()], dtype=dt)
    assert_same(e, x)


@pytest.mark.parametrize("shape", [(0,), (3, 0, 2)], ids=str)
@pytest.mark.parametrize("dt", SOME, ids=_id)
def test_empty_arrays(dt, shape):
    x = np.zeros(shape, dtype=dt)
    for a in (
        ndshm.from_array(x),
        ndshm.empty(shape, dtype=dt),
        ndshm.zeros(shape, dtype=dt, order="F"),
        ndshm.full(shape, np.zeros((), dt)[()], dtype=dt),
    ):
        assert type(a) is ndshm.SharedArray
        assert_same(a, x)
        b = pickle.loads(pickle.dumps(a))
        assert type(b) is ndshm.SharedArray
        assert_same(b, x)


# --------------------------------------------------------------------------
# in a spawned child


def _child_read_and_write(items):
    """In the child: report what arrived, then write the new values."""
    out = []
    for arr, new in items:
        out.append(
            (
                type(arr).__name__,
                arr.dtype,
                arr.shape,
                arr.strides,
                arr.flags.writeable,
                # Raw bytes: numpy's own pickling of a plain array does not keep
                # a non-native byte order (numpy 2.4 unpickles '>i4' as '<i4').
                arr.tobytes(order="C"),
            )
        )
        if new is not None:
            arr[...] = new
    return out


def test_round_trip_in_spawned_child(more_names):
    items = []  # (shared array, expected values, new values or None)
    for i, dt in enumerate(DTYPES):
        x = sample(dt, (3, 4), seed=i)
        items.append((ndshm.from_array(x), x, sample(dt, (3, 4), seed=i + 100)))
    for dt in SOME:
        xf = np.asfortranarray(sample(dt, (2, 3, 2)))
        items.append((ndshm.from_array(xf), xf, sample(dt, (2, 3, 2), seed=9)))
        x0 = sample(dt, (), seed=4)
        items.append((ndshm.from_array(x0), x0, sample(dt, (), seed=1)))
        items.append((ndshm.empty((3, 0, 2), dtype=dt), np.zeros((3, 0, 2), dt), None))
        fill = sample(dt, (2,), seed=6)[1]
        full = np.full((5,), fill, dtype=dt)
        items.append((ndshm.full((5,), fill, dtype=dt), full, sample(dt, (5,), seed=3)))
    for dt in (STRUCT_NESTED, STRUCT_ALIGNED, np.dtype(">c16"), np.dtype("M8[10ms]"), np.dtype("U5")):
        x = np.asfortranarray(sample(dt, (4, 3), seed=2))
        items.append((ndshm.from_array(x, name=more_names()), x, sample(dt, (4, 3), seed=8)))
    # A view of the first array, read after the child wrote the new values there.
    items.append((items[0][0][1:, ::-2], items[0][2][1:, ::-2], None))

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.apply(_child_read_and_write, ([(a, new) for a, _, new in items],))

    assert len(got) == len(items)
    for (a, expected, new), (tname, dtype, shape, strides, writeable, raw) in zip(items, got):
        assert tname == "SharedArray"
        assert dtype == expected.dtype and dtype.descr == expected.dtype.descr
        assert shape == a.shape and strides == a.strides and writeable
        assert_same(np.frombuffer(raw, dtype=dtype).reshape(shape), expected)
        if new is not None:
            assert_same(a, new)  # the child's writes are in our memory


# --------------------------------------------------------------------------
# objects are refused

OBJECT_DTYPES = [np.dtype(object), np.dtype([("a", "<i4"), ("o", "O")]), np.dtype([("s", [("o", "O")])])]
if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
    OBJECT_DTYPES.append(np.dtypes.StringDType())
OBJ_IDS = ["object", "struct-with-object", "nested-object", "StringDType"][: len(OBJECT_DTYPES)]
CLEAR = r"(?i)(object|not a fixed-size)"


@pytest.mark.parametrize("dt", OBJECT_DTYPES, ids=OBJ_IDS)
def test_object_dtypes_refused_at_creation(dt):
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.empty(3, dtype=dt)
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.zeros((2, 2), dtype=dt, order="F")
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.full(3, np.zeros((), dtype=dt)[()], dtype=dt)
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.empty_like(np.zeros(2, dtype=dt))
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.zeros_like(np.zeros(2, dtype=dt))
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.from_array(np.zeros(0, dtype=dt))


def _object_samples() -> dict[str, np.ndarray]:
    out = {
        "object": np.array([1, "a", None], dtype=object),
        "object-0d": np.array(None, dtype=object),
        "struct-with-object": np.zeros(3, dtype=[("a", "<i4"), ("o", "O")]),
    }
    if len(OBJECT_DTYPES) > 3:
        out["StringDType"] = np.array(["a", "bb"], dtype=OBJECT_DTYPES[3])
    return out


@pytest.mark.parametrize("x", list(_object_samples().values()), ids=list(_object_samples()))
def test_object_arrays_refused_by_from_array(x):
    with pytest.raises(TypeError, match=CLEAR):
        ndshm.from_array(x)


def test_object_arrays_refused_as_type_error():
    # Whatever the message, it is a TypeError and nothing is left behind.
    for x in _object_samples().values():
        with pytest.raises(TypeError):
            ndshm.from_array(x)


def test_forged_handle_with_object_dtype_is_refused():
    a = ndshm.zeros(4, dtype=np.int64)
    rebuild, (wire,) = a.__reduce_ex__(2)
    ref = (os.getpid(), ndshm.handles.segment_of(a).fd, ndshm.handles.segment_of(a).id)
    for descr in ("'|O'", "[('a', '|O')]", "[('a', '<i4'), ('o', '|O')]"):
        with pytest.raises(ValueError, match=CLEAR):
            rebuild(Handle(ref, 0, (4,), (8,), descr).encode())
    # The genuine handle still works.
    b = rebuild(wire)
    b[1] = 5
    assert a[1] == 5


# --------------------------------------------------------------------------
# a named segment is a .npy file

NPY_CASES = [
    ("i4", (5, 3), "C"),
    (">c16", (2, 3), "C"),
    ("f8", (4, 6), "F"),
    ("M8[10ms]", (7,), "C"),
    ("U5", (3, 2), "F"),
    ("S7", (), "C"),
    (STRUCT_NESTED, (4,), "C"),
    (STRUCT_SUBARRAY, (2, 3), "F"),
    (STRUCT_ALIGNED, (5,), "C"),
    (STRUCT_TITLES, (3,), "C"),
]


@pytest.mark.parametrize(
    "dt, shape, order", NPY_CASES, ids=[f"{_id(np.dtype(d))}-{len(s)}d-{o}" for d, s, o in NPY_CASES]
)
def test_named_segment_is_an_npy_file(more_names, dt, shape, order):
    dt = np.dtype(dt)
    x = sample(dt, shape, seed=1)
    x = np.asfortranarray(x) if order == "F" else x
    name = more_names()
    ndshm.from_array(x, name=name)
    path = Path(_native.segment_dir()) / f"ndshm-{name}"
    assert path.exists()

    b = ndshm.attach(name, readonly=True)
    assert_same(b, x)
    assert b.strides == x.strides

    m = np.load(path, mmap_mode="r")
    assert_same(m, x)
    if order == "F" and x.ndim > 1:
        assert m.flags.f_contiguous and not m.flags.c_contiguous
    del m
    assert_same(np.load(path), x)


def test_empty_named_segment_is_an_npy_file(shm_name):
    x = np.zeros((3, 0, 2), dtype=">f4")
    ndshm.from_array(x, name=shm_name)
    assert_same(np.load(Path(_native.segment_dir()) / f"ndshm-{shm_name}"), x)


def test_npy_file_sees_writes(shm_name):
    a = ndshm.zeros((4, 4), dtype="<i8", name=shm_name)
    a[2, 3] = 77
    m = np.load(Path(_native.segment_dir()) / f"ndshm-{shm_name}", mmap_mode="r")
    assert m[2, 3] == 77 and m.sum() == 77
