"""``ndshm.dask.store`` takes ``out.lock`` only when ``out``'s memory may
overlap itself: the detection checked against numpy's own and against every
element's bytes, on random layouts (negative strides, broadcasts, stride
tricks); a wide C-ordered ``out`` is written without the lock."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import ndshm

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")
import ndshm.dask  # noqa: E402
from ndshm.dask.collection import may_overlap_itself  # noqa: E402

try:
    from numpy._core._multiarray_tests import internal_overlap
except ImportError:  # pragma: no cover - numpy's own check moved
    internal_overlap = None


def overlaps(a: np.ndarray) -> bool:
    """Whether two elements of `a` share a byte, by listing them all."""
    if a.size <= 1:
        return False
    offsets = [sum(i * s for i, s in zip(idx, a.strides)) for idx in itertools.product(*map(range, a.shape))]
    offsets.sort()
    return any(hi - lo < a.itemsize for lo, hi in itertools.pairwise(offsets))


def random_layout(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A view of `base` with random shape and strides (some negative, some
    zero), placed in its middle so that every element is inside it."""
    ndim = int(rng.integers(1, 5))
    itemsize = int(rng.choice([1, 2, 4, 8]))
    shape = tuple(int(n) for n in rng.integers(1, 6, ndim))
    strides = tuple(int(s) * int(rng.choice([1, 1, 1, 2, 3])) for s in rng.integers(-40, 41, ndim))
    mid = base.nbytes // 2
    return as_strided(base[mid:].view(f"u{itemsize}" if itemsize > 1 else "u1"), shape, strides)


def test_overlap_detection_never_misses_an_overlap():
    rng = np.random.default_rng(15)
    base = np.zeros(1 << 14, dtype=np.uint8)
    seen = {True: 0, False: 0}
    for _ in range(3000):
        v = random_layout(rng, base)
        truth = overlaps(v)
        seen[truth] += 1
        if internal_overlap is not None:
            assert internal_overlap(v) == truth, (v.shape, v.strides, v.itemsize)
        if truth:
            assert may_overlap_itself(v), (v.shape, v.strides, v.itemsize)
    assert seen[True] > 100 and seen[False] > 100  # both kinds were tried


def test_ordinary_views_do_not_overlap():
    rng = np.random.default_rng(16)
    for _ in range(500):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(n) for n in rng.integers(1, 9, ndim))
        order = str(rng.choice(["C", "F"]))
        a = np.zeros(shape, dtype=rng.choice([np.uint8, np.float32, np.float64, np.complex128]), order=order)
        a = a.transpose(rng.permutation(ndim))
        index = tuple(
            slice(int(rng.integers(0, n)), None, int(rng.choice([1, 2, 3, -1, -2]))) for n in a.shape
        )
        v = a[index]
        assert not overlaps(v)
        assert not may_overlap_itself(v), (v.shape, v.strides, v.itemsize)
    # The layouts of the report: wide and tall C-ordered arrays.
    assert not may_overlap_itself(np.empty((1000, 4000)))
    assert not may_overlap_itself(np.empty((4000, 1000)))
    assert not may_overlap_itself(np.empty((1000, 4000))[::-1, 10:])
    # Broadcasts do overlap.
    assert may_overlap_itself(np.broadcast_to(np.zeros(4), (3, 4)))


@pytest.mark.parametrize("shape", [(1000, 4000), (4000, 1000)])
def test_store_into_a_c_ordered_out_takes_no_lock(shape):
    out = ndshm.zeros(shape)
    x = da.ones(shape, chunks=500)
    done = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            import dask

            with dask.config.set(scheduler="threads"):
                ndshm.dask.store(x, out)
            with dask.config.set(scheduler="threads"):
                ndshm.dask.compute_into(x + 1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    with out.lock:  # a store that took the lock would wait here
        t = threading.Thread(target=run, daemon=True)
        t.start()
        finished = done.wait(120)
    t.join()
    assert finished, "store waited for out.lock"
    assert not errors, errors
    assert (out == 1).all()
