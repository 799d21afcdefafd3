"""`ndshm demo`: the seed workload, a block-wise kernel over
``y[:, None]`` and ``x[None, :]``, three ways.

    python -m ndshm.demo [--size ROWS] [--workers N]

r = kernel(y[:, None], x[None, :]) for y of ROWS values and x of 10 000
(r: ROWS x 10 000 float64, 80 kB per row; the default 12 000 rows make
0.96 GB), where kernel(a, b) = sin(ab) exp(-ab) + sqrt(ab) cos(ab), computed

  (a) by ``ndshm.map_blocks(kernel, y[:, None], x[None, :], chunks=(50, -1),
      workers=N, progress=True)``: workers write their blocks of 50 rows
      straight into a shared result;
  (b) by ``tqdm.contrib.concurrent.process_map`` as users do today: each
      task gets 50 rows of y and all of x (pickled), returns its block of
      r (pickled back), and the blocks are stacked;
  (c) by numpy in one process: ``kernel(y[:, None], x[None, :])``, as
      written (its temporaries are whole arrays, not blocks).

y and x are ndshm shared arrays. Each time is end to end (pool start-up
included). The three results must be equal (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import ndshm

COLS = 10_000  # length of x
BLOCK_ROWS = 50  # rows of r per block (4 MB blocks), for map_blocks and process_map alike
DEFAULT_ROWS = 12_000


def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A few transcendental functions per element: enough work that two
    cores pay."""
    p = a * b
    return np.sin(p) * np.exp(-p) + np.sqrt(p) * np.cos(p)


def _rows_task(y_rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One process_map task: a block of rows of r."""
    return kernel(y_rows[:, None], x[None, :])


def run_ndshm(y: np.ndarray, x: np.ndarray, workers: int) -> np.ndarray:
    return ndshm.map_blocks(
        kernel, y[:, None], x[None, :], chunks=(BLOCK_ROWS, -1), workers=workers, progress=True
    )


def run_process_map(y: np.ndarray, x: np.ndarray, workers: int) -> np.ndarray:
    from tqdm.contrib.concurrent import process_map

    # Plain ndarrays, as users pass them today (a shared array would travel as a handle).
    y, x = np.asarray(y), np.asarray(x)
    starts = range(0, len(y), BLOCK_ROWS)
    y_blocks = [y[i : i + BLOCK_ROWS] for i in starts]
    parts = process_map(_rows_task, y_blocks, [x] * len(y_blocks), max_workers=workers, chunksize=1)
    return np.vstack(parts)


def run_numpy(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return kernel(np.asarray(y)[:, None], np.asarray(x)[None, :])


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    r = fn(*args)
    return r, time.perf_counter() - t


def _same(a: np.ndarray, b: np.ndarray) -> str | None:
    """None if a and b are equal (bit for bit or within 1e-12); else what differs."""
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} and {b.shape}"
    if np.array_equal(a, b) or np.allclose(a, b, rtol=1e-12, atol=1e-12):
        return None
    bad = ~np.isclose(a, b, rtol=1e-12, atol=1e-12)
    i = np.unravel_index(int(np.argmax(bad)), a.shape)
    where = tuple(int(k) for k in i)
    return f"{int(bad.sum()):,} of {a.size:,} entries differ, first at {where}: {a[i]!r} != {b[i]!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ndshm demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size",
        type=int,
        default=DEFAULT_ROWS,
        metavar="ROWS",
        help=f"rows of y and of the result (x has {COLS:,}; default {DEFAULT_ROWS:,}: a "
        f"{DEFAULT_ROWS * COLS * 8 / 1e9:.2g} GB result)",
    )
    ap.add_argument("--workers", type=int, default=2, help="worker processes for (a) and (b) (default 2)")
    args = ap.parse_args(argv)
    if args.size <= 0 or args.workers <= 0:
        ap.error("--size and --workers must be positive")
    rows, workers = args.size, args.workers

    rng = np.random.default_rng(0)
    y = ndshm.from_array(rng.random(rows))
    x = ndshm.from_array(rng.random(COLS))
    nblocks = -(-rows // BLOCK_ROWS)
    print("r = kernel(y[:, None], x[None, :]), kernel(a, b) = sin(ab) exp(-ab) + sqrt(ab) cos(ab)")
    print(
        f"r: {rows:,} x {COLS:,} float64 ({_size(rows * COLS * 8)}) in {nblocks:,} blocks "
        f"of {BLOCK_ROWS} rows; {workers} workers; {os.cpu_count()} CPUs"
    )
    sys.stdout.flush()

    r_nd, t_nd = _timed(run_ndshm, y, x, workers)
    r_pm, t_pm = _timed(run_process_map, y, x, workers)
    bad_pm = _same(r_pm, r_nd)
    del r_pm
    r_np, t_np = _timed(run_numpy, y, x)
    bad_np = _same(r_np, r_nd)
    exact = bad_pm is None and bad_np is None and np.array_equal(r_np, r_nd)
    del r_np, r_nd

    def line(label: str, t: float) -> str:
        return f"{label:36}{t:7.2f} s{t_np / t:9.2f}x{t_pm / t:15.2f}x"

    print(f"\n{'':36}{'time':>9}{'vs numpy':>10}{'vs process_map':>16}")
    print(line("(a) ndshm.map_blocks", t_nd))
    print(line("(b) process_map (arrays pickled)", t_pm))
    print(line("(c) numpy, one process", t_np))
    if bad_pm is None and bad_np is None:
        print(f"results: all three equal ({'bit for bit' if exact else 'within 1e-12'})")
        return 0
    for who, bad in (("process_map", bad_pm), ("numpy", bad_np)):
        if bad is not None:
            print(f"results: NOT equal: {who} vs ndshm.map_blocks: {bad}")
    return 1


if __name__ == "__main__":
    # Run as ndshm.demo (not __main__), so the workers find `kernel` by name.
    from ndshm import demo

    raise SystemExit(demo.main())
