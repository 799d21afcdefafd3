"""The ``ndshm`` command: list, inspect, delete, load and save named segments.

Run ``ndshm --help`` (or ``python -m ndshm --help``) for the subcommands.
Expected failures (a missing segment, a name already taken, an unreadable
file, ...) end with exit status 1 and one line on stderr; usage errors end
with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

import ndshm

from .segments import SegmentInfo

__all__ = ["main"]

PROG = "ndshm"

#: Exceptions that are reported as one line, never as a traceback.
EXPECTED_ERRORS = (OSError, ValueError, MemoryError, TypeError)

#: Subcommands whose remaining arguments are passed through untouched.
PASSTHROUGH = ("demo", "bench")

#: Where ``ndshm bench`` looks for the benchmarks: the source checkout
#: holding this package (``<repo>/python/ndshm/cli.py``).
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class CommandError(Exception):
    """An expected failure whose message is shown as is."""


# ---------------------------------------------------------------- formatting


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def _shape_str(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ",".join(str(d) for d in shape) + ")"


def _dtype_str(dtype: np.dtype | None) -> str | None:
    return None if dtype is None else str(dtype)


def _iso_time(created: float | None, timespec: str = "auto") -> str | None:
    if created is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(created).astimezone().isoformat(timespec=timespec)
    except (OverflowError, OSError, ValueError):
        return None


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _as_dict(si: SegmentInfo) -> dict[str, Any]:
    """The stable JSON form of one segment (keys always present)."""
    return {
        "name": si.name,
        "dtype": _dtype_str(si.dtype),
        "shape": None if si.shape is None else [int(d) for d in si.shape],
        "nbytes": si.nbytes,
        "owner_pid": si.owner_pid,
        "owner_alive": bool(si.owner_alive),
        "created": _iso_time(si.created),
        "status": si.status,
        "detail": si.detail,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


# ---------------------------------------------------------------- commands


def _cmd_ls(args: argparse.Namespace) -> int:
    infos = ndshm.list()
    if args.json:
        print(json.dumps([_as_dict(si) for si in infos], indent=2))
        return 0
    if not infos:
        print("no segments")
        return 0
    headers = ("NAME", "DTYPE", "SHAPE", "SIZE", "PID", "ALIVE", "STATUS")
    rows = [
        (
            si.name,
            _or_dash(_dtype_str(si.dtype)),
            _shape_str(si.shape),
            _human_size(si.nbytes),
            _or_dash(si.owner_pid),
            _yes_no(si.owner_alive),
            si.status,
        )
        for si in infos
    ]
    print(_table(headers, rows, right={3, 4}))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    si = ndshm.info(args.name)
    d = _as_dict(si)
    d["order"] = si.order
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    size = "-" if si.nbytes is None else f"{si.nbytes} ({_human_size(si.nbytes)})"
    fields = [
        ("name", si.name),
        ("status", si.status),
        ("dtype", _or_dash(d["dtype"])),
        ("shape", _or_dash(si.shape)),
        ("order", _or_dash(d["order"])),
        ("nbytes", size),
        ("owner pid", _or_dash(si.owner_pid)),
        ("owner alive", _yes_no(si.owner_alive)),
        ("created", _or_dash(_iso_time(si.created, "seconds"))),
        ("detail", _or_dash(si.detail)),
    ]
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        print(f"{key + ':':<{width}} {value}")
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            ndshm.delete(name)
        except EXPECTED_ERRORS as e:
            _report(e)
            status = 1
    return status


def _cmd_gc(args: argparse.Namespace) -> int:
    for name in ndshm.gc():
        print(name)
    return 0


def _npy_dtype(path: str) -> np.dtype:
    """The dtype a .npy file declares, read from its header only."""
    with open(path, "rb") as f:
        try:
            version = npformat.read_magic(f)
        except ValueError:
            raise CommandError(f"{path}: not a .npy file") from None
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        _shape, _fortran, dtype = read(f)
    return dtype


def _cmd_load(args: argparse.Namespace) -> int:
    dtype = _npy_dtype(args.file)
    if dtype.hasobject:
        from .handles import descr_of

        descr_of(dtype)  # raises the TypeError that explains why
        raise TypeError(f"dtype {dtype} cannot live in shared memory")  # pragma: no cover
    arr = np.load(args.file, mmap_mode="r", allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise CommandError(f"{args.file}: not a .npy file")
    ndshm.from_array(arr, name=args.name)
    return 0


def _cmd_save(args: argparse.Namespace) -> int:
    arr = ndshm.attach(args.name, readonly=True)
    path = Path(args.file)
    existed = path.exists()
    try:
        with open(path, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    except BaseException:
        if not existed and path.is_file():
            path.unlink(missing_ok=True)  # no half-written file left behind
        raise
    return 0


def _exit_code(code: Any) -> int:
    """The exit status a SystemExit code or a main() result stands for."""
    if code is None or code is True:
        return 0
    if code is False:
        return 1
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("ndshm.demo")
    except ModuleNotFoundError as e:
        if e.name not in ("ndshm.demo", "ndshm"):
            raise CommandError(f"the demo needs module {e.name!r}, which is not installed") from None
        raise CommandError("the demo is not available: this ndshm has no ndshm.demo module") from None
    try:
        return _exit_code(demo.main(list(args.args)))
    except SystemExit as e:
        return _exit_code(e.code)


def _bench_script() -> Path | None:
    script = REPO_ROOT / "benchmarks" / "run.py"
    return script if script.is_file() else None


def _cmd_bench(args: argparse.Namespace) -> int:
    script = _bench_script()
    if script is None and (REPO_ROOT / "pyproject.toml").is_file():
        raise CommandError(f"the benchmarks are not available: no benchmarks/run.py in {REPO_ROOT}")
    if script is None:
        raise CommandError(
            "the benchmarks are not available: benchmarks/run.py ships with the ndshm source "
            "repository, not with the installed package (run `make bench` in a checkout)"
        )
    rc = subprocess.call([sys.executable, str(script), *args.args], cwd=REPO_ROOT)
    return 128 - rc if rc < 0 else rc


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and manage ndshm shared-memory arrays (named segments of this user).",
        epilog="Run `ndshm COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {ndshm.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=kw.pop("description", help), **kw)
        p.set_defaults(func=func)
        return p

    p = add(
        "ls",
        _cmd_ls,
        "list named segments",
        description="List named segments: name, dtype, shape, size, owner pid, whether the owner "
        "(the creating process) is alive, and status (ready, creating, abandoned, corrupt).",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects with keys name, dtype, shape, nbytes, owner_pid, "
        "owner_alive, created (ISO 8601), status, detail",
    )

    p = add("info", _cmd_info, "show everything about one segment")
    p.add_argument("name", metavar="NAME", help="segment name")
    p.add_argument("--json", action="store_true", help="print a JSON object")

    p = add(
        "rm",
        _cmd_rm,
        "delete named segments",
        description="Delete named segments. Arrays already attached stay valid; the memory is "
        "freed when the last of them is gone. Every name is tried; the exit status is 1 if any "
        "of them failed.",
    )
    p.add_argument("names", metavar="NAME", nargs="+", help="segment name")

    add(
        "gc",
        _cmd_gc,
        "remove what dead processes left behind",
        description="Remove segments whose creator died before finishing them, and print their "
        "names. Complete named segments are never removed: they live until `ndshm rm`.",
    )

    p = add(
        "load",
        _cmd_load,
        "create a named segment from a .npy file",
        description="Create the named segment NAME holding the array of FILE (a .npy file; "
        "C or Fortran order is kept). Arrays of Python objects are refused.",
    )
    p.add_argument("file", metavar="FILE.npy", help=".npy file to read")
    p.add_argument("name", metavar="NAME", help="name of the new segment")

    p = add(
        "save",
        _cmd_save,
        "write a named segment to a .npy file",
        description="Write the array of the named segment NAME to FILE (exactly that path; "
        "an existing file is replaced).",
    )
    p.add_argument("name", metavar="NAME", help="segment name")
    p.add_argument("file", metavar="FILE.npy", help=".npy file to write")

    p = add(
        "demo",
        _cmd_demo,
        "run the demo (ndshm.demo)",
        description="Run the demo: the block-wise workload with a progress bar. Every argument "
        "after `demo` is passed to it; use `ndshm demo -- --help` for the demo's own options.",
    )
    p.add_argument("args", metavar="ARGS", nargs="*", help="arguments for the demo")

    p = add(
        "bench",
        _cmd_bench,
        "run the benchmarks (source checkout only)",
        description="Run benchmarks/run.py of the ndshm source repository (from its root) with "
        "this Python; it is not part of the installed package. Every argument after `bench` is "
        "passed to it; use `ndshm bench -- --help` for its own options. Its requirements are in "
        "benchmarks/requirements.txt.",
    )
    p.add_argument("args", metavar="ARGS", nargs="*", help="arguments for benchmarks/run.py")
    return parser


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Splits off what follows `demo`/`bench`, which argparse must not parse.

    `ndshm demo -h` still shows ndshm's help for the subcommand, and a
    leading `--` is dropped, so `ndshm demo -- --help` reaches the demo.
    """
    for i, arg in enumerate(argv):
        if arg in PASSTHROUGH:
            rest = argv[i + 1 :]
            if rest and rest[0] in ("-h", "--help"):
                return argv, None
            if rest and rest[0] == "--":
                rest = rest[1:]
            return argv[: i + 1], rest
        if not arg.startswith("-"):
            break
    return argv, None


# ---------------------------------------------------------------- entry


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e)
    if not msg and isinstance(e, MemoryError):
        msg = "out of memory"
    msg = " ".join(msg.split())  # one line
    return msg or type(e).__name__


def _report(e: BaseException) -> None:
    print(f"{PROG}: error: {_message(e)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``ndshm`` command with `argv` (default ``sys.argv[1:]``);
    returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    head, passthrough = _split_passthrough(argv)
    parser = _parser()
    try:
        args = parser.parse_args(head)
    except SystemExit as e:  # --help, --version, usage errors
        return _exit_code(e.code)
    if passthrough is not None:
        args.args = passthrough
    try:
        return args.func(args)
    except (CommandError, *EXPECTED_ERRORS) as e:
        if isinstance(e, BrokenPipeError):
            return _broken_pipe()
        _report(e)
        return 1
    except KeyboardInterrupt:
        return 130


def _broken_pipe() -> int:
    """The reader of stdout went away (`ndshm ls | head`): exit quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 1
