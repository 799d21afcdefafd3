"""Parallel work, per-task overhead: trivial tasks (``x + 1`` on ints)
through each tool's ``map`` at chunksize 1 and at its best setting, in µs
per task, with a log-scale chart."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HERE,
    Result,
    Rounds,
    fmt_ratio,
    fmt_time,
    table,
)
from pool_contenders import (
    ANCHOR_US,
    BY_KEY,
    CONTENDERS,
    SLOW,
    TARGET_US_1,
    TARGET_US_AUTO,
    TOOL_LABEL,
    TOOL_SHORT,
    TUNED_CHUNK,
    WORKERS,
    Config,
    Contender,
    fmt_us,
    inc,
    target_row,
    timed_map,
    versions_line,
)

# ------------------------------------------------------------------ (a) per-task overhead


def _n_tasks(cfg: Config, key: str) -> int:
    return cfg.overhead_tasks_slow if key in SLOW else cfg.overhead_tasks


def bench_overhead(cfg: Config, log: Callable[[str], None]) -> Result:
    keys = [c.key for c in CONTENDERS]
    items = {n: list(range(n)) for n in (cfg.overhead_tasks, cfg.overhead_tasks_slow)}
    expect = {n: [i + 1 for i in range(n)] for n in items}
    fns: dict[str, Callable[[], int]] = {}
    for c in CONTENDERS:
        n = _n_tasks(cfg, c.key)
        fns[c.key] = lambda c=c, n=n: timed_map(c, inc, items[n], expect[n], cfg.warm_tasks)
    # process_map starts a pool per call: its start-up + shutdown, measured
    # by a 2-task call in every round, is subtracted from its maps.
    pm_small = Contender("pm_small", "pm", 1, "2 tasks")
    fns["pm_small"] = lambda: timed_map(pm_small, inc, [0, 1], [1, 2], 0)
    rounds = Rounds([*keys, "pm_small"], seed=51)
    rounds.run(fns, cfg.overhead_rounds, log, "overhead")

    def us_per_task(key: str, q: str = "median") -> float:
        s = rounds.samples[key]
        if not s.n:
            return float("nan")
        n = _n_tasks(cfg, key)
        if BY_KEY[key].tool == "pm":  # less the 2-task call of the same round
            diffs = [a - b for a, b in zip(s.ns, rounds.samples["pm_small"].ns)]
            if not diffs:
                return float("nan")
            return (statistics.median(diffs) if q == "median" else min(diffs)) / (n - 2) / 1e3
        return (s.median if q == "median" else s.min) / n / 1e3

    us = {k: us_per_task(k) for k in keys}
    us_min = {k: us_per_task(k, "min") for k in keys}

    def ref_key(key: str) -> str:
        return "mp_1" if BY_KEY[key].chunk == 1 else "mp_best"

    rows = []
    for c in CONTENDERS:
        k = c.key
        s = rounds.samples[k]
        anchor = ANCHOR_US.get(k)
        if k in rounds.errors or not s.n:
            rows.append(
                (TOOL_LABEL[c.tool], c.setting, f"{_n_tasks(cfg, k):,}", rounds.cell(k, str), "", "", "", "")
            )
            continue
        rows.append(
            (
                TOOL_LABEL[c.tool],
                c.setting,
                f"{_n_tasks(cfg, k):,}",
                fmt_us(us[k]),
                fmt_us(us_min[k]),
                fmt_ratio(us[k] / us[ref_key(k)]),
                fmt_us(anchor) if anchor else "",
                fmt_ratio(us[k] / anchor) if anchor else "",
            )
        )
    small = rounds.samples["pm_small"]
    plot_note = make_plot(us, rounds, cfg, log)

    targets = [
        target_row(rounds, key, f"{what} ≤ {limit:g} µs/task", v, fmt_us, v <= limit)
        for key, what, limit in (
            ("ndshm_1", "ndshm at chunksize 1", TARGET_US_1),
            ("ndshm_auto", "ndshm with automatic chunks", TARGET_US_AUTO),
        )
        for v in [us.get(key, float("nan"))]
    ]
    headers = (
        "tool",
        "setting",
        "tasks",
        "µs/task (median)",
        "µs/task (min)",
        "x mp.Pool (same kind of setting)",
        "prior figure",
        "x anchor",
    )
    body = f"""
{WORKERS} workers, trivial task `inc(x) = x + 1` (a module-level function) on
ints, the results checked. Each contender gets a fresh pool in each round:
it is started and warmed (a map of {cfg.warm_tasks} tasks at the same
setting) before timing, then only the map is timed (the call until the
full result list is back) and the pool is shut down after. µs/task = that
time / tasks. `tqdm.contrib.concurrent.process_map` makes a new
`ProcessPoolExecutor` per call, so its start-up cannot be left out of a
call; instead a 2-task call (median {fmt_time(small.median)}) is timed in
every round and subtracted from that round's map: µs/task = median over
rounds of (map - 2-task call) / (tasks - 2). Its bar is drawn to /dev/null. Tools run at their default
start method (fork here; loky for joblib). At chunksize 1 the tools slower
than ~20 µs/task map {cfg.overhead_tasks_slow:,} tasks instead of
{cfg.overhead_tasks:,} (marked in the tasks column), to keep the run
short. "Best" settings: `Pool.map`'s and mpire's default chunks are
n / (4 x workers); the tools whose default is 1 get chunksize
{TUNED_CHUNK} (a scan of 100, 1000 and 12 500 with 100 000 tasks on this
machine: 1000 within 25% of 12 500 for PPE, mpire and process_map, 100
1.4-4x slower). "x mp.Pool" compares a chunksize-1
row with `Pool.map` at chunksize 1 and the other rows with `Pool.map` at
its default chunks. {cfg.overhead_rounds} rounds, contenders shuffled in
each. {rounds.load}

{table(headers, rows, align="llrrrrrr")}

{plot_note}

Targets:

{table(("target", "measured", ""), targets, align="lll")}

{versions_line()}
"""
    raw = rounds.raw(
        us_per_task=us,
        tasks={k: _n_tasks(cfg, k) for k in keys},
    )
    return Result("(a) Per-task overhead", body, raw)


def make_plot(us: dict[str, float], rounds: Rounds, cfg: Config, log: Callable[[str], None]) -> str:
    """The µs/task chart; returns the Markdown that shows it."""
    path = HERE / cfg.plot
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(No chart: matplotlib is not installed; `pip install -r benchmarks/requirements.txt`.)"
    tools = ["mp", "ppe", "joblib", "mpire", "pm", "ndshm"]
    ones, bests, best_labels = [], [], []
    for t in tools:
        ones.append(us.get(f"{t}_1", float("nan")))
        cands = [
            c for c in CONTENDERS if c.tool == t and c.chunk != 1 and not math.isnan(us.get(c.key, math.nan))
        ]
        best = min(cands, key=lambda c: us[c.key], default=None)
        bests.append(us[best.key] if best else float("nan"))
        best_labels.append(best.setting.split(" (")[0] if best else "")
    fig, ax = plt.subplots(figsize=(10, 5.6), dpi=110)
    xs = np.arange(len(tools))
    w = 0.38
    b1 = ax.bar(xs - w / 2, [v if v == v else 0 for v in ones], w, label="chunksize 1", color="#d95f02")
    b2 = ax.bar(xs + w / 2, [v if v == v else 0 for v in bests], w, label="best setting", color="#1b9e77")
    ax.set_yscale("log")
    for bars, vals in ((b1, ones), (b2, bests)):  # values inside the bars' tops, clear of the markers
        ax.bar_label(
            bars,
            labels=[fmt_us(v) if v == v else "" for v in vals],
            fontsize=7.5,
            padding=-11,
            color="white",
            fontweight="bold",
        )
    anchor_x, anchor_y = [], []
    for i, t in enumerate(tools):
        for key, dx in ((f"{t}_1", -w / 2), (f"{t}_best", w / 2)):
            if key in ANCHOR_US:
                anchor_x.append(i + dx + w / 2 + 0.03)  # beside the bar, pointing at its height
                anchor_y.append(ANCHOR_US[key])
    ax.plot(anchor_x, anchor_y, "k<", ls="none", markersize=7, label="prior figure (quoted with the targets)")
    ax.axhline(
        TARGET_US_1, color="#7570b3", ls="--", lw=1.2, label=f"ndshm target, chunksize 1: {TARGET_US_1:g} µs"
    )
    ax.axhline(
        TARGET_US_AUTO,
        color="#7570b3",
        ls=":",
        lw=1.2,
        label=f"ndshm target, automatic: {TARGET_US_AUTO:g} µs",
    )
    finite = [v for v in ones + bests + anchor_y if v == v and v > 0]
    lo = min([*finite, TARGET_US_AUTO]) / 3
    hi = max([*finite, TARGET_US_1]) * 3
    ax.set_ylim(lo, hi)
    if "ndshm_1" in rounds.errors:
        note = rounds.errors["ndshm_1"]
        y = math.sqrt(TARGET_US_1 * TARGET_US_AUTO)
        ax.text(xs[-1], y, note.replace(": ", ":\n", 1), ha="center", va="center", fontsize=9, wrap=True)
    ticks = [f"{TOOL_SHORT[t]}\n(best: {b})" if b else TOOL_SHORT[t] for t, b in zip(tools, best_labels)]
    ax.set_xticks(xs, ticks, fontsize=8)
    ax.set_ylabel("µs per task (median, log scale)")
    ax.set_title(
        f"Per-task overhead, {WORKERS} workers, trivial task (x + 1); pool start-up excluded", fontsize=11
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"overhead: chart saved to {path}")
    rel = path.relative_to(HERE).as_posix()
    return f"![µs per task, chunksize 1 and best setting, log scale]({rel})"
