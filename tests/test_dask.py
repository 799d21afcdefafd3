"""ndshm on Dask, on one host: the registration in every import order, the
serializer (handles to this host, bytes to others and to disk), a
LocalCluster of worker processes sharing arrays with no copies, tokenize and
sizeof, to_dask / store / compute_into, ``executor=`` of ndshm.map and
ndshm.map_blocks, a missing dask, and what is left after a client is
killed. The cross-host cases are in test_dask_hosts.py."""

from __future__ import annotations

import functools
import gc
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import time
import types
import warnings
from pathlib import Path

import cloudpickle
import dask
import dask.array as da
import numpy as np
import psutil
import pytest
from dask.base import tokenize
from dask.sizeof import sizeof
from distributed import Client, LocalCluster, get_task_stream
from distributed.protocol import deserialize, deserialize_bytes, serialize, serialize_bytelist
from procwatch import alive, wait_for

import ndshm
import ndshm.dask
from ndshm.handles import segment_of

KIB = 1024
HERE = "tcp://127.0.0.1:1234"  # a recipient on this host
ELSEWHERE = "tcp://192.0.2.1:1234"  # TEST-NET-1: never an address of this host


# --------------------------------------------------------------------------
# the cluster, shared by the module (it takes seconds to start)


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        # "Port 8787 is already in use" when another cluster runs on this host.
        warnings.simplefilter("ignore", UserWarning)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = Client(cluster)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close()
        cluster.close()


def worker_addresses(client) -> list[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


# --------------------------------------------------------------------------
# helpers


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; fails the test on a non-zero exit."""
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    return p


def send(x, address: str):
    """`x` through distributed's serializer to a peer at `address`: what
    arrives, and the bytes of the frames sent."""
    header, frames = serialize(x, context={"recipient": {"address": address}})
    frames = [bytes(f) for f in frames]  # as they arrive: a copy, not views of `x`
    return deserialize(header, frames), len(b"".join(frames))


def data_bytes(v) -> int:
    """The bytes of the distinct elements of `v` (a broadcast axis counts once)."""
    return int(np.prod([n for n, s in zip(v.shape, v.strides) if s != 0])) * v.itemsize


def segment_file(a) -> tuple[int, int]:
    """(device, inode) of the file behind the anonymous array `a` (a memfd,
    or for a big one, an unnamed file in ndshm's private tmpfs)."""
    st = os.fstat(segment_of(a).fd)
    return st.st_dev, st.st_ino


def _maps_device(field: str) -> int:
    major, minor = (int(x, 16) for x in field.split(":"))
    return os.makedev(major, minor)


def segment_holders(file: tuple[int, int]) -> set[int]:
    """Pids of the processes that map or hold open the segment file `file`."""
    dev, inode = file
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and int(fields[4]) == inode and _maps_device(fields[3]) == dev:
                    found.add(pid)
                    break
            else:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        st = os.stat(f"/proc/{pid}/fd/{fd}")
                        if (st.st_dev, st.st_ino) == file:
                            found.add(pid)
                            break
                    except OSError:
                        continue
        except (OSError, ValueError):
            continue
    return found


def segments_owned_by(pids) -> list[str]:
    """Named segments in /dev/shm whose creator is one of `pids`."""
    pids = set(pids)
    return [s.name for s in ndshm.list() if s.owner_pid in pids]


# Task functions. Workers import this module by name (they inherit
# sys.path), so these are pickled by reference.


def write_row(x, i):
    x[i] = i + 1
    return type(x).__name__, os.getpid()


def identity(x):
    return x


def describe(x):
    return type(x).__name__, float(np.sum(x)), os.getpid()


def make_shared(n):
    return ndshm.from_array(np.arange(n, dtype=np.int64))


def bump(x):
    x += 1
    return x


def count_then(counter, fn, *blocks):
    """Counts a call in the shared `counter` (so a test sees whether any
    work ran), then applies `fn`."""
    with counter.lock:
        counter[0] += 1
    return fn(*blocks)


def square(v):
    return v * v


def fail_at_5(v):
    if v == 5:
        raise KeyError("five")
    return v


def fill_row(row):
    row[...] = row.size
    return os.getpid()


def with_block_id(block, block_id=None):
    return np.full(block.shape, 10 * block_id[0] + block_id[1], dtype=block.dtype)


def divide_by_zero(block):
    return block + 1 // 0


# --------------------------------------------------------------------------
# 1. registration, in every import order


REGISTERED = """
import sys
{imports}
import dask.base
import dask.sizeof
import ndshm

ser = sys.modules["distributed.protocol.serialize"]
found = {{
    "dask_serialize": ser.dask_serialize.dispatch(ndshm.SharedArray),
    "dask_deserialize": ser.dask_deserialize.dispatch(ndshm.SharedArray),
    "normalize_token": dask.base.normalize_token.dispatch(ndshm.SharedArray),
    "sizeof": dask.sizeof.sizeof.dispatch(ndshm.SharedArray),
}}
wrong = {{k: f"{{f.__module__}}.{{f.__qualname__}}" for k, f in found.items()
          if f.__module__ != "ndshm.dask.serialize"}}
assert not wrong, wrong
print("ok")
"""


@pytest.mark.parametrize(
    "imports",
    ["import ndshm\nimport distributed", "import distributed\nimport ndshm", "import ndshm.dask"],
    ids=["ndshm-then-distributed", "distributed-then-ndshm", "ndshm.dask"],
)
def test_registration_in_every_import_order(imports):
    assert run_python(REGISTERED.format(imports=imports)).stdout.strip() == "ok"


def test_import_ndshm_alone_imports_no_dask():
    run_python(
        """
        import sys
        import ndshm
        a = ndshm.zeros(3)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
        assert not loaded, loaded
        """
    )


# --------------------------------------------------------------------------
# 2. the serializer


def views_of(a):
    """Views of the 2-d shared array `a`, by name."""
    y = a[:, 0]
    return {
        "whole": a,
        "slice": a[3:40:2, 5:],
        "transpose": a.T,
        "column": y,
        "new-axis": y[:, None],
        "broadcast": np.broadcast_to(y[:, None], (a.shape[0], 300), subok=True),
        "reversed": a[::-1, ::-3],
    }


@pytest.mark.parametrize("kind", ["anonymous", "named"])
@pytest.mark.parametrize("view", list(views_of(np.zeros((2, 2)))))
def test_to_this_host_a_handle_sharing_memory(kind, view, request):
    name = request.getfixturevalue("shm_name") if kind == "named" else None
    a = ndshm.from_array(np.arange(256 * 512, dtype=np.float64).reshape(256, 512), name=name)
    v = views_of(a)[view]
    assert isinstance(v, ndshm.SharedArray)
    got, nbytes = send(v, HERE)
    assert nbytes < KIB, f"{nbytes} bytes sent for a handle"
    assert isinstance(got, ndshm.SharedArray)
    assert got.shape == v.shape and got.strides == v.strides and got.dtype == v.dtype
    assert np.shares_memory(got, a)
    np.testing.assert_array_equal(got, v)
    if got.flags.writeable:
        got[(0,) * got.ndim] = -7.0
        assert v[(0,) * v.ndim] == -7.0


@pytest.mark.parametrize("view", list(views_of(np.zeros((2, 2)))))
def test_to_another_host_the_bytes(view):
    a = ndshm.from_array(np.arange(256 * 512, dtype=np.float64).reshape(256, 512))
    v = views_of(a)[view]
    got, nbytes = send(v, ELSEWHERE)
    assert nbytes >= data_bytes(v) > KIB
    assert type(got) is np.ndarray
    assert not np.shares_memory(got, a)
    np.testing.assert_array_equal(got, v)


@pytest.mark.parametrize("view", list(views_of(np.zeros((2, 2)))))
def test_spilled_to_disk_as_bytes(view):
    a = ndshm.from_array(np.arange(256 * 512, dtype=np.float64).reshape(256, 512))
    v = views_of(a)[view]
    data = serialize_bytelist(v)  # no context: what a worker writes when it spills
    assert sum(memoryview(f).nbytes for f in data) >= data_bytes(v) > KIB
    got = deserialize_bytes(b"".join(data))
    assert type(got) is np.ndarray
    assert not np.shares_memory(got, a)
    np.testing.assert_array_equal(got, v)


def test_private_memory_travels_as_bytes():
    a = ndshm.from_array(np.arange(1000.0))
    picked = a[np.arange(0, 1000, 7)]  # a SharedArray in private memory
    assert isinstance(picked, ndshm.SharedArray) and segment_of(picked) is None
    for x in (picked, a + 1, a.copy()):
        got, nbytes = send(x, HERE)
        assert type(got) is np.ndarray and nbytes >= x.nbytes
        np.testing.assert_array_equal(got, x)


class FakeClient:
    """A client of this process that knows of a scheduler and its workers."""

    def __init__(self, scheduler: str, workers: list[str]) -> None:
        self.scheduler = types.SimpleNamespace(address=scheduler)
        self._scheduler_identity = {"workers": {w: {} for w in workers}}


@pytest.mark.parametrize(
    ("workers", "handle"),
    [
        (["tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002"], True),
        (["tcp://127.0.0.1:40001", "tcp://192.0.2.7:40002"], False),
    ],
    ids=["all-workers-here", "one-worker-elsewhere"],
)
def test_to_a_scheduler_a_handle_only_when_all_its_workers_are_here(workers, handle):
    """A scheduler relays scattered data to workers of its choosing."""
    scheduler = "tcp://127.0.0.1:45555"
    fake = FakeClient(scheduler, workers)
    Client._instances.add(fake)
    try:
        a = ndshm.from_array(np.arange(4096.0))
        got, nbytes = send(a, scheduler)
    finally:
        Client._instances.discard(fake)
    assert (nbytes < KIB) is handle
    assert np.shares_memory(got, a) is handle
    np.testing.assert_array_equal(got, a)


def test_to_the_real_scheduler_a_handle(client):
    # What distributed's periodic refresh (every 2 s) does to the client.
    client.sync(client._update_scheduler_info)
    a = ndshm.from_array(np.arange(4096.0))
    got, nbytes = send(a, client.scheduler.address)
    assert nbytes < KIB and np.shares_memory(got, a)


def test_a_handle_sent_and_received_settles_its_handoff():
    a = ndshm.from_array(np.arange(4096.0))
    got, _ = send(a, HERE)
    assert np.shares_memory(got, a)
    assert segment_of(a).pending == 0


# --------------------------------------------------------------------------
# 3. on the cluster


def test_scatter_direct_broadcast_then_workers_write_in_place(client):
    a = ndshm.zeros((2, 100_000))
    fut = client.scatter(a, broadcast=True, direct=True)
    addresses = worker_addresses(client)
    done = [
        client.submit(write_row, fut, i, workers=[w], allow_other_workers=False, pure=False).result()
        for i, w in enumerate(addresses)
    ]
    assert [kind for kind, _ in done] == ["SharedArray", "SharedArray"]
    assert {pid for _, pid in done} == set(worker_pids(client).values())
    np.testing.assert_array_equal(a[0], 1.0)
    np.testing.assert_array_equal(a[1], 2.0)


def test_scatter_broadcast_then_workers_write_in_place(client):
    addresses = worker_addresses(client)
    a = ndshm.zeros((2, 100_000))
    client.sync(client._update_scheduler_info)  # as distributed does every 2 s
    fut = client.scatter(a, broadcast=True)
    for i, w in enumerate(addresses):
        client.submit(write_row, fut, i, workers=[w], allow_other_workers=False, pure=False).result()
    np.testing.assert_array_equal(a[0], 1.0)
    np.testing.assert_array_equal(a[1], 2.0)


def test_a_shared_array_returned_by_a_task_is_the_same_memory(client):
    a = ndshm.from_array(np.arange(100_000.0))
    fut = client.scatter(a, direct=True)
    back = client.submit(identity, fut, pure=False).result()
    assert isinstance(back, ndshm.SharedArray)
    assert np.shares_memory(back, a)
    view = client.submit(identity, client.scatter(a[10:5000:3], direct=True), pure=False).result()
    assert np.shares_memory(view, a)
    np.testing.assert_array_equal(view, a[10:5000:3])


def test_an_array_made_on_a_worker_arrives_shared(client):
    fut = client.submit(make_shared, 200_000, pure=False)
    got = fut.result()
    assert isinstance(got, ndshm.SharedArray)
    np.testing.assert_array_equal(got, np.arange(200_000))
    del fut  # the worker drops its array; ours stays valid
    time.sleep(0.5)
    gc.collect()
    np.testing.assert_array_equal(got, np.arange(200_000))


def test_worker_to_worker_keeps_data_and_sharing(client):
    first, second = worker_addresses(client)
    pinned = {"workers": [second], "allow_other_workers": False, "pure": False}
    # An array this process made, on the first worker, moved to the second.
    a = ndshm.from_array(np.arange(100_000, dtype=np.int64))
    on_first = client.scatter(a, workers=[first], direct=True)
    moved = client.submit(bump, on_first, **pinned)
    got = moved.result()
    assert client.who_has(moved)[moved.key] == (second,)
    assert isinstance(got, ndshm.SharedArray) and np.shares_memory(got, a)
    np.testing.assert_array_equal(a, np.arange(100_000) + 1)  # written by the second worker
    # An array the first worker made, moved to the second.
    made = client.submit(make_shared, 100_000, workers=[first], allow_other_workers=False, pure=False)
    moved = client.submit(bump, made, **pinned)
    got = moved.result()
    assert client.who_has(moved)[moved.key] == (second,)
    original = made.result()
    assert np.shares_memory(got, original)
    np.testing.assert_array_equal(original, np.arange(100_000) + 1)


# --------------------------------------------------------------------------
# 4. tokenize and sizeof


def test_tokenize_is_by_identity_not_contents():
    a = ndshm.zeros(100 * 2**20 // 8)  # 100 MiB
    token = tokenize(a)
    a[12345] = 1.0
    assert tokenize(a) == token  # same memory: same token after a write
    assert tokenize(a[:1000]) == tokenize(a[:1000])
    distinct = {
        token,
        tokenize(a[1:]),
        tokenize(a[:-1]),
        tokenize(a[::2]),
        tokenize(a[1::2]),
        tokenize(a.reshape(-1, 1024)),
        tokenize(a.view(np.int64)),
    }
    assert len(distinct) == 7
    b = ndshm.zeros_like(a)
    b[12345] = 1.0  # equal contents, other memory
    assert tokenize(b) != token
    # A SharedArray in private memory (fancy indexing) is tokenized by its
    # contents, as dask does for ndarrays.
    picked = a[np.arange(0, 1000, 7)]
    assert segment_of(picked) is None
    before = tokenize(picked)
    assert tokenize(a[np.arange(0, 1000, 7)]) == before
    picked[0] = 5.0
    assert tokenize(picked) != before


def test_sizeof_counts_the_bytes_spanned():
    y = ndshm.from_array(np.arange(1000.0))
    assert sizeof(y) == y.nbytes
    assert sizeof(y[:10]) == 80
    wide = np.broadcast_to(y[:, None], (1000, 500), subok=True)
    assert isinstance(wide, ndshm.SharedArray)
    assert sizeof(wide) == y.nbytes  # not 1000 * 500 * 8
    tall = np.broadcast_to(y, (400, 1000), subok=True)
    assert sizeof(tall) == y.nbytes


# --------------------------------------------------------------------------
# 5. to_dask


def test_to_dask_graph_holds_a_handle_and_computes_on_the_cluster(client):
    a = ndshm.from_array(np.arange(8 * 2**20, dtype=np.int64))  # 64 MiB
    x = ndshm.dask.to_dask(a, chunks=2**20)
    assert x.shape == a.shape and x.dtype == a.dtype and x.numblocks == (8,)
    graph = dict(x.__dask_graph__())
    for dumps in (pickle.dumps, cloudpickle.dumps):
        data = dumps(graph)
        assert len(data) < 64 * KIB, f"{len(data)} bytes of graph"
        pickle.loads(data)  # received, so nothing is left pending
    assert x.sum().compute() == a.sum()
    a[5 * 2**20] = -(10**12)  # the workers read this memory, not a copy of it
    assert x.sum().compute() == a.sum()
    np.testing.assert_array_equal(x[2**20 - 3 : 2**20 + 3].compute(), a[2**20 - 3 : 2**20 + 3])


def test_to_dask_refuses_bad_chunks_and_private_arrays():
    a = ndshm.zeros((10, 4))
    with pytest.raises(ValueError):
        ndshm.dask.to_dask(a, chunks=((3, 3), (4,)))
    with pytest.raises(ValueError):
        ndshm.dask.to_dask(a, chunks=((5, 5, 1), (4,)))
    with pytest.raises(ValueError, match="from_array"):
        ndshm.dask.to_dask(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="from_array"):
        ndshm.dask.to_dask(a + 1)  # arithmetic results are private
    with pytest.raises(TypeError):
        ndshm.dask.to_dask([1.0, 2.0])


# --------------------------------------------------------------------------
# 6. store and compute_into


@pytest.fixture
def xy():
    rng = np.random.default_rng(5)
    return ndshm.from_array(rng.random((400, 300))), ndshm.from_array(rng.random((400, 300)))


def expression(x, y):
    dx = ndshm.dask.to_dask(x, chunks=(100, 150))
    dy = ndshm.dask.to_dask(y, chunks=(100, 150))
    return dx * 2 + da.sin(dy) - dx * dy


def test_compute_into_and_store_equal_numpy(client, xy):
    x, y = xy
    expected = x * 2 + np.sin(y) - x * y
    got = ndshm.dask.compute_into(expression(x, y))
    assert isinstance(got, ndshm.SharedArray)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    out = ndshm.full((400, 300), np.nan)
    assert ndshm.dask.store(expression(x, y), out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    # Into a strided view of a bigger array.
    big = ndshm.zeros((400, 600))
    ndshm.dask.store(expression(x, y), big[:, ::2])
    np.testing.assert_allclose(big[:, ::2], expected, rtol=1e-15)
    assert not big[:, 1::2].any()


def test_store_edge_shapes(client):
    """0-d, empty and one-chunk arrays, and a transposed expression whose
    chunks run across out's memory order."""
    out = ndshm.zeros(())
    ndshm.dask.store(da.from_array(np.float64(5.0), chunks=()), out)
    assert out == 5.0
    empty = ndshm.zeros((0, 4))
    ndshm.dask.store(da.zeros((0, 4), chunks=2), empty)
    a = ndshm.from_array(np.arange(12.0).reshape(3, 4))
    got = ndshm.dask.compute_into(ndshm.dask.to_dask(a, chunks=(1, 4)).T + 1)
    np.testing.assert_array_equal(got, a.T + 1)
    one = ndshm.zeros((3, 4))
    ndshm.dask.store(ndshm.dask.to_dask(a, chunks=-1) * 2, one)
    np.testing.assert_array_equal(one, a * 2)


def test_store_runs_each_chunk_where_it_is_computed(client, xy):
    """The store step is fused with the step that makes the chunk: one task
    per chunk does both, so no chunk travels between workers."""
    x, y = xy
    out = ndshm.zeros((400, 300))
    with get_task_stream(client) as ts:
        ndshm.dask.store(expression(x, y), out)
    np.testing.assert_allclose(out, x * 2 + np.sin(y) - x * y, rtol=1e-15)
    names = [str(t["key"][0] if isinstance(t["key"], tuple) else t["key"]) for t in ts.data]
    stores = [n for n in names if n.startswith("ndshm-store")]
    assert len(stores) == 8
    assert not any(ss["action"] == "transfer" for t in ts.data for ss in t["startstops"])


def test_alast_ufunc_is_computed_straight_into_out(client, xy):
    """When the last step is one ufunc over dask arrays, each chunk is
    computed into its place in out; anything else is computed, then copied.
    Both give numpy's result."""
    from ndshm.dask.collection import last_ufunc

    x, y = xy
    dx = ndshm.dask.to_dask(x, chunks=(100, 150))
    dy = ndshm.dask.to_dask(y, chunks=(100, 150))
    col = ndshm.dask.to_dask(ndshm.from_array(y[:, :1]), chunks=(100, 1))
    into = ndshm.zeros((400, 300))
    cases = [
        (dx * dy, x * y, np.multiply),
        (np.sin(dx), np.sin(x), np.sin),
        (-dx, -x, np.negative),
        (dx - col, x - y[:, :1], np.subtract),  # broadcast
        (np.hypot(dx, dy), np.hypot(x, y), np.hypot),
        (dx * 2, x * 2, None),  # a constant argument
        (dx.sum(axis=0, keepdims=True) + dx, x.sum(axis=0, keepdims=True) + x, np.add),
        (dx.rechunk((100, 300)).map_blocks(np.cumsum, axis=1), np.cumsum(x, axis=1), None),
        (dx.T.T, x, None),
    ]
    for expr, expected, ufunc in cases:
        last = last_ufunc(expr, into)
        assert (last[0] if last else None) is ufunc, expr
        got = ndshm.dask.compute_into(expr)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Another dtype for out: computed, then cast (as before).
    f32 = ndshm.zeros((400, 300), dtype=np.float32)
    assert last_ufunc(dx * dy, f32) is None
    ndshm.dask.store(dx * dy, f32)
    np.testing.assert_array_equal(f32, (x * y).astype(np.float32))


def test_store_refuses_bad_outputs_before_any_work(client, xy):
    x, _ = xy
    counter = ndshm.zeros(1, dtype=np.int64)
    counted = ndshm.dask.to_dask(x, chunks=(100, 150)).map_blocks(
        functools.partial(count_then, counter, np.negative), meta=np.empty((0, 0), x.dtype)
    )
    out = ndshm.full((400, 300), np.nan)
    ndshm.dask.store(counted, out)
    assert counter[0] == 8  # the counting works: one per block
    np.testing.assert_array_equal(out, -x)
    counter[0] = 0

    wrong_shape = ndshm.full((400, 301), 7.0)
    with pytest.raises(ValueError, match="shape"):
        ndshm.dask.store(counted, wrong_shape)
    assert (wrong_shape == 7.0).all()

    readonly = ndshm.full((400, 300), 7.0).view()
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ndshm.dask.store(counted, readonly)
    assert (readonly == 7.0).all()

    with pytest.raises(ValueError, match=r"ndshm\.empty"):
        ndshm.dask.store(counted, np.full((400, 300), 7.0))
    with pytest.raises(TypeError):
        ndshm.dask.store(np.asarray(x), ndshm.zeros((400, 300)))
    time.sleep(0.2)  # a stray task would have run by now
    assert counter[0] == 0


def test_store_without_a_distributed_client():
    """dask's local schedulers: threads, and processes (which map the
    arrays through their handles). Run apart from the module's client,
    which get_client() would find."""
    run_python(
        """
        import dask
        import distributed  # loaded, but no client
        import numpy as np
        import ndshm
        import ndshm.dask

        if __name__ == "__main__":
            x = ndshm.from_array(np.arange(600.0).reshape(20, 30))
            out = ndshm.zeros((20, 30))
            for scheduler in ("sync", "threads", "processes"):
                out[...] = 0
                with dask.config.set(scheduler=scheduler, num_workers=2):
                    got = ndshm.dask.store(ndshm.dask.to_dask(x, chunks=(5, 10)) * 2 + 1, out)
                assert got is out, scheduler
                assert np.array_equal(out, x * 2 + 1), scheduler
                with dask.config.set(scheduler=scheduler, num_workers=2):
                    new = ndshm.dask.compute_into(ndshm.dask.to_dask(x, chunks=(5, 10)) - 1)
                assert isinstance(new, ndshm.SharedArray), scheduler
                assert np.array_equal(new, x - 1), scheduler
        """,
        timeout=90,
    )


# --------------------------------------------------------------------------
# 7. ndshm.map and ndshm.map_blocks with executor=


def test_map_on_a_client_equals_map(client):
    assert ndshm.map(square, range(23), executor=client) == list(map(square, range(23)))
    assert ndshm.map(lambda v: 3 * v + 1, range(17), executor=client, chunksize=3) == [
        3 * v + 1 for v in range(17)
    ]
    assert ndshm.map(square, [], executor=client) == []
    with pytest.raises(KeyError, match="five"):
        ndshm.map(fail_at_5, range(10), executor=client)


def test_map_on_a_client_passes_shared_rows_with_no_copy(client):
    a = ndshm.zeros((6, 50_000))
    pids = ndshm.map(fill_row, list(a), executor=client, chunksize=1)
    assert set(pids) <= set(worker_pids(client).values())
    np.testing.assert_array_equal(a, 50_000.0)


def test_map_blocks_on_a_client_equals_numpy(client):
    rng = np.random.default_rng(7)
    x = ndshm.from_array(rng.random((300, 200)))
    y = rng.random(300)  # private: map_blocks shares it
    got = ndshm.map_blocks(np.add, x, y[:, None], executor=client, chunks=(100, 50))
    assert isinstance(got, ndshm.SharedArray)
    np.testing.assert_array_equal(got, x + y[:, None])

    got = ndshm.map_blocks(with_block_id, x, executor=client, chunks=(100, 100))
    expected = np.repeat(np.repeat(10 * np.arange(3)[:, None] + np.arange(2), 100, axis=0), 100, axis=1)
    np.testing.assert_array_equal(got, expected)

    got = ndshm.map_blocks(np.multiply, x, x, executor=client)  # chunks chosen for the cluster
    np.testing.assert_array_equal(got, x * x)

    out = ndshm.full((300, 200), np.nan)
    got = ndshm.map_blocks(np.negative, x, out=out, executor=client, chunks=((100, 200), (50, 150)))
    assert got is out
    np.testing.assert_array_equal(out, -x)

    with pytest.raises(ZeroDivisionError):
        ndshm.map_blocks(divide_by_zero, x, executor=client, chunks=(100, 100))


def test_map_blocks_on_a_client_refuses_bad_chunks_before_any_work(client):
    x = ndshm.from_array(np.arange(6000.0).reshape(60, 100))
    counter = ndshm.zeros(1, dtype=np.int64)
    fn = functools.partial(count_then, counter, np.negative)
    np.testing.assert_array_equal(ndshm.map_blocks(fn, x, executor=client, chunks=(30, 50)), -x)
    assert counter[0] == 4
    counter[0] = 0
    for chunks in [((30, 20), (100,)), ((30, 30), (50, 60)), (0, 10), ((60,),)]:
        with pytest.raises(ValueError):
            ndshm.map_blocks(fn, x, executor=client, chunks=chunks)
    out = ndshm.full((60, 101), 7.0)
    with pytest.raises(ValueError):
        ndshm.map_blocks(fn, x, out=out, executor=client, chunks=(30, 50))
    assert (out == 7.0).all()
    time.sleep(0.2)  # a stray task would have run by now
    assert counter[0] == 0


def test_executor_must_be_a_pool_or_a_client():
    x = ndshm.zeros((10, 10))
    with pytest.raises(TypeError):
        ndshm.map(square, range(3), executor=object())
    with pytest.raises(TypeError):
        ndshm.map_blocks(np.negative, x, executor=object())


def test_an_ndshm_pool_as_executor():
    x = ndshm.from_array(np.arange(6000.0).reshape(60, 100))
    with ndshm.Pool(2) as pool:
        got = ndshm.map_blocks(np.multiply, x, x, executor=pool, chunks=(20, 50))
        assert ndshm.map(square, range(10), executor=pool) == [v * v for v in range(10)]
    assert isinstance(got, ndshm.SharedArray)
    np.testing.assert_array_equal(got, x * x)


# --------------------------------------------------------------------------
# 8. without dask


def test_ndshm_dask_without_distributed_says_how_to_install():
    run_python(
        """
        import sys
        sys.modules["distributed"] = None  # as if not installed
        try:
            import ndshm.dask
        except ImportError as e:
            assert "pip install 'ndshm[dask]'" in str(e), str(e)
        else:
            raise AssertionError("ndshm.dask imported without distributed")
        """
    )


def test_ndshm_works_without_dask():
    run_python(
        """
        import pickle
        import sys
        sys.modules["distributed"] = None
        sys.modules["dask"] = None
        import numpy as np
        import ndshm

        a = ndshm.from_array(np.arange(10.0))
        b = pickle.loads(pickle.dumps(a))
        assert np.shares_memory(a, b)
        assert ndshm.map_blocks(np.negative, a, workers=1).sum() == -45.0
        """
    )


# --------------------------------------------------------------------------
# 9. lifetimes


def test_a_scattered_anonymous_array_outlives_the_senders_reference(client):
    a = ndshm.from_array(np.arange(300_000, dtype=np.float64))
    expected = float(a.sum())
    fut = client.scatter(a, direct=True)
    del a
    gc.collect()
    kind, total, _ = client.submit(describe, fut, pure=False).result()
    assert (kind, total) == ("SharedArray", expected)
    del fut
    # Anonymous arrays never have a name in /dev/shm.
    assert not segments_owned_by([os.getpid(), *worker_pids(client).values()])


def test_a_released_anonymous_array_is_freed(client):
    a = ndshm.from_array(np.arange(300_000, dtype=np.float64))
    file = segment_file(a)
    fut = client.scatter(a, direct=True)
    assert client.submit(describe, fut, pure=False).result()[0] == "SharedArray"
    holders = segment_holders(file)
    assert os.getpid() in holders and len(holders) == 2  # this process and one worker
    del a, fut
    gc.collect()
    # Workers let go of received segments about a second after their last use.
    assert wait_for(lambda: not segment_holders(file), 5), f"still held by {segment_holders(file)}"


KILLED_CLIENT = """
import os
import sys

import numpy as np
from distributed import Client, LocalCluster, get_task_stream

import ndshm
from ndshm.handles import segment_of


def total(x):
    return type(x).__name__, float(x.sum())


if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2)
    a = ndshm.from_array(np.arange(1 << 20, dtype=np.float64))
    fut = client.scatter(a, broadcast=True, direct=True)
    for w in client.scheduler_info(n_workers=-1)["workers"]:
        assert client.submit(total, fut, workers=[w], pure=False).result() == ("SharedArray", float(a.sum()))
    st = os.stat(f"/proc/self/fd/{segment_of(a).fd}")
    print(st.st_dev, st.st_ino, *client.run(os.getpid).values(), flush=True)
    sys.stdin.read()  # until killed
"""


def read_line(p: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if ready else ""


def test_a_sigkilled_client_takes_its_workers_and_memory_with_it(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT)
    p = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    descendants: list[psutil.Process] = []
    try:
        line = read_line(p, 45)
        assert line, "the client did not start its cluster"
        dev, inode, *workers = (int(v) for v in line.split())
        file = (dev, inode)
        descendants = psutil.Process(p.pid).children(recursive=True)
        assert set(workers) <= {d.pid for d in descendants}
        assert segment_holders(file) >= {p.pid, *workers}
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        exited = wait_for(lambda: not any(alive(d.pid) for d in descendants), 15)
        left = [d.pid for d in descendants if alive(d.pid)]
        assert exited, f"descendants of the killed client still run: {left}"
        assert wait_for(lambda: not segment_holders(file), 5), f"segment held by {segment_holders(file)}"
        assert not segments_owned_by([p.pid, *(d.pid for d in descendants)])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for d in descendants:  # only the processes found as its descendants
            try:
                if d.is_running() and alive(d.pid):
                    d.kill()
            except psutil.NoSuchProcess:
                pass


def test_results_dropped_by_the_caller_are_freed(client):
    """distributed's message log would keep every task (and with it the
    shared result) alive: ndshm.dask turns it off."""
    import weakref

    assert dask.config.get("distributed.admin.low-level-log-length") == 0
    a = ndshm.from_array(np.arange(10_000.0))
    for compute in (
        lambda: ndshm.dask.compute_into(ndshm.dask.to_dask(a, chunks=1000) * 2),
        lambda: ndshm.map_blocks(np.multiply, a, 2.0, chunks=1000, executor=client),
    ):
        r = compute()
        assert np.array_equal(r, np.arange(10_000.0) * 2)
        gone = weakref.ref(segment_of(r))
        del r
        assert wait_for(lambda gone=gone: gc.collect() >= 0 and gone() is None, 10.0)
