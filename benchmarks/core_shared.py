"""What the core benchmarks share: their configuration and the naming,
scheduling and clean-up of the segments they make."""

from __future__ import annotations

import os
import random
import uuid
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

import ndshm
from ndshm.handles import segment_of

TIMEOUT_S = 300.0  # a reply slower than this means the worker is stuck
F8 = np.dtype(np.float64)


@dataclass
class Config:
    handoff_sizes: list[int]
    handoff_rounds: dict[int, int]  # rounds per size; each slow contender runs once per round
    handoff_fast_inner: dict[int, int]  # reps per round of the µs-scale contenders
    joblib_inner: int  # reps per round of the ms-scale joblib contenders
    attach_sizes: list[int]
    attach_iters: int
    attach_distinct: int  # number of distinct segments per contender
    attach_distinct_size: int
    attach_passes: int
    from_array_size: int
    from_array_reps: int
    from_array_idle_rounds: int  # rounds of the block timed after IDLE_S of sleep each


# ------------------------------------------------------------------ helpers


def tag() -> str:
    return f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def schedule(reps: dict[str, int], rng: random.Random) -> list[str]:
    """One round: each contender `reps[k]` times, spread evenly through the
    round with a random phase, so no contender always follows another."""
    slots = []
    for key, k in reps.items():
        phase = rng.random()
        slots.extend(((j + phase) / k, rng.random(), key) for j in range(k))
    slots.sort()
    return [key for _, _, key in slots]


def shm_unlink(name: str) -> None:
    """Unlinks a SharedMemory segment by name (and its tracker entry)."""
    with suppress(FileNotFoundError):
        s = shared_memory.SharedMemory(name=name)
        s.close()
        s.unlink()


def ndshm_delete(name: str) -> None:
    with suppress(FileNotFoundError):
        ndshm.delete(name)


def seg_id(arr: np.ndarray) -> int:
    seg = segment_of(arr)
    assert seg is not None, "not a shared array"
    return seg.id
