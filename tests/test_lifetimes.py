"""Lifetimes: anonymous arrays vanish with their last holder, even after
SIGKILL; named ones persist until deleted; a sender that exits or drops
the array right after sending still delivers it."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from procwatch import wait_for

import ndshm

HELPERS = Path(__file__).parent / "helpers"


def shmem_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem in /proc/meminfo")


def segment_files() -> list[str]:
    return sorted(n for n in os.listdir(ndshm._native.segment_dir()) if n.startswith("ndshm-"))


def test_anonymous_memory_is_freed_when_every_holder_is_sigkilled():
    size = 256 << 20
    shm_before = segment_files()
    before = shmem_bytes()
    p = subprocess.Popen(
        [sys.executable, str(HELPERS / "hold_and_wait.py"), str(size)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(p.stdout.readline())
        # Both processes map it: the memory is counted once, as shared memory.
        assert shmem_bytes() - before > size * 0.9
    finally:
        p.kill()
        p.wait()
    os.kill(child, signal.SIGKILL)
    # The spawned child is not ours to reap (its parent is dead); wait for it.
    assert wait_for(lambda: not Path(f"/proc/{child}/fd").exists() or not os.listdir(f"/proc/{child}/fd"), 10)
    assert wait_for(lambda: shmem_bytes() - before < size * 0.25, 10), "memory not freed after SIGKILL"
    assert segment_files() == shm_before  # nothing appeared in /dev/shm


def _create_named_and_die(name):
    a = ndshm.from_array(np.arange(10.0), name=name)
    a[0] = 42
    os.kill(os.getpid(), signal.SIGKILL)


def test_named_array_outlives_its_killed_creator(shm_name):
    p = mp.get_context("spawn").Process(target=_create_named_and_die, args=(shm_name,))
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    a = ndshm.attach(shm_name)
    assert a[0] == 42 and a[9] == 9
    (info,) = [s for s in ndshm.list() if s.name == shm_name]
    assert info.status == "ready" and not info.owner_alive
    assert shm_name not in ndshm.gc()  # named arrays live until deleted
    ndshm.delete(shm_name)


def _send_and_return(conn, n):
    a = ndshm.from_array(np.arange(float(n)))
    conn.send(a[10:20])


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_child_that_sends_and_exits_at_once_still_delivers(method):
    ctx = mp.get_context(method)
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_send_and_return, args=(w, 1000))
    p.start()
    p.join()  # the sender is gone before we even look
    assert p.exitcode == 0
    v = r.recv()
    assert isinstance(v, ndshm.SharedArray)
    assert v.tolist() == list(map(float, range(10, 20)))
    v[0] = -1  # still shared memory, writable
    assert v[0] == -1


def keeper_of(seg_id: int) -> bool:
    """Whether a keeper serves segment `seg_id` (its abstract socket exists)."""
    tag = f"@ndshm-keep-{os.getuid()}-{seg_id:016x}"
    return any(line.endswith(tag) for line in Path("/proc/net/unix").read_text().splitlines())


def _send_id_then_view(conn):
    a = ndshm.from_array(np.arange(100.0))
    conn.send(ndshm.handles.segment_of(a).id)
    conn.send(a[1:])


def test_keeper_goes_away_once_the_handoff_is_settled():
    ctx = mp.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_send_id_then_view, args=(w,))
    p.start()
    p.join()
    seg_id = r.recv()
    assert keeper_of(seg_id), "the exiting sender should have left a keeper"
    assert r.recv()[0] == 1.0
    assert wait_for(lambda: not keeper_of(seg_id), timeout=5), "keeper still running after the handoff"


def test_sender_that_drops_the_array_after_sending_still_delivers():
    r, w = mp.Pipe(duplex=False)
    a = ndshm.from_array(np.arange(50.0))
    w.send(a[::5])
    del a
    gc.collect()
    v = r.recv()
    assert v.tolist() == [float(x) for x in range(0, 50, 5)]


def holders_of(inode: int) -> int:
    """How many fds and mappings of this process refer to the file `inode`."""
    n = 0
    for f in Path("/proc/self/fd").iterdir():
        try:
            n += os.stat(f).st_ino == inode
        except OSError:
            pass
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        n += len(fields) > 4 and fields[4] == str(inode)
    return n


def test_dropping_an_unsent_array_lets_it_go():
    a = ndshm.zeros(1 << 20)
    inode = os.fstat(ndshm.handles.segment_of(a).fd).st_ino
    assert holders_of(inode) == 2  # its fd and its mapping
    del a
    gc.collect()
    # No fd and no mapping left in this process: the kernel frees it.
    assert holders_of(inode) == 0


def test_abandoned_creation_leaves_nothing(shm_name):
    seg = ndshm._native.create("'<f8'", [10], False, shm_name)
    assert ndshm.exists(shm_name)
    seg.abandon()
    assert not ndshm.exists(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.attach(shm_name)


def test_failed_fill_leaves_nothing(shm_name):
    with pytest.raises(ValueError):
        ndshm.full(3, "not a number", dtype=float, name=shm_name)
    assert not ndshm.exists(shm_name)
