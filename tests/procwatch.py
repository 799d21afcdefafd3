"""Watching processes from tests: their state, and waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def proc_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat, None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has exited)."""
    return proc_state(pid) not in (None, "Z", "X")


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> bool:
    """Polls `cond` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())
