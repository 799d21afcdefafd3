"""The `ndshm` command line, mostly in-process through `main(argv)`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import ndshm
from ndshm import _native, cli

SHM = Path(_native.segment_dir())
PYTHON = sys.executable
SCRIPT = Path(sys.executable).with_name("ndshm")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ndshm: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "DTYPE", "SHAPE", "SIZE", "PID", "ALIVE", "STATUS"]
    rows = {}
    for line in lines[1:]:
        name, dtype, shape, size, unit, pid, alive, status = line.split()
        rows[name] = [dtype, shape, f"{size} {unit}", pid, alive, status]
    return rows


def abandon_in_child(name: str) -> None:
    """Leaves `name` half-made by a process that dies while creating it.
    (The child keeps the segment: dropping an unpublished one removes it.)"""
    code = (
        "import os, sys\n"
        "from ndshm import _native\n"
        "seg = _native.create(\"'<f8'\", [10], False, sys.argv[1])\n"
        "os._exit(0)\n"
    )
    subprocess.run([PYTHON, "-c", code, name], check=True)


# ---------------------------------------------------------------- ls


def test_ls_empty(capsys, monkeypatch):
    monkeypatch.setattr(ndshm, "list", lambda: [])
    rc, out, err = run(capsys, "ls")
    assert rc == 0 and err == ""
    assert "no segments" in out
    rc, out, err = run(capsys, "ls", "--json")
    assert rc == 0 and err == ""
    assert json.loads(out) == []


def test_ls_table_and_json(capsys, shm_name, more_names):
    big = more_names()
    ndshm.from_array(np.arange(12, dtype=np.int32).reshape(3, 4), name=shm_name)
    ndshm.zeros((1024, 1024), dtype=np.uint8, name=big)

    rc, out, err = run(capsys, "ls")
    assert rc == 0 and err == ""
    rows = table_rows(out)
    assert rows[shm_name] == ["int32", "(3,4)", "48 B", str(os.getpid()), "yes", "ready"]
    assert rows[big] == ["uint8", "(1024,1024)", "1.0 MiB", str(os.getpid()), "yes", "ready"]
    # Aligned: every column starts at the same offset on every line.
    lines = out.splitlines()
    assert len({line.index(" " + line.split()[1]) for line in lines[1:]}) == 1

    rc, out, err = run(capsys, "ls", "--json")
    assert rc == 0 and err == ""
    entries = {e["name"]: e for e in json.loads(out)}
    e = entries[shm_name]
    assert list(e) == [
        "name",
        "dtype",
        "shape",
        "nbytes",
        "owner_pid",
        "owner_alive",
        "created",
        "status",
        "detail",
    ]
    assert e["dtype"] == "int32" and e["shape"] == [3, 4] and e["nbytes"] == 48
    assert e["owner_pid"] == os.getpid() and e["owner_alive"] is True
    assert e["status"] == "ready" and e["detail"] is None
    assert datetime.fromisoformat(e["created"]).timestamp() == pytest.approx(
        ndshm.info(shm_name).created, abs=1e-3
    )
    assert entries[big]["nbytes"] == 1024 * 1024


def test_ls_shows_abandoned_and_corrupt(capsys, shm_name, more_names):
    abandon_in_child(shm_name)
    corrupt = more_names()
    (SHM / f"ndshm-{corrupt}").write_bytes(b"not a segment")
    try:
        rc, out, err = run(capsys, "ls")
        assert rc == 0 and err == ""
        lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
        assert lines[shm_name][-2:] == ["no", "abandoned"]
        assert lines[corrupt][-1] == "corrupt"

        rc, out, err = run(capsys, "ls", "--json")
        assert rc == 0
        entries = {e["name"]: e for e in json.loads(out)}
        assert entries[shm_name]["status"] == "abandoned"
        assert entries[shm_name]["owner_alive"] is False
        assert entries[corrupt]["status"] == "corrupt"
        assert entries[corrupt]["detail"]

        rc, out, err = run(capsys, "info", corrupt)
        assert rc == 0 and "corrupt" in out
    finally:
        (SHM / f"ndshm-{corrupt}").unlink(missing_ok=True)


# ---------------------------------------------------------------- info


def test_info(capsys, shm_name):
    ndshm.from_array(np.asfortranarray(np.ones((2, 5), dtype=">f4")), name=shm_name)
    rc, out, err = run(capsys, "info", shm_name)
    assert rc == 0 and err == ""
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["name"] == shm_name
    assert fields["status"] == "ready"
    assert fields["dtype"] == ">f4"
    assert fields["shape"] == "(2, 5)"
    assert fields["order"] == "F"
    assert fields["nbytes"] == "40 (40 B)"
    assert fields["owner pid"] == str(os.getpid())
    assert fields["owner alive"] == "yes"
    created = datetime.fromisoformat(fields["created"])
    assert abs(created.timestamp() - ndshm.info(shm_name).created) < 1
    assert fields["detail"] == "-"

    rc, out, err = run(capsys, "info", "--json", shm_name)
    assert rc == 0
    d = json.loads(out)
    assert d["order"] == "F" and d["shape"] == [2, 5] and d["nbytes"] == 40


def test_info_missing(capsys, shm_name):
    rc, out, err = run(capsys, "info", shm_name)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "no segment named", shm_name)


def test_info_invalid_name(capsys):
    rc, _, err = run(capsys, "info", "no/slashes")
    assert rc == 1
    assert_one_line_error(err, "invalid segment name")


# ---------------------------------------------------------------- rm


def test_rm_single(capsys, shm_name):
    ndshm.zeros(3, name=shm_name)
    rc, out, err = run(capsys, "rm", shm_name)
    assert (rc, out, err) == (0, "", "")
    assert not ndshm.exists(shm_name)


def test_rm_multiple(capsys, shm_name, more_names):
    names = [shm_name, more_names(), more_names()]
    for n in names:
        ndshm.zeros(3, name=n)
    rc, out, err = run(capsys, "rm", *names)
    assert (rc, out, err) == (0, "", "")
    assert not any(ndshm.exists(n) for n in names)


def test_rm_missing_continues_with_the_others(capsys, shm_name, more_names):
    missing, other = more_names(), more_names()
    ndshm.zeros(3, name=shm_name)
    ndshm.zeros(3, name=other)
    rc, out, err = run(capsys, "rm", shm_name, missing, other)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "no segment named", missing)
    assert not ndshm.exists(shm_name) and not ndshm.exists(other)


def test_rm_needs_a_name(capsys):
    rc, _, err = run(capsys, "rm")
    assert rc == 2 and "usage: ndshm rm" in err


# ---------------------------------------------------------------- gc


def test_gc_removes_abandoned_and_keeps_ready(capsys, shm_name, more_names):
    ready = more_names()
    ndshm.zeros(4, name=ready)
    abandon_in_child(shm_name)
    assert ndshm.info(shm_name).status == "abandoned"
    rc, out, err = run(capsys, "gc")
    assert rc == 0 and err == ""
    removed = out.splitlines()
    assert shm_name in removed and ready not in removed
    assert not ndshm.exists(shm_name) and ndshm.exists(ready)


# ---------------------------------------------------------------- load / save


@pytest.mark.parametrize(
    "original",
    [
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.asfortranarray(np.linspace(0, 1, 12).reshape(3, 4)),
        np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", ">f8")]),
        np.array(["ab", "cde"]),
        np.zeros((0, 3)),
        np.float32(7),
    ],
    ids=["int16-3d", "fortran", "structured", "unicode", "empty", "scalar"],
)
def test_load_save_round_trip(capsys, tmp_path, shm_name, original):
    original = np.asarray(original)
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, original)

    rc, out, err = run(capsys, "load", str(src), shm_name)
    assert (rc, out, err) == (0, "", "")
    a = ndshm.attach(shm_name, readonly=True)
    assert a.dtype == original.dtype and a.shape == original.shape
    assert np.array_equal(a, original)
    assert a.flags.f_contiguous == original.flags.f_contiguous

    rc, out, err = run(capsys, "save", shm_name, str(dst))
    assert (rc, out, err) == (0, "", "")
    back = np.load(dst)
    assert back.dtype == original.dtype and back.shape == original.shape
    assert np.array_equal(back, original)
    assert back.flags.f_contiguous == original.flags.f_contiguous


def test_save_writes_exactly_the_given_path(capsys, tmp_path, shm_name):
    ndshm.full(5, 3.0, name=shm_name)
    dst = tmp_path / "data.bin"
    rc, _, _ = run(capsys, "save", shm_name, str(dst))
    assert rc == 0 and dst.exists() and not (tmp_path / "data.bin.npy").exists()
    assert np.array_equal(np.load(dst), np.full(5, 3.0))


def test_load_missing_file(capsys, tmp_path, shm_name):
    rc, out, err = run(capsys, "load", str(tmp_path / "nope.npy"), shm_name)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "nope.npy", "No such file")
    assert not ndshm.exists(shm_name)


def test_load_object_array_is_refused(capsys, tmp_path, shm_name):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, "two", None], dtype=object), allow_pickle=True)
    rc, out, err = run(capsys, "load", str(path), shm_name)
    assert rc == 1 and out == ""
    assert_one_line_error(err, "holds Python objects", "cannot live in shared memory")
    assert not ndshm.exists(shm_name)


def test_load_not_npy(capsys, tmp_path, shm_name):
    path = tmp_path / "text.npy"
    path.write_text("hello\n")
    rc, _, err = run(capsys, "load", str(path), shm_name)
    assert rc == 1
    assert_one_line_error(err, "not a .npy file")
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.arange(3))
    rc, _, err = run(capsys, "load", str(npz), shm_name)
    assert rc == 1
    assert_one_line_error(err, "not a .npy file")
    assert not ndshm.exists(shm_name)


def test_load_existing_name(capsys, tmp_path, shm_name):
    ndshm.zeros(2, name=shm_name)
    path = tmp_path / "a.npy"
    np.save(path, np.arange(5))
    rc, _, err = run(capsys, "load", str(path), shm_name)
    assert rc == 1
    assert_one_line_error(err, "already exists")
    assert ndshm.attach(shm_name).shape == (2,)  # untouched


def test_save_missing_segment_leaves_no_file(capsys, tmp_path, shm_name):
    dst = tmp_path / "out.npy"
    rc, _, err = run(capsys, "save", shm_name, str(dst))
    assert rc == 1
    assert_one_line_error(err, "no segment named")
    assert not dst.exists()


def test_save_into_missing_directory(capsys, tmp_path, shm_name):
    ndshm.zeros(2, name=shm_name)
    rc, _, err = run(capsys, "save", shm_name, str(tmp_path / "no" / "such" / "dir.npy"))
    assert rc == 1
    assert_one_line_error(err, "No such file or directory")


# ---------------------------------------------------------------- demo / bench


def test_demo_passes_arguments_through(capsys, monkeypatch):
    seen = []

    def fake_main(args):
        seen.append(args)
        return 3 if args == ["fail"] else None

    monkeypatch.setitem(sys.modules, "ndshm.demo", types.SimpleNamespace(main=fake_main))
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--workers", "4", "-q", "x"]) == 0
    assert cli.main(["demo", "--", "--help"]) == 0
    assert cli.main(["demo", "fail"]) == 3
    assert seen == [[], ["--workers", "4", "-q", "x"], ["--help"], ["fail"]]


def test_demo_system_exit_becomes_the_exit_status(monkeypatch):
    def fake_main(args):
        raise SystemExit(2)

    monkeypatch.setitem(sys.modules, "ndshm.demo", types.SimpleNamespace(main=fake_main))
    assert cli.main(["demo", "--bogus"]) == 2


def test_demo_missing(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ndshm.demo", None)  # import fails
    rc, _, err = run(capsys, "demo")
    assert rc == 1
    assert_one_line_error(err, "demo is not available")


def test_bench_missing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    rc, _, err = run(capsys, "bench")
    assert rc == 1
    assert_one_line_error(err, "benchmarks are not available")


def test_bench_runs_the_script(monkeypatch, tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "run.py").write_text(
        "import json, os, sys\njson.dump([os.getcwd(), sys.argv[1:]], open('seen.json', 'w'))\nsys.exit(5)\n"
    )
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    assert cli.main(["bench", "--quick", "-n", "3"]) == 5
    cwd, args = json.loads((tmp_path / "seen.json").read_text())
    assert Path(cwd) == tmp_path and args == ["--quick", "-n", "3"]


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize("command", [None, "ls", "info", "rm", "gc", "load", "save", "demo", "bench"])
def test_help(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0 and err == ""
    assert out.startswith("usage: ndshm" + ("" if command is None else f" {command}"))


def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and ndshm.__version__ in out


@pytest.mark.parametrize("argv", [[], ["bogus"], ["ls", "--bogus"], ["load", "only-one.npy"]])
def test_usage_errors_exit_2(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert "usage: ndshm" in err and "Traceback" not in err


# ---------------------------------------------------------------- real processes


def test_console_script_and_python_m(tmp_path, shm_name):
    """The installed `ndshm` script and `python -m ndshm` work end to end,
    and a loaded segment outlives the command that created it."""
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is missing (run `make build`)")
    src = tmp_path / "in.npy"
    original = np.arange(10.0).reshape(2, 5)
    np.save(src, original)

    done = subprocess.run([str(SCRIPT), "load", str(src), shm_name], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = ndshm.attach(shm_name, readonly=True)
    assert np.array_equal(a, original)
    info = ndshm.info(shm_name)
    assert info.status == "ready" and info.owner_alive is False

    done = subprocess.run([PYTHON, "-m", "ndshm", "ls", "--json"], capture_output=True, text=True, check=True)
    assert shm_name in {e["name"] for e in json.loads(done.stdout)}

    done = subprocess.run([PYTHON, "-m", "ndshm", "rm", shm_name], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not ndshm.exists(shm_name)

    done = subprocess.run([str(SCRIPT), "info", shm_name], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert_one_line_error(done.stderr, "no segment named")
