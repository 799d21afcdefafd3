"""What the benchmark suites share: statistics, tables, the machine
description, rewriting one section of RESULTS.md, contenders run in rounds
with the machine's load measured, the baseline build (``NDSHM_BASELINE``)
run in child processes, and running one suite by itself.

RESULTS.md holds one ``## `` section per suite; a suite rewrites only its
own section (and, inside it, only the ``### `` subsections it re-ran), so
suites written by different people can share the file.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
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


def _thp(path: str | Path) -> str:
    return sysfs_choice(path) or "?"


def _mthp() -> str:
    """The multi-size THP sizes enabled for shmem, if any."""
    on = []
    for d in sorted(THP.glob("hugepages-*kB")):
        c = sysfs_choice(d / "shmem_enabled")
        if c not in (None, "never", "inherit"):
            on.append(f"{d.name.removeprefix('hugepages-')}: {c}")
    return f" (multi-size: {', '.join(on)})" if on else ""


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
        "thp": f"anon: {_thp(THP / 'enabled')}, shmem: {_thp(SHMEM_ENABLED)}{_mthp()}",
        "huge_pages": huge_pages_setup(),
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
        ("memory", f"{env['memory']}; /dev/shm {env['dev_shm']}"),
        ("huge pages", f"transparent huge pages {env['thp']}; {env['huge_pages']}"),
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
HUGE_PAGES_VAR = "NDSHM_HUGE_PAGES"
# ndshm re-reads NDSHM_HUGE_PAGES (with shmem_enabled) at most once a
# second: after a change, wait this long before timing.
HUGE_PAGES_SETTLE_S = 1.1
SMALL_PAGES = "with 4 KiB pages (`NDSHM_HUGE_PAGES=off`)"


def sysfs_choice(path: str | Path) -> str | None:
    """The bracketed choice of a sysfs setting (``always [never] ...``)."""
    try:
        m = re.search(r"\[([\w-]+)\]", Path(path).read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def close_contenders(mp_pools: Iterable[Any], npool: Any, kept: dict, segments: Iterable[Any]) -> None:
    """Ends what a suite of pool contenders made: multiprocessing pools
    (terminated), an ndshm pool, the shared arrays the suite kept, and
    its ``SharedMemory`` segments (closed and unlinked)."""
    for p in mp_pools:
        p.terminate()
        p.join()
    if npool is not None:
        with suppress(Exception):
            npool.shutdown(wait=True)
    kept.clear()
    for s in segments:
        s.close()
        with suppress(FileNotFoundError):
            s.unlink()


def private_tmpfs() -> bool:
    """Whether this process keeps big anonymous segments in ndshm's private
    tmpfs (huge=within_size), making it on first call where it may."""
    from ndshm import _native

    return _native.private_tmpfs()


def _huge_pages_env_off() -> bool:
    return os.environ.get(HUGE_PAGES_VAR, "").strip().lower() == "off"


@contextmanager
def huge_pages_off(settle_s: float = HUGE_PAGES_SETTLE_S) -> Iterator[None]:
    """Sets NDSHM_HUGE_PAGES=off in this process for the block, so that the
    anonymous segments it creates are memfds with 4 KiB pages (processes
    already running keep their environment, and the creator decides), then
    puts the previous value back, exceptions included. Sleeps `settle_s`
    after each change so that ndshm has re-read it; a caller that sleeps
    longer than HUGE_PAGES_SETTLE_S anyway may pass 0."""
    before = os.environ.get(HUGE_PAGES_VAR)
    os.environ[HUGE_PAGES_VAR] = "off"
    try:
        time.sleep(settle_s)
        yield
    finally:
        if before is None:
            os.environ.pop(HUGE_PAGES_VAR, None)
        else:
            os.environ[HUGE_PAGES_VAR] = before
        time.sleep(settle_s)  # what runs next sees the previous setting


def default_pages_text() -> str:
    """How ndshm's anonymous segments of 2 MiB or more get their pages in
    this process's default configuration (the rows without a page-size
    mark), as a sentence."""
    shmem = sysfs_choice(SHMEM_ENABLED)
    if _huge_pages_env_off():
        return (
            f"`{HUGE_PAGES_VAR}=off` was already set in the environment the benchmark started with, "
            f"so anonymous segments had 4 KiB pages in the default rows too."
        )
    if shmem in (None, "deny"):
        return (
            f"shmem_enabled is `{shmem or 'absent'}`, which refuses shared memory huge pages, so "
            f"anonymous segments had 4 KiB pages in the default rows too."
        )
    if shmem != "never":
        return (
            f"With shmem_enabled at `{shmem}`, anonymous segments of 2 MiB or more are memfds with "
            f"huge pages in the default rows (ndshm marks their mappings `MADV_HUGEPAGE`)."
        )
    if private_tmpfs():
        return (
            "In the default rows (ndshm's default), anonymous segments of 2 MiB or more are "
            "unnamed files in a private tmpfs that the process mounted itself with "
            "`huge=within_size` (shmem_enabled is `never`, which gives memfds 4 KiB pages), so "
            "they get 2 MiB pages."
        )
    return (
        "This process may not mount a private tmpfs (neither root nor allowed user namespaces), "
        "so anonymous segments were memfds with 4 KiB pages in the default rows too."
    )


def small_pages_text(rows: str, probe: str) -> str:
    """The paragraph on page sizes: the default rows', and the rows run again
    with NDSHM_HUGE_PAGES=off (`rows` names them); `probe` says how much of a
    result was in huge pages in each block."""
    return (
        f'Page sizes. {default_pages_text()} Rows marked "4 KiB pages" ran in a block of their '
        f"own after the others, with `{HUGE_PAGES_VAR}=off` set in this process's environment: "
        f"ndshm re-reads it at most once a second, so the benchmark waited {HUGE_PAGES_SETTLE_S:g} s "
        f"after setting it (and again after removing it), then ran two untimed warm-ups of each "
        f"row and its rounds. Anonymous segments this process creates are then memfds with 4 KiB "
        f"pages, as before ndshm had its private tmpfs (and as wherever a process may not mount "
        f"one). That applies to {rows}. SharedMemory and named segments live on /dev/shm, whose "
        f"mount option (huge={dev_shm_huge()}) governs them, not the variable: they are not "
        f"repeated. {probe}"
    )


def huge_probe_text(what: str, huge: dict[str, str], touched: bool = False) -> str:
    """The sentence on how much of a result was in huge pages, measured by
    `what` made untimed after each block (`huge` by block: default, off)."""
    read = ", every page then read in this process" if touched else ""
    return (
        f"Huge pages in a result's mapping ({what} after each block, untimed{read}; "
        f"ShmemPmdMapped in /proc/self/smaps): default config {huge.get('default', 'n/a')}, "
        f"`{HUGE_PAGES_VAR}=off` {huge.get('off', 'n/a')}."
    )


def small_pages_label(label: str) -> str:
    """A row's label for its run with NDSHM_HUGE_PAGES=off."""
    return f"{label}, **4 KiB pages** (`{HUGE_PAGES_VAR}=off`)"


def small_pages_target(title: str) -> str:
    """A target's title for the reference rows with NDSHM_HUGE_PAGES=off."""
    return f"for reference: {title} {SMALL_PAGES}"


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


def huge_pages_setup() -> str:
    """What decides shared memory's page size here, for the run header."""
    pool = re.search(r"HugePages_Total:\s+(\d+)", _read("/proc/meminfo"))
    tmpfs = "in use" if private_tmpfs() else "not available (4 KiB pages for anonymous segments)"
    env = os.environ.get(HUGE_PAGES_VAR)
    return (
        f"/dev/shm huge={dev_shm_huge()}; ndshm private tmpfs (huge=within_size) for anonymous "
        f"segments of 2 MiB or more: {tmpfs}"
        + (f" (`{HUGE_PAGES_VAR}={env}` set at start)" if env is not None else "")
        + (f"; hugetlbfs pool {pool.group(1)} pages" if pool and pool.group(1) != "0" else "")
    )


def huge_check(a: Any, touch: bool = False) -> str:
    """How much of `a`'s mapping is in huge pages here, as a short phrase."""
    if touch:
        touch_pages(a)
    huge, size = huge_mib(a)
    return f"{huge:,.0f} of {size:,.0f} MiB"


# ---------------------------------------------------------------- contenders, rounds and load


def shm_tag() -> str:
    """SharedMemory names carry the pid, so run.py's leak check sees them."""
    return f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def stop_loky() -> None:
    """Shuts joblib's reusable loky executor down, if there is one, so that
    no idle pool (nor its threads in this process) outlives its turn."""
    from joblib.externals.loky import reusable_executor

    with reusable_executor._executor_lock:
        ex = reusable_executor._executor
    if ex is not None:
        ex.shutdown(wait=True)


def error_text(e: BaseException) -> str:
    """A contender's failure as a table cell: the exception's type and first line."""
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"error: {type(e).__name__}: {msg}"[:160]


class Rounds:
    """Runs contenders round-robin in a seeded shuffled order. A contender
    that raises is recorded with its error and left out of later rounds."""

    WARMUPS = 0

    def __init__(self, keys: list[str], seed: int) -> None:
        self.samples = {k: Samples(k) for k in keys}
        self.errors: dict[str, str] = {}
        self.rng = random.Random(seed)
        self.load = ""
        self.load_raw: dict[str, float] = {}

    def run(
        self,
        fns: dict[str, Callable[[], int]],
        rounds: int,
        log: Callable[[str], None],
        what: str,
        warmups: int | None = None,
    ) -> None:
        """`rounds` timed rounds, after `warmups` untimed runs of each
        contender (default: the class's WARMUPS)."""
        if warmups is None:
            warmups = self.WARMUPS
        keys = list(fns)
        for _ in range(warmups):
            for k in keys:
                if k in self.errors:
                    continue
                try:
                    fns[k]()
                except Exception as e:
                    self.errors[k] = error_text(e)
                    log(f"{what}: {k} failed: {self.errors[k]}")
        if warmups:
            log(f"{what}: warmed up")
        meter = LoadMeter()
        for r in range(rounds):
            order = keys[:]
            self.rng.shuffle(order)
            for k in order:
                if k in self.errors:
                    continue
                try:
                    self._record(k, fns[k]())
                except Exception as e:
                    self.errors[k] = error_text(e)
                    log(f"{what}: {k} failed: {self.errors[k]}")
            log(f"{what}: round {r + 1}/{rounds}")
        self.load = meter.line()
        self.load_raw = meter.raw

    def _record(self, key: str, value: Any) -> None:
        self.samples[key].add(value)

    def raw(self, **extra: Any) -> dict[str, Any]:
        """What a section writes to benchmarks/out/: every timing, the
        errors and the machine's load, and `extra`."""
        return {
            "ns": {k: s.ns for k, s in self.samples.items()},
            **extra,
            "errors": self.errors,
            "load": self.load_raw,
        }

    def med(self, key: str) -> float:
        return self.samples[key].median

    def cell(self, key: str, fmt: Callable[[float], str]) -> str:
        if key in self.errors:
            return self.errors[key]
        if not self.samples[key].n:
            return "n/a"
        return fmt(self.med(key))


def _cpu_busy_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (math.nan, math.nan)
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return ((user + nice + system + irq + softirq) / hz, steal / hz)


def _live_children_cpu_s() -> float:
    """CPU seconds of this process's live descendants (pool workers not yet
    reaped, and the workers a forkserver started, which are its children,
    not ours) and of the children they reaped, from /proc/PID/stat."""
    me = os.getpid()
    hz = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, CPU ticks)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 14:
            # utime, stime, cutime, cstime
            stats[int(pid)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    mine = {me}
    grew = True
    while grew:
        new = {pid for pid, (ppid, _) in stats.items() if ppid in mine and pid not in mine}
        mine |= new
        grew = bool(new)
    return sum(ticks for pid, (_, ticks) in stats.items() if pid in mine and pid != me) / hz


def _my_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live
    descendants."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _live_children_cpu_s()


class LoadMeter:
    """How much CPU other processes took while a benchmark ran: the
    machine's busy time (/proc/stat) minus that of this process and its
    descendants (live or reaped)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = _cpu_busy_s()
        self.mine0 = _my_cpu_s()
        self.raw: dict[str, float] = {}

    def line(self) -> str:
        wall = time.monotonic() - self.t0
        busy, steal = _cpu_busy_s()
        mine = _my_cpu_s() - self.mine0
        others = max(0.0, busy - self.busy0 - mine)
        ncpu = len(os.sched_getaffinity(0))
        self.raw = {
            "wall_s": wall,
            "others_cpu_s": others,
            "steal_s": steal - self.steal0,
            "mine_cpu_s": mine,
        }
        if wall <= 0 or others != others:
            return ""
        return (
            f"While it ran ({wall:.0f} s), other processes kept about {others / wall:.2f} of the "
            f"{ncpu} CPUs busy (from /proc/stat, less this process and all its descendants, "
            "pool workers included)"
            + (
                f", and the hypervisor stole {(steal - self.steal0) / wall:.2f} CPU."
                if (steal - self.steal0) / wall >= 0.005
                else "."
            )
        )


class PartRounds(Rounds):
    """Rounds after one untimed warm-up run of each contender. A contender
    returns its time in ns, or a dict of named times (key "" is the
    headline, "x" is recorded as KEY.x)."""

    WARMUPS = 1

    def __init__(self, seed: int) -> None:
        super().__init__([], seed)

    def _record(self, key: str, value: int | dict[str, int]) -> None:
        parts = value if isinstance(value, dict) else {"": value}
        for sub, ns in parts.items():
            k = f"{key}{'.' + sub if sub else ''}"
            self.samples.setdefault(k, Samples(k)).add(ns)

    def get(self, key: str) -> Samples:
        return self.samples.get(key) or Samples(key)

    def ok(self, key: str) -> bool:
        return key not in self.errors and self.get(key).n > 0

    def med(self, key: str) -> float:
        return self.get(key).median


# ---------------------------------------------------------------- the baseline build and child processes


def baseline_dir() -> Path | None:
    """The checkout of an older ndshm (built, with its own .venv) that
    ``NDSHM_BASELINE`` names, if any: suites run it side by side with this one."""
    where = os.environ.get("NDSHM_BASELINE")
    return Path(where).resolve() if where else None


def baseline_python() -> Path | None:
    """The Python of the baseline checkout's .venv, if there is one."""
    base = baseline_dir()
    if base is None:
        return None
    py = base / ".venv" / "bin" / "python"
    return py if py.exists() else None


def run_child(python: Path | str, code: str, cwd: Path | None = None, timeout: float = 900) -> dict:
    """Runs `code` in a child `python`; it prints one JSON line last."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    p = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    if p.returncode != 0:
        raise RuntimeError(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one suite by itself


def standalone(benchmarks: Iterable[str], argv: list[str] | None = None) -> int:
    """``python benchmarks/X_bench.py [BENCHMARK ...] [--quick] [--write]``:
    runs this suite's benchmarks (all of them unless some are named)
    through run.py, which checks /dev/shm and keeps the raw timings;
    RESULTS.md is rewritten only with --write."""
    import run

    argv = sys.argv[1:] if argv is None else argv
    names = [a for a in argv if not a.startswith("-")] or list(benchmarks)
    flags = [a for a in argv if a.startswith("-")]
    if "--write" not in flags:
        flags.append("--no-write")
    return run.main([*names, *flags])
