"""map_overlap (Pool method, module function, on a Dask client) against
scipy.ndimage on the whole array and against dask.array.map_overlap;
keyword arguments reaching fn in map_blocks and map_overlap; the keywords
ndshm keeps for itself; numba @vectorize blocks writing straight into out."""

from __future__ import annotations

import functools
import tracemalloc
import warnings

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import ndshm
from ndshm.blocks import normalize_chunks, plan_blocks
from ndshm.handles import segment_of
from ndshm.overlap import plan_overlap

WORKERS = 2
# dask's boundary and the scipy.ndimage mode that extends an array the same way
MODES = [("reflect", "reflect"), ("nearest", "nearest"), ("periodic", "wrap"), (0.0, "constant")]


@pytest.fixture(scope="module")
def pool():
    with ndshm.Pool(workers=WORKERS) as p:
        yield p


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(15)
    return ndshm.from_array(rng.standard_normal((173, 141)))


def cumulative(b):
    """Depends on every element of the block and on its shape: equal results
    mean equal blocks and halos."""
    return np.cumsum(np.cumsum(b, axis=0), axis=-1)


# --------------------------------------------------------------------------
# bit-identical to the filter over the whole array


@pytest.mark.parametrize("boundary,mode", MODES)
def test_gaussian_matches_whole_array(pool, image, boundary, mode):
    want = ndi.gaussian_filter(image, 2.5, mode=mode)  # radius 10
    got = pool.map_overlap(
        ndi.gaussian_filter, image, depth=10, boundary=boundary, chunks=(40, 47), sigma=2.5, mode=mode
    )
    assert isinstance(got, ndshm.SharedArray)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror"])
def test_boundary_none_leaves_the_edges_to_fn(pool, image, mode):
    """With boundary='none' the edge blocks see the array's own edge, so the
    filter's mode applies there, as on the whole array."""
    want = ndi.gaussian_filter(image, 1.0, mode=mode)
    got = pool.map_overlap(
        ndi.gaussian_filter, image, depth=4, chunks=(30, (50, 41, 50)), sigma=1.0, mode=mode
    )
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("boundary,mode", [*MODES, ("none", "mirror")])
def test_uniform_matches_whole_array(pool, boundary, mode):
    """uniform_filter keeps a running sum along each line, so in floating
    point its last bits depend on where a line starts; on integers and a
    power-of-two size every step is exact, and the halos give the very
    same result."""
    rng = np.random.default_rng(5)
    a = ndshm.from_array(rng.integers(-1000, 1000, size=(90, 77)).astype(np.float64))
    want = ndi.uniform_filter(a, size=8, mode=mode)
    got = pool.map_overlap(
        ndi.uniform_filter, a, depth=4, boundary=boundary, chunks=(20, 22), size=8, mode=mode
    )
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("boundary,mode", MODES)
def test_median_matches_whole_array(pool, image, boundary, mode):
    want = ndi.median_filter(image, size=(5, 3), mode=mode)
    got = pool.map_overlap(
        ndi.median_filter, image, depth=(2, 1), boundary=boundary, chunks=(17, 23), size=(5, 3), mode=mode
    )
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("boundary,mode", MODES)
def test_convolve_3d_matches_whole_array(pool, boundary, mode):
    rng = np.random.default_rng(3)
    vol = ndshm.from_array(rng.integers(-50, 50, size=(21, 30, 26)).astype(np.int64))
    weights = rng.integers(-3, 4, size=(3, 5, 3))
    want = ndi.convolve(vol, weights, mode=mode)
    got = ndshm.map_overlap(
        ndi.convolve, vol, weights=weights, depth={0: 1, 1: 2, 2: 1}, boundary=boundary, chunks=(7, 10, 9),
        mode=mode, executor=pool,
    )  # fmt: skip
    np.testing.assert_array_equal(got, want)


def test_module_function_starts_its_own_pool(image):
    want = ndi.gaussian_filter(image, 1.5, mode="nearest")
    got = ndshm.map_overlap(
        functools.partial(ndi.gaussian_filter, sigma=1.5, mode="nearest"),
        image,
        depth=6,
        boundary="nearest",
        workers=WORKERS,
    )
    np.testing.assert_array_equal(got, want)


def test_default_chunks_fit_the_depth(pool):
    """Without chunks, blocks are made long enough for the halo (map_blocks'
    default would give blocks thinner than the depth here)."""
    a = ndshm.from_array(np.random.default_rng(1).standard_normal((40, 100_000)))
    assert min(normalize_chunks(None, a.shape)[0]) < 16
    want = ndi.gaussian_filter(a, 4, mode="reflect")
    got = pool.map_overlap(ndi.gaussian_filter, a, depth=16, boundary="reflect", sigma=4)
    np.testing.assert_array_equal(got, want)
    runner, _ = plan_overlap(
        np.negative, (a,), None, None, None, {}, 16, "reflect", True, lambda s, i: 1 << 20
    )
    assert len(runner.grid[1]) > 1
    assert all(min(sizes) >= 16 for sizes in runner.grid)


# --------------------------------------------------------------------------
# dask's meaning of depth, boundary and trim


def dask_overlap(fn, a, chunks, **kw):
    with dask.config.set(scheduler="synchronous"):
        return da.map_overlap(fn, da.from_array(np.asarray(a), chunks=chunks), dtype=a.dtype, **kw).compute()


@pytest.mark.parametrize(
    "depth,boundary",
    [
        (1, "reflect"),
        (3, "nearest"),
        (2, "periodic"),
        (2, "none"),
        (2, None),
        (2, -7),
        ((3, 0), "reflect"),
        ({1: 2}, "periodic"),
        ({0: 1, 1: 3}, {0: 100, 1: "reflect"}),
        ({0: 2, 1: 1}, ("periodic", "nearest")),
        ({0: (1, 3), 1: (2, 0)}, "none"),
    ],
)
def test_blocks_and_halos_are_dasks(pool, depth, boundary):
    a = ndshm.from_array(np.arange(23 * 17, dtype=np.int64).reshape(23, 17) % 11)
    chunks = ((5, 6, 4, 8), (4, 9, 4))
    want = dask_overlap(cumulative, a, chunks, depth=depth, boundary=boundary)
    got = pool.map_overlap(cumulative, a, depth=depth, boundary=boundary, chunks=chunks)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("boundary", ["reflect", "periodic", 5])
def test_trim_false_fn_trims_itself(pool, boundary):
    a = ndshm.from_array(np.arange(20 * 12, dtype=np.int64).reshape(20, 12) % 7)

    def laplace(b):
        return 4 * b[1:-1, 1:-1] - b[:-2, 1:-1] - b[2:, 1:-1] - b[1:-1, :-2] - b[1:-1, 2:]

    want = dask_overlap(laplace, a, (6, 5), depth=1, boundary=boundary, trim=False)
    got = pool.map_overlap(laplace, a, depth=1, boundary=boundary, chunks=(6, 5), trim=False)
    np.testing.assert_array_equal(got, want)


def test_asymmetric_depth_with_padding(pool):
    """dask allows (before, after) depths only with boundary='none'; here
    they work with every boundary: the reference pads the whole array."""
    a = ndshm.from_array(np.arange(19 * 13, dtype=np.int64).reshape(19, 13) % 9)
    depth = {0: (2, 1), 1: (0, 3)}
    modes = {"reflect": "symmetric", "nearest": "edge", "periodic": "wrap"}
    for boundary, np_mode in modes.items():
        padded = np.pad(np.asarray(a), [(2, 1), (0, 3)], mode=np_mode)
        want = np.empty_like(a)
        for sl in ndshm.blocks(a.shape, (5, (4, 5, 4))):
            ext = tuple(slice(s.start, s.stop + d[0] + d[1]) for s, d in zip(sl, depth.values()))
            res = cumulative(padded[ext])
            want[sl] = res[tuple(slice(d[0], d[0] + s.stop - s.start) for s, d in zip(sl, depth.values()))]
        got = pool.map_overlap(cumulative, a, depth=depth, boundary=boundary, chunks=(5, (4, 5, 4)))
        np.testing.assert_array_equal(got, want, err_msg=boundary)


def test_several_arrays_broadcast(pool):
    rng = np.random.default_rng(7)
    x = ndshm.from_array(rng.standard_normal((40, 30)))
    y = ndshm.from_array(rng.standard_normal(30))
    want = ndi.gaussian_filter(np.asarray(x) + y, 1.5, mode="nearest")

    def smooth_sum(p, q, sigma):
        return ndi.gaussian_filter(p + q, sigma, mode="nearest")

    got = pool.map_overlap(smooth_sum, x, y[None, :], depth=6, boundary="nearest", chunks=(10, 12), sigma=1.5)
    np.testing.assert_array_equal(got, want)


def test_out_dtype_and_one_dimension(pool):
    a = ndshm.from_array(np.arange(50, dtype=np.int32))
    out = ndshm.zeros(50, dtype=np.float64)
    got = pool.map_overlap(
        lambda b: b[2:] - b[:-2], a, depth=1, boundary="nearest", chunks=7, out=out, trim=False
    )
    assert got is out
    want = np.convolve(np.pad(np.asarray(a), 1, mode="edge"), [1, 0, -1], mode="valid")
    np.testing.assert_array_equal(out, want)
    empty = pool.map_overlap(np.negative, ndshm.zeros((0, 4)), depth=2, boundary="reflect")
    assert empty.shape == (0, 4)


def test_block_id_and_kwargs(pool):
    a = ndshm.zeros((9, 8), dtype=np.int64)

    def mark(b, block_id=None, scale=1):
        return np.full(b.shape, scale * (10 * block_id[0] + block_id[1]))

    got = pool.map_overlap(mark, a, depth=1, boundary="reflect", chunks=(3, 4), scale=2)
    want = 2 * (10 * (np.arange(9)[:, None] // 3) + np.arange(8)[None, :] // 4)
    np.testing.assert_array_equal(got, want)


def test_halos_are_views_of_the_shared_input(pool):
    """Interior blocks (and, with boundary='none', every block) reach fn as
    views of the shared input; only edge blocks padded by the boundary are
    copies, made in the worker. The job holds handles, not data."""
    a = ndshm.from_array(np.ones((64, 64)))

    def shared(b):
        return np.full(b.shape, segment_of(b) is not None)

    got = pool.map_overlap(shared, a, depth=2, boundary="none", chunks=16)
    assert got.all()
    got = pool.map_overlap(shared, a, depth=2, boundary="reflect", chunks=16)
    edge = np.ones((64, 64), bool)
    edge[16:48, 16:48] = False
    np.testing.assert_array_equal(got, ~edge)
    big = ndshm.empty((4096, 1024))  # 32 MiB
    runner, _ = plan_overlap(shared, (big,), 256, None, None, {}, 8, "reflect", True, None)
    assert len(cloudpickle.dumps(runner)) < 4096


def test_fn_error_names_map_overlap_and_the_block(pool, image):
    def fail(b, block_id=None):
        if block_id == (1, 2):
            raise ZeroDivisionError("boom")
        return b

    with pytest.raises(ZeroDivisionError, match="boom"):
        pool.map_overlap(fail, image, depth=1, chunks=(50, 40))
    with pytest.raises(ValueError, match=r"fn returned shape \(3, 3\).*with its halo"):
        pool.map_overlap(lambda b: np.zeros((3, 3)), image, depth=1, chunks=(50, 40))


# --------------------------------------------------------------------------
# bad input: ValueError naming the axis, before any work starts


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=11, chunks=(10, 20)), "depth 11 on axis 0 is larger than its smallest block"),
        (dict(depth={1: (0, 9)}, chunks=(10, (20, 8, 20))), "depth 9 on axis 1"),
        (dict(depth=1, boundary="mirror"), "boundary 'mirror' on axis 0 is not one of"),
        (dict(depth=1, boundary={1: "wrap"}), "boundary 'wrap' on axis 1"),
        (dict(depth=1, boundary=("reflect", [0])), "boundary on axis 1 must be"),
        (dict(depth=1, boundary={0: np.nan}), "boundary nan on axis 0 does not fit the inputs' dtype int64"),
        (dict(depth=1, boundary={1: 2**70}), "boundary 1180591620717411303424 on axis 1 does not fit"),
        (dict(depth=-1), "depth on axis 0 must not be negative"),
        (dict(depth=(1, 2, 3)), "has 3 entries, the arrays 2 axes"),
        (dict(depth={2: 1}), "depth names axis 2"),
        (dict(depth=1.5), "depth on axis 0 must be an int"),
        (dict(depth=[1, 1]), "one depth for all the arrays"),
    ],
)
def test_bad_depth_or_boundary(pool, kwargs, match):
    a = ndshm.from_array(np.arange(30 * 48, dtype=np.int64).reshape(30, 48))
    touched = ndshm.zeros(1, dtype=np.int64)

    def fn(b):
        touched[0] = 1
        return b

    with pytest.raises(ValueError, match=match):
        pool.map_overlap(fn, a, **kwargs)
    with pytest.raises(ValueError, match=match):
        ndshm.map_overlap(fn, a, workers=1, **kwargs)
    assert touched[0] == 0


# --------------------------------------------------------------------------
# keyword arguments reach fn; ndshm's own keywords never do


def scaled(b, factor, offset=0):
    return b * factor + offset


def test_map_blocks_kwargs_reach_fn(pool):
    x = ndshm.from_array(np.arange(24.0).reshape(4, 6))
    want = np.asarray(x) * 3 + 1
    np.testing.assert_array_equal(pool.map_blocks(scaled, x, chunks=2, factor=3, offset=1), want)
    np.testing.assert_array_equal(ndshm.map_blocks(scaled, x, factor=3, offset=1, workers=1), want)
    np.testing.assert_array_equal(ndshm.map_blocks(scaled, x, factor=3, offset=1, executor=pool), want)
    # `fn` is positional only, so a keyword named fn is fn's
    got = pool.map_blocks(lambda b, fn: b + fn, x, fn=5)
    np.testing.assert_array_equal(got, np.asarray(x) + 5)
    # a ufunc takes its keywords too (each block gets them as they are)
    out = ndshm.zeros((4, 6))
    where = np.arange(6) % 2 == 0
    pool.map_blocks(np.add, x, 1.0, out=out, where=where, chunks=(1, 6))
    np.testing.assert_array_equal(out, np.where(where, np.asarray(x) + 1, 0))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda pool, x: pool.map_blocks(scaled, x, factor=1, workers=2), "workers"),
        (lambda pool, x: pool.map_blocks(scaled, x, factor=1, executor=pool), "executor"),
        (lambda pool, x: pool.map_blocks(scaled, x, factor=1, start_method="spawn"), "start_method"),
        (lambda pool, x: ndshm.map_blocks(scaled, x, factor=1, chunksize=2, executor=pool), "chunksize"),
        (lambda pool, x: pool.map_blocks(scaled, x, factor=1, block_id=(0, 0)), "block_id"),
        (lambda pool, x: pool.map_overlap(scaled, x, depth=0, factor=1, block_info={}), "block_info"),
        (lambda pool, x: ndshm.map_overlap(scaled, x, depth=0, factor=1, chunksize=1), "chunksize"),
    ],
)
def test_reserved_keywords_are_refused(pool, call, name):
    x = ndshm.from_array(np.ones((4, 6)))
    with pytest.raises(TypeError, match=rf"got {name}=, a keyword ndshm keeps for itself.*functools.partial"):
        call(pool, x)


# --------------------------------------------------------------------------
# numba @vectorize functions write straight into out


def test_numba_vectorize_writes_into_out(pool):
    numba = pytest.importorskip("numba")

    @numba.vectorize
    def axpy(x, y, a):
        return a * x + y

    x = ndshm.from_array(np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024))
    y = ndshm.full((1024, 1024), 2.0)
    out = ndshm.zeros((1024, 1024))
    runner, _ = plan_blocks(axpy, (x, y, 3.0), (1024, 1024), out, None, {})
    assert runner.ufunc
    axpy(np.ones(2), np.ones(2), 1.0)  # compiled before measuring
    tracemalloc.start()
    try:
        runner(0)  # the one 8 MiB block, here in this process
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated: the block went through a temporary"
    np.testing.assert_array_equal(out, 3.0 * np.asarray(x) + 2.0)
    got = pool.map_blocks(axpy, x, y, 0.5, chunks=256)
    np.testing.assert_array_equal(got, 0.5 * np.asarray(x) + 2.0)


def test_plain_function_goes_through_a_temporary():
    """The measure above can tell: a Python function makes its result first."""
    x = ndshm.from_array(np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024))
    out = ndshm.zeros((1024, 1024))
    runner, _ = plan_blocks(lambda b: b * 3.0, (x,), (1024, 1024), out, None, {})
    assert not runner.ufunc
    tracemalloc.start()
    try:
        runner(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= 8 << 20


# --------------------------------------------------------------------------
# on a Dask client


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the dashboard port may be taken
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = Client(cluster)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close()
        cluster.close()


def test_on_a_dask_client(client, image):
    want = ndi.gaussian_filter(image, 2, mode="wrap")
    got = ndshm.map_overlap(
        ndi.gaussian_filter, image, depth=8, boundary="periodic", executor=client, sigma=2, mode="wrap"
    )
    np.testing.assert_array_equal(got, want)
    got = ndshm.map_overlap(
        ndi.gaussian_filter,
        image,
        depth=8,
        boundary="periodic",
        chunks=(50, 60),
        executor=client,
        sigma=2,
        mode="wrap",
    )
    np.testing.assert_array_equal(got, want)
    x = ndshm.from_array(np.arange(24.0).reshape(4, 6))
    got = ndshm.map_blocks(scaled, x, chunks=2, factor=3, offset=1, executor=client)
    np.testing.assert_array_equal(got, np.asarray(x) * 3 + 1)
    with pytest.raises(ValueError, match="depth 9 on axis 1"):
        ndshm.map_overlap(np.negative, image, depth=9, chunks=(50, 8), executor=client)
