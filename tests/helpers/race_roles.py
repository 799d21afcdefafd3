"""One process of the race test: plays `role` on segment NAME for SECONDS
and prints the count of every outcome as JSON. The documented outcomes are
named plainly; anything else is counted under a key starting with "BAD"."""

from __future__ import annotations

import collections
import json
import sys
import time

import numpy as np

import ndshm

role, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
counts: collections.Counter[str] = collections.Counter()


def bad(what: str, e: BaseException | None = None) -> None:
    counts[f"BAD {what}: {type(e).__name__ if e else ''} {e or ''}"[:160]] += 1


def create(k: int) -> None:
    # Every element of a published array holds the same value: an attacher
    # that sees two values saw data that was not complete.
    try:
        if k % 3:
            ndshm.from_array(np.full(1024, k, dtype=np.int64), name=name)
        else:
            ndshm.zeros(1024, dtype=np.int64, name=name)
        counts["create: ok"] += 1
    except FileExistsError:
        counts["create: FileExistsError"] += 1
    except BaseException as e:
        bad("create", e)
    delete()


def delete() -> None:
    try:
        ndshm.delete(name)
        counts["delete: ok"] += 1
    except FileNotFoundError:
        counts["delete: FileNotFoundError"] += 1
    except BaseException as e:
        bad("delete", e)


def attach(k: int) -> None:
    try:
        a = ndshm.attach(name, readonly=bool(k % 2))
        if a.shape == (1024,) and a.min() == a.max():
            counts["attach: array"] += 1
        else:
            bad(f"attach: incomplete data {a.shape} {a.min()}..{a.max()}")
    except (FileNotFoundError, TimeoutError) as e:
        counts[f"attach: {type(e).__name__}"] += 1
    except BaseException as e:
        bad("attach", e)


def inspect(k: int) -> None:
    try:
        counts[f"info: {ndshm.info(name).status}"] += 1
    except FileNotFoundError:
        counts["info: FileNotFoundError"] += 1
    except BaseException as e:
        bad("info", e)
    try:
        for s in ndshm.list():
            counts[f"list: {s.status}"] += 1
    except BaseException as e:
        bad("list", e)
    try:
        counts[f"exists: {ndshm.exists(name)}"] += 1
    except BaseException as e:
        bad("exists", e)
    try:
        removed = ndshm.gc()
        counts["gc: nothing to remove"] += not removed
        if removed:
            bad(f"gc removed {removed}")
    except BaseException as e:
        bad("gc", e)
    if k % 16 == 0:
        delete()


act = {"create": create, "attach": attach, "inspect": inspect}[role]
end = time.monotonic() + seconds
k = 0
while time.monotonic() < end:
    k += 1
    act(k)
for key in [k for k in counts if k.startswith(("info: ", "list: "))]:
    if key.split(": ")[1] not in ("ready", "creating", "FileNotFoundError"):
        counts[f"BAD status {key}"] = counts.pop(key)
print(json.dumps(counts))
