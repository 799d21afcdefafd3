"""Runs the ndshm benchmarks (`make bench`).

    python benchmarks/run.py                      # everything; updates RESULTS.md
    python benchmarks/run.py handoff attach       # a subset (its subsections only)
    python benchmarks/run.py --quick              # a fast smoke run; writes nothing

Tables go to stdout, progress to stderr, raw timings to benchmarks/out/
(not committed), and each suite rewrites only its own section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import core_bench
import dask_bench
import lock_bench
import overlap_bench
import pool_bench
import sharing_bench
import threads_bench

SHM = Path("/dev/shm")

# Each suite is a module with SECTION (its "## " heading in RESULTS.md),
# INTRO, ORDER (its "### " subsections), BENCHMARKS (name -> function(cfg,
# log) -> Result), and FULL / QUICK configurations.
SUITES = [core_bench, lock_bench, pool_bench, dask_bench, sharing_bench, overlap_bench, threads_bench]


def _shm_listing() -> set[str]:
    """Entries of /dev/shm this process made (by their names: the suites
    name everything after the pid; other processes share /dev/shm)."""
    prefixes = r"bench[-_]|bench-ndshm-|joblib_memmapping_folder_|sem\.loky-|sem\.mp-"
    mine = re.compile(rf"({prefixes}){os.getpid()}\b")
    try:
        return {n for n in os.listdir(SHM) if mine.search(n)}
    except OSError:
        return set()


def _removed_at_exit(name: str) -> bool:
    """Empty folders joblib made for this process: its atexit hooks remove them."""
    path = SHM / name
    return (
        name.startswith(f"joblib_memmapping_folder_{os.getpid()}_")
        and path.is_dir()
        and not any(path.iterdir())
    )


def _leftovers(before: set[str], wait_s: float = 10.0) -> list[str]:
    """What this run added to /dev/shm and did not remove (joblib removes
    its files through its resource tracker, so give it a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        gc.collect()
        left = sorted(n for n in _shm_listing() - before if not _removed_at_exit(n))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _check_at_exit(before: set[str]) -> None:
    """Runs last at exit (registered first): checks that joblib's own exit
    hooks removed its folders too."""
    left = sorted(_shm_listing() - before)
    if left:
        print(f"WARNING: left in /dev/shm after exit: {', '.join(left)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    print("/dev/shm: nothing left behind (checked again at exit).", flush=True)


@contextmanager
def _private_segment_dir() -> Iterator[Path | None]:
    """Named segments go to a private directory on the same tmpfs
    (``NDSHM_DIR=/dev/shm/bench-ndshm-PID``), unless NDSHM_DIR is set, so
    that other processes sharing /dev/shm (test sessions cleaning up,
    ``ndshm rm``/``gc``) cannot pull them from under a running benchmark."""
    if os.environ.get("NDSHM_DIR"):
        yield None
        return
    path = SHM / f"bench-ndshm-{os.getpid()}"
    path.mkdir(mode=0o700)
    os.environ["NDSHM_DIR"] = str(path)
    try:
        yield path
    finally:
        del os.environ["NDSHM_DIR"]
        left = sorted(p.name for p in path.iterdir())
        if left:
            print(f"WARNING: removing segments left in {path}: {', '.join(left)}", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)


def _command(argv: list[str]) -> str:
    if os.environ.get("MAKELEVEL") and not argv:
        return "make bench"
    return " ".join([".venv/bin/python benchmarks/run.py", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = [b for suite in SUITES for b in suite.BENCHMARKS]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of: {', '.join(names)}")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions; writes no results")
    ap.add_argument("--write", action="store_true", help="update RESULTS.md even with --quick")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    ap.add_argument("--results", type=Path, default=common.RESULTS, help="the RESULTS.md to update")
    args = ap.parse_args(argv)
    unknown = [b for b in args.benchmarks if b not in names]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [b for b in names if b in args.benchmarks] if args.benchmarks else names
    write = not args.no_write and (args.write or not args.quick)
    mode = "quick smoke run, not representative" if args.quick else "full run"

    log = common.Progress()
    before = _shm_listing()
    atexit.register(_check_at_exit, before)
    print(f"ndshm benchmarks ({'quick' if args.quick else 'full'}): {', '.join(chosen)}")
    t_all = time.monotonic()
    status = 0
    with _private_segment_dir() as seg_dir:
        if seg_dir is not None:
            log(f"named segments go to {seg_dir} (NDSHM_DIR)")
        for suite in SUITES:
            todo = [b for b in chosen if b in suite.BENCHMARKS]
            if not todo:
                continue
            cfg = suite.QUICK if args.quick else suite.FULL
            env = common.environment()
            print(f"\n## {suite.SECTION}\n\n{common.environment_md(env, _command(argv))}")
            t0 = time.monotonic()
            results = []
            for name in todo:
                log(f"{name}: start")
                res = suite.BENCHMARKS[name](cfg, log)
                results.append(res)
                print(f"\n### {res.title}\n{res.body}", flush=True)
            elapsed = time.monotonic() - t0

            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            out = common.HERE / "out"
            out.mkdir(exist_ok=True)
            slug = re.sub(r"\W+", "-", suite.SECTION.lower()).strip("-")
            raw_path = out / f"{slug}-{stamp}{'-quick' if args.quick else ''}.json"
            raw = {
                "env": env,
                "argv": argv,
                "config": dataclasses.asdict(cfg),
                "results": {r.title: r.raw for r in results},
            }
            raw_path.write_text(json.dumps(raw, default=str))
            print(f"raw timings: {raw_path.relative_to(common.REPO)}")
            if write:
                intro = (
                    suite.INTRO.strip()
                    + f"\n\nLast run ({mode}; the subsections it re-ran carry its date):\n\n"
                    + common.environment_md(env, _command(argv), elapsed)
                )
                subsections = {
                    r.title: f"_Measured {env['date']}, {mode}._\n\n{r.body.strip()}" for r in results
                }
                common.update_section(suite.SECTION, intro, subsections, suite.ORDER, args.results)
                print(f"updated {args.results} (section '{suite.SECTION}')")

    left = _leftovers(before)
    print(f"\nTotal {time.monotonic() - t_all:.0f} s.")
    if left:
        print(f"WARNING: this run left in /dev/shm: {', '.join(left)}", file=sys.stderr)
        status = 1
    else:
        joblib_dirs = len(_shm_listing() - before)
        later = f" (joblib removes its {joblib_dirs} empty folders at exit)" if joblib_dirs else ""
        print(f"/dev/shm: nothing left behind{later}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
