"""The module functions ``ndshm.map``, ``ndshm.map_blocks`` and
``ndshm.map_overlap``: a call on a pool started for it, or on an executor
(an ndshm :class:`~ndshm.pool.Pool`, a ``distributed.Client``, or
threads)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .arrays import SharedArray
from .blocks import check_kwargs, plan_blocks
from .overlap import overlap_bytes, plan_overlap
from .pool import Pool
from .startmethod import default_workers

__all__ = ["map", "map_blocks", "map_overlap"]


def map(
    fn: Callable,
    iterable: Iterable,
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
) -> list:
    """``[fn(x) for x in iterable]`` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool` or a ``distributed.Client``."""
    if executor is not None:
        if isinstance(executor, Pool):
            return executor.map(fn, iterable, chunksize=chunksize, progress=progress)
        from .dask.executor import map_on

        return map_on(executor, fn, iterable, chunksize, progress)
    with Pool(workers, start_method) as pool:
        return pool.map(fn, iterable, chunksize=chunksize, progress=progress)


def map_blocks(
    fn: Callable,
    /,
    *arrays: Any,
    chunks: Any = None,
    out: np.ndarray | None = None,
    dtype: Any = None,
    workers: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
    **kwargs: Any,
) -> SharedArray:
    """:meth:`Pool.map_blocks` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool`, a ``distributed.Client`` (whose
    workers on other hosts get the bytes of their blocks), or ``"threads"``
    (`workers` threads of this process, see :mod:`ndshm.threads`). Other
    keyword arguments go to ``fn`` (see :data:`RESERVED`)."""
    check_kwargs("map_blocks", kwargs)
    if isinstance(executor, str):
        if executor != "threads":
            raise TypeError(
                f'executor must be an ndshm.Pool, a distributed.Client or "threads", not {executor!r}'
            )
        from . import threads

        n = threads.check_workers(workers)
        return threads.run_blocks(*plan_blocks(fn, arrays, chunks, out, dtype, kwargs), n, progress)
    if isinstance(executor, Pool):
        return executor.map_blocks(
            fn, *arrays, chunks=chunks, out=out, dtype=dtype, progress=progress, **kwargs
        )
    if executor is not None:
        from .dask.executor import auto_chunks, check_client, map_blocks_on

        check_client(executor)
        if chunks is None:
            chunks = auto_chunks(executor, arrays, dtype)
        runner, out = plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
        return map_blocks_on(executor, runner, out, progress)
    runner, out = plan_blocks(fn, arrays, chunks, out, dtype, kwargs)
    with Pool(workers, start_method) as pool:
        return pool.run_blocks(runner, out, None, progress)


def map_overlap(
    fn: Callable,
    /,
    *arrays: Any,
    depth: Any,
    boundary: Any = None,
    chunks: Any = None,
    out: np.ndarray | None = None,
    dtype: Any = None,
    trim: bool = True,
    workers: int | None = None,
    progress: bool = False,
    start_method: str | None = None,
    executor: Any = None,
    **kwargs: Any,
) -> SharedArray:
    """:meth:`Pool.map_overlap` on a pool started for the call, or on
    `executor`: an ndshm :class:`Pool` or a ``distributed.Client`` (whose
    workers on other hosts get the bytes of their blocks and halos)."""
    check_kwargs("map_overlap", kwargs)
    if isinstance(executor, Pool):
        return executor.map_overlap(
            fn,
            *arrays,
            depth=depth,
            boundary=boundary,
            chunks=chunks,
            out=out,
            dtype=dtype,
            trim=trim,
            progress=progress,
            **kwargs,
        )
    if executor is not None:
        from .dask.executor import block_bytes, check_client, map_blocks_on

        check_client(executor)
        target = functools.partial(block_bytes, executor)
        runner, out = plan_overlap(fn, arrays, chunks, out, dtype, kwargs, depth, boundary, trim, target)
        return map_blocks_on(executor, runner, out, progress)
    n = workers if isinstance(workers, int) and workers > 0 else default_workers()
    target = functools.partial(overlap_bytes, workers=n)
    runner, out = plan_overlap(fn, arrays, chunks, out, dtype, kwargs, depth, boundary, trim, target)
    with Pool(workers, start_method) as pool:
        return pool.run_blocks(runner, out, None, progress)
