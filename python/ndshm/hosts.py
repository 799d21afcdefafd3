"""Handles that cross hosts.

Every handle names the host it was made on (node name and a key over the
boot id, the segment directory's file system and the pid namespace: see
``ndshm::host``). Unpickling a handle on another host does not fail,
because a process there may only be passing it on (a Dask scheduler
unpickles and re-pickles task graphs); it gives a :class:`ForeignHandle`,
which pickles back to the same handle and raises a ``ValueError`` naming
both hosts as soon as anything tries to use its data.
"""

from __future__ import annotations

from . import _native

__all__ = ["LABEL", "ForeignHandle", "node_of"]

_name, _key = _native.host()

#: This host, as handles carry it: ``"nodename/key"``.
LABEL = f"{_name}/{_key:016x}"

#: A handle to a shared array that lives on another host (native).
ForeignHandle = _native.ForeignHandle


def node_of(label: str) -> str:
    """The node name part of a host label."""
    return label.rpartition("/")[0] or label
