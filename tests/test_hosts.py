"""Handles name the host they were made on; on another host they turn into
a ForeignHandle that passes the handle on and refuses any use."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest

import ndshm
from ndshm import _native
from ndshm.arrays import _rebuild
from ndshm.hosts import LABEL, ForeignHandle

OTHER = "elsewhere/0123456789abcdef"


def _args_of(view: np.ndarray) -> tuple:
    fn, args = view.__reduce_ex__(5)
    assert fn is _rebuild
    return args


def test_label_names_this_host():
    name, key = _native.host()
    assert f"{name}/{key:016x}" == LABEL
    assert name == socket.gethostname()
    a = ndshm.zeros(4)
    assert _args_of(a[1:])[0][-1] == LABEL


@pytest.mark.parametrize("named", [False, True])
def test_a_handle_from_another_host_is_foreign_and_passes_on(named, shm_name):
    a = ndshm.from_array(np.arange(12.0).reshape(3, 4), name=shm_name if named else None)
    ref, *rest = _args_of(a[1:, ::2])
    foreign = _rebuild((*ref[:-1], OTHER), *rest)
    assert isinstance(foreign, ForeignHandle) and foreign.host == OTHER
    again = pickle.loads(pickle.dumps(foreign))
    assert isinstance(again, ForeignHandle) and again._args == foreign._args
    # Back on its own host (the label restored), the same handle maps the array.
    home = _rebuild(ref, *rest)
    assert isinstance(home, ndshm.SharedArray) and np.array_equal(home, a[1:, ::2])


def test_using_a_foreign_handle_names_both_hosts():
    a = ndshm.zeros(5)
    ref, *rest = _args_of(a)
    foreign = _rebuild((*ref[:-1], OTHER), *rest)
    uses = [
        lambda: np.asarray(foreign),
        lambda: foreign.sum(),
        lambda: foreign[0],
        lambda: foreign + 1,
        lambda: np.add(foreign, 1),
        lambda: len(foreign),
        lambda: float(foreign),
        lambda: foreign.shape,
    ]
    for use in uses:
        with pytest.raises(ValueError) as err:
            use()
        assert "'elsewhere'" in str(err.value) and repr(socket.gethostname()) in str(err.value)
    assert "elsewhere" in repr(foreign)


def test_a_lock_from_another_host_is_refused():
    lk = ndshm.Lock()
    fn, (cls, ref) = lk.__reduce__()
    with pytest.raises(ValueError, match="elsewhere"):
        fn(cls, (*ref[:-1], OTHER))


@pytest.mark.parametrize("host", [b"vm/00", None, 7, ("a",)])
def test_a_host_of_the_wrong_type_is_a_bad_handle(host):
    a = ndshm.zeros(3)
    ref, *rest = _args_of(a)
    with pytest.raises(ValueError, match="bad ndshm handle"):
        _rebuild((*ref[:-1], host), *rest)
