"""A directory of named segments (NDSHM_DIR) for one test alone, so that
gc and list see only what the test makes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ndshm import _native


@contextmanager
def own_segment_dir(monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[Path]:
    """A fresh tmpfs directory set as NDSHM_DIR, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    monkeypatch.setenv("NDSHM_DIR", str(d))
    assert _native.segment_dir() == str(d)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
