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
those attaches are refused here (counted as ``foreign_pid``) before they
reach the native code.

Mutation run: ``fuzz_handles.py --mutate N [--seed S]`` creates its own
segments and views (plain and structured dtypes, named and anonymous),
then tries N mutated handles (``run()``; the tests call it with their own
handles): first every pickled integer of each handle rewritten to chosen
values (field offsets, item sizes and flags of the pickled dtype among
them), then random mutations: bytes changed (half of the time inside the
pickled dtype), integers rewritten, strings replaced, truncations and
splices of two handles. Each mutation is a pure function of (seed, index),
so a crash names the mutation that caused it. Children (``--child``) do
the unpickling, report every outcome as it happens, and are restarted
after the mutation that crashed or hung them.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import io
import json
import os
import pickle
import pickletools
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:  # imported by the tests, or run as a script from this folder
    from tests.helpers.wire import anonymous_pid
except ImportError:
    from wire import anonymous_pid

import ndshm
from ndshm import _native, handles

_allowed_pids = {os.getpid(), os.getppid()}


class ForeignPid(Exception):
    pass


def _guarded_rebuild(wire):
    # Mutated anonymous handles may name other processes' fds: never open those.
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


# ---------------------------------------------------------------- mutation run

# Values a rewritten integer takes, by the width of its pickle encoding.
INTERESTING = {
    1: [0, 1, 2, 7, 8, 9, 15, 16, 17, 24, 32, 63, 64, 127, 128, 255],
    2: [0, 1, 255, 256, 4095, 4096, 4097, 0x7FFF, 0x8000, 0xFFFF],
    4: [0, 1, -1, -2, 8, 16, 4096, 1 << 24, 2**31 - 1, -(2**31), 1 << 30],
    8: [0, 1, -1, 2**63 - 1, -(2**63), 1 << 40, 1 << 62, 2**32 + 1],
}
INT_FORMATS = {"BININT1": ("<B", 1), "BININT2": ("<H", 2), "BININT": ("<i", 4)}
STRINGS = [
    "<f8",
    "<i8",
    "|O",
    "O",
    "O8",
    "V16",
    "V8",
    "V0",
    "V",
    "|V4096",
    "<U2",
    "S0",
    "M8[ns]",
    "b",
    "a",
    "",
    "|",
]


def int_fields(data: bytes) -> list[tuple[int, int, bool]]:
    """(position, width, signed) of every integer argument in a pickle."""
    fields = []
    try:
        for op, _arg, pos in pickletools.genops(data):
            if op.name in INT_FORMATS:
                fmt, width = INT_FORMATS[op.name]
                fields.append((pos + 1, width, fmt == "<i"))
            elif op.name == "LONG1" and data[pos + 1] in (1, 2, 4, 8):
                fields.append((pos + 2, data[pos + 1], True))
    except Exception:
        pass
    return fields


def str_fields(data: bytes) -> list[tuple[int, int, int]]:
    """(position of the opcode, length of its length prefix, text length) of every string."""
    fields = []
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "SHORT_BINUNICODE":
                fields.append((pos, 1, len(arg.encode())))
            elif op.name == "BINUNICODE":
                fields.append((pos, 4, len(arg.encode())))
    except Exception:
        pass
    return fields


def bytes_fields(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of the payload of every bytes object in a pickle."""
    fields = []
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"):
                prefix = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8}[op.name]
                fields.append((pos + 1 + prefix, len(arg)))
    except Exception:
        pass
    return fields


def dtype_start(data: bytes) -> int:
    """Where the pickled dtype begins (the rest of the handle before it)."""
    i = data.find(b"numpy")
    return i if i >= 0 else len(data) // 2


def put_int(data: bytes, pos: int, width: int, signed: bool, value: int) -> bytes:
    value %= 1 << (8 * width)
    raw = value.to_bytes(width, "little")
    return data[:pos] + raw + data[pos + width :]


def directed(handles: list[bytes]) -> list[tuple[int, int, int, bool, int]]:
    """Every integer of every handle set to every value of its width, and
    every byte of a bytes payload to every 1-byte value: (handle, pos,
    width, signed, value)."""
    out = []
    for h, data in enumerate(handles):
        for pos, width, signed in int_fields(data):
            for v in INTERESTING[width]:
                out.append((h, pos, width, signed, v))
        # A handle encoded as one bytes object: each of its bytes.
        for start, n in bytes_fields(data):
            for pos in range(start, start + n):
                for v in INTERESTING[1]:
                    out.append((h, pos, 1, False, v))
    return out


def mutation(handles: list[bytes], seed: int, index: int) -> tuple[str, bytes]:
    """Mutation number `index` of the run with `seed`: (what it did, the bytes)."""
    plan = directed(handles)
    if index < len(plan):
        h, pos, width, signed, v = plan[index]
        return f"handle {h}: int at {pos} -> {v}", put_int(handles[h], pos, width, signed, v)
    rng = random.Random(seed * 1_000_003 + index)
    h = rng.randrange(len(handles))
    data = handles[h]
    kind = rng.choice(["bytes", "bytes", "ints", "ints", "payload", "digits", "string", "truncate", "splice"])
    if kind == "bytes":
        lo = dtype_start(data) if rng.random() < 0.5 else 0
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(lo, len(b))
            b[i] = rng.choice(
                [0, 0xFF, 0x7F, 0x80, b[i] ^ 1, b[i] ^ 0x80, (b[i] + 1) & 0xFF, rng.randrange(256)]
            )
        return f"handle {h}: bytes", bytes(b)
    if kind == "ints":
        fields = int_fields(data)
        for _ in range(rng.randint(1, 3)):
            if not fields:
                break
            pos, width, signed = rng.choice(fields)
            v = rng.choice(
                INTERESTING[width] + [rng.randrange(-(1 << (8 * width - 1)), 1 << (8 * width - 1))]
            )
            data = put_int(data, pos, width, signed, v)
        return f"handle {h}: ints", data
    if kind == "payload":
        # Integers of any width inside bytes objects (a handle's own encoding).
        for start, n in bytes_fields(data)[:1] * rng.randint(1, 3):
            width = rng.choice([w for w in (1, 2, 4, 8) if w <= n] or [0])
            if width:
                pos = start + rng.randrange(n - width + 1)
                data = put_int(data, pos, width, True, rng.choice(INTERESTING[width]))
        return f"handle {h}: payload ints", data
    if kind == "digits":
        # A number written as text (a dtype's size or shape) changed, same length.
        runs = [(m.start(), m.end()) for m in re.finditer(rb"[0-9]+", data)]
        if runs:
            a, b = rng.choice(runs)
            digits = "".join(rng.choice("0123456789") for _ in range(b - a)).encode()
            return f"handle {h}: digits at {a} -> {digits!r}", data[:a] + digits + data[b:]
        return f"handle {h}: digits (none)", data
    if kind == "string":
        fields = str_fields(data)
        if fields:
            pos, prefix, n = rng.choice(fields)
            new = rng.choice(STRINGS).encode()
            length = len(new).to_bytes(prefix, "little")
            return f"handle {h}: string at {pos} -> {new!r}", data[: pos + 1] + length + new + data[
                pos + 1 + prefix + n :
            ]
        return f"handle {h}: string (none)", data
    if kind == "truncate":
        return f"handle {h}: truncated", data[: rng.randrange(len(data))]
    other = handles[rng.randrange(len(handles))]
    a, b = rng.randrange(len(data)), rng.randrange(len(other))
    return f"handle {h}: spliced", data[:a] + other[b:]


def field_extents(a: np.ndarray):
    """Byte bounds of `a` and of every field view in it, nested fields too."""
    yield _byte_bounds(a)
    for name in a.dtype.names or ():
        yield from field_extents(a[name])


def dtype_problem(dt: np.dtype, whole: bool = True) -> str | None:
    """What makes a dtype unsafe to read (numpy trusts its fields), if anything.
    A field may take no bytes (a subarray of shape (0,)); a whole item may not."""
    if dt.itemsize < 0 or (whole and dt.itemsize == 0):
        return f"item size {dt.itemsize}"
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        if base.itemsize * int(np.prod(shape)) != dt.itemsize:
            return f"subarray {shape} of {base.itemsize}-byte items in {dt.itemsize} bytes"
        return dtype_problem(base, whole=False)
    for name, (field, offset, *_title) in (dt.fields or {}).items():
        if offset < 0 or offset + field.itemsize > dt.itemsize:
            return (
                f"field {name!r} at {offset}..{offset + field.itemsize} outside its {dt.itemsize}-byte item"
            )
        inner = dtype_problem(field, whole=False)
        if inner:
            return inner
    return None


def holds_objects(dt: np.dtype) -> bool:
    """Whether any part of `dt` is an object: by its flags, or by its type
    (a forged dtype may have the one without the other)."""
    if dt.hasobject or dt.kind == "O":
        return True
    if dt.subdtype is not None:
        return holds_objects(dt.subdtype[0])
    return any(holds_objects(field) for field, *_ in (dt.fields or {}).values())


def judge(result, seg_ids: dict[int, tuple[int, int]]) -> tuple[str, str]:
    """Outcome code and detail of an unpickled object (see CODES)."""
    if not isinstance(result, np.ndarray):
        return "other", type(result).__name__
    seg = handles.segment_of(result)
    if seg is None:
        if isinstance(result, ndshm.SharedArray):
            return "unusable", f"a SharedArray not backed by a segment: shape {result.shape}"
        return "other", "a private array"
    if seg.id not in seg_ids:
        return "wrong_segment", f"an array of another segment (id {seg.id:#x})"
    if holds_objects(result.dtype):
        return "object_view", f"a view of Python objects: {result.dtype!r}"
    what = f"shape {result.shape} strides {result.strides} dtype {result.dtype!r}"
    try:
        if result.size:
            for lo, hi in field_extents(result):
                if not (seg.address <= lo and hi <= seg.address + seg.nbytes):
                    return (
                        "out_of_bounds",
                        f"reaching {lo - seg.address}..{hi - seg.address} outside 0..{seg.nbytes}: {what}",
                    )
            # A field beyond its item reaches past the array's own bounds
            # (outside the data for the last items): never touch it.
            problem = dtype_problem(result.dtype)
            if problem:
                return "out_of_bounds", f"{problem}: {what}"
            if result.nbytes <= 1 << 20:
                np.array(result, copy=True).tobytes()  # touch every byte
            else:
                for corner in (0, -1):
                    result[(corner,) * result.ndim].tobytes()
    except Exception as e:
        return "unusable", f"{type(e).__name__}: {e}: {what}"
    return "in_bounds", ""


# Room for Python, numpy and the handles' segments (about 150 MB).
CHILD_ADDRESS_SPACE = 1 << 30

# Outcomes: all but these must stay at zero.
FINE = {"clean_error", "in_bounds", "other", "foreign_pid"}


def child(handle_dir: str, seed: int, start: int, stop: int, out_path: str) -> None:
    """Tries mutations start..stop, appending one line per outcome to out_path."""
    faulthandler.enable(all_threads=True)  # a crash or a stall shows where
    # A mutated pickle may ask for a memo of gigabytes (a huge LONG_BINPUT
    # index): with the address space capped that is a quick MemoryError,
    # not minutes of paging on a shared machine.
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    paths = sorted(Path(handle_dir).glob("*.pickle"))
    blobs = [p.read_bytes() for p in paths]
    seg_ids = {}
    for data in blobs:
        seg = handles.segment_of(pickle.loads(data))
        seg_ids[seg.id] = (seg.address, seg.nbytes)
    out = os.open(out_path, os.O_WRONLY | os.O_APPEND)
    for i in range(start, stop):
        _what, data = mutation(blobs, seed, i)
        try:
            result = _loads(data)
        except ForeignPid:
            code, detail = "foreign_pid", ""
        except Exception as e:
            code, detail = ("internal_error", repr(e)) if isinstance(e, SystemError) else ("clean_error", "")
        except BaseException as e:  # a Rust panic arrives as a BaseException
            code, detail = "panic", repr(e)
        else:
            code, detail = judge(result, seg_ids)
            del result
        os.write(
            out, json.dumps([i, code, detail[:300]]).encode() + b"\n" if detail else f"{i} {code}\n".encode()
        )
    os.close(out)


def run(handles: dict[str, bytes], count: int, seed: int = 1, stall: float = 30.0) -> dict:
    """Tries `count` mutations of `handles` in child processes; returns the counts."""
    counts: collections.Counter[str] = collections.Counter()
    bad: list[str] = []
    bad_by_handle: collections.Counter[str] = collections.Counter()
    labels = sorted(handles)
    ordered = [handles[k] for k in labels]

    def note(i: int, code: str, detail: str) -> None:
        what = mutation(ordered, seed, i)[0]
        label = labels[int(what.split(":")[0].split()[1])]
        bad_by_handle[f"{label}: {code}"] += 1
        if bad_by_handle[f"{label}: {code}"] <= 3:  # a few examples of each
            bad.append(f"mutation {i} ({label}, {what}): {code}: {detail}")

    with tempfile.TemporaryDirectory(prefix="ndshm-fuzz-") as tmp:
        for k in sorted(handles):
            Path(tmp, f"{k}.pickle").write_bytes(handles[k])
        out_path = os.path.join(tmp, "outcomes")
        start = 0
        while start < count:
            open(out_path, "w").close()
            err_path = os.path.join(tmp, "stderr")
            with open(err_path, "w") as err:  # a file, not a pipe: a full pipe would stall the child
                p = subprocess.Popen(
                    [sys.executable, __file__, "--child", tmp, str(seed), str(start), str(count), out_path],
                    stderr=err,
                )
            done, last, last_change, stalled = start, -1, time.monotonic(), False
            while p.poll() is None:
                time.sleep(0.05)
                size = os.path.getsize(out_path)
                if size != last:
                    last, last_change = size, time.monotonic()
                elif time.monotonic() - last_change > stall:
                    # Our own child, stuck: its stacks go to its stderr, then it ends.
                    stalled = True
                    p.send_signal(signal.SIGABRT)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            stderr = Path(err_path).read_text(errors="replace")
            for line in Path(out_path).read_text().splitlines():
                if line.startswith("["):
                    i, code, detail = json.loads(line)
                else:
                    i, code = line.split()
                    i, detail = int(i), ""
                counts[code] += 1
                if code not in FINE:
                    note(i, code, detail)
                done = i + 1
            if p.returncode == 0 and done == count:
                break
            # The child died or hung on mutation `done`: count it, go on after it.
            code = "hang" if stalled else "crash"
            counts[code] += 1
            note(
                done,
                code,
                f"exit {p.returncode}: {stderr[-1500:]!r}: input {mutation(ordered, seed, done)[1].hex()}",
            )
            start = done + 1
    tried = sum(counts.values())
    return {"tried": tried, **dict(counts), "bad_by_handle": dict(bad_by_handle), "bad": bad}


def sample_handles(name: str) -> tuple[dict[str, bytes], list[np.ndarray]]:
    """Handles of views of plain and structured arrays, named and anonymous
    (the arrays are returned too: they must live while the handles are used)."""
    rec = [("a", "<i8"), ("b", "<f4", (2,)), ("c", [("x", "<i2"), ("y", "|u1")])]
    named = ndshm.zeros(256, dtype=rec, name=name)
    plain = ndshm.from_array(np.arange(600.0).reshape(20, 30))
    keep = [named, plain]
    views = {
        "named-fields": named[["b", "c"]],
        "named-field": named["b"][::3],
        "named-nested": named["c"][["y"]][10:20],
        "named-rows": named[5:9],
        "anonymous-view": plain[::2, 1:],
        "anonymous-reversed": plain[::-1, ::-3],
    }
    handles = {}
    for label, v in views.items():
        handles[label] = pickle.dumps(v, protocol=2)
        if label.startswith("named"):
            handles[label + "-p5"] = pickle.dumps(v, protocol=5)
    return handles, keep


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        handle_dir, seed, start, stop, out_path = argv[1:]
        child(handle_dir, int(seed), int(start), int(stop), out_path)
        return
    if argv and argv[0] == "--mutate":
        ap = argparse.ArgumentParser(prog="fuzz_handles.py")
        ap.add_argument("--mutate", type=int, required=True)
        ap.add_argument("--seed", type=int, default=int(time.time()))
        args = ap.parse_args(argv)
        name = f"fuzz-handles-{os.getpid()}"
        handles, keep = sample_handles(name)
        t0 = time.monotonic()
        try:
            report = run(handles, args.mutate, args.seed)
        finally:
            for label, data in handles.items():
                if label.startswith("anonymous"):
                    pickle.loads(data)  # settle the pending handoff
            del keep
            ndshm.delete(name)
        secs = time.monotonic() - t0
        print(
            json.dumps(
                {
                    "seed": args.seed,
                    "seconds": round(secs, 1),
                    "per_second": round(report["tried"] / secs),
                    **report,
                },
                indent=1,
            )
        )
        if report["bad_by_handle"]:
            sys.exit(1)
        return
    for path in argv:
        with open(path, "rb") as f:
            data = f.read()
        print(json.dumps({"file": os.path.basename(path), **fuzz(data)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
