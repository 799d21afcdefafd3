"""ndshm.blocks and Pool.map_blocks: dask-style chunks, broadcasting, the
shared `out`, block_id / block_info, the ufunc path."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from procwatch import wait_for

import ndshm

WORKERS = 2


@pytest.fixture(scope="module")
def pool():
    with ndshm.Pool(workers=WORKERS) as p:
        yield p


def coverage(shape, chunks) -> np.ndarray:
    """How many times ndshm.blocks(shape, chunks) covers each element."""
    seen = np.zeros(shape, dtype=np.int64)
    for sl in ndshm.blocks(shape, chunks):
        assert isinstance(sl, tuple) and len(sl) == len(shape)
        assert all(isinstance(s, slice) and s.step in (None, 1) for s in sl)
        assert seen[sl].size > 0 or 0 in shape
        seen[sl] += 1
    return seen


# -- ndshm.blocks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks", "count"),
    [
        ((10,), 3, 4),
        ((10,), (3,), 4),
        ((10,), -1, 1),
        ((10,), (None,), 1),
        ((10,), ((2, 3, 5),), 3),
        ((7, 5), 2, 4 * 3),
        ((7, 5), (3, -1), 3),
        ((7, 5), (None, 1), 5),
        ((7, 5), ((1, 6), (2, 2, 1)), 6),
        ((7, 5), (7, 5), 1),
        ((7, 5), (100, 100), 1),
        ((4, 3, 2), (3, 2, 1), 2 * 2 * 2),
        ((4, 3, 2), ((4,), (1, 1, 1), None), 3),
    ],
)
def test_blocks_cover_the_shape_exactly_once(shape, chunks, count):
    assert len(list(ndshm.blocks(shape, chunks))) == count
    assert (coverage(shape, chunks) == 1).all()


def test_blocks_explicit_slices_in_c_order():
    assert list(ndshm.blocks((5, 4), ((2, 3), (3, 1)))) == [
        (slice(0, 2), slice(0, 3)),
        (slice(0, 2), slice(3, 4)),
        (slice(2, 5), slice(0, 3)),
        (slice(2, 5), slice(3, 4)),
    ]
    assert list(ndshm.blocks(5, 2)) == [(slice(0, 2),), (slice(2, 4),), (slice(4, 5),)]


def test_blocks_default_chunks_cover_a_big_shape():
    shape = (3000, 1000)  # 24 MB of float64: more than one default block
    blocks = list(ndshm.blocks(shape))
    assert len(blocks) > 1
    assert (coverage(shape, None) == 1).all()


@pytest.mark.parametrize(
    "chunks",
    [
        (2, 2, 2),  # three axes for a 2-d shape
        (2,),  # one axis for a 2-d shape
        ((1, 1), (5,)),  # sizes not adding up to the axis
        ((4, 4), (5,)),  # more than the axis
        ((4,), (2, 2)),  # less than the axis
        0,
        -2,
        (2, 0),
        (3, -3),
        ((4,), (5, 0)),
        "ab",
    ],
)
def test_blocks_reject_chunks_that_do_not_fit(chunks):
    with pytest.raises(ValueError):
        list(ndshm.blocks((4, 5), chunks))


# -- map_blocks ----------------------------------------------------------------

Y, X = np.arange(7.0), np.arange(1.0, 6.0)
OUTER = Y[:, None] * X[None, :]


@pytest.mark.parametrize(
    "chunks",
    [
        None,
        2,
        (3, 2),
        (-1, 2),
        (3, None),
        (None, -1),
        ((1, 6), (2, 2, 1)),
        ((3, 3, 1), -1),
        (100, 100),
    ],
    ids=repr,
)
def test_map_blocks_broadcasts_and_chunks(pool, chunks):
    r = pool.map_blocks(lambda y, x: y * x, Y[:, None], X[None, :], chunks=chunks)
    assert isinstance(r, ndshm.SharedArray)
    assert r.shape == (7, 5) and r.dtype == np.float64
    np.testing.assert_array_equal(r, OUTER)


def test_map_blocks_calls_fn_once_per_block_with_its_block(pool):
    calls = ndshm.zeros((3, 3), dtype=np.int64)  # blocks of (3, 2) on (7, 5): 3 x 3

    def fn(y, x, block_id=None):
        calls[block_id] += 1
        assert y.shape == x.shape == ((3, 3, 1)[block_id[0]], (2, 2, 1)[block_id[1]])
        return y * x

    r = pool.map_blocks(fn, Y[:, None], X[None, :], chunks=(3, 2))
    np.testing.assert_array_equal(r, OUTER)
    assert (calls == 1).all()


def test_map_blocks_writes_a_shared_out_in_place(pool):
    out = ndshm.zeros((7, 5))
    view = out[2:, 1:]  # the parent's view sees the workers' writes: no copy back
    r = pool.map_blocks(lambda y, x: y * x, Y[:, None], X[None, :], chunks=2, out=out)
    assert r is out
    np.testing.assert_array_equal(out, OUTER)
    np.testing.assert_array_equal(view, OUTER[2:, 1:])


def test_map_blocks_writes_a_strided_view_of_a_shared_array(pool):
    base = ndshm.full((14, 5), -1.0)
    out = base[::2]
    r = pool.map_blocks(np.multiply, Y[:, None], X[None, :], chunks=(3, 2), out=out)
    assert r is out
    np.testing.assert_array_equal(base[::2], OUTER)
    assert (base[1::2] == -1.0).all()  # the rows between were left alone


def test_map_blocks_out_allocated_with_the_given_dtype(pool):
    r = pool.map_blocks(lambda a: a * 2, np.arange(10, dtype=np.int16), chunks=3, dtype=np.int64)
    assert isinstance(r, ndshm.SharedArray) and r.dtype == np.int64
    np.testing.assert_array_equal(r, np.arange(10) * 2)


def test_map_blocks_casts_into_a_wider_out(pool):
    out = ndshm.zeros(10, dtype=np.float64)
    pool.map_blocks(lambda a: a + 1, np.arange(10, dtype=np.int32), chunks=4, out=out)
    np.testing.assert_array_equal(out, np.arange(10) + 1.0)


def test_map_blocks_block_id_and_block_info(pool):
    shape = (7, 5)

    def fn(a, block_id, block_info):
        info = block_info[None]
        (r0, r1), (c0, c1) = info["array-location"]
        assert info["shape"] == shape
        assert info["num-chunks"] == (3, 3)
        assert tuple(info["chunk-location"]) == tuple(block_id)
        assert tuple(info["chunk-shape"]) == a.shape == (r1 - r0, c1 - c0)
        assert block_info[0]["array-location"] == info["array-location"]
        # Each element: where it is in the whole array, and which block it is in.
        rows = np.arange(r0, r1)[:, None] * 100 + np.arange(c0, c1)[None, :]
        return rows * 100 + block_id[0] * 10 + block_id[1]

    r = pool.map_blocks(fn, np.zeros(shape), chunks=((3, 3, 1), (2, 2, 1)), dtype=np.int64)
    i, j = np.indices(shape)
    bi = np.searchsorted([3, 6], i, side="right")
    bj = np.searchsorted([2, 4], j, side="right")
    np.testing.assert_array_equal(r, (i * 100 + j) * 100 + bi * 10 + bj)


def test_map_blocks_passes_keywords_only_when_accepted(pool):
    got_id = pool.map_blocks(lambda a, block_id: np.full(a.shape, block_id[0]), np.zeros(6), chunks=2)
    np.testing.assert_array_equal(got_id, [0, 0, 1, 1, 2, 2])
    got_kw = pool.map_blocks(lambda a, **kw: np.full(a.shape, len(kw)), np.zeros(6), chunks=2)
    np.testing.assert_array_equal(got_kw, [2] * 6)  # **kwargs takes both
    plain = pool.map_blocks(lambda a: a + 1, np.zeros(6), chunks=2)
    np.testing.assert_array_equal(plain, [1] * 6)


def test_map_blocks_ufunc(pool):
    r = pool.map_blocks(np.multiply, Y[:, None], X[None, :], chunks=(2, 2))
    np.testing.assert_array_equal(r, OUTER)
    out = ndshm.zeros((7, 5), dtype=np.int64)
    ints = np.arange(7)[:, None], np.arange(5)[None, :]
    assert pool.map_blocks(np.add, *ints, chunks=3, out=out) is out
    np.testing.assert_array_equal(out, ints[0] + ints[1])


def test_map_blocks_with_shared_and_plain_inputs(pool):
    shared = ndshm.from_array(np.arange(12.0).reshape(3, 4))
    plain = np.arange(12.0).reshape(3, 4)[:, ::-1]  # a non-contiguous, private array
    r = pool.map_blocks(lambda a, b: a - b, shared, plain, chunks=(1, 2))
    np.testing.assert_array_equal(r, shared - plain)
    r = pool.map_blocks(lambda a: a * 2, [[1, 2], [3, 4]], chunks=1)  # nested lists
    np.testing.assert_array_equal(r, [[2, 4], [6, 8]])


def test_map_blocks_3d(pool):
    a = np.arange(60.0).reshape(3, 4, 5)
    b = np.arange(5.0)
    r = pool.map_blocks(lambda p, q: p + q, a, b, chunks=(2, (1, 3), -1))
    np.testing.assert_array_equal(r, a + b)


def test_map_blocks_a_result_that_broadcasts_to_the_block(pool):
    r = pool.map_blocks(lambda a: a.sum(axis=1, keepdims=True), np.ones((4, 6)), chunks=(2, 3))
    np.testing.assert_array_equal(r, np.full((4, 6), 3.0))


def test_map_blocks_every_block_once_over_many_blocks(pool):
    n = 1000
    r = pool.map_blocks(lambda a, block_id: a + block_id[0], np.zeros(n, dtype=np.int64), chunks=1)
    assert r.tolist() == list(range(n))
    counts = ndshm.zeros(n, dtype=np.int64)

    def count(a, block_id):
        counts[block_id[0]] += 1
        return a

    pool.map_blocks(count, np.zeros(n), chunks=1)
    assert (counts == 1).all()


def test_map_blocks_matches_blocks(pool):
    shape, chunks = (9, 4), ((2, 5, 2), (1, 3))
    slices = list(ndshm.blocks(shape, chunks))

    def where(a, block_info):
        (r0, _), (c0, _) = block_info[None]["array-location"]
        return np.full(a.shape, r0 * 10 + c0)

    r = pool.map_blocks(where, np.zeros(shape), chunks=chunks, dtype=np.int64)
    for sl, idx in zip(slices, itertools.count()):
        assert (r[sl] == sl[0].start * 10 + sl[1].start).all(), idx


def _mapped_sizes(pid: int) -> list[int]:
    """Sizes of the mappings of anonymous segments in process `pid` (memfds,
    and unnamed files of ndshm's private tmpfs: "/#INODE (deleted)")."""
    sizes = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
            if path.startswith(("/memfd:", "/#")):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                sizes.append(hi - lo)
    return sizes


def test_workers_keep_an_out_the_caller_holds_and_drop_one_it_let_go():
    # Its own pool: the workers' mappings must not depend on other tests.
    with ndshm.Pool(workers=WORKERS) as pool:
        y = ndshm.from_array(np.arange(512.0))
        x = ndshm.from_array(np.arange(1024.0))
        out = pool.map_blocks(np.multiply, y[:, None], x[None, :], chunks=(16, -1))
        big = out.nbytes  # 4 MiB: no other mapping of ndshm's has this size
        assert np.array_equal(out, np.multiply.outer(y, x))

        def sizes():
            return [s for pid in pool.pids for s in _mapped_sizes(pid) if big <= s < big + 3 * 4096]

        # (A worker that claimed no block never mapped it.)
        mapped = len(sizes())
        assert 1 <= mapped <= WORKERS
        pool.map(abs, range(4))  # another job retires the map_blocks one
        time.sleep(0.2)
        assert len(sizes()) == mapped, "the workers keep the out the caller holds"
        del out
        assert wait_for(lambda: not sizes(), 3.0), "workers let go of an out the caller dropped"


def test_lazy_arrays_are_populated_before_they_are_written():
    from ndshm.arrays import empty_lazy, populate

    a = empty_lazy((64, 1024))
    assert isinstance(a, ndshm.SharedArray)
    seg = ndshm.handles.segment_of(a)
    for block in ndshm.blocks(a.shape, (16, 256)):
        populate(a[block])
        a[block] = 7.0
    assert (a == 7.0).all()
    populate(a[::-3, 5])  # strided views: their byte span
    with pytest.raises(ValueError, match="outside"):
        seg.populate(0, a.nbytes + 1)
    with pytest.raises(ValueError, match="lazy"):
        ndshm._native.create("'<f8'", [4], False, "x", None, True)
