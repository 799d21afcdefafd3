"""The basic promises, end to end in one process."""

import os
import pickle

import numpy as np
import pytest

import ndshm
from ndshm import _native, handles


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


def test_info_and_list_are_records_read_from_the_file(shm_name):
    a = ndshm.zeros((3, 4), dtype=">i2", order="F", name=shm_name)
    e = _native.info(shm_name)
    assert isinstance(e, _native.Entry)
    assert (e.name, e.status, e.detail, e.shape, e.fortran_order) == (shm_name, "ready", None, (3, 4), True)
    assert handles.dtype_of(e.descr) == np.dtype(">i2")
    assert e.nbytes == a.nbytes and e.file_len > a.nbytes
    assert e.owner_pid == os.getpid() and e.owner_alive and e.created > 0
    assert repr(e).startswith(f"Entry(name={shm_name!r}, status='ready', ")
    with pytest.raises(AttributeError):
        e.status = "corrupt"
    [listed] = [x for x in _native.list_segments() if x.name == shm_name]
    assert isinstance(listed, _native.Entry) and listed.shape == (3, 4)
    si = ndshm.info(shm_name)
    assert (si.dtype, si.shape, si.order, si.nbytes) == (np.dtype(">i2"), (3, 4), "F", a.nbytes)
    assert si in ndshm.list()
    ndshm.delete(shm_name)


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
