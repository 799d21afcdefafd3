"""Views of every kind pickle as small handles and unpickle to views of the
same memory; derived arrays (arithmetic, copies) are private and pickle as
data; in-place operations stay shared; mappings outlive names and owners."""

from __future__ import annotations

import copy
import gc
import multiprocessing
import pickle
import warnings

import numpy as np
import pytest

import ndshm

STRUCT = np.dtype([("x", "<f8"), ("pos", "<f4", (3,)), ("inner", [("a", "<i2"), ("b", "S3")])])


def make_bases(name_factory=None) -> dict[str, ndshm.SharedArray]:
    """Fresh shared arrays to take views of (named if `name_factory`)."""

    def share(x):
        return ndshm.from_array(x, name=None if name_factory is None else name_factory())

    s = np.zeros(6, dtype=STRUCT)
    s["x"] = np.arange(6) * 1.5
    s["pos"] = np.arange(18).reshape(6, 3)
    s["inner"]["a"] = -np.arange(6)
    s["inner"]["b"] = [b"a", b"bb", b"ccc", b"d", b"e", b"f"]
    return {
        "2d": share(np.arange(60, dtype=np.float64).reshape(6, 10)),
        "1d": share(np.arange(10, dtype=np.float64)),
        "3d": share(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
        "F": share(np.asfortranarray(np.arange(35, dtype=np.int16).reshape(5, 7))),
        "struct": share(s),
    }


# name -> (base, how to take the view from it). Each must be a real view.
VIEWS = {
    "slice": ("2d", lambda a: a[1:4, 2:7]),
    "row": ("2d", lambda a: a[2]),
    "column": ("2d", lambda a: a[:, 3]),
    "steps": ("2d", lambda a: a[::2, ::3]),
    "reverse": ("2d", lambda a: a[::-1]),
    "reverse-step-2": ("2d", lambda a: a[::-2, 1:]),
    "reverse-both": ("2d", lambda a: a[::-1, ::-3]),
    "transpose": ("2d", lambda a: a.T),
    "transpose-3d": ("3d", lambda a: a.transpose(2, 0, 1)),
    "swapaxes-step": ("3d", lambda a: a.swapaxes(0, 2)[:, ::2]),
    "newaxis": ("2d", lambda a: a[:, None]),
    "y-newaxis": ("1d", lambda a: a[None, :]),
    "ellipsis-newaxis": ("3d", lambda a: a[..., None, 1]),
    "reshape-flat": ("2d", lambda a: a.reshape(60)),
    "reshape": ("2d", lambda a: a.reshape(3, 20)),
    "reshape-of-steps": ("2d", lambda a: a[::2].reshape(3, 2, 5)),
    "ravel": ("2d", lambda a: a.ravel()),
    "dtype-int64": ("2d", lambda a: a.view(np.int64)),
    "dtype-bytes": ("2d", lambda a: a.view(np.uint8)[:, 8:16]),
    "dtype-complex": ("1d", lambda a: a.view(np.complex128)[1:]),
    "field": ("struct", lambda s: s["x"]),
    "subarray-field": ("struct", lambda s: s["pos"][:, 1]),
    "nested-field": ("struct", lambda s: s["inner"]["a"][::-1]),
    "multi-field": ("struct", lambda s: s[["x", "inner"]]),
    "zero-d": ("2d", lambda a: a[3:4, 4:5].reshape(())),
    "zero-d-F": ("F", lambda a: a[2:3, 5:6].reshape(())),
    "fortran": ("F", lambda a: a[1:, ::2]),
    "fortran-T": ("F", lambda a: a.T[::-1]),
}
READONLY_VIEWS = {
    "broadcast_to": ("1d", lambda y: np.broadcast_to(y, (4, 10), subok=True)),
    "broadcast-big": ("1d", lambda y: np.broadcast_to(y[:, None], (10, 200_000), subok=True)),
    "diagonal": ("2d", lambda a: a.diagonal()),
}
EMPTY_VIEWS = {
    "empty-rows": ("2d", lambda a: a[2:2]),
    "empty-cols": ("2d", lambda a: a[:, 5:5]),
    "empty-at-end": ("2d", lambda a: a[6:]),
    "empty-reversed": ("2d", lambda a: a[::-1][6:]),
    "empty-reshape": ("3d", lambda a: a[:, :0].reshape(0, 4)),
}


def _target(w: np.ndarray) -> np.ndarray:
    """The part of `w` to write numbers to (a field for structured views)."""
    return w[w.dtype.names[0]] if w.dtype.names else w


def _marker(w: np.ndarray) -> np.ndarray:
    t = _target(w)
    return (-(np.arange(t.size) + 1) * 3).reshape(t.shape).astype(t.dtype)


@pytest.fixture(params=["anonymous", "named"])
def bases(request):
    if request.param == "named":
        return make_bases(request.getfixturevalue("more_names"))
    return make_bases()


def _handle(v: np.ndarray) -> bytes:
    data = pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < 1024, f"view pickled as {len(data)} bytes, not as a handle"
    return data


@pytest.mark.parametrize("kind", list(VIEWS))
def test_view_unpickles_to_same_memory(bases, kind):
    base_name, take = VIEWS[kind]
    a = bases[base_name]
    v = take(a)
    assert type(v) is ndshm.SharedArray and np.shares_memory(v, a), "the test's view must be a view"
    before = np.array(a, copy=True)

    w = pickle.loads(_handle(v))
    assert type(w) is ndshm.SharedArray
    assert w.shape == v.shape and w.strides == v.strides and w.dtype == v.dtype
    assert np.array_equal(np.asarray(w), np.asarray(v))
    assert w.flags.writeable
    assert np.shares_memory(w, a)
    assert w.__array_interface__["data"][0] == v.__array_interface__["data"][0]

    m = _marker(w)
    _target(w)[...] = m
    assert np.array_equal(_target(v), m), "a write through the unpickled view shows in the original"
    assert not np.array_equal(np.asarray(a), before)


@pytest.mark.parametrize("kind", list(READONLY_VIEWS))
def test_readonly_views_unpickle_readonly(bases, kind):
    base_name, take = READONLY_VIEWS[kind]
    a = bases[base_name]
    v = take(a)
    assert type(v) is ndshm.SharedArray and not v.flags.writeable

    w = pickle.loads(_handle(v))
    assert type(w) is ndshm.SharedArray
    assert w.shape == v.shape and w.strides == v.strides
    assert np.array_equal(np.asarray(w), np.asarray(v))
    assert not w.flags.writeable
    with pytest.raises(ValueError):
        w.flat[0] = 1
    a += 100  # the original is writable: the readonly view sees its writes
    assert np.array_equal(np.asarray(w), np.asarray(v))
    assert w.flat[0] >= 100


@pytest.mark.parametrize(
    "take",
    [
        lambda y: np.lib.stride_tricks.sliding_window_view(y, 16, subok=True),
        lambda y: np.lib.stride_tricks.as_strided(y, shape=(5000,), strides=(16,), subok=True),
    ],
    ids=["sliding_window_view", "as_strided"],
)
def test_stride_tricks_views_pickle_as_handles(take):
    y = ndshm.from_array(np.arange(10_000.0))
    v = take(y)
    assert type(v) is ndshm.SharedArray and np.shares_memory(v, y)
    data = pickle.dumps(v)
    assert len(data) < 1024, f"pickled {len(data)} bytes"
    w = pickle.loads(data)
    assert type(w) is ndshm.SharedArray and np.shares_memory(w, y)


def test_broadcast_arrays_pickle_without_warnings():
    y = ndshm.from_array(np.arange(10.0))
    bx, _by = np.broadcast_arrays(y[:, None], y[:3], subok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = pickle.loads(pickle.dumps(bx))
    assert np.array_equal(w, bx) and np.shares_memory(w, y)


def test_broadcast_arrays_pickle_as_handles():
    y = ndshm.from_array(np.arange(10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        bx, _by = np.broadcast_arrays(y[:, None], ndshm.zeros(100_000)[None, :], subok=True)
        data = pickle.dumps(bx)
        assert len(data) < 1024
        w = pickle.loads(data)
    assert w.shape == (10, 100_000) and np.shares_memory(w, y)
    y[3] = -5
    assert (w[3] == -5).all()


def test_broadcast_to_without_subok_is_plain_numpy():
    # numpy's default (subok=False) returns a base ndarray; the data are what pickles.
    y = ndshm.from_array(np.arange(10.0))
    b = np.broadcast_to(y, (3, 10))
    assert type(b) is np.ndarray
    assert np.array_equal(pickle.loads(pickle.dumps(b)), b)


@pytest.mark.parametrize("kind", list(EMPTY_VIEWS))
def test_empty_views(bases, kind):
    base_name, take = EMPTY_VIEWS[kind]
    v = take(bases[base_name])
    assert v.size == 0 and type(v) is ndshm.SharedArray
    w = pickle.loads(_handle(v))
    assert type(w) is ndshm.SharedArray
    assert w.shape == v.shape and w.dtype == v.dtype


def test_zero_d_view_is_element(bases):
    a = bases["2d"]
    z = pickle.loads(_handle(a[3:4, 4:5].reshape(())))
    assert z.shape == () and z[()] == a[3, 4]
    z[()] = -99
    assert a[3, 4] == -99
    a[3, 4] = 5
    assert z[()] == 5


def test_view_of_unpickled_view_is_a_handle(bases):
    a = bases["2d"]
    w = pickle.loads(_handle(a[::-1, 2:]))
    ww = pickle.loads(_handle(w[1::2, ::-1].T))
    ww[0, 0] = 1234.0
    assert a[::-1, 2:][1::2, ::-1].T[0, 0] == 1234.0


def test_readonly_attach_views_stay_readonly(shm_name):
    a = ndshm.from_array(np.arange(40.0).reshape(4, 10), name=shm_name)
    r = ndshm.attach(shm_name, readonly=True)
    for v in (r, r[::2], r[:, ::-1].T, r[1:2, 3:4].reshape(()), r.view(np.int64), r[:, None]):
        w = pickle.loads(_handle(v))
        assert not w.flags.writeable
        with pytest.raises(ValueError):
            w[...] = 0
        with pytest.raises(ValueError):
            w.flags.writeable = True
    assert a.sum() == np.arange(40.0).sum()


def test_view_made_readonly_by_the_user_unpickles_readonly():
    a = ndshm.zeros((4, 4))
    v = a[1:]
    v.flags.writeable = False
    w = pickle.loads(_handle(v))
    assert type(w) is ndshm.SharedArray
    assert not w.flags.writeable
    a[2, 1] = 5.0
    assert w[1, 1] == 5.0  # the same memory
    assert a.flags.writeable  # the original is untouched
    # and the original's other views still unpickle writable
    assert pickle.loads(_handle(a[1:])).flags.writeable


def _readonly_alias(kind, name):
    """(a, r): a writable shared array and a read-only array of its memory
    obtained in this same process."""
    if kind == "readonly-attach":
        a = ndshm.zeros(10_000, name=name)
        return a, ndshm.attach(name, readonly=True)
    a = ndshm.zeros(10_000, name=name if kind == "named-view-handle" else None)
    v = a[:]
    v.flags.writeable = False
    return a, pickle.loads(_handle(v))


@pytest.mark.parametrize("kind", ["anonymous-view-handle", "named-view-handle", "readonly-attach"])
def test_readonly_alias_reuses_the_mapping(shm_name, kind):
    a, r = _readonly_alias(kind, shm_name)
    assert not r.flags.writeable
    a[0] = 3.0
    assert r[0] == 3.0  # the same memory, physically
    a[0] = 0.0
    # numpy must see the aliasing, or overlapping ufuncs compute garbage:
    np.add(r[:-1], 1.0, out=a[1:])
    assert a.max() == 1.0, f"overlap undetected: max {a.max()}"
    assert np.shares_memory(r, a)


# --------------------------------------------------------------------------
# in another process


def _reap(p, timeout: float = 30) -> None:
    """Joins a child this test started; kills it (by pid) if it hangs."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(10)


def _child_write_markers(conn):
    """Receives (kind, view) pairs; writes a marker to writable ones and
    reports what it saw."""
    out = {}
    while True:
        msg = conn.recv()
        if msg is None:
            break
        kind, w = msg
        t = _target(w)
        entry = {
            "type": type(w).__name__,
            "shape": w.shape,
            "strides": w.strides,
            "dtype": w.dtype,
            "writeable": w.flags.writeable,
            "sum": float(np.sum(t)),
        }
        if w.flags.writeable and w.size:
            t[...] = _marker(w)
        else:
            try:
                w.flags.writeable = True
                entry["could_make_writable"] = True
            except ValueError:
                entry["could_make_writable"] = False
        out[kind] = entry
    conn.send(out)
    conn.close()


def test_views_in_spawned_child(more_names):
    kinds = {**VIEWS, **READONLY_VIEWS, **EMPTY_VIEWS}
    sent = {}
    for named in (False, True):
        for kind, (base_name, take) in kinds.items():
            base = make_bases(more_names if named else None)[base_name]  # its own memory
            sent[(kind, named)] = (base, take(base))
    ro_name = more_names()
    ndshm.from_array(np.arange(12.0), name=ro_name)
    ro = ndshm.attach(ro_name, readonly=True)
    sent[("readonly-attach", True)] = (ro, ro[::3])

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_write_markers, args=(child,))
    p.start()
    try:
        child.close()
        for key, (_, v) in sent.items():
            parent.send((key, v))
        parent.send(None)
        got = parent.recv()
    finally:
        _reap(p)
    assert p.exitcode == 0

    assert set(got) == set(sent)
    for key, (_base, v) in sent.items():
        e = got[key]
        assert e["type"] == "SharedArray", key
        assert (e["shape"], e["strides"], e["dtype"]) == (v.shape, v.strides, v.dtype), key
        assert e["writeable"] == v.flags.writeable, key
        if e["writeable"] and v.size:
            assert np.array_equal(_target(v), _marker(v)), key
        else:
            assert e["sum"] == float(np.sum(_target(v))), key
            assert not e["could_make_writable"] or v.size == 0, key


def _child_addresses(conn):
    """Unpickles several messages holding views of one segment; reports each
    view's address minus its offset (the mapping's base) and shares_memory."""
    views = [conn.recv() for _ in range(3)]
    name = conn.recv()
    bases = [w.__array_interface__["data"][0] - off for w, off in views]
    shares = [bool(np.shares_memory(views[0][0], w)) for w, _ in views[1:]]
    attached = None
    if name is not None:
        b = ndshm.attach(name)
        attached = b.__array_interface__["data"][0]
    conn.send((bases, shares, attached))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_child_maps_a_segment_once(shm_name, method):
    named = ndshm.from_array(np.arange(100.0).reshape(10, 10), name=shm_name)
    anon = ndshm.from_array(np.arange(100.0).reshape(10, 10))
    ctx = multiprocessing.get_context(method)
    for a, name in ((named, shm_name), (anon, None)):
        start = a.__array_interface__["data"][0]

        def off(v, start=start):
            return v.__array_interface__["data"][0] - start

        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child_addresses, args=(child,))
        p.start()
        try:
            child.close()
            for v in (a[:3], a[2:, ::-1], a.T[5:]):  # each overlaps the first
                parent.send((v, off(v)))  # separate messages, separate unpickles
            parent.send(name)
            bases, shares, attached = parent.recv()
        finally:
            _reap(p)
        assert p.exitcode == 0
        assert len(set(bases)) == 1, f"the child mapped the segment more than once: {bases}"
        assert all(shares)
        if name is not None:
            assert attached == bases[0], "attach() reuses the mapping unpickling made"


def test_same_process_reuses_the_mapping(shm_name):
    a = ndshm.from_array(np.arange(20.0), name=shm_name)
    addr = a.__array_interface__["data"][0]
    b = ndshm.attach(shm_name)
    assert b.__array_interface__["data"][0] == addr
    w = pickle.loads(pickle.dumps(a[5:]))
    assert w.__array_interface__["data"][0] == addr + 5 * 8
    anon = ndshm.zeros(7)
    w2 = pickle.loads(pickle.dumps(anon[::-1]))
    assert w2.__array_interface__["data"][0] == anon[::-1].__array_interface__["data"][0]


def _child_readonly_then_writable(conn):
    ro = conn.recv()
    rw = conn.recv()
    ok = (not ro.flags.writeable) and rw.flags.writeable
    if rw.flags.writeable:
        rw[...] = 42.0
    conn.send((ok, ro.flags.writeable, rw.flags.writeable))


@pytest.mark.parametrize("kind", ["anonymous", "named"])
def test_child_gets_readonly_then_writable_handle(shm_name, kind):
    a = ndshm.zeros(16, name=shm_name if kind == "named" else None)
    ro = a[:8]
    ro.flags.writeable = False
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_readonly_then_writable, args=(child,))
    p.start()
    try:
        child.close()
        parent.send(ro)
        parent.send(a[8:])
        ok, ro_w, rw_w = parent.recv()
    finally:
        _reap(p)
    assert p.exitcode == 0
    assert (ro_w, rw_w) == (False, True) and ok
    assert (a[8:] == 42).all() and (a[:8] == 0).all()


# --------------------------------------------------------------------------
# derived arrays are private


@pytest.fixture
def big():
    return ndshm.from_array(np.arange(1.0, 80_001.0).reshape(200, 400))  # 640 KB


DERIVED = {
    "a+1": lambda a: a + 1,
    "a*a": lambda a: a * a,
    "-a": lambda a: -a,
    "sqrt": np.sqrt,
    "sum-axis0": lambda a: a.sum(axis=0),
    "mean-axis1": lambda a: a.mean(axis=1),
    "cumsum": lambda a: a.cumsum(axis=0),
    "copy": lambda a: a.copy(),
    "copy-F": lambda a: a.copy(order="F"),
    "astype": lambda a: a.astype(np.float32),
    "astype-same": lambda a: a.astype(np.float64),
    "flatten": lambda a: a.flatten(),
    "np.copy": np.copy,
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "np.array": np.array,
    "where": lambda a: np.where(a > 3, a, 0),
    "concatenate": lambda a: np.concatenate([a, a]),
    "matmul": lambda a: a[:, :200] @ a[:200],
    "T+0": lambda a: a.T + 0,
    "view-arith": lambda a: a[::2, 1:] * 2,
}


@pytest.mark.parametrize("kind", list(DERIVED))
def test_derived_arrays_are_plain_and_pickle_data(big, kind):
    r = DERIVED[kind](big)
    assert type(r) is np.ndarray, f"{kind} gave {type(r).__name__}"
    assert not np.shares_memory(r, big)
    data = pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL)
    assert r.nbytes <= len(data) <= r.nbytes + 1024, "a private array pickles its data"
    back = pickle.loads(data)
    assert type(back) is np.ndarray and np.array_equal(back, r)


def test_reductions_to_scalars(big):
    s = big.sum()
    assert not isinstance(s, np.ndarray) and s == np.arange(1.0, 80_001.0).sum()
    assert type(big.max(keepdims=True)) is np.ndarray


def test_fancy_index_results_pickle_data(big):
    # Fancy and boolean indexing copy: whatever the type, it pickles as data.
    for r in (big[[0, 5, 7]], big[big > 79_000], big[:, [1, 2]]):
        assert not np.shares_memory(r, big)
        data = pickle.dumps(r)
        assert len(data) >= r.nbytes
        assert np.array_equal(pickle.loads(data), r)
        r[...] = 0  # private
    assert big.min() == 1.0


def test_in_place_ops_stay_shared():
    a = ndshm.from_array(np.arange(1.0, 11.0))
    alias = pickle.loads(pickle.dumps(a))  # another view of the same memory
    ident = id(a)

    a += 1
    assert id(a) == ident and type(a) is ndshm.SharedArray
    assert np.array_equal(alias, np.arange(2.0, 12.0))

    r = np.add(a, 1, out=a)
    assert r is a and type(r) is ndshm.SharedArray
    assert np.array_equal(alias, np.arange(3.0, 13.0))

    v = a[::2]
    v *= 2
    assert type(v) is ndshm.SharedArray
    assert alias[0] == 6.0 and alias[1] == 4.0

    expected = np.sqrt(np.array(a))
    r = np.sqrt(a, out=a)
    assert r is a and np.array_equal(alias, expected)

    r2 = np.multiply(np.ones(10), 7.0, out=a)  # a plain input, a shared out
    assert r2 is a and (alias == 7.0).all()

    (r3,) = np.divmod(a, 2.0, out=(a, ndshm.empty(10)))[:1]
    assert r3 is a and (alias == 3.0).all()
    data = pickle.dumps(a)
    assert len(data) < 1024 and pickle.loads(data) is not a


# --------------------------------------------------------------------------
# lifetime


def test_view_outlives_name_and_original(shm_name):
    a = ndshm.from_array(np.arange(1000.0), name=shm_name)
    v = a[10:20]
    w = pickle.loads(pickle.dumps(a[::-100]))
    ndshm.delete(shm_name)
    assert not ndshm.exists(shm_name)
    del a
    gc.collect()
    assert np.array_equal(v, np.arange(10.0, 20.0))
    v[...] = -1
    assert w[-1] == 99.0 and w[0] == 999.0
    # The handle of a deleted segment still unpickles here: the mapping is alive.
    u = pickle.loads(pickle.dumps(v[::2]))
    u[0] = 5
    assert v[0] == 5
    del v, w
    gc.collect()
    assert u.sum() == 5 - 4


def test_anonymous_view_outlives_original():
    a = ndshm.from_array(np.arange(100, dtype=np.int64).reshape(10, 10))
    v = a[2:4, ::-1]
    del a
    gc.collect()
    assert v[0, 0] == 29
    v[...] = 7
    w = pickle.loads(pickle.dumps(v.T))
    assert type(w) is ndshm.SharedArray and np.shares_memory(w, v)
    del v
    gc.collect()
    assert (w == 7).all() and w.shape == (10, 2)


def test_handle_outlives_the_array():
    # The sender drops the array right after pickling: the handle still works.
    data = pickle.dumps(ndshm.from_array(np.arange(50.0))[5::5])
    gc.collect()
    assert len(data) < 1024
    w = pickle.loads(data)
    assert type(w) is ndshm.SharedArray
    assert np.array_equal(w, np.arange(5.0, 50.0, 5.0))
    w[0] = -1
    assert w[0] == -1
