"""Mutated pickled handles, unpickled in child processes (a brief run of
tests/helpers/fuzz_handles.py; `make fuzz` runs it longer): every mutation
gives a clean error, an object that is no array of ours, or a view whose
every byte lies inside its segment's data. Out-of-bounds views, crashes,
hangs and internal errors are counted and must not happen."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "fuzz_handles", Path(__file__).parent / "helpers" / "fuzz_handles.py"
)
assert _spec and _spec.loader
fuzz_handles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_handles)

COUNT = 1500


@pytest.fixture
def handles(shm_name):
    handles, keep = fuzz_handles.sample_handles(shm_name)
    yield handles
    for label, data in handles.items():
        if label.startswith("anonymous"):
            pickle.loads(data)  # settle the pending handoff
    del keep


def _run(handles: dict[str, bytes], labels: list[str]) -> dict:
    report = fuzz_handles.run({k: handles[k] for k in labels}, COUNT, seed=7)
    print({k: v for k, v in report.items() if k != "bad"})
    for line in report["bad"]:
        print(line[:600])
    assert report["tried"] == COUNT
    return report


def test_mutated_handles_without_a_dtype_are_safe(handles):
    """Views with the segment's own dtype: the handle carries no dtype."""
    report = _run(handles, [k for k in handles if k.startswith(("anonymous", "named-rows"))])
    # Every outcome but clean errors, in-bounds views and other objects
    # (out-of-bounds views, crashes, hangs, ...) is counted here.
    assert report["bad_by_handle"] == {}, report["bad"]
    # The run met both outcomes, so it tested something.
    assert report.get("clean_error", 0) > COUNT // 10
    assert report.get("in_bounds", 0) > COUNT // 20


def test_mutated_handles_with_a_structured_dtype_are_safe(handles):
    """Views of fields (e.g. d[["b", "c"]]): the handle carries the dtype,
    whose every byte (field offsets, item sizes, flags) is mutated too."""
    report = _run(handles, [k for k in handles if not k.startswith(("anonymous", "named-rows"))])
    # Every outcome but clean errors, in-bounds views and other objects
    # (out-of-bounds views, crashes, hangs, ...) is counted here.
    assert report["bad_by_handle"] == {}, report["bad"]
    assert report.get("clean_error", 0) > COUNT // 10
    # A mutated dtype text rarely still describes a valid dtype: fewer views
    # survive than for handles without one, but some must.
    assert report.get("in_bounds", 0) > COUNT // 100
