"""A Rust process and a Python process share one segment, each writing
what the other reads (the Rust side is crates/ndshm/examples/peer.rs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import ndshm

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
