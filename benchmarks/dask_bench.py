"""Dask benchmarks: ndshm shared arrays on a ``distributed`` cluster of
worker processes on this host, against Dask's own paths.

    .venv/bin/python benchmarks/run.py dask                  # via run.py (updates RESULTS.md)
    .venv/bin/python benchmarks/dask_bench.py                # everything, tables only
    .venv/bin/python benchmarks/dask_bench.py seed --quick   # one part, small sizes

One ``distributed.LocalCluster(n_workers=2, threads_per_worker=1,
processes=True, dashboard_address=None)`` is started for the run and
closed at its end. Three parts, reported as one subsection of RESULTS.md
(run.py selects benchmarks by name and has no per-suite set-up, so the
suite is one benchmark, ``dask``; the parts can be chosen when the module
is run by itself):

(a) ``scatter``: a 256 MiB float64 array to both workers, as a plain ndarray
    and as an ndshm shared array of the same data: ``client.scatter(...,
    broadcast=True)`` (through the scheduler and ``direct=True``), and as
    the argument of one task on each worker.
(b) ``seed``: ``r = y[:, None] * x[None, :]`` (20 000 x 10 000 float64,
    1.6 GB): plain dask ``.compute()``, ``ndshm.dask.compute_into`` over
    ``to_dask`` views, ``ndshm.map_blocks(..., executor=client)``, and numpy
    in one process; every result is compared with numpy's.
(c) ``overhead``: µs per trivial task, ``client.map`` + ``gather`` against
    ``ndshm.map(..., executor=client)``.

Contenders are interleaved (each round runs each once, in a seeded
shuffled order, after one untimed warm-up run each); tables give medians
over the rounds and ratios to Dask's own path measured in the same run.
Between runs the client drops every result and waits until the scheduler
and the workers have forgotten every task, so memory stays bounded.

The module follows the suite protocol of ``benchmarks/run.py`` (SECTION,
INTRO, ORDER, BENCHMARKS, FULL, QUICK) and has a ``main(argv)`` of its own.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import pool_bench
from common import MiB, Progress, Result, Samples, fmt_ratio, fmt_size, fmt_time, gc_paused, table, verdict
from pool_bench import err

import ndshm

SECTION = "Dask (issue 5)"
WORKERS = 2
PARTS = ("scatter", "seed", "overhead")

# Figures quoted by the issue (2 same-host workers), in ms.
ANCHOR_MS = {"scatter_np": 376.0, "arg_np": 712.0, "arg_sh": 18.0, "dask": 3800.0}
TARGET_SCATTER_MS = 20.0  # 256 MiB to two same-host workers
TARGET_SEED_MS = 600.0  # compute_into, seed workload
ISSUE_SCATTER_MIB = 256
ISSUE_SEED_SHAPE = (20_000, 10_000)

SETTLE_TIMEOUT_S = 30.0  # the cluster must forget a run's tasks within this
# distributed keeps the last N messages of every batched comm for debugging
# (default 1000). Those messages hold the tasks they carried, arguments
# included: with the scheduler in this process, a result's shared array
# stays alive until N later messages push it out (about 1.5 GB more per
# seed run). The log is turned off for the cluster the suite starts.
LOG_LENGTH_KEY = "distributed.admin.low-level-log-length"


@dataclass
class Config:
    scatter_mib: int  # size of the array handed to the workers
    scatter_rounds: int
    seed_rows: int
    seed_cols: int
    seed_chunk_rows: int  # rows per dask chunk (to_dask and da.from_array)
    seed_big_chunk_rows: int  # the same, for a compute_into reference row with bigger blocks
    seed_rounds: int
    overhead_tasks: int
    overhead_rounds: int


FULL = Config(
    scatter_mib=256,
    scatter_rounds=9,
    seed_rows=20_000,
    seed_cols=10_000,
    seed_chunk_rows=500,
    seed_big_chunk_rows=2500,
    seed_rounds=5,
    overhead_tasks=2000,
    overhead_rounds=7,
)

QUICK = Config(
    scatter_mib=16,
    scatter_rounds=2,
    seed_rows=2000,
    seed_cols=10_000,
    seed_chunk_rows=250,
    seed_big_chunk_rows=1000,
    seed_rounds=2,
    overhead_tasks=200,
    overhead_rounds=2,
)


# ------------------------------------------------------------------ helpers


def versions_line() -> str:
    import dask

    names = ("dask", "distributed", "tornado", "cloudpickle", "psutil")
    vs = ", ".join(f"{n} {common.package_version(n)}" for n in names)
    method = dask.config.get("distributed.worker.multiprocessing-method", "?")
    return (
        f"Versions: {vs}; Python {sys.version.split()[0]}. Cluster: `distributed.LocalCluster("
        f"n_workers={WORKERS}, threads_per_worker=1, processes=True, dashboard_address=None)` "
        f"(scheduler in this process, workers started with `{method}`, "
        f"`{LOG_LENGTH_KEY}` = 0, logs at ERROR)."
    )


class Rounds(pool_bench.Rounds):
    """pool_bench's rounds, after one untimed warm-up run of each
    contender. A contender returns its time in ns, or a dict of named times
    (key "" is the headline, "x" is recorded as KEY.x)."""

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


def _anchor_cells(rounds: Rounds, key: str, anchor_ms: float | None, comparable: bool) -> tuple[str, str]:
    if anchor_ms is None:
        return ("", "")
    if not comparable:
        return (f"{anchor_ms:g} ms", "(other size)")
    return (f"{anchor_ms:g} ms", fmt_ratio(rounds.med(key) / (anchor_ms * 1e6)))


def _target(rounds: Rounds, key: str, what: str, limit_ms: float, comparable: bool) -> tuple[str, str, str]:
    if key in rounds.errors:
        return (what, rounds.errors[key], "")
    if not rounds.ok(key):
        return (what, "n/a", "")
    v = rounds.med(key)
    met = verdict(v <= limit_ms * 1e6) if comparable else "(not the issue's size: no verdict)"
    return (what, fmt_time(v), met)


def _fmt_us(v: float) -> str:
    if v != v:
        return "n/a"
    return f"{v:.2f} µs" if v < 10 else f"{v:.1f} µs" if v < 100 else f"{v:,.0f} µs"


# An unnamed file in a detached mount, as ndshm's private tmpfs holds them
# (anonymous segments of 2 MiB or more; the smaller ones are memfds).
_DETACHED_TMPFILE = re.compile(r"/#\d+ \(deleted\)")


def _anon_segment_bytes(pids: list[int]) -> int:
    """Bytes of the distinct anonymous ndshm segments (memfds and files of
    ndshm's private tmpfs) these processes hold open."""
    seen: dict[tuple[int, int], int] = {}
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            path = f"{base}/{fd}"
            try:
                link = os.readlink(path)
                if not (link.startswith("/memfd:") or _DETACHED_TMPFILE.fullmatch(link)):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


# ------------------------------------------------------------------ task functions (module level)


def _last(a: np.ndarray) -> float:
    """Reads the last element: the array is there and mapped (one page)."""
    return float(a[-1])


def _inc(x: int) -> int:
    return x + 1


# ------------------------------------------------------------------ the cluster


class Cluster:
    """The suite's LocalCluster and client, and the helpers every part uses."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        self.pids = [os.getpid(), *client.run(os.getpid).values()]

    def n_tasks(self) -> int:
        return self.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    def _worker_tasks(self) -> int:
        return sum(self.client.run(lambda dask_worker: len(dask_worker.state.tasks)).values())

    def settle(self) -> None:
        """Collects this process's garbage, then waits until the scheduler
        and every worker have forgotten every task. The workers matter:
        scattering the same data again gives the same key (hash=True), and
        a late release of the old key on a worker drops the new data ("Key
        lost during replication"). Tasks still held after SETTLE_TIMEOUT_S
        are cancelled and reported."""
        gc.collect()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.n_tasks() or self._worker_tasks():
            if time.monotonic() > deadline:
                self._cancel_all()
                raise TimeoutError("tasks still held after the run (cancelled)")
            time.sleep(0.005)

    def _cancel_all(self) -> None:
        from distributed import Future

        keys = self.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
        with suppress(Exception):
            self.client.cancel([Future(k, self.client) for k in keys], force=True)

    def held(self) -> int:
        return _anon_segment_bytes(self.pids)


@contextmanager
def local_cluster(log: Callable[[str], None]) -> Iterator[Cluster]:
    import dask
    import distributed

    import ndshm.dask  # noqa: F401  (registers the serializer in this process)

    t0 = time.monotonic()
    with dask.config.set({LOG_LENGTH_KEY: 0}), warnings.catch_warnings():
        # Plain ndarrays passed as task arguments are the point of one row.
        warnings.filterwarnings("ignore", message=".*Large object of size.*")
        warnings.filterwarnings("ignore", message=".*Sending large graph of size.*")
        # The scheduler's HTTP routes (no dashboard) take another port when 8787 is in use.
        warnings.filterwarnings("ignore", message=".*Port 8787 is already in use.*")
        cluster = distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        try:
            client = distributed.Client(cluster)
            try:
                client.wait_for_workers(WORKERS, timeout=120)
                c = Cluster(client)
                log(f"cluster up in {time.monotonic() - t0:.1f} s: workers {', '.join(c.workers)}")
                yield c
            finally:
                client.close()
        finally:
            cluster.close()
            log("cluster closed")


# ------------------------------------------------------------------ (a) handing an array to both workers


SCATTER_ROWS = [
    # (key, label, Dask row it compares with, issue anchor)
    ("sc_np", "plain ndarray: `client.scatter(a, broadcast=True)`", "sc_np", "scatter_np"),
    ("sc_sh", "shared array: `client.scatter(s, broadcast=True)`", "sc_np", None),
    (
        "sc_sh_info",
        "(diagnostic) shared array, as above, right after an untimed `client.scheduler_info()`",
        "sc_np",
        None,
    ),
    ("sc_np_d", "plain ndarray: `client.scatter(a, broadcast=True, direct=True)`", "sc_np_d", None),
    ("sc_sh_d", "shared array: `client.scatter(s, broadcast=True, direct=True)`", "sc_np_d", None),
    ("arg_np", "plain ndarray as the argument of 2 tasks (one per worker)", "arg_np", "arg_np"),
    ("arg_sh", "shared array as the argument of 2 tasks (one per worker)", "arg_np", "arg_sh"),
    ("tokenize", "reference: `dask.base.tokenize(a)` alone (the key of a `hash=True` scatter)", None, None),
    ("sc_tiny", "reference: an 8-byte ndarray, `client.scatter(..., broadcast=True)`", None, None),
    ("arg_tiny", "reference: an 8-byte ndarray as the argument of 2 tasks", None, None),
]
SCATTER_TARGETS = [
    ("sc_sh", "shared array, `scatter(broadcast=True)`"),
    ("sc_sh_d", "shared array, `scatter(broadcast=True, direct=True)`"),
    ("arg_sh", "shared array, argument of 2 tasks"),
]


def part_scatter(c: Cluster, cfg: Config, log: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    client, workers = c.client, c.workers
    n = cfg.scatter_mib * MiB // 8
    a = np.random.default_rng(11).random(n)
    tiny = np.array([3.5])
    keep = {"s": ndshm.from_array(a)}  # cleared at the end: the lambdas below see it here
    want = {id(a): float(a[-1]), id(keep["s"]): float(a[-1]), id(tiny): 3.5}

    def check(got: list[float], arr: np.ndarray) -> None:
        if got != [want[id(arr)]] * len(workers):
            raise AssertionError(f"tasks read {got}, expected {want[id(arr)]}")

    replicas: list[int] = []

    def scatter(arr: np.ndarray, direct: bool, refresh: bool = False) -> dict[str, int]:
        if refresh:
            client.scheduler_info(n_workers=-1)
        t0 = perf_counter_ns()
        fut = client.scatter(arr, broadcast=True, direct=direct)
        t1 = perf_counter_ns()
        got = client.gather([client.submit(_last, fut, workers=[w], pure=False) for w in workers])
        t2 = perf_counter_ns()
        check(got, arr)
        # Both workers hold it when scatter returns; distributed's active
        # memory manager (ReduceReplicas, every 2 s) may drop a replica later.
        replicas.append(len(client.who_has([fut])[fut.key]))
        del fut
        c.settle()
        return {"": t1 - t0, "total": t2 - t0}

    def argument(arr: np.ndarray) -> int:
        t0 = perf_counter_ns()
        futs = [client.submit(_last, arr, workers=[w], pure=False) for w in workers]
        got = client.gather(futs)
        dt = perf_counter_ns() - t0
        check(got, arr)
        del futs
        c.settle()
        return dt

    def tokenize_a() -> int:
        from dask.base import tokenize

        t0 = perf_counter_ns()
        tokenize(a)
        return perf_counter_ns() - t0

    fns: dict[str, Callable[[], Any]] = {
        "tokenize": tokenize_a,
        "sc_np": lambda: scatter(a, False),
        "sc_sh": lambda: scatter(keep["s"], False),
        "sc_sh_info": lambda: scatter(keep["s"], False, refresh=True),
        "sc_np_d": lambda: scatter(a, True),
        "sc_sh_d": lambda: scatter(keep["s"], True),
        "arg_np": lambda: argument(a),
        "arg_sh": lambda: argument(keep["s"]),
        "sc_tiny": lambda: scatter(tiny, False),
        "arg_tiny": lambda: argument(tiny),
    }
    rounds = Rounds(seed=61)
    try:
        with gc_paused():
            rounds.run(fns, cfg.scatter_rounds, log, "scatter")
    finally:
        keep.clear()
        c.settle()
    size = cfg.scatter_mib == ISSUE_SCATTER_MIB

    rows = []
    for key, label, ref, anchor in SCATTER_ROWS:
        if not rounds.ok(key):
            rows.append((label, rounds.errors.get(key, "n/a"), "", "", "", "", "", ""))
            continue
        main, total = rounds.get(key), rounds.get(f"{key}.total")
        if key.startswith("arg"):  # the call includes the tasks
            main, total = Samples(key), main
        last = total if total.n else main
        rows.append(
            (
                label,
                fmt_time(main.median) if main.n else "",
                fmt_time(total.median) if total.n else "",
                fmt_time(last.min),
                last.n,
                fmt_ratio(rounds.med(key) / rounds.med(ref)) if ref and rounds.ok(ref) else "",
                *_anchor_cells(rounds, key, ANCHOR_MS.get(anchor or ""), size),
            )
        )
    headers = (
        "contender",
        "until the call returns (median)",
        "until a task on each worker returned (median)",
        "min (last column)",
        "n",
        "x Dask (same path, medians)",
        "issue anchor",
        "x anchor",
    )
    targets = [
        _target(rounds, key, f"{what} ≤ {TARGET_SCATTER_MS:g} ms", TARGET_SCATTER_MS, size)
        for key, what in SCATTER_TARGETS
    ]
    body = f"""
#### (a) Handing a {fmt_size(cfg.scatter_mib * MiB)} array to both workers

A float64 array of {fmt_size(cfg.scatter_mib * MiB)} (`a`, private memory) and a
shared copy of it (`s = ndshm.from_array(a)`), made before timing. Scatter
rows: `fut = client.scatter(x, broadcast=True)` (default `hash=True`;
without `direct` the data goes through the scheduler), timed until the
call returns, which with `broadcast=True` is after the scheduler's
replicate has placed it on both workers; the next column runs on until
one task per worker, `client.submit(_last, fut, workers=[w], pure=False)`,
has come back (`_last` reads the array's last element; the values are
checked), i.e. until both workers have used the data. Checked after
timing with `client.who_has`, both workers still held the data in
{replicas.count(WORKERS)} of {len(replicas)} scatters (warm-ups included;
distributed's active memory manager, on by default, drops extra replicas
of data no task waits for every 2 s). Argument rows: `client.submit(_last,
x, workers=[w], pure=False)` for each worker and the gather of the two
floats, the whole call timed (the array travels inside each task). "x Dask"
compares a row with the plain ndarray on the same path (scatter rows: until
the call returns; argument rows: the whole call), and the targets are
judged on the same columns. After each run the futures are dropped and the
client waits until the scheduler and both workers have forgotten every task (not timed). The
diagnostic row calls `client.scheduler_info()` (untimed) just before the
scatter, which fills the client's cached worker list
(`client._scheduler_identity["workers"]`; distributed's periodic refresh
empties it every 2 s): for a send to the scheduler, ndshm's serializer
sends a handle only if every worker the scheduler has is on this host, so
this row shows whether the default row depends on that cache (the two
rows match when it does not). The reference rows are the floor of Dask's
machinery here.
{cfg.scatter_rounds} rounds, contenders shuffled in each. {rounds.load}

{table(headers, rows, align="lrrrrrrr")}

Targets:

{table(("target", "measured (median of the ratio's column)", ""), targets, align="lll")}
"""
    raw = rounds.raw(
        mib=cfg.scatter_mib,
        replicas_after=replicas,
    )
    return body, raw


# ------------------------------------------------------------------ (b) seed workload


SEED_ROWS = [
    ("dask", "plain dask: `(da.from_array(y)[:, None] * da.from_array(x)[None, :]).compute()`"),
    ("into", "`ndshm.dask.compute_into(to_dask(ys)[:, None] * to_dask(xs)[None, :])`"),
    ("into_big", "reference: `compute_into` as above, bigger blocks"),
    ("map_blocks", "`ndshm.map_blocks(np.multiply, ys[:, None], xs[None, :], executor=client)`"),
    ("numpy", "reference: numpy, one process: `np.multiply.outer(y, x)`"),
]
# Rows repeated with NDSHM_HUGE_PAGES=off: the shared results (anonymous
# segments this process creates, so its environment decides their pages).
SEED_SMALL = ["into", "map_blocks"]


def _row_chunks(rows: int, per: int, cols: int) -> tuple[tuple[int, ...], tuple[int]]:
    return ((per,) * (rows // per) + ((rows % per,) if rows % per else ()), (cols,))


def _chunks_desc(chunks: Any) -> str:
    """`((500, 500, ...), (10000,))` as "500 x 10,000 (40 blocks of 38 MiB)"."""
    try:
        sizes = [max(c) for c in chunks]
        count = int(np.prod([len(c) for c in chunks]))
        nbytes = int(np.prod(sizes)) * 8
        return f"{' x '.join(f'{s:,}' for s in sizes)} ({count} blocks of up to {nbytes / MiB:.0f} MiB)"
    except (TypeError, ValueError):
        return str(chunks)


def part_seed(c: Cluster, cfg: Config, log: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    import dask.array as da

    from ndshm.dask import compute_into, to_dask

    client = c.client
    rows_n, cols, cr = cfg.seed_rows, cfg.seed_cols, cfg.seed_chunk_rows
    nbytes = rows_n * cols * 8
    rng = np.random.default_rng(7)
    y = rng.random(rows_n)
    x = rng.random(cols)
    # Cleared at the end: the functions below see them here.
    keep = {"ys": ndshm.from_array(y), "xs": ndshm.from_array(x), "ref": np.multiply.outer(y, x)}
    mb_chunks: Any = "automatic"
    with suppress(Exception):
        from ndshm.dask.executor import auto_chunks

        mb_chunks = auto_chunks(client, (keep["ys"][:, None], keep["xs"][None, :]), None)
    held: dict[str, int] = {}
    held_wait: dict[str, float] = {}
    base_held = c.held()

    def timed(key: str, make: Callable[[], np.ndarray]) -> int:
        t0 = perf_counter_ns()
        r = make()
        dt = perf_counter_ns() - t0
        try:
            if not np.array_equal(r, keep["ref"]):
                raise AssertionError("the result differs from numpy's")
        finally:
            del r
            c.settle()
        # The shared memory the client and the workers hold must come back
        # to the inputs' (the result freed); wait for it, not timed.
        t1 = time.monotonic()
        extra = c.held() - base_held
        while extra > 0 and time.monotonic() - t1 < 10:
            time.sleep(0.02)
            gc.collect()
            extra = c.held() - base_held
        held[key] = max(held.get(key, 0), extra)
        held_wait[key] = max(held_wait.get(key, 0.0), time.monotonic() - t1)
        return dt

    def into(rows: int) -> np.ndarray:
        ys, xs = keep["ys"], keep["xs"]
        return compute_into(to_dask(ys, chunks=rows)[:, None] * to_dask(xs, chunks=-1)[None, :])

    def map_blocks() -> np.ndarray:
        return ndshm.map_blocks(np.multiply, keep["ys"][:, None], keep["xs"][None, :], executor=client)

    makers: dict[str, Callable[[], np.ndarray]] = {
        "dask": lambda: (
            da.from_array(y, chunks=cr)[:, None] * da.from_array(x, chunks=-1)[None, :]
        ).compute(),
        "into": lambda: into(cr),
        "into_big": lambda: into(cfg.seed_big_chunk_rows),
        "map_blocks": map_blocks,
        "numpy": lambda: np.multiply.outer(y, x),
    }

    def contenders(keys: list[str], suffix: str = "") -> dict[str, Callable[[], Any]]:
        return {k + suffix: lambda k=k: timed(k + suffix, makers[k]) for k in keys}

    def probe() -> str:
        """How much of a fresh `compute_into` result is in huge pages (untimed)."""
        r = into(cr)
        try:
            return common.huge_check(r, touch=True)
        finally:
            del r
            c.settle()

    rounds = Rounds(seed=62)
    small = Rounds(seed=64)
    huge: dict[str, str] = {}
    try:
        with gc_paused():
            rounds.run(contenders(list(makers)), cfg.seed_rounds, log, "seed")
        huge["default"] = probe()
        # The shared-result rows again with 4 KiB pages, in a block of their own.
        with common.huge_pages_off():
            with gc_paused():
                what = "seed, NDSHM_HUGE_PAGES=off"
                small.run(contenders(SEED_SMALL, "_off"), cfg.seed_rounds, log, what, warmups=2)
            huge["off"] = probe()
    finally:
        keep.clear()
        c.settle()
    size = (rows_n, cols) == ISSUE_SEED_SHAPE
    chunks_of = {
        "dask": _chunks_desc(_row_chunks(rows_n, cr, cols)),
        "into": _chunks_desc(_row_chunks(rows_n, cr, cols)),
        "into_big": _chunks_desc(_row_chunks(rows_n, cfg.seed_big_chunk_rows, cols)),
        "map_blocks": f"{_chunks_desc(mb_chunks)}, chosen by ndshm",
        "numpy": "",
    }
    base = rounds.med("dask") if rounds.ok("dask") else float("nan")
    base_np = rounds.med("numpy") if rounds.ok("numpy") else float("nan")
    label_of = dict(SEED_ROWS)
    small_rows = [(f"{k}_off", common.small_pages_label(label_of[k])) for k in SEED_SMALL]
    rows = []
    for block, block_rows in ((rounds, SEED_ROWS), (small, small_rows)):
        for key, label in block_rows:
            chunks = chunks_of[key.removesuffix("_off")]
            if not block.ok(key):
                rows.append((label, chunks, block.errors.get(key, "n/a"), "", "", "", "", "", ""))
                continue
            s = block.get(key)
            rows.append(
                (
                    label,
                    chunks,
                    fmt_time(s.median),
                    fmt_time(s.min),
                    s.n,
                    fmt_ratio(s.median / base),
                    fmt_ratio(s.median / base_np),
                    *_anchor_cells(block, key, ANCHOR_MS.get(key), size),
                )
            )
    headers = (
        "contender",
        "blocks (rows x columns)",
        "median",
        "min",
        "n",
        "x plain dask (medians)",
        "x numpy (medians)",
        "issue anchor",
        "x anchor",
    )
    what = f"`compute_into` ≤ {TARGET_SEED_MS:g} ms"
    targets = [
        _target(rounds, "into", what, TARGET_SEED_MS, size),
        _target(small, "into_off", common.small_pages_target(what), TARGET_SEED_MS, size),
    ]
    pages_text = common.small_pages_text(
        "the `compute_into` and `ndshm.map_blocks(..., executor=client)` rows, whose results are "
        "anonymous segments this process creates and the workers fill (the cluster is the same "
        'one). Their "x plain dask" and "x numpy" compare with the default block\'s rows (private '
        "memory, which the variable does not change)",
        common.huge_probe_text("one more `compute_into`", huge, touched=True),
    )
    worst = max(held.values(), default=0)
    held_line = (
        "After every run, once the result was dropped, the shared memory held open by this process "
        "and the workers was back to the inputs' within "
        f"{max(held_wait.values(), default=0):.2f} s."
        if worst <= 0
        else "After dropping a result, the shared memory held open by this process and the workers "
        "stayed above the inputs' for more than 10 s, by up to "
        + ", ".join(f"{k}: {v / MiB:.0f} MiB" for k, v in held.items() if v > 0)
        + "."
    )
    body = f"""
#### (b) Seed workload: outer product into a {nbytes / 1e9:.2f} GB result

`r = y[:, None] * x[None, :]` for y of {rows_n:,} and x of {cols:,} float64
(result {nbytes / 1e9:.2f} GB). `ys`, `xs` are shared copies of y and x
(`ndshm.from_array`), made before timing. Plain dask builds the graph from
the private arrays (`da.from_array(y, chunks={cr})`, `da.from_array(x,
chunks=-1)`), computes the blocks on the workers and gathers them into one
ndarray in this process. `compute_into` builds the same expression over
`to_dask(ys, chunks={cr})` and `to_dask(xs, chunks=-1)` (graphs holding
handles) and has the workers write their blocks straight into a new shared
result: a worker computes each block into private memory (dask's task)
and then copies it into the result (ndshm's store task); the reference row
does the same with blocks of {cfg.seed_big_chunk_rows:,} rows.
`ndshm.map_blocks(..., executor=client)` scatters handles of each block's
views, and each worker calls the ufunc with `out=` its block of a new
shared result, with the blocks ndshm picks for a client. The time runs from building the
expression to holding the result. After timing, each result is compared
with numpy's (`np.array_equal`), dropped (`del` + `gc.collect()`), and the
client waits until the scheduler and both workers have forgotten every task. numpy runs in
this process on one CPU, the others on the {WORKERS} workers. Freshly
allocated memory is slow to touch the first time on this VM (see the
parallel-work section), which every contender pays. The cluster runs with
`{LOG_LENGTH_KEY}` = 0: with distributed's default (1000), its
batched comms keep their last 1000 messages, and the tasks in them hold
the arguments, a result's shared array included; measured while writing
this suite, every dropped 1.5 GiB result of `compute_into` or
`map_blocks` then stayed allocated in this process (the scheduler's),
9 GiB after six calls.
{cfg.seed_rounds} rounds, contenders shuffled in each. {rounds.load}

{table(headers, rows, align="llrrrrrrr")}

{held_line}

{pages_text}

Targets:

{table(("target", "measured (median)", ""), targets, align="lll")}
"""
    raw = rounds.raw(
        shape=(rows_n, cols),
        chunk_rows=cr,
        map_blocks_chunks=str(mb_chunks),
        held_after_bytes=held,
        held_wait_s=held_wait,
        small_pages=small.raw(huge_mib=huge),
    )
    return body, raw


# ------------------------------------------------------------------ (c) per-task overhead


OVERHEAD_ROWS = [
    ("dask_map", "Dask: `client.gather(client.map(f, range(N)))`", "1 task per item"),
    ("ndshm_map", "`ndshm.map(f, range(N), executor=client)`", "automatic"),
    ("ndshm_map_1", "`ndshm.map(f, range(N), executor=client, chunksize=1)`", "1"),
]


def part_overhead(c: Cluster, cfg: Config, log: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    client = c.client
    n = cfg.overhead_tasks
    items = range(n)
    expect = [i + 1 for i in items]

    def timed(run: Callable[[], list]) -> int:
        t0 = perf_counter_ns()
        got = run()
        dt = perf_counter_ns() - t0
        if got != expect:
            raise AssertionError("wrong results")
        del got
        c.settle()
        return dt

    fns: dict[str, Callable[[], Any]] = {
        "dask_map": lambda: timed(lambda: client.gather(client.map(_inc, items))),
        "ndshm_map": lambda: timed(lambda: ndshm.map(_inc, items, executor=client)),
        "ndshm_map_1": lambda: timed(lambda: ndshm.map(_inc, items, executor=client, chunksize=1)),
    }
    rounds = Rounds(seed=63)
    with gc_paused():
        rounds.run(fns, cfg.overhead_rounds, log, "overhead")

    def us(key: str, q: str = "median") -> float:
        s = rounds.get(key)
        return (s.median if q == "median" else s.min) / n / 1e3

    rows = []
    for key, label, chunks in OVERHEAD_ROWS:
        if not rounds.ok(key):
            rows.append((label, chunks, rounds.errors.get(key, "n/a"), "", "", "", ""))
            continue
        rows.append(
            (
                label,
                chunks,
                _fmt_us(us(key)),
                _fmt_us(us(key, "min")),
                fmt_time(rounds.med(key)),
                rounds.get(key).n,
                fmt_ratio(us(key) / us("dask_map")) if rounds.ok("dask_map") else "",
            )
        )
    headers = ("contender", "chunks", "µs/task (median)", "µs/task (min)", "call (median)", "n", "x Dask")
    body = f"""
#### (c) Per-task overhead

N = {n:,} trivial tasks `f(x) = x + 1` (a module-level function) on ints,
on the {WORKERS} workers; the time runs from the call to holding the list of
results (checked after timing), µs/task = time / N. `client.map` uses
Dask's defaults (`pure=True`: keys from the arguments, so the client waits
after each run until the scheduler and the workers have forgotten them, untimed).
`ndshm.map` with a client cuts the items into chunks (automatic: 4 per
worker thread), scatters each chunk (`direct=True`) and runs one task per
chunk; chunksize 1 makes one scattered item and one task per item.
{cfg.overhead_rounds} rounds, contenders shuffled in each. {rounds.load}

{table(headers, rows, align="llrrrrr")}
"""
    raw = rounds.raw(
        tasks=n,
    )
    return body, raw


# ------------------------------------------------------------------ suite protocol and main


PART_FNS = {"scatter": part_scatter, "seed": part_seed, "overhead": part_overhead}
TITLE = "2 workers on one host: handing over an array, seed workload, per-task overhead"


def run_parts(cfg: Config, log: Callable[[str], None], parts: tuple[str, ...] = PARTS) -> Result:
    bodies: list[str] = []
    raw: dict[str, Any] = {}
    with local_cluster(log) as c:
        for part in parts:
            log(f"dask {part}: start")
            try:
                body, raw[part] = PART_FNS[part](c, cfg, log)
            except Exception as e:  # one failed part must not lose the others
                log(f"dask {part}: failed: {err(e)}")
                body, raw[part] = f"\n#### {part}\n\nFailed: {err(e)}\n", {"error": err(e)}
                with suppress(Exception):
                    c.settle()
            bodies.append(body.strip())
    body = "\n\n".join([*bodies, versions_line()])
    return Result(TITLE, "\n" + body + "\n", raw)


def bench_dask(cfg: Config, log: Callable[[str], None]) -> Result:
    return run_parts(cfg, log)


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {"dask": bench_dask}
ORDER = ["2 workers on one host"]

INTRO = """
ndshm on Dask: shared arrays handed to `distributed` workers of the same
host as handles (a few hundred bytes) instead of bytes, results computed
into a shared array instead of gathered through the client, and ndshm's
own `map` / `map_blocks` run on a `distributed.Client`. Measured on one
`distributed.LocalCluster` of 2 single-threaded worker processes, started
once for the suite, against Dask's own paths in the same run. Targets from
the issue: 256 MiB to two same-host workers in ≤ 20 ms (Dask's scatter
measured at 376 ms there; as the argument of two tasks 712 ms, against
18 ms with a handle), and the 1.6 GB seed workload with `compute_into` in
≤ 0.6 s (plain dask's `.compute()`: 3.8 s). Run with `.venv/bin/python
benchmarks/run.py dask` (the whole suite, one benchmark) or
`.venv/bin/python benchmarks/dask_bench.py [scatter] [seed] [overhead]
[--quick]` (parts, tables only). The dask and distributed versions are
listed under the tables.
"""


def main(argv: list[str] | None = None) -> Result:
    import common

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", metavar="PART", help=f"any of: {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes, two rounds: a smoke run")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    parts = tuple(p for p in PARTS if p in args.parts) if args.parts else PARTS
    cfg = QUICK if args.quick else FULL
    log = Progress()
    env = common.environment()
    command = " ".join([".venv/bin/python benchmarks/dask_bench.py", *(argv or sys.argv[1:])])
    quick = " (quick smoke run)" if args.quick else ""
    print(f"## {SECTION}{quick}\n\n{common.environment_md(env, command)}")
    t0 = time.monotonic()
    res = run_parts(cfg, log, parts)
    print(f"\n### {res.title}\n{res.body}", flush=True)
    print(f"Took {time.monotonic() - t0:.0f} s.")
    return res


if __name__ == "__main__":
    main()
