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

from typing import Any, NoReturn

from . import _native

_name, _key = _native.host()

#: This host, as handles carry it: ``"nodename/key"``.
LABEL = f"{_name}/{_key:016x}"


def node_of(label: str) -> str:
    """The node name part of a host label."""
    return label.rpartition("/")[0] or label


def foreign_error(host: str) -> ValueError:
    """The error for using, here, an array that lives on `host`."""
    return ValueError(
        f"this ndshm array lives in shared memory on host {node_of(host)!r} "
        f"({host}), but this process runs on host {node_of(LABEL)!r} ({LABEL}); "
        "shared memory cannot cross hosts. Send it through ndshm.dask's serializer "
        "(which sends the bytes to other hosts), or send a copy (numpy.array(a))."
    )


class ForeignHandle:
    """A handle to a shared array that lives on another host.

    It can be pickled on (it turns back into the array on its own host) but
    not used here: any access to its data raises ``ValueError``."""

    __slots__ = ("_args", "host")

    def __init__(self, host: str, rebuild_args: tuple) -> None:
        self.host = host
        self._args = rebuild_args

    def __reduce__(self):
        from .arrays import _rebuild

        return (_rebuild, self._args)

    def error(self) -> ValueError:
        return foreign_error(self.host)

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise self.error()

    def __getattr__(self, attr: str) -> NoReturn:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        raise self.error()

    __array__ = __getitem__ = __setitem__ = __len__ = __iter__ = __array_ufunc__ = _refuse
    __array_function__ = __buffer__ = __float__ = __int__ = __index__ = __bool__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __pow__ = __matmul__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __repr__(self) -> str:
        return f"<ndshm.ForeignHandle: an array in shared memory on host {node_of(self.host)!r}>"
