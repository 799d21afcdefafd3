"""Core, from_array: making a shared copy of an array, against
``ndshm.empty`` + ``np.copyto``, SharedMemory and a private ``a.copy()``."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from multiprocessing import shared_memory
from time import perf_counter_ns, sleep

import numpy as np
from common import (
    GiB,
    Result,
    Samples,
    fmt_ratio,
    fmt_size,
    fmt_time,
    gc_paused,
    huge_check,
    huge_pages_off,
    huge_probe_text,
    private_tmpfs,
    shm_tag,
    small_pages_label,
    small_pages_target,
    small_pages_text,
    table,
    verdict,
)
from core_shared import (
    F8,
    Config,
    ndshm_delete,
    schedule,
    tag,
)

import ndshm

# ------------------------------------------------------------------ (c) from_array

# Rows repeated with NDSHM_HUGE_PAGES=off: the anonymous ones (named
# segments and SharedMemory live on /dev/shm, which the variable does not change).
FROM_ARRAY_SMALL = ["anon", "empty_copyto"]
# Longer than this VM waits before handing idle freed memory back to its
# host (~2 s), and than ndshm's re-read of NDSHM_HUGE_PAGES.
IDLE_S = 3.0


def bench_from_array(cfg: Config, log: Callable[[str], None]) -> Result:
    nbytes = cfg.from_array_size
    n = nbytes // F8.itemsize
    plain = np.arange(n, dtype=F8)
    expect = float(n - 1)
    made: list[str] = []

    def run_anon() -> int:
        t0 = perf_counter_ns()
        b = ndshm.from_array(plain)
        dt = perf_counter_ns() - t0
        ok = b[-1] == expect and b[n // 3] == n // 3
        del b
        assert ok
        return dt

    def run_named() -> int:
        name = tag()
        made.append(name)
        t0 = perf_counter_ns()
        b = ndshm.from_array(plain, name=name)
        dt = perf_counter_ns() - t0
        ok = b[-1] == expect and b[n // 3] == n // 3
        del b
        ndshm.delete(name)
        assert ok
        return dt

    def run_empty_copyto() -> int:
        t0 = perf_counter_ns()
        b = ndshm.empty(n, F8)
        np.copyto(b, plain)
        dt = perf_counter_ns() - t0
        ok = b[-1] == expect
        del b
        assert ok
        return dt

    def run_shm() -> int:
        name = shm_tag()
        t0 = perf_counter_ns()
        s = shared_memory.SharedMemory(create=True, size=nbytes, name=name)
        x = np.ndarray((n,), F8, buffer=s.buf)
        np.copyto(x, plain)
        dt = perf_counter_ns() - t0
        ok = x[-1] == expect
        del x
        s.close()
        s.unlink()
        assert ok
        return dt

    def run_private() -> int:
        t0 = perf_counter_ns()
        b = plain.copy()
        dt = perf_counter_ns() - t0
        ok = b[-1] == expect
        del b
        assert ok
        return dt

    rows_def = [
        ("anon", "`ndshm.from_array(a)` (anonymous)", run_anon),
        ("named", "`ndshm.from_array(a, name=...)`", run_named),
        ("empty_copyto", "`ndshm.empty` + `np.copyto` (anonymous)", run_empty_copyto),
        ("shm", "`SharedMemory(create=True, size)` + `np.copyto`", run_shm),
        ("private", "reference: `a.copy()` (private memory)", run_private),
    ]
    label_of = {k: label for k, label, _ in rows_def}
    fn_of = {k: f for k, _, f in rows_def}
    rows_off = [(f"{k}_off", small_pages_label(label_of[k]), fn_of[k]) for k in FROM_ARRAY_SMALL]
    idle = f", **after {IDLE_S:g} s idle**"
    # (key, label, function, with NDSHM_HUGE_PAGES=off)
    rows_idle = [
        ("anon_idle", label_of["anon"] + idle, run_anon, False),
        ("anon_off_idle", small_pages_label(label_of["anon"]) + idle, run_anon, True),
        ("shm_idle", label_of["shm"] + idle, run_shm, False),
    ]
    samples = {k: Samples(k) for k, *_ in rows_def + rows_off + rows_idle}
    rng = random.Random(3)

    def run_block(rows: list[tuple[str, str, Callable[[], int]]], warmups: int, what: str) -> None:
        fns = {k: f for k, _, f in rows}
        for _ in range(warmups):
            for f in fns.values():
                f()
        for r in range(cfg.from_array_reps):
            for key in schedule(dict.fromkeys(fns, 1), rng):
                with gc_paused():
                    samples[key].add(fns[key]())
            log(f"{what}: rep {r + 1}/{cfg.from_array_reps}, ndshm {fmt_time(samples[rows[0][0]].ns[-1])}")

    def run_idle(fn: Callable[[], int], off: bool) -> int:
        # The idle sleep is longer than ndshm's re-read of the variable: no
        # settling pause of its own; the next timing's sleep covers the restore.
        with huge_pages_off(settle_s=0) if off else nullcontext():
            sleep(IDLE_S)
            with gc_paused():
                return fn()

    def idle_block() -> None:
        fns = {k: (f, off) for k, _, f, off in rows_idle}
        rounds = cfg.from_array_idle_rounds
        for r in range(rounds):
            for key in schedule(dict.fromkeys(fns, 1), rng):
                samples[key].add(run_idle(*fns[key]))
            log(f"from_array, after {IDLE_S:g} s idle: round {r + 1}/{rounds}")

    def probe() -> str:
        b = ndshm.from_array(plain)
        try:
            return huge_check(b)
        finally:
            del b

    huge: dict[str, str] = {}
    try:
        run_block(rows_def, 1, "from_array")
        huge["default"] = probe()
        with huge_pages_off():
            run_block(rows_off, 2, "from_array, NDSHM_HUGE_PAGES=off")
            huge["off"] = probe()
        idle_block()
    finally:
        for name in made:
            ndshm_delete(name)

    def ratio_base(k: str) -> str:
        """The SharedMemory row a row compares with: the idle one for idle rows."""
        return "shm_idle" if k.endswith("_idle") else "shm"

    priv_min = samples["private"].min
    rows = [
        (
            label,
            fmt_time(samples[k].median),
            fmt_time(samples[k].min),
            samples[k].n,
            f"{nbytes / samples[k].median:.2f} GB/s",
            fmt_ratio(samples[k].median / samples[ratio_base(k)].median),
            fmt_ratio(samples[k].min / samples[ratio_base(k)].min),
            fmt_ratio(samples[k].min / priv_min),
        )
        for k, label, *_ in rows_def + rows_off + rows_idle
    ]
    anon, named, anon_off = samples["anon"], samples["named"], samples["anon_off"]
    limit = 400e6 * nbytes / GiB
    what = f"`from_array` of {fmt_size(nbytes)} ≤ {fmt_time(limit)}"
    targets = [
        (
            f"{what} (median)",
            f"anonymous {fmt_time(anon.median)} (min {fmt_time(anon.min)}), "
            f"named {fmt_time(named.median)} (min {fmt_time(named.min)})",
            verdict(anon.median <= limit),
        ),
        (
            small_pages_target(f"{what} (median)"),
            f"anonymous {fmt_time(anon_off.median)} (min {fmt_time(anon_off.min)})",
            verdict(anon_off.median <= limit),
        ),
    ]
    pages_text = small_pages_text(
        "the anonymous rows `ndshm.from_array(a)` and `ndshm.empty` + `np.copyto`; their ratios are to "
        "the SharedMemory and private-copy rows of the default block",
        huge_probe_text("one more `from_array`", huge),
    )
    headers = (
        "contender",
        "median",
        "min",
        "n",
        "throughput (median)",
        "x SharedMemory (medians)",
        "x SharedMemory (mins)",
        "x private copy (mins)",
    )
    body = f"""
A shared copy of a {fmt_size(nbytes)} float64 array (`np.arange`, all pages
written) that is made once before timing. Only creation + copy is timed;
freeing (and unlinking) each copy happens between timings. The contenders
run once per round in a shuffled order; {cfg.from_array_reps} rounds, after one
untimed warm-up of each.
`ndshm.from_array` reserves the memory (a segment with huge pages by
populating its mapping on several threads, one with 4 KiB pages with
`fallocate`) and copies with several threads; SharedMemory reserves nothing
(pages are allocated by the copy's page faults, and a full /dev/shm would
SIGBUS). numpy's private copy may use transparent huge pages (`madvise`
mode), so it is a reference, not a contender.
Copies of 1 GiB are where this shared 2-CPU machine is noisiest: when a
contender's median is far above its min, other work was running during
some of its rounds, and the mins are the better guide to what the code
itself costs.

{pages_text}

Rows marked "after {IDLE_S:g} s idle" ran last, in a block of their own:
`ndshm.from_array(a)` in the default config and with `NDSHM_HUGE_PAGES=off`,
and SharedMemory + `np.copyto`, interleaved in a shuffled order,
{cfg.from_array_idle_rounds} round(s) without warm-up, each timing preceded by an untimed
`time.sleep({IDLE_S:g})` (for the `NDSHM_HUGE_PAGES=off` row, the variable is set
before the sleep, which also covers ndshm's re-read, and removed after the
timing). This VM hands memory the guest has freed back to its host after
about 2 s idle (free page reporting), so the first touch of memory that
was idle costs a host fault; the rows above run back to back and reuse
memory freed moments before. These rows show what a copy costs after a
pause: huge pages built from memory the host took back can cost more than
4 KiB pages. Their "x SharedMemory" compares with the idle SharedMemory
row; no target is judged on them.

{table(headers, rows)}

Targets:

{table(("target", "measured", ""), targets, align="lll")}
"""
    raw = {
        "from_array": {k: s.ns for k, s in samples.items()},
        "huge_pages": {"private_tmpfs": private_tmpfs(), "huge_mib": huge, "idle_s": IDLE_S},
    }
    return Result("(c) from_array", body, raw)
