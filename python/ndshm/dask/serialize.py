"""How shared arrays travel between Dask processes.

Task arguments travel inside pickled graphs, where a shared array is its
handle. Everything else (results, worker-to-worker moves, gather,
``scatter``, spilling) goes through distributed's serializers, which pick
one by type: without the registration below a :class:`~ndshm.SharedArray`
would be copied as a plain ndarray. Registered, it travels as its handle to
a process on the same host and as its bytes to another host, where it
arrives as a private array.

"Same host" is decided from the addresses distributed passes along
(``context``): the recipient's IP must be one of this machine's own. A
scheduler only relays scattered data to workers of its choosing, so a
handle goes to it only when every worker it knows of is on this host.
With no context (spilling to disk), the bytes are written.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import numpy as np
import psutil
from dask.base import normalize_token
from dask.sizeof import sizeof
from distributed.comm.addressing import get_address_host
from distributed.protocol import dask_deserialize, dask_serialize, pickle
from distributed.protocol.numpy import deserialize_numpy_ndarray, serialize_numpy_ndarray

from .. import _native
from ..arrays import SharedArray
from ..handles import descr_of

__all__ = ["is_local_address", "register", "same_host"]

_REFRESH = 5.0  # seconds between re-reads of this machine's addresses
_local: tuple[float, frozenset[str]] = (0.0, frozenset())


def _local_ips() -> frozenset[str]:
    global _local
    at, ips = _local
    now = time.monotonic()
    if now - at > _REFRESH:
        found = {"localhost"}
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                found.add(a.address.split("%", 1)[0])
        ips = frozenset(found)
        _local = (now, ips)
    return ips


def is_local_address(address: str) -> bool:
    """Whether a distributed address (``tcp://10.0.0.1:8786``, ...) is on
    this machine."""
    if address.startswith("inproc://"):
        return True
    try:
        host = get_address_host(address)
    except (ValueError, KeyError):
        return False
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return host in _local_ips()


def _scheduler_workers(address: str) -> list[str] | None:
    """The workers a scheduler at `address` has (as last reported to a
    client of this process), or None if `address` is no known scheduler."""
    from distributed.client import Client

    for client in list(Client._instances):
        sched = getattr(client, "scheduler", None)
        if sched is not None and getattr(sched, "address", None) == address:
            # A cluster object keeps its worker list current (the scheduler
            # streams worker status to it); the client's own copy may have
            # been refreshed without the workers.
            cluster = getattr(client, "cluster", None)
            info = getattr(cluster, "scheduler_info", None) or client._scheduler_identity
            return list(info.get("workers", {}))
    return None


def same_host(context: dict | None) -> bool:
    """Whether the peer of a send, as distributed describes it, can map
    this host's segments."""
    if not context:
        return False
    address = (context.get("recipient") or {}).get("address")
    if not isinstance(address, str) or not is_local_address(address):
        return False
    relayed_to = _scheduler_workers(address)
    if relayed_to is not None:
        return bool(relayed_to) and all(is_local_address(w) for w in relayed_to)
    return True


def _serialize(x: SharedArray, context: dict | None = None) -> tuple[dict, list]:
    if same_host(context):
        found = _native.view_of(x)
        if found is not None and found[0].published:
            return {"ndshm": "handle"}, [pickle.dumps(x, protocol=5)]
    header, frames = serialize_numpy_ndarray(x.view(np.ndarray), context)
    header["ndshm"] = "bytes"
    return header, frames


def _deserialize(header: dict, frames: list) -> Any:
    if header.get("ndshm") == "handle":
        return pickle.loads(frames[0])
    return deserialize_numpy_ndarray(header, frames)


def _token(x: SharedArray) -> Any:
    found = _native.view_of(x)
    if found is None:  # private memory: tokenize the data like any ndarray
        return normalize_token(x.view(np.ndarray))
    seg, offset = found
    # The identity of the memory, not its contents: shared arrays are meant
    # to be written in place, and hashing gigabytes would take seconds.
    return ("ndshm", seg.id, offset, x.shape, x.strides, descr_of(x.dtype))


def _sizeof(x: SharedArray) -> int:
    """The bytes of shared memory the view spans (a broadcast view spans
    its source, not its shape)."""
    found = _native.view_of(x)
    if found is None or x.size == 0:
        return int(x.nbytes)
    lo, hi = np.lib.array_utils.byte_bounds(x)
    return int(min(hi - lo, found[0].nbytes))


_LOG_LENGTH = "distributed.admin.low-level-log-length"


def register() -> None:
    """Registers the serializer, ``normalize_token`` and ``sizeof`` for
    shared arrays (idempotent).

    Also turns off distributed's debugging log of the last 1000 messages of
    each connection (unless it was changed from that default): those
    messages hold the tasks, and through them shared arrays (a dropped
    result of ``compute_into`` or ``map_blocks`` would never be freed)."""
    import dask.config

    if dask.config.get(_LOG_LENGTH, None) == 1000:
        dask.config.set({_LOG_LENGTH: 0})
    dask_serialize.register(SharedArray)(_serialize)
    dask_deserialize.register(SharedArray)(_deserialize)
    normalize_token.register(SharedArray)(_token)
    sizeof.register(SharedArray)(_sizeof)
