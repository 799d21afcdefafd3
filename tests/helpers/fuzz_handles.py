"""Unpickles every single-byte corruption of pickled ndshm handles.

Run as a child process by tests/test_hostile.py, so that a crash shows up
as a negative exit code. Usage: ``fuzz_handles.py FILE...`` where each FILE
holds one pickled view. Prints one JSON object per line (per handle) with
the counts of outcomes; ``bad`` lists every outcome that broke a promise
(an array reaching outside its segment's data, or an array of another
segment).

Anonymous handles name a process id and a file number that the receiver
opens under /proc. A corrupted process id may name any process on the
machine; so as not to open files of processes the test did not start,
those handles are refused here (counted as ``foreign_pid``) before they
reach the native code.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import sys

import numpy as np
from wire import anonymous_pid

import ndshm
from ndshm import _native, handles

_allowed_pids = {os.getpid(), os.getppid()}


class ForeignPid(Exception):
    pass


def _guarded_rebuild(wire):
    if isinstance(wire, bytes):
        pid = anonymous_pid(wire)
        if pid is not None and pid not in _allowed_pids:
            raise ForeignPid(pid)
    return _native.rebuild(wire)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("ndshm._native", "rebuild"):
            return _guarded_rebuild
        return super().find_class(module, name)


def _loads(data: bytes):
    return _Unpickler(io.BytesIO(data)).load()


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    return np.lib.array_utils.byte_bounds(a)


def check(result, orig_seg) -> str | None:
    """None if `result` is acceptable, else what is wrong with it."""
    if not isinstance(result, np.ndarray):
        return None  # some other object: no memory of ours is involved
    seg = handles.segment_of(result)
    if seg is None:
        if isinstance(result, ndshm.SharedArray):
            return f"a SharedArray not backed by a segment: shape {result.shape}"
        return None
    if seg.id != orig_seg.id:
        return f"an array of another segment (id {seg.id:#x})"
    lo, hi = _byte_bounds(result)
    if result.size and not (seg.address <= lo and hi <= seg.address + seg.nbytes):
        return (
            f"array reaching {lo - seg.address}..{hi - seg.address} outside "
            f"0..{seg.nbytes}: shape {result.shape} strides {result.strides} dtype {result.dtype}"
        )
    if 0 < result.nbytes <= 1 << 20:
        np.array(result, copy=True)  # touch every byte: would crash if out of bounds
    return None


def fuzz(data: bytes) -> dict:
    orig = pickle.loads(data)
    orig_seg = handles.segment_of(orig)
    assert orig_seg is not None, "the original handle does not rebuild a shared view"
    outcomes: collections.Counter[str] = collections.Counter()
    bad: list[str] = []
    for i in range(len(data)):
        x = data[i]
        for v in sorted({x ^ 0x01, x ^ 0x80, 0x00, 0xFF} - {x}):
            mutated = data[:i] + bytes([v]) + data[i + 1 :]
            try:
                result = _loads(mutated)
            except ForeignPid:
                outcomes["foreign_pid"] += 1
                continue
            except Exception as e:
                outcomes[type(e).__name__] += 1
                continue
            problem = check(result, orig_seg)
            if problem is None:
                outcomes["array" if isinstance(result, np.ndarray) else "other_object"] += 1
            else:
                outcomes["bad"] += 1
                bad.append(f"byte {i} -> {v:#04x}: {problem}")
            del result
    return {"bytes": len(data), "outcomes": dict(outcomes), "bad": bad[:20]}


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        print(json.dumps({"file": os.path.basename(path), **fuzz(data)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
