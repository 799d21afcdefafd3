"""ndshm on Dask across hosts: a cluster with two workers on this host and
one on a second "host" that these tests build on this machine.

The second host is a Dask worker started in its own network namespace
(reached over a veth pair, with addresses of the tests' own making), with
its own node name, pid namespace and a private tmpfs on /dev/shm: it can
map none of this host's segments, and ndshm's host key says so. No traffic
leaves the machine. Needs root (it is, on the machines ndshm is built on);
elsewhere the module is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from distributed import Client, LocalCluster, get_task_stream  # noqa: E402

import ndshm  # noqa: E402
import ndshm.dask  # noqa: E402
from ndshm.hosts import LABEL  # noqa: E402

FAR_NAME = "ndshm-far-host"
_n = os.getpid() % 250
NS = f"ndshm-t{os.getpid()}"
VETH_HERE, VETH_FAR = f"ndh{os.getpid() % 100000}", f"ndf{os.getpid() % 100000}"
NET = f"10.{200 + _n % 50}.{_n}"
HERE_IP, FAR_IP = f"{NET}.1", f"{NET}.2"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _make_netns() -> str | None:
    """Creates the second host's network; returns why not, if it cannot."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"no {tool} command"
    steps = [
        ("ip", "netns", "add", NS),
        ("ip", "link", "add", VETH_HERE, "type", "veth", "peer", "name", VETH_FAR),
        ("ip", "link", "set", VETH_FAR, "netns", NS),
        ("ip", "addr", "add", f"{HERE_IP}/24", "dev", VETH_HERE),
        ("ip", "link", "set", VETH_HERE, "up"),
        ("ip", "netns", "exec", NS, "ip", "addr", "add", f"{FAR_IP}/24", "dev", VETH_FAR),
        ("ip", "netns", "exec", NS, "ip", "link", "set", VETH_FAR, "up"),
        ("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"),
    ]
    for step in steps:
        r = _run(*step)
        if r.returncode != 0:
            _drop_netns()
            return f"{' '.join(step)} failed: {r.stderr.strip()}"
    return None


def _drop_netns() -> None:
    _run("ip", "netns", "del", NS)
    _run("ip", "link", "del", VETH_HERE)


def _start_far_worker(scheduler: str, log: Path) -> subprocess.Popen:
    dask_cli = Path(sys.executable).with_name("dask")
    inner = (
        f"hostname {FAR_NAME} && mount -t tmpfs -o size=1g,mode=1777 tmpfs /dev/shm && "
        f"exec {dask_cli} worker {scheduler} --host {FAR_IP} --nthreads 1 --no-nanny "
        "--no-dashboard --name far --preload ndshm.dask"
    )
    cmd = ["ip", "netns", "exec", NS, "unshare", "--uts", "--mount", "--pid", "--fork"]
    cmd += ["--mount-proc", "--kill-child", "sh", "-c", inner]
    # The tests' own functions are pickled by reference to this module.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """(client, local worker addresses, the far worker's address)."""
    why = _make_netns()
    if why is not None:
        pytest.skip(f"cannot build a second host here: {why}")
    log = tmp_path_factory.mktemp("far") / "worker.log"
    cluster = client = far = None
    try:
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host=HERE_IP, dashboard_address=None
        )
        client = Client(cluster)
        far = _start_far_worker(cluster.scheduler_address, log)
        try:
            client.wait_for_workers(3, timeout=90)
        except TimeoutError:
            pytest.fail(f"the far worker did not join:\n{log.read_text()[-3000:]}")
        workers = client.scheduler_info(n_workers=-1)["workers"]
        far_addr = next(w for w, info in workers.items() if info.get("name") == "far")
        here = [w for w in workers if w != far_addr]
        yield client, here, far_addr
    finally:
        if client is not None:
            client.close()
        if far is not None:
            far.kill()  # unshare --kill-child takes the worker with it
            far.wait(timeout=30)
        if cluster is not None:
            cluster.close()
        _drop_netns()


def _describe(x) -> tuple[str, float, str]:
    """What a worker sees: the type it got, the sum of its data, its host."""
    return type(x).__name__, float(np.asarray(x).sum()), socket.gethostname()


def _on(client, fn, *args, worker: str):
    return client.submit(fn, *args, workers=[worker], allow_other_workers=False, pure=False)


def test_the_far_worker_is_another_host(hosts):
    client, here, far = hosts
    seen = client.run(lambda: (socket.gethostname(), ndshm.hosts.LABEL, os.listdir("/dev/shm")))
    assert seen[far][0] == FAR_NAME and seen[far][1] != LABEL
    for w in here:
        assert seen[w][1] == LABEL


def test_scatter_sends_a_handle_here_and_bytes_there(hosts):
    client, here, far = hosts
    a = ndshm.from_array(np.arange(100_000, dtype=np.float64))
    want = float(a.sum())
    for worker, kind in [(here[0], "SharedArray"), (far, "ndarray")]:
        fut = client.scatter(a, workers=[worker], direct=True, hash=False)
        assert _on(client, _describe, fut, worker=worker).result()[:2] == (kind, want)
        client.cancel(fut)


def test_scatter_through_the_scheduler_reaches_every_host(hosts):
    """The scheduler relays scattered data to workers it picks: with a
    worker on another host, it must be given the bytes."""
    client, here, far = hosts
    a = ndshm.from_array(np.arange(50_000, dtype=np.int64))
    fut = client.scatter(a, broadcast=True)
    for worker in [*here, far]:
        kind, total, _ = _on(client, _describe, fut, worker=worker).result()
        # The scheduler forwards the same frames to every worker: bytes.
        assert (kind, total) == ("ndarray", float(a.sum()))
    client.cancel(fut)


def _make_shared(k: int):
    return ndshm.from_array(np.arange(1000, dtype=np.float64) * k)


def test_results_come_back_as_handles_here_and_bytes_from_there(hosts):
    client, here, far = hosts
    mine = _on(client, _make_shared, 2, worker=here[0]).result()
    theirs = _on(client, _make_shared, 3, worker=far).result()
    assert type(mine) is ndshm.SharedArray and np.array_equal(mine, np.arange(1000) * 2)
    assert type(theirs) is np.ndarray and np.array_equal(theirs, np.arange(1000) * 3)


def test_worker_to_worker_moves_keep_the_data(hosts):
    client, here, far = hosts
    made_here = _on(client, _make_shared, 5, worker=here[0])
    made_there = _on(client, _make_shared, 7, worker=far)
    # here -> there: bytes; there -> here: bytes; here -> here: a handle.
    assert _on(client, _describe, made_here, worker=far).result() == ("ndarray", 5 * 499500.0, FAR_NAME)
    assert _on(client, _describe, made_there, worker=here[1]).result()[:2] == ("ndarray", 7 * 499500.0)
    assert _on(client, _describe, made_here, worker=here[1]).result()[:2] == ("SharedArray", 5 * 499500.0)


def test_a_handle_pickled_to_another_host_fails_clearly(hosts):
    """Task arguments are pickled, not serialized: a plain handle reaching
    the far host names both hosts when it is used, and never crashes."""
    client, _, far = hosts
    a = ndshm.from_array(np.arange(10.0))

    def kind(x):
        return type(x).__name__

    assert _on(client, kind, a, worker=far).result() == "ForeignHandle"
    with pytest.raises(ValueError) as err:
        _on(client, _describe, a, worker=far).result()
    message = str(err.value)
    assert FAR_NAME in message and repr(socket.gethostname()) in message


def test_map_blocks_on_the_cluster_uses_both_hosts(hosts):
    client, _, far = hosts
    a = ndshm.from_array(np.arange(60_000, dtype=np.float64).reshape(600, 100))

    def shift(x, block_id=None):
        return x + block_id[0]

    with get_task_stream(client) as ts:
        out = ndshm.map_blocks(shift, a, chunks=(50, 100), executor=client)
    want = np.arange(60_000, dtype=np.float64).reshape(600, 100) + np.repeat(np.arange(12), 50)[:, None]
    assert type(out) is ndshm.SharedArray and np.array_equal(out, want)
    assert far in {t["worker"] for t in ts.data}


def test_map_on_the_cluster_sends_items_by_host(hosts):
    client, _, far = hosts
    a = ndshm.from_array(np.arange(1000, dtype=np.float64))
    items = [a[i : i + 100] for i in range(0, 1000, 100)]
    with get_task_stream(client) as ts:
        got = ndshm.map(lambda v: float(v.sum()), items, chunksize=1, executor=client)
    assert got == [float(v.sum()) for v in items]
    assert far in {t["worker"] for t in ts.data}


def test_store_and_compute_into_with_work_on_the_far_host(hosts):
    client, _, far = hosts
    a = ndshm.from_array(np.arange(200_000, dtype=np.float64).reshape(400, 500))
    x = ndshm.dask.to_dask(a, chunks=(50, 500))
    with dask.annotate(workers=[far], allow_other_workers=False):
        y = x * 2 + 1
    with get_task_stream(client) as ts:
        r = ndshm.dask.compute_into(y)
    assert type(r) is ndshm.SharedArray and np.array_equal(r, np.asarray(a) * 2 + 1)
    assert far in {t["worker"] for t in ts.data}
    out = ndshm.zeros((400, 500))
    with dask.annotate(workers=[far], allow_other_workers=False):
        z = x - 3
    assert ndshm.dask.store(z, out) is out
    assert np.array_equal(out, np.asarray(a) - 3)


def test_to_dask_chunks_reach_the_far_host(hosts):
    """Dask fuses chunk reads into the tasks that use them, so a task on the
    far host may read a to_dask chunk: a worker on the array's host slices
    it and the chunk comes over as bytes."""
    client, _, far = hosts
    a = ndshm.from_array(np.arange(300_000, dtype=np.float64))
    x = ndshm.dask.to_dask(a, chunks=10_000)
    with dask.annotate(workers=[far], allow_other_workers=False):
        y = x[::-1] + 1
    with get_task_stream(client) as ts:
        assert np.array_equal(y.compute(), np.asarray(a)[::-1] + 1)
    assert far in {t["worker"] for t in ts.data}
    assert float(x.sum().compute()) == float(a.sum())


def test_nothing_left_on_either_host(hosts):
    client, _, _ = hosts
    deadline = time.monotonic() + 10
    while True:
        left = client.run(lambda: [n for n in os.listdir("/dev/shm") if n.startswith("ndshm-")])
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(left.values()), left
