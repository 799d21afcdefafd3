"""Shared fixtures. Every test leaves /dev/shm as it found it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

# Handles a test pickles without unpickling keep their arrays alive after
# the test process exits (a keeper process); keep that short here.
os.environ.setdefault("NDSHM_HANDOFF_LINGER", "3")

import ndshm
from ndshm import _native

SHM = Path(_native.segment_dir())
# Every name the fixtures hand out starts with this session's tag, so the
# leak check sees only this session's segments (not a concurrent run's).
TAG = f"t{os.getpid() % 100000}-"


def _ours() -> set[str]:
    return {p.name for p in SHM.glob(f"ndshm-{TAG}*")}


@pytest.fixture(scope="session", autouse=True)
def no_leaked_segments():
    """Fails the session if tests leave ndshm segments in /dev/shm."""
    before = _ours()
    yield
    leaked = _ours() - before
    for name in leaked:
        (SHM / name).unlink(missing_ok=True)
    assert not leaked, f"tests leaked segments: {sorted(leaked)}"


@pytest.fixture
def shm_name(request):
    """A unique segment name, deleted after the test if it still exists."""
    names: list[str] = []

    def make() -> str:
        name = f"{TAG}{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    first = make()
    request.node.make_name = make
    yield first
    for name in names:
        if ndshm.exists(name):
            ndshm.delete(name)


@pytest.fixture
def more_names(shm_name, request):
    """A factory for further unique names (cleaned like `shm_name`)."""
    return request.node.make_name
