"""Kills creators at many points of a create: forks children that create
and delete one kind of array in a loop, SIGKILLs each (its own child, by
pid) after a random short delay, and looks at what is left. Prints the
count of every outcome as JSON; anything undocumented counts under "BAD"."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sys
import time

import numpy as np

import ndshm

name, rounds = sys.argv[1], int(sys.argv[2])
counts: collections.Counter[str] = collections.Counter()
KINDS = {
    "named small": (name, 1 << 10),
    "named huge": (name, 4 << 20),
    "anonymous small": (None, 1 << 10),
    "anonymous huge": (None, 4 << 20),
}


def loop(seg_name: str | None, nbytes: int) -> None:
    src = np.full(nbytes // 8, 7, dtype=np.int64)
    while True:
        a = ndshm.from_array(src, name=seg_name)
        del a
        if seg_name:
            ndshm.delete(seg_name)


def look(kind: str, seg_name: str | None, nbytes: int) -> None:
    if seg_name is None:
        counts[f"{kind}: nothing to look at"] += 1
        return
    try:
        a = ndshm.attach(seg_name)
        if a.nbytes == nbytes and a.min() == a.max() == 7:
            counts[f"{kind}: complete array"] += 1
        else:
            counts[f"BAD {kind}: incomplete array"] += 1
        del a
    except FileNotFoundError:
        counts[f"{kind}: FileNotFoundError"] += 1
    except ndshm.AbandonedSegment:
        counts[f"{kind}: AbandonedSegment"] += 1
    except BaseException as e:
        counts[f"BAD {kind}: {type(e).__name__} {e}"] += 1
    try:
        status = ndshm.info(seg_name).status
    except FileNotFoundError:
        status = "gone"
    if status not in ("ready", "abandoned", "gone"):
        counts[f"BAD {kind}: status {status}"] += 1
    removed = ndshm.gc()
    if removed != ([seg_name] if status == "abandoned" else []):
        counts[f"BAD {kind}: gc removed {removed} of a {status} segment"] += 1
    if status == "ready":
        ndshm.delete(seg_name)


for i in range(rounds):
    kind = list(KINDS)[i % len(KINDS)]
    seg_name, nbytes = KINDS[kind]
    pid = os.fork()
    if pid == 0:
        try:
            loop(seg_name, nbytes)
        finally:
            os._exit(1)
    # Let the child run a random while (0 to 4 ms: creates take about
    # 0.05 ms small, 1 ms huge), so it dies at a different point each time.
    time.sleep(random.random() * 0.004)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    look(kind, seg_name, nbytes)
left = sorted(os.listdir(ndshm._native.segment_dir()))
if left:
    counts[f"BAD left behind: {left}"] += 1
print(json.dumps(counts))
