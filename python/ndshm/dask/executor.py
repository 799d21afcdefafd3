"""``ndshm.map``, ``ndshm.map_blocks`` and ``ndshm.map_overlap`` run on a
``distributed.Client``.

The same calls as on the local engine. Each task's data is scattered to
the worker that runs it, through ndshm's serializer: workers on this host
get handles (and write their blocks straight into the shared result),
workers on other hosts get the bytes of their blocks and send their result
blocks back, which are written here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..arrays import SharedArray, populate
from ..blocks import BlockRunner, sized_chunks
from ..sharing import as_shared

__all__ = ["map_blocks_on", "map_on"]

# Blocks per thread a call aims at: Dask costs ~1 ms per task, so blocks
# are bigger than the local engine's (between these sizes in bytes).
_BLOCKS_PER_THREAD = 4
_MIN_BLOCK = 4 << 20
_MAX_BLOCK = 64 << 20


def check_client(client: Any) -> None:
    """Refuses an executor that is not a ``distributed.Client``."""
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(
            f"executor must be an ndshm.Pool or a distributed.Client, not {type(client).__name__}"
        )


def _threads(client: Any) -> int:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def _progress(futures: list, progress: bool, unit: str) -> Iterable:
    from distributed import as_completed

    done = as_completed(futures, with_results=False)
    if not progress:
        return done
    from tqdm.auto import tqdm

    return tqdm(done, total=len(futures), unit=unit)


def _run_chunk(fn: Callable, items: list) -> list:
    return [fn(x) for x in items]


def map_on(client: Any, fn: Callable, iterable: Iterable, chunksize: int | None, progress: bool) -> list:
    """``[fn(x) for x in iterable]`` on the client's workers."""
    check_client(client)
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    items = [as_shared(x) for x in iterable]  # plain views of shared memory go as handles
    if not items:
        return []
    if chunksize is None:
        chunksize = max(1, math.ceil(len(items) / (_BLOCKS_PER_THREAD * _threads(client))))
    elif not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, not {chunksize!r}")
    chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
    data = client.scatter(chunks, direct=True, hash=False)
    futures = client.map(_run_chunk, [fn] * len(data), data, pure=False)
    try:
        for _ in _progress(futures, progress, "chunk"):
            pass
        return [y for part in client.gather(futures) for y in part]
    finally:
        client.cancel(futures + data)


def block_bytes(client: Any, shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes per block when `chunks` is not given."""
    total = math.prod(shape) * itemsize
    per = total // (_BLOCKS_PER_THREAD * _threads(client))
    return min(_MAX_BLOCK, max(_MIN_BLOCK, per))


def auto_chunks(client: Any, arrays: tuple, dtype: Any) -> Any:
    """Default blocks for a map_blocks on `client` (None where the inputs
    do not broadcast: the checks that follow say why)."""
    try:
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        itemsize = np.dtype(dtype).itemsize if dtype is not None else np.result_type(*arrays).itemsize
    except (ValueError, TypeError):
        return None
    return sized_chunks(shape, itemsize, block_bytes(client, shape, itemsize))


def map_blocks_on(client: Any, runner: BlockRunner, out: SharedArray, progress: bool) -> SharedArray:
    """Runs every block of `runner` on the client's workers."""
    check_client(client)
    nblocks = math.prod(len(s) for s in runner.grid)
    inputs = []
    for index in range(nblocks):
        loc = runner.location(index)
        inputs.append(runner.inputs(loc, runner.slices(loc)))
    data = client.scatter(inputs, direct=True, hash=False)
    # The runner writes blocks in place where `out` maps, else returns them.
    futures = client.map(runner, range(nblocks), data, pure=False)
    index_of = {fut.key: i for i, fut in enumerate(futures)}
    try:
        for fut in _progress(futures, progress, "block"):
            back = fut.result()
            if back is not None:
                target = out[runner.slices(runner.location(index_of[fut.key]))]
                if runner.lazy:
                    populate(target)
                np.copyto(target, back, casting="same_kind")
    finally:
        client.cancel(futures + data)
    return out
