"""Hostile input: bad names, corrupt and foreign files, forged and corrupted
handles, no room, creators that die or dawdle, names that are reused.

Each promise of the README's "Errors" section: a clear exception, never a
crash, never a hang, and nothing left behind or deleted that is not ours.

Every test runs in a private tmpfs directory (``NDSHM_DIR``, inherited by
child processes) unless it asks for ``default_dir``: other processes using
/dev/shm at the same time then neither see our junk nor lose their files to
our ``gc()``, and we do not lose ours to theirs. Anything that could crash
or hang runs in a child process.
"""

from __future__ import annotations

import gc as pygc
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ndshm
from ndshm import _native
from ndshm.handles import segment_of
from tests.helpers.segment_dir import own_segment_dir
from tests.helpers.wire import DTYPE, REF_ONLY, VERSION, Handle, rebuild, wire_of
from tests.test_hugepages import fd_link

PAGE = 4096
HELPERS = Path(__file__).parent / "helpers"
# Generous: only a hung child ever gets near it.
CHILD_TIMEOUT = 20


def _run_python(
    code: str, *args: str, input: bytes | None = None, timeout: float = CHILD_TIMEOUT
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (the environment, NDSHM_DIR
    included, is inherited). A child still running after `timeout` seconds
    is killed (it is ours: started here) and the test fails as hung."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child process hung (killed after {timeout} s)\nstdout: {out!r}\nstderr: {err!r}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


@pytest.fixture
def default_dir():
    """Asks for the default directory of named segments (no private one)."""
    return Path(_native.segment_dir())


@pytest.fixture(autouse=True)
def private_dir(request, monkeypatch):
    """A private tmpfs directory of named segments (NDSHM_DIR), removed after."""
    if "default_dir" in request.fixturenames:
        yield None
        return
    with own_segment_dir(monkeypatch, "ndshm_hostile.") as d:
        yield d


# ---------------------------------------------------------------- names

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("x" * 25, id="25-chars"),
    pytest.param("y" * 100, id="100-chars"),
    pytest.param("a/b", id="slash"),
    pytest.param("../etc", id="dotdot-slash"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("-rf", id="leading-dash"),
    pytest.param("a\0b", id="nul"),
    pytest.param("\0", id="only-nul"),
    pytest.param("a b", id="space"),
    pytest.param(" a", id="leading-space"),
    pytest.param("a\n", id="newline"),
    pytest.param("ü", id="non-ascii"),
    pytest.param("naïve", id="non-ascii-inside"),
    pytest.param("a\udcff", id="lone-surrogate"),
    pytest.param("*", id="glob"),
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_name_is_value_error_everywhere(bad, private_dir):
    with pytest.raises(ValueError):
        ndshm.zeros(3, name=bad)
    with pytest.raises(ValueError):
        ndshm.from_array(np.arange(3), name=bad)
    with pytest.raises(ValueError):
        ndshm.attach(bad)
    with pytest.raises(ValueError):
        ndshm.attach(bad, readonly=True)
    with pytest.raises(ValueError):
        ndshm.delete(bad)
    with pytest.raises(ValueError):
        ndshm.exists(bad)
    with pytest.raises(ValueError):
        ndshm.info(bad)
    assert os.listdir(private_dir) == []


@pytest.mark.parametrize("bad", [3, 1.5, b"abc", bytearray(b"abc"), ["a"], ("a",), object()])
def test_non_str_name_is_type_error(bad):
    with pytest.raises(TypeError):
        ndshm.zeros(3, name=bad)
    with pytest.raises(TypeError):
        ndshm.attach(bad)
    with pytest.raises(TypeError):
        ndshm.delete(bad)
    with pytest.raises(TypeError):
        ndshm.exists(bad)


def test_longest_valid_name_works(shm_name, default_dir):
    name = (shm_name + "x" * 24)[:24]
    try:
        a = ndshm.zeros(2, name=name)
        assert a.name == name and ndshm.exists(name)
    finally:
        if ndshm.exists(name):
            ndshm.delete(name)


# ---------------------------------------------------------------- duplicates and missing names


def test_duplicate_name_is_file_exists_and_first_is_untouched(shm_name, default_dir):
    a = ndshm.from_array(np.arange(100.0), name=shm_name)
    path = default_dir / f"ndshm-{shm_name}"
    content, ino = path.read_bytes(), path.stat().st_ino
    seg_id = segment_of(a).id
    with pytest.raises(FileExistsError):
        ndshm.zeros(5, name=shm_name)
    with pytest.raises(FileExistsError):
        ndshm.from_array(np.ones(10_000), name=shm_name)
    with pytest.raises(FileExistsError):
        ndshm.full((3, 3), 7, name=shm_name)
    with pytest.raises(FileExistsError):
        ndshm.empty(0, dtype=np.uint8, name=shm_name)
    assert path.read_bytes() == content and path.stat().st_ino == ino
    assert np.array_equal(a, np.arange(100.0))
    b = _run_python(
        """
        import sys, ndshm
        b = ndshm.attach(sys.argv[1])
        print(b.dtype, b.shape, float(b.sum()))
        """,
        shm_name,
    )
    assert b.returncode == 0, b.stderr
    assert b.stdout.split() == ["float64", "(100,)", str(float(np.arange(100.0).sum()))]
    assert ndshm.info(shm_name).status == "ready"
    assert segment_of(ndshm.attach(shm_name)).id == seg_id


def test_missing_name(shm_name):
    assert not ndshm.exists(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.attach(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.attach(shm_name, readonly=True)
    with pytest.raises(FileNotFoundError):
        ndshm.delete(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.info(shm_name)
    ndshm.zeros(1, name=shm_name)
    ndshm.delete(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.delete(shm_name)
    with pytest.raises(FileNotFoundError):
        ndshm.attach(shm_name)


# ---------------------------------------------------------------- object dtypes

OBJECT_MAKERS = [
    pytest.param(lambda name: ndshm.zeros(3, dtype=object, name=name), id="zeros"),
    pytest.param(lambda name: ndshm.empty((2, 2), dtype="O", name=name), id="empty"),
    pytest.param(lambda name: ndshm.full(3, None, dtype=object, name=name), id="full"),
    pytest.param(lambda name: ndshm.full(2, {"a": 1}, name=name), id="full-inferred"),
    pytest.param(lambda name: ndshm.from_array(np.array([1, "a", None], dtype=object), name=name), id="from"),
    pytest.param(lambda name: ndshm.zeros_like(np.array([[], []], dtype=object), name=name), id="zeros_like"),
    pytest.param(lambda name: ndshm.empty_like(np.empty(4, dtype=object), name=name), id="empty_like"),
    pytest.param(lambda name: ndshm.zeros(3, dtype=[("x", "<f8"), ("o", "O")], name=name), id="struct-field"),
    pytest.param(lambda name: ndshm.zeros(3, dtype=[("s", [("o", "O")], (2,))], name=name), id="nested"),
]


@pytest.mark.parametrize("make", OBJECT_MAKERS)
@pytest.mark.parametrize("named", [True, False], ids=["named", "anonymous"])
def test_object_dtype_is_type_error_and_creates_nothing(make, named, shm_name, private_dir):
    with pytest.raises(TypeError):
        make(shm_name if named else None)
    assert not ndshm.exists(shm_name)
    assert os.listdir(private_dir) == []


def test_object_dtype_error_message_is_clear_for_from_array():
    with pytest.raises(TypeError, match=r"shared memory"):
        ndshm.from_array(np.array([1, "a", None], dtype=object))


def test_object_dtype_via_native_descr_is_refused(shm_name):
    """The core refuses an object descr even if the Python layer is bypassed."""
    with pytest.raises((TypeError, ValueError)):
        _native.create("'|O'", [3], False, shm_name)
    assert not ndshm.exists(shm_name)


# ---------------------------------------------------------------- corrupt and foreign files


def _valid_segment_bytes(name: str, n: int = 1000) -> bytes:
    """The bytes of a complete named segment of `n` float64 (made, read, deleted)."""
    a = ndshm.from_array(np.arange(n, dtype="<f8"), name=name)
    path = Path(_native.segment_dir()) / f"ndshm-{name}"
    data = path.read_bytes()
    ndshm.delete(name)
    del a
    pygc.collect()
    return data


def _ctl(data: bytes) -> int:
    return len(data) - PAGE


def _put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _xor(offset: int, mask: int = 0xFF):
    def edit(data: bytes, **_) -> bytes:
        off = offset if offset >= 0 else len(data) + offset
        b = bytearray(data)
        b[off] ^= mask
        return bytes(b)

    return edit


def _ctl_field(field_offset: int, fmt: str, value: int):
    return lambda data, **_: _put(data, _ctl(data) + field_offset, fmt, value)


def _consistent_header_liar(data: bytes, name: str, **_) -> bytes:
    """Header page (and its checksum) of a 2000-element array over 1000 elements of data."""
    other = _valid_segment_bytes(name + "b", 2000)
    b = bytearray(data)
    b[:PAGE] = other[:PAGE]
    b[_ctl(data) + 64 : _ctl(data) + 72] = other[_ctl(other) + 64 : _ctl(other) + 72]
    return bytes(b)


def _consistent_control_liar(data: bytes, **_) -> bytes:
    """File length and control page agree on 16000 data bytes; the header says 8000."""
    control = bytearray(data[_ctl(data) :])
    struct.pack_into("=Q", control, 24, 16000)
    return data[: _ctl(data)] + bytes(8192) + bytes(control)


def _numpy_save(arr: np.ndarray):
    def edit(data: bytes, **_) -> bytes:
        import io

        f = io.BytesIO()
        np.save(f, arr)
        return f.getvalue()

    return edit


# kind -> how to turn the bytes of a valid 1000 x float64 segment into the file
CORRUPTIONS = {
    "header-npy-magic": _xor(0),
    "header-npy-version": _xor(6, 0x0C),
    "header-length": _xor(8, 0x10),
    "header-dict-key": _xor(12, 0x01),
    "header-shape-digit": lambda d, **_: d.replace(b"(1000,)", b"(9000,)", 1),
    "header-padding": _xor(3000, 0x01),
    "header-last-newline": _xor(PAGE - 1, 0x2A),
    "control-magic": lambda d, **_: _xor(_ctl(d))(d),
    "control-magic-last-byte": lambda d, **_: _xor(_ctl(d) + 7, 0x01)(d),
    "control-version-2": _ctl_field(8, "=I", 2),
    "control-version-0": _ctl_field(8, "=I", 0),
    "control-header-len": _ctl_field(20, "=I", 0),
    "control-data-len-double": _ctl_field(24, "=Q", 16000),
    "control-data-len-zero": _ctl_field(24, "=Q", 0),
    "control-data-len-huge": _ctl_field(24, "=Q", 2**63 + 8000),
    "control-data-len-minus-one": _ctl_field(24, "=Q", 2**64 - 1),
    "control-checksum": lambda d, **_: _xor(_ctl(d) + 64, 0x01)(d),
    "control-ready-garbage": _ctl_field(12, "=I", 0xDEADBEEF),
    "control-ready-zero": _ctl_field(12, "=I", 0),
    "control-flags-anonymous": _ctl_field(16, "=I", 1),
    "control-page-zeroed": lambda d, **_: d[: _ctl(d)] + bytes(PAGE),
    "consistent-header-liar": _consistent_header_liar,
    "consistent-control-liar": _consistent_control_liar,
    "truncated-to-0": lambda d, **_: b"",
    "truncated-to-1": lambda d, **_: d[:1],
    "truncated-to-4096": lambda d, **_: d[:PAGE],
    "truncated-to-8192": lambda d, **_: d[: 2 * PAGE],
    "truncated-one-page-short": lambda d, **_: d[:-PAGE],
    "truncated-one-byte-short": lambda d, **_: d[:-1],
    "extended-by-a-page": lambda d, **_: d + bytes(PAGE),
    "extended-by-a-page-of-copy": lambda d, **_: d + d[-PAGE:],
    "extended-by-a-byte": lambda d, **_: d + b"\0",
    "random-bytes-page-multiple": lambda d, **_: np.random.default_rng(1).bytes(4 * PAGE),
    "random-bytes-odd": lambda d, **_: np.random.default_rng(2).bytes(1000),
    "numpy-save": _numpy_save(np.arange(10.0)),
    "numpy-save-page-multiple": _numpy_save(np.arange(1008.0)),  # 128 + 8064 = 8192 bytes
    "numpy-save-big": _numpy_save(np.arange(1000.0).reshape(10, 100)),
    "control-only": lambda d, **_: d[-PAGE:] * 2,
}

# A ready word of 0 is what a creator that died leaves: such a file may be
# listed as abandoned (gc still keeps it: its owner, this process, lives).
NOT_READY = {"control-ready-zero"}


def _plant(directory: Path, name: str, kind: str) -> Path:
    path = directory / f"ndshm-{name}"
    if kind.startswith("special-"):
        what = kind.removeprefix("special-")
        if what == "directory":
            path.mkdir()
            (path / "inner").write_bytes(b"x")
        elif what == "symlink-to-segment":
            target_name = name + "t"
            ndshm.from_array(np.arange(1000.0), name=target_name)
            path.symlink_to(directory / f"ndshm-{target_name}")
        elif what == "symlink-to-file":
            target = directory / "elsewhere.bin"
            target.write_bytes(_valid_segment_bytes(name + "v"))
            path.symlink_to(target)
        elif what == "symlink-dangling":
            path.symlink_to(directory / "nowhere")
        elif what == "symlink-to-dir":
            path.symlink_to(directory)
        else:
            raise AssertionError(what)
        return path
    data = CORRUPTIONS[kind](_valid_segment_bytes(name + "v"), name=name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


SPECIALS = ["directory", "symlink-to-segment", "symlink-to-file", "symlink-dangling", "symlink-to-dir"]

KINDS = list(CORRUPTIONS) + [f"special-{s}" for s in SPECIALS]


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_named_segment_attach_is_value_error(kind, shm_name, private_dir):
    # (a planted directory is no segment the shm_name fixture could delete:
    # planted files go with the private directory)
    shm_name += "p"
    path = _plant(private_dir, shm_name, kind)
    before = sorted(os.listdir(private_dir))
    assert ndshm.exists(shm_name)
    for readonly in (False, True):
        with pytest.raises(ValueError):
            ndshm.attach(shm_name, readonly=readonly)
    # Refusing is all attach does: the file is neither removed nor changed.
    assert sorted(os.listdir(private_dir)) == before
    assert os.path.lexists(path)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_named_segment_is_listed_corrupt_and_never_collected(kind, shm_name, private_dir):
    shm_name += "p"  # removed with the private directory, whatever it is
    path = _plant(private_dir, shm_name, kind)
    st = path.lstat()
    content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    allowed = {"corrupt", "abandoned"} if kind in NOT_READY else {"corrupt"}

    inf = ndshm.info(shm_name)
    assert inf.name == shm_name
    assert inf.status in allowed, inf
    if inf.status == "corrupt":
        assert inf.detail
    listed = {s.name: s for s in ndshm.list()}
    assert shm_name in listed
    assert listed[shm_name].status == inf.status

    # Foreign or damaged data is never deleted (its owner, this process, is alive).
    assert ndshm.gc() == []
    assert os.path.lexists(path)
    assert path.lstat().st_ino == st.st_ino
    if content is not None:
        assert path.read_bytes() == content
    # ... and a file can still be removed by name, by whoever wants to.
    if not path.is_dir() or path.is_symlink():
        ndshm.delete(shm_name)
        assert not os.path.lexists(path)


def test_gc_removes_only_an_old_empty_leftover(more_names, private_dir):
    empty, junk, short, npy, link, young = (more_names() for _ in range(6))
    _plant(private_dir, junk, "random-bytes-page-multiple")
    _plant(private_dir, short, "truncated-to-4096")
    _plant(private_dir, npy, "numpy-save")
    (private_dir / f"ndshm-{empty}").touch(mode=0o600)
    (private_dir / "old-empty-target").touch()
    (private_dir / f"ndshm-{link}").symlink_to(private_dir / "old-empty-target")
    everything = sorted(os.listdir(private_dir))

    # Young empty files are left alone: a creator may be between open and flock.
    assert ndshm.gc() == []
    assert sorted(os.listdir(private_dir)) == everything

    time.sleep(2.1)  # gc's grace period for empty files is 2 s (of ctime)
    (private_dir / f"ndshm-{young}").touch(mode=0o600)
    assert ndshm.gc() == [empty]
    left = {*everything, f"ndshm-{young}"} - {f"ndshm-{empty}"}
    assert sorted(os.listdir(private_dir)) == sorted(left)
    assert (private_dir / "old-empty-target").exists()  # never through a symlink


def test_fifo_under_the_prefix_attach_does_not_hang(shm_name, private_dir):
    os.mkfifo(private_dir / f"ndshm-{shm_name}", 0o600)
    r = _run_python(
        """
        import sys, ndshm
        for readonly in (False, True):
            try:
                ndshm.attach(sys.argv[1], readonly=readonly)
                print("attached")
            except Exception as e:
                print(type(e).__name__)
        print(ndshm.exists(sys.argv[1]))
        """,
        shm_name,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CorruptSegment", "CorruptSegment", "True"]  # ValueErrors


def test_fifo_under_the_prefix_listing_does_not_hang(shm_name, private_dir):
    os.mkfifo(private_dir / f"ndshm-{shm_name}", 0o600)
    r = _run_python(
        """
        import sys, ndshm
        print(ndshm.info(sys.argv[1]).status)
        print([s.status for s in ndshm.list()])
        print(ndshm.gc())
        """,
        shm_name,
        timeout=5,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["corrupt", "['corrupt']", "[]"]
    assert (private_dir / f"ndshm-{shm_name}").exists()


def test_socket_under_the_prefix_attach_is_value_error(shm_name, private_dir):
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(private_dir / f"ndshm-{shm_name}"))
        with pytest.raises(ValueError):
            ndshm.attach(shm_name)


def test_socket_under_the_prefix_is_kept_by_gc(shm_name, private_dir):
    import socket

    path = private_dir / f"ndshm-{shm_name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        assert ndshm.exists(shm_name)
        assert ndshm.gc() == []
        assert path.exists()


def test_socket_under_the_prefix_is_listed_corrupt(shm_name, private_dir):
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(private_dir / f"ndshm-{shm_name}"))
        assert [x.status for x in ndshm.list()] == ["corrupt"]
        assert ndshm.info(shm_name).status == "corrupt"


def test_numpy_save_file_in_dev_shm_is_refused(shm_name, default_dir):
    """A real .npy file, saved by numpy under our prefix in the default directory."""
    path = default_dir / f"ndshm-{shm_name}"
    with open(path, "xb") as f:
        np.save(f, np.arange(1000.0))
    path.chmod(0o600)
    content = path.read_bytes()
    with pytest.raises(ValueError):
        ndshm.attach(shm_name)
    inf = ndshm.info(shm_name)
    assert inf.status == "corrupt" and inf.detail
    assert path.read_bytes() == content
    assert np.array_equal(np.load(path), np.arange(1000.0))


def test_corrupted_while_attached_elsewhere_is_refused_to_newcomers(shm_name):
    """Overwriting the header in place: mapped arrays keep working (they
    validated at attach), a new process attaching is refused."""
    a = ndshm.from_array(np.arange(1000.0), name=shm_name)
    path = Path(_native.segment_dir()) / f"ndshm-{shm_name}"
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    assert a.sum() == np.arange(1000.0).sum()
    r = _run_python(
        """
        import sys, ndshm
        try:
            ndshm.attach(sys.argv[1])
            print("attached")
        except Exception as e:
            print(type(e).__name__)
        """,
        shm_name,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "CorruptSegment"  # a ValueError
    assert ndshm.info(shm_name).status == "corrupt"


# ---------------------------------------------------------------- corrupted handles (fuzz)


def test_every_single_byte_corruption_of_a_handle_is_safe(shm_name, tmp_path):
    named = ndshm.from_array(np.arange(60.0).reshape(6, 10), name=shm_name)
    anon = ndshm.from_array(np.arange(120, dtype=np.int16).reshape(12, 10))
    handles = {
        "named-view": pickle.dumps(named[::2, 1:]),
        "named-dtype-view": pickle.dumps(named.view(np.int32)[1:4, 3:11]),
        "anonymous-view": pickle.dumps(anon[1:, ::-1]),
        "anonymous-readonly-view": pickle.dumps(_readonly(anon[2:5, 2:])),
    }
    for label, data in handles.items():
        (tmp_path / label).write_bytes(data)
    try:
        r = subprocess.run(
            [sys.executable, str(HELPERS / "fuzz_handles.py"), *(str(tmp_path / k) for k in handles)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT * 2,
        )
    finally:
        # Settle the pending handoffs of the anonymous handles here too, so
        # that no keeper process outlives this test whatever the child did.
        for label, data in handles.items():
            if label.startswith("anonymous"):
                pickle.loads(data)
    assert r.returncode == 0, f"fuzz child died (exit {r.returncode}):\n{r.stderr[-3000:]}"
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rep["file"] for rep in reports] == list(handles)
    for rep in reports:
        print(rep["file"], rep["bytes"], "bytes:", rep["outcomes"])
        assert rep["bad"] == [], rep
        outcomes = rep["outcomes"]
        assert sum(outcomes.values()) >= 3 * rep["bytes"]
        assert outcomes.get("ValueError", 0) > 0
        assert "bad" not in outcomes
    assert segment_of(anon).pending == 0


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------- forged handles


@pytest.fixture
def target(shm_name):
    """A named and an anonymous segment of 10 float64 (80 data bytes) and their refs."""
    named = ndshm.from_array(np.arange(10.0), name=shm_name)
    anon = ndshm.from_array(np.arange(10.0))
    nseg, aseg = segment_of(named), segment_of(anon)
    yield {
        "named": (named, nseg, (shm_name, nseg.id)),
        "anonymous": (anon, aseg, (os.getpid(), aseg.fd, aseg.id)),
    }


F8 = np.dtype("<f8")

# (offset, shape, strides, dtype): views that reach outside 80 data bytes.
OUT_OF_BOUNDS = {
    "one-byte-past-end": (1, (10,), (8,), None),
    "last-item-one-byte-past": (73, (1,), (8,), None),
    "start-at-end": (80, (1,), (8,), None),
    "negative-offset": (-1, (1,), (8,), None),
    "negative-offset-empty": (-8, (0,), (8,), None),
    "far-offset": (2**40, (1,), (8,), None),
    "offset-past-end-empty": (81, (0,), (8,), None),
    "huge-stride": (0, (2,), (2**40,), None),
    "max-stride": (0, (2,), (2**63 - 1,), None),
    "min-stride": (72, (2,), (-(2**63),), None),
    "negative-stride-before-start": (0, (2,), (-8,), None),
    "negative-stride-one-byte": (71, (10,), (-8,), None),
    "shape-one-too-many": (0, (11,), (8,), None),
    "overflowing-shape": (0, (2**62, 2**62), (8, 8), None),
    "overflowing-shape-2": (0, (2**31, 2**31, 2**31), (8, 8, 8), None),
    "product-wraps-to-small": (0, (2**32 + 1, 2**32), (8, 2**32 * 8), None),
    "sum-beyond-i128": (0, (2**63 - 1,) * 64, (2**63 - 1,) * 64, None),
    "2d-rows-past-end": (0, (3, 5), (40, 8), None),
    "bigger-dtype-at-end": (72, (1,), (16,), np.dtype("V16")),
    "bigger-dtype-whole": (0, (10,), (16,), np.dtype("<c16")),
    "structured-dtype-too-big": (0, (1,), (88,), np.dtype([("a", "<f8", (11,))])),
    "subarray-dtype": (0, (1,), (8,), np.dtype(("<f8", (11,)))),
    "field-offset-past-item": (0, (5,), (16,), "[('', '|V16'), ('b', '<i8')]"),
    "field-offset-2**24": (0, (1,), (8,), "[('', '|V16777216'), ('z', '<i8')]"),
    "0d-at-end": (80, (), (), None),
    "0d-straddling": (76, (), (), None),
    "too-many-dims": (0, (1,) * 65, (8,) * 65, None),
    "negative-dim": (0, (-1,), (8,), None),
    "shape-strides-length-differ": (0, (10,), (8, 8), None),
}

# Views at the very edge of what is allowed: they must work (so the cases
# above test the bounds, not something else).
IN_BOUNDS = {
    "whole": (0, (10,), (8,), None),
    "last-item": (72, (1,), (8,), None),
    "reversed": (72, (10,), (-8,), None),
    "empty-at-end": (80, (0,), (8,), None),
    "broadcast": (0, (1000, 10), (0, 8), None),
    "empty-huge-stride": (0, (0, 5), (2**40, 8), None),
    "empty-at-end-huge-stride": (80, (2**20, 0), (2**40, 8), None),
    "0d-last": (72, (), (), None),
    "bytes-view": (0, (80,), (1,), np.dtype("u1")),
    "field-at-offset": (0, (5,), (16,), "[('', '|V8'), ('b', '<f8')]"),
}


def _wire(ref, offset=0, shape=(10,), strides=(8,), dtype=None, readonly=False) -> bytes:
    return Handle(ref, offset, shape, strides, dtype, readonly).encode()


def _dtype_text(text: bytes):
    """A handle of 10 items whose dtype field holds `text` as it is."""
    return lambda r: _with_descr(_wire(r, dtype="'<f8'"), b"'<f8'", text)


# Wire bytes that are no valid handle (each a ValueError).
MALFORMED = {
    "empty": lambda r: b"",
    "version-0": lambda r: bytes([0]) + _wire(r)[1:],
    "version-2": lambda r: bytes([VERSION + 1]) + _wire(r)[1:],
    "unknown-flag": lambda r: _wire(r)[:1] + bytes([_wire(r)[1] | 0x40]) + _wire(r)[2:],
    "reference-only": lambda r: Handle(r).ref_bytes(REF_ONLY),
    "trailing-byte": lambda r: _wire(r) + b"\x00",
    "overlong-offset": lambda r: (
        Handle(r).ref_bytes() + b"\x80\x00" + _wire(r)[len(Handle(r).ref_bytes()) + 1 :]
    ),
    "dtype-flag-without-dtype": lambda r: Handle(r).ref_bytes(DTYPE) + _wire(r)[len(Handle(r).ref_bytes()) :],
    "dtype-object": lambda r: _wire(r, dtype="'|O'"),
    "dtype-object-field": lambda r: _wire(r, shape=(5,), strides=(16,), dtype="[('a', '<f8'), ('o', '|O')]"),
    "dtype-object-subarray": lambda r: _wire(r, shape=(1,), strides=(16,), dtype="[('o', '|O', (2,))]"),
    "dtype-stringdtype": lambda r: _wire(r, shape=(5,), strides=(16,), dtype="'<T16'"),
    "dtype-negative-itemsize": lambda r: _wire(r, dtype="'|V-8'"),
    "dtype-negative-field-shape": lambda r: _wire(r, dtype="[('a', '<f8', -1)]"),
    "dtype-zero-itemsize": lambda r: _wire(r, shape=(10,), strides=(0,), dtype="'|V0'"),
    "dtype-unknown-datetime-unit": lambda r: _wire(r, dtype="'<M8[xyz]'"),
    "dtype-not-numpy": lambda r: _wire(r, shape=(1,), strides=(12,), dtype="'<f12'"),
    "dtype-malformed": lambda r: _wire(r, dtype="'<f8"),
    "dtype-not-a-literal": lambda r: _wire(r, dtype="__import__('os')"),
    "dtype-not-utf8": _dtype_text(b"'\xff'"),
}
# A handle's segment id is looked up first among the segments this process
# maps; the cases below use an id it does not map, so that the name (pid,
# fd) is what gets used.
NAMED_MALFORMED = {
    "name-not-utf8": lambda r: _wire((b"\xff" + r[0].encode()[1:], r[1] ^ 1)),
    "name-bad": lambda r: _wire(("../" + r[0], r[1] ^ 1)),
    "name-nul": lambda r: _wire((r[0] + "\0", r[1] ^ 1)),
    "name-empty": lambda r: _wire(("", r[1] ^ 1)),
    "name-too-long": lambda r: _wire((r[0] * 3, r[1] ^ 1)),
}
ANON_MALFORMED = {
    "pid-zero": lambda r: _wire((0, r[1], r[2])),
    "pid-negative": lambda r: _wire((-1, r[1], r[2])),
    "pid-2**32": lambda r: _wire((2**32, r[1], r[2])),
    "fd-negative": lambda r: _wire((r[0], -1, r[2] ^ 1)),
    "fd-2**31": lambda r: _wire((r[0], 2**31, r[2])),
    "id-negative": lambda r: _wire((r[0], r[1], -1)),
    "id-zero": lambda r: _wire((r[0], r[1], 0)),
    "id-wrong": lambda r: _wire((r[0], r[1], r[2] ^ 1)),
    "fd-stdin": lambda r: _wire((r[0], 0, r[2] ^ 1)),
}
BEYOND_64_BITS = {
    "offset-2**64": lambda r: _wire(r, 2**64, (10,), (8,)),
    "offset-minus-2**63-1": lambda r: _wire(r, -(2**63) - 1, (1,), (8,)),
    "stride-2**63": lambda r: _wire(r, 0, (2,), (2**63,)),
    "shape-2**64": lambda r: _wire(r, 0, (2**64,), (8,)),
}


def _forge(target, kind, case):
    arr, seg, ref = target[kind]
    offset, shape, strides, dtype = case
    return arr, seg, _wire(ref, offset, shape, strides, dtype)


@pytest.mark.parametrize("kind", ["named", "anonymous"])
@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS))
def test_forged_handle_out_of_bounds_is_refused(target, kind, case):
    _, _, wire = _forge(target, kind, OUT_OF_BOUNDS[case])
    with pytest.raises(ValueError):
        rebuild(wire)


@pytest.mark.parametrize("kind", ["named", "anonymous"])
@pytest.mark.parametrize("case", list(IN_BOUNDS))
def test_forged_handle_at_the_edge_is_accepted(target, kind, case):
    arr, seg, wire = _forge(target, kind, IN_BOUNDS[case])
    v = rebuild(wire)
    assert isinstance(v, ndshm.SharedArray)
    lo, hi = np.lib.array_utils.byte_bounds(v)
    assert seg.address <= lo <= hi <= seg.address + seg.nbytes
    if v.size and v.nbytes < 1 << 20:
        assert np.shares_memory(v, arr)
        np.array(v, copy=True)


@pytest.mark.parametrize("kind", ["named", "anonymous"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_handle_is_value_error(target, kind, case):
    _, _, ref = target[kind]
    with pytest.raises(ValueError):
        rebuild(MALFORMED[case](ref))


@pytest.mark.parametrize("kind", ["named", "anonymous"])
def test_every_truncation_of_a_handle_is_value_error(target, kind):
    _, _, ref = target[kind]
    wire = _wire(ref, 8, (3,), (16,), "[('', '|V8'), ('b', '<f8')]")
    rebuild(wire)
    for n in range(len(wire)):
        with pytest.raises(ValueError):
            rebuild(wire[:n])


@pytest.mark.parametrize("bad", ["str", None, 3, bytearray(b"\x01")])
def test_handle_that_is_not_bytes_is_value_error(bad):
    with pytest.raises(ValueError):
        rebuild(bad)


@pytest.mark.parametrize("case", list(NAMED_MALFORMED))
def test_forged_named_ref_is_refused(target, case):
    with pytest.raises(ValueError):
        rebuild(NAMED_MALFORMED[case](target["named"][2]))


def test_forged_named_ref_with_wrong_id_is_file_not_found(target):
    name, seg_id = target["named"][2]
    with pytest.raises(FileNotFoundError):
        rebuild(_wire((name, seg_id ^ 1)))
    with pytest.raises(ValueError):
        rebuild(_wire((name, 0)))


@pytest.mark.parametrize("case", list(ANON_MALFORMED))
def test_forged_anonymous_ref_is_refused(target, case):
    with pytest.raises(ValueError):
        rebuild(ANON_MALFORMED[case](target["anonymous"][2]))


def test_forged_anonymous_ref_naming_a_regular_file_is_refused(target, tmp_path):
    _, _, (pid, _, seg_id) = target["anonymous"]
    junk = tmp_path / "junk"
    junk.write_bytes(np.random.default_rng(3).bytes(3 * PAGE))
    with open(junk, "rb") as f, pytest.raises(ValueError):
        rebuild(_wire((pid, f.fileno(), seg_id ^ 1)))


def test_forged_anonymous_ref_naming_a_named_segment_is_refused(target, shm_name):
    """An fd of a valid *named* segment file is the wrong kind of segment."""
    _, nseg, (name, _) = target["named"]
    path = Path(_native.segment_dir()) / f"ndshm-{name}"
    with open(path, "rb") as f, pytest.raises(ValueError):
        rebuild(_wire((os.getpid(), f.fileno(), nseg.id ^ 1)))


def test_forged_anonymous_ref_naming_a_directory_is_refused(target, tmp_path):
    _, _, (pid, _, seg_id) = target["anonymous"]
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ValueError):
            rebuild(_wire((pid, fd, seg_id ^ 1)))
    finally:
        os.close(fd)


def test_forged_anonymous_ref_naming_a_dead_process_is_file_not_found(target):
    _, _, (_, fd, seg_id) = target["anonymous"]
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(FileNotFoundError, match=str(p.pid)):
        rebuild(_wire((p.pid, fd, seg_id ^ 1)))


@pytest.mark.parametrize("kind", ["named", "anonymous"])
@pytest.mark.parametrize("case", list(BEYOND_64_BITS))
def test_forged_handle_with_integers_beyond_64_bits_is_value_error(target, kind, case):
    _, _, ref = target[kind]
    with pytest.raises(ValueError):
        rebuild(BEYOND_64_BITS[case](ref))


def test_forged_readonly_handle_cannot_write(target):
    for kind in ("named", "anonymous"):
        arr, _, ref = target[kind]
        v = rebuild(_wire(ref, readonly=True))
        with pytest.raises(ValueError):
            v[0] = 1
        with pytest.raises(ValueError):
            v.flags.writeable = True
        assert arr[0] == 0


# ------------------------------------------ forged dtypes of structured views


@pytest.fixture
def records(shm_name):
    """256 records of two int64 fields (4096 data bytes), named, and the
    wire bytes of a handle of the view ``d[["b"]]``."""
    d = ndshm.zeros(256, dtype=[("a", "<i8"), ("b", "<i8")], name=shm_name)
    wire = wire_of(pickle.dumps(d[["b"]], protocol=2))
    yield d, wire


def _with_descr(wire: bytes, old: bytes, new: bytes) -> bytes:
    """`wire` with its dtype text (the last field) `old` replaced by `new`."""
    assert wire.endswith(old)
    assert len(old) < 128 and len(new) < 128
    return wire[: -len(old) - 1] + bytes([len(new)]) + new


@pytest.mark.parametrize(
    "descr",
    [
        pytest.param(b"[('', '|V16'), ('b', '<i8')]", id="field-offset-16"),
        pytest.param(b"[('', '|V16777216'), ('b', '<i8')]", id="field-offset-2**24"),
        pytest.param(b"[('', '|V-8'), ('b', '<i8')]", id="negative-padding"),
        pytest.param(b"'|V-16'", id="negative-itemsize"),
        pytest.param(b"[('', '|V8'), ('b', '|O')]", id="object-field"),
        pytest.param(b"'|O'", id="object"),
        pytest.param(b"[('', '|V8'), ('b', '<i8'), ('c', '<i8')]", id="field-past-item"),
    ],
)
def test_forged_dtype_of_a_field_view_is_refused(records, shm_name, descr):
    d, wire = records
    old = b"[('', '|V8'), ('b', '<i8')]"
    v = rebuild(wire)  # the genuine handle works
    assert v.dtype == d[["b"]].dtype and np.shares_memory(v, d)
    with pytest.raises(ValueError):
        rebuild(_with_descr(wire, old, descr))
    # The control page is intact: the segment still attaches, and is ready.
    assert ndshm.attach(shm_name).shape == (256,)
    assert ndshm.info(shm_name).status == "ready"


def test_object_dtype_handle_is_refused_after_an_equal_one_was_sent(records):
    """No cache lets an object dtype through once an equal plain one passed."""
    d, wire = records
    pickle.dumps(d.view([("a", "<i8"), ("b", "<i8")])[["b"]])
    with pytest.raises(ValueError):
        rebuild(_with_descr(wire, b"[('', '|V8'), ('b', '<i8')]", b"[('', '|V8'), ('b', '|O')]"))


def test_view_with_overlapping_fields_is_refused_when_pickled(records):
    d, _ = records
    overlapping = np.dtype({"names": ["x", "y"], "formats": ["<i8", "<i4"], "offsets": [0, 0]})
    with pytest.raises(ValueError, match="cannot be sent as a handle"):
        pickle.dumps(d.view(overlapping))
    with pytest.raises(ValueError, match="cannot be sent as a handle"):
        pickle.dumps(d.view({"names": ["b", "a"], "formats": ["<i8", "<i8"], "offsets": [8, 0]}))


def test_random_views_are_accepted_exactly_when_inside_the_data(target):
    """The check against numpy's own extent of the same view: accepted iff
    every byte it can reach lies in the 80 data bytes."""
    rng = np.random.default_rng(14)
    _, seg, ref = target["named"]
    margin = 1 << 12
    base = np.zeros(2 * margin + 80, np.uint8)
    accepted = refused = 0
    for _ in range(3000):
        ndim = int(rng.integers(0, 4))
        shape = tuple(int(x) for x in rng.integers(0, 6, ndim))
        strides = tuple(int(x) for x in rng.integers(-40, 41, ndim))
        itemsize = int(rng.choice([1, 2, 4, 8, 12, 16, 24]))
        offset = int(rng.integers(-48, 128))
        # numpy's extent of that view, placed in a private buffer.
        dt = np.dtype(f"V{itemsize}")
        v = np.ndarray(shape, dt, buffer=base, offset=margin + offset, strides=strides)
        lo, hi = np.lib.array_utils.byte_bounds(v)
        lo, hi = lo - base.ctypes.data - margin, hi - base.ctypes.data - margin
        inside = (lo >= 0 and hi <= 80) if v.size else 0 <= offset <= 80
        wire = _wire(ref, offset, shape, strides, dt)
        if inside:
            got = rebuild(wire)
            if v.size:
                glo, ghi = np.lib.array_utils.byte_bounds(got)
                assert (glo - seg.address, ghi - seg.address) == (lo, hi)
            accepted += 1
        else:
            with pytest.raises(ValueError):
                rebuild(wire)
            refused += 1
    assert accepted > 300 and refused > 300


# ---------------------------------------------------------------- not enough room


@pytest.fixture
def small_tmpfs(monkeypatch):
    """An 8 MiB tmpfs mounted for this test (skipped where mounting is not allowed)."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command")
    d = Path(tempfile.mkdtemp(prefix="ndshm_small."))
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8M,mode=0700", "tmpfs", str(d)], capture_output=True
    )
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    monkeypatch.setenv("NDSHM_DIR", str(d))
    try:
        yield d
    finally:
        pygc.collect()
        r = subprocess.run(["umount", str(d)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        d.rmdir()


MiB = 1 << 20


def test_named_array_larger_than_the_room_is_memory_error(small_tmpfs, more_names):
    name = more_names()
    for make in (
        lambda: ndshm.zeros(16 * MiB, dtype=np.uint8, name=name),
        lambda: ndshm.empty((4 * MiB, 4), dtype=np.uint8, name=name),
        lambda: ndshm.full(2 * MiB, 1.5, name=name),
        lambda: ndshm.from_array(np.ones(2 * MiB), name=name),
        lambda: ndshm.from_array(np.ones((2 * MiB, 2))[:, 0], name=name),  # not contiguous
        lambda: ndshm.zeros(8 * MiB, dtype=np.uint8, name=name),  # data fits exactly; pages do not
    ):
        with pytest.raises(MemoryError):
            make()
        assert os.listdir(small_tmpfs) == []
        assert not ndshm.exists(name)


def test_one_that_fits_then_one_that_does_not(small_tmpfs, more_names):
    first, second = more_names(), more_names()
    a = ndshm.from_array(np.arange(512 * 1024, dtype=np.float64), name=first)  # 4 MiB
    assert os.listdir(small_tmpfs) == [f"ndshm-{first}"]
    with pytest.raises(MemoryError):
        ndshm.zeros(5 * MiB, dtype=np.uint8, name=second)
    with pytest.raises(MemoryError):
        ndshm.from_array(np.ones(5 * MiB, dtype=np.uint8), name=second)
    assert os.listdir(small_tmpfs) == [f"ndshm-{first}"]
    # The first is whole and usable (its pages were reserved at creation).
    a[:] = 2.0
    assert a.sum() == 2.0 * a.size
    assert ndshm.info(first).status == "ready"
    b = ndshm.zeros(2 * MiB, dtype=np.uint8, name=second)  # what is left still fits
    b[:] = 1
    assert sorted(os.listdir(small_tmpfs)) == sorted([f"ndshm-{first}", f"ndshm-{second}"])
    del a, b
    ndshm.delete(first)
    ndshm.delete(second)


@pytest.mark.parametrize("named", [True, False], ids=["named", "anonymous"])
@pytest.mark.parametrize(
    "nbytes",
    [2**46, 2**50],
)
def test_absurd_size_is_memory_error(named, nbytes, shm_name, private_dir):
    with pytest.raises(MemoryError):
        ndshm.zeros(nbytes // 8, dtype=np.float64, name=shm_name if named else None)
    with pytest.raises(MemoryError):
        ndshm.empty((nbytes // 2**20, 2**20), dtype=np.uint8, name=shm_name if named else None)
    assert not ndshm.exists(shm_name)
    assert os.listdir(private_dir) == []


def test_shape_beyond_any_address_space_is_value_error():
    """Like numpy: a size that cannot even be represented is a ValueError."""
    with pytest.raises(ValueError):
        np.empty((2**40, 2**40))
    with pytest.raises(ValueError):
        ndshm.zeros((2**40, 2**40))


# ---------------------------------------------------------------- creators that die or dawdle

CREATE_UNPUBLISHED = """
import os, signal, sys
from ndshm import _native
seg = _native.create("'<f8'", [1000], False, sys.argv[1])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_creator_killed_before_ready(shm_name, private_dir):
    r = _run_python(CREATE_UNPUBLISHED, shm_name)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert ndshm.exists(shm_name)
    # Not a wait of 10 s: the creator's flock died with it.
    with pytest.raises(ndshm.AbandonedSegment):
        ndshm.attach(shm_name)
    with pytest.raises(ndshm.AbandonedSegment):
        ndshm.attach(shm_name, readonly=True)
    inf = ndshm.info(shm_name)
    assert inf.status == "abandoned" and not inf.owner_alive
    assert [(s.name, s.status) for s in ndshm.list()] == [(shm_name, "abandoned")]
    assert ndshm.gc() == [shm_name]
    assert not ndshm.exists(shm_name)
    assert os.listdir(private_dir) == []
    assert ndshm.gc() == []
    # The name is free again.
    ndshm.zeros(3, name=shm_name)


def test_attach_waits_for_a_live_creator_to_publish(shm_name):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                import numpy as np
                from ndshm import _native
                seg = _native.create("'<f8'", [1000], False, sys.argv[1])
                np.frombuffer(seg, dtype="<f8")[:] = np.arange(1000.0)
                print("created", flush=True)
                assert sys.stdin.readline() == "publish\\n"
                seg.publish()
                print("published", flush=True)
                sys.stdin.readline()
                """
            ),
            shm_name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "created\n"
        assert ndshm.info(shm_name).status == "creating"
        result: dict = {}

        def attach():
            try:
                result["array"] = ndshm.attach(shm_name)
            except BaseException as e:
                result["error"] = e

        t = threading.Thread(target=attach, daemon=True)
        t.start()
        time.sleep(0.3)
        # Still waiting: the creator has not published (and holds its flock).
        assert t.is_alive() and not result
        child.stdin.write("publish\n")
        child.stdin.flush()
        t.join(timeout=CHILD_TIMEOUT)
        assert not t.is_alive(), "attach did not return after the creator published"
        assert "error" not in result, result.get("error")
        assert np.array_equal(result["array"], np.arange(1000.0))
        assert child.stdout.readline() == "published\n"
    finally:
        if child.poll() is None:
            child.stdin.close()
            try:
                child.wait(timeout=CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    assert child.returncode == 0
    assert ndshm.info(shm_name).status == "ready"


# ---------------------------------------------------------------- names reused

LOAD_HANDLES = """
import pickle, sys
import numpy as np
for data in pickle.load(sys.stdin.buffer):
    try:
        a = pickle.loads(data)
        print("ok", float(np.asarray(a).sum()))
    except Exception as e:
        print(type(e).__name__)
"""


def test_handle_of_a_deleted_and_recreated_name(shm_name, default_dir):
    old = ndshm.from_array(np.arange(10.0), name=shm_name)
    old_handle = pickle.dumps(old[2:5])
    ndshm.delete(shm_name)
    new = ndshm.full(10, 100.0, name=shm_name)
    new_handle = pickle.dumps(new[2:5])

    # A process that does not map the old segment cannot reach it by name:
    # the name now means another segment.
    r = _run_python(LOAD_HANDLES, input=pickle.dumps([old_handle, new_handle]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["FileNotFoundError", "ok 300.0"]

    # Here the old mapping is still alive: the handle resolves to it.
    assert pickle.loads(old_handle).sum() == 2 + 3 + 4
    old[3] = -1
    assert pickle.loads(old_handle)[1] == -1

    # Once nothing maps the old segment here either (received segments stay
    # mapped a moment after their last use: let them go now), the same
    # holds here.
    del old
    pygc.collect()
    ndshm._native.release_cached()
    with pytest.raises(FileNotFoundError):
        pickle.loads(old_handle)
    assert pickle.loads(new_handle).sum() == 300.0


def test_handle_of_a_deleted_name(shm_name):
    a = ndshm.from_array(np.arange(10.0), name=shm_name)
    h = pickle.dumps(a[::3])
    ndshm.delete(shm_name)
    r = _run_python(LOAD_HANDLES, input=pickle.dumps([h]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "FileNotFoundError"
    assert pickle.loads(h).sum() == a[::3].sum()  # still mapped here


def test_handle_of_a_name_replaced_by_a_corrupt_file(shm_name):
    a = ndshm.from_array(np.arange(10.0), name=shm_name)
    h = pickle.dumps(a[1:])
    ndshm.delete(shm_name)
    path = Path(_native.segment_dir()) / f"ndshm-{shm_name}"
    path.write_bytes(b"\x93NUMPY" + bytes(3 * PAGE - 6))
    path.chmod(0o600)
    r = _run_python(LOAD_HANDLES, input=pickle.dumps([h]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("CorruptSegment", "FileNotFoundError")
    ndshm.delete(shm_name)


def test_segment_array_refuses_a_mismatched_dtype_or_class():
    """The native array builder trusts nothing it is given: an item size that
    would reach past the data, or a class that is no ndarray, is refused."""
    a = ndshm.zeros((4, 6), dtype=np.int32)
    seg = _native.view_of(a)[0]
    for dt in (np.dtype(np.int64), np.dtype("S5"), np.dtype(np.int8)):
        with pytest.raises(ValueError, match="does not match"):
            seg.array(np.ndarray, dt)
    with pytest.raises(TypeError, match="ndarray"):
        seg.array(list, np.dtype(np.int32))
    # Same item size, another type: allowed (it is the caller's reading of the bytes).
    f = seg.array(np.ndarray, np.dtype(np.float32))
    assert f.shape == (4, 6) and f.base is seg and f.__array_interface__["data"][0] == seg.address


def test_segment_array_keeps_order_and_readonly(shm_name):
    a = ndshm.zeros((3, 5), dtype=np.float64, order="F", name=shm_name)
    a[1, 2] = 7.0
    r = ndshm.attach(shm_name, readonly=True)
    assert r.flags.f_contiguous and not r.flags.writeable and r[1, 2] == 7.0
    with pytest.raises(ValueError):
        r[0, 0] = 1.0
    del a, r
    ndshm.delete(shm_name)


# ----------------------------------------------------- the private tmpfs's descriptor


def _closed_fds_child() -> None:
    # Like a daemon that closes every descriptor it inherited: the number of
    # the private tmpfs's descriptor comes back as some other directory.
    os.closerange(3, 4096)
    dirs = [os.open("/", os.O_RDONLY | os.O_DIRECTORY) for _ in range(64)]
    try:
        a = ndshm.full(4 * MiB // 8, 3.0)
        ok = float(a.sum()) == 3.0 * (4 * MiB // 8) and fd_link(a).startswith("/memfd:ndshm")
    except BaseException:
        ok = False
    for d in dirs:
        os.close(d)
    os._exit(0 if ok else 1)


def test_a_child_that_closed_the_tmpfs_descriptor_falls_back_to_memfds():
    big = ndshm.zeros(4 * MiB // 8)
    if fd_link(big).startswith("/memfd:"):
        pytest.skip("no private tmpfs here (shmem THP off, denied, or not allowed to this user)")
    before = set(os.listdir("/"))
    pid = os.fork()
    if pid == 0:
        _closed_fds_child()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert set(os.listdir("/")) == before  # nothing was created in the reused directory
