"""Keeping anonymous arrays alive for receivers that have not attached yet.

Every pickled handle of an anonymous array counts as pending in the
segment until a receiver attaches it. A process that exits normally with
handoffs pending starts a small keeper process that holds those segments
and hands them over until they are attached (at most 30 s); see
``ndshm::handoff`` and ``ndshm::keeper`` in the Rust core. Hooks run both at interpreter exit
and at the exit of ``multiprocessing`` children (which leave with
``os._exit`` after running multiprocessing's finalizers).
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os

from . import _native

_hooked_pid = 0
_done_pid = 0
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's pid, without a system call."""
    return _pid


def _at_exit() -> None:
    global _done_pid
    if _done_pid == _pid:
        return
    _done_pid = _pid
    _native.at_exit()


def ensure_exit_hook() -> None:
    """Makes sure this process hands pending handoffs to a keeper at exit."""
    global _hooked_pid
    if _hooked_pid == _pid:
        return
    _hooked_pid = _pid
    atexit.register(_at_exit)
    # Runs in multiprocessing children before their os._exit.
    multiprocessing.util.Finalize(None, _at_exit, exitpriority=-100)


def sweep() -> None:
    """Releases lingering segments whose handoffs are settled."""
    _native.sweep()
