"""Core, handoff: an array handed to a pre-started worker process, ndshm's
handles against pickling, SharedMemory and joblib."""

from __future__ import annotations

import gc
import multiprocessing as mp
import pickle
import random
import statistics
import textwrap
from collections.abc import Callable
from contextlib import suppress
from multiprocessing import shared_memory
from multiprocessing.reduction import ForkingPickler
from time import perf_counter_ns
from typing import Any

import numpy as np
from common import (
    KiB,
    Result,
    Samples,
    fmt_ratio,
    fmt_size,
    fmt_time,
    gc_paused,
    shm_tag,
    stop_loky,
    table,
    verdict,
)
from core_shared import (
    F8,
    TIMEOUT_S,
    Config,
    ndshm_delete,
    schedule,
    tag,
)

import ndshm
from ndshm.handles import segment_of

# ------------------------------------------------------------------ workers


def _touch(x: np.ndarray) -> float:
    """The whole task: read one element (the last, so one page is faulted in)."""
    return float(x[-1])


def _noop() -> None:
    return None


def _pipe_worker(conn: Any) -> None:
    """A pre-started worker: receives tasks on a Pipe, answers each one with
    (value, ns to receive + open, ns to touch, ns to drop)."""
    while True:
        try:
            conn.poll(None)  # wait for a task (the wait is not part of the breakdown)
            t0 = perf_counter_ns()
            msg = conn.recv()  # unpickles here: for ndshm, this attaches
        except EOFError:
            return
        except Exception as e:  # a task that cannot be unpickled: report it, keep serving
            conn.send(e)
            continue
        kind = msg[0]
        if kind == "stop":
            return
        if kind == "empty":
            del msg
            conn.send((None, perf_counter_ns() - t0, 0, 0))
        elif kind == "array":
            x = msg[1]
            t1 = perf_counter_ns()
            v = _touch(x)
            t2 = perf_counter_ns()
            del x, msg  # unmap / free before answering, so no cost leaks into the next task
            conn.send((v, t1 - t0, t2 - t1, perf_counter_ns() - t2))
        elif kind == "shm":
            _, name, shape, dtype = msg
            s = shared_memory.SharedMemory(name=name)
            x = np.ndarray(shape, dtype, buffer=s.buf)
            t1 = perf_counter_ns()
            v = _touch(x)
            t2 = perf_counter_ns()
            del x
            s.close()
            conn.send((v, t1 - t0, t2 - t1, perf_counter_ns() - t2))
        else:
            conn.send(ValueError(f"unknown task {kind!r}"))


class PipeWorker:
    """One spawned process that answers tasks sent through a Pipe."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")  # zero-copy must not depend on fork
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_pipe_worker, args=(child,), daemon=True, name="bench-worker")
        self.proc.start()
        child.close()
        self.call(("empty",))
        self.phases: dict[str, list[tuple[int, int, int, int]]] = {}

    def timed(self, key: str, msg: tuple, expect: Any) -> int:
        """One round trip, timed; keeps the time the parent spent sending
        (pickling + writing) and the worker's own timings under `key`."""
        t0 = perf_counter_ns()
        self.conn.send(msg)
        t1 = perf_counter_ns()
        if not self.conn.poll(TIMEOUT_S):
            raise TimeoutError("benchmark worker did not answer")
        r = self.conn.recv()
        dt = perf_counter_ns() - t0
        if isinstance(r, Exception):
            raise r
        if r[0] != expect:
            raise AssertionError(f"wrong answer: {r[0]!r} != {expect!r}")
        self.phases.setdefault(key, []).append((t1 - t0, *r[1:]))
        return dt

    def call(self, msg: tuple) -> Any:
        self.conn.send(msg)
        if not self.conn.poll(TIMEOUT_S):
            raise TimeoutError("benchmark worker did not answer")
        r = self.conn.recv()
        if isinstance(r, Exception):
            raise r
        return r

    def close(self) -> None:
        with suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def _timed(fn: Callable[[], Any], expect: Any) -> int:
    t0 = perf_counter_ns()
    r = fn()
    dt = perf_counter_ns() - t0
    if r != expect:
        raise AssertionError(f"wrong answer: {r!r} != {expect!r}")
    return dt


# ------------------------------------------------------------------ (a) handoff

HANDOFF_ROWS = [
    # key, label, floor key (for the "x its own empty task" column)
    ("empty", "empty task (Pipe round trip, no array): floor", None),
    ("ndshm_anon", "ndshm handle, anonymous", "empty"),
    ("ndshm_named", "ndshm handle, named", "empty"),
    ("shm", "SharedMemory by name (+ ndarray wrap, close)", "empty"),
    ("pickle", "pickled copy of a plain ndarray", "empty"),
    ("joblib_empty", "joblib empty task (loky, reused Parallel): joblib floor", None),
    ("joblib_ndshm", "joblib + ndshm array (handle)", "joblib_empty"),
    ("joblib_cached", "joblib auto-memmap, reused Parallel (file cached)", "joblib_empty"),
    ("joblib_dump", "joblib auto-memmap, new Parallel per call (dumps)", "joblib_empty"),
]
SLOW = {"pickle", "joblib_dump"}


def handle_sizes(arr_anon: np.ndarray, arr_named: np.ndarray) -> list[tuple[str, int, int]]:
    """Pickled sizes of handles (and unpickles each in this process, which
    settles the pending handoff that pickling an anonymous array counts)."""
    out = []
    for label, a in (
        ("anonymous array", arr_anon),
        ("named array", arr_named),
        ("view a[::2] of the anonymous array", arr_anon[::2]),
    ):
        p5 = pickle.dumps(a, protocol=5)
        fp = bytes(ForkingPickler.dumps(a))
        for data in (p5, fp):
            b = pickle.loads(data)
            assert b.shape == a.shape and b[-1] == a[-1]
            del b
        out.append((label, len(p5), len(fp)))
    return out


def _run_rounds(
    fns: dict[str, Callable[[], int]],
    reps: dict[str, int],
    rounds: int,
    rng: random.Random,
    log: Callable[[str], None],
    what: str,
    slow: str,
) -> dict[str, Samples]:
    for f in fns.values():  # warm-up (untimed)
        f()
    samples = {k: Samples(k) for k in fns}
    for r in range(rounds):
        with gc_paused():
            for key in schedule(reps, rng):
                samples[key].add(fns[key]())
        log(f"{what}: round {r + 1}/{rounds}, {slow} {fmt_time(samples[slow].ns[-1])}")
    return samples


def _handoff_size(
    cfg: Config,
    nbytes: int,
    worker: PipeWorker,
    rng: random.Random,
    log: Callable[[str], None],
    want_handle_sizes: bool,
) -> tuple[dict[str, Samples], list[tuple[str, int, int]], dict[str, list[tuple[int, int, int, int]]]]:
    """All handoff contenders for one array size, in two phases (Pipe, then
    joblib), each interleaved; also the phases of each Pipe round trip."""
    import joblib

    d = joblib.delayed
    n = nbytes // F8.itemsize
    expect = float(n - 1)
    plain = np.arange(n, dtype=F8)  # every page written: nothing lazy
    anon = ndshm.from_array(plain)
    named_name = tag()
    named = ndshm.from_array(plain, name=named_name)
    shm = shared_memory.SharedMemory(create=True, size=nbytes, name=shm_tag())
    sizes: list[tuple[str, int, int]] = []
    fast = cfg.handoff_fast_inner[nbytes]
    rounds = cfg.handoff_rounds[nbytes]
    try:
        view = np.ndarray((n,), F8, buffer=shm.buf)
        np.copyto(view, plain)
        del view
        shm_msg = ("shm", shm.name, (n,), F8.str)

        # Phase 1: the Pipe contenders, with no joblib executor (nor its
        # threads) alive in this process.
        stop_loky()
        pipe_fns: dict[str, Callable[[], int]] = {
            "empty": lambda: worker.timed("empty", ("empty",), None),
            "ndshm_anon": lambda: worker.timed("ndshm_anon", ("array", anon), expect),
            "ndshm_named": lambda: worker.timed("ndshm_named", ("array", named), expect),
            "shm": lambda: worker.timed("shm", shm_msg, expect),
            "pickle": lambda: worker.timed("pickle", ("array", plain), expect),
        }
        worker.phases.clear()
        reps = {k: 1 if k in SLOW else fast for k in pipe_fns}
        samples = _run_rounds(pipe_fns, reps, rounds, rng, log, f"handoff {fmt_size(nbytes)}, Pipe", "pickle")
        phases = dict(worker.phases)
        worker.phases.clear()  # the warm-up of phase 1 is in `phases` too: drop it
        for k in phases:
            phases[k] = phases[k][1:]

        # Phase 2: joblib, workers started before timing and the Parallel
        # object reused across calls.
        with joblib.Parallel(n_jobs=2, backend="loky") as pj:  # n_jobs=1 would run in-process
            pj([d(_noop)() for _ in range(4)])
            jl_fns: dict[str, Callable[[], int]] = {
                "joblib_empty": lambda: _timed(lambda: pj([d(_noop)()]), [None]),
                "joblib_ndshm": lambda: _timed(lambda: pj([d(_touch)(anon)]), [expect]),
                "joblib_cached": lambda: _timed(lambda: pj([d(_touch)(plain)]), [expect]),
                "joblib_dump": lambda: _timed(
                    lambda: joblib.Parallel(n_jobs=2, backend="loky")([d(_touch)(plain)]), [expect]
                ),
            }
            reps = {k: 1 if k in SLOW else cfg.joblib_inner for k in jl_fns}
            samples.update(
                _run_rounds(
                    jl_fns, reps, rounds, rng, log, f"handoff {fmt_size(nbytes)}, joblib", "joblib_dump"
                )
            )
        stop_loky()
        if want_handle_sizes:
            sizes = handle_sizes(anon, named)
        seg = segment_of(anon)
        if seg is not None and seg.pending:
            log(f"WARNING: {seg.pending} handoffs of the anonymous array were never attached")
    finally:
        shm.close()
        shm.unlink()
        ndshm_delete(named_name)
    return samples, sizes, phases


def bench_handoff(cfg: Config, log: Callable[[str], None]) -> Result:
    rng = random.Random(2)
    raw: dict[str, Any] = {"sizes": {}, "phases": {}}
    breakdown: list[tuple[str, ...]] = []
    worker = PipeWorker()
    log("handoff: worker started")
    try:
        targets: list[tuple[str, str, str]] = []
        sizes_md = []
        for nbytes in cfg.handoff_sizes:
            last = nbytes == cfg.handoff_sizes[-1]
            samples, sizes, phases = _handoff_size(cfg, nbytes, worker, rng, log, last)
            gc.collect()
            n = nbytes // F8.itemsize
            if sizes:
                raw["handle_sizes"] = sizes
            raw["sizes"][nbytes] = {k: s.ns for k, s in samples.items()}
            med = {k: s.median for k, s in samples.items()}
            rows = []
            for key, label, floor in HANDOFF_ROWS:
                s = samples[key]
                rows.append(
                    (
                        label,
                        fmt_time(s.median),
                        fmt_time(s.min),
                        s.n,
                        fmt_ratio(s.median / med[floor]) if floor else "1 (floor)",
                        fmt_ratio(med["pickle"] / s.median) if key != "pickle" else "1",
                    )
                )
            tbl = table(("contender", "median", "min", "n", "x its empty task", "pickling ÷ this"), rows)
            raw["phases"][nbytes] = phases
            for key, label, _ in HANDOFF_ROWS:
                if key not in phases:
                    continue
                parts = [statistics.median(p[i] for p in phases[key]) for i in range(4)]
                total = statistics.median(sum(p[1:]) for p in phases[key])
                rest = statistics.median(rt - sum(p) for rt, p in zip(samples[key].ns, phases[key]))
                breakdown.append(
                    (
                        fmt_size(nbytes),
                        label.split(":")[0].split(" (")[0],
                        fmt_time(med[key]),
                        *(fmt_time(x) for x in parts),
                        fmt_time(total),
                        fmt_time(rest) if rest > 0 else "(overlaps)",
                    )
                )
            sizes_md.append(f"**{fmt_size(nbytes)} float64** ({n:,} elements)\n\n{tbl}\n")
            if nbytes == max(cfg.handoff_sizes):
                r_empty = med["ndshm_anon"] / med["empty"]
                r_pickle = med["pickle"] / med["ndshm_anon"]
                r_empty_named = med["ndshm_named"] / med["empty"]
                r_pickle_named = med["pickle"] / med["ndshm_named"]
                sz = fmt_size(nbytes)
                targets += [
                    (
                        f"{sz} handoff ≤ 1.5x the empty task",
                        f"anonymous {r_empty:.2f}x, named {r_empty_named:.2f}x "
                        f"({fmt_time(med['ndshm_anon'])} vs {fmt_time(med['empty'])})",
                        verdict(r_empty <= 1.5),
                    ),
                    (
                        f"{sz} handoff ≥ 5000x faster than pickling",
                        f"anonymous {r_pickle:,.0f}x, named {r_pickle_named:,.0f}x "
                        f"(pickling {fmt_time(med['pickle'])})",
                        verdict(r_pickle >= 5000),
                    ),
                ]
        if "handle_sizes" in raw:
            worst = max(max(p5, fp) for _, p5, fp in raw["handle_sizes"])
            targets.append(
                (
                    "pickled handle < 1 KiB",
                    f"{worst} bytes at most (table above)",
                    verdict(worst < KiB),
                )
            )
    finally:
        worker.close()
        with suppress(Exception):
            stop_loky()

    phases_par = textwrap.fill(
        "For each size the contenders run in two phases, each interleaved round-robin: first the "
        "Pipe ones, then the joblib ones. They are not mixed because joblib slows everything else "
        "in the parent process down for a while after each call (its helper threads are still at "
        "work and compete for the GIL): measured while writing this suite, sending an empty Pipe "
        "task right after a joblib call took 8-15x longer than otherwise. The loky executor is "
        "also shut down before each Pipe phase. Per round, the µs-scale Pipe contenders run "
        + ", ".join(f"{cfg.handoff_fast_inner[s]}" for s in cfg.handoff_sizes)
        + " times (for "
        + ", ".join(fmt_size(s) for s in cfg.handoff_sizes)
        + f"), the joblib ones {cfg.joblib_inner} times, and pickling and joblib's per-call dump "
        "once; rounds per size (both phases): "
        + ", ".join(str(cfg.handoff_rounds[s]) for s in cfg.handoff_sizes)
        + '. "x its empty task" divides by the Pipe empty task (by joblib\'s empty task for the '
        "joblib rows). Most joblib calls take about 10 ms whatever they carry (the mins show "
        "what a call can cost): that is joblib's own per-call overhead here, which hides any "
        "difference between the ways it passes the array, except a dump.",
        75,
        break_on_hyphens=False,
    )
    bd_head = (
        "size",
        "contender",
        "round trip",
        "parent: send",
        "worker: receive + open",
        "touch",
        "drop",
        "worker total",
        "rest",
    )
    hs = raw.get("handle_sizes", [])
    hs_md = table(
        ("pickled object", "pickle.dumps, protocol 5", "multiprocessing's ForkingPickler"),
        [(label, f"{p5} B", f"{fp} B") for label, p5, fp in hs],
    )
    body = f"""
Each handoff is one full round trip to a worker started before timing: the
parent pickles the task, the worker unpickles it, reads the array's last
element (one page faulted in), drops the array (unmapping or freeing it)
and sends the value back; the parent checks the value. The Pipe contenders
share one spawned `multiprocessing.Process` that reads tasks from a `Pipe`
(`Connection.send`/`recv`, i.e. multiprocessing's own pickling, as in a
`Pool`); the joblib contenders use `joblib.Parallel(n_jobs=2,
backend="loky")` (n_jobs=1 would run in-process) with its default
`max_nbytes="1M"`, entered once as a `with` block and reused across calls,
except the "new Parallel per call" row, which is the plain
`Parallel(...)(...)` call most code writes (workers reused, but each call
dumps the array to a fresh file and removes it afterwards). joblib caches
its memmap per array object inside a `with` block and does not notice if
the array changes, so the "file cached" row costs only its per-call
overhead; its first call pays the same dump as the last row.

{phases_par}

{chr(10).join(sizes_md)}
Where a Pipe round trip goes (medians of each phase: the parent's
`Connection.send`, i.e. pickling the task and writing it; then, timed by
the worker itself, receiving and unpickling the task (which is where ndshm
attaches; SharedMemory attaches by name after it, counted here too),
reading the element, dropping the array (unmapping or freeing it); "rest"
is the median of what is left of each round trip: waking the worker, the
reply and waking the parent. For pickling, the parent's send overlaps the
worker's receive):

{table(bd_head, breakdown, align="ll" + "r" * 7)}

Pickled handle sizes:

{hs_md}

Targets (medians, {fmt_size(max(cfg.handoff_sizes))}):

{table(("target", "measured", ""), targets, align="lll")}
"""
    return Result("(a) Handoff to a pre-started worker", body, raw)
