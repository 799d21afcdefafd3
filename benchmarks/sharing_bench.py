"""Plain views of shared arrays: the benchmarks of what travels as a handle.

    .venv/bin/python benchmarks/run.py plain_view store_layout pickling
    .venv/bin/python benchmarks/sharing_bench.py [--quick] [--write]

1. ``map_blocks`` on a plain view of a 1 GiB shared input (``np.asarray(a)``
   and ``xarray.DataArray(a)``) against the SharedArray itself, on one
   2-worker pool, interleaved; and the same at 128 MiB with the code before
   plain views travelled as handles (a checkout of it, built, named by
   ``NDSHM_BASELINE``, run in a child process), when one is given.
2. ``ndshm.dask.store`` of ``sin(x)`` into a wide (1000, 4000) and a tall
   (4000, 1000) C-ordered ``out``, chunks of 500 x 500, dask's threaded
   scheduler with 2 threads, interleaved; with the baseline too.
3. Pickling ordinary (private) arrays of 1 KiB and 100 MiB with
   ``pickle.dumps`` and with multiprocessing's ``ForkingPickler.dumps``, in
   child processes that import ndshm and that do not, alternating.

The module follows the suite protocol of ``benchmarks/run.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MiB,
    Result,
    baseline_dir,
    baseline_python,
    fmt_ratio,
    fmt_time,
    run_child,
    standalone,
    table,
    verdict,
)

import ndshm

SECTION = "Plain views of shared arrays"
ORDER = ["map_blocks on a plain view", "store into wide and tall outputs", "pickling ordinary arrays"]
INTRO = """
Plain `numpy.ndarray` views of shared memory (`np.asarray(a)`, xarray's
`.values`, scikit-learn's `check_array` output) travel as handles through
ndshm's entry points, multiprocessing and joblib (README, "Plain views of
shared arrays"). Figures: `map_blocks` on a plain view of a 1 GiB shared
input as fast as on the SharedArray itself; `ndshm.dask.store` into a wide
(1000, 4000) `out` as fast as into a tall (4000, 1000) one; pickling of
ordinary arrays no slower with ndshm imported. The baseline rows run the
code from before plain views travelled as handles (a built checkout of it,
with its own `.venv`, named by `NDSHM_BASELINE`; rows left out without
it) in a child process in the same run. Run with
`NDSHM_BASELINE=../base .venv/bin/python benchmarks/run.py plain_view
store_layout pickling`.
"""


@dataclass
class Config:
    view_bytes: int
    view_rounds: int
    base_bytes: int
    base_rounds: int
    store_rounds: int
    pickle_rounds: int
    pickle_small_reps: int
    pickle_big_reps: int


FULL = Config(
    view_bytes=1 << 30,
    view_rounds=15,
    base_bytes=128 * MiB,
    base_rounds=3,
    store_rounds=21,
    pickle_rounds=10,
    pickle_small_reps=20_000,
    pickle_big_reps=5,
)
QUICK = Config(
    view_bytes=64 * MiB,
    view_rounds=2,
    base_bytes=16 * MiB,
    base_rounds=1,
    store_rounds=2,
    pickle_rounds=2,
    pickle_small_reps=2000,
    pickle_big_reps=2,
)


# ------------------------------------------------------------ 1. map_blocks


_MAP_BLOCKS_CHILD = """
import json, time
import numpy as np
import ndshm

if __name__ == "__main__":
    n = {n}
    a = ndshm.from_array(np.random.default_rng(0).random(n))
    out = ndshm.empty(n)
    times = {{"SharedArray": [], "np.asarray(a)": []}}
    with ndshm.Pool(2) as pool:
        pool.map_blocks(np.negative, a, out=out)  # warm
        for _ in range({rounds}):
            for label, x in (("SharedArray", a), ("np.asarray(a)", np.asarray(a))):
                t = time.perf_counter_ns()
                pool.map_blocks(np.negative, x, out=out)
                times[label].append(time.perf_counter_ns() - t)
                assert out[-1] == -a[-1]
    print(json.dumps(times))
"""


def bench_plain_view(cfg: Config, log: Callable[[str], None]) -> Result:
    import xarray as xr

    n = cfg.view_bytes // 8
    log(f"map_blocks: making a {cfg.view_bytes >> 20} MiB input")
    a = ndshm.from_array(np.random.default_rng(0).random(n))
    out = ndshm.empty(n)
    contenders = {
        "the SharedArray `a`": a,
        "`np.asarray(a)` (plain view)": np.asarray(a),
        "`xarray.DataArray(a)`": xr.DataArray(a),
    }
    times: dict[str, list[int]] = {k: [] for k in contenders}
    with ndshm.Pool(2) as pool:
        pool.map_blocks(np.negative, a, out=out)  # warm: pages of out faulted in, workers mapped
        for r in range(cfg.view_rounds):
            log(f"map_blocks: round {r + 1}/{cfg.view_rounds}")
            for label, x in contenders.items():
                t = time.perf_counter_ns()
                pool.map_blocks(np.negative, x, out=out)
                times[label].append(time.perf_counter_ns() - t)
                assert out[-1] == -a[-1]
    ref = statistics.median(times["the SharedArray `a`"])
    rows = [
        [
            label,
            fmt_time(statistics.median(ts)),
            fmt_time(min(ts)),
            len(ts),
            fmt_ratio(statistics.median(ts) / ref),
        ]
        for label, ts in times.items()
    ]
    worst = max(statistics.median(ts) for ts in times.values()) / ref
    del a, out, contenders

    base_rows = []
    py = baseline_python()
    if py is not None:
        m = cfg.base_bytes // 8
        code = _MAP_BLOCKS_CHILD.format(n=m, rounds=cfg.base_rounds)
        for label, python, cwd in (("before (baseline)", py, baseline_dir()), ("now", sys.executable, None)):
            log(f"map_blocks {cfg.base_bytes >> 20} MiB: {label}")
            got = run_child(python, code, cwd)
            shared = statistics.median(got["SharedArray"])
            plain = statistics.median(got["np.asarray(a)"])
            base_rows.append([label, fmt_time(shared), fmt_time(plain), fmt_ratio(plain / shared)])

    body = f"""
`pool.map_blocks(np.negative, x, out=out)` over a {cfg.view_bytes >> 20} MiB float64
input (default blocks), one 2-worker `ndshm.Pool` and a pre-faulted shared
`out` reused by every call, contenders interleaved over {cfg.view_rounds} rounds.
"x the SharedArray" divides medians.

{table(["input x", "median", "min", "n", "x the SharedArray"], rows)}

Target: a plain view as fast as the SharedArray (within 1.10x, for noise):
{fmt_ratio(worst)}, {verdict(worst <= 1.10)}.
"""
    if base_rows:
        body += f"""
The same call at {cfg.base_bytes >> 20} MiB (a fresh process each, {cfg.base_rounds} calls
per contender), with the code before plain views travelled as handles (the
baseline pickled the input into the job and every worker unpickled a copy)
and now:

{table(["code", "SharedArray", "np.asarray(a)", "plain ÷ shared"], base_rows)}
"""
    return Result("map_blocks on a plain view", body, {"times": times})


# ------------------------------------------------------------ 2. store


_STORE_CHILD = """
import json, threading, time
import dask
import dask.array as da
import numpy as np
import ndshm
import ndshm.dask

if __name__ == "__main__":
    times = {{"(1000, 4000)": [], "(4000, 1000)": []}}
    arrays = {{}}
    for shape in ((1000, 4000), (4000, 1000)):
        x = ndshm.from_array(np.random.default_rng(1).random(shape))
        arrays[str(shape)] = (ndshm.dask.to_dask(x, chunks=500), ndshm.empty(shape))
    with dask.config.set(scheduler="threads", num_workers=2):
        for label, (d, out) in arrays.items():
            ndshm.dask.store(da.sin(d), out)  # warm
        for _ in range({rounds}):
            for label, (d, out) in arrays.items():
                t = time.perf_counter_ns()
                ndshm.dask.store(da.sin(d), out)
                times[label].append(time.perf_counter_ns() - t)
    print(json.dumps(times))
"""


def bench_store_layout(cfg: Config, log: Callable[[str], None]) -> Result:
    rows = []
    runs = [("now", sys.executable, None)]
    py = baseline_python()
    if py is not None:
        runs.insert(0, ("before (baseline)", py, baseline_dir()))
    raw = {}
    ratio_now = float("nan")
    for label, python, cwd in runs:
        log(f"store: {label}")
        got = run_child(python, _STORE_CHILD.format(rounds=cfg.store_rounds), cwd)
        raw[label] = got
        wide = statistics.median(got["(1000, 4000)"])
        tall = statistics.median(got["(4000, 1000)"])
        rows.append([label, fmt_time(wide), fmt_time(tall), fmt_ratio(wide / tall)])
        if label == "now":
            ratio_now = wide / tall
    body = f"""
`ndshm.dask.store(da.sin(ndshm.dask.to_dask(x, chunks=500)), out)` with a
C-ordered float64 `x` and `out` of each shape (32 MB), dask's threaded
scheduler with 2 threads; the two shapes interleaved over {cfg.store_rounds} rounds,
in a fresh process per code version. The chunk is computed straight into
`out` (`np.sin(..., out=)`), under `out.lock` when `store` thinks `out` may
overlap itself: the baseline did for every wide `out`.

{table(["code", "wide (1000, 4000)", "tall (4000, 1000)", "wide ÷ tall"], rows)}

Target: the wide `out` as fast as the tall one (within 1.15x, for noise):
{fmt_ratio(ratio_now)}, {verdict(ratio_now <= 1.15)}.
"""
    return Result("store into wide and tall outputs", body, raw)


# ------------------------------------------------------------ 3. pickling


_PICKLE_CHILD = """
import json, pickle, statistics, time
from multiprocessing.reduction import ForkingPickler
import numpy as np
if {with_ndshm}:
    import ndshm
    assert np.ndarray in ForkingPickler._extra_reducers
else:
    assert np.ndarray not in ForkingPickler._extra_reducers

out = {{}}
for label, nbytes, reps in (("1 KiB", 1024, {small}), ("100 MiB", 100 << 20, {big})):
    a = np.random.default_rng(2).random(nbytes // 8)
    for how, dumps in (("pickle.dumps", lambda x: pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)),
                       ("ForkingPickler.dumps", ForkingPickler.dumps)):
        dumps(a)
        batch = max(1, reps // 20)
        ts = []
        for _ in range(max(1, reps // batch)):
            t = time.perf_counter_ns()
            for _ in range(batch):
                dumps(a)
            ts.append((time.perf_counter_ns() - t) / batch)
        out[f"{{label}}|{{how}}"] = statistics.median(ts)
print(json.dumps(out))
"""


def _toggled_forking_pickler(cfg: Config) -> tuple[list[list[str]], float]:
    """ForkingPickler.dumps with ndshm's ndarray reducer registered and not
    (all that importing ndshm changes about pickling ordinary arrays), in
    this process, alternating batch by batch."""
    from multiprocessing.reduction import ForkingPickler

    reducers = ForkingPickler._extra_reducers  # type: ignore[attr-defined]
    ours = reducers[np.ndarray]
    rows, worst = [], 0.0
    try:
        for size, nbytes, reps in (
            ("1 KiB", 1024, cfg.pickle_small_reps),
            ("100 MiB", 100 << 20, cfg.pickle_big_reps),
        ):
            a = np.random.default_rng(3).random(nbytes // 8)
            batch = max(1, reps // 20)
            ts: dict[bool, list[float]] = {False: [], True: []}
            for i in range(2 * cfg.pickle_rounds * max(1, reps // batch // 4)):
                registered = i % 2 == 1
                if registered:
                    reducers[np.ndarray] = ours
                else:
                    reducers.pop(np.ndarray, None)
                t = time.perf_counter_ns()
                for _ in range(batch):
                    ForkingPickler.dumps(a)
                ts[registered].append((time.perf_counter_ns() - t) / batch)
            without, with_ = statistics.median(ts[False]), statistics.median(ts[True])
            worst = max(worst, with_ / without)
            rows.append([size, fmt_time(without), fmt_time(with_), fmt_ratio(with_ / without), len(ts[True])])
    finally:
        reducers[np.ndarray] = ours
    return rows, worst


def bench_pickling(cfg: Config, log: Callable[[str], None]) -> Result:
    log("pickling: ForkingPickler with and without the reducer, in this process")
    toggled, toggled_worst = _toggled_forking_pickler(cfg)
    samples: dict[str, dict[str, list[float]]] = {"without": {}, "with": {}}
    for r in range(cfg.pickle_rounds):
        log(f"pickling: round {r + 1}/{cfg.pickle_rounds}")
        for cond in ("without", "with") if r % 2 == 0 else ("with", "without"):
            code = _PICKLE_CHILD.format(
                with_ndshm=cond == "with", small=cfg.pickle_small_reps, big=cfg.pickle_big_reps
            )
            for key, ns in run_child(sys.executable, code).items():
                samples[cond].setdefault(key, []).append(ns)
    rows = []
    worst = 0.0
    for key in samples["without"]:
        size, how = key.split("|")
        without = statistics.median(samples["without"][key])
        with_ = statistics.median(samples["with"][key])
        ratio = with_ / without
        worst = max(worst, ratio)
        rows.append([size, f"`{how}`", fmt_time(without), fmt_time(with_), fmt_ratio(ratio)])
    body = f"""
Pickling an ordinary (private) float64 array in a child process that does
not import ndshm and in one that does (which registers ndshm's reducer for
`numpy.ndarray` with multiprocessing's `ForkingPickler`; `pickle` itself is
left alone), the two alternating over {cfg.pickle_rounds} child processes each.
Per child: the median over batches of the time per call; the table gives
the median over children. `pickle.dumps` at the highest protocol,
`ForkingPickler.dumps` as multiprocessing and concurrent.futures call it
(the default protocol).

{table(["array", "pickler", "without ndshm", "with ndshm", "with ÷ without"], rows)}

The one thing importing ndshm changes here is the reducer registered with
`ForkingPickler`; measured on its own, in one process, registered and not
in alternating batches (the machine's noise cancels out better than
between processes):

{table(["array", "without the reducer", "with it", "with ÷ without", "batches each"], toggled)}

Target: no measurable difference (every ratio within 1.05x). In one
process: worst {fmt_ratio(toggled_worst)}, {verdict(toggled_worst <= 1.05)}; between
processes: worst {fmt_ratio(worst)}, {verdict(worst <= 1.05)} (`pickle.dumps` is not
touched by ndshm at all: its row shows the noise between processes).
"""
    return Result("pickling ordinary arrays", body, samples)


BENCHMARKS: dict[str, Callable[[Config, Callable[[str], None]], Result]] = {
    "plain_view": bench_plain_view,
    "store_layout": bench_store_layout,
    "pickling": bench_pickling,
}


if __name__ == "__main__":
    sys.exit(standalone(BENCHMARKS))
