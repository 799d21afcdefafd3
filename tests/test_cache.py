"""Received segments stay mapped a moment after their last use, so that a
worker receiving the same array task after task maps it once, and then
let go, so that memory still comes back."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

import ndshm

CTX = mp.get_context("spawn")


def _mappings_of(inode: int) -> int:
    return sum(
        1
        for line in Path("/proc/self/maps").read_text().splitlines()
        if len(line.split()) > 4 and line.split()[4] == str(inode)
    )


def _receive_twice(conn):
    """Receives an array, drops it, receives it again: reports the data
    addresses and how many mappings of the segment exist over time."""
    a = conn.recv()
    addr1 = ndshm.handles.segment_of(a).address
    inode = os.fstat(ndshm.handles.segment_of(a).fd).st_ino
    del a
    b = conn.recv()
    addr2 = ndshm.handles.segment_of(b).address
    maps_while_used = _mappings_of(inode)
    del b
    kept = _mappings_of(inode)
    deadline = time.monotonic() + 10
    while _mappings_of(inode) and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.send((addr1 == addr2, maps_while_used, kept, _mappings_of(inode)))


def test_a_received_array_is_mapped_once_and_let_go_after_a_moment():
    a = ndshm.from_array(np.arange(1000.0))
    parent, child = CTX.Pipe()
    p = CTX.Process(target=_receive_twice, args=(child,))
    p.start()
    parent.send(a)
    parent.send(a[10:])
    same_address, while_used, kept, finally_ = parent.recv()
    p.join(30)
    assert same_address  # the second handoff reused the first mapping
    assert while_used == 1
    assert kept == 1  # still mapped just after the last use ...
    assert finally_ == 0  # ... and let go once its time was up


def _receive_with_cache_off(conn):
    a = conn.recv()
    inode = os.fstat(ndshm.handles.segment_of(a).fd).st_ino
    del a
    conn.send(_mappings_of(inode))


def test_the_cache_can_be_turned_off():
    a = ndshm.zeros(100)
    parent, child = CTX.Pipe()
    old = os.environ.get("NDSHM_MAP_CACHE")
    os.environ["NDSHM_MAP_CACHE"] = "0"  # read by the child at start
    try:
        p = CTX.Process(target=_receive_with_cache_off, args=(child,))
        p.start()
    finally:
        if old is None:
            del os.environ["NDSHM_MAP_CACHE"]
        else:
            os.environ["NDSHM_MAP_CACHE"] = old
    parent.send(a)
    assert parent.recv() == 0  # unmapped as soon as the array was dropped
    p.join(30)


def test_explicit_attach_is_not_cached(shm_name):
    ndshm.zeros(10, name=shm_name)
    before = ndshm._native.release_cached()
    assert before >= 0
    x = ndshm.attach(shm_name)
    del x
    assert ndshm._native.release_cached() == 0
