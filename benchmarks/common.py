"""Helpers shared by the benchmark suites: statistics, tables, the machine
description, and rewriting one section of RESULTS.md.

RESULTS.md holds one ``## `` section per suite; a suite rewrites only its
own section (and, inside it, only the ``### `` subsections it re-ran), so
suites written by different people can share the file.
"""

from __future__ import annotations

import atexit
import gc
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"

RESULTS_TITLE = """# ndshm benchmarks

Produced by `make bench` (`benchmarks/run.py`). Each `## ` section belongs to
one suite and is rewritten only by that suite; times are medians over many
repetitions, with the contenders interleaved round-robin (the machine these
numbers come from is shared and noisy, so single runs mean little).
"""


# ---------------------------------------------------------------- statistics


class Samples:
    """Timings of one contender, in nanoseconds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.ns: list[int] = []

    def add(self, ns: int) -> None:
        self.ns.append(ns)

    @property
    def n(self) -> int:
        return len(self.ns)

    @property
    def median(self) -> float:
        return statistics.median(self.ns) if self.ns else float("nan")

    @property
    def min(self) -> float:
        return min(self.ns) if self.ns else float("nan")

    def quantile(self, q: float) -> float:
        if not self.ns:
            return float("nan")
        s = sorted(self.ns)
        return s[min(len(s) - 1, int(q * len(s)))]


def fmt_time(ns: float) -> str:
    """A duration with a unit that keeps 3 significant digits."""
    if ns != ns:  # NaN
        return "n/a"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def fmt_ratio(r: float | None) -> str:
    if r is None or r != r:
        return ""
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def fmt_size(nbytes: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table that also reads well on a terminal (padded columns).

    `align` has one letter per column: 'l' or 'r' (default: first column
    left, the others right)."""
    rows = [[str(c) for c in r] for r in rows]
    headers = [str(h) for h in headers]
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for c, w, a in zip(cells, widths, align):
            out.append(c.ljust(w) if a == "l" else c.rjust(w))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)
    )
    return "\n".join([line(headers), sep + "|", *(line(r) for r in rows)])


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


# ---------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _thp(path: str) -> str:
    return sysfs_choice(path) or "?"


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def environment() -> dict[str, str]:
    """What the numbers were measured on."""
    import joblib
    import numpy

    import ndshm

    cpu = "?"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    m = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    if m:
        mem = f"{int(m.group(1)) / (1 << 20):.1f} GiB"
    try:
        st = os.statvfs("/dev/shm")
        shm = f"{st.f_blocks * st.f_frsize / GiB:.1f} GiB tmpfs"
    except OSError:
        shm = "?"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": f"{affinity} (os.cpu_count() = {os.cpu_count()})",
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "dev_shm": shm,
        "thp": f"anon: {_thp('/sys/kernel/mm/transparent_hugepage/enabled')}, "
        f"shmem: {_thp('/sys/kernel/mm/transparent_hugepage/shmem_enabled')}",
        "loadavg": load,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
        "ndshm": f"{ndshm.__version__} (git {_git_rev()})",
    }


def environment_md(env: dict[str, str], command: str, elapsed_s: float | None = None) -> str:
    rows = [
        ("date", env["date"]),
        ("command", f"`{command}`" + (f" (took {elapsed_s:.0f} s)" if elapsed_s else "")),
        ("CPU", f"{env['cpu']}, nproc {env['nproc']}"),
        ("memory", f"{env['memory']}; /dev/shm {env['dev_shm']}; transparent huge pages {env['thp']}"),
        ("kernel", env["kernel"]),
        ("load average at start", f"{env['loadavg']} (1/5/15 min)"),
        (
            "software",
            f"Python {env['python']}, numpy {env['numpy']}, joblib {env['joblib']}, ndshm {env['ndshm']}",
        ),
    ]
    return table(("item", "value"), rows, align="ll")


# ---------------------------------------------------------------- RESULTS.md

_H2 = re.compile(r"^## ", re.M)
_H3 = re.compile(r"^### ", re.M)


def _split(text: str, pattern: re.Pattern[str]) -> tuple[str, list[str]]:
    """Text before the first heading, and each heading's block."""
    starts = [m.start() for m in pattern.finditer(text)]
    if not starts:
        return text, []
    head = text[: starts[0]]
    blocks = [text[s:e] for s, e in zip(starts, [*starts[1:], len(text)])]
    return head, blocks


def _title(block: str) -> str:
    return block.split("\n", 1)[0].strip()


def _key(title: str) -> str:
    """A subsection's key: its heading up to the first ':' or '—'."""
    return re.split(r"[:—]", title, maxsplit=1)[0].strip()


def update_section(
    heading: str,
    intro: str,
    subsections: dict[str, str],
    order: Sequence[str],
    path: Path = RESULTS,
) -> None:
    """Rewrites the ``## heading`` section of `path`.

    `subsections` maps a ``### `` heading to its body. Subsections of the
    old section that were not re-run are kept (they carry their own date
    line); the others are replaced. `order` lists subsection keys (the
    heading up to ':' or '—') in the order they should appear. Other ``## ``
    sections of the file are left as they are."""
    text = path.read_text() if path.exists() else RESULTS_TITLE
    head, sections = _split(text, _H2)
    h2 = f"## {heading}"
    old = next((s for s in sections if _title(s) == h2), None)
    kept: dict[str, str] = {}
    if old is not None:
        _, olds = _split(old, _H3)
        for block in olds:
            kept[_key(_title(block)[4:])] = block.rstrip() + "\n"
    for title, body in subsections.items():
        kept[_key(title)] = f"### {title}\n\n{body.strip()}\n"
    keys = [k for k in order if k in kept] + [k for k in kept if k not in order]
    new = f"{h2}\n\n{intro.strip()}\n\n" + "\n".join(kept[k] for k in keys)
    if old is None:
        sections.append(new)
    else:
        sections[sections.index(old)] = new
    out = "\n\n".join(b.strip() for b in [head, *sections] if b.strip())
    path.write_text(out + "\n")


class Progress:
    """Terse progress lines on stderr, so a long run shows it is alive."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Result:
    """One benchmark's output: a ``### `` subsection and raw data."""

    title: str
    body: str
    raw: dict[str, Any] = field(default_factory=dict)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collects, then keeps the garbage collector off while timing."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def package_version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- huge pages for shared memory

THP = Path("/sys/kernel/mm/transparent_hugepage")
SHMEM_ENABLED = THP / "shmem_enabled"
# ndshm re-reads shmem_enabled at most once a second (in every process,
# pool workers included): after a switch, wait this long before timing.
THP_SETTLE_S = 1.1
THP_MODE = "advise"


def sysfs_choice(path: str | Path) -> str | None:
    """The bracketed choice of a sysfs setting (``always [never] ...``)."""
    try:
        m = re.search(r"\[([\w-]+)\]", Path(path).read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def shmem_thp_selected() -> str | None:
    """The selected value of shmem_enabled (None: no shmem THP here)."""
    return sysfs_choice(SHMEM_ENABLED)


def shmem_thp_unavailable() -> str | None:
    """Why shmem_enabled cannot be switched here, or None if it can."""
    if shmem_thp_selected() is None:
        return f"`{SHMEM_ENABLED}` is absent (a kernel without transparent huge pages for shmem)"
    if not os.access(SHMEM_ENABLED, os.W_OK):
        return f"`{SHMEM_ENABLED}` is not writable (the benchmark is not running as root)"
    return None


def _write_shmem(mode: str) -> None:
    SHMEM_ENABLED.write_text(mode)


def _sigterm_raises() -> Callable[[], None]:
    """While shmem_enabled is switched, SIGTERM raises SystemExit (so the
    restoring `finally` runs) if nothing else handles it; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def shmem_thp(mode: str = THP_MODE) -> Iterator[bool]:
    """Switches transparent huge pages for shared memory (memfd, so ndshm's
    anonymous segments) to `mode` for the block, then puts the previously
    selected value back. Yields whether it could switch: False (nothing
    changed) where shmem_enabled is absent or not writable.

    The switch is system-wide, so the previous value is restored whatever
    happens: on leaving the block (exceptions and KeyboardInterrupt
    included), by an atexit hook while switched, and on SIGTERM (raised as
    SystemExit, unless the process handles SIGTERM itself). After each
    switch it sleeps THP_SETTLE_S, so that ndshm in this process and in
    running workers has re-read the setting."""
    before = shmem_thp_selected()
    if before is None or shmem_thp_unavailable() is not None:
        yield False
        return
    try:
        _write_shmem(mode)
    except OSError:
        yield False
        return

    def restore() -> None:
        with suppress(OSError):
            _write_shmem(before)

    atexit.register(restore)
    undo_sigterm = _sigterm_raises()
    try:
        time.sleep(THP_SETTLE_S)
        yield True
    finally:
        now = shmem_thp_selected()
        if now != mode:
            print(
                f"WARNING: {SHMEM_ENABLED} was switched to {now!r} by another process while the "
                f"benchmark had it at {mode!r}; putting back {before!r}",
                file=sys.stderr,
                flush=True,
            )
        try:
            _write_shmem(before)
        finally:
            atexit.unregister(restore)
            undo_sigterm()
    time.sleep(THP_SETTLE_S)  # what runs next sees the restored setting


def dev_shm_huge() -> str:
    """The huge= option of the /dev/shm mount (named segments, SharedMemory)."""
    huge = "?"
    with suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            f = line.split()
            if len(f) > 3 and f[1] == "/dev/shm":
                m = re.search(r"huge=(\w+)", f[3])
                huge = m.group(1) if m else "never (no huge= option)"
    return huge


def huge_mib(a: Any, pid: int | str = "self") -> tuple[float, float]:
    """(MiB mapped as huge pages, MiB of the mapping) of the mapping that
    holds array `a`'s data in process `pid` (from /proc/PID/smaps). Only
    pages this process has touched count: see `touch_pages`."""
    addr = a.__array_interface__["data"][0]
    inside, huge, size = False, 0, 0
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
                if inside:
                    size = hi - lo
            elif inside and line.startswith(("ShmemPmdMapped:", "FilePmdMapped:")):
                huge += int(line.split()[1]) * KiB
    return huge / MiB, size / MiB


def touch_pages(a: Any) -> None:
    """Reads one element per 4 KiB page of a contiguous array, so that every
    page is mapped in this process (as a huge page where it is one)."""
    import numpy as np

    flat = np.asarray(a).reshape(-1).view(np.uint8)
    int(flat[::4096].sum())


def huge_check(a: Any, touch: bool = False) -> str:
    """How much of `a`'s mapping is in huge pages here, as a short phrase."""
    if touch:
        touch_pages(a)
    huge, size = huge_mib(a)
    return f"{huge:,.0f} of {size:,.0f} MiB"


def shmem_thp_text(
    switched: bool,
    rows: str,
    before: str | None,
    probe: str = "",
    held: bool = True,
    mode: str = THP_MODE,
) -> str:
    """The paragraph that explains the rows run with shmem THP switched:
    `rows` names them, `before` is the value put back, `probe` says how much
    of a result was in huge pages, `held` whether shmem_enabled still read
    `mode` at the end of the block (another process may switch it too)."""
    mount = dev_shm_huge()
    if not switched:
        return (
            f"Huge pages for shared memory: not measured, the rows with shmem THP `{mode}` were "
            f"skipped: {shmem_thp_unavailable() or 'switching shmem_enabled failed'}. SharedMemory and "
            f"named segments live on /dev/shm, whose tmpfs mount option (huge={mount}), not "
            f"shmem_enabled, governs them."
        )
    return (
        f'Rows marked "shmem THP `{mode}`" ran in a block of their own after the others: the '
        f"benchmark (running as root) wrote `{mode}` to `{SHMEM_ENABLED}`, waited {THP_SETTLE_S:g} s "
        f"(ndshm, here and in running workers, re-reads the setting at most once a second), ran two "
        f"untimed warm-ups of each row and then its rounds, and put the previous value (`{before}`) "
        f"back. Under `{mode}`, ndshm marks every mapping of an anonymous segment (memfd) of 2 MiB or "
        f"more `MADV_HUGEPAGE` and reserves new segments through the mapping on several threads, so "
        f"they get 2 MiB pages instead of 4 KiB ones. That applies to {rows}. SharedMemory and named "
        f"segments live on /dev/shm, whose tmpfs mount option (huge={mount}), not shmem_enabled, "
        f"governs them: the switch does not change them, so they are not repeated."
        + (f" {probe}" if probe else "")
        + (
            ""
            if held
            else f" WARNING: shmem_enabled no longer read `{mode}` at the end of the block (another "
            f"process switched it), so these rows may have run without huge pages."
        )
    )


def thp_label(label: str, mode: str = THP_MODE) -> str:
    """A row's label for its run with shmem THP switched to `mode`."""
    return f"{label}, **shmem THP `{mode}`** (huge pages)"
