"""Plain ndarrays over shared memory (``np.asarray(a)``, xarray's ``.values``,
pandas' ``to_numpy()``, scikit-learn's ``check_array`` output) travel as
handles wherever ndshm sends data, and through multiprocessing,
concurrent.futures, joblib and pandas: the same view, and writes land in
the segment. What cannot be shared is refused before any work starts."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.reduction
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ndshm
from ndshm import sharing
from ndshm.blocks import plan_blocks
from ndshm.handles import segment_of

ROWS, COLS = 8, 65_536  # 4 MiB of float64: a copy would be obvious
HANDLE = 1024


def plain(a: np.ndarray) -> np.ndarray:
    v = np.asarray(a)
    assert type(v) is np.ndarray and segment_of(v) is not None
    return v


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; fails the test on a non-zero exit."""
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    return p


# --------------------------------------------------------------------------
# workers (module level: importable by spawn and forkserver children)


def fill(view, value):
    view[...] = value
    return type(view).__name__


def is_shared(*blocks):
    return np.full(blocks[0].shape, all(isinstance(b, ndshm.SharedArray) for b in blocks))


def describe(x):
    return type(x).__name__, bool(x.flags.writeable), x.shape, x.strides


def try_write(x):
    try:
        x[(0,) * x.ndim] = 42
    except ValueError:
        return "read-only"
    return "written"


def give_back(x):
    return np.asarray(x)[1:3]


def frame_values(df):
    return df.to_numpy()


def xarray_values(x):
    return x.values


# --------------------------------------------------------------------------
# 1. the primitive, and ndshm's picklers


def test_shared_view_is_the_same_view_and_counts_no_handoff():
    a = ndshm.from_array(np.arange(48.0).reshape(4, 12))
    seg = segment_of(a)
    for v in (plain(a), plain(a)[1:, ::-3], plain(a).T, np.broadcast_to(plain(a)[:1], (5, 12))):
        sv = sharing.shared_view(v)
        assert isinstance(sv, ndshm.SharedArray)
        assert (sv.__array_interface__["data"][0], sv.shape, sv.strides, sv.dtype) == (
            v.__array_interface__["data"][0],
            v.shape,
            v.strides,
            v.dtype,
        )
        assert sv.flags.writeable == v.flags.writeable
    assert seg.pending == 0  # finding the view is not sending it
    assert sharing.shared_view(a) is a
    assert sharing.shared_view(np.zeros(3)) is None
    assert sharing.shared_view(a + 1) is None


def test_ndshm_picklers_send_plain_views_as_handles():
    a = ndshm.zeros((ROWS, COLS))
    seg = segment_of(a)
    items = [plain(a)[0], (plain(a)[1:3, ::2], 7), {"x": plain(a).T}]
    data = sharing.dumps(items)
    assert len(data) < 3 * HANDLE
    assert seg.pending == 3  # one per handle really pickled
    back = pickle.loads(data)
    assert seg.pending == 0
    back[0][...] = 1.0
    back[1][0][...] = 2.0
    assert (a[0] == 1).all() and (a[1:3, ::2] == 2).all() and (a[1:3, 1::2] == 0).all()
    assert back[2]["x"].strides == plain(a).T.strides

    big = np.ones(COLS)  # private: pickled as data, as pickle would
    assert pickle.loads(sharing.dumps([big, 3]))[0].sum() == COLS
    assert sharing.dumps([1, 2.0, "x", None]) == pickle.dumps([1, 2.0, "x", None], protocol=5)

    v = plain(a)
    fn = lambda i: v[i].sum()  # noqa: E731 - a closure over a plain view
    assert len(sharing.dumps_function(fn)) < 4 * HANDLE
    pickle.loads(sharing.dumps_function(fn))


# --------------------------------------------------------------------------
# 1. ndshm's entry points


def test_map_blocks_writes_into_a_plain_view_out():
    out = ndshm.zeros((3, 4))
    x = ndshm.from_array(np.arange(12.0).reshape(3, 4))
    got = ndshm.map_blocks(np.negative, x, out=np.asarray(out), chunks=(1, 4), workers=2)
    np.testing.assert_array_equal(out, -x)
    np.testing.assert_array_equal(got, -x)
    out[...] = 0
    with ndshm.Pool(2) as pool:
        pool.map_blocks(lambda b: b * 2, plain(x), out=plain(out)[:, ::-1], chunks=(2, 2))
    np.testing.assert_array_equal(out[:, ::-1], 2 * x)


def test_map_blocks_inputs_that_are_plain_views_reach_workers_shared():
    xr = pytest.importorskip("xarray")
    a = ndshm.zeros((64, 100))
    with ndshm.Pool(2) as pool:
        assert pool.map_blocks(is_shared, xr.DataArray(a), chunks=(16, 100)).all()
        assert pool.map_blocks(is_shared, plain(a)[::-1, 3:], plain(a)[:1, 3:], chunks=(16, 50)).all()
        # Not copied into the job: what is pickled for the call is small.
        runner, _ = plan_blocks(is_shared, (plain(a),), (16, 50), None, None)
        assert len(sharing.dumps_function(runner)) < 4 * HANDLE


def test_map_blocks_refuses_an_out_outside_shared_memory_before_any_work():
    counter = ndshm.zeros(1, dtype=np.int64)

    def count(b):
        counter[0] += 1
        return b

    x = ndshm.zeros((3, 4))
    for out in (np.zeros((3, 4)), ndshm.zeros((3, 4)) + 0):
        with pytest.raises(ValueError, match=r"ndshm\.empty"):
            ndshm.map_blocks(count, x, out=out, workers=1)
    assert counter[0] == 0


def test_pool_items_arguments_and_closures_travel_as_handles():
    a = ndshm.zeros((ROWS, COLS))
    v = plain(a)
    with ndshm.Pool(2) as pool:
        assert pool.map(fill, list(v[:2]), [1.0, 2.0]) == ["SharedArray"] * 2
        assert pool.starmap(fill, [(v[2], 3.0), (v[3], 4.0)]) == ["SharedArray"] * 2
        assert list(pool.imap(lambda r: fill(r, 5.0), v[4:5])) == ["SharedArray"]
        assert pool.submit(fill, v[5], 6.0).result() == "SharedArray"
        assert pool.submit(fill, view=v[6], value=7.0).result() == "SharedArray"
        pool.map(lambda i: fill(v[i], 8.0), [7])  # a closure over the plain view
    for i in range(ROWS):
        assert (a[i] == i + 1).all(), i


def write_if_array(x: object, value: float = 9.0) -> str:
    if isinstance(x, np.ndarray):
        x[...] = value
    return type(x).__name__


@pytest.mark.parametrize("starred", [False, True])
def test_one_view_among_many_plain_items_still_travels_as_a_handle(starred):
    # Chunks are cut and pickled in batches; a batch is looked at once for
    # arrays, so the one view at the end of a long run of plain items (or
    # inside the last tuple) must still be found.
    a = ndshm.zeros((ROWS, COLS))
    v = plain(a)
    plain_items: list = [*range(150), 1.5, "s", b"b", None, True, 2j]
    with ndshm.Pool(2) as pool:
        if starred:
            items = [(x, 1.0) for x in plain_items] + [(v[1], 3.0)]
            got = pool.starmap(write_if_array, items, chunksize=1)
        else:
            got = pool.map(write_if_array, [*plain_items, v[0]], chunksize=1)
    assert got[-1] == "SharedArray"
    row = 1 if starred else 0
    assert (a[row] == (3.0 if starred else 9.0)).all()
    assert (np.delete(a, row, axis=0) == 0).all()


def test_holds_no_array_is_true_only_for_plain_items():
    assert sharing.holds_no_array([1, 2.0, "x", b"y", None, True, 1j])
    assert sharing.holds_no_array([(1, "a"), (2, None)])
    assert sharing.holds_no_array(())
    assert not sharing.holds_no_array([1, np.zeros(2)])
    assert not sharing.holds_no_array([(1, 2), (np.zeros(2), 3)])
    assert not sharing.holds_no_array([(1, 2), 3])  # mixed: looked at chunk by chunk
    assert not sharing.holds_no_array([[1], [2]])  # containers other than tuples
    assert not sharing.holds_no_array([np.float64(1.0)])  # numpy scalars are not plain


# --------------------------------------------------------------------------
# 1. Dask


def test_to_dask_of_a_plain_view_holds_a_handle():
    pytest.importorskip("distributed")
    import cloudpickle

    import ndshm.dask

    a = ndshm.from_array(np.random.default_rng(1).random((1000, 1000)))
    d = ndshm.dask.to_dask(plain(a), chunks=(250, 1000))
    assert len(cloudpickle.dumps(dict(d.dask))) < 8 * HANDLE
    np.testing.assert_array_equal(d.compute(scheduler="sync"), a)
    with pytest.raises(ValueError, match="ndshm"):
        ndshm.dask.to_dask(np.zeros((4, 4)))


def test_dask_writes_and_store_into_plain_views_land():
    pytest.importorskip("distributed")
    run_python(
        """
        import threading
        import dask
        import dask.array as da
        import numpy as np
        import ndshm
        import ndshm.dask

        def bump(b):
            b += 1
            return b

        if __name__ == "__main__":
            a = ndshm.zeros((40, 10))
            d = ndshm.dask.to_dask(np.asarray(a), chunks=(10, 10))
            with dask.config.set(scheduler="processes", num_workers=2):
                d.map_blocks(bump).compute()
            assert (a == 1).all(), a

            for scheduler, shape in (("processes", (400, 100)), ("threads", (100, 400))):
                out = ndshm.zeros(shape)
                with dask.config.set(scheduler=scheduler, num_workers=2):
                    ndshm.dask.store(da.ones(shape, chunks=100), np.asarray(out))
                assert (out == 1).all(), scheduler
            try:
                ndshm.dask.store(da.ones((4, 4), chunks=2), np.zeros((4, 4)))
            except ValueError as e:
                assert "ndshm" in str(e), e
            else:
                raise AssertionError("a private out was accepted")
        """
    )


def test_dask_executor_sends_plain_views_as_handles():
    pytest.importorskip("distributed")
    run_python(
        """
        import warnings
        import numpy as np
        from distributed import Client, LocalCluster
        import ndshm

        def fill(row):
            row[...] = 3.0
            return type(row).__name__

        def is_shared(block):
            return np.full(block.shape, float(isinstance(block, ndshm.SharedArray)))

        if __name__ == "__main__":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
            with cluster, Client(cluster) as client:
                a = ndshm.zeros((4, 100_000))
                names = ndshm.map(fill, list(np.asarray(a)), executor=client, chunksize=1)
                assert names == ["SharedArray"] * 4, names
                assert (a == 3).all()
                out = ndshm.zeros((4, 100_000))
                ndshm.map_blocks(
                    is_shared, np.asarray(a), out=np.asarray(out), chunks=(1, 100_000), executor=client
                )
                assert (out == 1).all()
        """,
        timeout=180,
    )


# --------------------------------------------------------------------------
# 2. multiprocessing and concurrent.futures


def test_forking_pickler_sends_plain_views_as_handles_and_ordinary_arrays_as_before():
    a = ndshm.zeros((ROWS, COLS))
    data = multiprocessing.reduction.ForkingPickler.dumps(plain(a)[::2])
    assert len(data) < HANDLE
    back = pickle.loads(data)
    assert isinstance(back, ndshm.SharedArray) and np.shares_memory(back, a)
    # Ordinary arrays: exactly the bytes multiprocessing always sent.
    for x in (
        np.arange(100.0),
        np.arange(100.0)[::3],
        np.zeros((3, 4), order="F"),
        np.arange(6).view("M8[s]"),
    ):
        assert bytes(multiprocessing.reduction.ForkingPickler.dumps(x)) == pickle.dumps(x)
    # pickle itself is left alone: a plain view pickles its data.
    assert len(pickle.dumps(plain(a))) > a.nbytes


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_process_pool_executor_and_pool_write_plain_views(method):
    a = ndshm.zeros((ROWS, COLS))
    v = plain(a)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.submit(fill, v[0], 1.0).result() == "SharedArray"
        assert list(ex.map(fill, v[1:3], [2.0, 3.0])) == ["SharedArray"] * 2
        back = ex.submit(give_back, v[3]).result()  # a plain view of shared memory comes back shared
    with ctx.Pool(2) as pool:
        assert pool.starmap(fill, [(v[4], 5.0)]) == ["SharedArray"]
    assert np.shares_memory(back, a[3])
    for i in range(3):
        assert (a[i] == i + 1).all()
    assert (a[4] == 5).all()


def test_pandas_and_xarray_through_a_process_pool():
    pd = pytest.importorskip("pandas")
    xr = pytest.importorskip("xarray")
    a = ndshm.from_array(np.random.default_rng(2).random((2000, 1000)))
    df = pd.DataFrame(a, copy=False)
    assert np.shares_memory(df.to_numpy(), a)
    data = multiprocessing.reduction.ForkingPickler.dumps(df)
    assert len(data) < 16 * HANDLE
    pickle.loads(data)  # settles the handoffs
    assert len(pickle.dumps(df)) > a.nbytes  # plain pickle: the data, as pandas does
    data = sharing.dumps([df])  # as an ndshm.Pool item
    assert len(data) < 16 * HANDLE
    pd.testing.assert_frame_equal(pickle.loads(data)[0], df)
    by_column = pd.DataFrame({i: a[:, i] for i in range(8)}, copy=False)
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        values = ex.submit(frame_values, df).result()
        cols = ex.submit(frame_values, by_column).result()
        xv = ex.submit(xarray_values, xr.DataArray(a, dims=("t", "x"))).result()
    np.testing.assert_array_equal(values, a)
    assert np.shares_memory(values, a)  # there and back as handles
    np.testing.assert_array_equal(cols, a[:, :8])
    assert np.shares_memory(xv, a)


# --------------------------------------------------------------------------
# 2. joblib and scikit-learn


@pytest.fixture
def joblib_dumps(monkeypatch):
    """Shapes of the arrays joblib dumps into its memmap folder (the parent
    does the dumping)."""
    import joblib._memmapping_reducer as mr

    dumped: list[tuple] = []
    real = mr.dump

    def dump(value, filename, *args, **kwargs):
        dumped.append(np.shape(value))
        return real(value, filename, *args, **kwargs)

    monkeypatch.setattr(mr, "dump", dump)
    return dumped


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_joblib_sends_plain_views_it_would_dump_as_read_only_handles(backend, joblib_dumps):
    import joblib

    a = ndshm.zeros((ROWS, COLS))
    v = plain(a)[::2]  # 2 MiB: joblib would dump it
    got = joblib.Parallel(n_jobs=2, backend=backend)(joblib.delayed(describe)(v) for _ in range(2))
    assert got == [("SharedArray", False, v.shape, v.strides)] * 2
    writes = joblib.Parallel(n_jobs=2, backend=backend)(joblib.delayed(try_write)(v) for _ in range(2))
    assert writes == ["read-only"] * 2 and not a.any()
    assert joblib_dumps == []
    # mmap_mode="r+" asks for writable memory: the writes land.
    writes = joblib.Parallel(n_jobs=2, backend=backend, mmap_mode="r+")(
        joblib.delayed(try_write)(v) for _ in range(1)
    )
    assert writes == ["written"] and a[0, 0] == 42
    # Small arrays, and max_nbytes=None, are copied, as joblib always does.
    got = joblib.Parallel(n_jobs=2, backend=backend)(joblib.delayed(describe)(v[:1, :8]) for _ in range(1))
    assert got[0][:2] == ("ndarray", True)
    # The contrast: a private array of the same size is dumped.
    joblib.Parallel(n_jobs=2, backend=backend)(joblib.delayed(describe)(np.ones(v.shape)) for _ in range(1))
    assert joblib_dumps == [v.shape]


def test_scikit_learn_does_not_dump_shared_data(joblib_dumps):
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=4000, n_features=40, random_state=0)
    X64 = ndshm.from_array(X)
    model = LogisticRegression(max_iter=200).fit(X, y)
    r = permutation_importance(model, plain(X64), y, n_repeats=2, n_jobs=2, random_state=0)
    assert r.importances.shape == (40, 2)
    X32 = ndshm.from_array(np.tile(X, (2, 1)).astype(np.float32))
    assert X32.nbytes > 1e6
    with joblib.parallel_config(backend="loky"):
        forest = RandomForestClassifier(n_estimators=4, n_jobs=2, random_state=0).fit(X32, np.tile(y, 2))
    assert forest.score(X32, np.tile(y, 2)) > 0.9
    assert joblib_dumps == []
    # The contrast: the same work on private data dumps it.
    permutation_importance(model, X, y, n_repeats=2, n_jobs=2, random_state=0)
    assert X.shape in joblib_dumps


def test_joblib_hook_installs_when_joblib_is_imported_after_ndshm():
    run_python(
        """
        import sys
        import ndshm
        assert "joblib" not in sys.modules
        import joblib
        import numpy as np
        from joblib._memmapping_reducer import ArrayMemmapForwardReducer
        r = ArrayMemmapForwardReducer(1e6, lambda: "/nonexistent", "r", False)
        a = ndshm.zeros((1000, 1000))
        func, args = r(np.asarray(a))
        back = func(*args)
        assert isinstance(back, ndshm.SharedArray) and not back.flags.writeable
        assert np.shares_memory(back, a)
        """
    )


def test_importing_ndshm_imports_no_joblib():
    run_python(
        """
        import sys
        import ndshm
        assert "joblib" not in sys.modules and "pandas" not in sys.modules
        """
    )
