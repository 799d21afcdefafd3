"""The handle wire format of docs/FORMAT.md ("Handles"), written out
independently of ndshm's own code, so that tests can forge handles field by
field and read the ones ndshm makes.

A reference is ``(name, id)`` for a named segment or ``(pid, fd, id)`` for
an anonymous one; a dtype is None (the segment's own), an ``np.dtype``
(sent as its ``.npy`` description) or a ``str`` (that text as it is).
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from ndshm import _native

VERSION = 1
ANONYMOUS, READONLY, DTYPE, REF_ONLY = 1, 2, 4, 8

_node, _key = _native.host()


def uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def ivarint(v: int) -> bytes:
    # Zigzag for any Python int: integers beyond 64 bits come out as the
    # over-long varints a forger would write.
    return uvarint(2 * v if v >= 0 else -2 * v - 1)


def text(b: bytes) -> bytes:
    return uvarint(len(b)) + b


def descr_text(dtype: Any) -> str:
    if isinstance(dtype, str):
        return dtype
    return repr(npformat.dtype_to_descr(np.dtype(dtype)))


@dataclass
class Handle:
    ref: tuple
    offset: int = 0
    shape: tuple = ()
    strides: tuple = ()
    dtype: Any = None
    readonly: bool = False
    host: tuple = field(default_factory=lambda: (_node, _key))

    def ref_bytes(self, extra_flags: int = 0) -> bytes:
        anonymous = len(self.ref) == 3
        flags = extra_flags | (ANONYMOUS if anonymous else 0)
        seg_id = self.ref[-1]
        out = bytes([VERSION, flags]) + struct.pack("<Q", seg_id & (2**64 - 1))
        if anonymous:
            pid, fd = self.ref[0], self.ref[1]
            out += uvarint(pid & (2**64 - 1)) + uvarint(fd & (2**64 - 1))
        else:
            name = self.ref[0]
            out += text(name if isinstance(name, bytes) else name.encode())
        node, key = self.host
        return out + struct.pack("<Q", key) + text(node.encode())

    def encode(self) -> bytes:
        flags = (READONLY if self.readonly else 0) | (DTYPE if self.dtype is not None else 0)
        out = self.ref_bytes(flags) + ivarint(self.offset) + bytes([len(self.shape)])
        out += b"".join(ivarint(d) for d in self.shape) + b"".join(ivarint(s) for s in self.strides)
        if self.dtype is not None:
            out += text(descr_text(self.dtype).encode())
        return out


def rebuild(h: Handle | bytes) -> Any:
    """Unpickles the handle as a receiver would."""
    wire = h.encode() if isinstance(h, Handle) else h
    return _native.rebuild(wire)


def wire_of(pickled: bytes) -> bytes:
    """The wire bytes inside a pickled handle."""

    class Grab(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("ndshm._native", "rebuild"):
                return lambda wire: wire
            return super().find_class(module, name)

    import io

    return Grab(io.BytesIO(pickled)).load()


def _read_uvarint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def anonymous_pid(wire: bytes) -> int | None:
    """The sender pid an anonymous handle names, None for a named one (or
    bytes that do not get that far)."""
    try:
        if len(wire) < 10 or not wire[1] & ANONYMOUS:
            return None
        return _read_uvarint(wire, 10)[0]
    except IndexError:
        return None
