"""Races on one name, creators killed anywhere, and resource limits: only
documented outcomes (README, "Errors"), never a panic, and nothing left
behind once gc has run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.segment_dir import own_segment_dir

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture
def own_dir(monkeypatch):
    """A directory of named segments (NDSHM_DIR) for this test alone, so
    gc and list see only what the test makes."""
    with own_segment_dir(monkeypatch, "ndshm_races.") as d:
        yield d


def _counts(proc: subprocess.Popen, timeout: float) -> Counter:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # ours: started by this test
        out, err = proc.communicate()
        pytest.fail(f"helper hung: {err[-2000:]!r}")
    assert proc.returncode == 0, err[-2000:]
    return Counter(json.loads(out.strip().splitlines()[-1]))


def test_one_name_raced_from_four_processes(own_dir, shm_name):
    roles = ["create", "create", "attach", "inspect"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPERS / "race_roles.py"), role, shm_name, "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    total = sum((_counts(p, 60) for p in procs), Counter())
    print("race outcomes:", dict(sorted(total.items())))
    assert [k for k in total if k.startswith("BAD")] == []
    assert total["create: ok"] > 0 and total["attach: array"] + total["attach: FileNotFoundError"] > 0
    assert os.listdir(own_dir) in ([], [f"ndshm-{shm_name}"])


def test_creators_killed_anywhere_leave_only_what_gc_removes(own_dir, shm_name):
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "kill_creators.py"), shm_name, "48"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    counts = _counts(proc, 120)
    print("kill outcomes:", dict(sorted(counts.items())))
    assert [k for k in counts if k.startswith("BAD")] == []
    assert sum(counts.values()) == 48
    assert os.listdir(own_dir) == []


def test_no_panic_under_an_address_space_limit():
    code = textwrap.dedent(
        """
        import re, resource
        import numpy as np
        import ndshm
        status = open("/proc/self/status").read()
        vm = int(re.search(r"VmSize:\\s+(\\d+) kB", status).group(1)) * 1024
        limit = vm + (1 << 30) + (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        src = np.ones(1 << 24)
        for make in (
            lambda: ndshm.zeros(1 << 27),
            lambda: ndshm.zeros(1 << 28),
            lambda: ndshm.from_array(src),
            lambda: ndshm.empty(1 << 31, dtype=np.uint8),
        ):
            try:
                a = make()
                print("ok")
                del a
            except BaseException as e:
                print(type(e).__name__)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    outcomes = r.stdout.split()
    assert len(outcomes) == 4 and set(outcomes) <= {"ok", "MemoryError"}, (outcomes, r.stderr)
    assert "panicked" not in r.stderr
