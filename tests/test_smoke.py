"""The basic promises, end to end in one process."""

import pickle

import numpy as np
import pytest

import ndshm


def test_zeros_is_a_shared_ndarray():
    a = ndshm.zeros((3, 4), dtype=np.int32)
    assert isinstance(a, ndshm.SharedArray) and isinstance(a, np.ndarray)
    assert a.shape == (3, 4) and a.dtype == np.int32 and not a.any()
    assert a.name is None


def test_named_round_trip(shm_name):
    a = ndshm.from_array(np.arange(12.0).reshape(3, 4), name=shm_name)
    assert a.name == shm_name and ndshm.exists(shm_name)
    b = ndshm.attach(shm_name)
    b[1, 1] = -1
    assert a[1, 1] == -1
    ndshm.delete(shm_name)
    assert not ndshm.exists(shm_name)
    assert a.sum() == b.sum()  # mappings outlive the name


def test_view_pickles_as_small_handle():
    a = ndshm.from_array(np.arange(100.0).reshape(10, 10))
    v = a[::2, 1:]
    data = pickle.dumps(v)
    assert len(data) < 1024
    w = pickle.loads(data)
    assert np.array_equal(w, v)
    w[0, 0] = 1234.0
    assert a[0, 1] == 1234.0


def test_readonly_attach_is_enforced(shm_name):
    ndshm.zeros(5, name=shm_name)
    r = ndshm.attach(shm_name, readonly=True)
    with pytest.raises(ValueError):
        r[0] = 1
    with pytest.raises(ValueError):
        r.flags.writeable = True
