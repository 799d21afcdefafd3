"""Handles name the host they were made on; on another host they turn into
a ForeignHandle that passes the handle on and refuses any use."""

from __future__ import annotations

import pickle
import socket
import struct

import numpy as np
import pytest

import ndshm
from ndshm import _native
from ndshm.handles import rebuild
from ndshm.hosts import LABEL, ForeignHandle
from tests.helpers.wire import text, wire_of

OTHER = "elsewhere/0123456789abcdef"
_OTHER_NODE, _OTHER_KEY = "elsewhere", 0x0123456789ABCDEF


def _wire_of(view: np.ndarray) -> bytes:
    fn, (wire,) = view.__reduce_ex__(5)
    assert fn is rebuild
    return wire


def _elsewhere(wire: bytes, node: bytes = _OTHER_NODE.encode(), key: int = _OTHER_KEY) -> bytes:
    """`wire` as if made on another host: its host key and node name
    (after the segment reference) replaced."""
    here_node = _native.host()[0].encode()
    here = struct.pack("<Q", _native.host()[1]) + bytes([len(here_node)]) + here_node
    assert wire.count(here) == 1
    return wire.replace(here, struct.pack("<Q", key) + bytes([len(node)]) + node)


def test_label_names_this_host():
    name, key = _native.host()
    assert f"{name}/{key:016x}" == LABEL
    assert name == socket.gethostname()
    a = ndshm.zeros(4)
    wire = _wire_of(a[1:])
    assert struct.pack("<Q", key) + bytes([len(name)]) + name.encode() in wire


@pytest.mark.parametrize("named", [False, True])
def test_a_handle_from_another_host_is_foreign_and_passes_on(named, shm_name):
    a = ndshm.from_array(np.arange(12.0).reshape(3, 4), name=shm_name if named else None)
    wire = _wire_of(a[1:, ::2])
    foreign = rebuild(_elsewhere(wire))
    assert isinstance(foreign, ForeignHandle) and foreign.host == OTHER
    again = pickle.loads(pickle.dumps(foreign))
    assert isinstance(again, ForeignHandle) and pickle.dumps(again) == pickle.dumps(foreign)
    assert wire_of(pickle.dumps(again)) == _elsewhere(wire)
    # Back on its own host (the label restored), the same handle maps the array.
    home = rebuild(wire)
    assert isinstance(home, ndshm.SharedArray) and np.array_equal(home, a[1:, ::2])


def test_using_a_foreign_handle_names_both_hosts():
    a = ndshm.zeros(5)
    foreign = rebuild(_elsewhere(_wire_of(a)))
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
        fn(cls, _elsewhere(ref))


@pytest.mark.parametrize("node", [b"\xff\xfe", b"x" * 256])
def test_a_host_name_that_is_not_text_or_too_long_is_a_bad_handle(node):
    a = ndshm.zeros(3)
    wire = _wire_of(a)
    here_node = _native.host()[0].encode()
    forged = wire.replace(bytes([len(here_node)]) + here_node, text(node))
    assert forged != wire
    with pytest.raises(ValueError, match="bad ndshm handle"):
        rebuild(forged)
