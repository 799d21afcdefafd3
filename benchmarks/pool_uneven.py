"""Parallel work, uneven tasks: seeded Pareto durations through each
tool's ``map``, time against the ideal (sum of the durations / workers)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Result,
    Rounds,
    fmt_ratio,
    fmt_time,
    table,
    verdict,
)
from pool_contenders import (
    BY_KEY,
    SPIN_S,
    TARGET_UNEVEN,
    TOOL_LABEL,
    WORKERS,
    Config,
    timed_map,
    versions_line,
    wait,
)

# ------------------------------------------------------------------ (b) uneven tasks


UNEVEN_BEST = ["mp_best", "ppe_best", "joblib_best", "mpire_default", "mpire_best", "pm_best", "ndshm_auto"]
UNEVEN_ONE = ["mp_1", "ppe_1", "joblib_1", "mpire_1", "pm_1", "ndshm_1"]
# (order, contenders): chunksize 1 hardly depends on the order, so the
# ascending order runs only the chunked settings.
UNEVEN_ORDERS = {"shuffled": UNEVEN_BEST + UNEVEN_ONE, "ascending": UNEVEN_BEST}
UNEVEN_ALPHA = 1.5


def uneven_durations(n: int, total_s: float, seed: int = 5, alpha: float = UNEVEN_ALPHA) -> list[float]:
    """Seeded Pareto(alpha) durations (heavy-tailed: finite mean, infinite
    variance for alpha <= 2), in random order, scaled to sum to `total_s`."""
    d = np.random.default_rng(seed).pareto(alpha, n) + 1.0
    d *= total_s / d.sum()
    return [float(v) for v in d]


def _overshoot(d: list[float], n: int) -> float:
    """Mean seconds by which `wait` outlasts its nominal duration when run
    in this process (sleep's wake-up latency), over the first `n` tasks."""
    extra = 0.0
    for v in d[:n]:
        t0 = time.perf_counter()
        wait(v)
        extra += time.perf_counter() - t0 - v
    return extra / max(1, min(n, len(d)))


def bench_uneven(cfg: Config, log: Callable[[str], None]) -> Result:
    d = uneven_durations(cfg.uneven_tasks, cfg.uneven_ideal_s * WORKERS)
    orders = {"shuffled": d, "ascending": sorted(d)}
    ideal = sum(d) / WORKERS
    arr = np.array(d)
    over = _overshoot(d, cfg.uneven_tasks // 10)
    fns: dict[str, Callable[[], int]] = {}
    keys = [f"{o}:{k}" for o, ks in UNEVEN_ORDERS.items() for k in ks]
    for key in keys:
        order, ck = key.split(":")
        c = BY_KEY[ck]
        items = orders[order]
        fns[key] = lambda c=c, items=items: timed_map(c, wait, items, items, cfg.warm_tasks)
    rounds = Rounds(keys, seed=52)
    rounds.run(fns, cfg.uneven_rounds, log, "uneven")
    rows = []
    for key in keys:
        order, ck = key.split(":")
        c = BY_KEY[ck]
        s = rounds.samples[key]
        if key in rounds.errors or not s.n:
            cell = rounds.errors.get(key) or "n/a"
            rows.append((TOOL_LABEL[c.tool], c.setting, order, cell, "", "", ""))
            continue
        rows.append(
            (
                TOOL_LABEL[c.tool],
                c.setting,
                order,
                fmt_time(s.median),
                fmt_time(s.min),
                s.n,
                fmt_ratio(s.median / (ideal * 1e9)),
            )
        )
    targets = []
    for order in UNEVEN_ORDERS:
        key = f"{order}:ndshm_auto"
        nd = rounds.samples[key]
        what = f"ndshm with automatic chunks ≤ {TARGET_UNEVEN:g}x ideal ({order})"
        if key in rounds.errors:
            targets.append((what, rounds.errors[key], ""))
        elif not nd.n:
            targets.append((what, "n/a", ""))
        else:
            ratio = nd.median / (ideal * 1e9)
            targets.append((what, fmt_ratio(ratio), verdict(ratio <= TARGET_UNEVEN)))
    q = np.quantile(arr, [0.5, 0.9, 0.99])
    floor = (sum(d) + len(d) * over) / WORKERS / ideal
    headers = ("tool", "setting", "order", "time (median)", "min", "n", "x ideal (median)")
    body = f"""
{cfg.uneven_tasks} tasks whose durations are drawn from a seeded Pareto
distribution (shape {UNEVEN_ALPHA}: finite mean, infinite variance), scaled so
that they sum to {sum(d):.2f} s: ideal = sum / {WORKERS} workers = {ideal:.2f} s.
Durations: median {fmt_time(q[0] * 1e9)}, p90 {fmt_time(q[1] * 1e9)}, p99
{fmt_time(q[2] * 1e9)}, max {fmt_time(arr.max() * 1e9)} (the longest task alone
is {arr.max() / ideal:.1%} of the ideal). A task sleeps for its duration,
spinning only for its last {SPIN_S * 1e6:.0f} µs, and returns it: sleeping tasks
measure how well a tool spreads uneven work, not how many CPUs other
processes leave free on this shared machine. Sleep still wakes up late
now and then: run in this process, the tasks took {over * 1e6:.1f} µs longer
than their nominal duration on average, so even a perfect pool would
measure about {fmt_ratio(floor)} here.

Two orders of the same durations: "shuffled" (as drawn, independent) and
"ascending" (the longest tasks last, as when work grows along the input:
the hard case for fixed chunks, whose last chunks then hold most of the
work; chunksize 1 hardly depends on the order, so only the chunked
settings run it). Each tool runs at the settings of (a): the chunk sizes
tuned for tiny tasks there are what a user would have tuned. Same protocol
as (a) (fresh pool, started and warmed, then only the map is timed);
process_map's time includes its pool's start-up and shutdown (it makes
one per call; about the 2-task call of (a)). {cfg.uneven_rounds} rounds,
contenders shuffled in each. {rounds.load}

{table(headers, rows, align="lllrrrr")}

Targets:

{table(("target", "measured", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        ideal_s=ideal,
        overshoot_s=over,
    )
    return Result("(b) Uneven tasks", body, raw)
