"""Lock benchmarks: the cost of ndshm's cross-process locks.

    .venv/bin/python benchmarks/lock_bench.py            # everything (~30 s)
    .venv/bin/python benchmarks/lock_bench.py --quick    # a smoke run
    .venv/bin/python benchmarks/lock_bench.py --json out.json --context spawn

1. Uncontended acquire + release from Python: ``ndshm.Lock`` through bound
   methods (``a(); r()`` in timeit) and ``with lock:``, against
   ``multiprocessing.Lock`` the same two ways and ``threading.Lock``, with
   reference rows (the empty timeit loop, ``with`` on a no-op Python class,
   two no-op calls of a PyO3 and of a CPython C method). Target: <= 40 ns.
2. Uncontended lock + unlock from Rust (``crates/ndshm/examples/lock_bench.rs``,
   built with cargo here). Target: <= 20 ns.
3. Two processes each doing ``with lock: counter += 1`` N times: ndshm (an
   int64 shared array and its ``a.lock``) against ``multiprocessing.Lock`` +
   a raw ``Value('q')`` and against a ``Value('q')``'s own ``get_lock()``;
   ns per increment = wall time / total increments, and the final count is
   checked. Target: <= 300 ns per increment. The Rust example reports the
   same for 2 threads and 2 processes.

Every contender runs interleaved with the others, round-robin in a seeded
shuffled order, and the tables give medians over the rounds (the machine is
shared and noisy). Worker processes are started and waiting at a barrier
before any timing starts; the wall time of a contended run is from the
first worker's start to the last worker's end (CLOCK_MONOTONIC, which all
processes share).

The module follows the suite protocol of ``benchmarks/run.py`` (SECTION,
INTRO, ORDER, BENCHMARKS, FULL, QUICK) and has a ``main(argv)`` of its own
that prints the tables and returns the results as a dict.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Progress, Result, fmt_ratio, table, verdict

import ndshm

SECTION = "Locks"

# Targets, and prior figures quoted when they were set.
TARGET_PY_NS = 40.0  # uncontended acquire + release from Python
PRIOR_MP_LOCK_NS = 39.0  # multiprocessing.Lock as measured then
TARGET_RUST_NS = 20.0  # uncontended lock + unlock from Rust
TARGET_CONTENDED_NS = 300.0  # per increment, 2 processes
PRIOR_MP_CONTENDED_NS = 423.0  # mp.Lock + Value as measured then

RUST_EXAMPLE = REPO / "target" / "release" / "examples" / "lock_bench"
CHILD_TIMEOUT_S = 120.0


@dataclass
class Config:
    timeit_number: int  # loop count of one timeit sample
    uncontended_rounds: int  # samples per contender
    contended_n: int  # increments per process
    contended_rounds: int  # runs per contender
    rust_args: list[str] = field(default_factory=list)


FULL = Config(timeit_number=200_000, uncontended_rounds=21, contended_n=200_000, contended_rounds=15)
QUICK = Config(
    timeit_number=20_000,
    uncontended_rounds=5,
    contended_n=20_000,
    contended_rounds=3,
    rust_args=[
        "--iters",
        "1000000",
        "--repeats",
        "3",
        "--contended-iters",
        "200000",
        "--contended-repeats",
        "3",
    ],
)


def fmt_ns(ns: float | None) -> str:
    if ns is None or ns != ns:
        return "n/a"
    if ns < 100:
        return f"{ns:.1f} ns"
    if ns < 10_000:
        return f"{ns:.0f} ns"
    return f"{ns / 1000:.1f} µs"


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


# ---------------------------------------------------------------- 1. uncontended, Python


class _NoOp:
    """A Python context manager that does nothing: the floor of ``with``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def bench_uncontended(cfg: Config, log: Callable[[str], None]) -> Result:
    ctx = mp.get_context("fork")
    nd = ndshm.Lock()
    arr = ndshm.zeros(1, dtype=np.int64)
    arr_lock = arr.lock
    mpl = ctx.Lock()
    thl = threading.Lock()
    noop = _NoOp()

    def pair(lock: Any) -> tuple[str, dict[str, Any]]:
        return "a(); r()", {"a": lock.acquire, "r": lock.release}

    def with_(lock: Any) -> tuple[str, dict[str, Any]]:
        return "with lk: pass", {"lk": lock}

    # label -> (statement, globals, kind): kind "main" rows are the
    # contenders, "ref" rows explain them.
    contenders: dict[str, tuple[str, dict[str, Any], str]] = {
        "ndshm.Lock: a(); r()": (*pair(nd), "main"),
        "ndshm.Lock: with": (*with_(nd), "main"),
        "a.lock (array's RWLock): a(); r()": (*pair(arr_lock), "main"),
        "a.lock (array's RWLock): with": (*with_(arr_lock), "main"),
        "multiprocessing.Lock: a(); r()": (*pair(mpl), "main"),
        "multiprocessing.Lock: with": (*with_(mpl), "main"),
        "threading.Lock: a(); r()": (*pair(thl), "main"),
        "threading.Lock: with": (*with_(thl), "main"),
        "ref: empty timeit loop (pass)": ("pass", {}, "ref"),
        "ref: with on a no-op Python class": ("with lk: pass", {"lk": noop}, "ref"),
        "ref: 2 no-arg calls, PyO3 (ndshm.Lock.locked)": ("f(); f()", {"f": nd.locked}, "ref"),
        "ref: 2 no-arg calls, C (threading.Lock.locked)": ("f(); f()", {"f": thl.locked}, "ref"),
    }
    timers = {k: timeit.Timer(stmt, globals=g) for k, (stmt, g, _) in contenders.items()}
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    rng = random.Random(4)
    n = cfg.timeit_number
    for t in timers.values():  # warm up
        t.timeit(max(1, n // 10))
    for r in range(cfg.uncontended_rounds):
        order = list(timers)
        rng.shuffle(order)
        for k in order:
            samples[k].append(timers[k].timeit(n) / n * 1e9)
        if r % 5 == 4:
            log(f"uncontended: round {r + 1}/{cfg.uncontended_rounds}")
    assert not nd.locked() and not arr_lock.locked() and not thl.locked()

    med = {k: statistics.median(v) for k, v in samples.items()}
    mp_pair = med["multiprocessing.Lock: a(); r()"]
    rows = []
    for k, (stmt, _, kind) in contenders.items():
        ratio = fmt_ratio(med[k] / mp_pair) if kind == "main" else ""
        rows.append((k, f"`{stmt}`", fmt_ns(med[k]), fmt_ns(min(samples[k])), ratio))
    nd_pair = med["ndshm.Lock: a(); r()"]
    nd_with = med["ndshm.Lock: with"]
    pyo3 = med["ref: 2 no-arg calls, PyO3 (ndshm.Lock.locked)"]
    cmeth = med["ref: 2 no-arg calls, C (threading.Lock.locked)"]
    body = "\n".join(
        [
            f"Per acquire + release, timeit loops of {n:,}, median of {cfg.uncontended_rounds} rounds "
            "(timeit's loop overhead included, as in the prior figures); ratio: to "
            "`multiprocessing.Lock` `a(); r()` measured here.",
            "",
            table(("contender", "statement", "median", "min", "vs mp.Lock"), rows, align="llrrr"),
            "",
            f"- Target <= {TARGET_PY_NS:.0f} ns (`a(); r()`): ndshm {fmt_ns(nd_pair)} "
            f"{verdict(nd_pair <= TARGET_PY_NS)}; multiprocessing.Lock here {fmt_ns(mp_pair)} "
            f"(prior: {PRIOR_MP_LOCK_NS:.0f} ns). ndshm / mp.Lock = {fmt_ratio(nd_pair / mp_pair)}.",
            f"- `with`: ndshm {fmt_ns(nd_with)} vs multiprocessing.Lock "
            f"{fmt_ns(med['multiprocessing.Lock: with'])} "
            f"({fmt_ratio(nd_with / med['multiprocessing.Lock: with'])}; mp.Lock's `__enter__`/`__exit__` "
            "are Python functions). A `with` on a no-op Python class costs "
            f"{fmt_ns(med['ref: with on a no-op Python class'])} on this machine.",
            f"- Two no-arg calls: PyO3 {fmt_ns(pyo3)} vs CPython C method {fmt_ns(cmeth)}: "
            f"~{(pyo3 - cmeth) / 2:.1f} ns more per call through PyO3. ndshm's `acquire`, `release`, "
            "`__enter__` and `__exit__` are CPython C methods installed on the native type (not "
            "PyO3 methods), so `a(); r()` costs two C-method calls plus the lock's own work: "
            f"{fmt_ns(nd_pair - cmeth)} over the C row here.",
        ]
    )
    raw = {k: {"stmt": contenders[k][0], **_stats(v)} for k, v in samples.items()}
    return Result("(a) Uncontended acquire + release from Python", body, raw)


# ---------------------------------------------------------------- 2. Rust


def run_rust(cfg: Config, log: Callable[[str], None], build: bool = True) -> dict[str, Any]:
    """Builds and runs the Rust example; its `key=value` lines as a dict
    (medians as floats, `<key>_samples` as lists), or {"error": ...}."""
    if build:
        cargo = shutil.which("cargo")
        if cargo is None:
            return {"error": "cargo not found"}
        log("rust: cargo build --release -p ndshm --example lock_bench")
        p = subprocess.run(
            [cargo, "build", "--release", "--quiet", "-p", "ndshm", "--example", "lock_bench"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            return {"error": f"cargo build failed:\n{p.stderr[-2000:]}"}
    if not RUST_EXAMPLE.exists():
        return {"error": f"{RUST_EXAMPLE} not built"}
    log(f"rust: {RUST_EXAMPLE.relative_to(REPO)} {' '.join(cfg.rust_args)}")
    p = subprocess.run(
        [str(RUST_EXAMPLE), *cfg.rust_args], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    if p.returncode != 0:
        return {"error": f"lock_bench exited with {p.returncode}: {p.stderr[-2000:]}"}
    out: dict[str, Any] = {}
    for line in p.stdout.splitlines():
        m = re.fullmatch(r"(\w+)=(\S+)", line.strip())
        if not m:
            continue
        key, value = m.groups()
        out[key] = [float(x) for x in value.split(",")] if key.endswith("_samples") else float(value)
    return out


RUST_TITLE = "(b) Rust, uncontended and contended"


def bench_rust(cfg: Config, log: Callable[[str], None], build: bool = True) -> Result:
    r = run_rust(cfg, log, build)
    if "error" in r:
        return Result(RUST_TITLE, f"Not run: {r['error']}", r)

    def row(label: str, key: str, handoffs: bool = False) -> tuple[str, ...]:
        s = r.get(f"{key}_samples", [])
        cells = [label, fmt_ns(r.get(key)), fmt_ns(min(s)) if s else "n/a", str(len(s))]
        if handoffs:
            cells.append(f"{r.get(key.removesuffix('_ns') + '_handoffs_per_1k', float('nan')):.2f}")
        return tuple(cells)

    ns = r["rust_uncontended_ns"]
    body = "\n".join(
        [
            "`crates/ndshm/examples/lock_bench.rs`, on the lock of an anonymous segment. Uncontended: "
            "ns per lock + unlock pair, median over runs of loops of "
            f"{r.get('iters', 10_000_000):,.0f}.",
            "",
            table(
                ("operation", "median", "min", "runs"),
                [
                    row("`w.lock(None); w.unlock()` (LockWords)", "rust_uncontended_ns"),
                    row("`w.try_lock(); w.unlock()`", "rust_try_lock_ns"),
                    row("ref: `std::sync::Mutex` lock + unlock", "rust_std_mutex_ns"),
                ],
            ),
            "",
            f"- Target <= {TARGET_RUST_NS:.0f} ns: {fmt_ns(ns)} {verdict(ns <= TARGET_RUST_NS)} "
            f"({fmt_ratio(ns / r['rust_std_mutex_ns'])} a process-private `std::sync::Mutex`).",
            "",
            "Contended: ns per increment (wall time / total increments) of `counter += 1` under the "
            f"lock, {r.get('contended_iters', 0):,.0f} increments per worker, the counter in the "
            "segment's data; the second process is the example re-executed, attaching the segment "
            "through /proc. Handoffs: how often the lock changed hands per 1000 increments (1000 = "
            "strict alternation; near 0 = the workers ran in turns, each re-taking the lock it just "
            "released).",
            "",
            table(
                ("workers", "median", "min", "runs", "handoffs / 1000"),
                [
                    row("ndshm lock, 2 threads", "rust_contended_threads_ns", True),
                    row("ndshm lock, 2 processes", "rust_contended_procs_ns", True),
                    row("ref: std::sync::Mutex, 2 threads", "rust_std_mutex_threads_ns", True),
                ],
            ),
        ]
    )
    return Result(RUST_TITLE, body, r)


# ---------------------------------------------------------------- 3. contended


def _contend(kind: str, lock: Any, target: Any, n: int, barrier: Any, out: Any) -> None:
    """A worker: waits at the barrier, then `with lock: counter += 1`, n
    times; sends (start, end, error) through the pipe `out`, times in
    perf_counter_ns."""
    try:
        barrier.wait(timeout=CHILD_TIMEOUT_S)
        if kind == "ndshm":
            a = target
            t0 = perf_counter_ns()
            for _ in range(n):
                with lock:
                    a[0] += 1
        else:  # a multiprocessing.Value, raw or synchronized
            v = target
            t0 = perf_counter_ns()
            for _ in range(n):
                with lock:
                    v.value += 1
        t1 = perf_counter_ns()
        out.send((t0, t1, None))
    except BaseException as e:
        out.send((0, 0, repr(e)))
        raise


class _Contender:
    """One contender of the contended benchmark: a counter, its lock, and
    how to read and reset the counter."""

    def __init__(self, kind: str, lock: Any, target: Any, read: Callable[[], int], reset: Callable[[], None]):
        self.kind, self.lock, self.target, self.read, self.reset = kind, lock, target, read, reset


def _contenders(ctx: Any) -> dict[str, _Contender]:
    arr = ndshm.zeros(1, dtype=np.int64)
    raw = ctx.Value("q", 0, lock=False)
    raw2 = ctx.Value("q", 0, lock=False)
    synced = ctx.Value("q", 0)  # lock=True: an RLock, also taken by .value

    def reset_arr() -> None:
        arr[0] = 0

    def reset_raw() -> None:
        raw.value = 0

    def reset_raw2() -> None:
        raw2.value = 0

    def reset_synced() -> None:
        synced.value = 0

    return {
        "ndshm: `with a.lock: a[0] += 1` (int64 shared array)": _Contender(
            "ndshm", arr.lock, arr, lambda: int(arr[0]), reset_arr
        ),
        "mp.Lock + raw Value('q'): `with lock: v.value += 1`": _Contender(
            "mp", ctx.Lock(), raw, lambda: int(raw.value), reset_raw
        ),
        "Value('q').get_lock() (RLock): `with lk: v.value += 1`": _Contender(
            "mp", synced.get_lock(), synced, lambda: int(synced.value), reset_synced
        ),
        # The lock compared alone: ndshm's lock over mp's counter.
        "ref: ndshm.Lock + raw Value('q'): `with lock: v.value += 1`": _Contender(
            "mp", ndshm.Lock(), raw2, lambda: int(raw2.value), reset_raw2
        ),
    }


def _one_process(c: _Contender, number: int) -> tuple[float, float]:
    """ns per increment in this process, without and with the lock."""
    if c.kind == "ndshm":
        bare, locked = "a[0] += 1", "with lk:\n    a[0] += 1"
        g = {"a": c.target, "lk": c.lock}
    else:
        bare, locked = "v.value += 1", "with lk:\n    v.value += 1"
        g = {"v": c.target, "lk": c.lock}
    b = timeit.Timer(bare, globals=g).timeit(number) / number * 1e9
    w = timeit.Timer(locked, globals=g).timeit(number) / number * 1e9
    c.reset()
    return b, w


def _run_pair(ctx: Any, c: _Contender, n: int) -> dict[str, Any]:
    """One contended run: 2 processes started and waiting at a barrier, then
    timed from the first start to the last end."""
    c.reset()
    barrier = ctx.Barrier(3)
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    procs = [ctx.Process(target=_contend, args=(c.kind, c.lock, c.target, n, barrier, w)) for _, w in pipes]
    for p in procs:
        p.start()
    for _, w in pipes:
        w.close()
    try:
        barrier.wait(timeout=CHILD_TIMEOUT_S)
        times = []
        for r, _ in pipes:
            if not r.poll(CHILD_TIMEOUT_S):
                raise TimeoutError(f"a contended run took more than {CHILD_TIMEOUT_S:.0f} s")
            times.append(r.recv())
    finally:
        for r, _ in pipes:
            r.close()
        for p in procs:
            p.join(CHILD_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [e for _, _, e in times if e]
    if errors:
        raise RuntimeError(f"a worker failed: {errors[0]}")
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a worker exited with {[p.exitcode for p in procs]}")
    start, end = min(t0 for t0, _, _ in times), max(t1 for _, t1, _ in times)
    # How much the two workers' intervals overlap (1: fully concurrent,
    # 0: one ran after the other).
    overlap = max(0, min(t1 for _, t1, _ in times) - max(t0 for t0, _, _ in times)) / (end - start)
    count = c.read()
    return {"ns": (end - start) / (2 * n), "count": count, "exact": count == 2 * n, "overlap": overlap}


def bench_contended(cfg: Config, log: Callable[[str], None], context: str = "fork") -> Result:
    ctx = mp.get_context(context)
    cs = _contenders(ctx)
    n = cfg.contended_n
    raw: dict[str, Any] = {"context": context, "n_per_process": n, "contenders": {}}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cs}
    rng = random.Random(5)
    for r in range(cfg.contended_rounds):
        order = list(cs)
        rng.shuffle(order)
        for k in order:
            run = _run_pair(ctx, cs[k], n)
            run["one_process_bare_ns"], run["one_process_locked_ns"] = _one_process(cs[k], n // 4)
            runs[k].append(run)
        log(f"contended: round {r + 1}/{cfg.contended_rounds}")

    med = {k: statistics.median(x["ns"] for x in v) for k, v in runs.items()}
    mp_key = "mp.Lock + raw Value('q'): `with lock: v.value += 1`"
    rows = []
    for k, v in runs.items():
        exact = all(x["exact"] for x in v)
        bare = statistics.median(x["one_process_bare_ns"] for x in v)
        locked = statistics.median(x["one_process_locked_ns"] for x in v)
        rows.append(
            (
                k,
                fmt_ns(med[k]),
                fmt_ns(min(x["ns"] for x in v)),
                fmt_ratio(med[k] / med[mp_key]),
                f"{statistics.median(x['overlap'] for x in v):.2f}",
                "yes" if exact else "**NO**",
                fmt_ns(bare),
                fmt_ns(locked),
            )
        )
        raw["contenders"][k] = {"runs": runs[k], "median_ns": med[k]}
    nd_key = next(iter(cs))
    nd = med[nd_key]
    body = "\n".join(
        [
            f"2 processes ({context}), {n:,} increments each, median of {cfg.contended_rounds} runs: "
            "ns per increment = wall time (first worker's start to last worker's end) / "
            f"{2 * n:,}. Overlap: how much the workers' running intervals overlap (1: fully "
            "concurrent). The last two columns are the same increments in one process, without "
            "and with the (uncontended) lock (timeit, medians over the same rounds).",
            "",
            table(
                (
                    "contender",
                    "median",
                    "min",
                    "vs mp.Lock",
                    "overlap",
                    "count exact",
                    "1 proc, no lock",
                    "1 proc, lock",
                ),
                rows,
                align="lrrrrrrr",
            ),
            "",
            f"- Target <= {TARGET_CONTENDED_NS:.0f} ns per increment: ndshm {fmt_ns(nd)} "
            f"{verdict(nd <= TARGET_CONTENDED_NS)}; mp.Lock + Value here {fmt_ns(med[mp_key])} "
            f"(prior: {PRIOR_MP_CONTENDED_NS:.0f} ns). The `ref:` row puts ndshm's lock over "
            "mp's counter, to compare the locks alone.",
        ]
    )
    return Result("(c) 2 processes contending on counter += 1", body, raw)


# ---------------------------------------------------------------- suite protocol and main


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {
    "lock_uncontended": bench_uncontended,
    "lock_rust": bench_rust,
    "lock_contended": bench_contended,
}
ORDER = [
    "(a) Uncontended acquire + release from Python",
    RUST_TITLE,
    "(c) 2 processes contending on counter += 1",
]

INTRO = """
Cross-process locks: `ndshm.Lock()`, `ndshm.RWLock()` and every
shared array's `a.lock`, against `multiprocessing.Lock` and `Value`. Targets:
<= 40 ns per uncontended acquire + release from Python, <= 20 ns from Rust,
<= 300 ns per increment with 2 processes contending on `counter += 1`. Run
with `.venv/bin/python benchmarks/lock_bench.py` (`--quick` for a smoke
run); the Rust side is `crates/ndshm/examples/lock_bench.rs`.
"""


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs every lock benchmark, prints the tables, returns the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    ap.add_argument("--context", choices=("fork", "spawn", "forkserver"), default="fork")
    ap.add_argument("--no-rust", action="store_true", help="skip the Rust example")
    ap.add_argument("--no-build", action="store_true", help="run the Rust example as built")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = QUICK if args.quick else FULL
    log = Progress()
    before = _shm_entries()
    t0 = perf_counter_ns()

    results: list[Result] = [bench_uncontended(cfg, log)]
    if args.no_rust:
        results.append(Result(RUST_TITLE, "Not run (--no-rust).", {"error": "skipped (--no-rust)"}))
    else:
        results.append(bench_rust(cfg, log, build=not args.no_build))
    results.append(bench_contended(cfg, log, args.context))

    print(f"## {SECTION}{' (quick smoke run)' if args.quick else ''}")
    for res in results:
        print(f"\n### {res.title}\n\n{res.body}")
    # What this run could have made there (other processes share /dev/shm:
    # an entry listed here may be theirs).
    left = sorted(n for n in _shm_entries() - before if n.startswith(("ndshm-", "sem.mp-")))
    elapsed = (perf_counter_ns() - t0) / 1e9
    print(
        f"\nTook {elapsed:.0f} s. /dev/shm: {'left behind: ' + ', '.join(left) if left else 'nothing left'}."
    )

    out: dict[str, Any] = {
        "config": asdict(cfg),
        "context": args.context,
        "elapsed_s": elapsed,
        "shm_left": left,
        "results": {r.title: {"body": r.body, "raw": r.raw} for r in results},
    }
    summary = _summary(results)
    out["summary"] = summary
    print(f"\n### Summary\n\n{_summary_table(summary)}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return out


def _summary(results: list[Result]) -> dict[str, Any]:
    """The headline medians, in ns, and whether the targets are met."""
    by = {r.title[:3]: r.raw for r in results}
    u, c, rust = by["(a)"], by["(c)"], by["(b)"]
    s: dict[str, Any] = {
        "py_ndshm_pair_ns": u["ndshm.Lock: a(); r()"]["median"],
        "py_ndshm_with_ns": u["ndshm.Lock: with"]["median"],
        "py_mp_pair_ns": u["multiprocessing.Lock: a(); r()"]["median"],
        "py_mp_with_ns": u["multiprocessing.Lock: with"]["median"],
        "py_threading_pair_ns": u["threading.Lock: a(); r()"]["median"],
        "py_threading_with_ns": u["threading.Lock: with"]["median"],
    }
    cont = c["contenders"]
    for key, label in zip(("ndshm", "mp_raw", "mp_value", "ndshm_lock_raw_value"), cont):
        s[f"contended_{key}_ns"] = statistics.median(x["ns"] for x in cont[label]["runs"])
        s[f"contended_{key}_exact"] = all(x["exact"] for x in cont[label]["runs"])
    s["py_ratio_pair"] = s["py_ndshm_pair_ns"] / s["py_mp_pair_ns"]
    s["contended_ratio"] = s["contended_ndshm_ns"] / s["contended_mp_raw_ns"]
    s["py_target_met"] = s["py_ndshm_pair_ns"] <= TARGET_PY_NS
    s["contended_target_met"] = s["contended_ndshm_ns"] <= TARGET_CONTENDED_NS
    for k in (
        "rust_uncontended_ns",
        "rust_try_lock_ns",
        "rust_std_mutex_ns",
        "rust_contended_threads_ns",
        "rust_contended_procs_ns",
    ):
        s[k] = rust.get(k)
    if s["rust_uncontended_ns"] is not None:
        s["rust_target_met"] = s["rust_uncontended_ns"] <= TARGET_RUST_NS
    return s


def _summary_table(s: dict[str, Any]) -> str:
    def ratio(a: float | None, b: float | None) -> str:
        return fmt_ratio(a / b) if a is not None and b is not None else ""

    def met(v: float | None, target: float) -> str:
        return verdict(v <= target) if v is not None else "not run"

    rows = [
        (
            "Python, uncontended `a(); r()`",
            fmt_ns(s["py_ndshm_pair_ns"]),
            f"mp.Lock {fmt_ns(s['py_mp_pair_ns'])}",
            ratio(s["py_ndshm_pair_ns"], s["py_mp_pair_ns"]),
            f"<= {TARGET_PY_NS:.0f} ns {met(s['py_ndshm_pair_ns'], TARGET_PY_NS)}",
        ),
        (
            "Python, uncontended `with`",
            fmt_ns(s["py_ndshm_with_ns"]),
            f"mp.Lock {fmt_ns(s['py_mp_with_ns'])}",
            ratio(s["py_ndshm_with_ns"], s["py_mp_with_ns"]),
            "",
        ),
        (
            "Rust, uncontended lock + unlock",
            fmt_ns(s["rust_uncontended_ns"]),
            f"std Mutex {fmt_ns(s.get('rust_std_mutex_ns'))}",
            ratio(s["rust_uncontended_ns"], s.get("rust_std_mutex_ns")),
            f"<= {TARGET_RUST_NS:.0f} ns {met(s['rust_uncontended_ns'], TARGET_RUST_NS)}",
        ),
        (
            "Python, 2 processes, per increment",
            fmt_ns(s["contended_ndshm_ns"]),
            f"mp.Lock + Value {fmt_ns(s['contended_mp_raw_ns'])}",
            ratio(s["contended_ndshm_ns"], s["contended_mp_raw_ns"]),
            f"<= {TARGET_CONTENDED_NS:.0f} ns {met(s['contended_ndshm_ns'], TARGET_CONTENDED_NS)}",
        ),
        (
            "Rust, 2 processes, per increment",
            fmt_ns(s["rust_contended_procs_ns"]),
            f"2 threads {fmt_ns(s['rust_contended_threads_ns'])}",
            "",
            "",
        ),
    ]
    return table(("measure (medians)", "ndshm", "reference", "ratio", "target"), rows)


if __name__ == "__main__":
    res = main()
    print("\nsummary: " + json.dumps(res["summary"]))
