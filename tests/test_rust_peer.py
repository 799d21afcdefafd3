"""A Rust process and a Python process share one segment, each writing
what the other reads (the Rust side is crates/ndshm/examples/peer.rs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import ndshm
from ndshm import handles

PEER = Path(__file__).resolve().parents[1] / "target" / "release" / "examples" / "peer"


def peer(*args: str) -> subprocess.CompletedProcess:
    if not PEER.exists():
        pytest.fail(f"{PEER} is missing: `make build` builds it")
    return subprocess.run([str(PEER), *args], capture_output=True, text=True, timeout=60)


def test_rust_creates_python_reads_and_writes_rust_reads(shm_name):
    r = peer("create", shm_name, "30", "40")
    assert r.returncode == 0, r.stderr
    a = ndshm.attach(shm_name)
    assert a.dtype == np.float64 and a.shape == (30, 40)
    assert np.array_equal(a, np.arange(1200.0).reshape(30, 40))
    a += 2.5
    r = peer("check", shm_name, "2.5")
    assert r.returncode == 0, r.stderr


def test_python_creates_rust_writes_python_reads(shm_name):
    a = ndshm.from_array(np.arange(600.0).reshape(20, 30), name=shm_name)
    r = peer("check", shm_name, "0")
    assert r.returncode == 0, r.stderr
    r = peer("add", shm_name, "-1")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(a, np.arange(600.0).reshape(20, 30) - 1)


def test_rust_refuses_a_view_of_the_wrong_dtype(shm_name):
    ndshm.zeros((3, 3), dtype=np.int32, name=shm_name)
    r = peer("check", shm_name, "0")
    assert r.returncode != 0 and "dtype mismatch" in r.stderr


def test_rust_sends_an_anonymous_view_python_writes_rust_reads():
    if not PEER.exists():
        pytest.fail(f"{PEER} is missing: `make build` builds it")
    p = subprocess.Popen(
        [str(PEER), "send", "6", "5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        wire = bytes.fromhex(p.stdout.readline().strip())
        v = handles.rebuild(wire)
        expected = np.arange(30.0).reshape(6, 5)
        assert isinstance(v, ndshm.SharedArray) and handles.segment_of(v).name is None
        assert np.array_equal(v, expected[1:, ::2])
        assert handles.segment_of(v).pending == 0  # the attach settled the handoff
        v += 100.0
        p.stdin.write("sum\n")
        p.stdin.flush()
        expected[1:, ::2] += 100.0
        assert float(p.stdout.readline()) == expected.sum()
    finally:
        p.stdin.close()
        assert p.wait(timeout=60) == 0


@pytest.mark.parametrize("view", ["whole", "strided", "reversed"])
def test_python_sends_an_anonymous_view_rust_writes(view):
    a = ndshm.from_array(np.arange(48.0).reshape(6, 8))
    v = {"whole": a, "strided": a[1:, ::3], "reversed": a[::-1, 2:5]}[view]
    fn, (wire,) = v.__reduce_ex__(5)
    assert fn is handles.rebuild and handles.segment_of(a).pending == 1
    r = peer("recv", wire.hex(), "0.5")
    assert r.returncode == 0, r.stderr
    expected = np.arange(48.0).reshape(6, 8)
    {"whole": expected, "strided": expected[1:, ::3], "reversed": expected[::-1, 2:5]}[view][...] += 0.5
    assert np.array_equal(a, expected)
    assert handles.segment_of(a).pending == 0


def test_rust_refuses_a_forged_handle():
    a = ndshm.from_array(np.arange(10.0))
    _, (wire,) = a[2:].__reduce_ex__(5)
    # The view's tail: offset 16, one dimension of 8 items 8 bytes apart
    # (zigzag varints); made 10 items, it reaches past the end.
    assert wire.endswith(bytes([0x20, 0x01, 0x10, 0x10]))
    forged = wire[:-2] + bytes([0x14, 0x10])
    r = peer("recv", forged.hex(), "1")
    assert r.returncode != 0 and "bad ndshm handle" in r.stderr, r.stderr
    np.testing.assert_array_equal(a, np.arange(10.0))
